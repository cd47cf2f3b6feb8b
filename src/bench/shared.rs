//! The shared-reads scenario: an incremental push of zone prices to SQLite
//! site files, where the sites of one zone run the same read (the same
//! statement, the same `:site.zone` value, the same checkpoint) and so share
//! ONE read of the master per pass (`flow/shared.rs`), beside the same push
//! where a per-site parameter (`:site.id = :site.id`, always true) makes
//! every site's read its own.
//!
//! Fleet: a PostgreSQL master `prices (sku, zone, price, version)` of
//! [`ZONES`] zones x `rows` rows, where `rows` = `--push-rows` / [`ZONES`]
//! capped at `--batch-size` (a shared read is kept only if it fits in one
//! batch); [`ZONES`] x `--bulk-sites` SQLite site files (at least 2 per
//! zone, so that some read is shared), zones dealt round robin.
//! Both flows are loaded first (not timed: an initial load has no
//! checkpoint to share). Then every price changes and both flows push it,
//! twice, in the order shared, apart, apart, shared, so neither side always
//! runs first. Ratio = time of the per-site reads / time of the shared
//! reads. The read counters (`Hub::push_reads`) and every site's rows are
//! checked, so a pass that silently stopped sharing, or moved the wrong
//! rows, fails the bench.

use anyhow::{Context, ensure};
use sqlx::PgConnection;

use super::{BenchOptions, Pass, Scenario, database_url, open_hub, recreate_database, run_sql};

/// Zones of the scenario's fleet (distinct `:site.zone` values).
const ZONES: usize = 4;

/// The scenario's hub config: `sites` SQLite files (id, file name, zone)
/// in the work dir's `shared-push` folder, the shared flow into `prices`
/// and the per-site one into `prices_apart`.
fn shared_config(options: &BenchOptions, master: &str, sites: &[(String, String, char)]) -> String {
    let mut text = format!(
        "[hub]\nbatch_size = {}\nmaster_write_concurrency = {}\nmax_concurrent_sites = {}\n\n[master]\nurl = \"{master}\"\n",
        options.batch_size,
        options.parallelism,
        sites.len()
    );
    for (id, file, zone) in sites {
        text.push_str(&format!(
            "\n[[site]]\nid = \"{id}\"\nurl = \"sqlite://shared-push/{file}\"\ntags = {{ zone = \"{zone}\" }}\n"
        ));
    }
    for (flow, target, extra) in [
        ("shared", "prices", ""),
        ("apart", "prices_apart", " AND :site.id = :site.id"),
    ] {
        text.push_str(&format!(
            "\n[[flow]]\nname = \"{flow}\"\ndirection = \"push\"\n  [[flow.stream]]\n  \
             query = \"SELECT sku, zone, price, version FROM prices WHERE zone = :site.zone{extra}\"\n  \
             target = \"{target}\"\n  primary_key = [\"sku\"]\n  cursor = \"version\"\n"
        ));
    }
    text
}

/// Creates the SQLite site files (both target tables, WAL mode).
async fn site_files(dir: &std::path::Path, sites: &[(String, String, char)]) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for (_, file, _) in sites {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join(file))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        conn.execute(
            "CREATE TABLE prices (sku INTEGER PRIMARY KEY, zone TEXT, price TEXT, version INTEGER);
             CREATE TABLE prices_apart (sku INTEGER PRIMARY KEY, zone TEXT, price TEXT, version INTEGER);",
        )
        .await?;
        conn.close().await?;
    }
    Ok(())
}

/// Checks that every site file holds, in both tables, exactly its zone's
/// `rows` prices, all at `version` >= `min_version`.
async fn check_sites(
    dir: &std::path::Path,
    sites: &[(String, String, char)],
    rows: u64,
    min_version: i64,
) -> anyhow::Result<()> {
    use sqlx::Connection;
    for (id, file, zone) in sites {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join(file).display()))
                .await?;
        for table in ["prices", "prices_apart"] {
            let (count, zones, fresh): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*), count(DISTINCT zone) + sum(zone <> '{zone}'), sum(version >= {min_version}) FROM {table}"
            )))
            .fetch_one(&mut conn)
            .await?;
            ensure!(
                count as u64 == rows && zones == 1 && fresh as u64 == rows,
                "site {id} table {table}: {count} rows ({fresh} current), expected {rows} of zone {zone}"
            );
        }
        conn.close().await?;
    }
    Ok(())
}

/// The shared-reads scenario (see the module docs). Errors: a database or
/// file cannot be created, a pass fails, a pass sent another number of
/// master reads than expected, or a site holds other rows than its zone's.
pub(super) async fn shared_push_reads(
    options: &BenchOptions,
    admin: &mut PgConnection,
    say: &dyn Fn(&str),
) -> anyhow::Result<Scenario> {
    let site_count = ZONES * options.bulk_sites.max(2);
    let rows = (options.push_rows / ZONES as u64).clamp(1, options.batch_size as u64);
    say(&format!(
        "shared reads: {rows} changed prices per zone pushed to {site_count} SQLite sites in {ZONES} zones"
    ));
    let name = format!("{}_shared_master", options.prefix);
    recreate_database(admin, &name).await?;
    let master = database_url(&options.pg_url, &name)?;
    run_sql(
        &master,
        &format!(
            "CREATE TABLE prices (sku bigint PRIMARY KEY, zone text NOT NULL, price numeric(10,2) NOT NULL, version bigint NOT NULL);
             INSERT INTO prices SELECT g, chr(65 + (g - 1) / {rows}), 1.00, g FROM generate_series(1, {}) g;",
            rows * ZONES as u64
        ),
    )
    .await?;
    let sites: Vec<(String, String, char)> = (0..site_count)
        .map(|i| {
            let zone = char::from(b'A' + (i % ZONES) as u8);
            (
                format!("zone-{:03}", i + 1),
                format!("zone-{:03}.db", i + 1),
                zone,
            )
        })
        .collect();
    let dir = options.work_dir.join("shared-push");
    site_files(&dir, &sites).await?;
    let hub = open_hub(options, &shared_config(options, &master, &sites)).await?;
    let outcome = measure(&hub, &master, &dir, &sites, rows).await;
    hub.close().await;
    let (shared, apart) = outcome?;
    Ok(Scenario {
        name: "shared_push_reads".into(),
        rows: shared.rows_read,
        hubsync_seconds: shared.seconds,
        hubsync_rows_per_second: shared.rows_read as f64 / shared.seconds.max(1e-9),
        baseline: "the same push with one master read per site".into(),
        baseline_seconds: Some(apart.seconds),
        ratio: Some(apart.seconds / shared.seconds.max(1e-9)),
        peak_rss_mib: shared.peak_rss_mib,
        statements_per_site: Some(shared.statements as f64 / (2 * site_count) as f64),
        note: format!(
            "{site_count} SQLite sites in {ZONES} zones, {rows} changed prices per zone, two incremental passes each \
             (shared, apart, apart, shared): {} master reads per shared pass instead of {site_count}; \
             ratio = per-site reads' time / shared reads' time",
            ZONES
        ),
    })
}

/// The timed part: loads both flows, then changes every price and pushes
/// it twice per flow; returns (shared passes, per-site passes), each summed.
async fn measure(
    hub: &crate::flow::Hub,
    master: &str,
    dir: &std::path::Path,
    sites: &[(String, String, char)],
    rows: u64,
) -> anyhow::Result<(Pass, Pass)> {
    let site_count = sites.len() as u64;
    super::timed_pass(hub, "shared").await?;
    super::timed_pass(hub, "apart").await?;
    let mut shared = Vec::new();
    let mut apart = Vec::new();
    for (round, order) in [["shared", "apart"], ["apart", "shared"]]
        .iter()
        .enumerate()
    {
        let version = 1_000_000 * (round as i64 + 1);
        run_sql(
            master,
            &format!("UPDATE prices SET price = price + 1, version = version + {version}"),
        )
        .await?;
        for flow in order {
            let (sent, answered) = hub.push_reads();
            let pass = super::timed_pass(hub, flow).await?;
            let (sent, answered) = (hub.push_reads().0 - sent, hub.push_reads().1 - answered);
            let expected = if *flow == "shared" {
                (ZONES as u64, site_count - ZONES as u64)
            } else {
                (site_count, 0)
            };
            ensure!(
                (sent, answered) == expected,
                "the `{flow}` pass sent {sent} master reads and shared {answered}, expected {expected:?}"
            );
            ensure!(
                pass.rows_read == rows * site_count,
                "the `{flow}` pass read {} rows, expected {}",
                pass.rows_read,
                rows * site_count
            );
            if *flow == "shared" {
                &mut shared
            } else {
                &mut apart
            }
            .push(pass);
        }
        check_sites(dir, sites, rows, version)
            .await
            .context("after a pass")?;
    }
    Ok((super::sum_passes(&shared), super::sum_passes(&apart)))
}
