//! `hubsync run`: the scheduler runs flows on their schedule and stops
//! cleanly on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, sqlite_exec, sqlite_query};

/// One SQLite site `s1` whose `sales` (key `id`, cursor `updated_at`) is
/// pulled into the SQLite master's `sales` under `store_id`; `hub` and
/// `flow_extra` add a line to `[hub]` and to the flow.
fn sales_pull(hub: &str, flow_extra: &str) -> String {
    format!(
        "[hub]\n{hub}\n{}{flow_extra}\n{}",
        r#"[master]
url = "sqlite://master.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[flow]]
name = "sales"
direction = "pull"
"#,
        r#"  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
"#
    )
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_syncs_on_schedule_and_stops_cleanly_on_sigterm() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT);
         INSERT INTO sales VALUES (1, 5, '2026-01-01T00:00:00.000000Z');",
    );
    fleet.write_config(&sales_pull("", "schedule = \"every 1s\""));
    let child = fleet.spawn(&["run"]);
    let count = || {
        sqlite_query(&fleet.path("master.db"), "SELECT count(*) FROM sales")
            .parse::<u32>()
            .unwrap_or(0)
    };
    wait_for("the first scheduled pass", || count() == 1);
    // A later pass picks up a new row without any command.
    sqlite_exec(
        &fleet.path("s1.db"),
        "INSERT INTO sales VALUES (2, 7, '2026-01-01T00:00:01.000000Z');",
    );
    wait_for("a second scheduled pass", || count() == 2);

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().expect("wait for hubsync run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("hubsync stopped cleanly"), "{stderr}");
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT store_id, id, qty FROM sales ORDER BY id"
        ),
        "s1|1|5\ns1|2|7"
    );
}

#[test]
fn run_without_scheduled_flows_is_a_usage_error() {
    let fleet = Fleet::new();
    fleet.write_config(
        "[master]\nurl = \"sqlite://master.db\"\n[[flow]]\nname = \"f\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"t\"\n  target = \"t\"\n  primary_key = [\"id\"]\n  cursor = \"u\"\n",
    );
    let out = fleet.hubsync(&["run"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: no flow has a `schedule`; add e.g. `schedule = \"every 5m\"` to a `[[flow]]`, or use `hubsync sync`"
    );
}

#[test]
fn sigint_during_sync_keeps_committed_batches_and_the_next_sync_completes() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));",
    );
    // 60,000 rows: long enough to interrupt mid-way with batches of 200.
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
         INSERT INTO sales SELECT i, i % 7, printf('2026-01-01T00:00:%02d.%06dZ', i / 100000, i % 100000) FROM n;",
    );
    fleet.write_config(&sales_pull("batch_size = 200", ""));
    let child = fleet.spawn(&["sync"]);
    let count = || {
        sqlite_query(&fleet.path("master.db"), "SELECT count(*) FROM sales")
            .parse::<u32>()
            .unwrap_or(0)
    };
    wait_for("some batches", || count() >= 1_000);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().expect("wait for hubsync sync");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let kept = count();
    assert!(
        kept < 60_000,
        "the sync finished before the signal; make the table larger"
    );
    // Whole batches only, and the checkpoint is exactly the last row kept.
    assert_eq!(kept % 200, 0, "a partial batch was committed: {kept} rows");
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT json_extract(position, '$[1].v') FROM hubsync_checkpoints"
        ),
        kept.to_string()
    );
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT status, error FROM hubsync_runs"
        ),
        "failed|flow `sales` stream `sales` site `s1`: interrupted: stopped after the last committed batch; the next run resumes there"
    );
    // The next sync resumes and ends with every row exactly once.
    fleet.sync_ok(&[]);
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT count(*), count(DISTINCT id), sum(qty) FROM sales"
        ),
        // sum of i % 7 for i in 1..=60000: 60000 = 7 * 8571 + 3, so 8571 full
        // cycles of residues summing to 21 (179991), plus 1 + 2 + 3.
        "60000|60000|179997"
    );
}

/// Crash safety: `hubsync sync` killed with SIGKILL at seeded random moments
/// of a pull and a push, then run to completion, ends with exactly the
/// source's rows at the targets (none missing, none doubled).
#[test]
fn sigkill_at_random_points_then_resume_ends_exact() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));
         CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT, updated_at TEXT);
         CREATE INDEX prices_updated_at ON prices (updated_at);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO prices SELECT printf('SKU-%05d', i), printf('%d.%02d', i / 100, i % 100),
                                   printf('2026-01-01T00:00:%02d.%06dZ', i / 1000, i % 1000) FROM n;",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT);
         CREATE INDEX sales_updated_at ON sales (updated_at);
         CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT, updated_at TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
         INSERT INTO sales SELECT i, i % 7, printf('2026-01-01T00:00:%02d.%06dZ', i / 1000, i % 1000) FROM n;",
    );
    let prices_push = r#"
[[flow]]
name = "prices"
direction = "push"
  [[flow.stream]]
  source = "prices"
  target = "prices"
  primary_key = ["sku"]
  cursor = "updated_at"
"#;
    fleet.write_config(&(sales_pull("batch_size = 300", "") + prices_push));
    // A small LCG (Knuth's MMIX constants) seeded with 7: the same delays every run.
    let mut state: u64 = 7;
    let mut next_delay = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::time::Duration::from_millis(100 + (state >> 33) % 500)
    };
    for _ in 0..4 {
        let mut child = fleet.spawn(&["sync"]);
        std::thread::sleep(next_delay());
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    fleet.sync_ok(&[]);
    // sum of i % 7 for i in 1..=40000: 40000 = 7 * 5714 + 2, so 5714 * 21 + (1 + 2).
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT count(*), count(DISTINCT id), sum(qty) FROM sales"
        ),
        "40000|40000|119997"
    );
    assert_eq!(
        sqlite_query(
            &fleet.path("s1.db"),
            "SELECT count(*), min(sku), max(sku), max(price) FROM prices"
        ),
        "20000|SKU-00001|SKU-20000|99.99"
    );
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT count(*) FROM hubsync_runs WHERE status = 'running'"
        ),
        "0"
    );
    // The run history counts a pull's rows in the transaction that commits
    // them, so the killed runs together with the last one wrote exactly the
    // 40,000 rows (re-applied overlaps write none).
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT sum(rows_written) FROM hubsync_runs WHERE flow = 'sales'"
        ),
        "40000"
    );
}
