//! The replica scenarios of `hubsync bench` (`--replica-sites`, default
//! 1,000): one cycle of a pull over that many SQLite site files (100 rows
//! each) into a PostgreSQL master, run by leased hub replicas
//! (`hub.leases`, see `state/leases.rs`), each replica a [`Hub`] of its own
//! (its own master pool and site slots) in this process, as N `hubsync run`
//! processes would be on one machine:
//!
//! * `replicas_1_cycle`: one replica; time until every site's run succeeded;
//! * `replicas_3_cycle`: three replicas, the same;
//! * `replicas_3_failover`: three replicas, one aborted mid-cycle (its
//!   task dropped: no lease released, as for a SIGKILL); the time from the
//!   abort until every pair it held has succeeded at another replica
//!   (bounded below by the lease period, 5 s here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use super::{
    BenchOptions, SITES_AT_ONCE, Scenario, database_url, fleet_config, open_hub, recreate_database,
    run_sql, sqlite_site,
};
use crate::flow::{Hub, NoProgress};

/// Lease period of the bench replicas, seconds.
const LEASE_SECONDS: u64 = 5;

/// One replica running in this process.
struct Replica {
    hub: Arc<Hub>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_replica(options: &BenchOptions, config: &str, id: &str) -> anyhow::Result<Replica> {
    let text = config.replacen("[hub]\n", &format!("[hub]\nreplica_id = \"{id}\"\n"), 1);
    let hub = Arc::new(open_hub(options, &text).await?);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(crate::scheduler::run_leased_schedules(
        hub.clone(),
        Arc::new(NoProgress),
        cancel.clone(),
    ));
    Ok(Replica { hub, cancel, task })
}

async fn stop(replicas: Vec<Replica>) {
    for replica in replicas {
        replica.cancel.cancel();
        let _ = replica.task.await;
        replica.hub.close().await;
    }
}

async fn count(master: &mut PgConnection, sql: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(master)
            .await?,
    )
}

/// Waits until `sql` counts `expected` (polling every 50 ms, at most 10 min).
async fn wait_count(master: &mut PgConnection, sql: &str, expected: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(master, sql).await? < expected {
        if Instant::now() > deadline {
            bail!("replicas: timed out waiting for `{sql}` to reach {expected}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

const SUCCEEDED: &str = "SELECT count(*) FROM hubsync.runs WHERE status = 'succeeded'";

/// Runs the replica scenarios (see the module docs).
pub(super) async fn replicas(
    options: &BenchOptions,
    admin: &mut PgConnection,
    say: &dyn Fn(&str),
) -> anyhow::Result<Vec<Scenario>> {
    let n = options.replica_sites;
    say(&format!(
        "replicas: {n} SQLite site files, one cycle by 1 and by 3 leased replicas"
    ));
    let name = format!("{}_replicas_master", options.prefix);
    recreate_database(admin, &name).await?;
    let master = database_url(&options.pg_url, &name)?;
    let dir = options.work_dir.join("replica-sites");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    for i in 1..=n {
        let path = dir.join(format!("store-{i:04}.db"));
        sqlite_site(&path).await?;
        files.push((
            format!("store-{i:04}"),
            format!("sqlite://{}", path.display()),
        ));
    }
    let config = fleet_config(options, &master, &files, "sales_sqlite", SITES_AT_ONCE)
        .replacen(
            "[hub]\n",
            &format!(
                "[hub]\nleases = true\nlease_seconds = {LEASE_SECONDS}\nheartbeat_seconds = 1\n"
            ),
            1,
        )
        .replacen(
            "name = \"sales\"\ndirection = \"pull\"\n",
            "name = \"sales\"\ndirection = \"pull\"\nschedule = \"every 1h\"\n",
            1,
        );
    let mut conn = <PgConnection as sqlx::Connection>::connect(&master).await?;
    let mut scenarios = Vec::new();
    for replicas in [1, 3] {
        let seconds = cycle(options, &master, &config, replicas, &mut conn, n).await?;
        scenarios.push(replica_scenario(
            &format!("replicas_{replicas}_cycle"),
            n,
            seconds,
            format!("{n} SQLite sites x 100 rows, one cycle by {replicas} leased replica(s) in this process"),
        ));
    }
    let (seconds, held) = failover(options, &master, &config, &mut conn, n).await?;
    scenarios.push(replica_scenario(
        "replicas_3_failover",
        n,
        seconds,
        format!(
            "3 replicas, one aborted mid-cycle holding {held} pair(s): time until they succeeded elsewhere \
             (lease {LEASE_SECONDS} s + a poll, at most 1 s)"
        ),
    ));
    sqlx::Connection::close(conn).await?;
    Ok(scenarios)
}

fn replica_scenario(name: &str, sites: usize, seconds: f64, note: String) -> Scenario {
    let rows = 100 * sites as u64;
    Scenario {
        name: name.into(),
        rows,
        hubsync_seconds: seconds,
        hubsync_rows_per_second: rows as f64 / seconds.max(1e-9),
        baseline: String::new(),
        baseline_seconds: None,
        ratio: None,
        peak_rss_mib: None,
        statements_per_site: None,
        note,
    }
}

/// A fresh master (no state, no rows) for the next measurement.
async fn reset(master: &str) -> anyhow::Result<()> {
    run_sql(
        master,
        "DROP SCHEMA IF EXISTS hubsync CASCADE;
         DROP TABLE IF EXISTS sales_sqlite;
         CREATE TABLE sales_sqlite (store_id text NOT NULL, id bigint NOT NULL, sku text, qty int,
           price numeric(12,2), sold_at text, updated_at text, PRIMARY KEY (store_id, id))",
    )
    .await
}

/// One cycle by `replicas` replicas: seconds from their start until every
/// site's run succeeded.
async fn cycle(
    options: &BenchOptions,
    master: &str,
    config: &str,
    replicas: usize,
    conn: &mut PgConnection,
    sites: usize,
) -> anyhow::Result<f64> {
    reset(master).await?;
    // The state tables first, so the replicas do not queue on the migration.
    open_hub(options, config).await?.close().await;
    let started = Instant::now();
    let mut running = Vec::new();
    for i in 1..=replicas {
        running.push(start_replica(options, config, &format!("r{i}")).await?);
    }
    wait_count(conn, SUCCEEDED, sites as i64).await?;
    let seconds = started.elapsed().as_secs_f64();
    stop(running).await;
    check_rows(conn, sites).await?;
    Ok(seconds)
}

/// Three replicas, one aborted while it holds leases, a third of the way
/// through the cycle: (seconds until its pairs succeeded elsewhere, pairs
/// held). On a small fleet the cycle may end, or the chosen replica finish
/// its pairs, before the abort lands: the attempt is then made again (at
/// most 5 times), instead of waiting for a lease no replica will take.
///
/// Errors: a replica or the master fails, or 5 attempts caught no replica
/// holding a lease.
async fn failover(
    options: &BenchOptions,
    master: &str,
    config: &str,
    conn: &mut PgConnection,
    sites: usize,
) -> anyhow::Result<(f64, i64)> {
    for _ in 0..5 {
        reset(master).await?;
        open_hub(options, config).await?.close().await;
        let mut running = Vec::new();
        for i in 1..=3 {
            let id = format!("r{i}");
            running.push((id.clone(), start_replica(options, config, &id).await?));
        }
        wait_count(conn, SUCCEEDED, sites as i64 / 3).await?;
        let Some(holder) = holder_mid_cycle(conn, sites).await? else {
            stop(running.into_iter().map(|(_, r)| r).collect()).await;
            continue;
        };
        let index = running
            .iter()
            .position(|(id, _)| *id == holder)
            .with_context(|| format!("replicas: lease holder `{holder}` is no bench replica"))?;
        let (_, victim) = running.remove(index);
        victim.task.abort();
        let aborted = Instant::now();
        let _ = victim.task.await;
        drop(victim.hub);
        sqlx::query(
            "CREATE TEMP TABLE victim AS SELECT flow, site FROM hubsync.leases WHERE holder = $1",
        )
        .bind(&holder)
        .execute(&mut *conn)
        .await?;
        let held = count(conn, "SELECT count(*) FROM victim").await?;
        if held > 0 {
            wait_count(
                conn,
                &format!(
                    "SELECT count(*) FROM victim v WHERE EXISTS (SELECT 1 FROM hubsync.runs r \
                     WHERE r.flow = v.flow AND r.site = v.site AND r.status = 'succeeded' AND r.holder <> '{holder}')"
                ),
                held,
            )
            .await?;
        }
        let seconds = aborted.elapsed().as_secs_f64();
        wait_count(conn, SUCCEEDED, sites as i64).await?;
        stop(running.into_iter().map(|(_, r)| r).collect()).await;
        sqlx::query("DROP TABLE victim").execute(&mut *conn).await?;
        check_rows(conn, sites).await?;
        if held > 0 {
            return Ok((seconds, held));
        }
    }
    bail!(
        "replicas: in 5 attempts no replica was caught holding a lease before its runs ended \
         ({sites} sites are too few; raise --replica-sites)"
    )
}

/// A replica holding a lease now, polled every 5 ms; `None` once every one
/// of the `sites` pairs succeeded (the cycle ended first).
async fn holder_mid_cycle(conn: &mut PgConnection, sites: usize) -> anyhow::Result<Option<String>> {
    loop {
        let holder: Option<String> =
            sqlx::query_scalar("SELECT min(holder) FROM hubsync.leases WHERE holder IS NOT NULL")
                .fetch_one(&mut *conn)
                .await?;
        if holder.is_some() {
            return Ok(holder);
        }
        if count(conn, SUCCEEDED).await? >= sites as i64 {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every site's 100 rows arrived once, and each pair succeeded once.
async fn check_rows(conn: &mut PgConnection, sites: usize) -> anyhow::Result<()> {
    let rows = count(conn, "SELECT count(*) FROM sales_sqlite").await?;
    if rows != 100 * sites as i64 {
        bail!(
            "replicas: the master holds {rows} rows, expected {}",
            100 * sites
        );
    }
    let twice = count(
        conn,
        "SELECT count(*) FROM (SELECT site FROM hubsync.runs WHERE status = 'succeeded' \
         GROUP BY flow, site HAVING count(*) > 1) AS doubled",
    )
    .await
    .context("counting pairs run twice")?;
    if twice > 0 {
        bail!("replicas: {twice} pair(s) ran twice in one cycle");
    }
    Ok(())
}
