//! `hubsync bench`: the benchmark (see `crate::bench`), printed as a table
//! and optionally written as JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use comfy_table::{Table, presets};

use super::EXIT_OK;
use crate::bench::{BenchOptions, BenchReport};

/// Arguments of `hubsync bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Admin URL of the PostgreSQL server to build the fleet on (a login
    /// that may create and drop databases; they are named `<prefix>_*`,
    /// by default `hubsync_bench_*`).
    /// `scripts/bench.sh` starts a throwaway server and passes it.
    #[arg(long, env = "HUBSYNC_BENCH_PG_URL", value_name = "URL")]
    pub pg_url: String,
    /// Site databases of the pull, push and WAN scenarios.
    #[arg(long, default_value_t = 20)]
    pub sites: usize,
    /// Sales rows per site.
    #[arg(long, default_value_t = 100_000)]
    pub rows: u64,
    /// PostgreSQL site databases of the no-op cycle (0 skips it; raise the
    /// server's max_connections above it: the hub keeps one connection per site between cycles).
    #[arg(long, default_value_t = 200)]
    pub noop_pg_sites: usize,
    /// SQLite site files of the no-op cycle (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub noop_sqlite_sites: usize,
    /// SQLite site files synced in one cycle by 1 and by 3 leased replicas
    /// (`hub.leases`), plus the failover time of one of 3 (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub replica_sites: usize,
    /// Price rows pushed to every site.
    #[arg(long, default_value_t = 10_000)]
    pub push_rows: u64,
    /// Rows of the one site table whose per-run cost of finding late
    /// commits by transaction id is measured (0 skips it) [default: 10 x
    /// `--rows`, at most 1,000,000].
    #[arg(long)]
    pub late_rows: Option<u64>,
    /// Delay added each way by the WAN scenario's proxy, in milliseconds (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub wan_delay_ms: u64,
    /// Master writers at once, for hubsync and the baseline alike.
    #[arg(long, default_value_t = 4)]
    pub parallelism: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Admin URL of a MariaDB/MySQL server for the MySQL push scenario (a
    /// login that may create and drop databases named `<prefix>_my_*`);
    /// without it that scenario is skipped. `scripts/bench.sh` starts one.
    #[arg(long, env = "HUBSYNC_BENCH_MYSQL_URL", value_name = "URL")]
    pub mysql_url: Option<String>,
    /// Site files / databases of the SQLite and MySQL push scenarios; the
    /// shared-reads scenario pushes to 4 times as many SQLite files (at
    /// least 8), in 4 zones (0 skips all three).
    #[arg(long, default_value_t = 10)]
    pub bulk_sites: usize,
    /// Prefix of the databases the bench creates (and drops at the end unless `--keep`).
    #[arg(long, default_value = "hubsync_bench")]
    pub prefix: String,
    /// Keep the databases after the run (they are dropped by default).
    #[arg(long)]
    pub keep: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    if args.prefix.is_empty()
        || args.prefix.len() > 40
        || !args
            .prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(super::UsageError(format!(
            "`--prefix {}`: use 1-40 characters of a-z, 0-9 and _ (it names databases)",
            args.prefix
        ))
        .into());
    }
    if args.sites == 0 || args.rows < 100 {
        return Err(super::UsageError(
            "`--sites` must be at least 1 and `--rows` at least 100 (1% of rows are changed)"
                .into(),
        )
        .into());
    }
    if args.parallelism == 0 || args.batch_size == 0 {
        return Err(super::UsageError(
            "`--parallelism` and `--batch-size` must be at least 1".into(),
        )
        .into());
    }
    // A JSON path that cannot be written fails now, not after the run.
    if let Some(path) = &args.json {
        std::fs::write(path, "").map_err(|e| {
            super::UsageError(format!("`--json {}`: cannot write it: {e}", path.display()))
        })?;
    }
    let work_dir = std::env::temp_dir().join(format!("hubsync-bench-{}", std::process::id()));
    let options = BenchOptions {
        pg_url: args.pg_url,
        sites: args.sites,
        rows: args.rows,
        noop_pg_sites: args.noop_pg_sites,
        noop_sqlite_sites: args.noop_sqlite_sites,
        replica_sites: args.replica_sites,
        push_rows: args.push_rows,
        late_rows: args
            .late_rows
            .unwrap_or_else(|| args.rows.saturating_mul(10).min(1_000_000)),
        wan_delay: Duration::from_millis(args.wan_delay_ms),
        parallelism: args.parallelism,
        batch_size: args.batch_size,
        mysql_url: args.mysql_url,
        bulk_sites: args.bulk_sites,
        work_dir: work_dir.clone(),
        prefix: args.prefix,
        keep: args.keep,
    };
    let report = crate::bench::run(&options, &|line| eprintln!("bench: {line}")).await;
    let _ = std::fs::remove_dir_all(&work_dir);
    let report = report?;
    println!(
        "{} cores, {} sites x {} rows, {} master writers at once",
        report.cores, report.sites, report.rows_per_site, report.parallelism
    );
    println!("{}", table(&report));
    println!(
        "ratio: above 1 = hubsync did better than the scenario's baseline (see each line below for what is \
         compared); stmts/site: statements (round trips) hubsync sent per site; peak RSS: the hub process's \
         resident memory high-water mark during the scenario"
    );
    for line in notes(&report) {
        println!("{line}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("`--json {}`: cannot write it: {e}", path.display()))?;
        eprintln!("bench: figures written to {}", path.display());
    }
    Ok(EXIT_OK)
}

/// The report as a table: one row per scenario.
pub fn table(report: &BenchReport) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "scenario",
        "rows",
        "hubsync s",
        "rows/s",
        "baseline s",
        "ratio",
        "peak RSS MiB",
        "stmts/site",
    ]);
    let fixed =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for s in &report.scenarios {
        table.add_row([
            s.name.clone(),
            s.rows.to_string(),
            format!("{:.2}", s.hubsync_seconds),
            format!("{:.0}", s.hubsync_rows_per_second),
            fixed(s.baseline_seconds, 2),
            fixed(s.ratio, 2),
            fixed(s.peak_rss_mib, 0),
            fixed(s.statements_per_site, 1),
        ]);
    }
    table
}

/// One line per scenario after the table: its baseline and how to read it.
pub fn notes(report: &BenchReport) -> Vec<String> {
    report
        .scenarios
        .iter()
        .map(|s| {
            if s.baseline.is_empty() {
                format!("{}: {}", s.name, s.note)
            } else {
                format!("{}: baseline = {}; {}", s.name, s.baseline, s.note)
            }
        })
        .collect()
}
