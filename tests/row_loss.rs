//! Situations that once lost rows while every run reported success (issue
//! "Correctness: rows lost silently"), against the throwaway PostgreSQL
//! server `scripts/test.sh` starts and embedded SQLite files. Each expected
//! value is worked out by hand from the rows the test writes.

mod common;

use common::{Fleet, PsqlSession, pg_create_db, psql, sqlite_exec, sqlite_query};

/// A pull of the site's `sales` (key `id`, cursor `cursor`) into the
/// master's `sales` under `store_id`, one PostgreSQL or SQLite site `s1`;
/// `extra` adds stream keys.
fn pull_config(master: &str, site: &str, cursor: &str, extra: &str) -> String {
    format!(
        "[hub]\nbatch_size = 2\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"s1\"\nurl = \"{site}\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"{cursor}\"\n  site_column = \"store_id\"\n  {extra}\n"
    )
}

/// Waits until `site` has exactly one session idle in a transaction.
fn wait_for_open_transaction(site: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while psql(
        site,
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the held transaction did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Situation 1: the application supplies the cursor. Session A inserts row
/// 2 stamped 10:05 and stays open; session B commits row 3 at 10:06; the
/// hub syncs (checkpoint 10:06, far past any lag or open-transaction floor,
/// since the stamps are a week old); A commits. Row 2 must arrive, by
/// transaction id, and once.
#[test]
fn a_late_commit_with_an_application_cursor_arrives_by_transaction_id() {
    let master = pg_create_db("xid_master");
    let site = pg_create_db("xid_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
         INSERT INTO sales VALUES (1, 10, '2026-11-29 10:00:00+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&pull_config(&master, &site, "updated_at", ""));
    fleet.sync_ok(&[]);
    let held = PsqlSession::start(
        &site,
        "BEGIN; INSERT INTO sales VALUES (2, 20, '2026-11-29 10:05:00+00');",
    );
    wait_for_open_transaction(&site);
    psql(
        &site,
        "INSERT INTO sales VALUES (3, 30, '2026-11-29 10:06:00+00');",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM sales"
        ),
        "1:10,3:30"
    );
    assert!(held.finish("COMMIT;"));
    let out = fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM sales"
        ),
        "1:10,2:20,3:30",
        "{}",
        out.stdout
    );
    // The run that found it says so.
    assert_eq!(
        psql(
            &master,
            "SELECT note FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "stream `sales`: rows committed late, found by transaction id: 1"
    );
    // An update in a transaction held across a run, to an older stamp,
    // arrives too; a quiet site afterwards re-reads nothing.
    let held = PsqlSession::start(
        &site,
        "BEGIN; UPDATE sales SET qty = 11, updated_at = '2026-11-29 09:00:00+00' WHERE id = 1;",
    );
    wait_for_open_transaction(&site);
    fleet.sync_ok(&[]);
    assert!(held.finish("COMMIT;"));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM sales"
        ),
        "1:11,2:20,3:30"
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT coalesce(note, '') || '|' || rows_read FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        // The overlap re-reads the row at the saved cursor value (10:06, id 3).
        "|1"
    );
}

/// Found by a fresh-user trial: a row written inside a savepoint carries
/// its subtransaction's id as `xmin`, which the snapshot's in-progress list
/// never holds. Session A writes row 2 (stamped two hours back) inside a
/// released savepoint and stays open; B commits row 3; the hub syncs; A
/// commits. Row 2 must arrive, once.
#[test]
fn a_late_commit_written_inside_a_savepoint_arrives() {
    let master = pg_create_db("subxid_master");
    let site = pg_create_db("subxid_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
         INSERT INTO sales VALUES (1, 10, '2026-11-29 10:00:00+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&pull_config(&master, &site, "updated_at", ""));
    fleet.sync_ok(&[]);
    let held = PsqlSession::start(
        &site,
        "BEGIN; SELECT 1; SAVEPOINT a; INSERT INTO sales VALUES (2, 20, '2026-11-29 10:05:00+00'); RELEASE SAVEPOINT a;",
    );
    wait_for_open_transaction(&site);
    psql(
        &site,
        "INSERT INTO sales VALUES (3, 30, '2026-11-29 12:06:00+00');",
    );
    fleet.sync_ok(&[]);
    assert!(held.finish("COMMIT;"));
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM sales"
        ),
        "1:10,2:20,3:30"
    );
    // Once: a further sync writes nothing.
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT rows_written FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "0"
    );
}

/// Situation 2: rows whose cursor is NULL are read every run (and counted),
/// an update that leaves the cursor NULL arrives; `null_cursors = "skip"`
/// leaves them out.
#[test]
fn rows_with_a_null_cursor_are_read_every_run_unless_skipped() {
    let master = pg_create_db("null_master");
    let site = pg_create_db("null_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, qty int, updated_at timestamptz);
         INSERT INTO sales VALUES (1, 10, '2026-11-29 10:00:00+00'), (2, 20, NULL), (3, 30, NULL);",
    );
    let fleet = Fleet::new();
    fleet.write_config(&pull_config(&master, &site, "updated_at", ""));
    fleet.sync_ok(&[]);
    let rows = "SELECT string_agg(id || ':' || qty || ':' || coalesce(updated_at::text, 'null'), ',' ORDER BY id) FROM sales";
    assert_eq!(
        psql(&master, rows),
        "1:10:2026-11-29 10:00:00+00,2:20:null,3:30:null"
    );
    let last_run = "SELECT rows_read || '|' || rows_written || '|' || note FROM hubsync.runs ORDER BY started_at DESC LIMIT 1";
    assert_eq!(
        psql(&master, last_run),
        "3|3|stream `sales`: rows with a NULL cursor `updated_at` read: 2"
    );
    // Changed while the cursor stays NULL: arrives; the unchanged NULL row
    // is read again but not rewritten; row 1 (at the saved cursor) is
    // re-read by the inclusive restart.
    psql(&site, "UPDATE sales SET qty = 21 WHERE id = 2;");
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, rows),
        "1:10:2026-11-29 10:00:00+00,2:21:null,3:30:null"
    );
    assert_eq!(
        psql(&master, last_run),
        "3|1|stream `sales`: rows with a NULL cursor `updated_at` read: 2"
    );
    // Opting out: a fresh master never sees them.
    let skip_master = pg_create_db("null_skip_master");
    psql(
        &skip_master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    let skipping = Fleet::new();
    skipping.write_config(&pull_config(
        &skip_master,
        &site,
        "updated_at",
        "null_cursors = \"skip\"",
    ));
    skipping.sync_ok(&[]);
    assert_eq!(psql(&skip_master, rows), "1:10:2026-11-29 10:00:00+00");
    let check = skipping.hubsync(&["check"]);
    assert!(
        check
            .stdout
            .contains("rows whose cursor `updated_at` is NULL are never synced"),
        "{}{}",
        check.stdout,
        check.stderr
    );
}

/// Situation 3 (PostgreSQL): an integer cursor. Rows (1, v5) and (2, v7)
/// sync, so the checkpoint is (7, 2). Row 1 is then updated to exactly
/// version 7: its position (7, 1) sorts before the checkpoint, and it must
/// still arrive.
#[test]
fn an_integer_cursor_tie_below_the_saved_key_arrives_on_postgres() {
    let master = pg_create_db("tie_master");
    let site = pg_create_db("tie_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, version bigint, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, qty int, version bigint NOT NULL);
         INSERT INTO sales VALUES (1, 10, 5), (2, 20, 7);",
    );
    let fleet = Fleet::new();
    fleet.write_config(&pull_config(&master, &site, "version", ""));
    fleet.sync_ok(&[]);
    psql(
        &site,
        "UPDATE sales SET qty = 11, version = 7 WHERE id = 1;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(
            &master,
            "SELECT string_agg(id || ':' || qty || ':' || version, ',' ORDER BY id) FROM sales"
        ),
        "1:11:7,2:20:7"
    );
}

/// Situation 3 (SQLite): the same tie with an INTEGER cursor.
#[test]
fn an_integer_cursor_tie_below_the_saved_key_arrives_on_sqlite() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT NOT NULL, id INTEGER NOT NULL, qty INTEGER, version INTEGER, \
         PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, version INTEGER NOT NULL);
         INSERT INTO sales VALUES (1, 10, 5), (2, 20, 7);",
    );
    fleet.write_config(&pull_config(
        "sqlite://master.db",
        "sqlite://s1.db",
        "version",
        "",
    ));
    fleet.sync_ok(&[]);
    sqlite_exec(
        &fleet.path("s1.db"),
        "UPDATE sales SET qty = 11, version = 7 WHERE id = 1;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT group_concat(id || ':' || qty || ':' || version, ',') FROM (SELECT * FROM sales ORDER BY id)"
        ),
        "1:11:7,2:20:7"
    );
}

/// Situation 7: rows found deleted by `deletes = "detect"` count in the
/// run history's `rows_written`, as the reference config says.
#[test]
fn detected_deletes_count_in_the_run_history() {
    let master = pg_create_db("delcount_master");
    let site = pg_create_db("delcount_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
         INSERT INTO sales VALUES (1, 10, '2026-11-29 10:00:00+00'), (2, 20, '2026-11-29 10:01:00+00'),
                                  (3, 30, '2026-11-29 10:02:00+00');",
    );
    let fleet = Fleet::new();
    fleet.write_config(&pull_config(
        &master,
        &site,
        "updated_at",
        "deletes = \"detect\"",
    ));
    fleet.sync_ok(&[]);
    psql(&site, "DELETE FROM sales WHERE id IN (1, 2);");
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT string_agg(id::text, ',') FROM sales"),
        "3"
    );
    // Read: row 3 again (the overlap at the saved cursor); written: the two
    // deletes.
    assert_eq!(
        psql(
            &master,
            "SELECT rows_read || '|' || rows_written FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "1|2"
    );
}

/// Situation 4: a SQLite cursor declared `DATETIME` holding every form
/// SQLite's date functions read. The first run saves the checkpoint at
/// `2026-11-29T10:00:00.000Z`; later rows whose instants come after it but
/// whose storage sorts below it (text with a space: `' ' < 'T'`; numbers
/// sort before any text) must arrive, each as the instant it stands for:
/// a Julian day REAL (2461374.0625 = 13:30 UTC), unix seconds INTEGER
/// (1795960800 = 14:00 UTC), text with an offset (16:30+02:00 = 14:30
/// UTC). A value that is no date-time stops the stream naming row key and
/// column, before anything of the run is written.
#[test]
fn a_sqlite_datetime_cursor_in_mixed_forms_is_read_by_instant() {
    let master = pg_create_db("mixed_dt_master");
    let fleet = Fleet::new();
    let site = fleet.path("s1.db");
    let table = "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));";
    psql(&master, table);
    sqlite_exec(
        &site,
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, updated_at DATETIME NOT NULL);
         INSERT INTO sales VALUES (1, 10, '2026-11-29T10:00:00.000Z');",
    );
    fleet.write_config(&pull_config(&master, "sqlite://s1.db", "updated_at", ""));
    fleet.sync_ok(&[]);
    let rows = "SELECT string_agg(id || ':' || qty || ':' || to_char(updated_at AT TIME ZONE 'UTC', \
                'YYYY-MM-DD HH24:MI:SS.MS'), ',' ORDER BY id) FROM sales";
    assert_eq!(psql(&master, rows), "1:10:2026-11-29 10:00:00.000");
    sqlite_exec(
        &site,
        "INSERT INTO sales VALUES (2, 20, '2026-11-29 11:05:00'), (3, 30, 2461374.0625),
                                  (4, 40, 1795960800), (5, 50, '2026-11-29T16:30:00+02:00');",
    );
    // Stored as written: text, REAL, INTEGER, text.
    assert_eq!(
        sqlite_query(
            &site,
            "SELECT group_concat(typeof(updated_at)) FROM sales WHERE id > 1"
        ),
        "text,real,integer,text"
    );
    fleet.sync_ok(&[]);
    let all_five = "1:10:2026-11-29 10:00:00.000,2:20:2026-11-29 11:05:00.000,3:30:2026-11-29 13:30:00.000,\
                    4:40:2026-11-29 14:00:00.000,5:50:2026-11-29 14:30:00.000";
    assert_eq!(psql(&master, rows), all_five);
    let last_run = "SELECT rows_read || '|' || rows_written || '|' || status FROM hubsync.runs \
                    ORDER BY started_at DESC LIMIT 1";
    // Read: row 1 again (the overlap from 09:59:55) and the four new rows.
    assert_eq!(psql(&master, last_run), "5|4|succeeded");

    // The overlap is by instant too: from 14:30 UTC (row 5) less 5 s, row
    // 5 is read again beside the two changes; rows 1-4 are not.
    sqlite_exec(
        &site,
        "INSERT INTO sales VALUES (6, 60, 1795964400);
         UPDATE sales SET qty = 21, updated_at = '2026-11-29 15:30:00' WHERE id = 2;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(psql(&master, last_run), "3|2|succeeded");
    let all_six = "1:10:2026-11-29 10:00:00.000,2:21:2026-11-29 15:30:00.000,3:30:2026-11-29 13:30:00.000,\
                   4:40:2026-11-29 14:00:00.000,5:50:2026-11-29 14:30:00.000,6:60:2026-11-29 15:00:00.000";
    assert_eq!(psql(&master, rows), all_six);

    // A backfill into a fresh master reads the REAL and the INTEGER too.
    let fresh = pg_create_db("mixed_dt_fresh");
    psql(&fresh, table);
    let backfill = Fleet::new();
    std::fs::copy(&site, backfill.path("s1.db")).expect("copy the site");
    backfill.write_config(&pull_config(&fresh, "sqlite://s1.db", "updated_at", ""));
    backfill.sync_ok(&[]);
    assert_eq!(psql(&fresh, rows), all_six);

    // A value that is no date-time: the stream stops naming it; row 8,
    // read in the same run, is not written either.
    sqlite_exec(
        &site,
        "INSERT INTO sales VALUES (7, 70, 'yesterday'), (8, 80, '2026-11-29 16:00:00');",
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "flow `sales` stream `sales` site `s1`: row (store_id, id) = (s1, 7): column `updated_at`: value \
             `yesterday` (text) is not a date-time; a cursor declared `DATETIME` is read by instant and must hold \
             `YYYY-MM-DD[ HH:MM[:SS[.SSS]]]` text (a space or `T` before the time, optionally `Z` or `±HH:MM` \
             after it), or a number (a Julian day below 5373484.5, unix seconds above); correct the value at the source"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(psql(&master, rows), all_six);
    sqlite_exec(
        &site,
        "UPDATE sales SET updated_at = '2026-11-29 16:10' WHERE id = 7;",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, rows),
        format!("{all_six},7:70:2026-11-29 16:10:00.000,8:80:2026-11-29 16:00:00.000")
    );
}

/// The late-commit floor's source: the site's clock and the start of its
/// oldest open transaction in this database, as the site itself reports
/// them. A session holding a transaction open (started before it waits)
/// must be the one reported, to the microsecond of its `xact_start` as
/// `pg_stat_activity` shows it; a transaction in another database is not.
#[test]
fn the_site_reports_its_oldest_open_transaction_of_this_database() {
    use hubsync::config::url::DbUrl;
    use hubsync::connector::{ConnectOptions, Connector};
    let site = pg_create_db("vis_site");
    let other = pg_create_db("vis_other");
    let elsewhere = PsqlSession::start(&other, "BEGIN; SELECT txid_current();");
    wait_for_open_transaction(&other);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let held = PsqlSession::start(&site, "BEGIN; SELECT txid_current();");
    wait_for_open_transaction(&site);
    let expected = psql(
        &site,
        "SELECT to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM pg_stat_activity \
         WHERE state = 'idle in transaction' AND datname = current_database()",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = runtime.block_on(async {
        let url = DbUrl::parse(&site, None, std::path::Path::new(".")).unwrap();
        let options = ConnectOptions {
            max_connections: 1,
            connect_timeout: std::time::Duration::from_secs(10),
            acquire_timeout: std::time::Duration::from_secs(10),
            statement_timeout: None,
            create_if_missing: false,
        };
        let conn = Connector::connect(&url, &options).await.unwrap();
        let clock = conn
            .visibility()
            .await
            .unwrap()
            .expect("a PostgreSQL clock");
        conn.close().await;
        clock
    });
    let oldest = clock.oldest_open.expect("the held transaction");
    assert_eq!(oldest.format("%Y-%m-%d %H:%M:%S%.6f").to_string(), expected);
    assert!(
        clock.now > oldest,
        "the clock is read after the transaction began"
    );
    assert!(clock.snapshot.is_some(), "the site's snapshot");
    assert!(held.finish("COMMIT;"));
    assert!(elsewhere.finish("COMMIT;"));
}

/// Reported by a trial: a Julian day written as a REAL without fraction
/// into a SQLite `DATETIME` column is stored as an INTEGER (`NUMERIC`
/// affinity). Read as unix seconds it stood for 1970-01-29, behind the
/// checkpoint, and the row never arrived. Numbers are read as SQLite's
/// `'auto'` reads them: 2461042 is Julian day 2026-01-01 12:00 UTC,
/// 2461043 the next noon; 1767312000 (above the Julian range) is unix
/// seconds, 2026-01-02 00:00 UTC.
#[test]
fn a_julian_day_stored_as_an_integer_in_a_sqlite_datetime_cursor_arrives() {
    let master = pg_create_db("julian_master");
    let fleet = Fleet::new();
    let site = fleet.path("s1.db");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &site,
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, updated_at DATETIME NOT NULL);
         INSERT INTO sales VALUES (1, 10, '2026-01-01 10:00:00'), (2, 20, 2461042.0);",
    );
    assert_eq!(
        sqlite_query(&site, "SELECT typeof(updated_at) FROM sales WHERE id = 2"),
        "integer"
    );
    fleet.write_config(&pull_config(
        &master,
        "sqlite://s1.db",
        "updated_at",
        "cursor_lag = \"0s\"",
    ));
    fleet.sync_ok(&[]);
    let rows = "SELECT string_agg(id || ':' || qty || ':' || to_char(updated_at AT TIME ZONE 'UTC', \
                'YYYY-MM-DD HH24:MI:SS'), ',' ORDER BY id) FROM sales";
    assert_eq!(
        psql(&master, rows),
        "1:10:2026-01-01 10:00:00,2:20:2026-01-01 12:00:00"
    );
    sqlite_exec(
        &site,
        "INSERT INTO sales VALUES (3, 30, 2461043.0), (4, 40, 1767312000);",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, rows),
        "1:10:2026-01-01 10:00:00,2:20:2026-01-01 12:00:00,3:30:2026-01-02 12:00:00,4:40:2026-01-02 00:00:00"
    );
}

/// A `serial` id as the cursor of a PostgreSQL site read with
/// `late_commits = "lag"` (no transaction ids): session A takes id 3 and
/// stays open, session B commits id 4, the hub reads 1, 2, 4, A commits.
/// The gap in the ids holds the next start at 2, so id 3 arrives (it was
/// lost before: an integer cursor had no overlap).
#[test]
fn a_late_insert_under_a_serial_cursor_arrives_without_transaction_ids() {
    let master = pg_create_db("serial_master");
    let site = pg_create_db("serial_site");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, qty int, PRIMARY KEY (store_id, id));",
    );
    psql(
        &site,
        "CREATE TABLE sales (id serial PRIMARY KEY, qty int);
         INSERT INTO sales (qty) VALUES (10), (20);",
    );
    let fleet = Fleet::new();
    fleet.write_config(&pull_config(&master, &site, "id", "late_commits = \"lag\""));
    fleet.sync_ok(&[]);
    let held = PsqlSession::start(&site, "BEGIN; INSERT INTO sales (qty) VALUES (30);");
    wait_for_open_transaction(&site);
    psql(&site, "INSERT INTO sales (qty) VALUES (40);");
    fleet.sync_ok(&[]);
    let rows = || {
        psql(
            &master,
            "SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM sales",
        )
    };
    assert_eq!(rows(), "1:10,2:20,4:40");
    assert!(held.finish("COMMIT;"));
    fleet.sync_ok(&[]);
    assert_eq!(rows(), "1:10,2:20,3:30,4:40");
}

/// A push's shared read and a site that takes its clock after it. The
/// master holds `a` (an hour old); transaction T inserts `late` (stamped at
/// T's start) and stays open; `after` commits 1.5 s later (beyond the 1 s
/// lag). Sites run one at a time: s1 takes its clock (T open: its floor is
/// T's start), reads `a` and `after` for both sites (the pass's shared
/// read), and its insert trigger holds it 3 s, during which T commits. s2
/// then takes its own clock (nothing open: its floor is now - 1 s) and
/// applies the shared rows. s2's checkpoint must not step over `late`
/// (stamped 1.5 s before `after`, so `after` - lag does not cover it): it
/// stays at s1's floor, so the next pass brings `late` to both sites.
#[test]
fn a_push_site_applying_a_shared_read_after_a_late_commit_still_gets_the_late_row() {
    let master = pg_create_db("shfloor_master");
    let s1 = pg_create_db("shfloor_s1");
    let s2 = pg_create_db("shfloor_s2");
    let table = "CREATE TABLE prices (sku text PRIMARY KEY, price int, updated_at timestamptz);";
    psql(
        &master,
        &format!("{table} INSERT INTO prices VALUES ('a', 1, now() - interval '1 hour');"),
    );
    psql(&s2, table);
    psql(
        &s1,
        &format!(
            "{table} CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
             CREATE TRIGGER hold AFTER INSERT ON prices FOR EACH STATEMENT EXECUTE FUNCTION hold();"
        ),
    );
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "[hub]\nmax_concurrent_sites = 1\n\n[master]\nurl = \"{master}\"\n\n\
         [[site]]\nid = \"s1\"\nurl = \"{s1}\"\n\n[[site]]\nid = \"s2\"\nurl = \"{s2}\"\n\n\
         [[flow]]\nname = \"prices\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"prices\"\n  \
         target = \"prices\"\n  primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n  cursor_lag = \"1s\"\n"
    ));
    let held = PsqlSession::start(
        &master,
        "BEGIN; INSERT INTO prices VALUES ('late', 2, clock_timestamp());",
    );
    wait_for_open_transaction(&master);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    psql(
        &master,
        "INSERT INTO prices VALUES ('after', 3, clock_timestamp());",
    );
    let sync = fleet.spawn(&["sync"]);
    // s1 has read (the shared read comes before its write) once its
    // trigger sleeps.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while psql(
        &s1,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "s1's write never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(held.finish("COMMIT;"));
    let out = sync.wait_with_output().expect("sync ends");
    assert!(
        out.status.success(),
        "sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let skus = |site: &str| psql(site, "SELECT string_agg(sku, ',' ORDER BY sku) FROM prices");
    // The first pass: both sites got what the shared read saw.
    assert_eq!((skus(&s1), skus(&s2)), ("a,after".into(), "a,after".into()));
    fleet.sync_ok(&[]);
    assert_eq!(
        (skus(&s1), skus(&s2)),
        ("a,after,late".into(), "a,after,late".into())
    );
}

/// Regression (fresh-user trial 4): a push whose master login could not
/// see other logins' sessions missed a 20 s transaction's rows for good,
/// and every run said "succeeded" with no note. The floor of open
/// transactions needs `pg_read_all_stats`: without it `check` warns
/// naming the role and each run's note says so; with it, neither.
#[test]
fn a_master_login_that_cannot_see_other_logins_is_named_by_check_and_each_run() {
    let master = pg_create_db("nopriv_master");
    let role = format!("hs_nopriv_{}", std::process::id());
    let admin = common::pg_admin_url();
    psql(
        &admin,
        &format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             REVOKE pg_read_all_stats FROM {role};"
        ),
    );
    let db = master.rsplit('/').next().unwrap().to_string();
    psql(
        &master,
        &format!(
            "CREATE TABLE prices (sku text PRIMARY KEY, price int, updated_at timestamptz);
             INSERT INTO prices VALUES ('a', 1, now());
             ALTER TABLE prices OWNER TO {role}; ALTER DATABASE \"{db}\" OWNER TO {role};"
        ),
    );
    let login = master.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(login, master, "the test server's admin login is `postgres`");
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE prices (sku TEXT PRIMARY KEY, price INTEGER, updated_at TEXT);",
    );
    fleet.write_config(&format!(
        "[master]\nurl = \"{login}\"\n\n[[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\n\n\
         [[flow]]\nname = \"prices\"\ndirection = \"push\"\n  [[flow.stream]]\n  source = \"prices\"\n  \
         target = \"prices\"\n  primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n"
    ));
    let note = "the master's login cannot see other logins' open transactions (grant it `pg_read_all_stats`)";
    let warning = "master login cannot see other logins' open transactions, so the lag above is its only guard \
                   against theirs: grant it `pg_read_all_stats`";
    fleet.sync_ok(&[]);
    let status = fleet.hubsync(&["status"]);
    assert!(status.stdout.contains(note), "{}", status.stdout);
    let check = fleet.hubsync(&["check"]);
    assert!(check.stdout.contains(warning), "{}", check.stdout);
    psql(&admin, &format!("GRANT pg_read_all_stats TO {role}"));
    fleet.sync_ok(&[]);
    let status = fleet.hubsync(&["status"]);
    assert!(!status.stdout.contains(note), "{}", status.stdout);
    let check = fleet.hubsync(&["check"]);
    assert!(!check.stdout.contains(warning), "{}", check.stdout);
    assert_eq!(
        sqlite_query(&fleet.path("s1.db"), "SELECT sku || price FROM prices"),
        "a1"
    );
}
