//! The state schema's migrations: one ordered list, each entry with every
//! dialect's SQL side by side, and the code that applies them.
//!
//! A master records each version it has run in `schema_version`; a hub
//! applies, in order, every migration after the highest one recorded. A
//! migration that has been released never changes (masters have run its
//! SQL): a new schema change is a new entry at the end of [`MIGRATIONS`],
//! and [`super::SCHEMA_VERSION`] follows from it.
//!
//! Statements are templates: `{checkpoints}`, `{runs}`, `{quarantine}`, `{outbox}`
//! become the state table's name in the master's dialect
//! (`hubsync.runs` / `hubsync_runs`), `{instant}` the column type of an
//! instant (`TIMESTAMPTZ` on PostgreSQL, RFC 3339 `TEXT` on SQLite, a UTC
//! `DATETIME(6)` on MySQL) and `{mysql_table_options}` MySQL's table options.
//!
//! MySQL/MariaDB forms: names are `VARCHAR` (MySQL cannot index `TEXT`) with
//! a binary collation (so they compare exactly, as on the other masters),
//! long text is `LONGTEXT`, tables are created `IF NOT EXISTS`. MySQL's DDL
//! commits at once, so a migration cut short there is completed by the next
//! hub: a column or index that already exists is passed over (by error
//! number, [`already_done`]). Key lengths stay under InnoDB's 3,072-byte
//! limit: the quarantine's row key holds at most 384 characters.

use super::{Result, SCHEMA_VERSION, StateError, StateStore};
use crate::connector::{Connector, ConnectorError, Tx};
use crate::dialect::Dialect;
use crate::value::Value;

/// What one dialect runs for one [`Migration`].
#[derive(Clone, Copy, Debug)]
pub(super) enum Steps {
    /// The migration's `shared` statements: the SQL is the same.
    Shared,
    /// This dialect's own statements, in order.
    Own(&'static [&'static str]),
    /// Nothing to run on this dialect (the version is still recorded); the
    /// text says why.
    Nothing(&'static str),
}

/// One step of the state schema, from `version - 1` to `version`.
#[derive(Debug)]
pub(super) struct Migration {
    /// The schema version this step reaches (the first is 1).
    pub(super) version: i64,
    /// What it is for, in one line.
    pub(super) purpose: &'static str,
    /// Statements of the dialects whose [`Steps`] are [`Steps::Shared`].
    pub(super) shared: &'static [&'static str],
    /// A PostgreSQL master.
    pub(super) postgres: Steps,
    /// A SQLite master.
    pub(super) sqlite: Steps,
    /// A MySQL/MariaDB master.
    pub(super) mysql: Steps,
}

impl Migration {
    /// What `dialect` runs for this step.
    pub(super) fn steps(&self, dialect: Dialect) -> Steps {
        match dialect {
            Dialect::Postgres => self.postgres,
            Dialect::Sqlite => self.sqlite,
            Dialect::MySql => self.mysql,
        }
    }

    /// The statement templates `dialect` runs for this step, in order
    /// (empty for [`Steps::Nothing`]).
    pub(super) fn statements(&self, dialect: Dialect) -> &'static [&'static str] {
        match self.steps(dialect) {
            Steps::Shared => self.shared,
            Steps::Own(statements) => statements,
            Steps::Nothing(_) => &[],
        }
    }
}

/// MySQL's options of every state table.
const MYSQL_TABLE_OPTIONS: &str = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// Every migration of the state schema, oldest first, versions 1, 2, 3...
/// without gaps (unit-tested).
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        purpose: "tables `checkpoints` and `runs`",
        shared: &[
            "CREATE TABLE {checkpoints} (flow TEXT NOT NULL, stream TEXT NOT NULL, site TEXT NOT NULL, \
             position TEXT NOT NULL, fingerprint TEXT NOT NULL, updated_at {instant} NOT NULL, \
             PRIMARY KEY (flow, stream, site))",
            "CREATE TABLE {runs} (run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, site TEXT NOT NULL, \
             started_at {instant} NOT NULL, finished_at {instant}, rows_read BIGINT NOT NULL DEFAULT 0, \
             rows_written BIGINT NOT NULL DEFAULT 0, status TEXT NOT NULL, error TEXT, note TEXT)",
            "CREATE INDEX hubsync_runs_by_flow_site ON {runs} (flow, site, started_at)",
        ],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Own(&[
            "CREATE TABLE IF NOT EXISTS {checkpoints} (flow VARCHAR(191) NOT NULL, stream VARCHAR(191) NOT NULL, \
             site VARCHAR(191) NOT NULL, position LONGTEXT NOT NULL, fingerprint VARCHAR(128) NOT NULL, \
             updated_at DATETIME(6) NOT NULL, PRIMARY KEY (flow, stream, site)) {mysql_table_options}",
            "CREATE TABLE IF NOT EXISTS {runs} (run_id VARCHAR(64) NOT NULL PRIMARY KEY, flow VARCHAR(191) NOT NULL, \
             site VARCHAR(191) NOT NULL, started_at DATETIME(6) NOT NULL, finished_at DATETIME(6), \
             rows_read BIGINT NOT NULL DEFAULT 0, rows_written BIGINT NOT NULL DEFAULT 0, \
             status VARCHAR(16) NOT NULL, error LONGTEXT, note LONGTEXT, \
             INDEX hubsync_runs_by_flow_site (flow, site, started_at)) {mysql_table_options}",
        ]),
    },
    Migration {
        version: 2,
        purpose: "`runs.heartbeat_at`: a live run is not started twice, a dead one is recognised",
        shared: &["ALTER TABLE {runs} ADD COLUMN heartbeat_at {instant}"],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Shared,
    },
    Migration {
        version: 3,
        purpose: "`checkpoints.resume_from`: where the next read starts, at or below the position (late commits)",
        shared: &["ALTER TABLE {checkpoints} ADD COLUMN resume_from TEXT"],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Own(&["ALTER TABLE {checkpoints} ADD COLUMN resume_from LONGTEXT"]),
    },
    Migration {
        version: 4,
        purpose: "`runs.holder` (`host/pid`): a dead hub on this host is recognised without waiting for its heartbeat",
        shared: &["ALTER TABLE {runs} ADD COLUMN holder TEXT"],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Own(&["ALTER TABLE {runs} ADD COLUMN holder VARCHAR(255)"]),
    },
    Migration {
        version: 5,
        purpose: "table `quarantine`: rows a target refused, for `on_error = \"quarantine\"` streams",
        shared: &[
            "CREATE TABLE {quarantine} (flow TEXT NOT NULL, stream TEXT NOT NULL, site TEXT NOT NULL, \
             row_key TEXT NOT NULL, row_values TEXT NOT NULL, error TEXT NOT NULL, quarantined_at {instant} NOT NULL, \
             PRIMARY KEY (flow, stream, site, row_key))",
        ],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Own(&[
            "CREATE TABLE IF NOT EXISTS {quarantine} (flow VARCHAR(128) NOT NULL, stream VARCHAR(128) NOT NULL, \
             site VARCHAR(128) NOT NULL, row_key VARCHAR(384) NOT NULL, row_values LONGTEXT NOT NULL, \
             error LONGTEXT NOT NULL, quarantined_at DATETIME(6) NOT NULL, \
             PRIMARY KEY (flow, stream, site, row_key)) {mysql_table_options}",
        ]),
    },
    Migration {
        version: 6,
        purpose: "index on runs (started_at, run_id): the history newest first (HTTP API, dashboard) and its retention",
        shared: &["CREATE INDEX hubsync_runs_by_start ON {runs} (started_at, run_id)"],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Shared,
    },
    Migration {
        version: 7,
        purpose: "at most one `running` row per (flow, site), enforced by the master: \
                  `start_run` inserts in one statement and relies on it (older duplicates are closed first)",
        shared: &[
            "UPDATE {runs} AS r SET status = 'failed', finished_at = coalesce(r.heartbeat_at, r.started_at), \
             error = 'interrupted: a later run of the same flow and site was started' \
             WHERE r.status = 'running' AND EXISTS (SELECT 1 FROM {runs} AS later \
             WHERE later.flow = r.flow AND later.site = r.site AND later.status = 'running' \
             AND (later.started_at > r.started_at OR (later.started_at = r.started_at AND later.run_id > r.run_id)))",
            "CREATE UNIQUE INDEX hubsync_runs_one_running ON {runs} (flow, site) WHERE status = 'running'",
        ],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Nothing(
            "MySQL has no partial indexes: `start_run` checks for a running row under `GET_LOCK` instead",
        ),
    },
    Migration {
        version: 8,
        purpose: "`checkpoints.snapshot`: the source snapshot of the last completed run (late commits by transaction id)",
        shared: &[],
        postgres: Steps::Own(&["ALTER TABLE {checkpoints} ADD COLUMN IF NOT EXISTS snapshot TEXT"]),
        sqlite: Steps::Own(&["ALTER TABLE {checkpoints} ADD COLUMN snapshot TEXT"]),
        mysql: Steps::Own(&["ALTER TABLE {checkpoints} ADD COLUMN snapshot LONGTEXT"]),
    },
    Migration {
        version: 9,
        purpose: "`runs.error_kind` (`ErrorKind::as_str`): the circuit breaker reads the kind, not the message",
        shared: &[],
        postgres: Steps::Own(&[
            "ALTER TABLE {runs} ADD COLUMN IF NOT EXISTS error_kind TEXT",
            "UPDATE {runs} SET error_kind = 'interrupted' WHERE status = 'failed' AND error LIKE '%interrupted: %'",
        ]),
        sqlite: Steps::Own(&[
            "ALTER TABLE {runs} ADD COLUMN error_kind TEXT",
            "UPDATE {runs} SET error_kind = 'interrupted' WHERE status = 'failed' AND error LIKE '%interrupted: %'",
        ]),
        mysql: Steps::Own(&[
            "ALTER TABLE {runs} ADD COLUMN error_kind VARCHAR(16)",
            "UPDATE {runs} SET error_kind = 'interrupted' WHERE status = 'failed' AND error LIKE '%interrupted: %'",
        ]),
    },
    // Self-contained (only its own table and index, created `IF NOT
    // EXISTS`, so re-running it is harmless): it may be renumbered when
    // branches merge, as long as it stays after v9.
    Migration {
        version: 10,
        purpose: "table `outbox`: follow-up events (`[[flow.on]]`, `after`), written with their batch's checkpoint \
                  or their run's end, delivered at least once; dead letters are its `dead` rows",
        shared: &[
            "CREATE TABLE IF NOT EXISTS {outbox} (event_id TEXT PRIMARY KEY, flow TEXT NOT NULL, site TEXT NOT NULL, \
             event TEXT NOT NULL, handler TEXT NOT NULL, payload TEXT NOT NULL, created_at {instant} NOT NULL, \
             state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, next_attempt_at {instant} NOT NULL, \
             delivered_at {instant}, last_error TEXT)",
            "CREATE INDEX IF NOT EXISTS hubsync_outbox_due ON {outbox} (state, next_attempt_at)",
        ],
        postgres: Steps::Shared,
        sqlite: Steps::Shared,
        mysql: Steps::Own(&[
            "CREATE TABLE IF NOT EXISTS {outbox} (event_id VARCHAR(64) NOT NULL PRIMARY KEY, \
             flow VARCHAR(191) NOT NULL, site VARCHAR(191) NOT NULL, event VARCHAR(32) NOT NULL, \
             handler VARCHAR(191) NOT NULL, payload LONGTEXT NOT NULL, created_at DATETIME(6) NOT NULL, \
             state VARCHAR(16) NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, next_attempt_at DATETIME(6) NOT NULL, \
             delivered_at DATETIME(6), last_error LONGTEXT, \
             INDEX hubsync_outbox_due (state, next_attempt_at)) {mysql_table_options}",
        ]),
    },
    LEASES,
];

/// Version 11: `leases`, one row per (flow, site) of a fleet run by several
/// hub replicas (`hub.leases`; see `state/leases.rs`): the holder, its
/// fencing token, the lease deadline and the pair's next due time, all on
/// the master's clock; `write_slots` and `rate_bucket`, the master write
/// limits shared by the replicas. Self-contained (it only creates its
/// tables), so it can be renumbered when branches merge.
const LEASES: Migration = Migration {
    version: 11,
    purpose: "`leases`: (flow, site) work items claimed by hub replicas with SKIP LOCKED, fencing tokens, \
              next due times; `write_slots`, `rate_bucket`: master limits shared by the replicas",
    shared: &[],
    postgres: Steps::Own(&[
        "CREATE TABLE IF NOT EXISTS hubsync.leases (flow TEXT NOT NULL, site TEXT NOT NULL, \
         holder TEXT, token BIGINT NOT NULL DEFAULT 0, deadline TIMESTAMPTZ, \
         next_due TIMESTAMPTZ NOT NULL, claimed_at TIMESTAMPTZ, released_at TIMESTAMPTZ, \
         PRIMARY KEY (flow, site))",
        "CREATE INDEX IF NOT EXISTS hubsync_leases_due ON hubsync.leases (next_due)",
        "CREATE TABLE IF NOT EXISTS hubsync.write_slots (slot BIGINT PRIMARY KEY, holder TEXT, deadline TIMESTAMPTZ)",
        "CREATE TABLE IF NOT EXISTS hubsync.rate_bucket (id INT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, \
         updated_at TIMESTAMPTZ NOT NULL)",
    ]),
    sqlite: Steps::Nothing(
        "leases need `FOR UPDATE SKIP LOCKED`: several hub replicas need a PostgreSQL master (a SQLite master runs one hub)",
    ),
    mysql: Steps::Nothing(
        "leases are PostgreSQL only for now: a MySQL/MariaDB master runs one hub at a time",
    ),
};

/// True if `error` says a step of a MySQL migration was done already (a
/// migration cut short: MySQL's DDL commits at once): `ER_DUP_FIELDNAME`
/// (1060) or `ER_DUP_KEYNAME` (1061). The other masters run a migration in
/// one transaction and never see that.
fn already_done(dialect: Dialect, error: &ConnectorError) -> bool {
    match dialect {
        Dialect::MySql => matches!(error.code(), Some("1060" | "1061")),
        Dialect::Postgres | Dialect::Sqlite => false,
    }
}

impl StateStore {
    /// The state schema version the master has recorded (0 when it has
    /// none), for readiness checks: ready when it is [`SCHEMA_VERSION`].
    ///
    /// Errors: [`StateError::Connector`] when the master does not answer or
    /// has no version table.
    pub async fn stored_schema_version(&self, master: &Connector) -> Result<i64> {
        let sql = format!("SELECT max(version) FROM {}", self.table("schema_version"));
        let batch = master.query(&sql, &[]).await?;
        Ok(match batch.rows.first().and_then(|r| r.first()) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        })
    }

    /// `template` (a statement of [`MIGRATIONS`]) in this master's dialect.
    fn render(&self, template: &str) -> String {
        let instant = match self.dialect {
            Dialect::Postgres => "TIMESTAMPTZ",
            Dialect::Sqlite => "TEXT",
            Dialect::MySql => "DATETIME(6)",
        };
        template
            .replace("{checkpoints}", &self.table("checkpoints"))
            .replace("{runs}", &self.table("runs"))
            .replace("{quarantine}", &self.table("quarantine"))
            .replace("{outbox}", &self.table("outbox"))
            .replace("{instant}", instant)
            .replace("{mysql_table_options}", MYSQL_TABLE_OPTIONS)
    }

    /// Brings the state schema to [`SCHEMA_VERSION`], serialised between
    /// hubs: in one transaction under an advisory lock on PostgreSQL, in
    /// SQLite's one write transaction, under `GET_LOCK('hubsync.migrate')`
    /// on MySQL (whose DDL commits at once).
    ///
    /// Errors: [`StateError::LockTimeout`] when another hub holds MySQL's
    /// lock for 60 s; [`StateError::Connector`] when the master refuses.
    pub(super) async fn migrate(&self, master: &Connector) -> Result<()> {
        let mut tx = master.begin().await?;
        match self.dialect {
            Dialect::MySql => {
                let locked = tx
                    .query("SELECT GET_LOCK('hubsync.migrate', 60)", &[])
                    .await?;
                if !matches!(
                    locked.rows.first().and_then(|r| r.first()),
                    Some(Value::Int(1))
                ) {
                    return Err(StateError::LockTimeout { seconds: 60 });
                }
                let result = self.migrate_in(&mut tx).await;
                // DDL has committed already; end the transaction, then free the
                // lock on the same connection, whatever happened.
                let _ = tx
                    .execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" }, &[])
                    .await;
                tx.execute("DO RELEASE_LOCK('hubsync.migrate')", &[])
                    .await?;
                result?;
                tx.commit().await?;
            }
            Dialect::Postgres | Dialect::Sqlite => {
                self.migrate_in(&mut tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Creates the version table if missing and applies every migration
    /// after the stored version, inside `tx`.
    async fn migrate_in(&self, tx: &mut Tx) -> Result<()> {
        let version_table = self.table("schema_version");
        match self.dialect {
            Dialect::Postgres => {
                // Serialise concurrent hubs creating the schema (key: "hubsync" in ASCII).
                tx.execute("SELECT pg_advisory_xact_lock(6877274889273713)", &[])
                    .await?;
                // Create only what is missing: PostgreSQL checks the CREATE
                // privilege before `IF NOT EXISTS`, so a login that may not
                // create schemas can still use a `hubsync` schema made for it.
                let exists = tx
                    .query(
                        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'hubsync'), \
                         to_regclass('hubsync.schema_version') IS NOT NULL",
                        &[],
                    )
                    .await?;
                let row = exists.rows.first();
                if matches!(row.map(|r| &r[0]), Some(Value::Int(0))) {
                    tx.execute("CREATE SCHEMA hubsync", &[]).await?;
                }
                if !matches!(row.map(|r| &r[1]), Some(Value::Bool(true))) {
                    tx.execute(
                        &format!("CREATE TABLE {version_table} (version BIGINT NOT NULL)"),
                        &[],
                    )
                    .await?;
                }
            }
            Dialect::Sqlite | Dialect::MySql => {
                tx.execute(
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {version_table} (version BIGINT NOT NULL)"
                    ),
                    &[],
                )
                .await?;
            }
        }
        let current = tx
            .query(&format!("SELECT max(version) FROM {version_table}"), &[])
            .await?;
        let current = match current.rows.first().and_then(|r| r.first()) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        };
        if current > SCHEMA_VERSION {
            return Err(StateError::Corrupt(format!(
                "state schema version {current} is newer than this hubsync understands ({SCHEMA_VERSION}); upgrade hubsync"
            )));
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
            match migration.steps(self.dialect) {
                Steps::Nothing(why) => tracing::debug!(
                    "state schema v{} ({}): nothing to do on {}: {why}",
                    migration.version,
                    migration.purpose,
                    self.dialect.name()
                ),
                Steps::Shared | Steps::Own(_) => {
                    tracing::debug!("state schema v{}: {}", migration.version, migration.purpose)
                }
            }
            for template in migration.statements(self.dialect) {
                match tx.execute(&self.render(template), &[]).await {
                    Ok(_) => {}
                    Err(e) if already_done(self.dialect, &e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let sql = format!(
                "INSERT INTO {version_table} (version) VALUES ({})",
                self.dialect
                    .typed_placeholder(1, &Value::Int(migration.version))
            );
            tx.execute(&sql, &[Value::Int(migration.version)]).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIALECTS: [Dialect; 3] = [Dialect::Postgres, Dialect::Sqlite, Dialect::MySql];

    #[test]
    fn versions_run_from_one_to_the_schema_version_without_gaps() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(
            versions, expected,
            "migrations must be numbered 1, 2, 3... in order; add a new one at the end"
        );
    }

    #[test]
    fn every_dialect_has_statements_for_every_version_or_says_why_not() {
        for migration in MIGRATIONS {
            assert!(
                !migration.purpose.is_empty(),
                "v{}: say what it is for",
                migration.version
            );
            let mut uses_shared = false;
            for dialect in DIALECTS {
                let at = format!("v{} on {}", migration.version, dialect.name());
                match migration.steps(dialect) {
                    Steps::Shared => {
                        uses_shared = true;
                        assert!(!migration.shared.is_empty(), "{at}: `shared` is empty");
                    }
                    Steps::Own(statements) => {
                        assert!(
                            !statements.is_empty(),
                            "{at}: no statements; use `Steps::Nothing` with the reason"
                        );
                        assert!(statements.iter().all(|s| !s.trim().is_empty()), "{at}");
                    }
                    Steps::Nothing(why) => assert!(!why.trim().is_empty(), "{at}: say why"),
                }
            }
            assert_eq!(
                uses_shared,
                !migration.shared.is_empty(),
                "v{}: `shared` statements that no dialect runs",
                migration.version
            );
        }
    }

    #[test]
    fn every_template_renders_completely() {
        for dialect in DIALECTS {
            let store = StateStore { dialect };
            for migration in MIGRATIONS {
                for template in migration.statements(dialect) {
                    let sql = store.render(template);
                    assert!(
                        !sql.contains('{') && !sql.contains('}'),
                        "v{} on {}: unknown placeholder left in `{sql}`",
                        migration.version,
                        dialect.name()
                    );
                }
            }
        }
    }

    #[test]
    fn statements_render_in_each_dialect() {
        let render = |dialect, version: i64, index: usize| {
            let migration = &MIGRATIONS[version as usize - 1];
            StateStore { dialect }.render(migration.statements(dialect)[index])
        };
        assert_eq!(
            render(Dialect::Postgres, 2, 0),
            "ALTER TABLE hubsync.runs ADD COLUMN heartbeat_at TIMESTAMPTZ"
        );
        assert_eq!(
            render(Dialect::Sqlite, 2, 0),
            "ALTER TABLE hubsync_runs ADD COLUMN heartbeat_at TEXT"
        );
        assert_eq!(
            render(Dialect::MySql, 2, 0),
            "ALTER TABLE hubsync_runs ADD COLUMN heartbeat_at DATETIME(6)"
        );
        assert_eq!(
            render(Dialect::MySql, 5, 0),
            "CREATE TABLE IF NOT EXISTS hubsync_quarantine (flow VARCHAR(128) NOT NULL, stream VARCHAR(128) NOT NULL, \
             site VARCHAR(128) NOT NULL, row_key VARCHAR(384) NOT NULL, row_values LONGTEXT NOT NULL, \
             error LONGTEXT NOT NULL, quarantined_at DATETIME(6) NOT NULL, \
             PRIMARY KEY (flow, stream, site, row_key)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
        assert!(MIGRATIONS[6].statements(Dialect::MySql).is_empty());
        // v7 and v9 spell the marker out: released SQL does not follow the constant.
        assert_eq!(super::super::INTERRUPTED, "interrupted: ");
    }
}
