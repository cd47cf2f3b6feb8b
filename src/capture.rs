//! Capture windows: where a run starts reading so that late commits arrive.
//!
//! A row can become visible after a pull has already passed its cursor
//! value: a site transaction that set `updated_at = now()` at its start (or
//! statement start) and committed seconds later. Two measures bring it in:
//!
//! 1. **Overlap.** Each run starts at the checkpoint's cursor minus the
//!    stream's `cursor_lag` (inclusive), not strictly after the checkpoint.
//!    The overlap is re-read every run; the upserts skip unchanged rows, so
//!    it costs reads only. Applies to time cursors (`timestamptz`,
//!    `timestamp`, `date`, and ISO 8601 text as SQLite stores it; a SQLite
//!    cursor declared a date/time type is read as instants, whatever its
//!    storage, so it is one of these too).
//! 2. **A floor from the source's own clock (PostgreSQL, `timestamptz`
//!    cursors).** Before reading, the hub asks the source for its clock
//!    (`now()`) and the start of its oldest open transaction
//!    (`pg_stat_activity.xact_start`: all sessions if the login has
//!    `pg_read_all_stats`, else only its own role's). A row not yet visible
//!    is stamped (by a `now()` cursor) no earlier than the start of the
//!    transaction writing it: either open at that moment (at or after the
//!    oldest start) or started later (at or after the clock, minus the lag
//!    for transactions the login cannot see). The next run starts no later
//!    than this floor, however far the run read: rows committed during a
//!    long backfill are not skipped. The hub's own clock is never used.
//!
//! 3. **Transaction ids (PostgreSQL table sources of a pull).** A cursor
//!    the application supplies (`updated_at = '10:05'` set by the client,
//!    not `now()`) can be older than anything the clock says: a session
//!    inserts at '10:05', stays open, another commits '10:06', the hub runs
//!    and saves '10:06', then the first commits. So each run records the
//!    site's `pg_current_snapshot()` before it reads, and the next run
//!    re-reads rows whose `xmin` (the transaction that wrote the row
//!    version) that snapshot may not have seen: every id at or after its
//!    `xmin` ([`Snapshot`]). Not only its in-progress list: a row written
//!    inside a savepoint (PL/pgSQL `EXCEPTION` blocks, nested ORM
//!    transactions, JDBC autosave) carries its subtransaction's id, which
//!    that list never holds, but which is assigned after its parent's and
//!    so lies at or after `xmin`. Rows of transactions that had already
//!    committed in that range are read again, and the upsert leaves them
//!    unchanged; a transaction kept open at the site keeps `xmin` back, so
//!    while it stays open every run re-reads the rows written since it
//!    began. Only rows below where the cursor read starts are wanted (the
//!    cursor read returns the others).
//!    The filter cannot use an index: it costs one sequential scan of the
//!    table per run, skipped when no transaction was assigned an id at the
//!    site since the last run (an idle site). Source: PostgreSQL manual,
//!    "System Columns" (`xmin`) and "Transaction ID and Snapshot
//!    Information Functions" (`pg_current_snapshot`, `pg_snapshot_xmax`).
//!
//! 4. **Repeated local hours.** A cursor of local times without zone
//!    (`timestamp`, or such text on SQLite) repeats an hour when clocks go
//!    back. With the site's `timezone` tag, a checkpoint inside a repeated
//!    span resumes from the span's start (minus the lag), so rows stamped in
//!    the second pass of that hour are read; this is normal, not a clock
//!    reset. Ambiguity is judged by the zone's rules (`chrono-tz`, the IANA
//!    database).
//!
//! 5. **Gaps in integer cursors (MySQL/MariaDB sources, and PostgreSQL
//!    sources not read by transaction id: a `query`, a push's master,
//!    `late_commits = "lag"`).** An
//!    `AUTO_INCREMENT` id is assigned when a row is inserted but becomes
//!    visible when its transaction commits: a session inserts id 3 and stays
//!    open, another commits id 4, the hub reads 1, 2, 4. A sequence value has
//!    no time to subtract `cursor_lag` from, and MySQL shows a reader no
//!    snapshot of the transactions in progress, so the hub watches the ids
//!    instead: the first gap (a missing id between where the read started
//!    and the highest id read) holds the next run's start just below it
//!    ([`GapScan`]), until `cursor_lag` has passed on the source's clock
//!    since the run that first read past it began ([`GapHold`]). A
//!    transaction that commits within that time is read; a gap that stays
//!    (a rolled-back insert, a deleted row, `auto_increment_increment` > 1)
//!    costs re-reading the rows after it until the hold expires. The rule
//!    follows the "high water mark" of event stores that number events from
//!    a sequence (Marten's async daemon waits a while for a gap in its
//!    sequence to fill before it moves past it). PostgreSQL table pulls
//!    need no such hold (transaction ids, 3 above); a SQLite database has
//!    one writer at a time, so its ids become visible in order.
//!
//! Limit (documented in the README): where the open transactions are not
//! visible (SQLite, a login without `pg_read_all_stats`), a transaction that
//! stays open longer than `cursor_lag` and commits rows with a cursor older
//! than that can still be missed by the incremental pull; a `reset` backfill
//! finds it. Integer, numeric and other text cursors get no overlap (a
//! sequence value has no time to subtract from), but every run restarts
//! inclusively at the saved cursor value: a row updated to exactly that
//! value, whose key sorts before the saved key, is read again (keyset order
//! on (cursor, key) is used within one run only).

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::value::Value;

/// A PostgreSQL snapshot as `pg_current_snapshot()::text` prints it:
/// `xmin:xmax:xip1,xip2,...`, 64-bit transaction ids (`xid8`). Ids below
/// `xmin` had finished when it was taken; `xip` were in progress; ids at or
/// after `xmax` had not been assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every id below it had finished.
    pub xmin: u64,
    /// The first id not yet assigned.
    pub xmax: u64,
    /// Ids in progress (each in `xmin..xmax`), ascending.
    pub xip: Vec<u64>,
}

/// PostgreSQL's text form (`xmin:xmax:xip1,xip2,...`), as
/// `pg_current_snapshot()::text` prints it and the checkpoint stores it;
/// [`Snapshot::parse`] reads it back.
impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, id) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// Parses PostgreSQL's text form; `None` if `text` is not one.
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let list = parts.next()?;
        let mut xip = Vec::new();
        for id in list.split(',').filter(|s| !s.is_empty()) {
            xip.push(id.parse().ok()?);
        }
        xip.sort_unstable();
        (xmin <= xmax).then_some(Snapshot { xmin, xmax, xip })
    }

    /// True if a transaction this snapshot did not see may have committed
    /// by the time `later` was taken: an id was assigned since (`xmax`
    /// moved) or one of its in-progress transactions has finished. False
    /// means the re-read would find nothing (an idle site).
    pub fn may_have_missed_commits(&self, later: &Snapshot) -> bool {
        later.xmax != self.xmax
            || self
                .xip
                .iter()
                .any(|id| later.xip.binary_search(id).is_err())
    }
}

/// A hold on an integer cursor's next start below a gap in the ids read
/// (see the module docs, 5): `since`, the source's clock when the run that
/// first read past the gap began; `below`, the highest cursor value that
/// run read. Every gap at or below `below` is given up once `cursor_lag`
/// has passed since `since`. Stored in the checkpoint's snapshot column as
/// `gaps:<since, microseconds from the Unix epoch>:<below>`
/// ([`GapHold::parse`] reads it back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapHold {
    /// The source's clock when the hold began.
    pub since: DateTime<Utc>,
    /// The highest cursor value read when it began.
    pub below: i64,
}

impl std::fmt::Display for GapHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gaps:{}:{}", self.since.timestamp_micros(), self.below)
    }
}

impl GapHold {
    /// Parses the stored form; `None` for anything else (a PostgreSQL
    /// snapshot, no hold).
    pub fn parse(text: &str) -> Option<GapHold> {
        let mut parts = text.strip_prefix("gaps:")?.splitn(2, ':');
        let since = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let below = parts.next()?.parse().ok()?;
        Some(GapHold { since, below })
    }
}

/// Watches one run's integer cursor values, in the order the cursor read
/// returns them (ascending), for the first gap the next run must start
/// below (see the module docs, 5). Any value that is not an integer turns
/// it off (the cursor is not a sequence).
#[derive(Clone, Debug)]
pub struct GapScan {
    /// The source's clock when this run began.
    now: DateTime<Utc>,
    /// The stored hold, while it runs (not yet `cursor_lag` old).
    hold: Option<GapHold>,
    /// Gaps at or below it are given up: an expired hold's `below`.
    given_up_below: Option<i64>,
    /// The last value seen; at first where the read started.
    last: Option<i64>,
    /// The value just before the first gap still waited for.
    before_gap: Option<i64>,
    /// False once a value was not an integer.
    integers: bool,
    /// Missing ids this run moved past, an expired hold having waited for
    /// them.
    given_up: u64,
}

impl GapScan {
    /// A scan of a run whose cursor read starts at `start` (inclusive;
    /// `None`: the whole table), with the checkpoint's stored `hold`, the
    /// source's clock `now` and the stream's `lag`.
    pub fn new(
        start: Option<&Value>,
        hold: Option<GapHold>,
        now: DateTime<Utc>,
        lag: Duration,
    ) -> GapScan {
        let lag = chrono::Duration::from_std(lag).unwrap_or(chrono::Duration::MAX);
        let (hold, given_up_below) = match hold {
            Some(hold) if now - hold.since >= lag => (None, Some(hold.below)),
            hold => (hold, None),
        };
        GapScan {
            now,
            hold,
            given_up_below,
            last: match start {
                Some(Value::Int(start)) => Some(*start),
                _ => None,
            },
            before_gap: None,
            integers: !matches!(start, Some(value) if !matches!(value, Value::Int(_))),
            given_up: 0,
        }
    }

    /// Takes the next cursor value read.
    pub fn see(&mut self, value: &Value) {
        let Value::Int(id) = *value else {
            self.integers = false;
            return;
        };
        if let Some(last) = self.last
            && self.before_gap.is_none()
            && i128::from(id) > i128::from(last) + 1
        {
            match self.given_up_below {
                // Every missing id at or below the expired hold's `below`.
                Some(below) if id - 1 <= below => {
                    let missing = i128::from(id) - i128::from(last) - 1;
                    self.given_up += u64::try_from(missing).unwrap_or(u64::MAX);
                }
                _ => self.before_gap = Some(last),
            }
        }
        self.last = Some(self.last.map_or(id, |last| last.max(id)));
    }

    /// Ids missing from the rows read that this run moved past after its
    /// hold waited `cursor_lag` for them (0 when none): a transaction that
    /// took one and commits later is missed; rolled-back inserts and
    /// deleted rows leave such gaps too.
    pub fn given_up(&self) -> u64 {
        if self.integers { self.given_up } else { 0 }
    }

    /// Where the next run starts (inclusive) and the hold to store, if a
    /// gap is waited for: the value before the first gap, and the stored
    /// hold while it runs, else a new one from now up to the highest value
    /// read. `None`: no gap to wait for (the checkpoint resumes as usual).
    pub fn held(&self) -> Option<(i64, GapHold)> {
        let before_gap = self.before_gap.filter(|_| self.integers)?;
        let hold = self.hold.clone().unwrap_or(GapHold {
            since: self.now,
            below: self.last.unwrap_or(before_gap),
        });
        Some((before_gap, hold))
    }
}

/// The floor of instants that rows not yet visible at the source may carry:
/// the source's clock `now` minus `lag`, or the start of the oldest open
/// transaction if that is earlier (see the module docs).
pub fn visibility_floor(
    now: DateTime<Utc>,
    oldest_open: Option<DateTime<Utc>>,
    lag: Duration,
) -> DateTime<Utc> {
    let lagged = now - chrono::Duration::from_std(lag).unwrap_or_default();
    match oldest_open {
        Some(open) if open < lagged => open,
        _ => lagged,
    }
}

/// The cursor value the next run should start at (inclusive), given the
/// furthest applied `cursor` value, the stream's `lag`, and for instants the
/// [`visibility_floor`] taken when the run began. `zone`: the time zone of a
/// cursor of local times without zone (the site's `timezone` tag), whose
/// repeated hours widen the overlap (see the module docs).
///
/// Cursor types without a time to subtract the lag from (numbers, other
/// text, bytes) restart at the cursor value itself, inclusive: a row later
/// updated to exactly the saved cursor value whose key sorts before the
/// saved key is read again (the keyset `(cursor, key) > saved` is used only
/// within one run). `None` only for a NULL cursor value or a lag too large
/// to represent.
pub fn resume_from(
    cursor: &Value,
    lag: Duration,
    floor: Option<DateTime<Utc>>,
    zone: Option<Tz>,
) -> Option<Value> {
    if cursor.is_null() {
        return None;
    }
    let lag = chrono::Duration::from_std(lag).ok()?;
    match cursor {
        Value::TimestampTz(instant) => {
            let lagged = *instant - lag;
            Some(Value::TimestampTz(match floor {
                Some(floor) if floor < lagged => floor,
                _ => lagged,
            }))
        }
        Value::Timestamp(local) => Some(Value::Timestamp(local_minus(*local, lag, zone))),
        Value::Date(day) => {
            let days =
                lag.num_seconds().div_euclid(86_400) + i64::from(lag.num_seconds() % 86_400 != 0);
            Some(Value::Date(*day - chrono::Duration::days(days)))
        }
        Value::Text(text) => Some(Value::Text(
            lagged_text(text, lag, zone).unwrap_or_else(|| text.clone()),
        )),
        _ => Some(cursor.clone()),
    }
}

/// For a cursor stored as ISO 8601 text (`2026-01-02T09:00:00.000000Z`,
/// `2026-01-02 09:00:00`, with or without fraction or offset): the first 19
/// characters (date and time to the second, in the text's own offset and
/// separator) minus the lag, rounded down to the second. As a prefix of
/// every later text of the same shape it is a safe inclusive lower bound
/// for a text comparison. `None` if the text is not of that shape. A text
/// without offset inside a repeated local hour of `zone` starts from that
/// hour's start.
fn lagged_text(text: &str, lag: chrono::Duration, zone: Option<Tz>) -> Option<String> {
    let bytes = text.as_bytes();
    let separator = *bytes.get(10)? as char;
    if separator != 'T' && separator != ' ' {
        return None;
    }
    let pattern = format!("%Y-%m-%d{separator}%H:%M:%S");
    let base = NaiveDateTime::parse_from_str(text.get(..19)?, &pattern).ok()?;
    let rest = text.get(19..).unwrap_or_default();
    let without_offset = !rest.contains(['Z', 'z', '+', '-']);
    // Round the lag up to whole seconds: the bound may only be lower.
    let whole_seconds = lag.num_seconds() + i64::from(lag.subsec_nanos() != 0);
    let lag = chrono::Duration::seconds(whole_seconds);
    let lagged = if without_offset {
        local_minus(base, lag, zone)
    } else {
        base - lag
    };
    Some(lagged.format(&pattern).to_string())
}

/// A local time `lag` before `local` in `zone` (a cursor of local times
/// without zone, the site's `timezone` tag), as a lower bound: from the
/// start of a repeated hour `local` falls in (clocks went back), and where
/// the lag crosses a clocks-forward gap, the local time `lag` earlier in
/// real time (03:00:02 EDT minus 5 s is 01:59:57 EST, not 02:59:57, a time
/// that never happened: a row stamped 01:59:59 is 3 s older, within the
/// lag). Without a zone: the plain difference.
fn local_minus(local: NaiveDateTime, lag: chrono::Duration, zone: Option<Tz>) -> NaiveDateTime {
    let Some(zone) = zone else {
        return local - lag;
    };
    let start = fold_start(zone, local).unwrap_or(local);
    let plain = start - lag;
    match zone.from_local_datetime(&start).earliest() {
        Some(instant) => plain.min((instant - lag).naive_local()),
        None => plain,
    }
}

/// If `local` is ambiguous in `zone` (an hour repeated when clocks go
/// back), the first minute of that repeated span; else `None`.
fn fold_start(zone: Tz, local: NaiveDateTime) -> Option<NaiveDateTime> {
    let ambiguous =
        |t: NaiveDateTime| matches!(zone.from_local_datetime(&t), LocalResult::Ambiguous(..));
    if !ambiguous(local) {
        return None;
    }
    let mut start = local.with_second(0)?.with_nanosecond(0)?;
    // Folds last at most a few hours (one hour in practice).
    for _ in 0..(6 * 60) {
        let before = start - chrono::Duration::minutes(1);
        if !ambiguous(before) {
            break;
        }
        start = before;
    }
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn scan(start: Option<i64>, hold: Option<GapHold>, ids: &[i64]) -> Option<(i64, GapHold)> {
        let mut scan = GapScan::new(
            start.map(Value::Int).as_ref(),
            hold,
            utc("2026-03-01T10:00:10Z"),
            Duration::from_secs(5),
        );
        for id in ids {
            scan.see(&Value::Int(*id));
        }
        scan.held()
    }

    #[test]
    fn a_gap_in_the_ids_holds_the_next_start_just_below_it() {
        let now = utc("2026-03-01T10:00:10Z");
        // Read from 2: 2, 4, 5 (3 is in an open transaction): start at 2
        // next time, held from now, below the highest id read (5).
        assert_eq!(
            scan(Some(2), None, &[2, 4, 5]),
            Some((
                2,
                GapHold {
                    since: now,
                    below: 5
                }
            ))
        );
        // The first row read may itself lie past a gap: 3 missing after 2.
        assert_eq!(
            scan(Some(2), None, &[4, 5]),
            Some((
                2,
                GapHold {
                    since: now,
                    below: 5
                }
            ))
        );
        // No gap (repeated values are no gap): resume as usual.
        assert_eq!(scan(Some(2), None, &[2, 3, 3, 4]), None);
        // A first run has no start: gaps between rows still count.
        assert_eq!(
            scan(None, None, &[1, 2, 7]),
            Some((
                2,
                GapHold {
                    since: now,
                    below: 7
                }
            ))
        );
        // Only the first gap holds: 4 missing before 8 missing.
        assert_eq!(
            scan(Some(1), None, &[2, 3, 5, 6, 7, 9]).map(|h| h.0),
            Some(3)
        );
        // Extreme values do not overflow.
        assert_eq!(
            scan(Some(i64::MIN), None, &[i64::MAX]).map(|h| h.0),
            Some(i64::MIN)
        );
    }

    #[test]
    fn a_hold_runs_for_the_lag_then_gives_up_every_gap_it_covered() {
        let since = utc("2026-03-01T10:00:07Z"); // 3 s before now: running
        let old = utc("2026-03-01T10:00:05Z"); // 5 s before now: expired
        // Running: still waiting for 3; the stored hold is kept as it is.
        assert_eq!(
            scan(Some(2), Some(GapHold { since, below: 5 }), &[2, 4, 5, 6]),
            Some((2, GapHold { since, below: 5 }))
        );
        // 3 arrived: nothing to wait for.
        assert_eq!(
            scan(Some(2), Some(GapHold { since, below: 5 }), &[2, 3, 4, 5, 6]),
            None
        );
        // Expired: 3 and 5 are given up (at or below 5), but 8, read past
        // only now, is a new gap, held from now.
        assert_eq!(
            scan(
                Some(2),
                Some(GapHold {
                    since: old,
                    below: 5
                }),
                &[2, 4, 6, 7, 9]
            ),
            Some((
                7,
                GapHold {
                    since: utc("2026-03-01T10:00:10Z"),
                    below: 9
                }
            ))
        );
        let mut expired = GapScan::new(
            Some(&Value::Int(2)),
            Some(GapHold {
                since: old,
                below: 5,
            }),
            utc("2026-03-01T10:00:10Z"),
            Duration::from_secs(5),
        );
        for id in [2, 4, 6, 7, 9] {
            expired.see(&Value::Int(id));
        }
        // 3 and 5 given up; 8 is waited for, not counted.
        assert_eq!(expired.given_up(), 2);
        // A gap straddling `below` (5 and 6 missing, below = 5) still waits.
        assert_eq!(
            scan(
                Some(2),
                Some(GapHold {
                    since: old,
                    below: 5
                }),
                &[2, 3, 4, 7]
            )
            .map(|h| h.0),
            Some(4)
        );
    }

    #[test]
    fn a_cursor_that_is_no_integer_is_not_watched_and_holds_keep_their_text() {
        assert!(scan(Some(2), None, &[2, 4]).is_some());
        let mut scan = GapScan::new(
            None,
            None,
            utc("2026-03-01T10:00:10Z"),
            Duration::from_secs(5),
        );
        scan.see(&Value::Int(1));
        scan.see(&Value::Text("3".into()));
        scan.see(&Value::Int(5));
        assert_eq!(scan.held(), None);
        let hold = GapHold {
            since: utc("2026-03-01T10:00:07.250001Z"),
            below: -42,
        };
        assert_eq!(hold.to_string(), "gaps:1772359207250001:-42");
        assert_eq!(GapHold::parse(&hold.to_string()), Some(hold));
        assert_eq!(GapHold::parse("5:9:7"), None);
        assert_eq!(GapHold::parse("gaps:x:1"), None);
    }

    #[test]
    fn instants_go_back_by_the_lag_or_to_the_visibility_floor() {
        let cursor = Value::TimestampTz(utc("2026-01-02T09:00:00.250Z"));
        let lag = Duration::from_secs(5);
        assert_eq!(
            resume_from(&cursor, lag, None, None),
            Some(Value::TimestampTz(utc("2026-01-02T08:59:55.250Z")))
        );
        // The run began at 09:00:10 with a transaction open since 08:30: it may
        // still commit rows stamped 08:30.
        let floor = visibility_floor(
            utc("2026-01-02T09:00:10Z"),
            Some(utc("2026-01-02T08:30:00Z")),
            lag,
        );
        assert_eq!(floor, utc("2026-01-02T08:30:00Z"));
        assert_eq!(
            resume_from(&cursor, lag, Some(floor), None),
            Some(Value::TimestampTz(floor))
        );
        // A long backfill read rows stamped up to 09:10 although it began at
        // 09:00:10: the next run starts at the clock of the start, less the lag.
        let floor = visibility_floor(utc("2026-01-02T09:00:10Z"), None, lag);
        let far = Value::TimestampTz(utc("2026-01-02T09:10:00Z"));
        assert_eq!(
            resume_from(&far, lag, Some(floor), None),
            Some(Value::TimestampTz(utc("2026-01-02T09:00:05Z")))
        );
        // A floor above the lagged cursor changes nothing.
        assert_eq!(
            resume_from(&cursor, lag, Some(utc("2026-01-02T08:59:59Z")), None),
            Some(Value::TimestampTz(utc("2026-01-02T08:59:55.250Z")))
        );
    }

    #[test]
    fn sqlite_text_cursors_get_a_prefix_bound_in_their_own_shape() {
        let lag = Duration::from_millis(5_500);
        let iso = Value::Text("2026-01-02T00:00:03.000000Z".into());
        assert_eq!(
            resume_from(&iso, lag, None, None),
            Some(Value::Text("2026-01-01T23:59:57".into()))
        );
        let spaced = Value::Text("2026-01-02 09:00:00".into());
        assert_eq!(
            resume_from(&spaced, lag, None, None),
            Some(Value::Text("2026-01-02 08:59:54".into()))
        );
        // The bound sorts at or below every text of that shape at or after it.
        assert!("2026-01-01T23:59:57" <= "2026-01-01T23:59:57.000000Z");
        assert!("2026-01-01T23:59:57" < "2026-01-01T23:59:58Z");
        // Other text restarts at itself (inclusive), with no overlap.
        assert_eq!(
            resume_from(&Value::Text("SKU-17".into()), lag, None, None),
            Some(Value::Text("SKU-17".into()))
        );
    }

    #[test]
    fn a_snapshot_prints_the_text_it_parses_from() {
        for text in ["748:752:748,750", "5:5:"] {
            assert_eq!(Snapshot::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn snapshots_parse_postgres_text_and_tell_an_idle_site() {
        let open = Snapshot::parse("748:752:748,750").unwrap();
        assert_eq!(
            open,
            Snapshot {
                xmin: 748,
                xmax: 752,
                xip: vec![748, 750]
            }
        );
        assert_eq!(Snapshot::parse("5:5:").unwrap().xip, Vec::<u64>::new());
        assert_eq!(Snapshot::parse("7:5:"), None);
        assert_eq!(Snapshot::parse("garbage"), None);
        assert_eq!(Snapshot::parse("1:2:x"), None);
        // Nothing assigned, both still open: nothing to re-read.
        assert!(!open.may_have_missed_commits(&Snapshot::parse("748:752:748,750").unwrap()));
        // 750 finished.
        assert!(open.may_have_missed_commits(&Snapshot::parse("748:752:748").unwrap()));
        // A new id (752) was assigned.
        assert!(open.may_have_missed_commits(&Snapshot::parse("748:753:748,750,752").unwrap()));
    }

    #[test]
    fn numbers_restart_at_their_own_value_and_dates_step_whole_days() {
        // No lag to subtract, but inclusive: a tie at 42 is read again.
        assert_eq!(
            resume_from(&Value::Int(42), Duration::from_secs(5), None, None),
            Some(Value::Int(42))
        );
        assert_eq!(
            resume_from(&Value::Null, Duration::from_secs(5), None, None),
            None
        );
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            resume_from(&Value::Date(day), Duration::from_secs(5), None, None),
            Some(Value::Date(NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()))
        );
        let local = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .unwrap()
            .naive_utc();
        assert_eq!(
            resume_from(
                &Value::Timestamp(local),
                Duration::from_secs(60),
                None,
                None
            ),
            Some(Value::Timestamp(local - chrono::Duration::seconds(60)))
        );
    }

    /// Reported by a trial: a row stamped 01:59:59 local, 3 s before a
    /// checkpoint at 03:00:02 local right after clocks went forward (New
    /// York 2026-03-08 02:00 EST -> 03:00 EDT; Paris 2026-03-29 02:00 CET
    /// -> 03:00 CEST), lies within a 5 s lag in real time but an hour
    /// below in wall-clock time, and was never read.
    #[test]
    fn the_lag_crosses_a_clocks_forward_gap_in_real_time() {
        let new_york: Tz = "America/New_York".parse().unwrap();
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let lag = Duration::from_secs(5);
        let local = |t: &str| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            resume_from(
                &Value::Timestamp(local("2026-03-08 03:00:02")),
                lag,
                None,
                Some(new_york)
            ),
            Some(Value::Timestamp(local("2026-03-08 01:59:57")))
        );
        assert_eq!(
            resume_from(
                &Value::Text("2026-03-29 03:00:02".into()),
                lag,
                None,
                Some(paris)
            ),
            Some(Value::Text("2026-03-29 01:59:57".into()))
        );
        // Away from the gap the plain lag; with an offset, no zone applies.
        assert_eq!(
            resume_from(
                &Value::Timestamp(local("2026-03-08 03:00:10")),
                lag,
                None,
                Some(new_york)
            ),
            Some(Value::Timestamp(local("2026-03-08 03:00:05")))
        );
        assert_eq!(
            resume_from(
                &Value::Text("2026-03-29T03:00:02+02:00".into()),
                lag,
                None,
                Some(paris)
            ),
            Some(Value::Text("2026-03-29T02:59:57".into()))
        );
    }

    #[test]
    fn a_repeated_local_hour_is_re_read_from_its_start() {
        // Paris, 2026-10-25: at 03:00 CEST clocks go back to 02:00 CET, so
        // local 02:00-02:59 happens twice.
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let lag = Duration::from_secs(5);
        let local = |t: &str| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            resume_from(
                &Value::Timestamp(local("2026-10-25 02:40:00")),
                lag,
                None,
                Some(paris)
            ),
            Some(Value::Timestamp(local("2026-10-25 01:59:55")))
        );
        // Outside the fold, or without a zone: the plain lag.
        assert_eq!(
            resume_from(
                &Value::Timestamp(local("2026-10-25 03:10:00")),
                lag,
                None,
                Some(paris)
            ),
            Some(Value::Timestamp(local("2026-10-25 03:09:55")))
        );
        assert_eq!(
            resume_from(
                &Value::Timestamp(local("2026-10-25 02:40:00")),
                lag,
                None,
                None
            ),
            Some(Value::Timestamp(local("2026-10-25 02:39:55")))
        );
        // SQLite text, local: widened; with an offset it is an instant: not.
        assert_eq!(
            resume_from(
                &Value::Text("2026-10-25 02:40:00.123".into()),
                lag,
                None,
                Some(paris)
            ),
            Some(Value::Text("2026-10-25 01:59:55".into()))
        );
        assert_eq!(
            resume_from(
                &Value::Text("2026-10-25T02:40:00Z".into()),
                lag,
                None,
                Some(paris)
            ),
            Some(Value::Text("2026-10-25T02:39:55".into()))
        );
        // The spring gap (02:00-02:59 does not exist on 2026-03-29) is not a fold.
        assert_eq!(
            resume_from(
                &Value::Timestamp(local("2026-03-29 03:30:00")),
                lag,
                None,
                Some(paris)
            ),
            Some(Value::Timestamp(local("2026-03-29 03:29:55")))
        );
    }
}
