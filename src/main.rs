//! The `hubsync` binary: parses the command line and hands over to
//! `hubsync::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`hubsync status | head`), as Unix tools
    // do, instead of panicking in `println!`. Rust starts with SIGPIPE ignored.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists; restoring
    // the default disposition of SIGPIPE has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = hubsync::cli::Cli::parse();
    hubsync::cli::init_logging();
    hubsync::cli::main_with(cli)
}
