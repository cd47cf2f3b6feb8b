//! Shared helpers for integration tests. Each file in `tests/` does `mod common;`.
//!
//! PostgreSQL tests need a server: run them via `scripts/test.sh`, which starts a
//! throwaway server and exports `HUBSYNC_TEST_PG_URL` (an admin URL). Each test
//! creates its own database with [`pg_create_db`], so tests can run in parallel.
#![allow(dead_code)]

pub mod proxy;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The admin connection URL of the test PostgreSQL server.
pub fn pg_admin_url() -> String {
    match std::env::var("HUBSYNC_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "HUBSYNC_TEST_PG_URL is not set: run the tests with scripts/test.sh, which installs \
             PostgreSQL (Debian package `postgresql`) and starts a throwaway server"
        ),
    }
}

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a fresh, uniquely named database on the test server and returns its URL
/// (same scheme/user/host/port/query as the admin URL, with the new database name).
pub fn pg_create_db(prefix: &str) -> String {
    let admin = pg_admin_url();
    let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let suffix = format!("_{}_{}_{}", std::process::id(), n, nanos);

    // Safe identifier: lowercase [a-z0-9_], starting with a letter, at most 63 bytes.
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "t_");
    }
    clean.truncate(63usize.saturating_sub(suffix.len()));
    let name = format!("{clean}{suffix}");

    psql(&admin, &format!("CREATE DATABASE \"{name}\""));
    url_with_db(&admin, &name)
}

/// Replaces the database name (the URL path) in a `postgres://` URL, keeping any query.
fn url_with_db(url: &str, db: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let end_authority = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end_authority];
    let query = rest[end_authority..]
        .find('?')
        .map(|i| &rest[end_authority + i..])
        .unwrap_or("");
    format!("{scheme}{authority}/{db}{query}")
}

/// Runs SQL (one statement or a whole script) with the `psql` client against `url`.
/// Panics with psql's stderr on failure. Returns trimmed stdout: unaligned, tuples
/// only, so rows are `|`-separated columns, one row per line.
pub fn psql(url: &str, sql: &str) -> String {
    let mut child = Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-d", url, "-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run psql ({e}): install the PostgreSQL client (Debian package \
                 `postgresql`), or run the tests with scripts/test.sh"
            )
        });
    // Feed the script from another thread so a large script with large output
    // cannot deadlock. A write error (psql exited early, e.g. cannot connect) is
    // ignored: psql's exit status and stderr below tell the real story.
    let mut stdin = child.stdin.take().expect("psql stdin");
    let script = format!("{sql}\n");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(script.as_bytes());
        // dropping stdin closes it, so psql sees EOF
    });
    let out = child.wait_with_output().expect("wait for psql");
    let _ = writer.join();
    if !out.status.success() {
        panic!(
            "psql failed ({}) on {url}\n--- SQL ---\n{sql}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `hubsync` binary under test, with colour off and quiet logging.
pub fn hubsync() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubsync"));
    cmd.env("NO_COLOR", "1").env("HUBSYNC_LOG", "warn");
    cmd
}

/// Captured result of a finished process.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code; -1 if the process was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion (stdin closed), capturing stdout and stderr.
pub fn run(cmd: &mut Command) -> Out {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a SQL script (several statements, no parameters) on a SQLite file,
/// creating the file if needed. Uses hubsync's own connector, which is real
/// SQLite (the bundled library).
pub fn sqlite_exec(path: &std::path::Path, sql: &str) {
    block_on(async {
        let conn = sqlite_connect(path).await;
        conn.execute_script(sql)
            .await
            .unwrap_or_else(|e| panic!("sqlite {}: {e}\n{sql}", path.display()));
        conn.close().await;
    })
}

/// Runs a query on a SQLite file; returns rows as `a|b|c` lines (NULL as
/// `NULL`), joined with newlines.
pub fn sqlite_query(path: &std::path::Path, sql: &str) -> String {
    block_on(async {
        let conn = sqlite_connect(path).await;
        let batch = conn
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("sqlite {}: {e}\n{sql}", path.display()));
        conn.close().await;
        batch
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

async fn sqlite_connect(path: &std::path::Path) -> hubsync::connector::Connector {
    let url = hubsync::config::DbUrl::Sqlite {
        path: path.to_path_buf(),
    };
    let options = hubsync::connector::ConnectOptions {
        max_connections: 1,
        connect_timeout: std::time::Duration::from_secs(10),
        acquire_timeout: std::time::Duration::from_secs(10),
        statement_timeout: None,
        create_if_missing: true,
    };
    hubsync::connector::Connector::connect(&url, &options)
        .await
        .expect("open sqlite")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A temporary folder holding a config and SQLite files; `sync` etc. run the
/// binary against its `hubsync.toml`.
pub struct Fleet {
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub fn new() -> Fleet {
        Fleet {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path("hubsync.toml"), text).expect("write config");
    }

    /// Runs `hubsync -c <dir>/hubsync.toml <args>`.
    pub fn hubsync(&self, args: &[&str]) -> Out {
        let mut cmd = hubsync();
        cmd.arg("-c").arg(self.path("hubsync.toml")).args(args);
        run(&mut cmd)
    }

    /// Starts `hubsync -c <dir>/hubsync.toml <args>` in the background, its
    /// output captured (for `wait_with_output`).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        hubsync()
            .arg("-c")
            .arg(self.path("hubsync.toml"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start hubsync {args:?}: {e}"))
    }

    /// Runs `hubsync sync <args>` and panics with its output unless it exits 0.
    pub fn sync_ok(&self, args: &[&str]) -> Out {
        let mut full = vec!["sync"];
        full.extend_from_slice(args);
        let out = self.hubsync(&full);
        assert_eq!(
            out.code, 0,
            "sync failed\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        out
    }
}

/// A `psql` session kept open in the background (to hold a transaction or a
/// lock across a sync): `start` sends its first SQL, `finish` sends the last
/// (e.g. `COMMIT;`), ends the session and returns whether psql succeeded.
pub struct PsqlSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
}

impl PsqlSession {
    pub fn start(url: &str, sql: &str) -> PsqlSession {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        writeln!(stdin, "{sql}").expect("write to psql");
        stdin.flush().expect("flush psql");
        PsqlSession { child, stdin }
    }

    pub fn finish(self, sql: &str) -> bool {
        let PsqlSession {
            mut child,
            mut stdin,
        } = self;
        let _ = writeln!(stdin, "{sql}");
        drop(stdin);
        child.wait().map(|status| status.success()).unwrap_or(false)
    }
}

/// The admin connection URL of the test MySQL/MariaDB server
/// (`mysql://user:password@127.0.0.1:port/db`).
pub fn my_admin_url() -> String {
    match std::env::var("HUBSYNC_TEST_MYSQL_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "HUBSYNC_TEST_MYSQL_URL is not set: run the tests with scripts/test.sh, which installs \
             MariaDB (Debian package `mariadb-server`) and starts a throwaway server"
        ),
    }
}

/// (user, password, host, port, database) of a `mysql://` URL.
fn my_url_parts(url: &str) -> (String, String, String, String, String) {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .to_string();
    let (authority, db) = rest.split_once('/').unwrap_or((&rest, ""));
    let (credentials, host_port) = authority.rsplit_once('@').unwrap_or(("root", authority));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "3306"));
    let db = db.split('?').next().unwrap_or("");
    (
        user.to_string(),
        password.to_string(),
        host.to_string(),
        port.to_string(),
        db.to_string(),
    )
}

/// Creates a fresh, uniquely named database on the test MariaDB server and
/// returns its URL (same credentials and address as the admin URL).
pub fn my_create_db(prefix: &str) -> String {
    let admin = my_admin_url();
    let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(30);
    let name = format!("{name}_{}_{}_{}", std::process::id(), n, nanos);
    mysql(
        &admin,
        &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"),
    );
    let (user, password, host, port, _) = my_url_parts(&admin);
    format!("mysql://{user}:{password}@{host}:{port}/{name}")
}

/// Starts the `mariadb` client in the background running `sql` (e.g. to
/// hold a lock for a while); wait for the returned child to finish it.
pub fn mysql_spawn(url: &str, sql: &str) -> std::process::Child {
    let (user, password, host, port, db) = my_url_parts(url);
    let mut command = Command::new("mariadb");
    command
        .args([
            "--no-defaults",
            "--default-character-set=utf8mb4",
            "-N",
            "-B",
        ])
        .arg(format!("-u{user}"))
        .arg(format!("-h{host}"))
        .arg(format!("-P{port}"))
        .arg(format!("-e{sql}"));
    if !password.is_empty() {
        command.arg(format!("-p{password}"));
    }
    if !db.is_empty() {
        command.arg(db);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run mariadb ({e})"))
}

/// Runs SQL (one statement or a script) with the `mariadb` command-line
/// client against `url` (utf8mb4, UTC session). Returns trimmed stdout: rows
/// one per line, columns separated by `|`, `NULL` for NULL, no escaping.
/// Panics with the client's stderr on failure.
pub fn mysql(url: &str, sql: &str) -> String {
    let (user, password, host, port, db) = my_url_parts(url);
    let mut command = Command::new("mariadb");
    command
        .args([
            "--no-defaults",
            "--default-character-set=utf8mb4",
            "-N",
            "-B",
            "--raw",
        ])
        .arg(format!("-u{user}"))
        .arg(format!("-h{host}"))
        .arg(format!("-P{port}"))
        .arg("--init-command=SET time_zone = '+00:00'");
    if !password.is_empty() {
        command.arg(format!("-p{password}"));
    }
    if !db.is_empty() {
        command.arg(db);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run mariadb ({e}): install the MariaDB client (Debian package `mariadb-client`)")
        });
    let mut stdin = child.stdin.take().expect("mariadb stdin");
    let script = format!("{sql}\n");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(script.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for mariadb");
    let _ = writer.join();
    if !out.status.success() {
        panic!(
            "mariadb failed ({}) on {url}\n--- SQL ---\n{sql}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .map(|line| line.replace('\t', "|"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The compare-and-set rules of `StateStore::save_checkpoint`, checked
/// against the master at `url` (any dialect; a `sqlite://` URL is relative
/// to `base_dir` and the file is created): a checkpoint is written only over
/// the one its writer expects; a stale writer, or one that expects no
/// checkpoint where one is stored, is refused with `CheckpointMoved` and
/// changes nothing; a position that sorts before the stored one is refused
/// with `CheckpointBackwards`; `delete_checkpoints` (`hubsync reset`) still
/// works and wins over a run that read the checkpoint before; of two
/// writers that read the same checkpoint, the second to write is refused.
pub fn checkpoint_compare_and_set(url: &str, base_dir: &std::path::Path) {
    use hubsync::config::DbUrl;
    use hubsync::connector::{ConnectOptions, Connector};
    use hubsync::state::{Checkpoint, CheckpointKey, StateError, StateStore};
    use hubsync::value::Value;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db_url = DbUrl::parse(url, None, base_dir).unwrap();
        let options = ConnectOptions {
            max_connections: 3,
            connect_timeout: std::time::Duration::from_secs(10),
            acquire_timeout: std::time::Duration::from_secs(10),
            statement_timeout: None,
            create_if_missing: true,
        };
        let conn = Connector::connect(&db_url, &options).await.unwrap();
        let store = StateStore::open(&conn).await.unwrap();
        let key = CheckpointKey {
            flow: "sales".into(),
            stream: "sales".into(),
            site: "s1".into(),
        };
        let at = |cursor: i64, id: i64, resume: i64| Checkpoint {
            position: vec![Value::Int(cursor), Value::Int(id)],
            fingerprint: "f1".into(),
            resume_from: Some(Value::Int(resume)),
            snapshot: None,
        };
        let stored = || async { store.load_checkpoint(&conn, &key).await.unwrap() };
        let updated_at = || async {
            let records = store.checkpoints(&conn).await.unwrap();
            records.iter().map(|r| r.updated_at).collect::<Vec<_>>()
        };
        let save = |expected: Option<Checkpoint>, new: Checkpoint| {
            let (conn, store, key) = (&conn, &store, &key);
            async move {
                let mut tx = conn.begin().await.unwrap();
                let saved = store
                    .save_checkpoint(&mut tx, key, expected.as_ref(), &new)
                    .await;
                if saved.is_ok() {
                    tx.commit().await.unwrap();
                }
                saved
            }
        };
        let is_moved = |result: &Result<(), StateError>| {
            matches!(result, Err(StateError::CheckpointMoved { flow, stream, site })
                if flow == "sales" && stream == "sales" && site == "s1")
        };

        // The first checkpoint: none expected, none stored.
        let first = at(1, 10, 0);
        save(None, first.clone()).await.unwrap();
        assert_eq!(stored().await, Some(first.clone()));
        let first_written = updated_at().await;

        // Expecting none where one is stored: refused, nothing changes.
        let refused = save(None, at(2, 20, 1)).await;
        assert!(is_moved(&refused), "{refused:?}");
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("flow `sales`, stream `sales`, site `s1`")
                && message.contains("another writer")
                && message.contains("the next run resumes from the stored checkpoint"),
            "{message}"
        );
        assert_eq!(stored().await, Some(first.clone()));
        assert_eq!(updated_at().await, first_written);

        // The normal path: the stored checkpoint is the expected one.
        let second = at(2, 20, 1);
        save(Some(first.clone()), second.clone()).await.unwrap();
        assert_eq!(stored().await, Some(second.clone()));
        let second_written = updated_at().await;

        // A stale writer (it expects the older checkpoint): refused.
        let stale = save(Some(first.clone()), at(3, 30, 2)).await;
        assert!(is_moved(&stale), "{stale:?}");
        // The expected fingerprint counts too.
        let other_definition = Checkpoint {
            fingerprint: "f0".into(),
            ..second.clone()
        };
        let stale = save(Some(other_definition), at(3, 30, 2)).await;
        assert!(is_moved(&stale), "{stale:?}");
        // Backwards: refused before anything is written.
        let backwards = save(Some(second.clone()), at(1, 99, 0)).await;
        assert!(
            matches!(&backwards, Err(StateError::CheckpointBackwards { stored, new, .. })
                if stored == "(2, 20)" && new == "(1, 99)"),
            "{backwards:?}"
        );
        assert_eq!(stored().await, Some(second.clone()));
        assert_eq!(updated_at().await, second_written);

        // The same position again with a new snapshot (what a run stores when
        // only the source's snapshot moved), then the very same values: the
        // stored row still counts as found (MySQL: rows found, not changed).
        let with_snapshot = Checkpoint {
            snapshot: Some("100:105:101,103".into()),
            ..second.clone()
        };
        save(Some(second.clone()), with_snapshot.clone())
            .await
            .unwrap();
        save(Some(with_snapshot.clone()), with_snapshot.clone())
            .await
            .unwrap();
        assert_eq!(stored().await, Some(with_snapshot.clone()));
        // An UPDATE that changes no value still counts its row, which the
        // check relies on (MySQL: the driver's found-rows client flag).
        let table = store.table_name("checkpoints");
        let same = format!("UPDATE {table} SET fingerprint = fingerprint");
        assert_eq!(conn.execute(&same, &[]).await.unwrap(), 1);

        // Two writers that read the same checkpoint: the first holds the row
        // until it commits; the second then finds it moved.
        let third = at(3, 30, 2);
        let mut first_writer = conn.begin().await.unwrap();
        store
            .save_checkpoint(&mut first_writer, &key, Some(&with_snapshot), &third)
            .await
            .unwrap();
        let second_done = std::cell::Cell::new(false);
        let second_writer = async {
            let saved = save(Some(with_snapshot.clone()), at(4, 40, 3)).await;
            second_done.set(true);
            saved
        };
        let first_commits = async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            assert!(
                !second_done.get(),
                "the second writer did not wait for the first one's transaction"
            );
            first_writer.commit().await.unwrap();
        };
        let (late, ()) = tokio::join!(second_writer, first_commits);
        assert!(is_moved(&late), "{late:?}");
        assert_eq!(stored().await, Some(third.clone()));

        // `hubsync reset` forgets it; a run that read it before is refused,
        // a run that starts afresh writes the first checkpoint again.
        assert_eq!(
            store
                .delete_checkpoints(&conn, "sales", Some("sales"), &["s1"])
                .await
                .unwrap(),
            1
        );
        let after_reset = save(Some(third.clone()), at(5, 50, 4)).await;
        assert!(is_moved(&after_reset), "{after_reset:?}");
        assert_eq!(stored().await, None);
        save(None, first.clone()).await.unwrap();
        assert_eq!(stored().await, Some(first));
        conn.close().await;
    });
}
