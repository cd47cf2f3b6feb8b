//! The `hubsync` binary: parses the command line and hands over to
//! `hubsync::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hubsync::cli::Cli::parse();
    hubsync::cli::init_logging();
    hubsync::cli::main_with(cli)
}
