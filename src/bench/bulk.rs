//! The bulk-write scenarios of the dialects other than PostgreSQL: a push of
//! the master's `prices` into empty SQLite site files and into empty
//! MariaDB/MySQL site databases, each beside a hand-written script that
//! moves the same rows with that database's fastest plain form, in the same
//! run and on the same data:
//!
//! * SQLite: per site file, one transaction, one prepared single-row
//!   `INSERT ... ON CONFLICT (sku) DO UPDATE` executed per row (SQLite runs
//!   in-process: per-row statements cost no round trip);
//! * MariaDB/MySQL: per site database, one transaction of multi-row
//!   `INSERT ... ON DUPLICATE KEY UPDATE` statements of
//!   [`MYSQL_ROWS_PER_STATEMENT`] rows.
//!
//! Both baselines read the master's rows once per site and run
//! `parallelism` sites at a time; hubsync's sites share one master read
//! (the same statement and parameters, no checkpoint yet: `flow/shared.rs`). hubsync's own forms: multi-row upserts
//! in one transaction per batch, sized to SQLite's bound-parameter limit and
//! to half the MySQL server's `max_allowed_packet`; into the empty MySQL
//! tables of sites without a checkpoint (the MySQL sites have ids of their
//! own, `mysql-NNN`, checked to have none), its initial load: plain
//! multi-row `INSERT`s of the same size.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection, SqliteConnection};

use super::{BenchOptions, SITES_AT_ONCE, Scenario, fleet_config, hubsync_pass, run_parallel};

/// Rows per `INSERT` statement of the MySQL baseline (3 columns: 3,000
/// bound values, about 100 KiB: well under any `max_allowed_packet`).
pub(super) const MYSQL_ROWS_PER_STATEMENT: usize = 1_000;

/// One price row as the baselines carry it: (sku, price as exact decimal
/// text, updated_at).
type Price = (String, String, DateTime<Utc>);

/// The master's prices, read the way both baselines read them.
async fn master_prices(master: &str) -> anyhow::Result<Vec<Price>> {
    let mut conn = PgConnection::connect(master).await?;
    let rows = sqlx::query_as::<_, Price>("SELECT sku, price::text, updated_at FROM prices")
        .fetch_all(&mut conn)
        .await?;
    conn.close().await?;
    Ok(rows)
}

/// Push to `sites` SQLite files (created empty in the work dir) beside the
/// prepared-statement baseline. Errors: a file cannot be created, either
/// side fails, or a file holds other than `push_rows` rows afterwards.
pub(super) async fn sqlite_push(
    options: &BenchOptions,
    master: &str,
    sites: usize,
    say: &dyn Fn(&str),
) -> anyhow::Result<Scenario> {
    say(&format!(
        "SQLite push: {} prices into {sites} SQLite site files",
        options.push_rows
    ));
    let dir = options.work_dir.join("sqlite-push");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let files: Vec<_> = (1..=sites)
        .map(|i| dir.join(format!("store-{i:03}.db")))
        .collect();
    for file in &files {
        sqlite_prices_table(file).await?;
    }
    let jobs: Vec<_> = files
        .iter()
        .map(|file| {
            let master = master.to_string();
            let file = file.clone();
            async move { sqlite_baseline(&master, &file).await }
        })
        .collect();
    let (baseline, _) = run_parallel(options.parallelism, jobs).await?;
    for file in &files {
        let mut conn = sqlite_connect(file).await?;
        conn.execute("DELETE FROM prices").await?;
        conn.close().await?;
    }
    let urls: Vec<(String, String)> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                format!("store-{:03}", i + 1),
                format!("sqlite://{}", f.display()),
            )
        })
        .collect();
    let config = fleet_config(options, master, &urls, "sales", SITES_AT_ONCE);
    let pass = hubsync_pass(options, &config, "prices").await?;
    for file in &files {
        let mut conn = sqlite_connect(file).await?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM prices")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        anyhow::ensure!(
            rows as u64 == options.push_rows,
            "{} holds {rows} prices after hubsync's push, expected {}",
            file.display(),
            options.push_rows
        );
    }
    Ok(super::scenario(
        "sqlite_push",
        &pass,
        "per file: one transaction, a prepared single-row INSERT ON CONFLICT per row",
        Some(baseline),
        sites,
        format!(
            "{} rows into each of {sites} empty SQLite files; ratio = baseline time / hubsync time",
            options.push_rows
        ),
    ))
}

/// Opens a SQLite site file the way hubsync opens one (journal mode left
/// as the file has it, 30 s busy timeout).
async fn sqlite_connect(file: &Path) -> anyhow::Result<SqliteConnection> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .busy_timeout(Duration::from_secs(30));
    Ok(SqliteConnection::connect_with(&options).await?)
}

/// Creates `file` in WAL mode with an empty `prices` table.
async fn sqlite_prices_table(file: &Path) -> anyhow::Result<()> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    conn.execute(
        "CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT NOT NULL, updated_at TEXT NOT NULL)",
    )
    .await?;
    conn.close().await?;
    Ok(())
}

/// The SQLite baseline for one file; returns rows written.
async fn sqlite_baseline(master: &str, file: &Path) -> anyhow::Result<u64> {
    let prices = master_prices(master).await?;
    let mut conn = sqlite_connect(file).await?;
    let mut tx = conn.begin().await?;
    for (sku, price, updated_at) in &prices {
        sqlx::query(
            "INSERT INTO prices (sku, price, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (sku) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
        )
        .bind(sku)
        .bind(price)
        .bind(updated_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(prices.len() as u64)
}

/// Push to `sites` MariaDB/MySQL databases (`<prefix>_my_NNN`, recreated
/// empty on the server at `mysql_url`) beside the multi-row baseline.
/// Errors: the server refuses a database, either side fails, or a database
/// holds other than `push_rows` rows afterwards.
pub(super) async fn mysql_push(
    options: &BenchOptions,
    mysql_url: &str,
    master: &str,
    sites: usize,
    say: &dyn Fn(&str),
) -> anyhow::Result<Scenario> {
    say(&format!(
        "MySQL push: {} prices into {sites} MariaDB/MySQL site databases",
        options.push_rows
    ));
    let server = url::Url::parse(mysql_url).context("`--mysql-url` is not a URL")?;
    let mut admin = MySqlConnection::connect(mysql_url)
        .await
        .context("connecting to `--mysql-url`")?;
    let mut urls = Vec::new();
    for i in 1..=sites {
        let name = format!("{}_my_{i:03}", options.prefix);
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`;
                 CREATE TABLE `{name}`.prices (sku VARCHAR(32) PRIMARY KEY, price DECIMAL(12,2) NOT NULL,
                                               updated_at DATETIME(6) NOT NULL)"
            )))
            .await?;
        let mut url = server.clone();
        url.set_path(&name);
        // Site ids of their own: the SQLite push (and the PostgreSQL push)
        // leave checkpoints of the `prices` flow under `store-NNN`, with
        // which hubsync would re-read their overlap and upsert (3 round
        // trips a statement) instead of the initial load this scenario
        // measures.
        urls.push((format!("mysql-{i:03}"), url.to_string()));
    }
    // Two passes each, alternating (baseline, hubsync, hubsync, baseline),
    // every one into empty tables: a server that warms up or slows down
    // during the scenario weighs on both sides alike (one pass each
    // ranged 0.74-1.13x over four runs of the same code).
    let config = fleet_config(options, master, &urls, "sales", SITES_AT_ONCE);
    let (mut baseline, mut passes) = (0.0, Vec::new());
    for turn in ["baseline", "hubsync", "hubsync", "baseline"] {
        for (_, url) in &urls {
            let mut conn = MySqlConnection::connect(url).await?;
            conn.execute("TRUNCATE TABLE prices").await?;
            conn.close().await?;
        }
        if turn == "baseline" {
            let jobs: Vec<_> = urls
                .iter()
                .map(|(_, url)| {
                    let master = master.to_string();
                    let url = url.clone();
                    async move { mysql_baseline(&master, &url).await }
                })
                .collect();
            baseline += run_parallel(options.parallelism, jobs).await?.0;
            continue;
        }
        clear_checkpoints(master, "prices", "mysql-%").await?;
        passes.push(hubsync_pass(options, &config, "prices").await?);
        for (id, url) in &urls {
            let mut conn = MySqlConnection::connect(url).await?;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM prices")
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            anyhow::ensure!(
                rows as u64 == options.push_rows,
                "site {id} holds {rows} prices after hubsync's push, expected {}",
                options.push_rows
            );
        }
    }
    let pass = super::sum_passes(&passes);
    if !options.keep {
        for i in 1..=sites {
            let name = format!("{}_my_{i:03}", options.prefix);
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS `{name}`"
                )))
                .await?;
        }
    }
    admin.close().await?;
    Ok(super::scenario(
        "mysql_push",
        &pass,
        "per database: one transaction of 1,000-row INSERT ... ON DUPLICATE KEY UPDATE",
        Some(baseline),
        2 * sites,
        format!(
            "{} rows into each of {sites} empty MariaDB/MySQL tables of sites with no checkpoint (hubsync's initial load: plain multi-row INSERTs), two passes each (baseline, hubsync, hubsync, baseline); ratio = baseline time / hubsync time",
            options.push_rows
        ),
    ))
}

/// Deletes the master's checkpoints of `flow` for site ids `LIKE
/// site_pattern`, so the next pass is the initial load into empty tables
/// it reports (not a re-read and upsert: the SQLite push leaves
/// checkpoints of the same flow, and so does an earlier pass).
async fn clear_checkpoints(master: &str, flow: &str, site_pattern: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(master).await?;
    sqlx::query("DELETE FROM hubsync.checkpoints WHERE flow = $1 AND site LIKE $2")
        .bind(flow)
        .bind(site_pattern)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// The MySQL baseline for one database; returns rows written.
async fn mysql_baseline(master: &str, url: &str) -> anyhow::Result<u64> {
    let prices = master_prices(master).await?;
    let mut conn = MySqlConnection::connect(url).await?;
    let mut tx = conn.begin().await?;
    for chunk in prices.chunks(MYSQL_ROWS_PER_STATEMENT) {
        let mut sql = String::from("INSERT INTO prices (sku, price, updated_at) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
        }
        sql.push_str(
            " ON DUPLICATE KEY UPDATE price = VALUES(price), updated_at = VALUES(updated_at)",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (sku, price, updated_at) in chunk {
            query = query.bind(sku).bind(price).bind(updated_at.naive_utc());
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(prices.len() as u64)
}
