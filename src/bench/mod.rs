//! `hubsync bench`: builds a synthetic fleet on a PostgreSQL server and
//! measures hubsync against a baseline run in the same process, on the same
//! data, minutes apart:
//!
//! * **full pull**: every site's `sales` into the master; baseline: per
//!   site a binary `COPY ... TO STDOUT` piped into a `COPY ... FROM STDIN`
//!   of a temporary staging table at the master, then `INSERT ... SELECT ..
//!   ON CONFLICT DO UPDATE` (idempotent, like hubsync), `parallelism` sites
//!   at a time (= hubsync's `master_write_concurrency`);
//! * **transformed pull**: the full pull through a stream with three
//!   computed columns and a filter (`compute`, `filter`; every row passes,
//!   the target has the source's columns, so both write the same) beside
//!   the same pull without them, into fresh tables of the same master,
//!   twice in alternating order (plain, transformed, transformed, plain);
//!   ratio = transformed throughput / untransformed throughput;
//! * **incremental pull** after 1% of rows are updated and 1% inserted at
//!   every site; compared with the full pull (time per changed row);
//! * **push fan-out**: `push_rows` prices to every site; baseline: the same
//!   COPY pipe from the master into each site;
//! * **full update**: every row changed at every site, so the pull upserts
//!   every master row (no initial load); baseline: the full pull's COPY pipe
//!   on the same change;
//! * **whole process**: a `hubsync sync` process into an emptied master
//!   against a shell script of `psql | psql` COPY pipes (see
//!   `sync_process`);
//! * **SQLite and MySQL pushes**: see [`bulk`];
//! * **shared reads**: an incremental push to SQLite sites in 4 zones whose
//!   sites share one master read per zone, beside the same push with one
//!   read per site (see [`shared`]);
//! * **WAN**: the full pull again with the sites behind a latency proxy
//!   ([`latency::LatencyProxy`], `wan_delay` each way); compared with the
//!   loopback full pull;
//! * **no-op cycles** over many small PostgreSQL site databases and many
//!   SQLite site files: wall time of a pass with nothing to move, and
//!   statements per site; for PostgreSQL beside one `psql` script that
//!   connects to each site and runs the same cursor query;
//! * **late-commit scan**: the cost per run of finding late commits by
//!   transaction id (`late_commits = "xid"`, a sequential scan of the
//!   source table) on one site of `late_rows` rows, after 100 of its rows
//!   changed; baseline: the same run with `late_commits = "lag"`. Medians
//!   of three runs each, on one running hub per setting;
//! * **replicas** (`replicas.rs`): one cycle over `replica_sites` SQLite
//!   files by 1 and by 3 leased replicas, and the failover time when one
//!   of 3 is aborted mid-cycle.
//!
//! Each hubsync scenario also reports the process's peak resident memory
//! (Linux `VmHWM`, reset before the scenario through `/proc/self/clear_refs`).
//! Databases are named `<prefix>_*` (default `hubsync_bench_*`) and are
//! dropped and recreated.

mod bulk;
pub mod latency;
mod replicas;
mod shared;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;
use sqlx::{Connection, Executor, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::flow::{Hub, NoProgress, SyncOptions};

/// What to build and measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Admin URL of the PostgreSQL server (a login that may create databases).
    pub pg_url: String,
    /// Site databases for the full/incremental pull, push and WAN scenarios.
    pub sites: usize,
    /// `sales` rows per site.
    pub rows: u64,
    /// PostgreSQL site databases for the no-op cycle (0 skips it).
    pub noop_pg_sites: usize,
    /// SQLite site files for the no-op cycle (0 skips it).
    pub noop_sqlite_sites: usize,
    /// SQLite site files synced by 1 and by 3 leased replicas (0 skips it).
    pub replica_sites: usize,
    /// Price rows pushed to every site.
    pub push_rows: u64,
    /// Rows of the late-commit scan scenario's site table (0 skips it).
    pub late_rows: u64,
    /// One-way delay of the WAN scenario's proxy (zero skips it).
    pub wan_delay: Duration,
    /// Master writers at once, for hubsync and the baseline alike.
    pub parallelism: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Admin URL of a MariaDB/MySQL server for the MySQL push scenario (a
    /// login that may create and drop databases; `None` skips it).
    pub mysql_url: Option<String>,
    /// Site files / databases of the SQLite and MySQL push scenarios; the
    /// shared-reads scenario uses 4 times as many SQLite files (at least
    /// 8; 0 skips all three).
    pub bulk_sites: usize,
    /// Folder for the SQLite site files.
    pub work_dir: PathBuf,
    /// Prefix of the databases created (`<prefix>_master`, `<prefix>_site_001`...).
    pub prefix: String,
    /// Keep the databases after the run (default: dropped at the end).
    pub keep: bool,
}

/// One measured scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// Scenario name (`full_pull`, `incremental_pull`, ...).
    pub name: String,
    /// Rows hubsync moved (read at the source).
    pub rows: u64,
    /// hubsync wall time, seconds.
    pub hubsync_seconds: f64,
    /// hubsync rows per second.
    pub hubsync_rows_per_second: f64,
    /// What the baseline is.
    pub baseline: String,
    /// Baseline wall time, seconds (`None`: no baseline for this scenario).
    pub baseline_seconds: Option<f64>,
    /// Baseline time / hubsync time: above 1 means hubsync was faster (for
    /// `wan_full_pull`: WAN throughput / loopback throughput).
    pub ratio: Option<f64>,
    /// Peak resident memory of the hub process during hubsync's run, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Statements (round trips) hubsync sent per site, where counted.
    pub statements_per_site: Option<f64>,
    /// How to read the figures.
    pub note: String,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// CPU cores the machine offers.
    pub cores: usize,
    /// Sites of the pull/push scenarios.
    pub sites: usize,
    /// Rows per site.
    pub rows_per_site: u64,
    /// Master writers at once.
    pub parallelism: usize,
    /// The scenarios, in the order run.
    pub scenarios: Vec<Scenario>,
}

const SITE_SCHEMA: &str = "
CREATE TABLE sales (id bigint PRIMARY KEY, sku text NOT NULL, qty int NOT NULL, price numeric(12,2) NOT NULL,
                    sold_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE prices (sku text PRIMARY KEY, price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);";

const MASTER_SCHEMA: &str = "
CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, sku text NOT NULL, qty int NOT NULL,
                    price numeric(12,2) NOT NULL, sold_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
                    PRIMARY KEY (store_id, id));
CREATE TABLE prices (sku text PRIMARY KEY, price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);
CREATE INDEX prices_updated_at ON prices (updated_at);";

/// `rows` sales from id `first`, one second apart from 2026-01-01, 5,000
/// SKUs, prices 0.00-99.99.
fn insert_sales(first: u64, rows: u64, stamp: &str) -> String {
    format!(
        "INSERT INTO sales SELECT g, 'SKU-' || lpad((g % 5000)::text, 5, '0'), 1 + g % 9, (g % 10000) / 100.0,
                timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', {stamp}
         FROM generate_series({first}, {}) g",
        first + rows - 1
    )
}

/// The server's URL for database `name`.
fn database_url(admin: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(admin).context("`--pg-url` is not a URL")?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

async fn recreate_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .await
        .with_context(|| format!("dropping database {name}"))?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .with_context(|| format!("creating database {name}"))?;
    Ok(())
}

async fn run_sql(url: &str, sql: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .with_context(|| format!("running {}", sql.lines().next().unwrap_or_default()))?;
    conn.close().await?;
    Ok(())
}

/// Peak resident memory since the last [`reset_peak_rss`], MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the kernel's peak-RSS mark of this process (Linux ≥ 4.0,
/// `clear_refs` value 5, see proc(5)); ignored elsewhere.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `max_concurrent_sites` of the bench fleets (the default).
const SITES_AT_ONCE: usize = 32;

/// The bench fleet's hub config: `sites` as (id, url), the `sales` pull and
/// the `prices` push.
fn fleet_config(
    options: &BenchOptions,
    master: &str,
    sites: &[(String, String)],
    table: &str,
    max_concurrent_sites: usize,
) -> String {
    let mut text = format!(
        "[hub]\nbatch_size = {}\nmaster_write_concurrency = {}\nmax_concurrent_sites = {max_concurrent_sites}\nstatement_timeout = \"0s\"\n\n\
         [master]\nurl = \"{master}\"\n",
        options.batch_size, options.parallelism
    );
    for (id, url) in sites {
        text.push_str(&format!("\n[[site]]\nid = \"{id}\"\nurl = \"{url}\"\n"));
    }
    text.push_str(&format!(
        "\n[[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"{table}\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n\n\
         [[flow]]\nname = \"prices\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"prices\"\n  target = \"prices\"\n  \
         primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n"
    ));
    text
}

/// The transformed-pull scenario's stream: three computed columns that
/// keep the source's columns and types (a decimal product, a string built
/// from a site tag, a date-time round trip through the site's time zone)
/// and a filter every bench row passes, so the transformed and the plain
/// pull write the same amount.
const BENCH_TRANSFORMS: &str = r#"filter = "row.qty > 0 && row.sku != ''"
  [flow.stream.compute]
  price = "row.price * row.qty"
  sku = "site.tags.region + '-' + row.sku"
  sold_at = "timestamp_utc(local_time(row.sold_at, site.tags.timezone), site.tags.timezone)""#;

/// The transformed-pull scenario's config: the fleet's sites with a region
/// and a time zone tag, a plain pull into `sales_plain` and the same pull
/// with [`BENCH_TRANSFORMS`] into `sales_tf`.
fn transform_config(options: &BenchOptions, master: &str, sites: &[(String, String)]) -> String {
    let mut text = format!(
        "[hub]\nbatch_size = {}\nmaster_write_concurrency = {}\nmax_concurrent_sites = {SITES_AT_ONCE}\nstatement_timeout = \"0s\"\n\n\
         [master]\nurl = \"{master}\"\n",
        options.batch_size, options.parallelism
    );
    for (id, url) in sites {
        text.push_str(&format!(
            "\n[[site]]\nid = \"{id}\"\nurl = \"{url}\"\ntags = {{ region = \"north\", timezone = \"Europe/Paris\" }}\n"
        ));
    }
    for (flow, table, extra) in [
        ("sales_plain", "sales_plain", ""),
        ("sales_tf", "sales_tf", BENCH_TRANSFORMS),
    ] {
        text.push_str(&format!(
            "\n[[flow]]\nname = \"{flow}\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"{table}\"\n  \
             primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  {extra}\n"
        ));
    }
    text
}

/// The transformed-pull scenario (see the module docs): returns it with
/// the transformed passes' rows and time, the untransformed passes' time
/// as the baseline.
async fn transformed_pull(
    options: &BenchOptions,
    master: &str,
    sites: &[(String, String)],
    total_rows: u64,
) -> anyhow::Result<Scenario> {
    run_sql(
        master,
        "CREATE TABLE sales_plain (LIKE sales INCLUDING ALL); CREATE TABLE sales_tf (LIKE sales INCLUDING ALL);",
    )
    .await?;
    let config = transform_config(options, master, sites);
    let (mut plain_seconds, mut transformed) = (0.0, Vec::new());
    for flow in ["sales_plain", "sales_tf", "sales_tf", "sales_plain"] {
        run_sql(
            master,
            // The full pull's checkpoints stay for the incremental scenario.
            "TRUNCATE sales_plain, sales_tf; \
             DELETE FROM hubsync.checkpoints WHERE flow IN ('sales_plain', 'sales_tf')",
        )
        .await?;
        let pass = hubsync_pass(options, &config, flow).await?;
        if pass.rows_read != total_rows {
            bail!(
                "hubsync read {} rows in `{flow}`, expected {total_rows}",
                pass.rows_read
            );
        }
        if flow == "sales_plain" {
            plain_seconds += pass.seconds;
            continue;
        }
        let written = sql_count(
            master,
            "SELECT count(*) FROM sales_tf WHERE sku LIKE 'north-%'",
        )
        .await?;
        if written != total_rows {
            bail!("the transformed pull wrote {written} transformed rows, expected {total_rows}");
        }
        transformed.push(pass);
    }
    let both = sum_passes(&transformed);
    Ok(scenario(
        "transformed_pull",
        &both,
        "the same full pull without transforms",
        Some(plain_seconds),
        2 * options.sites,
        format!(
            "{} sites x {} rows, 3 computed columns + a filter, two passes each (plain, transformed, transformed, plain); \
             ratio = transformed throughput / untransformed throughput (goal >= 0.9)",
            options.sites, options.rows
        ),
    ))
}

/// The single integer `sql` returns at `url`.
async fn sql_count(url: &str, sql: &str) -> anyhow::Result<u64> {
    let mut conn = PgConnection::connect(url).await?;
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(count.max(0) as u64)
}

/// What one timed hubsync pass did.
struct Pass {
    seconds: f64,
    rows_read: u64,
    statements: u64,
    peak_rss_mib: Option<f64>,
}

/// The passes' seconds, rows and statements added; the highest peak RSS.
fn sum_passes(passes: &[Pass]) -> Pass {
    Pass {
        seconds: passes.iter().map(|p| p.seconds).sum(),
        rows_read: passes.iter().map(|p| p.rows_read).sum(),
        statements: passes.iter().map(|p| p.statements).sum(),
        peak_rss_mib: passes
            .iter()
            .filter_map(|p| p.peak_rss_mib)
            .reduce(f64::max),
    }
}

/// Opens a hub on `config_text` (written to `bench.toml` in the work dir).
async fn open_hub(options: &BenchOptions, config_text: &str) -> anyhow::Result<Hub> {
    let path = options.work_dir.join("bench.toml");
    let config = Config::parse(config_text, &path, &options.work_dir, &|_| None)?;
    Ok(Hub::open(Arc::new(config), CancellationToken::new()).await?)
}

/// Times one pass of `flow` over every site of `hub`; fails on any site
/// error. Site connections kept by earlier passes of the same hub are used
/// again, as in `hubsync run`.
async fn timed_pass(hub: &Hub, flow: &str) -> anyhow::Result<Pass> {
    let flow = hub.config().flow(flow).context("bench flow")?.clone();
    let sites: Vec<_> = hub.config().sites.iter().collect();
    reset_peak_rss();
    let statements = crate::connector::statements_sent();
    let started = Instant::now();
    let reports = hub
        .sync_flow(&flow, &sites, SyncOptions::default(), &NoProgress)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let statements = crate::connector::statements_sent() - statements;
    let peak_rss_mib = peak_rss_mib();
    if let Some(error) = reports.iter().find_map(|r| r.error.clone()) {
        bail!("hubsync failed during the bench: {error}");
    }
    Ok(Pass {
        seconds,
        rows_read: reports.iter().map(|r| r.rows_read()).sum(),
        statements,
        peak_rss_mib,
    })
}

/// Runs one pass of `flow` on a hub of its own (every site logs in, as in
/// one `hubsync sync`); fails on any site error.
async fn hubsync_pass(
    options: &BenchOptions,
    config_text: &str,
    flow: &str,
) -> anyhow::Result<Pass> {
    let hub = open_hub(options, config_text).await?;
    let pass = timed_pass(&hub, flow).await;
    hub.close().await;
    pass
}

/// Baseline: binary COPY from `source` into a staging table at `target`,
/// then an idempotent upsert; one transaction at the target. `select` reads
/// the source; `stage` creates the (temporary) staging table; `upsert`
/// moves the staging rows into the real table. Returns rows copied.
async fn copy_pipe(
    source: &str,
    target: &str,
    select: &str,
    stage: &str,
    upsert: &str,
) -> anyhow::Result<u64> {
    let mut from = PgConnection::connect(source).await?;
    let mut to = PgConnection::connect(target).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; {stage}")))
        .execute(&mut to)
        .await?;
    let mut copy_in = to
        .copy_in_raw("COPY hubsync_stage FROM STDIN (FORMAT binary)")
        .await?;
    let mut copy_out = from
        .copy_out_raw(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
        .await?;
    while let Some(chunk) = copy_out.next().await {
        copy_in.send(chunk?).await?;
    }
    drop(copy_out);
    let rows = copy_in.finish().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{upsert}; COMMIT")))
        .execute(&mut to)
        .await?;
    to.close().await?;
    from.close().await?;
    Ok(rows)
}

/// Runs `jobs` at most `parallelism` at a time; returns (seconds, rows).
async fn run_parallel<F>(parallelism: usize, jobs: Vec<F>) -> anyhow::Result<(f64, u64)>
where
    F: std::future::Future<Output = anyhow::Result<u64>>,
{
    let started = Instant::now();
    let results: Vec<anyhow::Result<u64>> = futures::stream::iter(jobs)
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let mut rows = 0;
    for result in results {
        rows += result?;
    }
    Ok((started.elapsed().as_secs_f64(), rows))
}

fn scenario(
    name: &str,
    pass: &Pass,
    baseline: &str,
    baseline_seconds: Option<f64>,
    sites: usize,
    note: String,
) -> Scenario {
    Scenario {
        name: name.into(),
        rows: pass.rows_read,
        hubsync_seconds: pass.seconds,
        hubsync_rows_per_second: pass.rows_read as f64 / pass.seconds.max(1e-9),
        baseline: baseline.into(),
        baseline_seconds,
        ratio: baseline_seconds.map(|b| b / pass.seconds.max(1e-9)),
        peak_rss_mib: pass.peak_rss_mib,
        statements_per_site: Some(pass.statements as f64 / sites.max(1) as f64),
        note,
    }
}

const PULL_UPSERT: &str = "INSERT INTO sales SELECT $STORE, s.* FROM hubsync_stage s
    ON CONFLICT (store_id, id) DO UPDATE SET sku = excluded.sku, qty = excluded.qty, price = excluded.price,
        sold_at = excluded.sold_at, updated_at = excluded.updated_at
    WHERE (sales.sku, sales.qty, sales.price, sales.sold_at, sales.updated_at)
          IS DISTINCT FROM (excluded.sku, excluded.qty, excluded.price, excluded.sold_at, excluded.updated_at)";
const PULL_STAGE: &str =
    "CREATE TEMP TABLE hubsync_stage (id bigint, sku text, qty int, price numeric(12,2),
    sold_at timestamptz, updated_at timestamptz) ON COMMIT DROP";
const PULL_SELECT: &str = "SELECT id, sku, qty, price, sold_at, updated_at FROM sales";

/// Runs every scenario; `say` receives one line per step (progress).
///
/// Errors: the server is unreachable, a database cannot be created, or a
/// hubsync pass or baseline fails (with its message).
pub async fn run(options: &BenchOptions, say: &dyn Fn(&str)) -> anyhow::Result<BenchReport> {
    let mut admin = PgConnection::connect(&options.pg_url)
        .await
        .context("connecting to `--pg-url`")?;
    let mut report = BenchReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sites: options.sites,
        rows_per_site: options.rows,
        parallelism: options.parallelism,
        scenarios: Vec::new(),
    };
    std::fs::create_dir_all(&options.work_dir)?;

    // ------------------------------------------------------------ the fleet
    say(&format!(
        "building {} site databases x {} rows and a master",
        options.sites, options.rows
    ));
    let master = database_url(&options.pg_url, &format!("{}_master", options.prefix))?;
    recreate_database(&mut admin, &format!("{}_master", options.prefix)).await?;
    run_sql(&master, MASTER_SCHEMA).await?;
    run_sql(
        &master,
        &format!(
            "INSERT INTO prices SELECT 'SKU-' || lpad(g::text, 5, '0'), (g % 10000) / 100.0, clock_timestamp()
             FROM generate_series(1, {}) g",
            options.push_rows
        ),
    )
    .await?;
    let mut sites = Vec::new();
    for i in 1..=options.sites {
        let name = format!("{}_site_{i:03}", options.prefix);
        recreate_database(&mut admin, &name).await?;
        let url = database_url(&options.pg_url, &name)?;
        run_sql(
            &url,
            &format!(
                "{SITE_SCHEMA}\n{};\nCREATE INDEX sales_updated_at ON sales (updated_at); ANALYZE sales;",
                insert_sales(1, options.rows, "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'")
            ),
        )
        .await?;
        sites.push((format!("store-{i:03}"), url));
    }
    let total_rows = options.rows * options.sites as u64;
    let config = fleet_config(options, &master, &sites, "sales", SITES_AT_ONCE);

    // ------------------------------------------------------------ full pull
    say("full pull: baseline (binary COPY into staging + INSERT ON CONFLICT)");
    let jobs: Vec<_> = sites
        .iter()
        .map(|(id, url)| {
            let upsert = PULL_UPSERT.replace("$STORE", &format!("'{id}'"));
            let master = master.clone();
            let url = url.clone();
            async move { copy_pipe(&url, &master, PULL_SELECT, PULL_STAGE, &upsert).await }
        })
        .collect();
    let (baseline_full, copied) = run_parallel(options.parallelism, jobs).await?;
    if copied != total_rows {
        bail!("the baseline copied {copied} rows, expected {total_rows}");
    }
    run_sql(
        &master,
        "TRUNCATE sales; DROP SCHEMA IF EXISTS hubsync CASCADE",
    )
    .await?;
    say("full pull: hubsync");
    let full = hubsync_pass(options, &config, "sales").await?;
    if full.rows_read != total_rows {
        bail!(
            "hubsync read {} rows, expected {total_rows}",
            full.rows_read
        );
    }
    report.scenarios.push(scenario(
        "full_pull",
        &full,
        "COPY binary -> staging + INSERT ON CONFLICT",
        Some(baseline_full),
        options.sites,
        format!(
            "{} sites x {} rows into an empty master; ratio = baseline time / hubsync time",
            options.sites, options.rows
        ),
    ));

    // ------------------------------------------------------ transformed pull
    say("transformed pull: 3 computed columns + a filter, beside the same pull without them");
    report
        .scenarios
        .push(transformed_pull(options, &master, &sites, total_rows).await?);

    // ----------------------------------------------------- incremental pull
    say("incremental pull: 1% updated + 1% inserted at every site");
    let changed = options.rows / 100;
    for (_, url) in &sites {
        run_sql(
            url,
            &format!(
                "UPDATE sales SET qty = qty + 1, updated_at = clock_timestamp() WHERE id % 100 = 0;\n{}",
                insert_sales(options.rows + 1, changed.max(1), "clock_timestamp()")
            ),
        )
        .await?;
    }
    let incremental = hubsync_pass(options, &config, "sales").await?;
    let changed_rows = 2 * changed.max(1) * options.sites as u64;
    report.scenarios.push(Scenario {
        baseline: "the full pull (time per changed row)".into(),
        ..scenario(
            "incremental_pull",
            &incremental,
            "",
            None,
            options.sites,
            format!(
                "{changed_rows} rows changed ({:.1}% of the fleet), {} read (the rest: re-read rows, the \
                 cursor_lag overlap and late commits); took {:.1}% of the full pull's time",
                100.0 * changed_rows as f64 / (total_rows + changed_rows / 2) as f64,
                incremental.rows_read,
                100.0 * incremental.seconds / full.seconds.max(1e-9)
            ),
        )
    });

    // ------------------------------------------------------------- push
    say(&format!(
        "push fan-out: {} prices to every site",
        options.push_rows
    ));
    let jobs: Vec<_> = sites
        .iter()
        .map(|(_, url)| {
            let master = master.clone();
            let url = url.clone();
            async move {
                copy_pipe(
                    &master,
                    &url,
                    "SELECT sku, price, updated_at FROM prices",
                    "CREATE TEMP TABLE hubsync_stage (sku text, price numeric(12,2), updated_at timestamptz) ON COMMIT DROP",
                    "INSERT INTO prices SELECT * FROM hubsync_stage ON CONFLICT (sku) DO UPDATE SET price = excluded.price,
                       updated_at = excluded.updated_at WHERE (prices.price, prices.updated_at)
                       IS DISTINCT FROM (excluded.price, excluded.updated_at)",
                )
                .await
            }
        })
        .collect();
    let (baseline_push, _) = run_parallel(options.parallelism, jobs).await?;
    for (_, url) in &sites {
        run_sql(url, "TRUNCATE prices").await?;
    }
    let push = hubsync_pass(options, &config, "prices").await?;
    report.scenarios.push(scenario(
        "push_fan_out",
        &push,
        "COPY binary -> staging + INSERT ON CONFLICT, per site",
        Some(baseline_push),
        options.sites,
        format!(
            "{} rows to each of {} sites",
            options.push_rows, options.sites
        ),
    ));

    // ------------------------------------------- SQLite and MySQL pushes
    if options.bulk_sites > 0 {
        report
            .scenarios
            .push(bulk::sqlite_push(options, &master, options.bulk_sites, say).await?);
        if let Some(mysql_url) = &options.mysql_url {
            report.scenarios.push(
                bulk::mysql_push(options, mysql_url, &master, options.bulk_sites, say).await?,
            );
        }
        report
            .scenarios
            .push(shared::shared_push_reads(options, &mut admin, say).await?);
    }

    // ----------------------------------------------- full update (upsert)
    say("full update: every row changed at every site (the upsert path)");
    for (_, url) in &sites {
        run_sql(
            url,
            "UPDATE sales SET qty = qty + 1, updated_at = updated_at + interval '1 year'",
        )
        .await?;
    }
    let jobs: Vec<_> = sites
        .iter()
        .map(|(id, url)| {
            let upsert = PULL_UPSERT.replace("$STORE", &format!("'{id}'"));
            let master = master.clone();
            let url = url.clone();
            async move { copy_pipe(&url, &master, PULL_SELECT, PULL_STAGE, &upsert).await }
        })
        .collect();
    let (baseline_update, _) = run_parallel(options.parallelism, jobs).await?;
    // Put the master back to the values before the update, so that
    // hubsync's pass changes every row too, on a vacuumed table.
    run_sql(
        &master,
        "UPDATE sales SET qty = qty - 1, updated_at = updated_at - interval '1 year'",
    )
    .await?;
    run_sql(&master, "VACUUM ANALYZE sales").await?;
    let update = hubsync_pass(options, &config, "sales").await?;
    if update.rows_read < total_rows {
        bail!(
            "hubsync read {} rows of the full update, expected at least {total_rows}",
            update.rows_read
        );
    }
    report.scenarios.push(scenario(
        "full_update",
        &update,
        "COPY binary -> staging + INSERT ON CONFLICT",
        Some(baseline_update),
        options.sites,
        format!(
            "every one of the {total_rows} master rows changed at its site: the upsert path (no initial load); \
             ratio = baseline time / hubsync time"
        ),
    ));

    // ------------------------------------------- whole process, small fleet
    report
        .scenarios
        .push(sync_process(options, &master, &sites, &config, say).await?);

    // ------------------------------------------------------------- WAN
    if !options.wan_delay.is_zero() {
        say(&format!(
            "WAN: the full pull through a proxy adding {} ms each way",
            options.wan_delay.as_millis()
        ));
        let server = url::Url::parse(&options.pg_url)?;
        let host = server.host_str().unwrap_or("127.0.0.1");
        let port = server.port().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .context("resolving the server")?;
        let proxy = latency::LatencyProxy::start(upstream, options.wan_delay).await?;
        let far: Vec<(String, String)> = sites
            .iter()
            .map(|(id, url)| {
                let mut far = url::Url::parse(url).expect("built above");
                let _ = far.set_port(Some(proxy.port));
                (id.clone(), far.to_string())
            })
            .collect();
        run_sql(
            &master,
            "TRUNCATE sales; DROP SCHEMA IF EXISTS hubsync CASCADE",
        )
        .await?;
        let wan = hubsync_pass(
            options,
            &fleet_config(options, &master, &far, "sales", SITES_AT_ONCE),
            "sales",
        )
        .await?;
        let wan_rate = wan.rows_read as f64 / wan.seconds.max(1e-9);
        let loop_rate = full.rows_read as f64 / full.seconds.max(1e-9);
        report.scenarios.push(Scenario {
            baseline: "hubsync full pull on loopback".into(),
            baseline_seconds: Some(full.seconds),
            // Throughputs, since the WAN pass also reads the rows the
            // incremental scenario added.
            ratio: Some(wan_rate / loop_rate.max(1e-9)),
            ..scenario(
                "wan_full_pull",
                &wan,
                "",
                None,
                options.sites,
                format!(
                    "{} ms round trip added; WAN throughput = {:.0}% of loopback",
                    2 * options.wan_delay.as_millis(),
                    100.0 * wan_rate / loop_rate.max(1e-9)
                ),
            )
        });
    }

    // ------------------------------------------------------ no-op, PostgreSQL
    if options.noop_pg_sites > 0 {
        say(&format!(
            "no-op cycle: {} PostgreSQL site databases",
            options.noop_pg_sites
        ));
        let noop_master =
            database_url(&options.pg_url, &format!("{}_noop_master", options.prefix))?;
        recreate_database(&mut admin, &format!("{}_noop_master", options.prefix)).await?;
        run_sql(&noop_master, MASTER_SCHEMA).await?;
        let mut noop_sites = Vec::new();
        for i in 1..=options.noop_pg_sites {
            let name = format!("{}_noop_{i:04}", options.prefix);
            recreate_database(&mut admin, &name).await?;
            let url = database_url(&options.pg_url, &name)?;
            run_sql(
                &url,
                &format!(
                    "{SITE_SCHEMA}\n{};\nCREATE INDEX sales_updated_at ON sales (updated_at);",
                    insert_sales(
                        1,
                        100,
                        "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'"
                    )
                ),
            )
            .await?;
            noop_sites.push((format!("store-{i:04}"), url));
        }
        // Enough site slots to keep every site's connection between cycles,
        // as `hubsync run` does with `max_concurrent_sites` >= the fleet.
        let noop_config = fleet_config(
            options,
            &noop_master,
            &noop_sites,
            "sales",
            options.noop_pg_sites.max(SITES_AT_ONCE),
        );
        hubsync_pass(options, &noop_config, "sales").await?; // the initial load
        let hub = open_hub(options, &noop_config).await?;
        let cold = timed_pass(&hub, "sales").await?;
        let warm = timed_pass(&hub, "sales").await?;
        let kept = hub.idle_site_connections();
        hub.close().await;
        let baseline = psql_cycle(&noop_sites, &options.work_dir).await;
        report.scenarios.push(scenario(
            "noop_cycle_postgres",
            &warm,
            "one psql script: connect + cursor query per site",
            baseline,
            options.noop_pg_sites,
            format!(
                "{} sites, nothing to move, a running hub's cycle ({kept} site connections kept from the \
                 previous cycle); rows = the cursor_lag overlap re-read",
                options.noop_pg_sites
            ),
        ));
        report.scenarios.push(scenario(
            "noop_cycle_postgres_cold",
            &cold,
            "one psql script: connect + cursor query per site",
            baseline,
            options.noop_pg_sites,
            format!(
                "the same cycle by a fresh hub (a `hubsync sync`, or a daemon's first cycle): every site logs in; {} site slots",
                options.noop_pg_sites.max(SITES_AT_ONCE)
            ),
        ));
    }

    // ---------------------------------------------------------- no-op, SQLite
    if options.noop_sqlite_sites > 0 {
        say(&format!(
            "no-op cycle: {} SQLite site files",
            options.noop_sqlite_sites
        ));
        let name = format!("{}_noop_sqlite_master", options.prefix);
        recreate_database(&mut admin, &name).await?;
        let noop_master = database_url(&options.pg_url, &name)?;
        run_sql(
            &noop_master,
            "CREATE TABLE sales_sqlite (store_id text NOT NULL, id bigint NOT NULL,
               sku text, qty int, price numeric(12,2), sold_at text, updated_at text, PRIMARY KEY (store_id, id))",
        )
        .await?;
        let dir = options.work_dir.join("sqlite-sites");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut files = Vec::new();
        for i in 1..=options.noop_sqlite_sites {
            let path = dir.join(format!("store-{i:04}.db"));
            sqlite_site(&path).await?;
            files.push((
                format!("store-{i:04}"),
                format!("sqlite://{}", path.display()),
            ));
        }
        let noop_config =
            fleet_config(options, &noop_master, &files, "sales_sqlite", SITES_AT_ONCE);
        let hub = open_hub(options, &noop_config).await?;
        timed_pass(&hub, "sales").await?; // the initial load
        let noop = timed_pass(&hub, "sales").await?;
        hub.close().await;
        report.scenarios.push(scenario(
            "noop_cycle_sqlite",
            &noop,
            "",
            None,
            options.noop_sqlite_sites,
            format!(
                "{} SQLite files, nothing to move, a running hub's cycle (SQLite files are opened per run; {SITES_AT_ONCE} at once)",
                options.noop_sqlite_sites
            ),
        ));
    }
    if options.late_rows > 0 {
        report
            .scenarios
            .push(late_commit_scan(options, &mut admin, say).await?);
    }
    if options.replica_sites > 0 {
        let scenarios = replicas::replicas(options, &mut admin, say).await?;
        report.scenarios.extend(scenarios);
    }
    if !options.keep {
        say("dropping the bench databases (`--keep` keeps them)");
        let pattern = format!("{}\\_%", options.prefix.replace('_', "\\_"));
        let names = sqlx::query_scalar::<_, String>(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
        )
        .bind(pattern)
        .fetch_all(&mut admin)
        .await?;
        for name in names {
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .await?;
        }
    }
    admin.close().await?;
    Ok(report)
}

/// The whole-process scenario: a `hubsync sync --flow sales` process
/// (start-up, migrations check, describes, logins, the pull, the summary)
/// into an emptied master, against a shell script that runs one
/// `psql | psql` binary COPY pipe per site (COPY into a staging table, then
/// `INSERT ... ON CONFLICT`), `parallelism` sites at a time through
/// `xargs -P`. Both are timed from process start to exit.
///
/// Errors: `psql`/`bash`/`xargs` missing, either side failing, or a master
/// row count other than sites x rows after either side.
async fn sync_process(
    options: &BenchOptions,
    master: &str,
    sites: &[(String, String)],
    config: &str,
    say: &dyn Fn(&str),
) -> anyhow::Result<Scenario> {
    say("whole process: a `hubsync sync` process against a psql COPY script");
    let clear = "TRUNCATE sales; DROP SCHEMA IF EXISTS hubsync CASCADE";
    run_sql(master, clear).await?;
    let pipe = options.work_dir.join("copy-site.sh");
    std::fs::write(
        &pipe,
        format!(
            "#!/usr/bin/env bash\nset -euo pipefail\n\
             psql -X -q -d \"$2\" -c \"COPY ({PULL_SELECT}) TO STDOUT (FORMAT binary)\" \\\n  \
             | psql -X -q -v ON_ERROR_STOP=1 -d \"$3\" -c BEGIN -c \"{}\" \\\n  \
             -c \"COPY hubsync_stage FROM STDIN (FORMAT binary)\" -c \"{}\" -c COMMIT\n",
            PULL_STAGE.replace('\n', " "),
            PULL_UPSERT.replace('\n', " ").replace("$STORE", "'$1'")
        ),
    )?;
    let list: String = sites
        .iter()
        .map(|(id, url)| format!("{id} {url} {master}\n"))
        .collect();
    let list_path = options.work_dir.join("copy-sites.txt");
    std::fs::write(&list_path, list)?;
    let started = Instant::now();
    let status = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "xargs -P {} -L 1 bash {} < {}",
            options.parallelism.max(1),
            pipe.display(),
            list_path.display()
        ))
        .status()
        .await
        .context("running the psql COPY script")?;
    let baseline = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the psql COPY script failed ({status})");
    }
    let mut expected = 0;
    for (_, url) in sites {
        expected += count_sales(url).await?;
    }
    check_master_rows(master, expected, "the psql COPY script").await?;
    run_sql(master, clear).await?;
    let config_path = options.work_dir.join("bench-process.toml");
    std::fs::write(&config_path, config)?;
    let started = Instant::now();
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["sync", "--flow", "sales", "--config"])
        .arg(&config_path)
        .output()
        .await
        .context("running `hubsync sync`")?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "`hubsync sync` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    check_master_rows(master, expected, "`hubsync sync`").await?;
    let pass = Pass {
        seconds,
        rows_read: expected,
        statements: 0,
        peak_rss_mib: None,
    };
    Ok(Scenario {
        statements_per_site: None,
        ..scenario(
            "sync_process",
            &pass,
            "psql | psql binary COPY -> staging + INSERT ON CONFLICT per site, xargs -P",
            Some(baseline),
            sites.len(),
            format!(
                "whole processes, start to exit: `hubsync sync` of {} sites ({expected} rows) into an empty \
                 master against the psql script; ratio = script time / hubsync time",
                sites.len()
            ),
        )
    })
}

/// Rows in the `sales` table of the database at `url`.
async fn count_sales(url: &str) -> anyhow::Result<u64> {
    let mut conn = PgConnection::connect(url).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sales")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(rows as u64)
}

/// Fails unless the master's `sales` holds `expected` rows after `who`.
async fn check_master_rows(master: &str, expected: u64, who: &str) -> anyhow::Result<()> {
    let rows = count_sales(master).await?;
    if rows != expected {
        bail!("the master holds {rows} sales rows after {who}, expected {expected}");
    }
    Ok(())
}

/// The late-commit scan scenario (see the module docs).
async fn late_commit_scan(
    options: &BenchOptions,
    admin: &mut PgConnection,
    say: &dyn Fn(&str),
) -> anyhow::Result<Scenario> {
    say(&format!(
        "late-commit scan: one site of {} rows, runs by transaction id and by lag only",
        options.late_rows
    ));
    let master_name = format!("{}_late_master", options.prefix);
    let site_name = format!("{}_late_site", options.prefix);
    recreate_database(admin, &master_name).await?;
    recreate_database(admin, &site_name).await?;
    let master = database_url(&options.pg_url, &master_name)?;
    let site = database_url(&options.pg_url, &site_name)?;
    run_sql(&master, MASTER_SCHEMA).await?;
    run_sql(
        &site,
        &format!(
            "{SITE_SCHEMA}\n{};\nCREATE INDEX sales_updated_at ON sales (updated_at); ANALYZE sales;",
            insert_sales(
                1,
                options.late_rows,
                "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'"
            )
        ),
    )
    .await?;
    let sites = [("store-late".to_string(), site.clone())];
    let by_xid = fleet_config(options, &master, &sites, "sales", SITES_AT_ONCE);
    let by_lag = by_xid.replacen(
        "site_column = \"store_id\"",
        "site_column = \"store_id\"\n  late_commits = \"lag\"",
        1,
    );
    hubsync_pass(options, &by_xid, "sales").await?; // the initial load
    // A few rows change before each run, so the site's transaction ids move
    // and the scan is due every run.
    let change = format!(
        "UPDATE sales SET qty = qty + 1, updated_at = clock_timestamp() WHERE id % {} = 0",
        (options.late_rows / 100).max(1)
    );
    let mut medians = Vec::new();
    for config in [&by_xid, &by_lag] {
        let hub = open_hub(options, config).await?;
        run_sql(&site, &change).await?;
        timed_pass(&hub, "sales").await?; // stores this setting's snapshot
        let mut passes = Vec::new();
        for _ in 0..3 {
            run_sql(&site, &change).await?;
            passes.push(timed_pass(&hub, "sales").await?);
        }
        hub.close().await;
        passes.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        medians.push(passes.swap_remove(1));
    }
    let lag = medians.pop().expect("two settings");
    let xid = medians.pop().expect("two settings");
    Ok(scenario(
        "late_commit_scan",
        &xid,
        "the same incremental run with `late_commits = \"lag\"`",
        Some(lag.seconds),
        1,
        format!(
            "one site of {} rows, 100 changed per run; the re-read by transaction id (a sequential scan) \
             costs {:+.0} ms per run (medians of 3)",
            options.late_rows,
            1000.0 * (xid.seconds - lag.seconds)
        ),
    ))
}

/// A SQLite site file with 100 sales.
async fn sqlite_site(path: &std::path::Path) -> anyhow::Result<()> {
    let url = crate::config::DbUrl::Sqlite {
        path: path.to_path_buf(),
    };
    let options = crate::connector::ConnectOptions {
        max_connections: 1,
        connect_timeout: Duration::from_secs(10),
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: None,
        create_if_missing: true,
    };
    let conn = crate::connector::Connector::connect(&url, &options).await?;
    conn.execute_script(
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, qty INTEGER NOT NULL, price TEXT NOT NULL,
                             sold_at TEXT NOT NULL, updated_at TEXT NOT NULL);
         CREATE INDEX sales_updated_at ON sales (updated_at);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO sales SELECT i, 'SKU-' || i, 1 + i % 9, printf('%d.%02d', i % 100, i % 97),
                strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' seconds'),
                strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' seconds') FROM n;",
    )
    .await?;
    conn.close().await;
    Ok(())
}

/// The psql baseline of a no-op cycle: one `psql` process that connects to
/// every site in turn and runs the cursor query hubsync runs. `None` when
/// `psql` is not installed.
async fn psql_cycle(sites: &[(String, String)], work_dir: &std::path::Path) -> Option<f64> {
    let mut script = String::new();
    for (_, url) in sites {
        script.push_str(&format!(
            "\\connect {url}\nSELECT * FROM sales WHERE updated_at >= timestamptz '2026-01-01 00:01:35+00' ORDER BY updated_at, id LIMIT 10000;\n"
        ));
    }
    let path = work_dir.join("noop-cycle.sql");
    std::fs::write(&path, script).ok()?;
    let started = Instant::now();
    let status = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-o", "/dev/null", "-d"])
        .arg(&sites.first()?.1)
        .arg("-f")
        .arg(&path)
        .status()
        .await
        .ok()?;
    status.success().then(|| started.elapsed().as_secs_f64())
}
