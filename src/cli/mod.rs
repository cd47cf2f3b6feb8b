//! The command line: argument parsing (clap derive) and one file per
//! subcommand. `anyhow` is used here and in `main.rs` only.
//!
//! Exit codes: 0 all ok; 1 the command ran but something failed (a site
//! failed or was skipped, the master was unreachable, `check` found a
//! problem); 2 config or usage error; 130 interrupted during `sync`.

mod bench;
mod call;
mod check;
mod demo;
mod events;
mod output;
mod reset;
mod run;
mod serve;
mod status;
mod sync;

use std::io::IsTerminal;
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
    /// Config file (TOML). Relative `sqlite://` paths in it are relative to its folder. Not read by `demo` (it writes its own in `--dir`) or `bench` (it builds its own fleet).
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
    /// Run every flow on its schedule until SIGINT/SIGTERM (the daemon); serves the HTTP API when `[api]` is set.
    Run,
    /// Serve the HTTP API and dashboard (`[api]`, default 127.0.0.1:7070) without the scheduler.
    Serve,
    /// Run a data service operation (`[[service]]`) on the master or on sites.
    Call(call::CallArgs),
    /// Validate the config, connect to the master and every site, and check tables, columns and keys.
    Check,
    /// Show checkpoints and the last run of each flow at each site.
    Status(status::StatusArgs),
    /// Forget checkpoints so the next run backfills from the start.
    Reset(reset::ResetArgs),
    /// Follow-up events (`[[flow.on]]`, `after`): list dead letters, replay them, deliver due ones.
    Events(events::EventsArgs),
    /// Measure hubsync against a COPY baseline on a synthetic fleet (needs a PostgreSQL server).
    Bench(bench::BenchArgs),
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
        Command::Serve => serve::run(load(&cli.config)?, cancel).await,
        Command::Call(args) => call::run(load(&cli.config)?, args).await,
        Command::Check => check::run(load(&cli.config)?).await,
        Command::Status(args) => status::run(load(&cli.config)?, args).await,
        Command::Reset(args) => reset::run(load(&cli.config)?, args).await,
        Command::Events(args) => events::run(load(&cli.config)?, args).await,
        Command::Bench(args) => bench::run(args).await,
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

/// Sets up `tracing` to stderr, filtered by `HUBSYNC_LOG` (default
/// `warn,sqlx=error`). An invalid `HUBSYNC_LOG` is reported in one line and
/// replaced by the default;
/// colours only on a terminal and when `NO_COLOR` is not set.
pub fn init_logging() {
    let (filter, warning) = log_filter(std::env::var("HUBSYNC_LOG"));
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Filter used when `HUBSYNC_LOG` is unset, empty or invalid. The driver's
/// own warnings (a pooled connection found broken) repeat what the failed
/// run already reports, so only its errors show.
const DEFAULT_LOG_FILTER: &str = "warn,sqlx=error";

/// The log filter for a `HUBSYNC_LOG` lookup, and a warning to print when
/// the variable is set but unusable. Unset or blank means the default,
/// silently; `EnvFilter::try_from_env` would report that as an error too.
fn log_filter(
    value: Result<String, std::env::VarError>,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    let default = || tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER);
    match value {
        Err(std::env::VarError::NotPresent) => (default(), None),
        Err(std::env::VarError::NotUnicode(raw)) => (
            default(),
            Some(format!(
                "hubsync: ignoring HUBSYNC_LOG=`{}`: not valid UTF-8; using `{DEFAULT_LOG_FILTER}`",
                raw.to_string_lossy()
            )),
        ),
        Ok(text) if text.trim().is_empty() => (default(), None),
        Ok(text) => match tracing_subscriber::EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(e) => (
                default(),
                Some(format!(
                    "hubsync: ignoring HUBSYNC_LOG=`{text}`: {e}; using `{DEFAULT_LOG_FILTER}`"
                )),
            ),
        },
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
fn use_colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// `1 site`, `2 sites`, `1,000 sites`: a count with its noun, plural when
/// the count is not one (nouns that take a plain `s`).
pub(crate) fn plural(count: u64, noun: &str) -> String {
    let suffix = if count == 1 { "" } else { "s" };
    format!("{} {noun}{suffix}", output::thousands(count))
}

/// Most names listed in a usage error before the rest are only counted.
const MAX_LISTED_NAMES: usize = 20;

/// `a, b, c` for a usage error naming the known flows, streams or sites:
/// at most 20 names, then `… and N more`; `none` when there are none.
pub(crate) fn known_names<'n>(names: impl IntoIterator<Item = &'n str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        return "none".into();
    }
    let listed = names[..names.len().min(MAX_LISTED_NAMES)].join(", ");
    match names.len().saturating_sub(MAX_LISTED_NAMES) {
        0 => listed,
        rest => format!("{listed} … and {rest} more"),
    }
}

#[cfg(test)]
mod tests {
    use std::env::VarError;
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn unset_or_blank_log_filter_is_silent() {
        let (filter, warning) = log_filter(Err(VarError::NotPresent));
        assert_eq!(filter.to_string(), "sqlx=error,warn");
        assert_eq!(warning, None);
        let (filter, warning) = log_filter(Ok("  ".into()));
        assert_eq!(filter.to_string(), "sqlx=error,warn");
        assert_eq!(warning, None);
        let (filter, warning) = log_filter(Ok("hubsync=debug,info".into()));
        assert_eq!(filter.to_string(), "hubsync=debug,info");
        assert_eq!(warning, None);
    }

    /// Regression: `HUBSYNC_LOG=bogus=???` was silently replaced by `warn`.
    #[test]
    fn invalid_log_filter_is_reported_once() {
        let (filter, warning) = log_filter(Ok("bogus=???".into()));
        assert_eq!(filter.to_string(), "sqlx=error,warn");
        let warning = warning.unwrap();
        assert!(
            warning.starts_with("hubsync: ignoring HUBSYNC_LOG=`bogus=???`: "),
            "{warning}"
        );
        assert!(warning.ends_with("; using `warn,sqlx=error`"), "{warning}");
        assert!(!warning.contains('\n'), "{warning}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn plurals_read_right() {
        assert_eq!(plural(0, "site"), "0 sites");
        assert_eq!(plural(1, "site"), "1 site");
        assert_eq!(plural(2, "flow"), "2 flows");
        assert_eq!(plural(1234, "new sale"), "1,234 new sales");
    }

    #[test]
    fn known_names_are_capped_at_twenty() {
        assert_eq!(known_names([]), "none");
        assert_eq!(known_names(["s1", "s2"]), "s1, s2");
        let ids: Vec<String> = (1..=23).map(|n| format!("s{n}")).collect();
        let listed = known_names(ids.iter().map(String::as_str));
        assert!(listed.starts_with("s1, s2, "), "{listed}");
        assert!(listed.ends_with("s19, s20 … and 3 more"), "{listed}");
        let twenty: Vec<String> = (1..=20).map(|n| format!("s{n}")).collect();
        assert!(known_names(twenty.iter().map(String::as_str)).ends_with("s19, s20"));
    }
}
