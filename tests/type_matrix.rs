//! The type matrix: every logical type of `docs/types.md`, with edge values,
//! pulled between every pair of different dialects (PostgreSQL, MariaDB,
//! SQLite) in both directions, plus MariaDB to MariaDB, and pushed between
//! every pair too (master to site). The target table is
//! rendered as text by the target database itself and compared with one
//! hand-written expectation per target dialect: a value arrives the same
//! whichever dialect it came from. A reset and a second pull then re-read
//! every row and must write none (equal values are recognised as equal).
//!
//! Table and column names are reserved words, mixed case and spaces
//! (`Type Matrix`, `order`, `Group Name`, `select`), so identifier quoting is
//! exercised in all three dialects.

mod common;

use common::{Fleet, my_create_db, mysql, pg_create_db, psql, sqlite_exec, sqlite_query};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Db {
    Pg,
    My,
    Lite,
}

/// (column, PostgreSQL type, MySQL type, SQLite type).
const COLUMNS: &[(&str, &str, &str, &str)] = &[
    ("id", "bigint", "BIGINT", "INTEGER"),
    ("b", "boolean", "TINYINT(1)", "BOOLEAN"),
    ("i16", "smallint", "SMALLINT", "INTEGER"),
    ("i32", "integer", "INT", "INTEGER"),
    ("i64", "bigint", "BIGINT", "INTEGER"),
    ("num", "numeric(38,10)", "DECIMAL(38,10)", "TEXT"),
    ("f", "double precision", "DOUBLE", "REAL"),
    ("order", "text", "LONGTEXT", "TEXT"),
    ("Group Name", "varchar(20)", "VARCHAR(20)", "TEXT"),
    ("select", "bytea", "LONGBLOB", "BLOB"),
    ("d", "date", "DATE", "TEXT"),
    ("tm", "time", "TIME(6)", "TEXT"),
    ("ts", "timestamp", "DATETIME(6)", "TEXT"),
    ("tz", "timestamptz", "TIMESTAMP(6) NULL", "TEXT"),
    ("j", "jsonb", "JSON", "TEXT"),
    ("u", "uuid", "CHAR(36)", "TEXT"),
];

const TABLE: &str = "Type Matrix";

fn quote(db: Db, name: &str) -> String {
    match db {
        Db::My => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

/// `CREATE TABLE` for a source (`site_column = false`) or a master target.
fn create_table(db: Db, site_column: bool) -> String {
    let mut columns: Vec<String> = Vec::new();
    if site_column {
        let site_type = if db == Db::My { "VARCHAR(20)" } else { "text" };
        columns.push(format!("site {site_type} NOT NULL"));
    }
    for (name, pg, my, lite) in COLUMNS {
        let ty = match db {
            Db::Pg => pg,
            Db::My => my,
            Db::Lite => lite,
        };
        columns.push(format!("{} {ty}", quote(db, name)));
    }
    let key = if site_column { "site, id" } else { "id" };
    columns.push(format!("PRIMARY KEY ({key})"));
    format!(
        "CREATE TABLE {} ({});",
        quote(db, TABLE),
        columns.join(", ")
    )
}

/// The edge rows, as literals of each source dialect. Row 1: minimums;
/// 2: maximums (and the text `NULL`, not NULL); 3: all NULL; 4: zeros, small
/// values, a trailing space, NUL bytes, the instant one microsecond before
/// the EU's spring-forward (01:00 UTC) and a local time that does not exist
/// in Europe that night; 5: a 1 MiB + emoji text, empty bytes, the autumn
/// fall-back instant and a local time that happens twice.
fn insert_rows(db: Db) -> String {
    let bytes = |hex: &str| match db {
        Db::Pg => format!("'\\x{hex}'::bytea"),
        _ => format!("X'{hex}'"),
    };
    let instant = |utc: &str| match db {
        Db::Pg => format!("'{utc}+00'"),
        Db::My => format!("'{utc}'"),
        Db::Lite => format!("'{}Z'", utc.replace(' ', "T")),
    };
    // SQLite holds times and date-times as hubsync writes them (six digits).
    let time = |t: &str| match db {
        Db::Lite => format!("'{t}.000000'"),
        _ => format!("'{t}'"),
    };
    let long_text = match db {
        Db::Pg => "repeat('ab', 524288) || '🍐'".to_string(),
        Db::My => "CONCAT(REPEAT('ab', 524288), '🍐')".to_string(),
        Db::Lite => "replace(hex(zeroblob(524288)), '00', 'ab') || '🍐'".to_string(),
    };
    let rows = [
        format!(
            "1, FALSE, -32768, -2147483648, -9223372036854775808, '-9999999999999999999999999999.9999999999', \
             -1.7976931348623157e308, '', 'Grüße 🍐', {}, '1000-01-01', {}, {}, {}, '{{}}', \
             '00000000-0000-0000-0000-000000000000'",
            bytes("00"),
            time("00:00:00"),
            time("1000-01-01 00:00:00"),
            instant("1970-01-01 00:00:01.000000")
        ),
        format!(
            "2, TRUE, 32767, 2147483647, 9223372036854775807, '9999999999999999999999999999.9999999999', \
             1.7976931348623157e308, 'NULL', '€€€€€€€€€€€€€€€€€€€€', {}, '9999-12-31', '23:59:59.999999', \
             '9999-12-31 23:59:59.999999', {}, '{{\"a\": [1, 2.50, null], \"b\": \"ü\"}}', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            bytes("ff00ff"),
            instant("2038-01-19 03:14:07.999999")
        ),
        "3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL".to_string(),
        format!(
            "4, FALSE, 0, -1, 0, '0.0000000001', 0.1, 'it''s \"x\"', 'a ', {}, '2026-03-29', {}, {}, {}, '[]', \
             'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            bytes("000041"),
            time("02:30:00"),
            time("2026-03-29 02:30:00"),
            instant("2026-03-29 00:59:59.999999")
        ),
        format!(
            "5, TRUE, 1, 1, 1, '1', 1.25e-300, {long_text}, '', {}, '2026-10-25', '12:00:00.500000', \
             '2026-10-25 02:30:00.000000', {}, 'null', '123e4567-e89b-12d3-a456-426614174000'",
            bytes(""),
            instant("2026-10-25 01:00:00.000000")
        ),
    ];
    rows.iter()
        .map(|row| format!("INSERT INTO {} VALUES ({row});", quote(db, TABLE)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every column of the target's rows from `site` (all rows: `None`),
/// rendered as text by the target itself (`∅` for NULL; the long text as
/// `characters:equal`).
fn render(db: Db, target: &str, site: Option<&str>) -> String {
    let q = |name: &str| quote(db, name);
    let filter = site.map_or(String::new(), |site| format!("WHERE site = '{site}'"));
    let sql = match db {
        Db::Pg => format!(
            "SELECT id, coalesce(b::text, '∅'), coalesce(i16::text, '∅'), coalesce(i32::text, '∅'), \
             coalesce(i64::text, '∅'), coalesce(num::text, '∅'), coalesce(f::text, '∅'), \
             coalesce(CASE WHEN length({o}) > 100 THEN length({o}) || ':' || (md5({o}) = md5(repeat('ab', 524288) || '🍐')) \
             ELSE {o} END, '∅'), coalesce({g}, '∅'), coalesce(encode({s}, 'hex'), '∅'), coalesce(d::text, '∅'), \
             coalesce(tm::text, '∅'), coalesce(ts::text, '∅'), \
             coalesce(to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '∅'), coalesce(j::text, '∅'), \
             coalesce(u::text, '∅') FROM {t} {filter} ORDER BY id",
            o = q("order"),
            g = q("Group Name"),
            s = q("select"),
            t = q(TABLE),
            filter = filter
        ),
        Db::My => format!(
            "SELECT id, COALESCE(b, '∅'), COALESCE(i16, '∅'), COALESCE(i32, '∅'), COALESCE(i64, '∅'), \
             COALESCE(num, '∅'), COALESCE(f, '∅'), \
             COALESCE(IF(CHAR_LENGTH({o}) > 100, CONCAT(CHAR_LENGTH({o}), ':', MD5({o}) = MD5(CONCAT(REPEAT('ab', 524288), '🍐'))), {o}), '∅'), \
             COALESCE({g}, '∅'), COALESCE(HEX({s}), '∅'), COALESCE(d, '∅'), COALESCE(tm, '∅'), COALESCE(ts, '∅'), \
             COALESCE(tz, '∅'), COALESCE(j, '∅'), COALESCE(u, '∅') FROM {t} {filter} ORDER BY id",
            o = q("order"),
            g = q("Group Name"),
            s = q("select"),
            t = q(TABLE),
            filter = filter
        ),
        Db::Lite => format!(
            "SELECT id, coalesce(b, '∅'), coalesce(i16, '∅'), coalesce(i32, '∅'), coalesce(i64, '∅'), \
             coalesce(num, '∅'), coalesce(f, '∅'), \
             coalesce(CASE WHEN length({o}) > 100 THEN length({o}) || ':' || ({o} = replace(hex(zeroblob(524288)), '00', 'ab') || '🍐') \
             ELSE {o} END, '∅'), coalesce({g}, '∅'), CASE WHEN {s} IS NULL THEN '∅' ELSE hex({s}) END, coalesce(d, '∅'), coalesce(tm, '∅'), \
             coalesce(ts, '∅'), coalesce(tz, '∅'), coalesce(j, '∅'), coalesce(u, '∅') FROM {t} {filter} ORDER BY id",
            o = q("order"),
            g = q("Group Name"),
            s = q("select"),
            t = q(TABLE),
            filter = filter
        ),
    };
    match db {
        Db::Pg => psql(target, &sql),
        Db::My => mysql(target, &sql),
        Db::Lite => sqlite_query(std::path::Path::new(target), &sql),
    }
}

/// What every source's rows look like at a PostgreSQL target.
const AT_POSTGRES: &str = "\
1|false|-32768|-2147483648|-9223372036854775808|-9999999999999999999999999999.9999999999|-1.7976931348623157e+308||Grüße 🍐|00|1000-01-01|00:00:00|1000-01-01 00:00:00|1970-01-01 00:00:01.000000|{}|00000000-0000-0000-0000-000000000000
2|true|32767|2147483647|9223372036854775807|9999999999999999999999999999.9999999999|1.7976931348623157e+308|NULL|€€€€€€€€€€€€€€€€€€€€|ff00ff|9999-12-31|23:59:59.999999|9999-12-31 23:59:59.999999|2038-01-19 03:14:07.999999|{\"a\": [1, 2.50, null], \"b\": \"ü\"}|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11
3|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅
4|false|0|-1|0|0.0000000001|0.1|it's \"x\"|a |000041|2026-03-29|02:30:00|2026-03-29 02:30:00|2026-03-29 00:59:59.999999|[]|ffffffff-ffff-ffff-ffff-ffffffffffff
5|true|1|1|1|1.0000000000|1.25e-300|1048577:true|||2026-10-25|12:00:00.5|2026-10-25 02:30:00|2026-10-25 01:00:00.000000|null|123e4567-e89b-12d3-a456-426614174000";

/// At a MariaDB target: booleans are TINYINT(1) 0/1, times and date-times
/// show their six digits, instants are shown in the session's UTC.
const AT_MARIADB: &str = "\
1|0|-32768|-2147483648|-9223372036854775808|-9999999999999999999999999999.9999999999|-1.7976931348623157e308||Grüße 🍐|00|1000-01-01|00:00:00.000000|1000-01-01 00:00:00.000000|1970-01-01 00:00:01.000000|{}|00000000-0000-0000-0000-000000000000
2|1|32767|2147483647|9223372036854775807|9999999999999999999999999999.9999999999|1.7976931348623157e308|NULL|€€€€€€€€€€€€€€€€€€€€|FF00FF|9999-12-31|23:59:59.999999|9999-12-31 23:59:59.999999|2038-01-19 03:14:07.999999|{\"a\": [1, 2.50, null], \"b\": \"ü\"}|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11
3|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅
4|0|0|-1|0|0.0000000001|0.1|it's \"x\"|a |000041|2026-03-29|02:30:00.000000|2026-03-29 02:30:00.000000|2026-03-29 00:59:59.999999|[]|ffffffff-ffff-ffff-ffff-ffffffffffff
5|1|1|1|1|1.0000000000|1.25e-300|1048577:1|||2026-10-25|12:00:00.500000|2026-10-25 02:30:00.000000|2026-10-25 01:00:00.000000|null|123e4567-e89b-12d3-a456-426614174000";

/// At a SQLite target, by its storage rule: booleans 0/1, exact decimals as
/// TEXT with their scale, instants as RFC 3339 UTC text, local date-times
/// and times with six fractional digits.
const AT_SQLITE: &str = "\
1|0|-32768|-2147483648|-9223372036854775808|-9999999999999999999999999999.9999999999|-1.7976931348623157e308||Grüße 🍐|00|1000-01-01|00:00:00.000000|1000-01-01 00:00:00.000000|1970-01-01T00:00:01.000000Z|{}|00000000-0000-0000-0000-000000000000
2|1|32767|2147483647|9223372036854775807|9999999999999999999999999999.9999999999|1.7976931348623157e308|NULL|€€€€€€€€€€€€€€€€€€€€|FF00FF|9999-12-31|23:59:59.999999|9999-12-31 23:59:59.999999|2038-01-19T03:14:07.999999Z|{\"a\": [1, 2.50, null], \"b\": \"ü\"}|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11
3|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅|∅
4|0|0|-1|0|0.0000000001|0.1|it's \"x\"|a |000041|2026-03-29|02:30:00.000000|2026-03-29 02:30:00.000000|2026-03-29T00:59:59.999999Z|[]|ffffffff-ffff-ffff-ffff-ffffffffffff
5|1|1|1|1|1.0000000000|1.25e-300|1048577:1|||2026-10-25|12:00:00.500000|2026-10-25 02:30:00.000000|2026-10-25T01:00:00.000000Z|null|123e4567-e89b-12d3-a456-426614174000";

/// Creates a database of `db` for one pair; returns its URL (a file path
/// for SQLite) and the URL as the config writes it.
fn create_db(db: Db, fleet: &Fleet, name: &str) -> (String, String) {
    match db {
        Db::Pg => {
            let url = pg_create_db(name);
            (url.clone(), url)
        }
        Db::My => {
            let url = my_create_db(name);
            (url.clone(), url)
        }
        Db::Lite => {
            let path = fleet.path(&format!("{name}.db"));
            sqlite_exec(&path, "SELECT 1;");
            (path.display().to_string(), format!("sqlite://{name}.db"))
        }
    }
}

fn exec(db: Db, target: &str, sql: &str) {
    match db {
        Db::Pg => {
            psql(target, sql);
        }
        Db::My => {
            mysql(target, sql);
        }
        Db::Lite => sqlite_exec(std::path::Path::new(target), sql),
    }
}

/// (rows read, rows written) of site `src` in `sync`'s summary table.
fn counts(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.contains(" src ") && l.contains("succeeded"))
        .unwrap_or_else(|| panic!("no succeeded run of `src` in:\n{stdout}"));
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .collect();
    (words[3].parse().unwrap(), words[4].parse().unwrap())
}

/// Pulls the matrix table from a `source` site into a `target` master and
/// checks every value, then re-reads everything and checks nothing is
/// rewritten.
fn pull_pair(source: Db, target: Db) {
    let fleet = Fleet::new();
    let (master, master_config) = create_db(target, &fleet, "matrix_master");
    let (site, site_config) = create_db(source, &fleet, "matrix_site");
    exec(target, &master, &create_table(target, true));
    exec(source, &site, &create_table(source, false));
    exec(source, &site, &insert_rows(source));
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master_config}\"\n\n\
         [[site]]\nid = \"src\"\nurl = \"{site_config}\"\n\n\
         [[flow]]\nname = \"matrix\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"{TABLE}\"\n  \
         target = \"{TABLE}\"\n  primary_key = [\"id\"]\n  cursor = \"id\"\n  site_column = \"site\"\n"
    ));
    let first = fleet.sync_ok(&[]);
    assert_eq!(counts(&first.stdout), (5, 5), "{source:?} -> {target:?}");
    let expected = match target {
        Db::Pg => AT_POSTGRES,
        Db::My => AT_MARIADB,
        Db::Lite => AT_SQLITE,
    };
    let actual = render(target, &master, Some("src"));
    for (line, (got, want)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "{source:?} -> {target:?}, row {}", line + 1);
    }
    assert_eq!(actual.lines().count(), 5, "{source:?} -> {target:?}");
    // Read everything again: every value compares equal, nothing is written.
    let reset = fleet.hubsync(&["reset", "--flow", "matrix"]);
    assert_eq!(reset.code, 0, "{reset:?}");
    let second = fleet.sync_ok(&[]);
    assert_eq!(counts(&second.stdout), (5, 0), "{source:?} -> {target:?}");
}

/// Pushes the matrix table from a `source` master to a `target` site and
/// checks every value the same way, then re-reads and checks nothing is
/// rewritten.
fn push_pair(source: Db, target: Db) {
    let fleet = Fleet::new();
    let (master, master_config) = create_db(source, &fleet, "matrix_push_master");
    let (site, site_config) = create_db(target, &fleet, "matrix_push_site");
    exec(source, &master, &create_table(source, false));
    exec(source, &master, &insert_rows(source));
    exec(target, &site, &create_table(target, false));
    fleet.write_config(&format!(
        "[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master_config}\"\n\n\
         [[site]]\nid = \"src\"\nurl = \"{site_config}\"\n\n\
         [[flow]]\nname = \"matrix\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"{TABLE}\"\n  \
         target = \"{TABLE}\"\n  primary_key = [\"id\"]\n  cursor = \"id\"\n"
    ));
    let first = fleet.sync_ok(&[]);
    assert_eq!(
        counts(&first.stdout),
        (5, 5),
        "push {source:?} -> {target:?}"
    );
    let expected = match target {
        Db::Pg => AT_POSTGRES,
        Db::My => AT_MARIADB,
        Db::Lite => AT_SQLITE,
    };
    let actual = render(target, &site, None);
    for (line, (got, want)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "push {source:?} -> {target:?}, row {}", line + 1);
    }
    assert_eq!(actual.lines().count(), 5, "push {source:?} -> {target:?}");
    let reset = fleet.hubsync(&["reset", "--flow", "matrix"]);
    assert_eq!(reset.code, 0, "{reset:?}");
    let second = fleet.sync_ok(&[]);
    assert_eq!(
        counts(&second.stdout),
        (5, 0),
        "push {source:?} -> {target:?}"
    );
}

#[test]
fn push_postgres_to_mariadb() {
    push_pair(Db::Pg, Db::My);
}

#[test]
fn push_mariadb_to_postgres() {
    push_pair(Db::My, Db::Pg);
}

#[test]
fn push_mariadb_to_sqlite() {
    push_pair(Db::My, Db::Lite);
}

#[test]
fn push_sqlite_to_mariadb() {
    push_pair(Db::Lite, Db::My);
}

#[test]
fn push_postgres_to_sqlite() {
    push_pair(Db::Pg, Db::Lite);
}

#[test]
fn push_sqlite_to_postgres() {
    push_pair(Db::Lite, Db::Pg);
}

#[test]
fn postgres_to_mariadb() {
    pull_pair(Db::Pg, Db::My);
}

#[test]
fn mariadb_to_postgres() {
    pull_pair(Db::My, Db::Pg);
}

#[test]
fn postgres_to_sqlite() {
    pull_pair(Db::Pg, Db::Lite);
}

#[test]
fn sqlite_to_postgres() {
    pull_pair(Db::Lite, Db::Pg);
}

#[test]
fn mariadb_to_sqlite() {
    pull_pair(Db::My, Db::Lite);
}

#[test]
fn sqlite_to_mariadb() {
    pull_pair(Db::Lite, Db::My);
}

#[test]
fn mariadb_to_mariadb() {
    pull_pair(Db::My, Db::My);
}

#[test]
fn sqlite_refuses_decimals_its_numeric_affinity_would_round() {
    // SQLite turns decimal text in a NUMERIC column into an 8-byte float: a
    // 38-digit decimal would lose its last 21 digits. Refused, naming the
    // row, column, value and declared type; the batch is not written.
    let fleet = Fleet::new();
    let master = fleet.path("master.db");
    sqlite_exec(
        &master,
        "CREATE TABLE money (site TEXT NOT NULL, id INTEGER NOT NULL, amount NUMERIC(38,10), \
         PRIMARY KEY (site, id));",
    );
    let site = my_create_db("matrix_round_site");
    mysql(
        &site,
        "CREATE TABLE money (id INT PRIMARY KEY, amount DECIMAL(38,10));
         INSERT INTO money VALUES (1, 12.50), (2, 1234567890123456789012345678.0123456789);",
    );
    fleet.write_config(&format!(
        "[master]\nurl = \"sqlite://master.db\"\n\n[[site]]\nid = \"src\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"money\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"money\"\n  \
         target = \"money\"\n  primary_key = [\"id\"]\n  cursor = \"id\"\n  site_column = \"site\"\n"
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "flow `money` stream `money` site `src`: writing to master table `money`: row (site, id) = (src, 2): \
             column `amount`: value `1234567890123456789012345678.0123456789` (numeric) cannot be stored exactly \
             in SQLite `NUMERIC(38,10)`: SQLite would turn it into the float 1.2345678901234569e27 (Numeric \
             affinity); declare the column TEXT to keep exact decimals"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(sqlite_query(&master, "SELECT count(*) FROM money"), "0");
}
