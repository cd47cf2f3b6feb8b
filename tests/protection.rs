//! The master is protected: at most `master_write_concurrency` write
//! transactions at once (the hub's own gauge, cross-checked by sampling
//! `pg_stat_activity`), `max_rows_per_second`, and per-flow sync windows in
//! the site's time zone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Timelike;
use common::{Fleet, pg_create_db, psql, sqlite_exec, sqlite_query};

const STORE_SCHEMA: &str =
    "CREATE TABLE sales (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, updated_at TEXT NOT NULL);";

/// `rows` sales at a store, ids 1..=rows, one second apart.
fn seed_store(fleet: &Fleet, store: &str, rows: usize) {
    let db = fleet.path(&format!("{store}.db"));
    sqlite_exec(&db, STORE_SCHEMA);
    sqlite_exec(
        &db,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO sales SELECT i, 'sku' || i, strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' seconds') FROM n;"
        ),
    );
}

fn config(master: &str, hub: &str, stores: usize, flow_options: &str, site_tags: &str) -> String {
    let mut text = format!("[hub]\n{hub}\n\n[master]\nurl = \"{master}\"\n");
    for i in 1..=stores {
        text.push_str(&format!(
            "\n[[site]]\nid = \"s{i}\"\nurl = \"sqlite://s{i}.db\"\n{site_tags}\n"
        ));
    }
    text.push_str(&format!(
        r#"
[[flow]]
name = "sales"
direction = "pull"
{flow_options}
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
"#
    ));
    text
}

const SQLITE_MASTER: &str =
    "CREATE TABLE sales (store_id TEXT NOT NULL, id INTEGER NOT NULL, sku TEXT NOT NULL,
                    updated_at TEXT NOT NULL, PRIMARY KEY (store_id, id));";

#[test]
fn master_write_concurrency_is_never_exceeded() {
    let master = pg_create_db("limits");
    psql(
        &master,
        "CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, sku text NOT NULL,
                             updated_at text NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    let stores = 6;
    fleet.write_config(&config(
        &master,
        "master_write_concurrency = 2\nmax_concurrent_sites = 6\nbatch_size = 2000",
        stores,
        "",
        "",
    ));
    for i in 1..=stores {
        seed_store(&fleet, &format!("s{i}"), 20_000);
    }

    // Sample the master while the hub writes: hub sessions inside a write
    // transaction (one that has written: it holds a transaction id).
    let database = psql(&master, "SELECT current_database()");
    let sampling = Arc::new(AtomicBool::new(true));
    let most_seen = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (sampling, most_seen, samples) = (sampling.clone(), most_seen.clone(), samples.clone());
        let admin = common::pg_admin_url();
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                let n: usize = psql(
                    &admin,
                    &format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'
                           AND application_name = 'hubsync' AND backend_xid IS NOT NULL
                           AND state IN ('active', 'idle in transaction')
                           AND (query LIKE 'INSERT INTO \"sales\"%' OR state = 'idle in transaction')"
                    ),
                )
                .parse()
                .expect("a count");
                most_seen.fetch_max(n, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut cmd = common::hubsync();
    cmd.arg("-c")
        .arg(fleet.path("hubsync.toml"))
        .arg("sync")
        .env("HUBSYNC_LOG", "hubsync=info");
    let out = common::run(&mut cmd);
    sampling.store(false, Ordering::SeqCst);
    sampler.join().expect("sampler");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        psql(&master, "SELECT count(*) FROM sales"),
        (stores * 20_000).to_string()
    );
    // 6 sites x 10 batches all wanting the master: the gauge reaches the
    // limit and never passes it.
    assert!(
        out.stderr.contains("high_water=2 limit=2"),
        "{}",
        out.stderr
    );
    let seen = most_seen.load(Ordering::SeqCst);
    assert!(samples.load(Ordering::SeqCst) > 0);
    eprintln!(
        "sampled {} times, at most {seen} at once",
        samples.load(Ordering::SeqCst)
    );
    assert!(
        (1..=2).contains(&seen),
        "the master saw {seen} hub write transactions at once"
    );
}

#[test]
fn max_rows_per_second_paces_the_master() {
    // 300 rows at 100 rows/s with one second of burst: the first 100 pass
    // at once, the other 200 need at least 2 s.
    let fleet = Fleet::new();
    fleet.write_config(&config(
        "sqlite://master.db",
        "max_rows_per_second = 100\nbatch_size = 50",
        1,
        "",
        "",
    ));
    sqlite_exec(&fleet.path("master.db"), SQLITE_MASTER);
    seed_store(&fleet, "s1", 300);
    let started = Instant::now();
    fleet.sync_ok(&[]);
    let took = started.elapsed();
    assert_eq!(
        sqlite_query(&fleet.path("master.db"), "SELECT count(*) FROM sales"),
        "300"
    );
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
}

/// A one-hour window starting `hours_ahead` hours after the current UTC
/// hour, e.g. `14:00-15:00`.
fn window_hours_ahead(hours_ahead: u32) -> String {
    let start = (chrono::Utc::now().hour() + hours_ahead) % 24;
    format!("{start:02}:00-{:02}:00", (start + 1) % 24)
}

#[test]
fn sites_outside_the_window_are_skipped_in_their_own_time_zone() {
    // The window opens 5 hours after the current UTC hour: closed at s1 (no
    // zone tag: the flow's zone, UTC), open at s2 (UTC+5; `Etc/GMT-5` is
    // UTC+5 in the IANA database's inverted sign).
    let fleet = Fleet::new();
    let mut text = config(
        "sqlite://master.db",
        "",
        2,
        &format!("window = \"{}\"\ntimezone = \"UTC\"", window_hours_ahead(5)),
        "",
    );
    text = text.replace(
        "id = \"s2\"\nurl = \"sqlite://s2.db\"\n",
        "id = \"s2\"\nurl = \"sqlite://s2.db\"\ntags = { timezone = \"Etc/GMT-5\" }\n",
    );
    fleet.write_config(&text);
    sqlite_exec(&fleet.path("master.db"), SQLITE_MASTER);
    seed_store(&fleet, "s1", 3);
    seed_store(&fleet, "s2", 4);
    let out = fleet.sync_ok(&[]);
    // Exit 0: a closed window is not a failure; the table says why.
    assert!(
        out.stdout.contains("outside the flow's window"),
        "{}",
        out.stdout
    );
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT store_id, count(*) FROM sales GROUP BY store_id"
        ),
        "s2|4"
    );
    // An operator may override it.
    fleet.sync_ok(&["--ignore-window", "--site", "s1"]);
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT store_id, count(*) FROM sales GROUP BY store_id"
        ),
        "s1|3\ns2|4"
    );
}

#[test]
fn a_bad_site_timezone_or_window_is_named() {
    let fleet = Fleet::new();
    let text = config(
        "sqlite://master.db",
        "",
        1,
        "window = \"22h-6h\"\nsplay = \"1m\"",
        "tags = { timezone = \"Mars/Olympus\" }",
    );
    fleet.write_config(&text);
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let config_path = fleet.path("hubsync.toml");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: 3 problems:\n  \
             - site `s1`: tag `timezone`: unknown timezone `Mars/Olympus`; use an IANA name such as `Europe/Paris`\n  \
             - flow `sales`: `window`: `22h-6h` is not a daily window `HH:MM-HH:MM` (examples: `22:00-06:00`, `01:30-05:00`)\n  \
             - flow `sales`: `splay` spreads scheduled passes; it needs a `schedule`",
            config_path.display()
        )
    );
}
