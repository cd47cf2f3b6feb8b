//! Deletes arrive: soft deletes (`delete_column`) both ways, and hard
//! deletes found by key comparison (`deletes = "detect"`), on SQLite and
//! PostgreSQL (digests computed in the database) and across the two.
//! Expected values are worked out by hand from the rows each test writes.

mod common;

use common::{Fleet, pg_create_db, psql, sqlite_exec, sqlite_query};

const MASTER_SCHEMA: &str = "
CREATE TABLE sales (store_id TEXT NOT NULL, id INTEGER NOT NULL, sku TEXT NOT NULL,
                    deleted INTEGER NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (store_id, id));
CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
                     updated_at TEXT NOT NULL);
";

const STORE_SCHEMA: &str = "
CREATE TABLE sales (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
                    updated_at TEXT NOT NULL);
CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT NOT NULL, updated_at TEXT NOT NULL);
";

/// Five sales per store, ids 1..5, one minute apart on 2026-01-02.
fn seed_store(fleet: &Fleet, store: &str) {
    let db = fleet.path(&format!("{store}.db"));
    sqlite_exec(&db, STORE_SCHEMA);
    sqlite_exec(
        &db,
        "INSERT INTO sales (id, sku, updated_at) VALUES
           (1, 'a', '2026-01-02T09:01:00.000000Z'), (2, 'b', '2026-01-02T09:02:00.000000Z'),
           (3, 'c', '2026-01-02T09:03:00.000000Z'), (4, 'd', '2026-01-02T09:04:00.000000Z'),
           (5, 'e', '2026-01-02T09:05:00.000000Z');",
    );
}

/// `stream_options` go to both streams; the push stream copies only the
/// columns the sites' `prices` has unless the options set `delete_column`
/// (which leaves the flag uncopied where the target lacks it).
fn config(master_url: &str, stream_options: &str, batch_size: usize) -> String {
    let push_columns = if stream_options.contains("delete_column") {
        ""
    } else {
        r#"columns = { sku = "sku", price = "price", updated_at = "updated_at" }"#
    };
    format!(
        r#"
[hub]
batch_size = {batch_size}

[master]
url = "{master_url}"

[[site]]
id = "s1"
url = "sqlite://s1.db"

[[site]]
id = "s2"
url = "sqlite://s2.db"

[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
  {stream_options}

[[flow]]
name = "prices"
direction = "push"
  [[flow.stream]]
  source = "prices"
  target = "prices"
  primary_key = ["sku"]
  cursor = "updated_at"
  {push_columns}
  {stream_options}
"#
    )
}

fn sqlite_fleet(stream_options: &str, batch_size: usize) -> Fleet {
    let fleet = Fleet::new();
    fleet.write_config(&config("sqlite://master.db", stream_options, batch_size));
    sqlite_exec(&fleet.path("master.db"), MASTER_SCHEMA);
    sqlite_exec(
        &fleet.path("master.db"),
        "INSERT INTO prices (sku, price, updated_at) VALUES
           ('a', '1.00', '2026-01-01T00:00:01.000000Z'), ('b', '2.00', '2026-01-01T00:00:02.000000Z'),
           ('c', '3.00', '2026-01-01T00:00:03.000000Z');",
    );
    seed_store(&fleet, "s1");
    seed_store(&fleet, "s2");
    fleet
}

fn master_sales(fleet: &Fleet) -> String {
    sqlite_query(
        &fleet.path("master.db"),
        "SELECT store_id, group_concat(id) FROM (SELECT * FROM sales ORDER BY store_id, id) GROUP BY store_id",
    )
}

/// The "rows deleted" cell of the summary table's row for (flow, site):
/// `│ flow site status read written deleted time s │`.
fn deleted_in_summary(stdout: &str, flow: &str, site: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.get(1) == Some(&flow) && words.get(2) == Some(&site)
        })
        .unwrap_or_else(|| panic!("no summary row for {flow} {site}"));
    line.split_whitespace()
        .nth(6)
        .expect("rows deleted")
        .parse()
        .expect("a count")
}

#[test]
fn soft_deleted_rows_are_deleted_at_the_target_both_ways() {
    // Pull: the master's `sales` keeps the flag column (live rows carry
    // deleted = 0). Push: the sites' `prices` lacks it, so it is not copied.
    let fleet = sqlite_fleet(r#"delete_column = "deleted""#, 1000);
    fleet.sync_ok(&[]);
    assert_eq!(master_sales(&fleet), "s1|1,2,3,4,5\ns2|1,2,3,4,5");
    assert_eq!(
        sqlite_query(&fleet.path("s1.db"), "SELECT sku FROM prices ORDER BY sku"),
        "a\nb\nc"
    );

    // s1 soft-deletes sales 2 and 4 (the flag and a new cursor value); the
    // master soft-deletes price b. s2 is untouched, so its ids 2 and 4 stay.
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET deleted = 1, updated_at = '2026-01-03T00:00:00.000000Z' WHERE id IN (2, 4);",
    );
    sqlite_exec(
        &fleet.path("master.db"),
        "UPDATE prices SET deleted = 1, updated_at = '2026-01-03T00:00:00.000000Z' WHERE sku = 'b';",
    );
    let out = fleet.sync_ok(&[]);
    assert_eq!(master_sales(&fleet), "s1|1,3,5\ns2|1,2,3,4,5");
    for store in ["s1", "s2"] {
        assert_eq!(
            sqlite_query(
                &fleet.path(&format!("{store}.db")),
                "SELECT sku FROM prices ORDER BY sku"
            ),
            "a\nc",
            "{store}"
        );
    }
    assert_eq!(
        deleted_in_summary(&out.stdout, "sales", "s1"),
        2,
        "{}",
        out.stdout
    );
    assert_eq!(
        deleted_in_summary(&out.stdout, "prices", "s2"),
        1,
        "{}",
        out.stdout
    );

    // A deleted row that comes back (flag cleared, new cursor) is written again.
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET deleted = 0, updated_at = '2026-01-04T00:00:00.000000Z' WHERE id = 4;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(master_sales(&fleet), "s1|1,3,4,5\ns2|1,2,3,4,5");
}

#[test]
fn hard_deletes_are_detected_per_site_across_chunks() {
    // batch_size 2: s1's keys are compared in chunks (1,2) (3,4) (5).
    let fleet = sqlite_fleet(r#"deletes = "detect""#, 2);
    fleet.sync_ok(&[]);
    assert_eq!(master_sales(&fleet), "s1|1,2,3,4,5\ns2|1,2,3,4,5");

    // s1 loses 2 (inside a chunk) and 5 (the tail after the last chunk
    // is then 4); the master loses price c (the push tail) and a.
    sqlite_exec(
        &fleet.path("s1.db"),
        "DELETE FROM sales WHERE id IN (2, 5);",
    );
    sqlite_exec(
        &fleet.path("master.db"),
        "DELETE FROM prices WHERE sku IN ('a', 'c');",
    );
    let out = fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(master_sales(&fleet), "s1|1,3,4\ns2|1,2,3,4,5");
    assert_eq!(
        deleted_in_summary(&out.stdout, "sales", "s1"),
        2,
        "{}",
        out.stdout
    );
    assert_eq!(
        deleted_in_summary(&out.stdout, "sales", "s2"),
        0,
        "{}",
        out.stdout
    );
    fleet.sync_ok(&["--flow", "prices"]);
    for store in ["s1", "s2"] {
        assert_eq!(
            sqlite_query(
                &fleet.path(&format!("{store}.db")),
                "SELECT sku FROM prices ORDER BY sku"
            ),
            "b",
            "{store}"
        );
    }

    // A row the master has but s1 never sent is only deleted because the
    // lookup confirms it is gone: a re-run deletes nothing more.
    fleet.sync_ok(&[]);
    assert_eq!(master_sales(&fleet), "s1|1,3,4\ns2|1,2,3,4,5");
}

#[test]
fn an_emptied_source_deletes_nothing_and_says_so() {
    let fleet = sqlite_fleet(r#"deletes = "detect""#, 1000);
    fleet.sync_ok(&["--flow", "sales"]);
    sqlite_exec(&fleet.path("s2.db"), "DELETE FROM sales;");
    fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(master_sales(&fleet), "s1|1,2,3,4,5\ns2|1,2,3,4,5");
    let note = sqlite_query(
        &fleet.path("master.db"),
        "SELECT note FROM hubsync_runs WHERE site = 's2' AND flow = 'sales' ORDER BY started_at DESC LIMIT 1",
    );
    assert!(note.contains("deletes not applied"), "{note}");
}

#[test]
fn the_deletes_window_keeps_purged_history() {
    // Window of 1 day before the source clock: s1's rows of 2026-01-02 are
    // outside it, so purging them at the site keeps them at the master; a
    // row written now and then hard-deleted is inside it and is deleted.
    let fleet = sqlite_fleet("deletes = \"detect\"\n  deletes_window = \"1d\"", 1000);
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    sqlite_exec(
        &fleet.path("s1.db"),
        &format!("INSERT INTO sales (id, sku, updated_at) VALUES (6, 'f', '{now}');"),
    );
    fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(master_sales(&fleet), "s1|1,2,3,4,5,6\ns2|1,2,3,4,5");
    sqlite_exec(
        &fleet.path("s1.db"),
        "DELETE FROM sales WHERE id IN (1, 2, 6);",
    );
    fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(master_sales(&fleet), "s1|1,2,3,4,5\ns2|1,2,3,4,5");
}

#[test]
fn postgres_master_and_site_detect_deletes_with_database_digests() {
    // Master and site p1 on PostgreSQL (both digests in the databases),
    // sites s1/s2 on SQLite (hub digest against the master's).
    let master = pg_create_db("del_master");
    let p1 = pg_create_db("del_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, sku text NOT NULL,
                             deleted int NOT NULL, updated_at text NOT NULL, PRIMARY KEY (store_id, id));
         CREATE TABLE prices (sku text PRIMARY KEY, price text NOT NULL, deleted int NOT NULL DEFAULT 0,
                              updated_at text NOT NULL);",
    );
    psql(
        &p1,
        "CREATE TABLE sales (id bigint PRIMARY KEY, sku text NOT NULL, deleted int NOT NULL DEFAULT 0,
                             updated_at text NOT NULL);
         INSERT INTO sales (id, sku, updated_at)
           SELECT g, 'k' || g, '2026-01-02T09:00:00.000000Z' FROM generate_series(1, 25) g;",
    );
    let fleet = Fleet::new();
    let text = config(&master, r#"deletes = "detect""#, 10).replace(
        "[[flow]]\nname = \"prices\"",
        &format!("[[site]]\nid = \"p1\"\nurl = \"{p1}\"\n\n[[flow]]\nname = \"prices\""),
    );
    fleet.write_config(&text);
    seed_store(&fleet, "s1");
    seed_store(&fleet, "s2");
    fleet.sync_ok(&["--flow", "sales"]);
    let counts = |url: &str| {
        psql(
            url,
            "SELECT store_id, count(*) FROM sales GROUP BY store_id ORDER BY store_id",
        )
    };
    assert_eq!(counts(&master), "p1|25\ns1|5\ns2|5");

    // p1 loses 3 (chunk 1..10), 10..12 (across a chunk edge) and 25 (the
    // last key: the tail); s1 loses 1.
    psql(&p1, "DELETE FROM sales WHERE id IN (3, 10, 11, 12, 25);");
    sqlite_exec(&fleet.path("s1.db"), "DELETE FROM sales WHERE id = 1;");
    fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(counts(&master), "p1|20\ns1|4\ns2|5");
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM sales WHERE store_id = 'p1' AND id IN (2,3,4,9,10,11,12,13,24,25)"
        ),
        "2,4,9,13,24"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM sales WHERE store_id = 's1'"
        ),
        "2,3,4,5"
    );
    // Nothing changed: nothing more deleted.
    fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(counts(&master), "p1|20\ns1|4\ns2|5");

    // The hub's digest of keys it reads (SQLite sides) equals the one
    // PostgreSQL computes, so unchanged chunks match across dialects.
    let in_database = psql(
        &master,
        "SELECT encode(sha256(convert_to(string_agg(concat_ws(chr(31), store_id, id::text), chr(30) ORDER BY id), 'UTF8')), 'hex')
           FROM sales WHERE store_id = 's1'",
    );
    let keys: Vec<Vec<hubsync::value::Value>> = [2, 3, 4, 5]
        .iter()
        .map(|id| {
            vec![
                hubsync::value::Value::Text("s1".into()),
                hubsync::value::Value::Int(*id),
            ]
        })
        .collect();
    assert_eq!(in_database, hubsync::dialect::keys::digest_keys(&keys));
}

/// Regression (fresh-user trial): a failing delete detection failed the
/// run, so after three runs the circuit opened and new rows stopped
/// arriving. Now the rows arrive, the run is `partial` with the reason, and
/// the next run brings new rows.
#[test]
fn a_failing_delete_detection_does_not_stop_rows_from_arriving() {
    let fleet = Fleet::new();
    fleet.write_config(
        &config(
            "sqlite://master.db",
            "deletes = \"detect\"\n  deletes_window = \"1d\"",
            1000,
        )
        .replace(
            "cursor = \"updated_at\"\n  site_column",
            "cursor = \"id\"\n  site_column",
        ),
    );
    sqlite_exec(&fleet.path("master.db"), MASTER_SCHEMA);
    seed_store(&fleet, "s1");
    seed_store(&fleet, "s2");
    for round in 0..4 {
        sqlite_exec(
            &fleet.path("s1.db"),
            &format!(
                "INSERT INTO sales (id, sku, updated_at) VALUES ({}, 'n', '2026-02-01T00:00:00.000000Z');",
                10 + round
            ),
        );
        let out = fleet.hubsync(&["sync", "--flow", "sales", "--site", "s1"]);
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert!(
            out.stdout.contains(
                "flow `sales` stream `sales` site `s1`: rows applied, but `deletes_window` needs a time cursor, but `id` holds numbers"
            ),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("partial"), "{}", out.stdout);
    }
    // Every run's new row arrived; no circuit opened.
    assert_eq!(master_sales(&fleet), "s1|1,2,3,4,5,10,11,12,13");
}

/// Regression (fresh-user trial): a quarantined row that was then
/// soft-deleted at the source stayed in the quarantine table forever.
#[test]
fn a_quarantined_row_deleted_at_the_source_leaves_the_quarantine() {
    let master = pg_create_db("del_quarantine");
    psql(
        &master,
        "CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, sku varchar(1) NOT NULL,
                             deleted int NOT NULL, updated_at text NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    fleet.write_config(&config(
        &master,
        "delete_column = \"deleted\"\n  on_error = \"quarantine\"",
        1000,
    ));
    seed_store(&fleet, "s1");
    seed_store(&fleet, "s2");
    // s1's row 2 has a sku too long for varchar(1): quarantined.
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET sku = 'bb' WHERE id = 2;",
    );
    let out = fleet.hubsync(&["sync", "--flow", "sales"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(
        psql(&master, "SELECT site, row_key FROM hubsync.quarantine"),
        r#"s1|[{"t":"text","v":"s1"},{"t":"int","v":2}]"#
    );
    // Soft-deleted at the store: it leaves the quarantine, nothing to retry.
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET deleted = 1, updated_at = '2026-01-03T00:00:00.000000Z' WHERE id = 2;",
    );
    fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(
        psql(&master, "SELECT count(*) FROM hubsync.quarantine"),
        "0"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM sales WHERE store_id = 's1'"
        ),
        "1,3,4,5"
    );
}

/// A push of zone prices (master key (sku, zone)) whose `when` gives each
/// site its zone's rows, with delete detection, keyed by `key` at the
/// sites (whose tables have that primary key).
fn zone_fleet(key: &str) -> Fleet {
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        r#"
[master]
url = "sqlite://master.db"

[[site]]
id = "s1"
url = "sqlite://s1.db"
tags = {{ zone = "A" }}

[[site]]
id = "s2"
url = "sqlite://s2.db"
tags = {{ zone = "B" }}

[[flow]]
name = "prices"
direction = "push"
  [[flow.stream]]
  source = "zone_prices"
  target = "prices"
  primary_key = [{key}]
  cursor = "updated_at"
  when = "row.zone == site.tags.zone"
  deletes = "detect"
"#
    ));
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE zone_prices (sku TEXT NOT NULL, zone TEXT NOT NULL, price TEXT NOT NULL,
                                   updated_at TEXT NOT NULL, PRIMARY KEY (sku, zone));
         INSERT INTO zone_prices VALUES
           ('x', 'A', '1.00', '2026-01-02T09:00:00.000000Z'), ('x', 'B', '1.10', '2026-01-02T09:00:00.000000Z'),
           ('y', 'A', '2.00', '2026-01-02T09:00:00.000000Z'), ('y', 'B', '2.10', '2026-01-02T09:00:00.000000Z');",
    );
    let site_key = key.replace('"', "");
    for site in ["s1", "s2"] {
        sqlite_exec(
            &fleet.path(&format!("{site}.db")),
            &format!(
                "CREATE TABLE prices (sku TEXT NOT NULL, zone TEXT NOT NULL, price TEXT NOT NULL,
                                      updated_at TEXT NOT NULL, PRIMARY KEY ({site_key}));"
            ),
        );
    }
    fleet
}

/// A site's prices as `<sku><zone>=<price>`, by sku.
fn zone_prices(fleet: &Fleet, site: &str) -> String {
    sqlite_query(
        &fleet.path(&format!("{site}.db")),
        "SELECT group_concat(sku || zone || '=' || price, ',') FROM (SELECT * FROM prices ORDER BY sku)",
    )
}

/// Regression (fresh-user trial 3): with `primary_key = ["sku"]`, not
/// unique at the master, deleting `x` of zone A left it at the zone A site
/// while every run said "succeeded, 0 deleted": zone B's `x` made the key
/// look present. Detection is refused, by `check` and by each run (rows
/// still arrive; the run is `partial` and says why).
#[test]
fn delete_detection_under_a_when_refuses_a_key_not_unique_at_the_master() {
    let fleet = zone_fleet(r#""sku""#);
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check.stdout.contains(
            "`deletes = \"detect\"` with `when`/`filter` needs `primary_key` (sku) to be unique at the master, \
             and master table `zone_prices` has no unique key within it"
        ),
        "{}",
        check.stdout
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("partial"), "{}", out.stdout);
    // The rows arrived all the same, each site its zone's.
    assert_eq!(
        (zone_prices(&fleet, "s1"), zone_prices(&fleet, "s2")),
        ("xA=1.00,yA=2.00".to_string(), "xB=1.10,yB=2.10".to_string())
    );
}

/// The same push keyed by (sku, zone), unique at the master: deleting `x`
/// of zone A deletes it at the zone A site only.
#[test]
fn delete_detection_under_a_when_deletes_at_the_site_of_the_deleted_row() {
    let fleet = zone_fleet(r#""sku", "zone""#);
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    fleet.sync_ok(&[]);
    sqlite_exec(
        &fleet.path("master.db"),
        "DELETE FROM zone_prices WHERE sku = 'x' AND zone = 'A';",
    );
    let out = fleet.sync_ok(&[]);
    assert_eq!(
        deleted_in_summary(&out.stdout, "prices", "s1"),
        1,
        "{}",
        out.stdout
    );
    assert_eq!(
        deleted_in_summary(&out.stdout, "prices", "s2"),
        0,
        "{}",
        out.stdout
    );
    assert_eq!(
        (zone_prices(&fleet, "s1"), zone_prices(&fleet, "s2")),
        ("yA=2.00".to_string(), "xB=1.10,yB=2.10".to_string())
    );
}
