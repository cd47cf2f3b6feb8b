//! MySQL/MariaDB sites and masters, mixed with PostgreSQL and SQLite, against
//! the throwaway servers `scripts/test.sh` starts (`HUBSYNC_TEST_MYSQL_URL`,
//! `HUBSYNC_TEST_PG_URL`). Expected values are written out by hand from the
//! data each test inserts.

mod common;

use common::{
    Fleet, my_create_db, mysql, mysql_spawn, pg_create_db, psql, sqlite_exec, sqlite_query,
};

/// A MariaDB point-of-sale table with one column of every MySQL type hubsync
/// reads.
const MY_SITE_SALES: &str = "
CREATE TABLE sales (
  id BIGINT PRIMARY KEY, sku VARCHAR(40) NOT NULL, qty INT NOT NULL, flag TINYINT(1), paid TINYINT(1),
  price DECIMAL(12,2) NOT NULL, big DECIMAL(38,10), ubig BIGINT UNSIGNED, ratio DOUBLE,
  sold_at TIMESTAMP(6) NULL, local_at DATETIME(6), day DATE, tod TIME(6), doc JSON, raw VARBINARY(16),
  code VARCHAR(10) COLLATE utf8mb4_bin, note TEXT, uid CHAR(36), updated_at DATETIME(6) NOT NULL,
  KEY (updated_at));
";

const PG_MASTER_SALES: &str = "
CREATE TABLE sales (
  store_id text NOT NULL, id bigint NOT NULL, sku text NOT NULL, qty integer NOT NULL, flag smallint, paid boolean,
  price numeric(12,2) NOT NULL, big numeric(38,10), ubig numeric(20), ratio double precision,
  sold_at timestamptz, local_at timestamp, day date, tod time, doc jsonb, raw bytea,
  code text, note text, uid uuid, updated_at timestamp NOT NULL,
  PRIMARY KEY (store_id, id));
";

fn sales_pull(master: &str, sites: &[(&str, &str)]) -> String {
    let mut text = format!("[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master}\"\n\n");
    for (id, url) in sites {
        text.push_str(&format!("[[site]]\nid = \"{id}\"\nurl = \"{url}\"\n\n"));
    }
    text.push_str(
        "[[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  \
         target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n",
    );
    text
}

#[test]
fn mariadb_site_into_postgres_master_keeps_every_value() {
    let master = pg_create_db("my_pg_master");
    psql(&master, PG_MASTER_SALES);
    let site = my_create_db("my_site");
    mysql(&site, MY_SITE_SALES);
    // Edge values: 38-digit decimal, BIGINT UNSIGNED max, TINYINT(1) holding
    // 5 and -128 (not booleans), 4-byte emoji, empty vs NULL, NUL bytes, a
    // `_bin` collation text column (flagged binary by the protocol, still
    // text), JSON, a DST-edge instant, TIME with microseconds.
    mysql(
        &site,
        "INSERT INTO sales VALUES
          (1, 'apple', 2, 5, 1, 12.50, 1234567890123456789012345678.0123456789, 18446744073709551615, 0.1,
           '2026-03-29 00:59:59.999999', '2026-03-29 02:30:00', '2026-03-29', '23:59:59.999999',
           '{\"b\": 1, \"a\": [1.50, null]}', X'00FF00', 'ABC', 'Grüße 🍐', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
           '2026-01-02 09:00:00'),
          (2, 'pear', -1, -128, 0, -0.01, -0.0000000001, 0, -1.5e-300, '1970-01-01 00:00:01', NULL, '1000-01-01',
           '00:00:00', 'null', X'', '', '', NULL, '2026-01-02 09:00:00'),
          (3, 'fig', 0, NULL, NULL, 0.00, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           '2026-01-02 09:00:01');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&sales_pull(&master, &[("m1", &site)]));
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    fleet.sync_ok(&[]);

    assert_eq!(
        psql(
            &master,
            "SELECT id, sku, qty, flag, paid, price, big, ubig, ratio FROM sales WHERE store_id = 'm1' ORDER BY id"
        ),
        "1|apple|2|5|t|12.50|1234567890123456789012345678.0123456789|18446744073709551615|0.1\n\
         2|pear|-1|-128|f|-0.01|-0.0000000001|0|-1.5e-300\n\
         3|fig|0|||0.00|||"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT id, sold_at AT TIME ZONE 'UTC', local_at, day, tod, updated_at FROM sales ORDER BY id"
        ),
        "1|2026-03-29 00:59:59.999999|2026-03-29 02:30:00|2026-03-29|23:59:59.999999|2026-01-02 09:00:00\n\
         2|1970-01-01 00:00:01||1000-01-01|00:00:00|2026-01-02 09:00:00\n\
         3|||||2026-01-02 09:00:01"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT id, doc::text, encode(raw, 'hex'), code, note, note IS NULL, uid FROM sales ORDER BY id"
        ),
        "1|{\"a\": [1.50, null], \"b\": 1}|00ff00|ABC|Grüße 🍐|f|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n\
         2|null||||f|\n\
         3|||||t|"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT rows_read, rows_written, status FROM hubsync.runs"
        ),
        "3|3|succeeded"
    );

    // Incremental: one row changes. The re-read overlap (5 s below the
    // checkpoint 09:00:01) brings rows 2 and 3 again, unchanged: read 3,
    // written 1.
    mysql(
        &site,
        "UPDATE sales SET qty = 12, updated_at = '2026-01-05 00:00:00' WHERE id = 1",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|12\n2|-1\n3|0"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT rows_read, rows_written FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "3|1"
    );
}

const PG_MASTER_PRICES: &str = "
CREATE TABLE prices (sku text NOT NULL, zone text NOT NULL, price numeric(12,2) NOT NULL, name text,
  updated_at timestamptz NOT NULL, PRIMARY KEY (sku, zone));
INSERT INTO prices VALUES
  ('apple', 'A', 1.10, 'Äpfel 🍎', '2026-01-01 00:00:00+00'),
  ('pear', 'A', 2.20, NULL, '2026-01-01 00:00:01+00'),
  ('apple', 'B', 1.15, '', '2026-01-01 00:00:02+00');
";

const MY_SITE_PRICES: &str = "CREATE TABLE prices (sku VARCHAR(20) PRIMARY KEY, price DECIMAL(12,2) NOT NULL, \
     name VARCHAR(100), updated_at DATETIME(6) NOT NULL);";

fn prices_push(master: &str, sites: &[(&str, &str, &str)]) -> String {
    let mut text = format!("[master]\nurl = \"{master}\"\n\n");
    for (id, url, zone) in sites {
        text.push_str(&format!(
            "[[site]]\nid = \"{id}\"\nurl = \"{url}\"\ntags = {{ zone = \"{zone}\" }}\n\n"
        ));
    }
    text.push_str(
        "[[flow]]\nname = \"prices\"\ndirection = \"push\"\n  [[flow.stream]]\n  \
         query = \"SELECT sku, price, name, updated_at FROM prices WHERE zone = :site.zone\"\n  \
         target = \"prices\"\n  primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n",
    );
    text
}

#[test]
fn postgres_master_pushes_routed_rows_to_mariadb_sites() {
    let master = pg_create_db("my_push_master");
    psql(&master, PG_MASTER_PRICES);
    let site_a = my_create_db("my_push_a");
    let site_b = my_create_db("my_push_b");
    mysql(&site_a, MY_SITE_PRICES);
    mysql(&site_b, MY_SITE_PRICES);
    // A second unique key at a MySQL target: `ON DUPLICATE KEY UPDATE`
    // would also fire on it, so `check` warns (and still passes).
    mysql(&site_a, "ALTER TABLE prices ADD UNIQUE KEY by_name (name)");
    let fleet = Fleet::new();
    fleet.write_config(&prices_push(
        &master,
        &[("m1", &site_a, "A"), ("m2", &site_b, "B")],
    ));
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains(
            "warning: flow `prices` stream `prices` site `m1`: site table `prices` has a unique key on (name) \
             besides the stream's key (sku); on MySQL an incoming row that collides on it updates that other row \
             instead of failing"
        ),
        "{}",
        check.stdout
    );
    assert!(
        !check.stdout.contains("site `m2`: site table"),
        "{}",
        check.stdout
    );
    fleet.sync_ok(&[]);
    // Instants land in DATETIME as UTC wall-clock readings.
    assert_eq!(
        mysql(
            &site_a,
            "SELECT sku, price, name, updated_at FROM prices ORDER BY sku"
        ),
        "apple|1.10|Äpfel 🍎|2026-01-01 00:00:00.000000\npear|2.20|NULL|2026-01-01 00:00:01.000000"
    );
    assert_eq!(
        mysql(
            &site_b,
            "SELECT sku, price, name, updated_at FROM prices ORDER BY sku"
        ),
        "apple|1.15||2026-01-01 00:00:02.000000"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT site, rows_read, rows_written, status FROM hubsync.runs ORDER BY site"
        ),
        "m1|2|2|succeeded\nm2|1|1|succeeded"
    );

    // One price changes in zone A. m1 re-reads its overlap (pear, unchanged)
    // and the changed apple: read 2, written 1. m2 re-reads its apple: read
    // 1, written 0 (MySQL leaves an identical row untouched).
    psql(
        &master,
        "UPDATE prices SET price = 1.20, updated_at = '2026-01-03 00:00:00+00' WHERE sku = 'apple' AND zone = 'A'",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(&site_a, "SELECT sku, price FROM prices ORDER BY sku"),
        "apple|1.20\npear|2.20"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT site, rows_read, rows_written FROM hubsync.runs WHERE started_at = \
             (SELECT max(started_at) FROM hubsync.runs r WHERE r.site = runs.site) ORDER BY site"
        ),
        "m1|2|1\nm2|1|0"
    );
}

#[test]
fn long_values_are_split_under_max_allowed_packet() {
    // 24 rows of 1 MiB + 1 text each: with the server's 16 MiB
    // max_allowed_packet, statements carry at most 8 MiB of values, so the
    // batch goes in several statements and every byte arrives.
    let master = pg_create_db("my_long_master");
    psql(
        &master,
        "CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL);
         INSERT INTO docs SELECT i, repeat(chr(64 + i), 1048576) || '🍐', '2026-01-01 00:00:00+00'
           FROM generate_series(1, 24) AS i;",
    );
    let site = my_create_db("my_long_site");
    mysql(
        &site,
        "CREATE TABLE docs (id INT PRIMARY KEY, body LONGTEXT NOT NULL, updated_at DATETIME(6) NOT NULL);",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"docs\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"docs\"\n  \
         target = \"docs\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n"
    ));
    fleet.sync_ok(&[]);
    // 1,048,576 one-byte letters + a 4-byte emoji: 1,048,580 bytes,
    // 1,048,577 characters per row.
    assert_eq!(
        mysql(
            &site,
            "SELECT count(*), min(length(body)), max(char_length(body)), sum(body = CONCAT(REPEAT(CHAR(64 + id), 1048576), '🍐')) FROM docs"
        ),
        "24|1048580|1048577|24"
    );
}

#[test]
fn values_mariadb_cannot_hold_stop_the_push_before_writing() {
    let master = pg_create_db("my_bad_master");
    psql(
        &master,
        "CREATE TABLE vals (id int PRIMARY KEY, amount numeric, ratio float8, day date, at timestamp,
           updated_at timestamptz NOT NULL);
         INSERT INTO vals VALUES (1, 1.50, 0.5, '2026-01-01', '2026-01-01 10:00:00', '2026-01-01 00:00:00+00'),
                                 (2, 'NaN', 0.25, '2026-01-02', '2026-01-02 10:00:00', '2026-01-01 00:00:01+00');",
    );
    let site = my_create_db("my_bad_site");
    mysql(
        &site,
        "CREATE TABLE vals (id INT PRIMARY KEY, amount DECIMAL(10,2), ratio DOUBLE, day DATE, at DATETIME,
           updated_at DATETIME(6) NOT NULL);",
    );
    let fleet = Fleet::new();
    // Failures in a row would open the circuit: not here.
    fleet.write_config(&format!(
        "[hub]\ncircuit_breaker_failures = 100\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"vals\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"vals\"\n  \
         target = \"vals\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n"
    ));
    let expect_refusal = |fix: &str, message: &str| {
        if !fix.is_empty() {
            psql(&master, fix);
        }
        let out = fleet.hubsync(&["sync"]);
        assert_eq!(out.code, 1, "{out:?}");
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains(message), "expected `{message}` in:\n{all}");
        // Nothing of the batch was written, not even the good row 1.
        assert_eq!(mysql(&site, "SELECT count(*) FROM vals"), "0");
    };
    expect_refusal(
        "",
        "flow `vals` stream `vals` site `m1`: writing to site table `vals`: row (id) = (2): column `amount`: \
         value `NaN` (numeric) cannot be stored in MySQL `decimal(10,2)`: MySQL has no NaN or infinity",
    );
    expect_refusal(
        "UPDATE vals SET amount = 12.345 WHERE id = 2",
        "row (id) = (2): column `amount`: value `12.345` (numeric) cannot be stored in MySQL `decimal(10,2)`: \
         it has 3 digits after the point and the column keeps 2; MySQL would round it",
    );
    expect_refusal(
        "UPDATE vals SET amount = 12345678901.5 WHERE id = 2",
        "it has 11 digits before the point and the column holds 8",
    );
    expect_refusal(
        "UPDATE vals SET amount = 2, ratio = 'NaN' WHERE id = 2",
        "row (id) = (2): column `ratio`: value `NaN` (float) cannot be stored in MySQL `double`",
    );
    expect_refusal(
        "UPDATE vals SET ratio = '-Infinity' WHERE id = 2",
        "column `ratio`: value `-Infinity` (float) cannot be stored in MySQL `double`",
    );
    expect_refusal(
        "UPDATE vals SET ratio = 1, day = 'infinity' WHERE id = 2",
        "row (id) = (2): column `day`: value `infinity` (text) cannot be stored in MySQL `date`: MySQL dates have no infinity",
    );
    expect_refusal(
        "UPDATE vals SET day = '0044-03-15 BC' WHERE id = 2",
        "row (id) = (2): column `day`: value `0044-03-15 BC` (date) cannot be stored in MySQL `date`: \
         MySQL dates run from year 1 to 9999",
    );
    expect_refusal(
        "UPDATE vals SET day = '2026-01-02', at = '2026-01-02 10:00:00.5' WHERE id = 2",
        "row (id) = (2): column `at`: value `2026-01-02 10:00:00.500000` (timestamp) cannot be stored in MySQL \
         `datetime`: it has fractional seconds beyond the column's 0 digits",
    );
    psql(
        &master,
        "UPDATE vals SET at = '2026-01-02 10:00:01' WHERE id = 2",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(
            &site,
            "SELECT id, amount, ratio, day, at FROM vals ORDER BY id"
        ),
        "1|1.50|0.5|2026-01-01|2026-01-01 10:00:00\n2|2.00|1|2026-01-02|2026-01-02 10:00:01"
    );
}

#[test]
fn mariadb_master_pulls_from_mariadb_and_sqlite_sites_and_keeps_state() {
    let master = my_create_db("my_master");
    mysql(
        &master,
        "CREATE TABLE sales (store_id VARCHAR(20) NOT NULL, id BIGINT NOT NULL, `order` VARCHAR(20), qty INT,
           price DECIMAL(12,2), updated_at VARCHAR(32) NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let my_site = my_create_db("my_master_site");
    mysql(
        &my_site,
        "CREATE TABLE sales (id BIGINT PRIMARY KEY, `order` VARCHAR(20), qty INT, price DECIMAL(12,2),
           updated_at VARCHAR(32) NOT NULL);
         INSERT INTO sales VALUES (1, 'o-1', 2, 12.50, '2026-01-02T09:00:00Z'), (2, 'o-2', 1, 0.99, '2026-01-02T09:00:01Z'),
                                  (3, NULL, NULL, NULL, '2026-01-02T09:00:02Z');",
    );
    let fleet = Fleet::new();
    let sqlite_site = fleet.path("s1.db");
    sqlite_exec(
        &sqlite_site,
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, \"order\" TEXT, qty INTEGER, price TEXT, updated_at TEXT NOT NULL);
         INSERT INTO sales VALUES (7, 'o-7', 3, '1.05', '2026-01-03T00:00:00Z');",
    );
    fleet.write_config(&sales_pull(
        &master,
        &[("m1", &my_site), ("s1", "sqlite://s1.db")],
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(
            &master,
            "SELECT store_id, id, `order`, qty, price, updated_at FROM sales ORDER BY store_id, id"
        ),
        "m1|1|o-1|2|12.50|2026-01-02T09:00:00Z\nm1|2|o-2|1|0.99|2026-01-02T09:00:01Z\n\
         m1|3|NULL|NULL|NULL|2026-01-02T09:00:02Z\ns1|7|o-7|3|1.05|2026-01-03T00:00:00Z"
    );
    // State lives in `hubsync_`-prefixed tables of the master database.
    assert_eq!(
        mysql(
            &master,
            "SELECT flow, site, rows_read, rows_written, status FROM hubsync_runs ORDER BY site"
        ),
        "sales|m1|3|3|succeeded\nsales|s1|1|1|succeeded"
    );
    assert_eq!(
        mysql(&master, "SELECT max(version) FROM hubsync_schema_version"),
        hubsync::state::SCHEMA_VERSION.to_string()
    );
    // Every migration step ran on MySQL too (v6: the runs index).
    assert_eq!(
        mysql(
            &master,
            "SELECT count(DISTINCT INDEX_NAME) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'hubsync_runs' AND INDEX_NAME IN ('hubsync_runs_by_flow_site', 'hubsync_runs_by_start')"
        ),
        "2"
    );
    // Every run lock was released (another session can take it at once).
    assert_eq!(
        mysql(
            &master,
            "SELECT IS_FREE_LOCK(CONCAT('hubsync.run.', SHA1(CONCAT('sales', CHAR(31), 'm1'))))"
        ),
        "1"
    );
    let status = fleet.hubsync(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("succeeded"), "{}", status.stdout);

    // Nothing new: the overlap is re-read, nothing is written.
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(
            &master,
            "SELECT site, rows_written FROM hubsync_runs r WHERE started_at = \
             (SELECT max(started_at) FROM hubsync_runs x WHERE x.site = r.site) ORDER BY site"
        ),
        "m1|0\ns1|0"
    );
    assert_eq!(
        sqlite_query(&sqlite_site, "SELECT count(*) FROM sales"),
        "1"
    );
}

#[test]
fn the_run_lock_on_a_mariadb_master_is_waited_for_released_and_a_live_pair_refused() {
    use hubsync::config::DbUrl;
    use hubsync::connector::{ConnectOptions, Connector};
    use hubsync::state::StateStore;
    let master = my_create_db("my_lock_master");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = DbUrl::parse(&master, None, std::path::Path::new(".")).unwrap();
        let options = ConnectOptions {
            max_connections: 2,
            connect_timeout: std::time::Duration::from_secs(10),
            acquire_timeout: std::time::Duration::from_secs(10),
            statement_timeout: None,
            create_if_missing: false,
        };
        let conn = Connector::connect(&url, &options).await.unwrap();
        let store = StateStore::open(&conn).await.unwrap();
        let none = std::collections::HashSet::new();
        let first = store.start_run(&conn, "sales", "s1", &none).await.unwrap();
        // The pair's lock is free again once the start is recorded...
        assert_eq!(
            mysql(
                &master,
                "SELECT IS_FREE_LOCK(CONCAT('hubsync.run.', SHA1(CONCAT('sales', CHAR(31), 's1'))))"
            ),
            "1"
        );
        // ...and a second start of the live pair is refused by its running row.
        let second = store.start_run(&conn, "sales", "s1", &none).await;
        match second {
            Err(hubsync::state::StateError::AlreadyRunning { run_id, .. }) => {
                assert_eq!(run_id, first)
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        // Another pair is independent.
        store.start_run(&conn, "sales", "s2", &none).await.unwrap();
        // While another session holds a pair's lock, its start waits for it.
        let holder = mysql_spawn(
            &master,
            "SELECT GET_LOCK(CONCAT('hubsync.run.', SHA1(CONCAT('sales', CHAR(31), 's3'))), 0); SELECT SLEEP(2);",
        );
        let taken = std::time::Instant::now();
        while mysql(
            &master,
            "SELECT IS_FREE_LOCK(CONCAT('hubsync.run.', SHA1(CONCAT('sales', CHAR(31), 's3'))))",
        ) != "0"
        {
            assert!(taken.elapsed().as_secs() < 10, "the other session never took the lock");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let waited = std::time::Instant::now();
        store.start_run(&conn, "sales", "s3", &none).await.unwrap();
        assert!(
            waited.elapsed() >= std::time::Duration::from_millis(900),
            "started after {:?}, while the lock was held for 2 s",
            waited.elapsed()
        );
        assert!(holder.wait_with_output().unwrap().status.success());
        conn.close().await;
    });
}

#[test]
fn zero_dates_and_nul_bytes_from_mariadb_stop_or_become_null() {
    let master = pg_create_db("my_zero_master");
    psql(
        &master,
        "CREATE TABLE bookings (store_id text NOT NULL, id int NOT NULL, arrival date, left_at timestamp,
           note text, updated_at timestamp NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let site = my_create_db("my_zero_site");
    mysql(
        &site,
        "CREATE TABLE bookings (id INT PRIMARY KEY, arrival DATE, left_at DATETIME, note VARCHAR(20),
           updated_at DATETIME(6) NOT NULL);
         INSERT INTO bookings VALUES (1, '2026-05-01', '2026-05-03 10:00:00', 'ok', '2026-01-01 00:00:00'),
                                     (2, '0000-00-00', '0000-00-00 00:00:00', 'legacy', '2026-01-01 00:00:01');",
    );
    let config = |extra: &str| {
        format!(
            "[hub]\ncircuit_breaker_failures = 100\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
             [[flow]]\nname = \"bookings\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"bookings\"\n  \
             target = \"bookings\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n{extra}"
        )
    };
    let fleet = Fleet::new();
    fleet.write_config(&config(""));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "flow `bookings` stream `bookings` site `m1`: row (store_id, id) = (m1, 2): column `arrival`: MySQL zero \
             date `0000-00-00` has no postgres form (target type `date`); set `zero_dates = \"null\"` on the stream \
             to write NULL instead"
        ),
        "{}",
        out.stdout
    );
    // The batch (rows 1 and 2) was not written.
    assert_eq!(psql(&master, "SELECT count(*) FROM bookings"), "0");

    fleet.write_config(&config("  zero_dates = \"null\"\n"));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT id, coalesce(arrival::text, 'NULL'), coalesce(left_at::text, 'NULL'), note FROM bookings ORDER BY id"
        ),
        "1|2026-05-01|2026-05-03 10:00:00|ok\n2|NULL|NULL|legacy"
    );

    // A NUL character is valid MySQL text but PostgreSQL text cannot hold it.
    mysql(
        &site,
        "UPDATE bookings SET note = CONCAT('a', CHAR(0), 'b'), updated_at = '2026-01-02 00:00:00' WHERE id = 1",
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "row (store_id, id) = (m1, 1): column `note`: text contains a NUL byte, which PostgreSQL text cannot store"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(
        psql(&master, "SELECT note FROM bookings WHERE id = 1"),
        "ok"
    );
}

#[test]
fn keys_merged_by_a_case_insensitive_collation_are_refused_naming_both() {
    // 'ABC', 'abc' and 'abc ' are three keys at PostgreSQL and one key under
    // MariaDB's utf8mb4_unicode_ci (case-insensitive, trailing spaces ignored).
    let master = pg_create_db("my_merge_master");
    psql(
        &master,
        "CREATE TABLE codes (code text PRIMARY KEY, label text, updated_at timestamptz NOT NULL);
         INSERT INTO codes VALUES ('abc', 'lower', '2026-01-01 00:00:00+00'), ('ABC', 'upper', '2026-01-01 00:00:01+00');",
    );
    let site = my_create_db("my_merge_site");
    mysql(
        &site,
        "CREATE TABLE codes (code VARCHAR(10) PRIMARY KEY, label VARCHAR(10), updated_at DATETIME(6) NOT NULL);",
    );
    let config = |batch_size: usize| {
        format!(
            "[hub]\nbatch_size = {batch_size}\ncircuit_breaker_failures = 100\n\n[master]\nurl = \"{master}\"\n\n\
             [[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
             [[flow]]\nname = \"codes\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"codes\"\n  \
             target = \"codes\"\n  primary_key = [\"code\"]\n  cursor = \"updated_at\"\n"
        )
    };
    let fleet = Fleet::new();
    // Both in one batch: the target's collation groups them and the batch
    // is refused; applied alone (in a transaction rolled back) to name the
    // row, the second one meets the first.
    fleet.write_config(&config(10));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "flow `codes` stream `codes` site `m1`: writing to site table `codes`: row (code) = (ABC): column \
             `code`: a source row would overwrite a target row with a differently spelled key: keys (ABC) and \
             (abc) are equal under the target's collation `utf8mb4_unicode_ci`"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(mysql(&site, "SELECT count(*) FROM codes"), "0");

    // One row per batch: the first is written, the second would overwrite it.
    fleet.write_config(&config(1));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "row (code) = (ABC): column `code`: a source row would overwrite a target row with a differently \
             spelled key: keys (ABC) and (abc) are equal under the target's collation `utf8mb4_unicode_ci`"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(mysql(&site, "SELECT code, label FROM codes"), "abc|lower");

    // A trailing space merges too.
    psql(
        &master,
        "UPDATE codes SET code = 'abc ', updated_at = '2026-01-02 00:00:00+00' WHERE label = 'upper'",
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("keys (abc ) and (abc) are equal under the target's collation"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_site_timezone_tag_turns_local_times_into_instants_and_back() {
    // The hotel's PMS keeps Paris wall-clock times in DATETIME columns; the
    // master keeps instants (timestamptz).
    let master = pg_create_db("my_tz_master");
    psql(
        &master,
        "CREATE TABLE stays (store_id text NOT NULL, id int NOT NULL, arrived timestamptz, updated_at timestamptz NOT NULL,
           PRIMARY KEY (store_id, id));
         CREATE TABLE notices (id int PRIMARY KEY, show_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
         INSERT INTO notices VALUES (1, '2026-07-01 10:00:00+00', '2026-01-01 00:00:00+00'),
                                    (2, '2026-12-01 10:00:00+00', '2026-01-01 00:00:01+00');",
    );
    let site = my_create_db("my_tz_site");
    mysql(
        &site,
        "CREATE TABLE stays (id INT PRIMARY KEY, arrived DATETIME, updated_at DATETIME(6) NOT NULL);
         CREATE TABLE notices (id INT PRIMARY KEY, show_at DATETIME NOT NULL, updated_at DATETIME(6) NOT NULL);
         INSERT INTO stays VALUES (1, '2026-03-29 01:30:00', '2026-01-01 00:00:00'),
                                  (2, '2026-03-29 03:30:00', '2026-01-01 00:00:01'),
                                  (3, '2026-10-25 02:30:00', '2026-01-01 00:00:02'),
                                  (4, '2026-10-25 03:30:00', '2026-01-01 00:00:03');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\ncircuit_breaker_failures = 100\n\n[master]\nurl = \"{master}\"\n\n\
         [[site]]\nid = \"paris\"\nurl = \"{site}\"\ntags = {{ timezone = \"Europe/Paris\" }}\n\n\
         [[flow]]\nname = \"stays\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"stays\"\n  \
         target = \"stays\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n\n\
         [[flow]]\nname = \"notices\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"notices\"\n  \
         target = \"notices\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n"
    ));
    fleet.sync_ok(&[]);
    // 01:30 CET (+01) = 00:30 UTC; 03:30 CEST (+02) = 01:30 UTC; 02:30 on
    // 25 October happens twice: the first (CEST, +02) = 00:30 UTC; 03:30 CET
    // (+01) = 02:30 UTC. The cursor (also a Paris DATETIME) becomes an
    // instant too: 2026-01-01 00:00:00 CET = 2025-12-31 23:00:00 UTC.
    assert_eq!(
        psql(
            &master,
            "SELECT id, arrived AT TIME ZONE 'UTC', updated_at AT TIME ZONE 'UTC' FROM stays ORDER BY id"
        ),
        "1|2026-03-29 00:30:00|2025-12-31 23:00:00\n2|2026-03-29 01:30:00|2025-12-31 23:00:01\n\
         3|2026-10-25 00:30:00|2025-12-31 23:00:02\n4|2026-10-25 02:30:00|2025-12-31 23:00:03"
    );
    // Push: instants become Paris wall-clock readings (CEST in July, CET in
    // December).
    assert_eq!(
        mysql(
            &site,
            "SELECT id, show_at, updated_at FROM notices ORDER BY id"
        ),
        "1|2026-07-01 12:00:00|2026-01-01 01:00:00.000000\n2|2026-12-01 11:00:00|2026-01-01 01:00:01.000000"
    );
    // A local time the clocks skipped cannot be an instant.
    mysql(
        &site,
        "INSERT INTO stays VALUES (5, '2026-03-29 02:30:00', '2026-01-02 00:00:00')",
    );
    let out = fleet.hubsync(&["sync", "--flow", "stays"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "flow `stays` stream `stays` site `paris`: row (store_id, id) = (paris, 5): column `arrived`: local time \
             `2026-03-29 02:30:00` does not exist in the site's time zone `Europe/Paris`"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn deletes_reach_and_leave_mariadb_both_ways() {
    // Pull from a MariaDB site into a MariaDB master with a soft-delete flag
    // and hard-delete detection; push from the master to a MariaDB site with
    // detection.
    let master = my_create_db("my_del_master");
    mysql(
        &master,
        "CREATE TABLE sales (store_id VARCHAR(20) NOT NULL, id INT NOT NULL, sku VARCHAR(10) NOT NULL,
           deleted TINYINT(1) NOT NULL, updated_at DATETIME(6) NOT NULL, PRIMARY KEY (store_id, id));
         CREATE TABLE prices (sku VARCHAR(10) PRIMARY KEY, price DECIMAL(12,2) NOT NULL, updated_at DATETIME(6) NOT NULL);
         INSERT INTO prices VALUES ('a', 1.00, '2026-01-01 00:00:00'), ('b', 2.00, '2026-01-01 00:00:01'),
                                   ('c', 3.00, '2026-01-01 00:00:02');",
    );
    let site = my_create_db("my_del_site");
    mysql(
        &site,
        "CREATE TABLE sales (id INT PRIMARY KEY, sku VARCHAR(10) NOT NULL, deleted TINYINT(1) NOT NULL DEFAULT 0,
           updated_at DATETIME(6) NOT NULL);
         CREATE TABLE prices (sku VARCHAR(10) PRIMARY KEY, price DECIMAL(12,2) NOT NULL, updated_at DATETIME(6) NOT NULL);
         INSERT INTO sales (id, sku, updated_at) VALUES (1, 'a', '2026-01-02 09:01:00'), (2, 'b', '2026-01-02 09:02:00'),
           (3, 'c', '2026-01-02 09:03:00'), (4, 'd', '2026-01-02 09:04:00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  \
         target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  \
         delete_column = \"deleted\"\n  deletes = \"detect\"\n\n\
         [[flow]]\nname = \"prices\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"prices\"\n  \
         target = \"prices\"\n  primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n  deletes = \"detect\"\n"
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(&master, "SELECT id FROM sales ORDER BY id"),
        "1\n2\n3\n4"
    );
    assert_eq!(
        mysql(&site, "SELECT sku FROM prices ORDER BY sku"),
        "a\nb\nc"
    );
    // At the site: row 2 is flagged deleted (with a new cursor value), row 4
    // is deleted outright. At the master: price `b` is deleted.
    mysql(
        &site,
        "UPDATE sales SET deleted = 1, updated_at = '2026-01-03 00:00:00' WHERE id = 2; DELETE FROM sales WHERE id = 4;",
    );
    mysql(&master, "DELETE FROM prices WHERE sku = 'b'");
    fleet.sync_ok(&[]);
    assert_eq!(mysql(&master, "SELECT id FROM sales ORDER BY id"), "1\n3");
    assert_eq!(mysql(&site, "SELECT sku FROM prices ORDER BY sku"), "a\nc");
}

#[test]
fn create_target_builds_missing_tables_and_schema_checks_catch_incompatible_columns() {
    let master = pg_create_db("my_create_master");
    psql(
        &master,
        "CREATE TABLE rates (code text PRIMARY KEY, rate numeric(12,4) NOT NULL, valid_from date,
           updated_at timestamptz NOT NULL);
         INSERT INTO rates VALUES ('EUR', 1.0000, '2026-01-01', '2026-01-01 00:00:00+00');
         CREATE TABLE visits_bad (store_id text NOT NULL, id bigint NOT NULL, guest text, paid numeric,
           at timestamptz, day integer, flag smallint, updated_at timestamp NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let site = my_create_db("my_create_site");
    mysql(
        &site,
        "CREATE TABLE visits (id BIGINT PRIMARY KEY, guest VARCHAR(40), paid DECIMAL(12,2), at TIMESTAMP(6) NULL,
           day DATE, flag TINYINT(1), updated_at DATETIME(6) NOT NULL);
         INSERT INTO visits VALUES (1, 'Zoë', 12.50, '2026-03-29 00:59:59.5', '2026-03-29', 2, '2026-01-01 00:00:00');",
    );
    let fleet = Fleet::new();
    let config = |visits_target: &str| {
        format!(
            "[hub]\ncircuit_breaker_failures = 100\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
             [[flow]]\nname = \"visits\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"visits\"\n  \
             target = \"{visits_target}\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  \
             create_target = true\n\n\
             [[flow]]\nname = \"rates\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"rates\"\n  \
             target = \"rates\"\n  primary_key = [\"code\"]\n  cursor = \"updated_at\"\n  create_target = true\n"
        )
    };
    fleet.write_config(&config("visits"));
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains(
            "warning: flow `visits` stream `visits` site `m1`: master table `visits` does not exist; the first run \
             creates it (`create_target = true`)"
        ),
        "{}",
        check.stdout
    );
    fleet.sync_ok(&[]);
    // The master's new table: the site column, then the source's columns
    // with their mapped types (TINYINT(1) is a small integer, TIMESTAMP an
    // instant, DATETIME a local date-time), keyed on (store_id, id).
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_name = 'visits'"
        ),
        "store_id text, id bigint, guest text, paid numeric, at timestamp with time zone, day date, flag smallint, \
         updated_at timestamp without time zone"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT store_id, id, guest, paid, at AT TIME ZONE 'UTC', day, flag FROM visits"
        ),
        "m1|1|Zoë|12.50|2026-03-29 00:59:59.5|2026-03-29|2"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'visits'::regclass AND contype = 'p'"
        ),
        "PRIMARY KEY (store_id, id)"
    );
    // The site's new table, by MySQL's rules: a text key is VARCHAR(191),
    // decimals DECIMAL(65,30), instants DATETIME(6) in UTC.
    assert_eq!(
        mysql(
            &site,
            "SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, ' ', COLUMN_TYPE) ORDER BY ORDINAL_POSITION SEPARATOR ', ')
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rates'"
        ),
        "code varchar(191), rate decimal(65,30), valid_from date, updated_at datetime(6)"
    );
    assert_eq!(
        mysql(
            &site,
            "SELECT code, rate, valid_from, updated_at FROM rates"
        ),
        "EUR|1.000000000000000000000000000000|2026-01-01|2026-01-01 00:00:00.000000"
    );

    // A master column whose type cannot take the source's values: `check`
    // reports it and the run stops before reading.
    fleet.write_config(&config("visits_bad"));
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    let problem = "flow `visits` stream `visits_bad` site `m1`: master table `visits_bad`: column `day`: source type `DATE` \
                   (mysql) cannot go to `integer` (postgres): a date or time cannot become a number, UUID or JSON";
    assert!(
        check.stdout.contains(&format!("problem: {problem}")),
        "{}",
        check.stdout
    );
    let out = fleet.hubsync(&["sync", "--flow", "visits"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains(problem), "{}", out.stdout);
    assert_eq!(psql(&master, "SELECT count(*) FROM visits_bad"), "0");
}

#[test]
fn decimals_a_postgres_column_would_round_or_overflow_are_refused() {
    // PostgreSQL silently rounds 1.2345 into numeric(12,2), and refuses a
    // 40-digit number in numeric(38,0) without naming the column: hubsync
    // refuses both first, naming row, column, value and both types.
    let master = pg_create_db("my_num_master");
    psql(
        &master,
        "CREATE TABLE ledger (store_id text NOT NULL, id int NOT NULL, amount numeric(12,2), total numeric(38,0),
           updated_at timestamp NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let site = my_create_db("my_num_site");
    mysql(
        &site,
        "CREATE TABLE ledger (id INT PRIMARY KEY, amount DECIMAL(12,4), total DECIMAL(40,0), updated_at DATETIME(6) NOT NULL);
         INSERT INTO ledger VALUES (1, 1.5000, 12345678901234567890123456789012345678, '2026-01-01 00:00:00'),
                                   (2, 1.2345, 1, '2026-01-01 00:00:01');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\ncircuit_breaker_failures = 100\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"ledger\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"ledger\"\n  \
         target = \"ledger\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "flow `ledger` stream `ledger` site `m1`: row (store_id, id) = (m1, 2): column `amount`: value `1.2345` \
             (numeric) cannot be stored in PostgreSQL `numeric(12,2)`: it has 4 digits after the point and the \
             column keeps 2; PostgreSQL would round it"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(psql(&master, "SELECT count(*) FROM ledger"), "0");
    mysql(
        &site,
        "UPDATE ledger SET amount = 1.2300, total = 1234567890123456789012345678901234567890 WHERE id = 2",
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "row (store_id, id) = (m1, 2): column `total`: value `1234567890123456789012345678901234567890` \
             (numeric) cannot be stored in PostgreSQL `numeric(38,0)`: it has 40 digits before the point and the \
             column holds 38"
        ),
        "{}",
        out.stdout
    );
    mysql(&site, "UPDATE ledger SET total = 7 WHERE id = 2");
    fleet.sync_ok(&[]);
    // 1.5000 and 1.2300 fit numeric(12,2) exactly (trailing zeros only).
    assert_eq!(
        psql(&master, "SELECT id, amount, total FROM ledger ORDER BY id"),
        "1|1.50|12345678901234567890123456789012345678\n2|1.23|7"
    );
}

#[test]
fn mariadb_sessions_are_utc_utf8mb4_strict_read_committed_with_the_statement_timeout() {
    // A query stream reads the session's own settings, so the master shows
    // what every hubsync session at the site runs with.
    let master = pg_create_db("my_session_master");
    psql(
        &master,
        "CREATE TABLE settings (store_id text NOT NULL, id int NOT NULL, tz text, charset text, strict int,
           isolation text, max_time double precision, updated_at timestamp NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let site = my_create_db("my_session_site");
    mysql(
        &site,
        "CREATE TABLE one (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL);
         INSERT INTO one VALUES (1, '2026-01-01 00:00:00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\nstatement_timeout = \"7s\"\n\n[master]\nurl = \"{master}\"\n\n\
         [[site]]\nid = \"m1\"\nurl = \"{site}\"\nstatement_timeout = \"2500ms\"\n\n\
         [[flow]]\nname = \"settings\"\ndirection = \"pull\"\n  [[flow.stream]]\n  \
         query = \"SELECT id, @@session.time_zone AS tz, @@character_set_client AS charset, \
         @@session.sql_mode LIKE '%STRICT_ALL_TABLES%' AS strict, @@session.tx_isolation AS isolation, \
         @@session.max_statement_time AS max_time, updated_at FROM one\"\n  \
         target = \"settings\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT tz, charset, strict, isolation, max_time FROM settings"
        ),
        "+00:00|utf8mb4|1|READ-COMMITTED|2.5"
    );
}

#[test]
fn a_mariadb_master_pushes_routed_rows_page_by_page() {
    // `:site.zone` becomes a positional `?` bound before the keyset's own
    // parameters; batch_size 1 makes every page resume after a position.
    let master = my_create_db("my_route_master");
    mysql(
        &master,
        "CREATE TABLE prices (sku VARCHAR(20) NOT NULL, zone VARCHAR(5) NOT NULL, price DECIMAL(12,2) NOT NULL,
           updated_at DATETIME(6) NOT NULL, PRIMARY KEY (sku, zone));
         INSERT INTO prices VALUES ('apple', 'A', 1.10, '2026-01-01 00:00:00'), ('pear', 'A', 2.20, '2026-01-01 00:00:00'),
           ('fig', 'A', 3.30, '2026-01-01 00:00:01'), ('apple', 'B', 1.15, '2026-01-01 00:00:00');",
    );
    let fleet = Fleet::new();
    let s1 = fleet.path("s1.db");
    sqlite_exec(
        &s1,
        "CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT NOT NULL, updated_at TEXT NOT NULL);",
    );
    let site_b = my_create_db("my_route_b");
    mysql(&site_b, MY_SITE_PRICES);
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 1\n\n[master]\nurl = \"{master}\"\n\n\
         [[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\ntags = {{ zone = \"A\" }}\n\n\
         [[site]]\nid = \"m2\"\nurl = \"{site_b}\"\ntags = {{ zone = \"B\" }}\n\n\
         [[flow]]\nname = \"prices\"\ndirection = \"push\"\n  [[flow.stream]]\n  \
         query = \"SELECT sku, price, updated_at FROM prices WHERE zone = :site.zone # the site's zone\"\n  \
         target = \"prices\"\n  primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n"
    ));
    fleet.sync_ok(&[]);
    // Two rows share the cursor 00:00:00 in zone A: ties span pages.
    assert_eq!(
        sqlite_query(
            &s1,
            "SELECT sku, price, updated_at FROM prices ORDER BY sku"
        ),
        "apple|1.10|2026-01-01 00:00:00.000000\nfig|3.30|2026-01-01 00:00:01.000000\npear|2.20|2026-01-01 00:00:00.000000"
    );
    assert_eq!(
        mysql(&site_b, "SELECT sku, price FROM prices"),
        "apple|1.15"
    );
    assert_eq!(
        mysql(
            &master,
            "SELECT site, rows_read, rows_written FROM hubsync_runs ORDER BY site"
        ),
        "m2|1|1\ns1|3|3"
    );
}

#[test]
fn two_syncs_at_once_on_a_mariadb_master_never_run_a_pair_twice() {
    // Two hub processes start the same pass together. GET_LOCK serialises
    // each (flow, site) start; the loser of a pair sees the winner's live
    // run and skips it. No two runs of a pair may overlap in the history,
    // and the master ends exact.
    let master = my_create_db("my_two_master");
    mysql(
        &master,
        "CREATE TABLE sales (store_id VARCHAR(20) NOT NULL, id INT NOT NULL, qty INT NOT NULL,
           updated_at VARCHAR(32) NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    let mut sites = Vec::new();
    for n in 1..=4 {
        let db = fleet.path(&format!("s{n}.db"));
        sqlite_exec(
            &db,
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, updated_at TEXT NOT NULL);
             WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 300)
             INSERT INTO sales SELECT i, i % 7, printf('2026-01-02T09:%02d:%02d.000000Z', i / 60, i % 60) FROM seq;",
        );
        sites.push((format!("s{n}"), format!("sqlite://s{n}.db")));
    }
    let site_refs: Vec<(&str, &str)> = sites
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    fleet.write_config(&sales_pull(&master, &site_refs));
    let first = fleet.spawn(&["sync"]);
    let second = fleet.spawn(&["sync"]);
    for child in [first, second] {
        let out = child.wait_with_output().expect("wait for hubsync");
        let code = out.status.code().unwrap_or(-1);
        // 1 when some pair was skipped because the other hub had it; any
        // other failure (a lock or migration error) is a bug.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(code == 0 || code == 1, "{out:?}");
        for line in stdout
            .lines()
            .filter(|l| l.starts_with("flow `sales` site"))
        {
            assert!(line.contains(": already running (run "), "{line}");
        }
    }
    assert_eq!(
        mysql(
            &master,
            "SELECT store_id, count(*), sum(qty) FROM sales GROUP BY store_id ORDER BY store_id"
        ),
        // 300 rows per store; qty = i % 7 sums to 42 * 21 + (1+2+...+6) = 882 + 21 = 903.
        "s1|300|903\ns2|300|903\ns3|300|903\ns4|300|903"
    );
    assert_eq!(
        mysql(
            &master,
            "SELECT count(*) FROM hubsync_runs a JOIN hubsync_runs b ON a.flow = b.flow AND a.site = b.site \
             AND a.run_id < b.run_id AND a.status <> 'skipped' AND b.status <> 'skipped' \
             AND a.started_at < coalesce(b.finished_at, NOW(6)) AND b.started_at < coalesce(a.finished_at, NOW(6))"
        ),
        "0"
    );
    assert_eq!(
        mysql(
            &master,
            "SELECT count(*) FROM hubsync_runs WHERE status NOT IN ('succeeded', 'skipped')"
        ),
        "0"
    );
}

#[test]
fn json_at_a_mariadb_target_is_compared_by_meaning() {
    // The site already holds the document with other key order, spacing
    // and number spelling: equal by meaning, so the push writes nothing and
    // the site keeps its own spelling. A real change is written.
    let master = pg_create_db("my_json_master");
    psql(
        &master,
        "CREATE TABLE docs (id int PRIMARY KEY, doc jsonb, updated_at timestamptz NOT NULL);
         INSERT INTO docs VALUES (1, '{\"a\": 1, \"b\": [1, 2.50]}', '2026-01-01 00:00:00+00');",
    );
    let site = my_create_db("my_json_site");
    mysql(
        &site,
        "CREATE TABLE docs (id INT PRIMARY KEY, doc JSON, updated_at DATETIME(6) NOT NULL);
         INSERT INTO docs VALUES (1, '{\"b\":[1,2.5],\"a\":1}', '2026-01-01 00:00:00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"docs\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"docs\"\n  \
         target = \"docs\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n"
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT rows_read, rows_written FROM hubsync.runs"),
        "1|0"
    );
    assert_eq!(
        mysql(&site, "SELECT doc FROM docs"),
        "{\"b\":[1,2.5],\"a\":1}"
    );
    psql(
        &master,
        "UPDATE docs SET doc = '{\"a\": 1, \"b\": [1, 2.51]}', updated_at = '2026-01-02 00:00:00+00'",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(&site, "SELECT doc FROM docs"),
        "{\"a\": 1, \"b\": [1, 2.51]}"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT rows_read, rows_written FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "1|1"
    );
}

#[test]
fn tinyint1_is_a_small_integer_unless_the_stream_lists_it_in_booleans() {
    let master = pg_create_db("my_bool_master");
    let site = my_create_db("my_bool_site");
    mysql(
        &site,
        "CREATE TABLE orders (id INT PRIMARY KEY, paid TINYINT(1) NOT NULL, flag TINYINT(1), updated_at DATETIME(6) NOT NULL);
         INSERT INTO orders VALUES (1, 1, 5, '2026-01-01 00:00:00'), (2, 0, -128, '2026-01-01 00:00:01');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\ncircuit_breaker_failures = 100\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"orders\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"orders\"\n  \
         target = \"orders\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  \
         create_target = true\n  booleans = [\"paid\"]\n"
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_name = 'orders'"
        ),
        "store_id text, id integer, paid boolean, flag smallint, updated_at timestamp without time zone"
    );
    assert_eq!(
        psql(&master, "SELECT id, paid, flag FROM orders ORDER BY id"),
        "1|t|5\n2|f|-128"
    );
    mysql(
        &site,
        "UPDATE orders SET paid = 2, updated_at = '2026-01-02 00:00:00' WHERE id = 2",
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "flow `orders` stream `orders` site `m1`: row (store_id, id) = (m1, 2): column `paid`: value `2` (integer) \
             is not a boolean (0 or 1), and the stream lists it in `booleans`"
        ),
        "{}",
        out.stdout
    );
}

/// Regressions (fresh-user trial): SQLite text date-times lost their
/// fraction in a MariaDB `DATETIME` and their offset in a PostgreSQL
/// `timestamp`; a double was rounded into a MariaDB `FLOAT`.
#[test]
fn text_date_times_and_floats_are_not_bent_on_the_way() {
    // SQLite site -> PostgreSQL master `timestamp`: the offset is honoured.
    let pg_master = pg_create_db("trial_fix_pg");
    psql(
        &pg_master,
        "CREATE TABLE ev (store_id text, id int, at timestamp, updated_at text, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    let pull = |master: &str| {
        format!(
            "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\n\n\
             [[flow]]\nname = \"ev\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"ev\"\n  target = \"ev\"\n  \
             primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
        )
    };
    fleet.write_config(&pull(&pg_master));
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE ev (id INTEGER PRIMARY KEY, at TEXT, updated_at TEXT);
         INSERT INTO ev VALUES (1, '2026-01-02T10:00:00+02:00', '2026-01-02T00:00:00Z'),
                               (2, '2026-01-02 10:00:00.25', '2026-01-02T00:00:01Z');",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&pg_master, "SELECT id || ' ' || at FROM ev ORDER BY id"),
        "1 2026-01-02 08:00:00\n2 2026-01-02 10:00:00.25"
    );

    // The same text into a MariaDB DATETIME (no fraction): refused, not cut.
    let my_master = my_create_db("trial_fix_my");
    mysql(
        &my_master,
        "CREATE TABLE ev (store_id VARCHAR(10), id INT, at DATETIME, updated_at VARCHAR(40), PRIMARY KEY (store_id, id));",
    );
    fleet.write_config(&pull(&my_master));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("column `at`") && out.stdout.contains("fraction"),
        "{}",
        out.stdout
    );
    assert_eq!(mysql(&my_master, "SELECT count(*) FROM ev"), "0");

    // A double into a MariaDB FLOAT: refused.
    mysql(
        &my_master,
        "CREATE TABLE f (id INT PRIMARY KEY, v FLOAT, updated_at VARCHAR(40));",
    );
    let pg_source = pg_create_db("trial_fix_src");
    psql(
        &pg_source,
        "CREATE TABLE f (id int PRIMARY KEY, v double precision, updated_at text);
         INSERT INTO f VALUES (1, 0.1, '2026-01-01');",
    );
    fleet.write_config(&format!(
        "[master]\nurl = \"{pg_source}\"\n\n[[site]]\nid = \"m\"\nurl = \"{my_master}\"\n\n\
         [[flow]]\nname = \"f\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"f\"\n  target = \"f\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n"
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("declare the column DOUBLE"),
        "{}",
        out.stdout
    );
    assert_eq!(mysql(&my_master, "SELECT count(*) FROM f"), "0");
}

/// Regression (fresh-user trial): MariaDB column names are case-insensitive,
/// but `check` and `sync` matched them exactly, so a PostgreSQL column `"Key"`
/// could not reach a MariaDB column `key`.
#[test]
fn mariadb_column_names_match_whatever_their_case() {
    let master = pg_create_db("case_master");
    psql(
        &master,
        r#"CREATE TABLE lc ("Key" text PRIMARY KEY, "Price" numeric(6,2), updated_at text);
           INSERT INTO lc VALUES ('A1', 1.50, '2026-01-01'), ('b2', 2.25, '2026-01-02');"#,
    );
    let site = my_create_db("case_site");
    mysql(
        &site,
        "CREATE TABLE lc (`key` VARCHAR(10) PRIMARY KEY, price DECIMAL(6,2), UPDATED_AT VARCHAR(20));",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"lc\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"lc\"\n  target = \"lc\"\n  \
         primary_key = [\"Key\"]\n  cursor = \"updated_at\"\n"
    ));
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(
            &site,
            "SELECT `key`, price, UPDATED_AT FROM lc ORDER BY `key`"
        ),
        "A1|1.50|2026-01-01\nb2|2.25|2026-01-02"
    );
}

/// Issue 12, item 5: `TINYINT(1) UNSIGNED` arrived as a signed byte (255 as
/// -1, 200 as -56). Every unsigned width, with and without a display width
/// (and `ZEROFILL`, which implies `UNSIGNED`), arrives exactly in a
/// PostgreSQL and a SQLite master that `create_target` builds; a
/// `TINYINT(1) UNSIGNED` listed in `booleans` is still read as a boolean,
/// and a signed `TINYINT(1)` keeps its sign.
#[test]
fn unsigned_integers_of_every_width_arrive_exactly() {
    let site = my_create_db("my_unsigned_site");
    mysql(
        &site,
        "CREATE TABLE counters (id INT PRIMARY KEY, t1 TINYINT(1) UNSIGNED, t TINYINT UNSIGNED,
           z1 TINYINT(1) ZEROFILL, s1 SMALLINT(1) UNSIGNED, s SMALLINT UNSIGNED, m1 MEDIUMINT(1) UNSIGNED,
           m MEDIUMINT UNSIGNED, i1 INT(1) UNSIGNED, i INT UNSIGNED, b1 BIGINT(1) UNSIGNED, b BIGINT UNSIGNED,
           paid TINYINT(1) UNSIGNED, signed1 TINYINT(1), updated_at DATETIME(6) NOT NULL);
         INSERT INTO counters VALUES
           (1, 255, 255, 255, 65535, 65535, 16777215, 16777215, 4294967295, 4294967295,
            18446744073709551615, 18446744073709551615, 1, -128, '2026-01-01 00:00:00'),
           (2, 200, 200, 128, 32768, 32768, 8388608, 8388608, 2147483648, 2147483648,
            9223372036854775808, 9223372036854775808, 0, 127, '2026-01-01 00:00:01'),
           (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, -1, '2026-01-01 00:00:02');",
    );
    let pull = |master: &str| {
        format!(
            "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
             [[flow]]\nname = \"counters\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"counters\"\n  \
             target = \"counters\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  \
             create_target = true\n  booleans = [\"paid\"]\n"
        )
    };
    let values =
        "SELECT id, t1, t, z1, s1, s, m1, m, i1, i, b1, b, paid, signed1 FROM counters ORDER BY id";

    let pg_master = pg_create_db("my_unsigned_pg");
    let fleet = Fleet::new();
    fleet.write_config(&pull(&pg_master));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&pg_master, values),
        "1|255|255|255|65535|65535|16777215|16777215|4294967295|4294967295|18446744073709551615|18446744073709551615|t|-128\n\
         2|200|200|128|32768|32768|8388608|8388608|2147483648|2147483648|9223372036854775808|9223372036854775808|f|127\n\
         3|0|0|0|0|0|0|0|0|0|0|0||-1"
    );
    assert_eq!(
        psql(
            &pg_master,
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_name = 'counters' AND column_name NOT IN ('store_id', 'updated_at')"
        ),
        "id integer, t1 smallint, t smallint, z1 smallint, s1 integer, s integer, m1 integer, m integer, i1 bigint, \
         i bigint, b1 numeric, b numeric, paid boolean, signed1 smallint"
    );

    let lite = Fleet::new();
    lite.write_config(&pull("sqlite://master.db"));
    lite.sync_ok(&[]);
    assert_eq!(
        sqlite_query(&lite.path("master.db"), values),
        "1|255|255|255|65535|65535|16777215|16777215|4294967295|4294967295|18446744073709551615|18446744073709551615|t|-128\n\
         2|200|200|128|32768|32768|8388608|8388608|2147483648|2147483648|9223372036854775808|9223372036854775808|f|127\n\
         3|0|0|0|0|0|0|0|0|0|0|0|NULL|-1"
    );
}

/// A checkpoint is written only over the one its writer expects: a stale
/// writer, one expecting none where one is stored, and a position moving
/// back are refused and change nothing (`common::checkpoint_compare_and_set`).
#[test]
fn a_stale_checkpoint_writer_is_refused_on_a_mariadb_master() {
    let master = my_create_db("cas_master");
    common::checkpoint_compare_and_set(&master, std::path::Path::new("."));
}

/// A site's initial load into a MariaDB table holding none of its rows is
/// inserted with plain multi-row INSERTs (no existing-key count, no
/// collation check); a key that turns up twice anyway (a `query` whose two
/// halves both hold id 1, in one-row batches) makes that batch fall back to
/// the upsert on MySQL error 1062: the later row wins, nothing fails. A
/// second run upserts: one changed row is one row written.
#[test]
fn an_initial_load_into_mariadb_falls_back_to_the_upsert_when_a_key_repeats() {
    let master = my_create_db("my_load_master");
    mysql(
        &master,
        "CREATE TABLE sales (store_id VARCHAR(10), id INT, qty INT, updated_at DATETIME(6),
                             PRIMARY KEY (store_id, id));",
    );
    let site = pg_create_db("my_load_site");
    psql(
        &site,
        "CREATE TABLE a (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
         CREATE TABLE b (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
         INSERT INTO a VALUES (1, 10, '2026-01-01 00:00:01+00'), (2, 20, '2026-01-01 00:00:02+00');
         INSERT INTO b VALUES (1, 11, '2026-01-01 00:00:03+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 1\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"s1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  \
         query = \"SELECT id, qty, updated_at FROM a UNION ALL SELECT id, qty, updated_at FROM b\"\n  \
         target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  \
         cursor_lag = \"0s\"\n"
    ));
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|11\n2|20"
    );
    psql(
        &site,
        "UPDATE a SET qty = 21, updated_at = '2026-01-01 00:00:04+00' WHERE id = 2;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|11\n2|21"
    );
    assert_eq!(
        mysql(
            &master,
            "SELECT rows_written FROM hubsync_runs WHERE status = 'succeeded' ORDER BY rows_written"
        ),
        // The second run: (2, 21) changed, (1, 11) re-read at the saved
        // cursor value and unchanged. The first: three rows, the third
        // through the fallback.
        "1\n3"
    );
}

/// Found by a fresh-user trial (data lost): an `AUTO_INCREMENT` id as the
/// cursor of a MariaDB site. Session A inserts id 3 and stays open; session
/// B commits id 4; the hub syncs and reads 1, 2, 4; A commits. Id 3 must
/// arrive: the gap holds the next run's start at 2. Then a rolled-back
/// insert takes id 5 for good: the run after it starts at 4 again (the gap
/// is waited for), and once `cursor_lag` (1 s) has passed the next run
/// gives it up and starts at 6.
#[test]
fn a_late_insert_under_an_auto_increment_cursor_arrives_and_a_rolled_back_id_is_given_up() {
    let site = my_create_db("gap_site");
    let master = pg_create_db("gap_master");
    mysql(
        &site,
        "CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(20) NOT NULL);
         INSERT INTO events (payload) VALUES ('one'), ('two');",
    );
    psql(
        &master,
        "CREATE TABLE events (store_id text, id bigint, payload text, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"events\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"events\"\n  \
         target = \"events\"\n  primary_key = [\"id\"]\n  cursor = \"id\"\n  site_column = \"store_id\"\n  \
         cursor_lag = \"1s\"\n"
    ));
    fleet.sync_ok(&[]);
    let rows = || {
        psql(
            &master,
            "SELECT string_agg(id || ' ' || payload, ', ' ORDER BY id) FROM events",
        )
    };
    let checkpoint = || {
        psql(
            &master,
            "SELECT (position::jsonb -> 0 ->> 'v') || ' from ' || (resume_from::jsonb ->> 'v') || ' ' \
             || coalesce(left(snapshot, 5), '-') FROM hubsync.checkpoints",
        )
    };
    assert_eq!(rows(), "1 one, 2 two");

    let mut late = mysql_spawn(
        &site,
        "BEGIN; INSERT INTO events (payload) VALUES ('late'); DO SLEEP(4); COMMIT;",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while mysql(
        &site,
        "SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'DO SLEEP%'",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the late insert did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        mysql(
            &site,
            "INSERT INTO events (payload) VALUES ('early'); SELECT LAST_INSERT_ID();"
        ),
        "4"
    );
    fleet.sync_ok(&[]);
    assert_eq!(rows(), "1 one, 2 two, 4 early");
    assert_eq!(checkpoint(), "4 from 2 gaps:");
    assert!(late.wait().unwrap().success());
    fleet.sync_ok(&[]);
    assert_eq!(rows(), "1 one, 2 two, 3 late, 4 early");
    assert_eq!(checkpoint(), "4 from 4 -");

    // Id 5 is rolled back: a gap that never fills.
    mysql(
        &site,
        "BEGIN; INSERT INTO events (payload) VALUES ('gone'); ROLLBACK;
         INSERT INTO events (payload) VALUES ('six');",
    );
    fleet.sync_ok(&[]);
    assert_eq!(rows(), "1 one, 2 two, 3 late, 4 early, 6 six");
    assert_eq!(checkpoint(), "6 from 4 gaps:");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    fleet.sync_ok(&[]);
    assert_eq!(checkpoint(), "6 from 6 -");
    // The run that moved past id 5 says so: something to alert on.
    assert_eq!(
        psql(
            &master,
            "SELECT note FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "stream `events`: 1 missing ids of cursor `id` given up after waiting `cursor_lag` (1s): rows of a \
         transaction that took one and commits later are not read (a `reset` backfill finds them); rolled-back \
         inserts and deleted rows leave such gaps too"
    );
    mysql(&site, "INSERT INTO events (payload) VALUES ('seven');");
    fleet.sync_ok(&[]);
    assert_eq!(rows(), "1 one, 2 two, 3 late, 4 early, 6 six, 7 seven");
}

/// Regression (fresh-user trial): with `create_target` in a mixed fleet the
/// master column's type depended on which site ran first, and a MariaDB
/// site's `TINYINT(1)` first made it `smallint`, into which a PostgreSQL
/// site's `boolean` then failed every run ("invalid input syntax for type
/// smallint: "f""). Now a boolean into an integer column is 1/0, so both
/// orders carry both sites' rows: MariaDB first makes `paid smallint` and
/// both sites arrive as 1/0; PostgreSQL first makes `paid boolean` and both
/// arrive as true/false (a `TINYINT(1)` 0/1 into `boolean`).
#[test]
fn a_mixed_fleet_carries_booleans_whichever_site_creates_the_master_table() {
    let my_site = my_create_db("fx_bool_my");
    let pg_site = pg_create_db("fx_bool_pg");
    mysql(
        &my_site,
        "CREATE TABLE orders (id INT PRIMARY KEY, paid TINYINT(1), updated_at DATETIME(6) NOT NULL);
         INSERT INTO orders VALUES (1, 1, '2026-01-01 00:00:00'), (2, 0, '2026-01-01 00:00:01');",
    );
    psql(
        &pg_site,
        "CREATE TABLE orders (id int PRIMARY KEY, paid boolean, updated_at timestamp NOT NULL);
         INSERT INTO orders VALUES (1, false, '2026-01-01 00:00:00'), (2, true, '2026-01-01 00:00:01'),
                                   (3, NULL, '2026-01-01 00:00:02');",
    );
    let column_type = "SELECT data_type FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'paid'";
    let rows = "SELECT store_id, id, paid FROM orders ORDER BY store_id, id";
    for (first, second, created, expected) in [
        (
            "my",
            "pg",
            "smallint",
            "my|1|1\nmy|2|0\npg|1|0\npg|2|1\npg|3|",
        ),
        (
            "pg",
            "my",
            "boolean",
            "my|1|t\nmy|2|f\npg|1|f\npg|2|t\npg|3|",
        ),
    ] {
        let master = pg_create_db("fx_bool_mixed_master");
        let fleet = Fleet::new();
        fleet.write_config(&format!(
            "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"my\"\nurl = \"{my_site}\"\n\n\
             [[site]]\nid = \"pg\"\nurl = \"{pg_site}\"\n\n\
             [[flow]]\nname = \"orders\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"orders\"\n  \
             target = \"orders\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  \
             create_target = true\n"
        ));
        fleet.sync_ok(&["--site", first]);
        assert_eq!(psql(&master, column_type), created, "{first} first");
        fleet.sync_ok(&["--site", second]);
        assert_eq!(psql(&master, rows), expected, "{first} first");
        // Every later run succeeds too (the trial's failed every run).
        fleet.sync_ok(&[]);
    }
}

/// Found by a fresh-user trial: a target column that is NOT NULL without a
/// default, which the stream does not write, passed `check`, and then
/// every row failed. `check` now warns of it, at a PostgreSQL master (pull)
/// and at a MariaDB site (push), and not of columns that fill themselves
/// (a default, an identity, `AUTO_INCREMENT`, a generated column) or may be
/// NULL.
#[test]
fn check_warns_of_a_not_null_column_without_default_that_the_stream_leaves_out() {
    let site = my_create_db("req_site");
    let master = pg_create_db("req_master");
    mysql(
        &site,
        "CREATE TABLE sales (id INT PRIMARY KEY, qty INT NOT NULL, updated_at DATETIME(6) NOT NULL);
         CREATE TABLE prices (sku VARCHAR(20) PRIMARY KEY, price DECIMAL(12,2) NOT NULL, updated_at DATETIME(6) NOT NULL,
           shelf VARCHAR(10) NOT NULL, aisle INT NOT NULL DEFAULT 1, seq BIGINT NOT NULL AUTO_INCREMENT UNIQUE,
           label VARCHAR(30) AS (concat('p-', sku)) VIRTUAL, note TEXT);",
    );
    psql(
        &master,
        "CREATE TABLE sales (store_id text NOT NULL, id int NOT NULL, qty int NOT NULL, updated_at timestamp NOT NULL,
           region text NOT NULL, status text NOT NULL DEFAULT 'new', n bigint GENERATED ALWAYS AS IDENTITY,
           total int GENERATED ALWAYS AS (qty * 2) STORED, note text, PRIMARY KEY (store_id, id));
         CREATE TABLE prices (sku text PRIMARY KEY, price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n\n\
         [[flow]]\nname = \"prices\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"prices\"\n  target = \"prices\"\n  \
         primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n"
    ));
    let out = fleet.hubsync(&["check"]);
    let warned: Vec<&str> = (out.stdout.lines().chain(out.stderr.lines()))
        .filter(|line| line.contains("NOT NULL without a default"))
        .collect();
    assert_eq!(warned.len(), 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        warned[0].contains("master table `sales`: column `region` is NOT NULL without a default")
            || warned[1]
                .contains("master table `sales`: column `region` is NOT NULL without a default"),
        "{warned:?}"
    );
    assert!(
        warned
            .iter()
            .any(|w| w.contains("table `prices`: column `shelf` is NOT NULL")),
        "{warned:?}"
    );
}

/// Found by a fresh-user trial: on a MariaDB site whose `DATETIME` cursor
/// the application sets, one row stamped an hour ahead (a till whose clock
/// runs fast) moves the checkpoint into the future, and rows stamped
/// correctly after it are not read until a `reset`, while every run said
/// `succeeded`. A run now says so in its note; `reset` then brings them.
#[test]
fn a_future_stamped_datetime_checkpoint_is_noted_and_reset_recovers_the_rows_below_it() {
    let site = my_create_db("future_site");
    let master = pg_create_db("future_master");
    mysql(
        &site,
        "CREATE TABLE sales (id INT PRIMARY KEY, qty INT NOT NULL, updated_at DATETIME(6) NOT NULL);
         INSERT INTO sales VALUES (1, 10, utc_timestamp(6) - INTERVAL 1 MINUTE),
           (2, 20, utc_timestamp(6) + INTERVAL 1 HOUR);",
    );
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamp, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"m1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n"
    ));
    fleet.sync_ok(&[]);
    mysql(&site, "INSERT INTO sales VALUES (3, 30, utc_timestamp(6));");
    fleet.sync_ok(&[]);
    let ids = || {
        psql(
            &master,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM sales",
        )
    };
    assert_eq!(ids(), "1,2");
    let note = psql(
        &master,
        "SELECT note FROM hubsync.runs ORDER BY started_at DESC LIMIT 1",
    );
    assert!(
        note.contains(", UTC) is behind the checkpoint's cursor"),
        "{note}"
    );
    let out = fleet.hubsync(&["reset", "--flow", "sales"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    fleet.sync_ok(&[]);
    assert_eq!(ids(), "1,2,3");
}
