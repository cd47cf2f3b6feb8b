//! The command line: argument parsing (clap derive) and one file per
//! subcommand. `anyhow` is used here and in `main.rs` only.
//!
//! Exit codes: 0 all ok; 1 the command ran but something failed (a site
//! failed or was skipped, the master was unreachable, `check` found a
//! problem); 2 config or usage error; 130 interrupted during `sync`.

mod check;
mod demo;
mod output;
mod reset;
mod run;
mod status;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command ran but something failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad config or usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: interrupted by SIGINT/SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// hubsync: sync one master database with a fleet of site databases, both
/// ways, from the centre alone. Nothing is installed at a site.
#[derive(Debug, Parser)]
#[command(
    name = "hubsync",
    version,
    after_help = "Start with `hubsync demo`: it builds a SQLite fleet, syncs it, and shows the config it used.\n\
                  Logs: set HUBSYNC_LOG (e.g. `HUBSYNC_LOG=debug`). Exit codes: 0 ok, 1 something failed, \
                  2 bad config or usage, 130 interrupted."
)]
pub struct Cli {
    /// Config file (TOML). Relative `sqlite://` paths in it are relative to its folder.
    #[arg(
        short,
        long,
        global = true,
        default_value = "hubsync.toml",
        env = "HUBSYNC_CONFIG"
    )]
    pub config: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a retail fleet on SQLite (no server needed), sync it both ways and show what happened.
    Demo(demo::DemoArgs),
    /// Run one pass of the flows over the sites now, with progress and a summary.
    Sync(sync::SyncArgs),
    /// Run every flow on its schedule until SIGINT/SIGTERM (the daemon).
    Run,
    /// Validate the config, connect to the master and every site, and check tables, columns and keys.
    Check,
    /// Show checkpoints and the last run of each flow at each site.
    Status,
    /// Forget checkpoints so the next run backfills from the start.
    Reset(reset::ResetArgs),
}

/// Runs a parsed command line; returns the process exit code.
pub fn main_with(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let cancel = CancellationToken::new();
    runtime.spawn(cancel_on_signal(cancel.clone()));
    let outcome = runtime.block_on(dispatch(cli, cancel));
    // Do not wait for tasks stuck on unreachable sites.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            let usage = error
                .chain()
                .any(|cause| cause.is::<ConfigError>() || cause.is::<UsageError>());
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILED })
        }
    }
}

async fn dispatch(cli: Cli, cancel: CancellationToken) -> anyhow::Result<u8> {
    match cli.command {
        Command::Demo(args) => demo::run(args, cancel).await,
        Command::Sync(args) => sync::run(load(&cli.config)?, args, cancel).await,
        Command::Run => run::run(load(&cli.config)?, cancel).await,
        Command::Check => check::run(load(&cli.config)?).await,
        Command::Status => status::run(load(&cli.config)?).await,
        Command::Reset(args) => reset::run(load(&cli.config)?, args).await,
    }
}

fn load(path: &std::path::Path) -> Result<Arc<Config>, ConfigError> {
    Config::load(path).map(Arc::new)
}

/// A mistake in the command line that clap cannot see (an unknown flow or
/// site name); exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Cancels `cancel` on the first SIGINT or SIGTERM; a second signal exits
/// at once with 130.
async fn cancel_on_signal(cancel: CancellationToken) {
    wait_for_signal().await;
    eprintln!(
        "hubsync: stopping after the current batches commit (press Ctrl-C again to abort now)"
    );
    cancel.cancel();
    wait_for_signal().await;
    std::process::exit(i32::from(EXIT_INTERRUPTED));
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Sets up `tracing` to stderr, filtered by `HUBSYNC_LOG` (default `warn`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUBSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .try_init();
}
