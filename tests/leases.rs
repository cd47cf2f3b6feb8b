//! Several `hubsync run` replicas on one PostgreSQL master (`hub.leases`):
//! (flow, site) pairs claimed with `SKIP LOCKED`, a killed replica's pairs
//! taken over after its lease, and a stalled replica (SIGSTOP past its
//! lease, then SIGCONT) fenced off: it writes nothing after waking.

mod common;

use std::io::Read;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fleet, hubsync, pg_create_db, psql, sqlite_exec};

const SITES: u32 = 16;

/// Site `i` holds 60 sales (`amount = 1000 i + id`) and 40 payments
/// (`cents = 100 i + id`).
fn make_site(fleet: &Fleet, i: u32) {
    sqlite_exec(
        &fleet.path(&format!("s{i:02}.db")),
        &format!(
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE payments (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL, updated_at TEXT NOT NULL);
             WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 60)
             INSERT INTO sales SELECT k, {i} * 1000 + k, strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || k || ' seconds') FROM n;
             WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 40)
             INSERT INTO payments SELECT k, {i} * 100 + k, strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || k || ' seconds') FROM n;"
        ),
    );
}

fn config() -> String {
    // 100 rows/s per replica in batches of 10, 4 sites at once: a run takes
    // seconds, longer than the 2 s lease, so it renews and can be caught
    // in the middle.
    let mut text = String::from(
        "[hub]\nleases = true\nreplica_id = \"${REPLICA}\"\nlease_seconds = 2\nheartbeat_seconds = 0.5\n\
         batch_size = 10\nmax_rows_per_second = 100\nmax_concurrent_sites = 4\n\n\
         [master]\nurl = \"${MASTER_URL}\"\n",
    );
    for i in 1..=SITES {
        text.push_str(&format!(
            "\n[[site]]\nid = \"s{i:02}\"\nurl = \"sqlite://s{i:02}.db\"\n"
        ));
    }
    for (flow, table) in [("sales", "sales"), ("payments", "payments")] {
        text.push_str(&format!(
            "\n[[flow]]\nname = \"{flow}\"\ndirection = \"pull\"\nschedule = \"every 1h\"\n  [[flow.stream]]\n  \
             source = \"{table}\"\n  target = \"{table}\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  \
             site_column = \"store_id\"\n"
        ));
    }
    text
}

/// The master: target tables, and an audit of every committed write to
/// them and to the checkpoints, by writer (`application_name`) and pair.
const MASTER_TABLES: &str = "
CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, amount bigint NOT NULL, updated_at text NOT NULL,
  PRIMARY KEY (store_id, id));
CREATE TABLE payments (store_id text NOT NULL, id bigint NOT NULL, cents bigint NOT NULL, updated_at text NOT NULL,
  PRIMARY KEY (store_id, id));
CREATE TABLE audit (flow text, site text, app text);";

const AUDIT: &str = "
CREATE FUNCTION audit_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO audit VALUES (TG_TABLE_NAME, NEW.store_id, current_setting('application_name')); RETURN NULL; END $$;
CREATE FUNCTION audit_checkpoints() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO audit VALUES (NEW.flow, NEW.site, current_setting('application_name')); RETURN NULL; END $$;
CREATE TRIGGER a AFTER INSERT OR UPDATE ON sales FOR EACH ROW EXECUTE FUNCTION audit_rows();
CREATE TRIGGER a AFTER INSERT OR UPDATE ON payments FOR EACH ROW EXECUTE FUNCTION audit_rows();
CREATE TRIGGER a AFTER INSERT OR UPDATE ON hubsync.checkpoints FOR EACH ROW EXECUTE FUNCTION audit_checkpoints();";

fn replica(fleet: &Fleet, master: &str, id: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = hubsync();
    cmd.arg("-c")
        .arg(fleet.path("hubsync.toml"))
        .args(args)
        .env("REPLICA", id)
        .env("MASTER_URL", format!("{master}?application_name=hub_{id}"));
    cmd
}

/// A `hubsync run` replica whose stdout and stderr are drained as it
/// writes them: an undrained pipe fills (64 KiB) and blocks the replica's
/// next log line, which would stall it like a SIGSTOP.
struct Replica {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    drains: Vec<std::thread::JoinHandle<()>>,
}

impl Replica {
    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the replica wrote to stderr so far.
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for the replica to exit; its exit code and whole stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait for the replica");
        for drain in self.drains.drain(..) {
            drain.join().unwrap();
        }
        (status.code(), self.stderr())
    }
}

/// Copies `from` into `into` until end of file.
fn drain(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    })
}

fn spawn(fleet: &Fleet, master: &str, id: &str) -> Replica {
    let mut child = replica(fleet, master, id, &["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hubsync run");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let drains = vec![
        drain(
            child.stdout.take().unwrap(),
            Arc::new(Mutex::new(Vec::new())),
        ),
        drain(child.stderr.take().unwrap(), Arc::clone(&stderr)),
    ];
    Replica {
        child,
        stderr,
        drains,
    }
}

/// A process the test can signal: a [`Replica`] or a plain child.
trait Pid {
    fn pid(&self) -> u32;
}

impl Pid for Replica {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Pid for Child {
    fn pid(&self) -> u32 {
        self.id()
    }
}

fn signal(child: &impl Pid, signal: i32) {
    // SAFETY: a plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.pid() as i32, signal) }, 0);
}

/// SIGKILLs the replicas it names when dropped (a test that panics).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill(2) on our own children.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

fn wait_for(what: &str, seconds: u64, done: impl FnMut() -> bool) {
    wait_for_or(what, seconds, done, String::new);
}

/// Polls `done` every 50 ms for up to `seconds`; on time out panics with
/// `diagnosis()` (the replicas' logs, the runs table) so a failure says why.
fn wait_for_or(
    what: &str,
    seconds: u64,
    mut done: impl FnMut() -> bool,
    diagnosis: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", diagnosis());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runs table and each replica's stderr, for a failed wait.
fn diagnosis(master: &str, replicas: &[(&str, &Replica)]) -> String {
    let mut text = psql(
        master,
        "SELECT flow, site, holder, status, error_kind, left(error, 200) FROM hubsync.runs ORDER BY started_at",
    );
    text.push_str("\nleases:\n");
    text.push_str(&psql(
        master,
        "SELECT * FROM hubsync.leases ORDER BY flow, site",
    ));
    for (name, replica) in replicas {
        text.push_str(&format!("\n--- {name} stderr ---\n{}", replica.stderr()));
    }
    text
}

/// The (flow, site, token) of the leases `holder` holds now, once it holds
/// at least one and has committed a write.
fn held_after_a_write(master: &str, holder: &str) -> Vec<(String, String, i64)> {
    let mut held = String::new();
    wait_for(
        &format!("replica {holder} to hold a lease mid-run"),
        60,
        || {
            held = psql(
                master,
                &format!(
                    "SELECT flow, site, token FROM hubsync.leases l WHERE holder = '{holder}' \
                 AND EXISTS (SELECT 1 FROM audit a WHERE a.app = 'hub_{holder}' AND a.flow = l.flow AND a.site = l.site) \
                 ORDER BY 1, 2"
                ),
            );
            !held.is_empty()
        },
    );
    held.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split('|').collect();
            (parts[0].into(), parts[1].into(), parts[2].parse().unwrap())
        })
        .collect()
}

fn token(master: &str, flow: &str, site: &str) -> i64 {
    psql(
        master,
        &format!("SELECT token FROM hubsync.leases WHERE flow = '{flow}' AND site = '{site}'"),
    )
    .parse()
    .unwrap()
}

fn audited(master: &str, app: &str, flow: &str, site: &str) -> u64 {
    psql(
        master,
        &format!(
            "SELECT count(*) FROM audit WHERE app = '{app}' AND flow = '{flow}' AND site = '{site}'"
        ),
    )
    .parse()
    .unwrap()
}

#[test]
fn three_replicas_one_killed_one_stalled_run_every_pair_once_and_the_stalled_one_writes_nothing() {
    let master = pg_create_db("leases_three");
    psql(&master, MASTER_TABLES);
    let fleet = Fleet::new();
    for i in 1..=SITES {
        make_site(&fleet, i);
    }
    fleet.write_config(&config());
    // `status` creates the state tables; then the audit goes on them.
    let status = common::run(&mut replica(&fleet, &master, "setup", &["status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    psql(&master, AUDIT);

    let r1 = spawn(&fleet, &master, "r1");
    let r2 = spawn(&fleet, &master, "r2");
    let r3 = spawn(&fleet, &master, "r3");
    // A failed assertion must not leave a stopped replica behind.
    let guard = KillOnDrop(vec![r1.id(), r2.id(), r3.id()]);

    // r1 dies mid-run: its pairs are taken over once their leases expire.
    let killed = held_after_a_write(&master, "r1");
    signal(&r1, libc::SIGKILL);
    // r2 stalls mid-run, past its lease.
    let stalled = held_after_a_write(&master, "r2");
    signal(&r2, libc::SIGSTOP);
    let taken = || -> Vec<(String, String, i64)> {
        (stalled.iter())
            .filter(|(flow, site, held)| token(&master, flow, site) > *held)
            .cloned()
            .collect()
    };
    wait_for(
        "another replica to take over a pair of the stalled one",
        30,
        || !taken().is_empty(),
    );
    // The others too, unless r2 stopped inside a write's final moment (then
    // it holds the lease row locked and legitimately commits on waking).
    std::thread::sleep(Duration::from_secs(3));
    let taken_over = taken();
    assert!(!taken_over.is_empty());
    // What r2 had committed for those pairs before it woke.
    let before_waking: Vec<u64> = (taken_over.iter())
        .map(|(flow, site, _)| audited(&master, "hub_r2", flow, site))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    signal(&r2, libc::SIGCONT);

    // The cycle completes: every pair has a run that succeeded.
    wait_for_or(
        "every pair's run to succeed",
        120,
        || {
            psql(
                &master,
                "SELECT count(DISTINCT (flow, site)) FROM hubsync.runs WHERE status = 'succeeded'",
            ) == (2 * SITES).to_string()
        },
        || diagnosis(&master, &[("r2", &r2), ("r3", &r3)]),
    );
    // Replicas poll every 0.5 s: give a second pass the chance to (wrongly) run.
    std::thread::sleep(Duration::from_secs(2));
    for child in [&r2, &r3] {
        signal(child, libc::SIGTERM);
    }
    std::mem::forget(guard);
    drop(r1);
    let outputs: Vec<(Option<i32>, String)> = [r2, r3].into_iter().map(Replica::finish).collect();
    for (code, stderr) in &outputs {
        assert_eq!(*code, Some(0), "{stderr}");
        assert!(
            stderr.contains("sharing the fleet with other replicas through leases"),
            "{stderr}"
        );
    }
    let r2_log = &outputs[0].1;
    assert!(r2_log.contains("lease lost"), "{r2_log}");

    // Exactly one run succeeded per (flow, site), none twice.
    assert_eq!(
        psql(
            &master,
            "SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok FROM hubsync.runs GROUP BY flow, site \
             ORDER BY ok DESC LIMIT 1",
        ),
        "1"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT count(*) FROM hubsync.runs WHERE status = 'succeeded'"
        ),
        (2 * SITES).to_string()
    );
    // Every other run is one a replica lost: killed (r1) or stalled (r2).
    let others = psql(
        &master,
        "SELECT holder, status, error_kind, error LIKE '%lease lost%' FROM hubsync.runs \
         WHERE status <> 'succeeded' GROUP BY 1, 2, 3, 4 ORDER BY 1",
    );
    for line in others.lines() {
        assert!(
            line == "r1|failed|interrupted|t" || line == "r2|failed|interrupted|t",
            "{others}"
        );
    }
    // The killed replica's pairs went to others.
    for (flow, site, held) in &killed {
        assert!(token(&master, flow, site) > *held, "{flow} {site}");
    }
    // The stalled replica committed nothing more for the pairs taken from it.
    for ((flow, site, _), before) in taken_over.iter().zip(&before_waking) {
        assert_eq!(
            audited(&master, "hub_r2", flow, site),
            *before,
            "{flow} {site}"
        );
        assert_eq!(
            psql(
                &master,
                &format!(
                    "SELECT status || ' ' || error_kind FROM hubsync.runs WHERE holder = 'r2' \
                     AND flow = '{flow}' AND site = '{site}'"
                )
            ),
            "failed interrupted",
            "{flow} {site}"
        );
    }
    // 0 rows lost or doubled. sales: 16 sites x 60 rows = 960, amounts
    // sum 60 x 1000 x (1 + ... + 16) + 16 x (1 + ... + 60)
    // = 60,000 x 136 + 16 x 1,830 = 8,160,000 + 29,280 = 8,189,280.
    assert_eq!(
        psql(
            &master,
            "SELECT count(*), sum(amount), count(DISTINCT store_id) FROM sales"
        ),
        "960|8189280|16"
    );
    // payments: 16 x 40 = 640; 40 x 100 x 136 + 16 x (1 + ... + 40)
    // = 544,000 + 16 x 820 = 544,000 + 13,120 = 557,120.
    assert_eq!(
        psql(
            &master,
            "SELECT count(*), sum(cents), count(DISTINCT store_id) FROM payments"
        ),
        "640|557120|16"
    );
    // `status` for a large fleet: summary, leases, filters.
    let status = common::run(&mut replica(&fleet, &master, "setup", &["status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.starts_with(
            "Fleet: 16 sites, 32 flow/site pairs: 32 succeeded; 0 with a tripped circuit\n\
             Leases: 0 held, 0 due now, 32 waiting\n"
        ),
        "{}",
        status.stdout
    );
    let one = common::run(&mut replica(
        &fleet,
        &master,
        "setup",
        &[
            "status",
            "--flow",
            "payments",
            "--site",
            "S07",
            "--state",
            "succeeded",
        ],
    ));
    let pair_rows = |out: &str| {
        out.lines()
            .filter(|l| l.contains("succeeded") && !l.starts_with("Fleet"))
            .count()
    };
    assert_eq!(pair_rows(&one.stdout), 1, "{}", one.stdout);
    assert!(
        one.stdout.contains("payments") && one.stdout.contains("s07"),
        "{}",
        one.stdout
    );
    let none = common::run(&mut replica(
        &fleet,
        &master,
        "setup",
        &["status", "--state", "failed"],
    ));
    assert_eq!(pair_rows(&none.stdout), 0, "{}", none.stdout);
    // Every lease is free again and due in about an hour.
    assert_eq!(
        psql(
            &master,
            "SELECT count(*) FROM hubsync.leases WHERE holder IS NULL \
             AND next_due > now() + interval '55 minutes'"
        ),
        (2 * SITES).to_string()
    );
}

#[test]
fn leases_on_a_sqlite_master_keep_single_hub_mode_and_say_so() {
    let fleet = Fleet::new();
    make_site(&fleet, 1);
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, amount INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));",
    );
    fleet.write_config(
        "[hub]\nleases = true\n[master]\nurl = \"sqlite://master.db\"\n[[site]]\nid = \"s01\"\nurl = \"sqlite://s01.db\"\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\nschedule = \"every 1h\"\n  [[flow.stream]]\n  source = \"sales\"\n  \
         target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n",
    );
    let child = fleet.spawn(&["run"]);
    wait_for("the first pass", 30, || {
        common::sqlite_query(&fleet.path("master.db"), "SELECT count(*) FROM sales") == "60"
    });
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "single-hub mode: `hub.leases` needs a PostgreSQL master and this master is sqlite; run only one hub against it"
        ),
        "{stderr}"
    );
}

/// Two replicas with `master_write_concurrency = 1` and
/// `max_rows_per_second = 200` pull 16 x 100 = 1,600 rows in batches of 10.
/// Every master write transaction takes a transaction-scoped advisory lock
/// in a trigger (and sleeps 20 ms): a second write in flight at the same
/// moment, from either replica, finds it taken and is recorded. And the
/// rows arrive no faster than 200 a second for both together.
#[test]
fn two_replicas_share_one_master_write_slot_and_one_row_budget() {
    let master = pg_create_db("leases_limits");
    psql(&master, MASTER_TABLES);
    let fleet = Fleet::new();
    for i in 1..=SITES {
        make_site(&fleet, i);
    }
    let text = config()
        .replace(
            "lease_seconds = 2\nheartbeat_seconds = 0.5\n",
            "lease_seconds = 10\nheartbeat_seconds = 2\n",
        )
        .replace(
            "max_rows_per_second = 100",
            "max_rows_per_second = 200\nmaster_write_concurrency = 1",
        );
    fleet.write_config(&text);
    let status = common::run(&mut replica(&fleet, &master, "setup", &["status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    psql(
        &master,
        "CREATE TABLE clashes (at timestamptz);
         CREATE TABLE writes (at timestamptz);
         CREATE FUNCTION one_writer() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NOT pg_try_advisory_xact_lock(4242) THEN INSERT INTO clashes VALUES (clock_timestamp()); END IF;
           INSERT INTO writes VALUES (clock_timestamp());
           PERFORM pg_sleep(0.02); RETURN NULL; END $$;
         CREATE TRIGGER w AFTER INSERT OR UPDATE ON sales FOR EACH STATEMENT EXECUTE FUNCTION one_writer();
         CREATE TRIGGER w AFTER INSERT OR UPDATE ON payments FOR EACH STATEMENT EXECUTE FUNCTION one_writer();",
    );
    let r1 = spawn(&fleet, &master, "r1");
    let r2 = spawn(&fleet, &master, "r2");
    let guard = KillOnDrop(vec![r1.id(), r2.id()]);
    wait_for_or(
        "every pair's run to succeed",
        120,
        || {
            psql(
                &master,
                "SELECT count(*) FROM hubsync.runs WHERE status = 'succeeded'",
            ) == (2 * SITES).to_string()
        },
        || diagnosis(&master, &[("r1", &r1), ("r2", &r2)]),
    );
    for child in [&r1, &r2] {
        signal(child, libc::SIGTERM);
    }
    std::mem::forget(guard);
    for child in [r1, r2] {
        let (code, stderr) = child.finish();
        assert_eq!(code, Some(0), "{stderr}");
    }
    // Both replicas worked.
    assert_eq!(
        psql(
            &master,
            "SELECT count(DISTINCT holder) FROM hubsync.runs WHERE status = 'succeeded'"
        ),
        "2"
    );
    assert_eq!(psql(&master, "SELECT count(*) FROM clashes"), "0");
    // 1,600 rows in 160 write transactions (16 sites x (6 + 4) batches).
    assert_eq!(psql(&master, "SELECT count(*) FROM writes"), "160");
    assert_eq!(
        psql(
            &master,
            "SELECT (SELECT count(*) FROM sales) + (SELECT count(*) FROM payments)"
        ),
        "1600"
    );
    // The shared bucket starts empty and refills at 200 rows/s: the last
    // batch's 10 rows are taken no sooner than (1,600 - 200 of burst) / 200
    // = 7 s after the first (each replica alone would allow 800 rows in
    // (800 - 200) / 200 = 3 s).
    let span: f64 = psql(
        &master,
        "SELECT extract(epoch FROM max(at) - min(at)) FROM writes",
    )
    .parse()
    .unwrap();
    assert!(
        span >= 6.5,
        "1,600 rows moved in {span} s: faster than 200 rows/s"
    );
}

/// A replica of several works the sites of `[inventory]` too: a store added
/// to the master's table while `run` runs is entered into the lease table
/// and its rows arrive; a store removed is no longer claimed (found by a
/// merge of the inventory and lease branches: leased replicas only ever
/// claimed `[[site]]`s).
#[test]
fn a_leased_replica_claims_the_inventorys_sites_as_they_come_and_go() {
    let fleet = Fleet::new();
    let master = pg_create_db("lease_inventory");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id int, amount int, updated_at text, PRIMARY KEY (store_id, id));
         CREATE TABLE stores (id text PRIMARY KEY, file text, active boolean);",
    );
    make_site(&fleet, 1);
    make_site(&fleet, 2);
    psql(
        &master,
        &format!(
            "INSERT INTO stores VALUES ('s01', '{}', true)",
            fleet.path("s01.db").display()
        ),
    );
    fleet.write_config(
        "[hub]\nleases = true\nreplica_id = \"${REPLICA}\"\nlease_seconds = 2\nheartbeat_seconds = 0.5\n\n\
         [master]\nurl = \"${MASTER_URL}\"\n\n\
         [inventory]\nquery = \"SELECT id, file FROM stores WHERE active\"\nurl = \"sqlite://{file}\"\n\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\nschedule = \"every 1s\"\n  [[flow.stream]]\n  \
         source = \"sales\"\n  target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  \
         site_column = \"store_id\"\n",
    );
    let child = spawn(&fleet, &master, "a");
    let _guard = KillOnDrop(vec![child.id()]);
    // Site i's 60 sales sum to 60 * 1000 i + (1 + ... + 60) = 60,000 i + 1,830.
    let per_store = || {
        psql(
            &master,
            "SELECT store_id, count(*), sum(amount) FROM sales GROUP BY 1 ORDER BY 1",
        )
    };
    wait_for("store s01's sales", 30, || per_store() == "s01|60|61830");
    psql(
        &master,
        &format!(
            "INSERT INTO stores VALUES ('s02', '{}', true)",
            fleet.path("s02.db").display()
        ),
    );
    wait_for("store s02's sales", 40, || {
        per_store() == "s01|60|61830\ns02|60|121830"
    });
    assert_eq!(
        psql(
            &master,
            "SELECT flow, site FROM hubsync.leases ORDER BY site"
        ),
        "sales|s01\nsales|s02"
    );
    // s01 leaves the inventory: its new sale never arrives while s02's does.
    psql(&master, "UPDATE stores SET active = false WHERE id = 's01'");
    std::thread::sleep(Duration::from_secs(7));
    sqlite_exec(
        &fleet.path("s01.db"),
        "INSERT INTO sales VALUES (61, 9, '2027-01-01T00:00:00.000Z');",
    );
    sqlite_exec(
        &fleet.path("s02.db"),
        "INSERT INTO sales VALUES (61, 7, '2027-01-01T00:00:00.000Z');",
    );
    wait_for("store s02's new sale", 30, || {
        per_store() == "s01|60|61830\ns02|61|121837"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(per_store(), "s01|60|61830\ns02|61|121837");
    signal(&child, libc::SIGTERM);
    let (code, stderr) = child.finish();
    assert_eq!(code, Some(0), "{stderr}");
}
