//! The `hubsync` binary: parses the command line and hands over to
//! `hubsync::cli`.

use std::process::ExitCode;

use clap::Parser;

/// The hub moves rows as many small values (texts, decimals, one vector per
/// row) allocated on one tokio worker and freed on another; glibc's
/// allocator spent about a third of the hub's CPU of a full pull on that
/// (perf, 4 x 100k rows). mimalloc's per-thread free lists cost a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
