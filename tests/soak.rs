//! Long-running checks: two hubs on one config never work the same
//! (flow, site) at once, and a bounded soak where sites keep changing
//! (inserts, updates, soft and hard deletes) while `hubsync run` syncs every
//! few seconds under injected faults; after a final quiet sync the master
//! equals the union of the sites' live rows exactly.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::proxy::{FaultProxy, Mode};
use common::{Fleet, pg_create_db, psql, sqlite_exec, sqlite_query};

/// A small LCG (Knuth's MMIX constants): the same sequence for one seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const SQLITE_SITE: &str = "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
    CREATE INDEX sales_updated_at ON sales (updated_at);";
const PG_SITE: &str = "CREATE TABLE sales (id bigint PRIMARY KEY, qty int NOT NULL,
    deleted int NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());";
const PG_MASTER: &str =
    "CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, qty int NOT NULL,
    updated_at text NOT NULL, PRIMARY KEY (store_id, id));";

fn flow(schedule: &str, stream_extra: &str) -> String {
    format!(
        "[[flow]]\nname = \"sales\"\ndirection = \"pull\"\n{schedule}\n  [[flow.stream]]\n  source = \"sales\"\n  \
         target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  {stream_extra}\n"
    )
}

fn stop(mut child: Child) -> std::process::Output {
    // SIGTERM: finish the current batch and exit 0.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "hubsync run did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

/// Each (flow, site)'s runs in the master's history, checked to never
/// overlap: every run starts after the previous one finished.
fn assert_runs_never_overlap(master: &str) -> usize {
    let runs = psql(
        master,
        "SELECT site, extract(epoch FROM started_at), extract(epoch FROM finished_at)
           FROM hubsync.runs WHERE status <> 'running' ORDER BY site, started_at",
    );
    let mut previous: Option<(String, f64)> = None;
    let mut count = 0;
    for line in runs.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        let (site, started, finished) = (
            parts[0].to_string(),
            parts[1].parse::<f64>().unwrap(),
            parts[2].parse::<f64>().unwrap(),
        );
        if let Some((prev_site, prev_finished)) = &previous
            && *prev_site == site
        {
            assert!(
                started >= *prev_finished,
                "site {site}: a run started at {started} before the previous ended at {prev_finished}\n{runs}"
            );
        }
        previous = Some((site, finished));
        count += 1;
    }
    count
}

#[test]
fn a_sync_beside_a_running_hub_never_works_the_same_site_at_once() {
    let master = pg_create_db("two_hubs");
    psql(&master, PG_MASTER);
    let fleet = Fleet::new();
    let mut config = format!("[hub]\nbatch_size = 500\n\n[master]\nurl = \"{master}\"\n");
    for i in 1..=3 {
        config.push_str(&format!(
            "\n[[site]]\nid = \"s{i}\"\nurl = \"sqlite://s{i}.db\"\n"
        ));
        let db = fleet.path(&format!("s{i}.db"));
        sqlite_exec(&db, SQLITE_SITE);
        sqlite_exec(
            &db,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO sales (id, qty, updated_at)
             SELECT i, i % 9, strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' seconds') FROM n;",
        );
    }
    config.push_str(&flow(
        "schedule = \"every 1s\"",
        "delete_column = \"deleted\"",
    ));
    fleet.write_config(&config);

    let run = fleet.spawn(&["run"]);
    // Let the scheduled hub begin its backfill first, so the syncs meet it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(
        &master,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'hubsync' AND tablename = 'runs'",
    ) != "1"
        || psql(
            &master,
            "SELECT count(*) FROM hubsync.runs WHERE status = 'running'",
        ) == "0"
    {
        assert!(
            Instant::now() < deadline,
            "the scheduled pass never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut skipped = 0;
    for round in 0..6 {
        for i in 1..=3 {
            sqlite_exec(
                &fleet.path(&format!("s{i}.db")),
                &format!(
                    "UPDATE sales SET qty = qty + 1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                     WHERE id % 50 = {round};"
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(400));
        let out = fleet.hubsync(&["sync"]);
        // A (flow, site) the other hub is working is skipped, named, exit 1.
        skipped += out
            .stdout
            .lines()
            .filter(|l| l.starts_with("│ sales") && l.contains(" skipped "))
            .count();
        assert!(
            out.code == 0 || out.stdout.contains("already running"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    let output = stop(run);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    fleet.sync_ok(&[]);
    let runs = assert_runs_never_overlap(&master);
    assert!(runs >= 6, "{runs} runs");
    eprintln!("{runs} runs, {skipped} skipped as already running");
    // The first scheduled pass backfills 3 x 20,000 rows in 500-row batches:
    // the syncs started meanwhile met it and stepped aside.
    assert!(skipped >= 1, "no sync ever met the running hub");
    for i in 1..=3 {
        let site = sqlite_query(
            &fleet.path(&format!("s{i}.db")),
            "SELECT count(*), sum(qty) FROM sales",
        );
        let master_rows = psql(
            &master,
            &format!("SELECT count(*) || '|' || sum(qty) FROM sales WHERE store_id = 's{i}'"),
        );
        assert_eq!(master_rows, site, "s{i}");
    }
}

/// Live rows of a site as `id|qty` lines in id order.
fn site_rows_sqlite(fleet: &Fleet, store: &str) -> String {
    sqlite_query(
        &fleet.path(&format!("{store}.db")),
        "SELECT id, qty FROM sales WHERE deleted = 0 ORDER BY id",
    )
}

#[test]
fn soak_with_changes_deletes_and_faults_ends_exact() {
    let seconds: u64 = std::env::var("HUBSYNC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let master = pg_create_db("soak_master");
    psql(&master, PG_MASTER);
    let pg_site = pg_create_db("soak_site");
    psql(&pg_site, PG_SITE);
    let port = |url: &str| -> u16 {
        let tail = url.rsplit_once(':').unwrap().1;
        tail.split_once('/').unwrap().0.parse().unwrap()
    };
    let via = |url: &str, proxy: &FaultProxy| -> String {
        let (head, tail) = url.rsplit_once(':').unwrap();
        format!("{head}:{}/{}", proxy.port, tail.split_once('/').unwrap().1)
    };
    let site_proxy = FaultProxy::start(port(&pg_site));
    let master_proxy = FaultProxy::start(port(&master));

    let fleet = Fleet::new();
    let stores = ["s1", "s2", "s3"];
    let mut config = format!(
        "[hub]\nbatch_size = 200\nconnect_timeout = \"2s\"\nstatement_timeout = \"5s\"\nconnect_retries = 1\n\
         circuit_breaker_failures = 0\n\n[master]\nurl = \"{}\"\n",
        via(&master, &master_proxy)
    );
    for store in stores {
        config.push_str(&format!(
            "\n[[site]]\nid = \"{store}\"\nurl = \"sqlite://{store}.db\"\n"
        ));
        sqlite_exec(&fleet.path(&format!("{store}.db")), SQLITE_SITE);
    }
    config.push_str(&format!(
        "\n[[site]]\nid = \"p1\"\nurl = \"{}\"\n",
        via(&pg_site, &site_proxy)
    ));
    config.push_str(&flow(
        "schedule = \"every 2s\"",
        "delete_column = \"deleted\"\n  deletes = \"detect\"",
    ));
    fleet.write_config(&config);
    let run = fleet.spawn(&["run"]);

    let mut rng = Lcg(2026);
    let mut next_id = [1u64; 4];
    let started = Instant::now();
    let mut faults = 0;
    let mut last_fault = Instant::now();
    let mut ops = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        // One change at a random site.
        let site = rng.below(4) as usize;
        let roll = rng.below(100);
        let existing = next_id[site].max(2) - 1;
        let id = 1 + rng.below(existing);
        let sql = match roll {
            0..=49 => {
                next_id[site] += 1;
                format!(
                    "INSERT INTO sales (id, qty, updated_at) VALUES ({}, {}, NOW)",
                    next_id[site] - 1,
                    rng.below(100)
                )
            }
            50..=79 => format!("UPDATE sales SET qty = qty + 1, updated_at = NOW WHERE id = {id}"),
            80..=91 => format!("UPDATE sales SET deleted = 1, updated_at = NOW WHERE id = {id}"),
            _ => format!("DELETE FROM sales WHERE id = {id}"),
        };
        if site < 3 {
            let sql = sql.replace("NOW", "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')");
            sqlite_exec(&fleet.path(&format!("{}.db", stores[site])), &sql);
        } else {
            psql(&pg_site, &sql.replace("NOW", "clock_timestamp()"));
        }
        ops += 1;
        // Every ~3 s a fault: cut the site's or the master's connections,
        // refuse or slow the site for a while.
        if last_fault.elapsed() > Duration::from_secs(3) {
            last_fault = Instant::now();
            faults += 1;
            match rng.below(5) {
                0 => site_proxy.cut_all(),
                1 => master_proxy.cut_all(),
                2 => site_proxy.set(Mode::Refuse),
                3 => site_proxy.set(Mode::Delay(Duration::from_millis(30))),
                _ => site_proxy.set(Mode::Pass),
            }
        } else if last_fault.elapsed() > Duration::from_secs(2) {
            site_proxy.set(Mode::Pass);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    site_proxy.set(Mode::Pass);
    let output = stop(run);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The quiet sync: no more changes, no faults.
    fleet.sync_ok(&[]);
    eprintln!("{ops} changes, {faults} faults in {seconds} s");
    for (i, store) in stores.iter().enumerate() {
        let master_rows = psql(
            &master,
            &format!("SELECT id || '|' || qty FROM sales WHERE store_id = '{store}' ORDER BY id"),
        );
        assert_eq!(master_rows, site_rows_sqlite(&fleet, store), "{store}");
        assert!(next_id[i] > 10, "{store}: too few inserts");
    }
    assert_eq!(
        psql(
            &master,
            "SELECT id || '|' || qty FROM sales WHERE store_id = 'p1' ORDER BY id"
        ),
        psql(
            &pg_site,
            "SELECT id || '|' || qty FROM sales WHERE deleted = 0 ORDER BY id"
        ),
        "p1"
    );
}
