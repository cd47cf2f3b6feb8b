//! The outbox: follow-up events (`[[flow.on]]` handlers and chained flows)
//! waiting for delivery, delivered, or given up (dead letters).
//!
//! An event is inserted in the master transaction that makes it true (the
//! batch's checkpoint for `rows_changed`, the run's end for `success` and
//! `failure`), so a hub killed right after that commit loses no event. A
//! delivery worker claims due `pending` rows (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL and MySQL, SQLite's single writer otherwise) by pushing their
//! `next_attempt_at` past the attempt's lease and counting the attempt; it
//! then delivers and marks the row `delivered`, or schedules a retry, or
//! marks it `dead` after the handler's last attempt. A worker that dies
//! mid-delivery leaves the row `pending`: it is claimed again once its lease
//! ends, and delivered again under the same event id (at least once; the
//! receiver deduplicates by id).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, StateError, StateStore, text, timestamp};
use crate::connector::{Connector, Tx};
use crate::dialect::Dialect;
use crate::value::Value;

/// Where an outbox row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet (due at `next_attempt_at`, or being delivered).
    Pending,
    /// The handler took it.
    Delivered,
    /// Every attempt failed: a dead letter, kept until replayed.
    Dead,
}

impl DeliveryState {
    /// Stored spelling: `pending`, `delivered`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// The state spelled `text`, if any.
    pub fn parse(text: &str) -> Option<DeliveryState> {
        match text {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// A new event for the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Unique id (UUID v4 text): the webhook's `webhook-id` and the
    /// idempotency key of every delivery of this event.
    pub event_id: String,
    /// The flow whose run or batch raised it.
    pub flow: String,
    /// The site of that run.
    pub site: String,
    /// `success`, `failure` or `rows_changed`.
    pub event: String,
    /// Which handler delivers it: a `[[flow.on]]` handler's name, or
    /// `flow:<name>` for a flow chained with `after`.
    pub handler: String,
    /// The JSON body delivered (see `events::payload`).
    pub payload: String,
}

/// One outbox row.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OutboxRecord {
    /// Event id (idempotency key).
    pub event_id: String,
    /// Flow that raised it.
    pub flow: String,
    /// Site of that run.
    pub site: String,
    /// `success`, `failure` or `rows_changed`.
    pub event: String,
    /// The handler that delivers it.
    pub handler: String,
    /// The JSON body.
    pub payload: String,
    /// When it was written (with its batch or run end).
    pub created_at: DateTime<Utc>,
    /// Pending, delivered or dead.
    pub state: DeliveryState,
    /// Delivery attempts so far (a claim counts as one).
    pub attempts: i64,
    /// When it may next be attempted (for a claimed row: when its lease ends).
    pub next_attempt_at: DateTime<Utc>,
    /// When the handler took it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

const COLUMNS: &str = "event_id, flow, site, event, handler, payload, created_at, state, attempts, \
                       next_attempt_at, delivered_at, last_error";

impl StateStore {
    /// Inserts `events` as `pending`, due now, inside `tx` (the transaction
    /// of the batch's checkpoint or of the run's end).
    ///
    /// Errors: the master refused an insert (roll `tx` back).
    pub async fn enqueue_events(&self, tx: &mut Tx, events: &[NewEvent]) -> Result<()> {
        let now = Utc::now();
        for event in events {
            let params = [
                Value::Text(event.event_id.clone()),
                Value::Text(event.flow.clone()),
                Value::Text(event.site.clone()),
                Value::Text(event.event.clone()),
                Value::Text(event.handler.clone()),
                Value::Text(event.payload.clone()),
                Value::TimestampTz(now),
                Value::Text(DeliveryState::Pending.as_str().into()),
                Value::TimestampTz(now),
            ];
            let p = self.placeholders(&params);
            let sql = format!(
                "INSERT INTO {} (event_id, flow, site, event, handler, payload, created_at, state, next_attempt_at) \
                 VALUES ({})",
                self.table("outbox"),
                p.join(", ")
            );
            tx.execute(&sql, &params).await?;
        }
        Ok(())
    }

    /// Claims at most `limit` pending events due at `now`, oldest first:
    /// each one's attempt count goes up by one and its `next_attempt_at`
    /// moves to `now + lease(event)`, so no other worker takes it until
    /// then. Rows locked by another worker's claim are skipped (PostgreSQL,
    /// MySQL); SQLite serialises the claim in its one writer. Returns the
    /// claimed rows as they were before the claim, except `attempts`,
    /// which counts this one.
    ///
    /// Errors: the master refused the claim (nothing is claimed).
    pub async fn claim_events(
        &self,
        master: &Connector,
        limit: usize,
        now: DateTime<Utc>,
        lease: &(dyn Fn(&OutboxRecord) -> std::time::Duration + Sync),
    ) -> Result<Vec<OutboxRecord>> {
        let table = self.table("outbox");
        let params = [Value::TimestampTz(now)];
        let p = self.placeholders(&params);
        let lock = match self.dialect {
            Dialect::Postgres | Dialect::MySql => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let mut tx = master.begin().await?;
        if self.dialect == Dialect::Sqlite {
            // Take the write lock first: two hubs on one file must not both
            // read the same due rows.
            tx.execute(
                &format!("UPDATE {table} SET state = state WHERE 1 = 0"),
                &[],
            )
            .await?;
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM {table} WHERE state = 'pending' AND next_attempt_at <= {} \
             ORDER BY next_attempt_at, created_at LIMIT {limit}{lock}",
            p[0]
        );
        let batch = tx.query(&sql, &params).await?;
        let mut claimed = Vec::with_capacity(batch.rows.len());
        for row in &batch.rows {
            let mut record = outbox_record(row)?;
            record.attempts += 1;
            let until = now + chrono::Duration::from_std(lease(&record)).unwrap_or_default();
            let params = [
                Value::Int(record.attempts),
                Value::TimestampTz(until),
                Value::Text(record.event_id.clone()),
            ];
            let p = self.placeholders(&params);
            let sql = format!(
                "UPDATE {table} SET attempts = {}, next_attempt_at = {} WHERE event_id = {}",
                p[0], p[1], p[2]
            );
            tx.execute(&sql, &params).await?;
            claimed.push(record);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Marks a pending event delivered. Returns false if it was not
    /// pending (replayed or given up meanwhile).
    pub async fn event_delivered(&self, master: &Connector, event_id: &str) -> Result<bool> {
        let params = [
            Value::TimestampTz(Utc::now()),
            Value::Text(event_id.to_string()),
        ];
        let p = self.placeholders(&params);
        let sql = format!(
            "UPDATE {} SET state = 'delivered', delivered_at = {}, last_error = NULL \
             WHERE event_id = {} AND state = 'pending'",
            self.table("outbox"),
            p[0],
            p[1]
        );
        Ok(master.execute(&sql, &params).await? == 1)
    }

    /// Records a failed attempt of a pending event: due again at `retry_at`,
    /// or, with `None`, a dead letter.
    pub async fn event_failed(
        &self,
        master: &Connector,
        event_id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let (state, at) = match retry_at {
            Some(at) => (DeliveryState::Pending, at),
            None => (DeliveryState::Dead, Utc::now()),
        };
        let params = [
            Value::Text(state.as_str().into()),
            Value::TimestampTz(at),
            Value::Text(error.to_string()),
            Value::Text(event_id.to_string()),
        ];
        let p = self.placeholders(&params);
        let sql = format!(
            "UPDATE {} SET state = {}, next_attempt_at = {}, last_error = {} \
             WHERE event_id = {} AND state = 'pending'",
            self.table("outbox"),
            p[0],
            p[1],
            p[2],
            p[3]
        );
        master.execute(&sql, &params).await?;
        Ok(())
    }

    /// Outbox rows, newest first, at most `limit`; only those in `state`
    /// when given.
    pub async fn events(
        &self,
        master: &Connector,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>> {
        let params: Vec<Value> = state
            .map(|s| Value::Text(s.as_str().into()))
            .into_iter()
            .collect();
        let p = self.placeholders(&params);
        let filter = p
            .first()
            .map_or(String::new(), |p| format!(" WHERE state = {p}"));
        let sql = format!(
            "SELECT {COLUMNS} FROM {}{filter} ORDER BY created_at DESC, event_id LIMIT {limit}",
            self.table("outbox")
        );
        let batch = master.query(&sql, &params).await?;
        batch.rows.iter().map(|row| outbox_record(row)).collect()
    }

    /// Which of `event_ids` name an event that [`StateStore::replay_event`]
    /// would make pending again (it exists and is dead or delivered), for
    /// `hubsync events replay` to refuse the whole command before
    /// re-queuing any.
    ///
    /// Errors: the master refused the query.
    pub async fn replayable_events(
        &self,
        master: &Connector,
        event_ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut found = std::collections::HashSet::new();
        for chunk in event_ids.chunks(500) {
            let params: Vec<Value> = chunk.iter().map(|id| Value::Text(id.clone())).collect();
            let sql = format!(
                "SELECT event_id FROM {} WHERE state <> 'pending' AND event_id IN ({})",
                self.table("outbox"),
                self.placeholders(&params).join(", ")
            );
            let batch = master.query(&sql, &params).await?;
            found.extend(batch.rows.iter().map(|row| text(&row[0])));
        }
        Ok(found)
    }

    /// Makes a dead (or delivered) event pending again, due now, with its
    /// attempts reset: it is delivered again under the same event id.
    /// Returns false if no such event exists or it is already pending.
    pub async fn replay_event(&self, master: &Connector, event_id: &str) -> Result<bool> {
        let params = [
            Value::TimestampTz(Utc::now()),
            Value::Text(event_id.to_string()),
        ];
        let p = self.placeholders(&params);
        let sql = format!(
            "UPDATE {} SET state = 'pending', attempts = 0, next_attempt_at = {} \
             WHERE event_id = {} AND state <> 'pending'",
            self.table("outbox"),
            p[0],
            p[1]
        );
        Ok(master.execute(&sql, &params).await? == 1)
    }

    /// Deletes delivered events created before `older_than` (the daemon's
    /// run-history retention, `hub.run_history_days`); pending and dead ones
    /// stay. Returns how many were deleted.
    pub async fn prune_events(&self, master: &Connector, older_than: DateTime<Utc>) -> Result<u64> {
        let params = [Value::TimestampTz(older_than)];
        let sql = format!(
            "DELETE FROM {} WHERE created_at < {} AND state = 'delivered'",
            self.table("outbox"),
            self.dialect.typed_placeholder(1, &params[0])
        );
        Ok(master.execute(&sql, &params).await?)
    }

    /// Number of outbox rows per state: (pending, delivered, dead).
    pub async fn event_counts(&self, master: &Connector) -> Result<(i64, i64, i64)> {
        let sql = format!(
            "SELECT state, count(*) FROM {} GROUP BY state",
            self.table("outbox")
        );
        let batch = master.query(&sql, &[]).await?;
        let mut counts = (0, 0, 0);
        for row in &batch.rows {
            let n = match &row[1] {
                Value::Int(n) => *n,
                other => text(other).parse().unwrap_or(0),
            };
            match DeliveryState::parse(&text(&row[0])) {
                Some(DeliveryState::Pending) => counts.0 = n,
                Some(DeliveryState::Delivered) => counts.1 = n,
                Some(DeliveryState::Dead) => counts.2 = n,
                None => {}
            }
        }
        Ok(counts)
    }
}

/// A row selected with [`COLUMNS`].
fn outbox_record(row: &[Value]) -> Result<OutboxRecord> {
    let optional_text = |value: &Value| match value {
        Value::Null => None,
        other => Some(text(other)),
    };
    let state = text(&row[7]);
    Ok(OutboxRecord {
        event_id: text(&row[0]),
        flow: text(&row[1]),
        site: text(&row[2]),
        event: text(&row[3]),
        handler: text(&row[4]),
        payload: text(&row[5]),
        created_at: timestamp(&row[6])?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StateError::Corrupt(format!("outbox state `{state}`")))?,
        attempts: match &row[8] {
            Value::Int(n) => *n,
            other => text(other).parse().unwrap_or(0),
        },
        next_attempt_at: timestamp(&row[9])?,
        delivered_at: match &row[10] {
            Value::Null => None,
            other => Some(timestamp(other)?),
        },
        last_error: optional_text(&row[11]),
    })
}
