//! Errors keep their kind (issue "Correctness", item 6): a deadlock, a
//! cancel or `permission denied` under `on_error = "quarantine"` once
//! quarantined rows and moved the checkpoint on; a refused login was retried
//! like a refused connection; the circuit breaker matched message text.
//! Against the throwaway PostgreSQL and MariaDB servers `scripts/test.sh`
//! starts; each database raises its real error codes (triggers raise the
//! codes a deadlock would, a counter outside the transaction decides how
//! often).

mod common;

use common::{Fleet, hubsync, my_create_db, mysql, pg_create_db, psql, run};

const MASTER_SALES: &str = "CREATE TABLE sales (store_id text, id int, qty int, updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, id));";
const SITE_SALES: &str =
    "CREATE TABLE sales (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL);
     INSERT INTO sales VALUES (1, 10, '2026-11-29 10:00:00+00'), (2, 20, '2026-11-29 10:01:00+00'),
                              (3, 30, '2026-11-29 10:02:00+00');";

/// A quarantining pull of the site's `sales` into the master's `sales`.
fn quarantine_pull(master: &str, site_url: &str, hub_extra: &str) -> String {
    format!(
        "[hub]\nbatch_size = 10\n{hub_extra}\n\n[master]\nurl = \"{master}\"\n\n[[site]]\nid = \"s1\"\nurl = \"{site_url}\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  on_error = \"quarantine\"\n"
    )
}

/// The master's rows, quarantine and checkpoint count, newest run's status
/// and error kind, on one line each.
fn pg_master_state(master: &str) -> String {
    [
        psql(
            master,
            "SELECT coalesce(string_agg(id || ':' || qty, ',' ORDER BY id), '') FROM sales",
        ),
        psql(master, "SELECT count(*) FROM hubsync.quarantine"),
        psql(master, "SELECT count(*) FROM hubsync.checkpoints"),
        psql(
            master,
            "SELECT status || '|' || coalesce(error_kind, '') FROM hubsync.runs ORDER BY started_at DESC LIMIT 1",
        ),
    ]
    .join("\n")
}

#[test]
fn a_deadlock_at_the_master_is_retried_and_quarantines_nothing() {
    let master = pg_create_db("deadlock_master");
    let site = pg_create_db("deadlock_site");
    // The first two statements that insert into `sales` fail as a deadlock
    // victim does (SQLSTATE 40P01); a sequence counts outside the
    // transaction that the error rolls back.
    psql(
        &master,
        &format!(
            "{MASTER_SALES}
             CREATE SEQUENCE victims;
             CREATE FUNCTION deadlock_twice() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('victims') <= 2 THEN
                 RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER deadlock_twice BEFORE INSERT ON sales FOR EACH ROW EXECUTE FUNCTION deadlock_twice();"
        ),
    );
    psql(&site, SITE_SALES);
    let fleet = Fleet::new();
    fleet.write_config(&quarantine_pull(&master, &site, ""));
    fleet.sync_ok(&[]);
    // Two failed attempts, then the batch as a whole: every row, none
    // quarantined (the old code quarantined row 1, the second victim).
    assert_eq!(pg_master_state(&master), "1:10,2:20,3:30\n0\n1\nsucceeded|");
    assert_eq!(psql(&master, "SELECT last_value FROM victims"), "5");
}

#[test]
fn permission_denied_at_the_master_fails_the_site_and_quarantines_nothing() {
    let master = pg_create_db("denied_master");
    let site = pg_create_db("denied_site");
    // A login that may read `sales` but not write it (the state tables are
    // its own: it may create the `hubsync` schema).
    let role = format!("clerk_{}", std::process::id());
    let db = master.rsplit('/').next().unwrap().to_string();
    psql(
        &master,
        &format!(
            "{MASTER_SALES}
             DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
             GRANT CREATE ON DATABASE \"{db}\" TO {role};
             GRANT SELECT ON sales TO {role};"
        ),
    );
    psql(&site, SITE_SALES);
    let clerk = master.replacen("postgres@", &format!("{role}@"), 1);
    let fleet = Fleet::new();
    fleet.write_config(&quarantine_pull(&clerk, &site, ""));
    // `check` says so before any sync.
    let checked = fleet.hubsync(&["check"]);
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains(
            "master table `sales`: the hub's login lacks INSERT, UPDATE on it; grant it (`GRANT INSERT, UPDATE ON ... TO <login>`)"
        ),
        "{}",
        checked.stdout
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "flow `sales` stream `sales` site `s1`: writing to master table `sales`: permission denied for table sales \
             (code 42501); grant the hub's login SELECT, INSERT and UPDATE on it (and DELETE where rows are deleted)"
        ),
        "{}",
        out.stderr
    );
    // Nothing quarantined, no checkpoint: the next run after a GRANT
    // brings every row (the old code quarantined all three and moved on).
    assert_eq!(pg_master_state(&master), "\n0\n0\nfailed|permission");
    psql(
        &master,
        &format!("GRANT INSERT, UPDATE ON sales TO {role};"),
    );
    fleet.sync_ok(&[]);
    assert_eq!(pg_master_state(&master), "1:10,2:20,3:30\n0\n1\nsucceeded|");
    psql(
        &master,
        &format!("REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role};"),
    );
    psql(&common::pg_admin_url(), &format!("DROP ROLE {role}"));
}

#[test]
fn a_canceled_statement_fails_the_site_and_quarantines_nothing() {
    let master = pg_create_db("cancel_master");
    let site = pg_create_db("cancel_site");
    // The first insert cancels its own statement, as `pg_cancel_backend`
    // from an operator would (SQLSTATE 57014).
    psql(
        &master,
        &format!(
            "{MASTER_SALES}
             CREATE SEQUENCE cancels;
             CREATE FUNCTION cancel_once() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('cancels') = 1 THEN
                 PERFORM pg_cancel_backend(pg_backend_pid());
                 PERFORM pg_sleep(5);
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER cancel_once BEFORE INSERT ON sales FOR EACH ROW EXECUTE FUNCTION cancel_once();"
        ),
    );
    psql(&site, SITE_SALES);
    let fleet = Fleet::new();
    fleet.write_config(&quarantine_pull(&master, &site, ""));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("canceling statement due to user request (code 57014)"),
        "{}",
        out.stderr
    );
    assert_eq!(pg_master_state(&master), "\n0\n0\nfailed|canceled");
    fleet.sync_ok(&[]);
    assert_eq!(pg_master_state(&master), "1:10,2:20,3:30\n0\n1\nsucceeded|");
}

#[test]
fn a_mariadb_deadlock_at_the_master_is_retried_and_quarantines_nothing() {
    let master = my_create_db("deadlock_master");
    let site = pg_create_db("my_deadlock_site");
    // A MyISAM counter is not rolled back with the failed statement.
    mysql(
        &master,
        "CREATE TABLE sales (store_id VARCHAR(20) NOT NULL, id INT NOT NULL, qty INT, updated_at DATETIME(6) NOT NULL,
           PRIMARY KEY (store_id, id));
         CREATE TABLE victims (n INT) ENGINE=MyISAM; INSERT INTO victims VALUES (2);
         DELIMITER //
         CREATE TRIGGER deadlock_twice BEFORE INSERT ON sales FOR EACH ROW
         BEGIN
           IF (SELECT n FROM victims) > 0 THEN
             UPDATE victims SET n = n - 1;
             SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213,
               MESSAGE_TEXT = 'Deadlock found when trying to get lock; try restarting transaction';
           END IF;
         END//
         DELIMITER ;",
    );
    psql(&site, SITE_SALES);
    let fleet = Fleet::new();
    fleet.write_config(&quarantine_pull(&master, &site, ""));
    fleet.sync_ok(&[]);
    assert_eq!(
        mysql(
            &master,
            "SELECT group_concat(CONCAT(id, ':', qty) ORDER BY id) FROM sales"
        ),
        "1:10,2:20,3:30"
    );
    assert_eq!(
        mysql(
            &master,
            "SELECT (SELECT count(*) FROM hubsync_quarantine), (SELECT n FROM victims)"
        ),
        "0|0"
    );
}

/// `hubsync sync` with info logs (which show each connect retry).
fn sync_logged(fleet: &Fleet) -> common::Out {
    let mut command = hubsync();
    command
        .env("HUBSYNC_LOG", "info")
        .arg("-c")
        .arg(fleet.path("hubsync.toml"))
        .arg("sync");
    run(&mut command)
}

#[test]
fn a_refused_login_is_not_retried_but_a_refused_connection_is() {
    let master = pg_create_db("login_master");
    let missing_db = pg_create_db("login_site").replace("login_site", "no_such_db");
    let fleet = Fleet::new();
    fleet.write_config(&quarantine_pull(
        &master,
        &missing_db,
        "connect_retries = 2",
    ));
    psql(&master, MASTER_SALES);
    let out = sync_logged(&fleet);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!out.stderr.contains("retrying in"), "{}", out.stderr);
    assert_eq!(
        psql(
            &master,
            "SELECT status || '|' || error_kind FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "failed|login"
    );
    // A closed port: refused, retried twice, then failed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    fleet.write_config(&quarantine_pull(
        &master,
        &format!("postgres://postgres@127.0.0.1:{port}/x"),
        "connect_retries = 2",
    ));
    let out = sync_logged(&fleet);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.matches("retrying in").count(),
        2,
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("(after 3 attempts)"), "{}", out.stderr);
    assert_eq!(
        psql(
            &master,
            "SELECT status || '|' || error_kind FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "failed|connection"
    );
}

#[test]
fn the_circuit_breaker_reads_the_kind_not_the_message() {
    // A site whose error message happens to contain `interrupted: ` (here
    // a table of that name is missing) once never opened its circuit.
    let fleet = Fleet::new();
    common::sqlite_exec(&fleet.path("s1.db"), "CREATE TABLE other (id INTEGER);");
    common::sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, PRIMARY KEY (store_id, id));",
    );
    fleet.write_config(
        &quarantine_pull(
            "sqlite://master.db",
            "sqlite://s1.db",
            "circuit_breaker_failures = 2",
        )
        .replace("source = \"sales\"", "source = \"interrupted: sales\""),
    );
    for _ in 0..2 {
        let out = fleet.hubsync(&["sync"]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("interrupted: sales"), "{}", out.stderr);
    }
    let out = fleet.hubsync(&["sync"]);
    assert!(
        out.stderr
            .contains("circuit open after 2 consecutive failed runs"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(
        common::sqlite_query(
            &fleet.path("master.db"),
            "SELECT group_concat(status || ':' || coalesce(error_kind, ''), ',') FROM \
             (SELECT * FROM hubsync_runs ORDER BY started_at)"
        ),
        "failed:other,failed:other"
    );
}
