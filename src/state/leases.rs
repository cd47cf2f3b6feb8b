//! Leases on (flow, site) work items, for several hub replicas sharing one
//! PostgreSQL master (`hub.leases = true`; table `hubsync.leases`, schema
//! version 11).
//!
//! The same shape as the PostgreSQL job queues River, Oban and
//! graphile-worker use: a replica claims due rows with
//! `SELECT ... FOR UPDATE SKIP LOCKED` (replicas polling at once take
//! different rows and never wait on each other), stamps them with its
//! `holder` id and a `deadline` on the **database's** clock (`now()` plus
//! the lease period: replicas' clocks do not matter), renews the deadline by
//! heartbeat while it works, and releases the row when the run ends,
//! setting the pair's next due time. A replica that dies stops renewing; once
//! the deadline passes any replica may claim the row again.
//!
//! **Fencing.** A claim bumps the row's `token` (a bigint that only grows).
//! Those queues rescue a stuck job by time alone, so a worker that was only
//! paused (a GC pause, SIGSTOP, a VM migration) resumes and finishes the job
//! a second time (graphile-worker issue #169: duplicate results from a job
//! unlocked after 4 hours while it still ran; River issue #1302: the rescuer
//! overwrote a job that had completed). Here every master write of a leased
//! run checks, in its own transaction, that the lease row still carries the
//! run's (holder, token) ([`StateStore::check_lease`], `FOR SHARE`, so a
//! claim cannot bump the token between the check and the commit), and the
//! run's end is the lease's release ([`StateStore::finish_leased_run`]). A
//! replica that wakes after its lease was taken over is refused with
//! [`StateError::LeaseLost`] and writes nothing.
//!
//! No session-level advisory locks: every lock here lives in one
//! transaction, so the hub works behind PgBouncer in transaction pooling.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{NewEvent, Result, RunEnd, StateError, StateStore, text};
use crate::connector::{Connector, Tx};
use crate::dialect::Dialect;
use crate::value::Value;

/// Separator of the lists bound as one text parameter (`string_to_array`):
/// the ASCII unit separator, which no flow name or site id holds.
const LIST_SEPARATOR: char = '\u{1f}';

/// A claimed lease: the right of `holder` to run (`flow`, `site`) while the
/// master's row still carries `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Flow name.
    pub flow: String,
    /// Site id.
    pub site: String,
    /// The replica holding it (`hub.replica_id`).
    pub holder: String,
    /// The fencing token this claim set (grows by one per claim).
    pub token: i64,
}

/// One row returned by [`StateStore::claim_due`].
#[derive(Clone, Debug)]
pub struct Claim {
    /// The lease now held.
    pub lease: Lease,
    /// The replica whose lease expired, when this claim took one over.
    pub taken_from: Option<String>,
}

/// When a pair is due again after its lease is released.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NextDue {
    /// The master's `now()` plus this interval (`every` schedules).
    After(Duration),
    /// This instant (the next match of a cron schedule).
    At(DateTime<Utc>),
    /// Unchanged: the pair is due at once for any replica (the run was
    /// interrupted before it did its work).
    Keep,
}

/// A lease row, for `status`, the API and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRecord {
    /// Flow name.
    pub flow: String,
    /// Site id.
    pub site: String,
    /// Holding replica, `None` when free.
    pub holder: Option<String>,
    /// Fencing token of the last claim (0: never claimed).
    pub token: i64,
    /// When the pair is next due.
    pub next_due: DateTime<Utc>,
}

fn millis(duration: Duration) -> Value {
    Value::Int(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

fn joined(items: &[&str]) -> Value {
    Value::Text(items.join(&LIST_SEPARATOR.to_string()))
}

impl StateStore {
    /// Refuses a master other than PostgreSQL (leases need `SKIP LOCKED`
    /// and the lease table of schema v11, created on PostgreSQL only).
    fn leases_supported(&self) -> Result<()> {
        match self.dialect {
            Dialect::Postgres => Ok(()),
            other => Err(StateError::Corrupt(format!(
                "leases need a PostgreSQL master; this master is {}",
                other.name()
            ))),
        }
    }

    fn lost(lease: &Lease) -> StateError {
        StateError::LeaseLost {
            flow: lease.flow.clone(),
            site: lease.site.clone(),
            holder: lease.holder.clone(),
            token: lease.token,
        }
    }

    /// Adds a lease row for every (flow, site, first due) in `pairs` that
    /// has none (rows already there keep their holder and due time), in
    /// statements of at most 1,000 pairs. Every replica calls it at start:
    /// the config's fleet enters the schedule.
    pub async fn seed_leases(
        &self,
        master: &Connector,
        pairs: &[(&str, &str, DateTime<Utc>)],
    ) -> Result<()> {
        self.leases_supported()?;
        for chunk in pairs.chunks(1000) {
            let mut params = Vec::with_capacity(chunk.len() * 3);
            let mut rows = Vec::with_capacity(chunk.len());
            for (flow, site, due) in chunk {
                let n = params.len();
                rows.push(format!(
                    "(${}::text, ${}::text, ${}::timestamptz)",
                    n + 1,
                    n + 2,
                    n + 3
                ));
                params.extend([
                    Value::Text(flow.to_string()),
                    Value::Text(site.to_string()),
                    Value::TimestampTz(*due),
                ]);
            }
            let sql = format!(
                "INSERT INTO hubsync.leases (flow, site, next_due) VALUES {} ON CONFLICT (flow, site) DO NOTHING",
                rows.join(", ")
            );
            master.execute(&sql, &params).await?;
        }
        Ok(())
    }

    /// Claims at most `limit` pairs of `flows` × `sites` that are due
    /// (`next_due <= now()`) and free or whose lease expired, oldest due
    /// first, for `holder`, until the master's `now()` + `period`. Each
    /// claim bumps the pair's token. Rows another replica is claiming at
    /// this moment are skipped (`FOR UPDATE SKIP LOCKED`), as are rows a
    /// leased run holds `FOR SHARE` in a write transaction.
    pub async fn claim_due(
        &self,
        master: &Connector,
        flows: &[&str],
        sites: &[&str],
        holder: &str,
        period: Duration,
        limit: usize,
    ) -> Result<Vec<Claim>> {
        self.leases_supported()?;
        let params = [
            joined(flows),
            joined(sites),
            Value::Int(limit as i64),
            Value::Text(holder.to_string()),
            millis(period),
        ];
        let sql = "WITH due AS (SELECT flow, site, holder FROM hubsync.leases \
             WHERE flow = ANY(string_to_array($1::text, chr(31))) AND site = ANY(string_to_array($2::text, chr(31))) \
               AND next_due <= now() AND (holder IS NULL OR deadline < now()) \
             ORDER BY next_due, flow, site LIMIT $3::bigint FOR UPDATE SKIP LOCKED) \
             UPDATE hubsync.leases AS l SET holder = $4::text, token = l.token + 1, \
               deadline = now() + $5::bigint * interval '1 millisecond', claimed_at = now() \
             FROM due WHERE l.flow = due.flow AND l.site = due.site \
             RETURNING l.flow, l.site, l.token, due.holder";
        let batch = master.query(sql, &params).await?;
        let mut claims = Vec::with_capacity(batch.len());
        for row in &batch.rows {
            let Value::Int(token) = row[2] else {
                return Err(StateError::Corrupt("lease token is not an integer".into()));
            };
            claims.push(Claim {
                lease: Lease {
                    flow: text(&row[0]),
                    site: text(&row[1]),
                    holder: holder.to_string(),
                    token,
                },
                taken_from: match &row[3] {
                    Value::Null => None,
                    other => Some(text(other)),
                },
            });
        }
        Ok(claims)
    }

    /// Moves the lease's deadline to the master's `now()` + `period`, if the
    /// lease is still `lease` (holder and token).
    ///
    /// Errors: [`StateError::LeaseLost`] when another replica took it over;
    /// [`StateError::Connector`] when the master does not answer.
    pub async fn renew_lease(
        &self,
        master: &Connector,
        lease: &Lease,
        period: Duration,
    ) -> Result<()> {
        self.leases_supported()?;
        let params = [
            millis(period),
            Value::Text(lease.flow.clone()),
            Value::Text(lease.site.clone()),
            Value::Text(lease.holder.clone()),
            Value::Int(lease.token),
        ];
        let sql = "UPDATE hubsync.leases SET deadline = now() + $1::bigint * interval '1 millisecond' \
                   WHERE flow = $2::text AND site = $3::text AND holder = $4::text AND token = $5::bigint";
        match master.execute(sql, &params).await? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    /// The fence: inside `tx` (a master write of the leased run), checks
    /// that the lease row still carries `lease`'s holder and token, and
    /// locks it `FOR SHARE` until `tx` ends, so no claim can bump the token
    /// before this transaction commits.
    ///
    /// Errors: [`StateError::LeaseLost`] (roll `tx` back: nothing of it
    /// may be kept); [`StateError::Connector`].
    pub async fn check_lease(&self, tx: &mut Tx, lease: &Lease) -> Result<()> {
        self.leases_supported()?;
        let params = [
            Value::Text(lease.flow.clone()),
            Value::Text(lease.site.clone()),
            Value::Text(lease.holder.clone()),
            Value::Int(lease.token),
        ];
        let sql = "SELECT 1 FROM hubsync.leases WHERE flow = $1::text AND site = $2::text \
                   AND holder = $3::text AND token = $4::bigint FOR SHARE";
        let found = tx.query(sql, &params).await?;
        if found.rows.is_empty() {
            return Err(Self::lost(lease));
        }
        Ok(())
    }

    /// Records the start of a leased run and returns its id: in one fenced
    /// transaction, closes the pair's `running` rows (their replica lost
    /// the lease: a later claim holds it) as failed, kind `interrupted`,
    /// then inserts this run's `running` row with holder `lease.holder`.
    ///
    /// Errors: [`StateError::LeaseLost`], [`StateError::Connector`].
    pub async fn start_leased_run(&self, master: &Connector, lease: &Lease) -> Result<String> {
        let mut tx = master.begin().await?;
        self.check_lease(&mut tx, lease).await?;
        let closed = [
            Value::Text(format!(
                "{}lease lost: the replica running it let its lease expire (stopped, stalled or cut off \
                 from the master) and replica `{}` took the pair over with token {}; rows are counted \
                 up to its last committed batch",
                super::INTERRUPTED,
                lease.holder,
                lease.token
            )),
            Value::Text(lease.flow.clone()),
            Value::Text(lease.site.clone()),
        ];
        tx.execute(
            "UPDATE hubsync.runs SET status = 'failed', finished_at = now(), error = $1::text, \
             error_kind = 'interrupted' WHERE flow = $2::text AND site = $3::text AND status = 'running'",
            &closed,
        )
        .await?;
        let run_id = uuid::Uuid::new_v4().to_string();
        let params = [
            Value::Text(run_id.clone()),
            Value::Text(lease.flow.clone()),
            Value::Text(lease.site.clone()),
            Value::TimestampTz(Utc::now()),
            Value::Text(lease.holder.clone()),
        ];
        tx.execute(
            "INSERT INTO hubsync.runs (run_id, flow, site, started_at, heartbeat_at, holder, status) \
             VALUES ($1::text, $2::text, $3::text, $4::timestamptz, $4::timestamptz, $5::text, 'running')",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(run_id)
    }

    /// Releases the lease (if `lease` still holds it) with the pair's next
    /// due time, inside `tx`.
    async fn release_in(&self, tx: &mut Tx, lease: &Lease, next_due: NextDue) -> Result<()> {
        let mut params = vec![
            Value::Text(lease.flow.clone()),
            Value::Text(lease.site.clone()),
            Value::Text(lease.holder.clone()),
            Value::Int(lease.token),
        ];
        let due = match next_due {
            NextDue::After(interval) => {
                params.push(millis(interval));
                "now() + $5::bigint * interval '1 millisecond'"
            }
            NextDue::At(at) => {
                params.push(Value::TimestampTz(at));
                "$5::timestamptz"
            }
            NextDue::Keep => "next_due",
        };
        let sql = format!(
            "UPDATE hubsync.leases SET holder = NULL, deadline = NULL, next_due = {due}, released_at = now() \
             WHERE flow = $1::text AND site = $2::text AND holder = $3::text AND token = $4::bigint"
        );
        match tx.execute(&sql, &params).await? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    /// Releases a lease whose run never started (outside its window, circuit
    /// open, a stop requested) with the pair's next due time.
    ///
    /// Errors: [`StateError::LeaseLost`]; [`StateError::Connector`].
    pub async fn release_lease(
        &self,
        master: &Connector,
        lease: &Lease,
        next_due: NextDue,
    ) -> Result<()> {
        self.leases_supported()?;
        let mut tx = master.begin().await?;
        self.release_in(&mut tx, lease, next_due).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the end of leased run `run_id` and releases its lease with
    /// the pair's next due time, in ONE transaction: the release is the
    /// fence, so a replica that lost the lease records nothing (its run row
    /// was closed as `lease lost` by the run that took the pair over).
    ///
    /// Errors: [`StateError::LeaseLost`]; [`StateError::Connector`].
    pub async fn finish_leased_run(
        &self,
        master: &Connector,
        lease: &Lease,
        run_id: &str,
        end: &RunEnd<'_>,
        next_due: NextDue,
        events: &[NewEvent],
    ) -> Result<()> {
        self.leases_supported()?;
        let mut tx = master.begin().await?;
        self.release_in(&mut tx, lease, next_due).await?;
        let (sql, params) = self.finish_statement(run_id, end);
        tx.execute(&sql, &params).await?;
        self.enqueue_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every lease row, ordered by flow then site.
    pub async fn leases(&self, master: &Connector) -> Result<Vec<LeaseRecord>> {
        self.leases_supported()?;
        let batch = master
            .query(
                "SELECT flow, site, holder, token, next_due FROM hubsync.leases ORDER BY flow, site",
                &[],
            )
            .await?;
        let mut records = Vec::with_capacity(batch.len());
        for row in &batch.rows {
            records.push(LeaseRecord {
                flow: text(&row[0]),
                site: text(&row[1]),
                holder: match &row[2] {
                    Value::Null => None,
                    other => Some(text(other)),
                },
                token: match row[3] {
                    Value::Int(token) => token,
                    _ => 0,
                },
                next_due: super::timestamp(&row[4])?,
            });
        }
        Ok(records)
    }
}

/// The fleet-wide master write limits (`hub.leases`): write slots as lease
/// rows (`hubsync.write_slots`, one per allowed concurrent write, claimed
/// with `SKIP LOCKED` until a deadline so a dead replica's slot comes back)
/// and one shared token bucket row (`hubsync.rate_bucket`).
impl StateStore {
    /// Creates slots 1..=`slots` and the bucket row, keeping those there.
    ///
    /// Errors: [`StateError::Connector`].
    pub async fn seed_fleet_limits(&self, master: &Connector, slots: usize) -> Result<()> {
        self.leases_supported()?;
        master
            .execute(
                "INSERT INTO hubsync.write_slots (slot) SELECT g FROM generate_series(1, $1::bigint) AS g \
                 ON CONFLICT (slot) DO NOTHING",
                &[Value::Int(slots as i64)],
            )
            .await?;
        master
            .execute(
                "INSERT INTO hubsync.rate_bucket (id, tokens, updated_at) VALUES (1, 0, clock_timestamp()) \
                 ON CONFLICT (id) DO NOTHING",
                &[],
            )
            .await?;
        Ok(())
    }

    /// Claims a free (or expired) write slot among 1..=`slots` for `claim`
    /// until the master's clock + `hold`; `None` when all are busy.
    ///
    /// Errors: [`StateError::Connector`].
    pub async fn claim_write_slot(
        &self,
        master: &Connector,
        slots: usize,
        claim: &str,
        hold: Duration,
    ) -> Result<Option<i64>> {
        let params = [
            Value::Int(slots as i64),
            Value::Text(claim.to_string()),
            millis(hold),
        ];
        let sql = "UPDATE hubsync.write_slots SET holder = $2::text, \
                   deadline = clock_timestamp() + $3::bigint * interval '1 millisecond' \
                   WHERE slot = (SELECT slot FROM hubsync.write_slots WHERE slot <= $1::bigint \
                     AND (holder IS NULL OR deadline < clock_timestamp()) ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) \
                   RETURNING slot";
        let batch = master.query(sql, &params).await?;
        Ok(match batch.rows.first().map(|row| &row[0]) {
            Some(Value::Int(slot)) => Some(*slot),
            _ => None,
        })
    }

    /// Frees write slot `slot` if `claim` still holds it.
    ///
    /// Errors: [`StateError::Connector`].
    pub async fn release_write_slot(
        &self,
        master: &Connector,
        slot: i64,
        claim: &str,
    ) -> Result<()> {
        master
            .execute(
                "UPDATE hubsync.write_slots SET holder = NULL, deadline = NULL WHERE slot = $1::bigint AND holder = $2::text",
                &[Value::Int(slot), Value::Text(claim.to_string())],
            )
            .await?;
        Ok(())
    }

    /// Takes `rows` tokens from the shared bucket (refilled at `rate` per
    /// second of the master's clock, holding at most `rate`: one second of
    /// burst) and returns how long the caller must wait before moving them:
    /// the bucket may go into debt, and each caller waits until its own
    /// share of the debt is paid (GCRA-like), so all replicas together move
    /// at most `rate` rows a second after the first second.
    ///
    /// Errors: [`StateError::Connector`].
    pub async fn take_rows(&self, master: &Connector, rows: usize, rate: u32) -> Result<Duration> {
        let params = [Value::Float(f64::from(rate)), Value::Float(rows as f64)];
        let sql = "UPDATE hubsync.rate_bucket SET tokens = least($1::float8, tokens + $1::float8 * \
                   extract(epoch FROM clock_timestamp() - updated_at)::float8) - $2::float8, \
                   updated_at = clock_timestamp() WHERE id = 1 RETURNING tokens";
        let batch = master.query(sql, &params).await?;
        let tokens = match batch.rows.first().map(|row| &row[0]) {
            Some(Value::Float(tokens)) => *tokens,
            _ => {
                return Err(StateError::Corrupt(
                    "hubsync.rate_bucket has no row 1".into(),
                ));
            }
        };
        Ok(Duration::from_secs_f64(
            (-tokens).max(0.0) / f64::from(rate),
        ))
    }
}
