//! Pull and push with PostgreSQL masters and sites (and SQLite sites into a
//! PostgreSQL master), against the throwaway server `scripts/test.sh` starts.
//! Expected values are written out by hand from the data each test inserts.

mod common;

use common::{Fleet, pg_create_db, psql, sqlite_exec};

const PG_SITE_SALES: &str = "
CREATE TABLE sales (
  id bigint PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL, price numeric(12,2) NOT NULL,
  big numeric(38,10), ratio double precision, sold_at timestamptz NOT NULL, local_at timestamp,
  paid boolean, doc jsonb, raw bytea, uid uuid, note text, updated_at timestamptz NOT NULL);
CREATE INDEX ON sales (updated_at);
";

const PG_MASTER_SALES: &str = "
CREATE TABLE sales (
  store_id text NOT NULL, id bigint NOT NULL, sku text NOT NULL, qty integer NOT NULL, price numeric(12,2) NOT NULL,
  big numeric(38,10), ratio double precision, sold_at timestamptz NOT NULL, local_at timestamp,
  paid boolean, doc jsonb, raw bytea, uid uuid, note text, updated_at timestamptz NOT NULL,
  PRIMARY KEY (store_id, id));
CREATE TABLE prices (sku text NOT NULL, zone text NOT NULL, price numeric(12,2) NOT NULL,
  updated_at timestamptz NOT NULL, PRIMARY KEY (sku, zone));
";

const PG_SITE_PRICES: &str = "CREATE TABLE prices (sku text PRIMARY KEY, price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);";

fn pg_config(master: &str, sites: &[(&str, &str, &str)]) -> String {
    let mut text = format!("[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master}\"\n\n");
    for (id, url, zone) in sites {
        text.push_str(&format!(
            "[[site]]\nid = \"{id}\"\nurl = \"{url}\"\ntags = {{ zone = \"{zone}\" }}\n\n"
        ));
    }
    text.push_str(
        r#"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"

[[flow]]
name = "prices"
direction = "push"
  [[flow.stream]]
  query = "SELECT sku, price, updated_at FROM prices WHERE zone = :site.zone"
  target = "prices"
  primary_key = ["sku"]
  cursor = "updated_at"
"#,
    );
    text
}

/// `[[site]]` block for `id` at `url`.
fn site_block(id: &str, url: &str) -> String {
    format!("[[site]]\nid = \"{id}\"\nurl = \"{url}\"\n")
}

/// A config pulling each site's `sales` (key `id`, cursor `updated_at`) into
/// the master's `sales` under `store_id`; `stream_extra` adds one stream key.
fn sales_pull(master: &str, sites: &str, stream_extra: &str) -> String {
    format!(
        "[master]\nurl = \"{master}\"\n{sites}\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  {stream_extra}\n"
    )
}

const SALES_COLUMNS: &str =
    "id, sku, qty, price, big, ratio, sold_at, local_at, paid, doc, raw, uid, note, updated_at";

#[test]
fn postgres_to_postgres_keeps_every_value_exactly() {
    let master = pg_create_db("pg_master");
    let site1 = pg_create_db("pg_site1");
    let site2 = pg_create_db("pg_site2");
    psql(&master, PG_MASTER_SALES);
    psql(
        &master,
        "INSERT INTO prices VALUES ('apple', 'A', 1.10, '2026-01-01 00:00:00+00'), ('pear', 'A', 2.20, '2026-01-01 00:00:01+00'),
                                   ('apple', 'B', 1.15, '2026-01-01 00:00:02+00');",
    );
    for site in [&site1, &site2] {
        psql(site, PG_SITE_SALES);
        psql(site, PG_SITE_PRICES);
    }
    // Edge values: 38-digit numeric, NaN, float extremes, unicode, empty
    // string vs NULL, NUL bytes in bytea, JSON, a DST-edge instant.
    psql(
        &site1,
        "INSERT INTO sales VALUES
          (1, 'apple', 2, 12.50, 1234567890123456789012345678.0123456789, 0.1, '2026-03-29 00:59:59.999999+00',
           '2026-03-29 02:30:00', true, '{\"b\": 1, \"a\": [1.50, null]}', '\\x00ff00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
           'Grüße 🍐', '2026-01-02 09:00:00+00'),
          (2, 'pear', -1, -0.01, 'NaN', 'Infinity', '1999-12-31 23:59:59+00', NULL, false, 'null', '\\x', NULL,
           '', '2026-01-02 09:00:00+00'),
          (3, 'fig', 0, 0.00, -0.0000000001, -1.5e-300, '2026-10-25 01:30:00+00', '2026-10-25 02:30:00', NULL, NULL, NULL,
           NULL, NULL, '2026-01-02 09:00:01+00');",
    );
    psql(
        &site2,
        "INSERT INTO sales (id, sku, qty, price, sold_at, updated_at) VALUES (1, 'kiwi', 4, 3.00, now(), now());",
    );

    let fleet = Fleet::new();
    fleet.write_config(&pg_config(
        &master,
        &[("s1", &site1, "A"), ("s2", &site2, "B")],
    ));
    fleet.sync_ok(&[]);

    let at_site = psql(
        &site1,
        &format!("SELECT {SALES_COLUMNS} FROM sales ORDER BY id"),
    );
    let at_master = psql(
        &master,
        &format!("SELECT {SALES_COLUMNS} FROM sales WHERE store_id = 's1' ORDER BY id"),
    );
    assert_eq!(at_master, at_site);
    // And by hand, the values most likely to be bent on the way:
    assert_eq!(
        psql(
            &master,
            "SELECT price::text, big::text, ratio::text, note, note IS NULL FROM sales WHERE store_id = 's1' ORDER BY id"
        ),
        "12.50|1234567890123456789012345678.0123456789|0.1|Grüße 🍐|f\n\
         -0.01|NaN|Infinity||f\n\
         0.00|-0.0000000001|-1.5e-300||t"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT encode(raw, 'hex'), doc::text FROM sales WHERE store_id = 's1' AND id = 1"
        ),
        "00ff00|{\"a\": [1.50, null], \"b\": 1}"
    );
    assert_eq!(
        psql(&master, "SELECT count(*) FROM sales WHERE store_id = 's2'"),
        "1"
    );

    // Push routing: each site gets exactly its zone's rows.
    assert_eq!(
        psql(&site1, "SELECT sku, price FROM prices ORDER BY sku"),
        "apple|1.10\npear|2.20"
    );
    assert_eq!(
        psql(&site2, "SELECT sku, price FROM prices ORDER BY sku"),
        "apple|1.15"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT flow, site, rows_read, rows_written, status FROM hubsync.runs ORDER BY flow, site"
        ),
        "prices|s1|2|2|succeeded\nprices|s2|1|1|succeeded\nsales|s1|3|3|succeeded\nsales|s2|1|1|succeeded"
    );

    // Incremental, with a tie group: two rows get the same new cursor value.
    psql(
        &site1,
        "UPDATE sales SET qty = qty + 10, updated_at = '2026-01-05 00:00:00+00' WHERE id IN (1, 3);
         INSERT INTO sales (id, sku, qty, price, sold_at, updated_at) VALUES (4, 'plum', 1, 0.99, now(), '2026-01-05 00:00:00+00');",
    );
    fleet.sync_ok(&["--flow", "sales"]);
    assert_eq!(
        psql(
            &master,
            "SELECT id, qty FROM sales WHERE store_id = 's1' ORDER BY id"
        ),
        "1|12\n2|-1\n3|10\n4|1"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT site, rows_read, rows_written FROM hubsync.runs WHERE flow = 'sales' ORDER BY started_at DESC, site LIMIT 2"
        )
        .lines()
        .collect::<std::collections::BTreeSet<_>>(),
        // Each run re-reads the 5 s `cursor_lag` overlap below its checkpoint:
        // s1 re-reads row 2 (09:00:00, within 5 s of the checkpoint 09:00:01)
        // besides the 3 changed rows; s2 re-reads its only row. Re-read rows
        // are unchanged, so they are not written.
        ["s1|4|3", "s2|1|0"].into_iter().collect()
    );

    // A pass with nothing new writes no user rows. It re-reads only the
    // overlaps: prices s1 (apple 00:00:00, pear 00:00:01) = 2, prices s2
    // (apple 00:00:02) = 1, sales s1 (rows 1, 3, 4 at 2026-01-05) = 3, sales
    // s2 (its one row) = 1: 7 rows read, 0 written. (The pulls' re-read by
    // transaction id may return more rows, which change nothing and so do
    // not count as read.)
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT sum(rows_read), sum(rows_written) FROM (SELECT * FROM hubsync.runs ORDER BY started_at DESC LIMIT 4) r"
        ),
        "7|0"
    );
}

#[test]
fn sqlite_sites_into_a_postgres_master() {
    let master = pg_create_db("mixed_master");
    psql(
        &master,
        "CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, sku text NOT NULL, qty integer NOT NULL,
           price numeric(12,2) NOT NULL, paid boolean, updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    for store in ["s1", "s2"] {
        sqlite_exec(
            &fleet.path(&format!("{store}.db")),
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, qty INTEGER NOT NULL, price TEXT NOT NULL,
               paid BOOLEAN, updated_at TEXT NOT NULL);",
        );
    }
    sqlite_exec(
        &fleet.path("s1.db"),
        "INSERT INTO sales VALUES (1, 'apple', 2, '12.50', 1, '2026-01-02T09:00:00.000000Z'),
                                  (2, 'pear', 1, '0.10', 0, '2026-01-02T09:00:00.000000Z'),
                                  (3, 'fig', 7, '99999.99', NULL, '2026-01-02T10:00:00.123456Z');",
    );
    sqlite_exec(
        &fleet.path("s2.db"),
        "INSERT INTO sales VALUES (1, 'kiwi', 3, '3.00', 1, '2026-01-03T00:00:00.000000Z');",
    );
    fleet.write_config(&format!(
        r#"
[hub]
batch_size = 2
[master]
url = "{master}"
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
"#
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT store_id, id, sku, qty, price, paid, updated_at FROM sales ORDER BY store_id, id"
        ),
        "s1|1|apple|2|12.50|t|2026-01-02 09:00:00+00\n\
         s1|2|pear|1|0.10|f|2026-01-02 09:00:00+00\n\
         s1|3|fig|7|99999.99||2026-01-02 10:00:00.123456+00\n\
         s2|1|kiwi|3|3.00|t|2026-01-03 00:00:00+00"
    );
    // Re-run: only the 5 s overlap below each checkpoint is re-read (s1's
    // row 3 at 10:00:00.123456, s2's row at 2026-01-03), and nothing written.
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT sum(rows_read), sum(rows_written) FROM (SELECT * FROM hubsync.runs ORDER BY started_at DESC LIMIT 2) r"
        ),
        "2|0"
    );
}

#[test]
fn an_unreachable_postgres_site_fails_alone() {
    let master = pg_create_db("unreach_master");
    let site = pg_create_db("unreach_site");
    psql(&master, PG_MASTER_SALES);
    psql(&site, PG_SITE_SALES);
    psql(&site, PG_SITE_PRICES);
    psql(
        &site,
        "INSERT INTO sales (id, sku, qty, price, sold_at, updated_at) VALUES (1, 'kiwi', 4, 3.00, now(), now());",
    );
    // A port nothing listens on (bound then released), with a password that must not leak.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("postgres://hub:s3cret@127.0.0.1:{dead_port}/nowhere");
    let fleet = Fleet::new();
    fleet.write_config(&pg_config(
        &master,
        &[("up", &site, "A"), ("down", &dead, "A")],
    ));
    let out = fleet.hubsync(&["sync", "--flow", "sales"]);
    assert_eq!(
        out.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "site `down`: cannot connect to postgres://hub:***@127.0.0.1:{dead_port}/nowhere"
        )),
        "{}",
        out.stderr
    );
    // The real cause, at once (not "pool timed out" after the connect timeout).
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);
    assert!(!out.stderr.contains("s3cret") && !out.stdout.contains("s3cret"));
    assert_eq!(psql(&master, "SELECT store_id, sku FROM sales"), "up|kiwi");
    assert_eq!(
        psql(
            &master,
            "SELECT site, status FROM hubsync.runs ORDER BY site"
        ),
        "down|failed\nup|succeeded"
    );
    let error = psql(
        &master,
        "SELECT error FROM hubsync.runs WHERE site = 'down'",
    );
    assert!(!error.contains("s3cret"), "{error}");
}

#[test]
fn check_passes_on_a_good_postgres_fleet_and_names_missing_columns() {
    let master = pg_create_db("check_master");
    let site = pg_create_db("check_site");
    psql(&master, PG_MASTER_SALES);
    psql(&site, PG_SITE_SALES);
    psql(&site, PG_SITE_PRICES);
    let fleet = Fleet::new();
    fleet.write_config(&pg_config(&master, &[("s1", &site, "A")]));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("2 of 2 databases reachable; 2 stream/site pairs ok; 0 problems"),
        "{}",
        out.stdout
    );

    psql(&master, "ALTER TABLE sales DROP COLUMN note");
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "problem: flow `sales` stream `sales` site `s1`: master table `sales` has no column `note`; add it or map columns with `columns`"
        ),
        "{}",
        out.stdout
    );
    // The same problem stops the pull for that stream, naming the column,
    // before anything is read (the mapping plan is built from the source's
    // described columns), with or without rows.
    for _ in 0..2 {
        let out = fleet.hubsync(&["sync", "--flow", "sales"]);
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains(
                "flow `sales` stream `sales` site `s1`: column `note` is missing in master table `sales`; add it, or select and rename columns with `columns = { target = \"source\" }`"
            ),
            "{}",
            out.stderr
        );
        psql(
            &site,
            "INSERT INTO sales (id, sku, qty, price, sold_at, updated_at) VALUES (1, 'kiwi', 4, 3.00, now(), now()) \
         ON CONFLICT DO NOTHING;",
        );
    }
    assert_eq!(psql(&master, "SELECT count(*) FROM sales"), "0");
}

/// Regression: values were cast with the target's type modifier
/// (`CAST(.. AS varchar(3))`), which PostgreSQL truncates silently; now an
/// over-long value stops the stream, naming the row, and nothing is written.
#[test]
fn an_over_long_text_is_refused_not_truncated() {
    let master = pg_create_db("varchar_master");
    let site = pg_create_db("varchar_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id bigint, sku varchar(3) NOT NULL, updated_at timestamptz NOT NULL,
           PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id bigint PRIMARY KEY, sku text NOT NULL, updated_at timestamptz NOT NULL);",
    );
    psql(
        &site,
        "INSERT INTO sales VALUES (1, 'abc', '2026-01-01 00:00:00+00'), (2, 'abcdef', '2026-01-01 00:00:01+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(&master, &site_block("s1", &site), ""));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "flow `sales` stream `sales` site `s1`: writing to master table `sales`: row (store_id, id) = (s1, 2): value too long for type character varying(3)"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(psql(&master, "SELECT count(*) FROM sales"), "0");
}

/// Regression: arrays, intervals and enums used to fail at the first row
/// ("type `INT4[]` is not supported yet") although `check` said ok. They are
/// now read as text and parsed back by the target.
#[test]
fn arrays_intervals_and_enums_are_carried_as_text() {
    let master = pg_create_db("types_master");
    let site = pg_create_db("types_site");
    for (db, key) in [
        (&master, "store_id text, id int, PRIMARY KEY (store_id, id)"),
        (&site, "id int PRIMARY KEY"),
    ] {
        psql(
            db,
            &format!(
                "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
                 CREATE TABLE t ({key}, arr int[], iv interval, m mood, tags text[], updated_at timestamptz NOT NULL);"
            ),
        );
    }
    psql(
        &site,
        "INSERT INTO t VALUES (1, '{1,2,NULL}', '1 day 02:03:04.5', 'happy', '{\"a b\",\"c,d\"}', '2026-01-01 00:00:00+00'),
                              (2, '{}', '-3 months', NULL, NULL, '2026-01-01 00:00:01+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n[[site]]\nid = \"s1\"\nurl = \"{site}\"\n\
         [[flow]]\nname = \"t\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"t\"\n  target = \"t\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
    ));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT id, arr, iv, m, tags FROM t ORDER BY id"),
        psql(&site, "SELECT id, arr, iv, m, tags FROM t ORDER BY id")
    );
    assert_eq!(
        psql(
            &master,
            "SELECT arr[2], extract(epoch FROM iv), m, tags[2] FROM t WHERE id = 1"
        ),
        "2|93784.500000|happy|c,d"
    );
}

/// Late commit on PostgreSQL: a site transaction stamps its row with `now()`
/// (its start), stays open while the hub pulls rows committed after it, and
/// commits afterwards. With `cursor_lag = "0s"` only the floor taken from the
/// site's open transactions (`pg_stat_activity`) can bring the row in.
#[test]
fn a_transaction_held_open_across_a_pull_still_arrives() {
    let master = pg_create_db("late_master");
    let site = pg_create_db("late_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL DEFAULT now());",
    );
    // The long transaction: started now, row stamped with its start time.
    let held =
        common::PsqlSession::start(&site, "BEGIN; INSERT INTO sales (id, qty) VALUES (100, 7);");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while psql(
        &site,
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the held transaction did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Rows committed meanwhile carry later cursor values.
    psql(
        &site,
        "INSERT INTO sales (id, qty) VALUES (1, 1), (2, 2), (3, 3);",
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(
        &master,
        &site_block("s1", &site),
        "cursor_lag = \"0s\"",
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM sales"
        ),
        "1,2,3"
    );
    // Now it commits: its row is stamped before every row already pulled.
    assert!(held.finish("COMMIT;"));
    assert_eq!(
        psql(
            &site,
            "SELECT (SELECT updated_at FROM sales WHERE id = 100) < (SELECT min(updated_at) FROM sales WHERE id < 100)"
        ),
        "t"
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM sales"
        ),
        "1,2,3,100"
    );
}

/// A site that accepts the connection and then does not answer (here: its
/// table is locked) fails its run after its `statement_timeout` instead of
/// holding the pass; the other site syncs.
#[test]
fn a_hanging_site_fails_after_its_statement_timeout() {
    let master = pg_create_db("hang_master");
    let stuck = pg_create_db("hang_stuck");
    let fine = pg_create_db("hang_fine");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    for site in [&stuck, &fine] {
        psql(
            site,
            "CREATE TABLE sales (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now());",
        );
        psql(site, "INSERT INTO sales (id) VALUES (1), (2);");
    }
    let locker =
        common::PsqlSession::start(&stuck, "BEGIN; LOCK TABLE sales IN ACCESS EXCLUSIVE MODE;");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while psql(
        &stuck,
        "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'sales'::regclass",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let fleet = Fleet::new();
    let sites = format!(
        "{}statement_timeout = \"2s\"\n{}",
        site_block("stuck", &stuck),
        site_block("fine", &fine)
    );
    fleet.write_config(&sales_pull(&master, &sites, ""));
    let started = std::time::Instant::now();
    let out = fleet.hubsync(&["sync"]);
    let took = started.elapsed();
    locker.finish("ROLLBACK;");
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "flow `sales` stream `sales` site `stuck`: reading from the site: table `sales`: no answer within 2 s (`statement_timeout`)"
        ),
        "{}",
        out.stdout
    );
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    assert_eq!(
        psql(
            &master,
            "SELECT store_id, count(*) FROM sales GROUP BY store_id"
        ),
        "fine|2"
    );
}

/// Regressions from a user trial, PostgreSQL to PostgreSQL:
/// - `CAST(:site.zid AS int)` failed with "insufficient data left in message"
///   (the parameter was inferred as int4 and sent as text);
/// - `infinity` timestamps and dates crashed the hub; `24:00:00` became
///   `00:00:00`; BC dates could not be written back;
/// - `xml` and `point` columns failed the upsert ("operator does not exist").
#[test]
fn routing_casts_and_special_values_arrive_exactly() {
    let master = pg_create_db("special_master");
    let site = pg_create_db("special_site");
    let table = "CREATE TABLE t (%KEY%, zone_id int NOT NULL, ts timestamp, tz timestamptz, d date, closes time,
                 doc xml, at point, updated_at timestamptz NOT NULL)";
    psql(&master, &table.replace("%KEY%", "id int PRIMARY KEY"));
    psql(&site, &table.replace("%KEY%", "id int PRIMARY KEY"));
    psql(
        &master,
        "INSERT INTO t VALUES
          (1, 7, 'infinity', '-infinity', 'infinity', '24:00:00', '<a>1</a>', '(1.5,2)', '2026-01-01 00:00:00+00'),
          (2, 7, '4713-01-01 12:00:00 BC', '2026-03-29 01:30:00+00', '0044-03-15 BC', '00:00:00', NULL, NULL, '2026-01-01 00:00:01+00'),
          (3, 8, NULL, NULL, NULL, NULL, NULL, NULL, '2026-01-01 00:00:02+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n[[site]]\nid = \"s1\"\nurl = \"{site}\"\ntags = {{ zid = \"7\" }}\n\
         [[flow]]\nname = \"t\"\ndirection = \"push\"\n  [[flow.stream]]\n  \
         query = \"SELECT * FROM t WHERE zone_id = CAST(:site.zid AS int)\"\n  target = \"t\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n"
    ));
    fleet.sync_ok(&[]);
    let columns = "id, zone_id, ts, tz, d, closes, doc, at, updated_at";
    assert_eq!(
        psql(&site, &format!("SELECT {columns} FROM t ORDER BY id")),
        psql(
            &master,
            &format!("SELECT {columns} FROM t WHERE zone_id = 7 ORDER BY id")
        )
    );
    assert_eq!(
        psql(&site, "SELECT ts, d, closes FROM t ORDER BY id"),
        "infinity|infinity|24:00:00\n4713-01-01 12:00:00 BC|0044-03-15 BC|00:00:00"
    );
    // Re-applying writes nothing, xml and point included.
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT rows_written FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "0"
    );
}

/// Regression: a master login without CREATE on the database could not use
/// a `hubsync` schema created for it (`CREATE SCHEMA IF NOT EXISTS` checks
/// the privilege first).
#[test]
fn a_master_login_without_create_uses_a_prepared_schema() {
    let master = pg_create_db("nocreate_master");
    let site = pg_create_db("nocreate_site");
    let role = format!("hub_{}", std::process::id());
    psql(
        &master,
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;"),
    );
    psql(
        &master,
        &format!(
            "REVOKE CREATE ON DATABASE current_database() FROM PUBLIC;
             CREATE SCHEMA hubsync AUTHORIZATION {role};
             CREATE TABLE sales (store_id text, id int, updated_at timestamptz, PRIMARY KEY (store_id, id));
             GRANT ALL ON sales TO {role};"
        )
        .replace("current_database()", master.rsplit('/').next().unwrap()),
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now()); INSERT INTO sales (id) VALUES (1);",
    );
    let master_as_role = master.replacen("postgres@", &format!("{role}@"), 1);
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(&master_as_role, &site_block("s1", &site), ""));
    fleet.sync_ok(&[]);
    fleet.sync_ok(&[]);
    assert_eq!(psql(&master, "SELECT store_id, id FROM sales"), "s1|1");
    assert_eq!(
        psql(&master, "SELECT max(version) FROM hubsync.schema_version"),
        hubsync::state::SCHEMA_VERSION.to_string()
    );
}

/// A site whose clock went back (its newest cursor values are ahead of its
/// own clock) is reported in the run history.
#[test]
fn a_site_clock_that_went_back_is_reported() {
    let master = pg_create_db("clock_master");
    let site = pg_create_db("clock_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, updated_at timestamptz NOT NULL);",
    );
    // Stamped an hour ahead of the site's clock, as before a clock reset.
    psql(
        &site,
        "INSERT INTO sales VALUES (1, now() + interval '1 hour');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(&master, &site_block("s1", &site), ""));
    fleet.sync_ok(&[]);
    fleet.sync_ok(&[]);
    let note = psql(
        &master,
        "SELECT note FROM hubsync.runs ORDER BY started_at DESC LIMIT 1",
    );
    assert!(
        note.starts_with("stream `sales`: the clock of the site (")
            && note.contains("is behind the checkpoint's cursor"),
        "{note}"
    );
}

/// An initial load is inserted with COPY (no conflict handling); a key that
/// turns up twice anyway (here a `query` whose two halves both hold id 1,
/// in two one-row batches) makes the second batch fall back to the upsert:
/// the later row wins, nothing fails.
#[test]
fn an_initial_load_falls_back_to_the_upsert_when_a_key_repeats() {
    let master = pg_create_db("copy_master");
    let site = pg_create_db("copy_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE a (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
         CREATE TABLE b (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
         INSERT INTO a VALUES (1, 10, '2026-01-01 00:00:01+00'), (2, 20, '2026-01-01 00:00:02+00');
         INSERT INTO b VALUES (1, 11, '2026-01-01 00:00:03+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(
        &format!(
            "[hub]\nbatch_size = 1\n\n[master]\nurl = \"{master}\"\n{}\
             [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  \
             query = \"SELECT id, qty, updated_at FROM a UNION ALL SELECT id, qty, updated_at FROM b\"\n  \
             target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n",
            site_block("s1", &site)
        ),
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|11\n2|20"
    );
}

/// A quarantined row deleted at the source (found by `deletes = "detect"`)
/// leaves the quarantine (fresh-user trial: it stayed there for good).
#[test]
fn a_quarantined_row_hard_deleted_at_the_source_leaves_the_quarantine() {
    let master = pg_create_db("qdel_master");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, price numeric(12,2), updated_at text, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, price TEXT, updated_at TEXT);
         INSERT INTO sales VALUES (1, '1.50', '2026-01-01T00:00:01Z'), (2, 'abc', '2026-01-01T00:00:02Z');",
    );
    fleet.write_config(&sales_pull(
        &master,
        &site_block("s1", "sqlite://s1.db"),
        "on_error = \"quarantine\"\n  deletes = \"detect\"",
    ));
    assert_eq!(fleet.hubsync(&["sync"]).code, 1);
    assert_eq!(
        psql(&master, "SELECT count(*) FROM hubsync.quarantine"),
        "1"
    );
    sqlite_exec(&fleet.path("s1.db"), "DELETE FROM sales WHERE id = 2;");
    let out = fleet.sync_ok(&[]);
    eprintln!("STDERR {} STDOUT {}", out.stderr, out.stdout);
    assert_eq!(
        psql(&master, "SELECT count(*) FROM hubsync.quarantine"),
        "0"
    );
    assert_eq!(psql(&master, "SELECT id, price FROM sales"), "1|1.50");
}

/// `on_error = "quarantine"` also covers values hubsync refuses itself
/// before writing (see the comment inside).
#[test]
fn a_value_hubsync_refuses_before_writing_is_quarantined_too() {
    // Found by a fresh-user trial: a value the master's column would round
    // (1.005 into numeric(10,2)) is refused by hubsync before the write;
    // under `on_error = "quarantine"` it stopped the whole site, and the
    // valid rows of its batch were not applied.
    let master = pg_create_db("prewrite_master");
    let site = pg_create_db("prewrite_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, amount numeric(10,2), updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, amount numeric(12,3), updated_at timestamptz NOT NULL);
         INSERT INTO sales VALUES (1, 1.250, '2026-01-01 00:00:01+00'), (2, 1.005, '2026-01-01 00:00:02+00'),
                                  (3, 3.000, '2026-01-01 00:00:03+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(
        &master,
        &site_block("s1", &site),
        "on_error = \"quarantine\"",
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        psql(&master, "SELECT id, amount FROM sales ORDER BY id"),
        "1|1.25\n3|3.00"
    );
    assert_eq!(
        psql(&master, "SELECT row_key FROM hubsync.quarantine"),
        "[{\"t\":\"text\",\"v\":\"s1\"},{\"t\":\"int\",\"v\":2}]"
    );
    let error = psql(&master, "SELECT error FROM hubsync.quarantine");
    assert!(
        error.starts_with("row (store_id, id) = (s1, 2): column `amount`: value `1.005`"),
        "{error}"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT status, rows_read, rows_written, error_kind FROM hubsync.runs"
        ),
        "partial|3|2|data"
    );
    // Fixed at the source: applied and released.
    psql(
        &site,
        "UPDATE sales SET amount = 1.01, updated_at = '2026-01-02 00:00:00+00' WHERE id = 2;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT id, amount FROM sales ORDER BY id"),
        "1|1.25\n2|1.01\n3|3.00"
    );
    assert_eq!(
        psql(&master, "SELECT count(*) FROM hubsync.quarantine"),
        "0"
    );
}

/// `on_error = "quarantine"`: a row the master refuses goes to the
/// quarantine table with its site, key, values and error; the rest of the
/// batch is applied; the run is `partial` (exit 1). When the row is fixed at
/// the source it is applied and leaves the quarantine.
#[test]
fn refused_rows_are_quarantined_and_retried_when_they_change() {
    let master = pg_create_db("quarantine_master");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, price numeric(12,2), updated_at text, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, price TEXT, updated_at TEXT);
         INSERT INTO sales VALUES (1, '1.50', '2026-01-01T00:00:01Z'), (2, 'abc', '2026-01-01T00:00:02Z'),
                                  (3, '3.00', '2026-01-01T00:00:03Z');",
    );
    fleet.write_config(&sales_pull(
        &master,
        &site_block("s1", "sqlite://s1.db"),
        "on_error = \"quarantine\"",
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("partial"), "{}", out.stdout);
    assert_eq!(
        psql(&master, "SELECT id, price FROM sales ORDER BY id"),
        "1|1.50\n3|3.00"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT site, row_key, error FROM hubsync.quarantine"
        ),
        "s1|[{\"t\":\"text\",\"v\":\"s1\"},{\"t\":\"int\",\"v\":2}]|invalid input syntax for type numeric: \"abc\" (code 22P02)"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT status, rows_read, rows_written, error_kind FROM hubsync.runs"
        ),
        "partial|3|2|data"
    );
    // Fixed at the source (new value, new cursor): applied and released.
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET price = '2.25', updated_at = '2026-01-02T00:00:00Z' WHERE id = 2;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT id, price FROM sales ORDER BY id"),
        "1|1.50\n2|2.25\n3|3.00"
    );
    assert_eq!(
        psql(&master, "SELECT count(*) FROM hubsync.quarantine"),
        "0"
    );
}

/// The backend pids of hubsync's connections to the database of `url`.
fn hubsync_backends(url: &str) -> String {
    psql(
        url,
        "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'hubsync'",
    )
}

/// Opens a hub on `config` (a config text).
async fn open_hub(config: &str) -> hubsync::flow::Hub {
    let dir = std::env::temp_dir();
    let config = hubsync::config::Config::parse(config, &dir.join("keep.toml"), &dir, &|_| None)
        .expect("config");
    hubsync::flow::Hub::open(
        std::sync::Arc::new(config),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("hub")
}

/// Runs the `sales` flow once over every site of `hub`; every run must
/// succeed.
async fn pass(hub: &hubsync::flow::Hub) -> Vec<hubsync::flow::SiteReport> {
    let flow = hub.config().flow("sales").expect("flow").clone();
    let sites: Vec<_> = hub.config().sites.iter().collect();
    let reports = hub
        .sync_flow(
            &flow,
            &sites,
            hubsync::flow::SyncOptions::default(),
            &hubsync::flow::NoProgress,
        )
        .await;
    for report in &reports {
        assert_eq!(report.error, None, "site {}", report.site);
    }
    reports
}

/// The master table of the small pull tests: `sales` keyed by (store_id, id).
const SMALL_MASTER_SALES: &str = "CREATE TABLE sales (store_id text, id bigint, qty int NOT NULL, \
     updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, id));";

/// The site table of the small pull tests (no rows).
const SMALL_SITE_SALES: &str = "CREATE TABLE sales (id bigint PRIMARY KEY, qty int NOT NULL, updated_at timestamptz NOT NULL);";

/// A master and two PostgreSQL sites `one` and `two` (databases named
/// after `prefix`), each site holding sale (1, qty 5) at 10:00 UTC; returns
/// (master URL, site one URL, site two URL, their `[[site]]` blocks).
fn two_small_sites(prefix: &str) -> (String, String, String, String) {
    let master = pg_create_db(&format!("{prefix}_master"));
    let one = pg_create_db(&format!("{prefix}_one"));
    let two = pg_create_db(&format!("{prefix}_two"));
    psql(&master, SMALL_MASTER_SALES);
    for site in [&one, &two] {
        psql(
            site,
            &format!(
                "{SMALL_SITE_SALES}
             INSERT INTO sales VALUES (1, 5, '2026-01-01 10:00:00+00');"
            ),
        );
    }
    let sites = format!("{}{}", site_block("one", &one), site_block("two", &two));
    (master, one, two, sites)
}

#[test]
fn site_connections_are_kept_between_runs_and_replaced_when_they_die() {
    let (master, one, two, sites) = two_small_sites("keep");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = open_hub(&sales_pull(&master, &sites, "")).await;
        pass(&hub).await;
        // Both runs succeeded: their connections stay open, one per site.
        assert_eq!(hub.idle_site_connections(), 2);
        let first_one = hubsync_backends(&one);
        let first_two = hubsync_backends(&two);
        assert!(
            !first_one.is_empty() && !first_one.contains(','),
            "{first_one}"
        );

        // The next pass uses the same server processes: no new login.
        psql(
            &one,
            "INSERT INTO sales VALUES (2, 7, '2026-01-01 11:00:00+00');",
        );
        pass(&hub).await;
        assert_eq!(hubsync_backends(&one), first_one);
        assert_eq!(hubsync_backends(&two), first_two);

        // A column added at site `one` (and the master) while its connection
        // is kept: the statements prepared before are dropped at the next
        // checkout, so the run does not fail with "cached plan must not
        // change result type"; the changed source backfills with the column.
        psql(
            &one,
            "ALTER TABLE sales ADD COLUMN note text; UPDATE sales SET note = 'n' || id;",
        );
        psql(&master, "ALTER TABLE sales ADD COLUMN note text;");
        pass(&hub).await;
        assert_eq!(hubsync_backends(&one), first_one);
        assert_eq!(
            psql(
                &master,
                "SELECT id, note FROM sales WHERE store_id = 'one' ORDER BY id"
            ),
            "1|n1\n2|n2"
        );

        // Site `one` restarts its connection (as a server restart would):
        // the ping finds it dead, the run logs in anew and succeeds.
        psql(
            &one,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'hubsync';",
        );
        psql(
            &one,
            "INSERT INTO sales VALUES (3, 9, '2026-01-01 12:00:00+00');",
        );
        pass(&hub).await;
        let second_one = hubsync_backends(&one);
        assert!(
            !second_one.is_empty() && !second_one.contains(','),
            "{second_one}"
        );
        assert_ne!(second_one, first_one);
        assert_eq!(
            psql(
                &master,
                "SELECT store_id, id, qty FROM sales ORDER BY store_id, id"
            ),
            "one|1|5\none|2|7\none|3|9\ntwo|1|5"
        );
        hub.close().await;
    });
    // Closing the hub closes the kept connections.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(hubsync_backends(&one), "");
    assert_eq!(hubsync_backends(&two), "");
}

#[test]
fn kept_site_connections_stay_within_max_concurrent_sites_and_the_idle_timeout() {
    let (master, one, two, sites) = two_small_sites("bound");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (hub_section, kept) in [
        // One slot: the second site's login closes the first site's idle
        // connection; one connection in all.
        ("[hub]\nmax_concurrent_sites = 1\n", 1),
        // Nothing kept.
        ("[hub]\nsite_idle_timeout = \"0s\"\n", 0),
    ] {
        let config = format!("{hub_section}{}", sales_pull(&master, &sites, ""));
        runtime.block_on(async {
            let hub = open_hub(&config).await;
            for _ in 0..2 {
                pass(&hub).await;
                assert_eq!(hub.idle_site_connections(), kept, "{hub_section}");
                let open = [&one, &two]
                    .iter()
                    .filter(|url| !hubsync_backends(url).is_empty())
                    .count();
                assert_eq!(open, kept, "{hub_section}");
            }
            hub.close().await;
        });
    }
    // Kept for 1 s: closed by the hub's reaper (it looks every second)
    // without waiting for a next run.
    let config = format!(
        "[hub]\nsite_idle_timeout = \"1s\"\n{}",
        sales_pull(&master, &sites, "")
    );
    runtime.block_on(async {
        let hub = open_hub(&config).await;
        pass(&hub).await;
        assert_eq!(hub.idle_site_connections(), 2);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert_eq!(hub.idle_site_connections(), 0);
        assert_eq!(hubsync_backends(&one), "");
        assert_eq!(hubsync_backends(&two), "");
        hub.close().await;
    });
}

#[test]
fn the_v7_migration_closes_duplicate_running_rows_and_a_stale_run_is_taken_over() {
    let master = pg_create_db("v7_master");
    let site = pg_create_db("v7_site");
    psql(&master, SMALL_MASTER_SALES);
    psql(
        &site,
        &format!(
            "{SMALL_SITE_SALES}
         INSERT INTO sales VALUES (1, 5, '2026-01-01 10:00:00+00');"
        ),
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(&master, &site_block("s1", &site), ""));
    fleet.sync_ok(&[]);
    // Back to schema 6, with two `running` rows of one pair left by dead hubs
    // (schema 6 did not forbid it).
    psql(
        &master,
        "DROP INDEX hubsync.hubsync_runs_one_running;
         DELETE FROM hubsync.schema_version WHERE version >= 7;
         DELETE FROM hubsync.runs;
         INSERT INTO hubsync.runs (run_id, flow, site, started_at, heartbeat_at, status) VALUES
           ('older', 'sales', 's1', '2026-01-01 10:00:00+00', '2026-01-01 10:05:00+00', 'running'),
           ('newer', 'sales', 's1', '2026-01-01 11:00:00+00', '2026-01-01 11:05:00+00', 'running');",
    );
    psql(
        &site,
        "INSERT INTO sales VALUES (2, 7, '2026-01-01 11:00:00+00');",
    );
    fleet.sync_ok(&[]);
    // The migration closed the older row at its last heartbeat; the run then
    // found `newer` stale (heartbeat long past) and closed it at its start.
    assert_eq!(
        psql(
            &master,
            "SELECT run_id, status, finished_at = '2026-01-01 10:05:00+00', error LIKE 'interrupted: %' \
             FROM hubsync.runs WHERE run_id IN ('older', 'newer') ORDER BY run_id"
        ),
        "newer|failed|f|t\nolder|failed|t|t"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT status, count(*) FROM hubsync.runs WHERE run_id NOT IN ('older', 'newer') GROUP BY status"
        ),
        "succeeded|1"
    );
    assert_eq!(
        psql(&master, "SELECT max(version) FROM hubsync.schema_version"),
        hubsync::state::SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        psql(
            &master,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'hubsync_runs_one_running'"
        ),
        "1"
    );
    assert_eq!(
        psql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|5\n2|7"
    );
    // The index refuses a second `running` row of a pair.
    psql(
        &master,
        "INSERT INTO hubsync.runs (run_id, flow, site, started_at, status) VALUES ('a', 'f', 's', now(), 'running');",
    );
    let second = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &master, "-c"])
        .arg("INSERT INTO hubsync.runs (run_id, flow, site, started_at, status) VALUES ('b', 'f', 's', now(), 'running');")
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("hubsync_runs_one_running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[test]
fn a_no_op_run_writes_nothing_but_puts_back_an_overlap_row_changed_at_the_master() {
    let master = pg_create_db("noop_master");
    let site = pg_create_db("noop_site");
    psql(&master, SMALL_MASTER_SALES);
    // Three rows one second apart: all three lie within the default 5 s
    // cursor_lag of the newest, so every later run re-reads all three.
    psql(
        &site,
        &format!(
            "{SMALL_SITE_SALES}
         INSERT INTO sales VALUES (1, 5, '2026-01-01 10:00:00+00'), (2, 6, '2026-01-01 10:00:01+00'),
           (3, 7, '2026-01-01 10:00:02+00');"),
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(&master, &site_block("s1", &site), ""));
    fleet.sync_ok(&[]);
    let written = || {
        psql(
            &master,
            "SELECT rows_read, rows_written FROM hubsync.runs ORDER BY started_at DESC LIMIT 1",
        )
    };
    assert_eq!(written(), "3|3");
    // Someone edits row 3 at the master; the site did not change.
    psql(&master, "UPDATE sales SET qty = 99 WHERE id = 3;");
    let before = psql(&master, "SELECT xmin FROM sales WHERE id = 1");
    fleet.sync_ok(&[]);
    // The re-read finds the difference: the batch is applied, row 3 is the
    // site's again, and rows 1 and 2 (unchanged) are not rewritten.
    assert_eq!(written(), "3|1");
    assert_eq!(
        psql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|5\n2|6\n3|7"
    );
    assert_eq!(psql(&master, "SELECT xmin FROM sales WHERE id = 1"), before);
    // Nothing differs now: the run writes neither rows nor its checkpoint.
    let rows_before = psql(
        &master,
        "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM sales",
    );
    // The checkpoint keeps its position; its site snapshot (late commits by
    // transaction id) moves with the server's transaction ids, which the
    // master, on the same server here, advances every run.
    let position = "SELECT position || '|' || resume_from FROM hubsync.checkpoints";
    let checkpoint_before = psql(&master, position);
    fleet.sync_ok(&[]);
    assert_eq!(written(), "3|0");
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM sales"
        ),
        rows_before
    );
    assert_eq!(psql(&master, position), checkpoint_before);
}

#[test]
fn a_heartbeat_during_a_batch_transaction_never_stalls_the_run() {
    // A heartbeat updates the run's row, which each batch transaction of the
    // same run also updates (its row counts). Awaited in place of the work,
    // a heartbeat that met an uncommitted batch waited for a commit that
    // could never come: the run hung (no statement timeout here). Ticking
    // every millisecond over 300 one-row batches makes that meeting certain.
    let master = pg_create_db("beat_master");
    let site = pg_create_db("beat_site");
    psql(&master, SMALL_MASTER_SALES);
    psql(
        &site,
        &format!(
            "{SMALL_SITE_SALES}
         INSERT INTO sales SELECT g, g % 7, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
           FROM generate_series(1, 300) g;"),
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 1\nstatement_timeout = \"0s\"\n{}",
        sales_pull(&master, &site_block("s1", &site), "")
    ));
    let mut child = common::hubsync()
        .arg("-c")
        .arg(fleet.path("hubsync.toml"))
        .arg("sync")
        .env("HUBSYNC_HEARTBEAT_INTERVAL_MS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.is_some(), "the sync hung for 60 s");
    assert!(status.unwrap().success());
    assert_eq!(
        psql(&master, "SELECT count(*), sum(qty) FROM sales"),
        // qty = g % 7 over g = 1..300: 42 full cycles of 0..6 (21 each) = 882,
        // then g = 295..300 gives 1..6 = 21.
        "300|903"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT status, rows_read, rows_written FROM hubsync.runs"
        ),
        "succeeded|300|300"
    );
}

/// A checkpoint is written only over the one its writer expects: a stale
/// writer, one expecting none where one is stored, and a position moving
/// back are refused and change nothing (`common::checkpoint_compare_and_set`).
#[test]
fn a_stale_checkpoint_writer_is_refused_on_a_postgres_master() {
    let master = pg_create_db("cas_master");
    common::checkpoint_compare_and_set(&master, std::path::Path::new("."));
}

/// An initial load into PostgreSQL goes through binary COPY when every
/// column has a binary encoding (integers of each width, numeric, text,
/// varchar, char, dates, timestamps with and without zone, float8, bool,
/// uuid): the values the master holds afterwards are exactly the site's,
/// edge cases included (negative fractions, zero with a scale, 38 digits,
/// instants and dates before 2000 with fractions, the int2/int4 limits).
/// A second table with a `jsonb` column has no binary encoding and loads
/// through the text format, equally exact.
#[test]
fn an_initial_load_through_binary_copy_keeps_every_value() {
    let columns = "id int8 PRIMARY KEY, a int2, b int4, n numeric(38,10), m numeric, f float8, ok bool, \
                   s varchar(20), c char(3), t text, d date, ts timestamp, tz timestamptz, u uuid, \
                   updated_at timestamptz NOT NULL";
    let site = pg_create_db("bincopy_site");
    psql(
        &site,
        &format!(
            "CREATE TABLE sales ({columns});
             CREATE TABLE docs (id int8 PRIMARY KEY, doc jsonb, n numeric(12,2), updated_at timestamptz NOT NULL);
             INSERT INTO sales VALUES
               (1, -32768, 2147483647, -0.0500000000, 0.000, -1.5, true, 'tab\there', 'ab', 'back\\slash',
                '1999-12-31', '1999-12-31 23:59:59.5', '1970-01-01 00:00:00.000001+00',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-01-01 00:00:01+00'),
               (2, 32767, -2147483648, 1234567890123456789012345678.1234567890, 100000000, 1e300, false,
                '', 'x', 'ünïcödé ✓', '2000-01-01', '2000-01-01 00:00:00', '2026-03-29 01:30:00.25+02',
                NULL, '2026-01-01 00:00:02+00'),
               (3, NULL, NULL, NULL, -7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                '2026-01-01 00:00:03+00');
             INSERT INTO docs VALUES (1, '{{\"a\": [1, 2]}}', -0.05, '2026-01-01 00:00:01+00');"
        ),
    );
    let master = pg_create_db("bincopy_master");
    psql(
        &master,
        &format!(
            "CREATE TABLE sales (store_id text NOT NULL, {}, PRIMARY KEY (store_id, id));
             CREATE TABLE docs (store_id text NOT NULL, id int8, doc jsonb, n numeric(12,2), updated_at timestamptz NOT NULL,
                                PRIMARY KEY (store_id, id));",
            columns.replace(" PRIMARY KEY", "")
        ),
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "{}\n  [[flow.stream]]\n  source = \"docs\"\n  target = \"docs\"\n  primary_key = [\"id\"]\n  \
         cursor = \"updated_at\"\n  site_column = \"store_id\"\n",
        sales_pull(&master, &site_block("s1", &site), "")
    ));
    fleet.sync_ok(&[]);
    let shown = "SET TimeZone = 'UTC'; SELECT id, a, b, n, m, f, ok, s, c, t, d, ts, tz, u, updated_at \
                 FROM sales ORDER BY id";
    assert_eq!(
        psql(&master, shown),
        "1|-32768|2147483647|-0.0500000000|0.000|-1.5|t|tab\there|ab |back\\slash|1999-12-31|\
         1999-12-31 23:59:59.5|1970-01-01 00:00:00.000001+00|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|2026-01-01 00:00:01+00\n\
         2|32767|-2147483648|1234567890123456789012345678.1234567890|100000000|1e+300|f||x  |ünïcödé ✓|2000-01-01|\
         2000-01-01 00:00:00|2026-03-28 23:30:00.25+00||2026-01-01 00:00:02+00\n\
         3||||-7||||||||||2026-01-01 00:00:03+00"
    );
    assert_eq!(
        psql(&master, "SELECT id, doc, n FROM docs"),
        "1|{\"a\": [1, 2]}|-0.05"
    );
}

/// Reported by a trial: a SQLite site's `DATETIME` text is its local time,
/// but without an expression it reached a `timestamptz` master column as
/// if it were UTC, whatever the site's `timezone` tag. The same file is
/// pulled as `ny` (America/New_York, UTC-5 in January) and `tokyo`
/// (Asia/Tokyo, UTC+9): `2026-01-01 12:01:00` is 17:01 and 03:01 UTC; text
/// with an offset is that instant at both (`+02:00`: 10:01 UTC); the
/// cursor column, local time too, converts the same way.
#[test]
fn a_sqlite_sites_local_datetime_text_becomes_an_instant_in_its_time_zone() {
    let master = pg_create_db("sqlite_zone_master");
    let fleet = Fleet::new();
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id bigint, sold_at timestamptz, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &fleet.path("s.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, sold_at DATETIME NOT NULL, updated_at DATETIME NOT NULL);
         INSERT INTO sales VALUES (1, '2026-01-01 12:01:00', '2026-01-01 12:05:00'),
                                  (2, '2026-01-01T12:01:00+02:00', '2026-01-01 12:06:00');",
    );
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n\n\
         [[site]]\nid = \"ny\"\nurl = \"sqlite://s.db\"\ntags = {{ timezone = \"America/New_York\" }}\n\n\
         [[site]]\nid = \"tokyo\"\nurl = \"sqlite://s.db\"\ntags = {{ timezone = \"Asia/Tokyo\" }}\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(store_id || ' ' || id || ' ' || to_char(sold_at AT TIME ZONE 'UTC', 'HH24:MI') || ' ' \
             || to_char(updated_at AT TIME ZONE 'UTC', 'DD HH24:MI'), ', ' ORDER BY store_id, id) FROM sales"
        ),
        "ny 1 17:01 01 17:05, ny 2 10:01 01 17:06, tokyo 1 03:01 01 03:05, tokyo 2 10:01 01 03:06"
    );
}

/// Reported by a second trial: a SQLite `DATETIME` column (not the cursor)
/// holding numbers, which SQLite reads as Julian days or unix seconds,
/// failed the stream with PostgreSQL's "invalid input syntax" when pulled
/// into `timestamptz`. Julian day 2461193.25 is 2026-06-01 18:00 UTC, the
/// INTEGER 2461042 (a Julian day) 2026-01-01 12:00 UTC, unix 1780000000
/// 2026-05-28 20:26:40 UTC; text stays as it was read (UTC).
#[test]
fn numbers_in_a_sqlite_datetime_column_arrive_as_the_instants_they_stand_for() {
    let master = pg_create_db("sqlite_num_dt_master");
    let fleet = Fleet::new();
    psql(
        &master,
        "CREATE TABLE ev (store_id text, id bigint, at timestamptz, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &fleet.path("s.db"),
        "CREATE TABLE ev (id INTEGER PRIMARY KEY, at DATETIME, updated_at DATETIME NOT NULL);
         INSERT INTO ev VALUES (1, 2461193.25, '2026-06-01 12:00:00'), (2, 2461042.0, '2026-06-01 12:00:01'),
                               (3, 1780000000, '2026-06-01 12:00:02'), (4, '2026-06-01 10:00:00', '2026-06-01 12:00:03');",
    );
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"s\"\nurl = \"sqlite://s.db\"\n\n\
         [[flow]]\nname = \"ev\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"ev\"\n  target = \"ev\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id || ' ' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), ', ' ORDER BY id) FROM ev"
        ),
        "1 2026-06-01 18:00:00, 2 2026-01-01 12:00:00, 3 2026-05-28 20:26:40, 4 2026-06-01 10:00:00"
    );
}

/// Found by a fresh-user trial: `--dry-run` said `0 written` whatever a
/// real run would change. Into a PostgreSQL master it now counts the rows a
/// real run would insert or change, read by one comparison, and writes
/// nothing. Rows at 10:00, 10:30, 11:00 synced; row 1 then changes (qty,
/// stamped 12:00) and row 4 is new (12:30): the dry run reads from 11:00
/// less the 5 s lag, so rows 3, 1 and 4 (3 read), of which 1 and 4 would
/// be written (2); row 3 is unchanged.
#[test]
fn a_dry_run_into_a_postgres_master_counts_the_rows_a_real_run_would_write() {
    let master = pg_create_db("dry_master");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at text, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT);
         INSERT INTO sales VALUES (1, 10, '2026-01-02T10:00:00.000000Z'), (2, 20, '2026-01-02T10:30:00.000000Z'),
           (3, 30, '2026-01-02T11:00:00.000000Z');",
    );
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
    ));
    fleet.sync_ok(&[]);
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET qty = 11, updated_at = '2026-01-02T12:00:00.000000Z' WHERE id = 1;
         INSERT INTO sales VALUES (4, 40, '2026-01-02T12:30:00.000000Z');",
    );
    let rows = || {
        psql(
            &master,
            "SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM sales",
        )
    };
    let out = fleet.sync_ok(&["--dry-run"]);
    // The summary's row: flow, site, status, rows read, written, deleted.
    let cells: Vec<&str> = (out.stdout.lines())
        .find(|line| line.contains(" s1 "))
        .map(|line| line.split_whitespace().skip(1).take(6).collect())
        .unwrap_or_default();
    assert_eq!(
        cells,
        ["sales", "s1", "succeeded", "3", "2", "0"],
        "{}",
        out.stdout
    );
    assert_eq!(rows(), "1:10,2:20,3:30");
    fleet.sync_ok(&[]);
    assert_eq!(rows(), "1:11,2:20,3:30,4:40");
}

/// Regression (fresh-user trial): a site's `boolean` into a master
/// `smallint` passed `check`, then every run failed with PostgreSQL's
/// "invalid input syntax for type smallint: "t"". A boolean bound for an
/// integer column is written as 1/0, on a pull (PostgreSQL `smallint`,
/// `integer`, `bigint`) and on a push (a PostgreSQL site's `smallint`, a
/// SQLite site's `INTEGER`).
#[test]
fn a_boolean_into_an_integer_column_is_written_as_1_and_0() {
    let master = pg_create_db("fx_bool_master");
    let site = pg_create_db("fx_bool_site");
    psql(
        &site,
        "CREATE TABLE bt (id int PRIMARY KEY, b boolean, i boolean, g boolean, updated_at timestamptz NOT NULL);
         INSERT INTO bt VALUES (1, true, false, true, '2026-01-01 00:00:00+00'),
                               (2, false, true, NULL, '2026-01-01 00:00:01+00'),
                               (3, NULL, NULL, false, '2026-01-01 00:00:02+00');
         CREATE TABLE flags (sku text PRIMARY KEY, active smallint, updated_at timestamptz NOT NULL);",
    );
    psql(
        &master,
        "CREATE TABLE bt (store_id text, id int, b smallint, i int, g bigint, updated_at timestamptz NOT NULL,
           PRIMARY KEY (store_id, id));
         CREATE TABLE flags (sku text PRIMARY KEY, active boolean, updated_at timestamptz NOT NULL);
         INSERT INTO flags VALUES ('apple', true, '2026-01-01 00:00:00+00'), ('pear', false, '2026-01-01 00:00:01+00'),
                                  ('fig', NULL, '2026-01-01 00:00:02+00');",
    );
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("s2.db"),
        "CREATE TABLE flags (sku TEXT PRIMARY KEY, active INTEGER, updated_at TEXT NOT NULL);
         CREATE TABLE bt (id INTEGER PRIMARY KEY, b BOOLEAN, i BOOLEAN, g BOOLEAN, updated_at TEXT NOT NULL);
         INSERT INTO bt VALUES (1, 1, 0, NULL, '2026-01-01T00:00:00Z');",
    );
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n{}{}\
         [[flow]]\nname = \"bt\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"bt\"\n  target = \"bt\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n\n\
         [[flow]]\nname = \"flags\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"flags\"\n  target = \"flags\"\n  \
         primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n",
        site_block("pg-03", &site),
        site_block("s2", "sqlite://s2.db"),
    ));
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("0 problems"), "{check:?}");
    fleet.sync_ok(&["--flow", "bt"]);
    assert_eq!(
        psql(
            &master,
            "SELECT store_id, id, b, i, g FROM bt ORDER BY store_id, id"
        ),
        "pg-03|1|1|0|1\npg-03|2|0|1|\npg-03|3|||0\ns2|1|1|0|"
    );
    fleet.sync_ok(&["--flow", "flags"]);
    assert_eq!(
        psql(&site, "SELECT sku, active FROM flags ORDER BY sku"),
        "apple|1\nfig|\npear|0"
    );
    assert_eq!(
        common::sqlite_query(
            &fleet.path("s2.db"),
            "SELECT sku, active, typeof(active) FROM flags ORDER BY sku"
        ),
        "apple|1|integer\nfig|NULL|null\npear|0|integer"
    );
}

/// Regression (fresh-user trial 3): a site's `amount numeric(14,4)` and
/// `name varchar(20)` into the master's `numeric(12,2)` and `varchar(8)`
/// passed `check` ("0 problems") and then every sync failed on a value.
/// `check` now warns of each narrower column; the sync still refuses the
/// value that does not fit (1.2345 has 4 decimals, the master keeps 2).
#[test]
fn check_warns_of_target_columns_narrower_than_the_source() {
    let master = pg_create_db("narrow_master");
    let site = pg_create_db("narrow_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, amount numeric(12,2), name varchar(8), \
         updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, amount numeric(14,4), name varchar(20), updated_at timestamptz);
         INSERT INTO sales VALUES (1, 1.2345, 'short', now());",
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(&master, &site_block("s1", &site), ""));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for warning in [
        "warning: flow `sales` stream `sales` site `s1`: master table `sales`: column `amount` is `numeric(12,2)` \
         and the source's `amount` is `numeric(14,4)`: a value with more than 2 decimals does not fit (the source \
         keeps 4); values that do not fit are refused at run time (never rounded or cut)",
        "warning: flow `sales` stream `sales` site `s1`: master table `sales`: column `name` is `character varying(8)` \
         and the source's `name` is `character varying(20)`: a text longer than 8 characters does not fit (the \
         source allows 20); values that do not fit are refused at run time (never rounded or cut)",
    ] {
        assert!(out.stdout.contains(warning), "{}", out.stdout);
    }
    assert!(
        out.stdout.contains("0 problems, 2 warnings"),
        "{}",
        out.stdout
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(psql(&master, "SELECT count(*) FROM sales"), "0");
}
