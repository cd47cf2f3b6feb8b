//! Transforms (`compute` and `filter`): SQLite and PostgreSQL sites keep
//! `amount_cents INTEGER` and local time; the PostgreSQL master keeps
//! `amount NUMERIC(12,2)` and UTC instants, plus the site's region and a
//! constant. Expected rows are worked out by hand from the inserted data.

mod common;

use common::{Fleet, pg_create_db, psql, sqlite_exec};

const MASTER_SALES: &str = "
CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, amount numeric(12,2) NOT NULL,
  sold_at timestamptz NOT NULL, region text NOT NULL, source text NOT NULL, status text NOT NULL,
  updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, id));";

const SQLITE_SALES: &str =
    "CREATE TABLE sales (id INTEGER PRIMARY KEY, amount_cents INTEGER, status TEXT NOT NULL,
  sold_at DATETIME NOT NULL, updated_at TEXT NOT NULL);";

const PG_SITE_SALES: &str =
    "CREATE TABLE sales (id bigint PRIMARY KEY, amount_cents integer, status text NOT NULL,
  sold_at timestamp NOT NULL, updated_at timestamptz NOT NULL);";

/// The stream's transforms (TOML lines inside `[[flow.stream]]`).
const TRANSFORMS: &str = r#"filter = "row.status != 'void'"
  [flow.stream.compute]
  amount = "decimal(row.amount_cents) / 100"
  sold_at = "timestamp_utc(row.sold_at, site.tags.timezone)"
  region = "site.tags.region"
  source = "'pos'""#;

fn config(master: &str, sites: &str, stream_extra: &str, transforms: &str) -> String {
    format!(
        "[hub]\nbatch_size = 2\n[master]\nurl = \"{master}\"\n{sites}\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  {stream_extra}\n  {transforms}\n"
    )
}

fn site(id: &str, url: &str, zone: &str, region: &str) -> String {
    format!(
        "[[site]]\nid = \"{id}\"\nurl = \"{url}\"\ntags = {{ timezone = \"{zone}\", region = \"{region}\" }}\n"
    )
}

const MASTER_ROWS: &str =
    "SELECT store_id, id, amount, sold_at, region, source, status FROM sales ORDER BY store_id, id";

#[test]
fn sqlite_and_postgres_sites_pull_computed_columns_and_filtered_rows() {
    let master = pg_create_db("tf_master");
    psql(&master, MASTER_SALES);
    let pg_site = pg_create_db("tf_site");
    psql(&pg_site, PG_SITE_SALES);
    let fleet = Fleet::new();
    sqlite_exec(&fleet.path("s1.db"), SQLITE_SALES);
    // Paris: 2026-03-29 02:00 -> 03:00 (UTC+1 -> UTC+2); 2026-10-25 03:00 -> 02:00.
    // Rows in cursor order 1, 2, 4, 3, 5: with 2-row batches the last batch
    // holds only row 5, which the filter drops.
    sqlite_exec(
        &fleet.path("s1.db"),
        "INSERT INTO sales VALUES
           (1, 1999, 'paid', '2026-03-29 01:30:00', '2026-01-02T09:00:00.000000Z'),
           (2, -5, 'refund', '2026-03-29 03:30:00', '2026-01-02T09:00:01.000000Z'),
           (4, 1, 'paid', '2026-10-25 02:30:00', '2026-01-02T09:00:02.000000Z'),
           (3, 500, 'void', '2026-10-25 03:30:00', '2026-01-02T09:00:03.000000Z'),
           (5, 700, 'void', '2026-10-25 04:30:00', '2026-01-02T09:00:04.000000Z');",
    );
    // New York: 2026-03-08 02:00 -> 03:00 (UTC-5 -> UTC-4).
    psql(
        &pg_site,
        "INSERT INTO sales VALUES
           (1, 250, 'paid', '2026-03-08 01:30:00', '2026-01-02 09:00:00+00'),
           (2, 99, 'void', '2026-03-08 03:30:00', '2026-01-02 09:00:01+00'),
           (3, 100000, 'paid', '2026-07-04 12:00:00', '2026-01-02 09:00:02+00');",
    );
    let sites = site("s1", "sqlite://s1.db", "Europe/Paris", "north")
        + &site("s2", &pg_site, "America/New_York", "south");
    fleet.write_config(&config(&master, &sites, "", TRANSFORMS));
    let check = fleet.hubsync(&["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    fleet.sync_ok(&[]);
    // 1999 cents = 19.99; -5 = -0.05; 1 = 0.01; 250 = 2.50; 100000 = 1000.00.
    // s1 01:30 Paris (UTC+1) = 00:30Z; 03:30 (UTC+2) = 01:30Z; 02:30 on
    // 2026-10-25 happens twice, the first (UTC+2) is taken = 00:30Z.
    // s2 01:30 New York (UTC-5) = 06:30Z; 2026-07-04 12:00 (UTC-4) = 16:00Z.
    assert_eq!(
        psql(&master, MASTER_ROWS),
        "s1|1|19.99|2026-03-29 00:30:00+00|north|pos|paid\n\
         s1|2|-0.05|2026-03-29 01:30:00+00|north|pos|refund\n\
         s1|4|0.01|2026-10-25 00:30:00+00|north|pos|paid\n\
         s2|1|2.50|2026-03-08 06:30:00+00|south|pos|paid\n\
         s2|3|1000.00|2026-07-04 16:00:00+00|south|pos|paid"
    );
    // Filtered rows are read and counted in the note, not written.
    assert_eq!(
        psql(
            &master,
            "SELECT site, rows_read, rows_written, note FROM hubsync.runs ORDER BY site"
        ),
        "s1|5|3|stream `sales`: 2 rows left out by the stream's `filter`\n\
         s2|3|2|stream `sales`: 1 row left out by the stream's `filter`"
    );
    // The checkpoint passed the dropped last rows: s1's is row 5's, s2's row 3's.
    assert_eq!(
        psql(
            &master,
            "SELECT site, position FROM hubsync.checkpoints ORDER BY site"
        ),
        "s1|[{\"t\":\"text\",\"v\":\"2026-01-02T09:00:04.000000Z\"},{\"t\":\"int\",\"v\":5}]\n\
         s2|[{\"t\":\"timestamp_tz\",\"v\":\"2026-01-02T09:00:02Z\"},{\"t\":\"int\",\"v\":3}]"
    );
    // A void row turned paid at the store arrives at the next sync.
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET status = 'paid', updated_at = '2026-01-02T09:00:10.000000Z' WHERE id = 3;",
    );
    fleet.sync_ok(&["--site", "s1"]);
    assert_eq!(
        psql(
            &master,
            "SELECT amount, sold_at FROM sales WHERE store_id = 's1' AND id = 3"
        ),
        "5.00|2026-10-25 02:30:00+00"
    );
}

fn failing_fleet(on_error: &str) -> (Fleet, String) {
    let master = pg_create_db("tf_fail_master");
    psql(&master, MASTER_SALES);
    let fleet = Fleet::new();
    sqlite_exec(&fleet.path("s1.db"), SQLITE_SALES);
    // Row 2 has no amount: `decimal(row.amount_cents)` cannot take a NULL.
    sqlite_exec(
        &fleet.path("s1.db"),
        "INSERT INTO sales VALUES
           (1, 1000, 'paid', '2026-05-01 10:00:00', '2026-01-02T09:00:00.000000Z'),
           (2, NULL, 'paid', '2026-05-01 11:00:00', '2026-01-02T09:00:01.000000Z'),
           (3, 2000, 'paid', '2026-05-01 12:00:00', '2026-01-02T09:00:02.000000Z');",
    );
    let sites = site("s1", "sqlite://s1.db", "Europe/Paris", "north");
    let extra = format!("on_error = \"{on_error}\"");
    fleet.write_config(&config(&master, &sites, &extra, TRANSFORMS));
    (fleet, master)
}

#[test]
fn a_row_an_expression_fails_on_stops_the_stream_naming_its_key() {
    let (fleet, master) = failing_fleet("stop");
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(
            "row (store_id, id) = (s1, 2): `compute.amount`: expression `decimal(row.amount_cents) / 100`: \
             column `amount_cents` is NULL where a value for `decimal` is needed"
        ),
        "{all}"
    );
    // The first batch (rows 1, 2) failed before writing; nothing is written.
    assert_eq!(psql(&master, "SELECT count(*) FROM sales"), "0");
}

#[test]
fn a_row_an_expression_fails_on_goes_to_the_quarantine() {
    let (fleet, master) = failing_fleet("quarantine");
    let out = fleet.hubsync(&["sync"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    // 10:00 and 12:00 Paris (UTC+2 in May) = 08:00Z and 10:00Z; 1000 cents = 10.00.
    assert_eq!(
        psql(&master, MASTER_ROWS),
        "s1|1|10.00|2026-05-01 08:00:00+00|north|pos|paid\n\
         s1|3|20.00|2026-05-01 10:00:00+00|north|pos|paid",
        "{all}"
    );
    let quarantined = psql(
        &master,
        "SELECT site, row_key, error FROM hubsync.quarantine",
    );
    assert!(quarantined.starts_with("s1|"), "{quarantined}");
    assert!(
        quarantined.contains("column `amount_cents` is NULL where a value for `decimal` is needed"),
        "{quarantined}"
    );
    // Fixed at the store: the row leaves the quarantine at the next sync.
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET amount_cents = 1, updated_at = '2026-01-02T09:00:05.000000Z' WHERE id = 2;",
    );
    fleet.hubsync(&["sync"]);
    assert_eq!(
        psql(&master, "SELECT count(*) FROM hubsync.quarantine"),
        "0"
    );
    assert_eq!(
        psql(&master, "SELECT amount FROM sales WHERE id = 2"),
        "0.01"
    );
}

#[test]
fn check_names_flow_stream_expression_and_column() {
    let master = pg_create_db("tf_check_master");
    psql(&master, MASTER_SALES);
    let fleet = Fleet::new();
    sqlite_exec(&fleet.path("s1.db"), SQLITE_SALES);
    let sites = site("s1", "sqlite://s1.db", "Europe/Paris", "north");
    let wrong = r#"filter = "row.status > 1"
  [flow.stream.compute]
  amount = "decimal(row.amount_cent) / 100"
  sold_at = "timestamp_utc(row.sold_at, site.tags.timezone)"
  region = "site.tags.area"
  source = "frobnicate('pos')""#;
    fleet.write_config(&config(&master, &sites, "", wrong));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let place = "problem: flow `sales` stream `sales` site `s1`: ";
    for expected in [
        "`compute.amount`: expression `decimal(row.amount_cent) / 100`: column `amount_cent` not found; the \
         source returns: `id`, `amount_cents`, `status`, `sold_at`, `updated_at`",
        "`compute.region`: expression `site.tags.area` reads `site.tags.area`, which site `s1` lacks; add the tag to the site",
        "`compute.source`: expression `frobnicate('pos')`: unknown function `frobnicate`",
        "`filter`: expression `row.status > 1`: `>` does not apply to a string and a int",
    ] {
        assert!(
            out.stdout.contains(&format!("{place}{expected}")),
            "missing `{expected}` in:\n{}",
            out.stdout
        );
    }
    // A syntax error is refused with the config, before any connection.
    let broken = r#"[flow.stream.compute]
  amount = "decimal(row.amount_cents) /""#;
    fleet.write_config(&config(&master, &sites, "", broken));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "flow `sales` stream `sales`: `compute.amount`: expression `decimal(row.amount_cents) /`: not valid CEL"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_push_computes_and_filters_through_the_same_mapping() {
    let master = pg_create_db("tf_push_master");
    psql(
        &master,
        "CREATE TABLE prices (sku text NOT NULL, zone text NOT NULL, price_cents integer NOT NULL, active boolean NOT NULL,
           updated_at timestamptz NOT NULL, PRIMARY KEY (sku, zone));
         INSERT INTO prices VALUES
           ('apple', 'A', 199, true, '2026-01-02 09:00:00+00'),
           ('pear', 'A', 5, false, '2026-01-02 09:00:01+00'),
           ('fig', 'A', -5, true, '2026-01-02 09:00:02+00'),
           ('apple', 'B', 250, true, '2026-01-02 09:00:03+00');",
    );
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT NOT NULL, label TEXT NOT NULL, updated_at TEXT NOT NULL);",
    );
    fleet.write_config(&format!(
        r#"[master]
url = "{master}"
[[site]]
id = "s1"
url = "sqlite://s1.db"
tags = {{ price_zone = "A" }}
[[flow]]
name = "prices"
direction = "push"
  [[flow.stream]]
  query = "SELECT sku, price_cents, active, updated_at FROM prices WHERE zone = :site.price_zone"
  target = "prices"
  primary_key = ["sku"]
  cursor = "updated_at"
  filter = "row.active"
  [flow.stream.compute]
  price = "decimal(row.price_cents) / 100"
  label = "site.id + ':' + row.sku.upperAscii()"
"#
    ));
    fleet.sync_ok(&[]);
    // Zone A only; pear is inactive: apple 199 cents = 1.99, fig -5 = -0.05.
    assert_eq!(
        common::sqlite_query(
            &fleet.path("s1.db"),
            "SELECT sku, price, label, updated_at FROM prices ORDER BY sku"
        ),
        "apple|1.99|s1:APPLE|2026-01-02T09:00:00.000000Z\n\
         fig|-0.05|s1:FIG|2026-01-02T09:00:02.000000Z"
    );
}

/// Regression: with a `columns` mapping the stream selects the columns its
/// expressions read, and SQLite takes a double-quoted name it does not know
/// for a text literal, so the misspelt `amount_cent` came back as a source
/// column and was listed among the columns the source returns.
#[test]
fn an_unknown_column_is_not_listed_among_the_source_columns() {
    let master = pg_create_db("tf_unknown_master");
    psql(&master, MASTER_SALES);
    let pg_site = pg_create_db("tf_unknown_site");
    psql(&pg_site, PG_SITE_SALES);
    let fleet = Fleet::new();
    sqlite_exec(&fleet.path("s1.db"), SQLITE_SALES);
    let sites = site("s1", "sqlite://s1.db", "Europe/Paris", "north")
        + &site("s2", &pg_site, "America/New_York", "south");
    let mapped = r#"columns = { id = "id", status = "status", updated_at = "updated_at" }"#;
    let wrong = r#"[flow.stream.compute]
  amount = "decimal(row.amount_cent) / 100"
  sold_at = "timestamp_utc(row.sold_at, site.tags.timezone)"
  region = "site.tags.region"
  source = "'pos'""#;
    fleet.write_config(&config(&master, &sites, mapped, wrong));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    // The stream reads the mapped columns, the keyset and the columns its
    // expressions name (`amount_cent`, which s1 lacks, and `sold_at`);
    // PostgreSQL refuses the misspelt name itself.
    for expected in [
        "problem: flow `sales` stream `sales` site `s1`: `compute.amount`: expression \
         `decimal(row.amount_cent) / 100`: column `amount_cent` not found; the source returns: \
         `id`, `status`, `updated_at`, `sold_at`",
        "problem: flow `sales` stream `sales` site `s2`: site source: table `sales`: column \"amount_cent\" \
         does not exist (code 42703)",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}` in:\n{}",
            out.stdout
        );
    }
}

#[test]
fn check_warns_of_expressions_reading_sqlite_decimals() {
    let master = pg_create_db("tf_decimal_master");
    psql(
        &master,
        "CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, amount numeric(12,2) NOT NULL,
           status text NOT NULL, updated_at text NOT NULL, PRIMARY KEY (store_id, id));",
    );
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, amount NUMERIC(12,2), price DECIMAL(10,2), qty INTEGER,
           status TEXT NOT NULL, updated_at TEXT NOT NULL);",
    );
    let sites = site("s1", "sqlite://s1.db", "Europe/Paris", "north");
    let transforms = r#"filter = "row.price > 0 && row.qty > 0"
  [flow.stream.compute]
  amount = "row.amount + row.price * row.qty""#;
    fleet.write_config(&config(&master, &sites, "", transforms));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let what_to_do = "which stores such a value with a fraction as a double: the expression may refuse it or \
         compute with a rounded value; declare the column TEXT (the exact digits) or INTEGER (cents, e.g. \
         `amount_cents`), or cast it to one of those in the stream's `query`";
    let place = "warning: flow `sales` stream `sales` site `s1`: ";
    let warnings: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("declared"))
        .collect();
    assert_eq!(
        warnings,
        [
            format!(
                "{place}`compute.amount`: expression `row.amount + row.price * row.qty` reads column `amount`, \
                 declared `NUMERIC(12,2)` in SQLite, {what_to_do}"
            ),
            format!(
                "{place}`compute.amount`: expression `row.amount + row.price * row.qty` reads column `price`, \
                 declared `DECIMAL(10,2)` in SQLite, {what_to_do}"
            ),
            format!(
                "{place}`filter`: expression `row.price > 0 && row.qty > 0` reads column `price`, \
                 declared `DECIMAL(10,2)` in SQLite, {what_to_do}"
            ),
        ],
        "{}{}",
        out.stdout,
        out.stderr
    );
}
