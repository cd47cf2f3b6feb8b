//! Delete detection (`deletes = "detect"`): finds target rows whose key is
//! gone at the source and deletes them, comparing key sets chunk by chunk
//! so an unchanged table costs one small summary per chunk and side.
//!
//! Algorithm (a range-digest comparison in the style of rsync's block
//! checksums and `pt-table-checksum`'s chunked CRCs, written here for key
//! sets):
//!
//! 1. The source's keys are cut in key order into chunks of `batch_size`
//!    keys. For each chunk the source gives (last key, count, digest) and the
//!    target gives (count, digest) of its keys in the same range
//!    `(previous last, last]` (a pull target only its site's rows). A
//!    PostgreSQL side computes its summary in the database
//!    ([`Dialect::key_range_digest`]); a SQLite side (no hash function) has
//!    its keys read and hashed by the hub ([`digest_keys`]), from the same
//!    text forms, so both sides agree across dialects.
//! 2. Equal counts and digests: the chunk is unchanged. Otherwise both
//!    sides' keys of the range are read and compared as text; each target
//!    key missing from the source chunk is a candidate.
//! 3. Target keys after the source's last key are all candidates.
//! 4. A candidate is deleted only after a lookup by key at the source (over
//!    the whole source, not just the range or window) finds it absent. The
//!    ranges therefore only decide where to look: two sides that order text
//!    keys differently (collations) cost extra comparisons, never a wrong
//!    delete.
//!
//! With `deletes_window`, both sides compare only rows whose cursor is at or
//! after (source clock - window): sites that purge old history do not purge
//! it from the master.

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;

use super::error::RunError;
use super::limits::MasterWrites;
use crate::config::{Direction, Stream};
use crate::connector::{Connector, ConnectorError, TableInfo};
use crate::dialect::keys::{KeyRange, digest_keys};
use crate::dialect::{Dialect, SelectFrom, UpsertSpec};
use crate::mediate::MappingPlan;
use crate::state::{CheckpointKey, StateError, StateStore};
use crate::value::Value;

/// Why a push's delete detection cannot be trusted at a site, if it cannot:
/// a `when` or `filter` selects which rows of the master a site gets, and
/// detection compares the site's keys with the master's (a key counts as
/// present when any master row has it). If `primary_key` is not unique at
/// the master (e.g. `sku` where the master holds one price per `sku` and
/// zone, and `when` picks the site's zone), a row deleted at the master
/// hides behind a row of the same key that this site does not get, and is
/// never deleted there. So the master table must have a unique key made of
/// `primary_key` columns; a `query` source cannot be checked and is
/// refused. `None` when detection is off, the stream has no predicate, it
/// is a pull, or the table or its description is missing (reported
/// elsewhere).
pub(super) async fn predicate_key_problem(
    stream: &Stream,
    direction: Direction,
    source: &Connector,
) -> Option<String> {
    if direction != Direction::Push
        || stream.deletes != crate::config::Deletes::Detect
        || (stream.when.is_none() && stream.filter.is_none())
    {
        return None;
    }
    let key: Vec<&str> = stream
        .primary_key
        .iter()
        .map(|k| stream.source_column(k))
        .collect();
    let advice = "add the column the predicate selects on to `primary_key` (and to the sites' \
                  unique key), or select the site's rows in a `query` with `:site.<tag>` instead";
    let table = match &stream.source {
        crate::config::Source::Table(table) => table,
        crate::config::Source::Query(_) => {
            return Some(format!(
                "`deletes = \"detect\"` with `when`/`filter` needs `primary_key` to be unique at the \
                 master, which hubsync cannot check for a `query`; {advice}"
            ));
        }
    };
    let info = source.describe_table(table).await.ok()??;
    let same = |a: &str, b: &str| {
        if info.case_insensitive_names {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let unique = info
        .unique_keys
        .iter()
        .any(|unique| unique.iter().all(|c| key.iter().any(|k| same(k, c))));
    (!unique).then(|| {
        format!(
            "`deletes = \"detect\"` with `when`/`filter` needs `primary_key` ({}) to be unique at the master, \
             and master table `{table}` has no unique key within it: a row deleted at the master would hide \
             behind another row of the same key that this site does not get, and stay at the site; {advice}",
            key.join(", ")
        )
    })
}

/// Keys looked up at the source per statement when confirming candidates.
const LOOKUP_KEYS: usize = 200;

/// One side of the comparison: a table or query, its key columns and
/// filters.
struct Side<'a> {
    /// The database.
    pub conn: &'a Connector,
    /// The rows.
    pub from: SelectFrom<'a>,
    /// Values bound to the query's own `:site.*` placeholders first.
    pub params: &'a [Value],
    /// Key column names on this side, in primary key order.
    pub key: &'a [String],
    /// Pull target only: `(site_column, site id)`.
    pub only: Option<(&'a str, &'a Value)>,
    /// Cursor column on this side, when a window applies.
    pub cursor: Option<&'a str>,
}

/// A key range summarised: its last key, key count and digest, and the keys
/// when the hub read them to compute it.
struct Summary {
    last: Vec<Value>,
    count: i64,
    digest: String,
    keys: Option<Vec<Vec<Value>>>,
}

impl Side<'_> {
    fn range<'r>(
        &'r self,
        after: Option<&'r [Value]>,
        up_to: Option<&'r [Value]>,
        since: Option<&'r Value>,
        limit: Option<usize>,
    ) -> KeyRange<'r> {
        KeyRange {
            from: self.from,
            key: self.key,
            after,
            up_to,
            only: self.only,
            since: self.cursor.zip(since),
            params_before: self.params.len(),
            limit,
        }
    }

    fn bound(&self, params: Vec<Value>) -> Vec<Value> {
        let mut all = self.params.to_vec();
        all.extend(params);
        all
    }

    /// The keys of a range, in key order.
    async fn keys(&self, range: &KeyRange<'_>) -> Result<Vec<Vec<Value>>, ConnectorError> {
        let (sql, params) = self.conn.dialect().key_range_select(range);
        let batch = self.conn.query(&sql, &self.bound(params)).await?;
        Ok(batch.rows)
    }

    /// The summary of a range; `None` when it holds no key.
    async fn summary(&self, range: &KeyRange<'_>) -> Result<Option<Summary>, ConnectorError> {
        if self.conn.dialect() == Dialect::Postgres {
            let (sql, params) = Dialect::Postgres.key_range_digest(range);
            let batch = self.conn.query(&sql, &self.bound(params)).await?;
            let Some(row) = batch.rows.into_iter().next() else {
                return Ok(None);
            };
            let n = self.key.len();
            let (count, digest) = match (&row[n], &row[n + 1]) {
                (Value::Int(count), Value::Text(digest)) => (*count, digest.clone()),
                other => {
                    return Err(ConnectorError::other(format!(
                        "unexpected key summary {other:?}"
                    )));
                }
            };
            return Ok(Some(Summary {
                last: row[..n].to_vec(),
                count,
                digest,
                keys: None,
            }));
        }
        let keys = self.keys(range).await?;
        Ok(keys.last().cloned().map(|last| Summary {
            last,
            count: keys.len() as i64,
            digest: digest_keys(&keys),
            keys: Some(keys),
        }))
    }

    /// Which of `candidates` (keys as read from the other side) exist here,
    /// as text keys; looked up over the whole table or query, no window.
    async fn present(&self, candidates: &[Vec<Value>]) -> Result<HashSet<TextKey>, ConnectorError> {
        let mut present = HashSet::new();
        for chunk in candidates.chunks(LOOKUP_KEYS) {
            let (sql, params) =
                self.conn
                    .dialect()
                    .key_lookup(self.from, self.key, chunk, self.params.len());
            let batch = self.conn.query(&sql, &self.bound(params)).await?;
            present.extend(batch.rows.iter().map(|row| text_key(row)));
        }
        Ok(present)
    }
}

/// Whether the source has no key at all (whatever the window).
async fn source_is_empty(source: &Side<'_>) -> Result<bool, ConnectorError> {
    let range = source.range(None, None, None, Some(1));
    Ok(source.keys(&range).await?.is_empty())
}

/// A key in its PostgreSQL text form, comparable across dialects.
type TextKey = Vec<Option<String>>;

fn text_key(row: &[Value]) -> TextKey {
    row.iter().map(Value::to_pg_text).collect()
}

/// Where the comparison deletes: the target table and its delete key.
struct DeleteAt<'a> {
    /// The target table, as written in config.
    pub table: &'a str,
    /// The target's description (PostgreSQL casts the keys to its types).
    pub info: &'a TableInfo,
    /// Pull: the site column and the site id, prepended to each key.
    pub site: Option<(&'a str, &'a Value)>,
}

/// Everything delete detection needs of its stream run, and no more: the
/// stream's config, the two databases and how rows are read from each, the
/// site, the source's clock, and the hub's limits.
pub(super) struct DetectDeletes<'a> {
    /// The stream (key, cursor, `deletes_window`, `columns`, target).
    pub stream: &'a Stream,
    /// Pull: the target holds every site's rows, this site's under
    /// `site_column`.
    pub direction: Direction,
    /// The site id, as bound to the target's `site_column`.
    pub site_id: &'a Value,
    /// The database read (the site on a pull).
    pub source: &'a Connector,
    /// The rows read at the source (table or bound query).
    pub source_from: SelectFrom<'a>,
    /// Values of the source query's `:site.*` placeholders.
    pub source_params: &'a [Value],
    /// The database written.
    pub target: &'a Connector,
    /// The target's description.
    pub target_info: &'a TableInfo,
    /// The source's clock (the window's end).
    pub now: chrono::DateTime<chrono::Utc>,
    /// The checkpoint's cursor value, to refuse a window on a number cursor.
    pub cursor_value: Option<&'a Value>,
    /// Keys per chunk (`batch_size`).
    pub chunk: usize,
    /// Held around each delete when the target is the master.
    pub master_writes: Option<&'a MasterWrites>,
    /// A leased run deleting at the master: each delete transaction checks
    /// the lease before it commits (see `state/leases.rs`).
    pub fence: Option<(&'a StateStore, &'a crate::state::Lease)>,
    /// Stops between chunks.
    pub cancel: &'a CancellationToken,
    /// With `on_error = "quarantine"`: the master's state and this
    /// (flow, stream, site), whose quarantine entries of deleted rows are
    /// released (a row gone at the source is no longer refused).
    pub quarantine: Option<(&'a StateStore, &'a Connector, &'a CheckpointKey)>,
}

impl DetectDeletes<'_> {
    /// Runs delete detection (see the module docs); returns rows deleted
    /// and pushes remarks for the run history to `notes`.
    ///
    /// Errors: a `deletes_window` on a number cursor or on a cursor the
    /// target does not store; a failed read or delete, naming the side.
    pub(super) async fn run(&self, notes: &mut Vec<String>) -> Result<u64, RunError> {
        let stream = self.stream;
        if stream.deletes_window.is_some()
            && let Some(value @ (Value::Int(_) | Value::Float(_) | Value::Numeric(_))) =
                self.cursor_value
        {
            return Err(format!(
                "`deletes_window` needs a time cursor, but `{}` holds numbers (e.g. {value}); remove `deletes_window` or use a timestamp cursor",
                stream.cursor
            )
            .into());
        }
        let source_key: Vec<String> = stream
            .primary_key
            .iter()
            .map(|k| stream.source_column(k).to_string())
            .collect();
        let window_start = stream.deletes_window.map(|window| {
            let span = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
            Value::TimestampTz(
                self.now
                    .checked_sub_signed(span)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            )
        });
        let target_cursor = match &stream.columns {
            Some(pairs) => pairs
                .iter()
                .find(|(_, s)| *s == stream.cursor)
                .map(|(t, _)| t.as_str()),
            None => Some(stream.cursor.as_str()),
        }
        .filter(|c| self.target_info.column(c).is_some());
        if window_start.is_some() && target_cursor.is_none() {
            return Err(format!(
                "`deletes_window` needs the cursor `{}` copied to the target, to compare the same rows on both sides",
                stream.cursor
            )
            .into());
        }
        let only = match self.direction {
            Direction::Pull => stream.site_column.as_deref().map(|c| (c, self.site_id)),
            Direction::Push => None,
        };
        let source = Side {
            conn: self.source,
            from: self.source_from,
            params: self.source_params,
            key: &source_key,
            only: None,
            cursor: window_start.as_ref().map(|_| stream.cursor.as_str()),
        };
        let target = Side {
            conn: self.target,
            from: SelectFrom::Table(&stream.target),
            params: &[],
            key: &stream.primary_key,
            only,
            cursor: window_start.as_ref().and(target_cursor),
        };
        let at = DeleteAt {
            table: &stream.target,
            info: self.target_info,
            site: only,
        };
        let sides = Sides {
            source,
            target,
            at,
            window_start: window_start.as_ref(),
        };
        let (deleted, source_keys_seen, after) = self.compare_chunks(&sides).await?;
        let tail = self
            .delete_tail(&sides, source_keys_seen, after, notes)
            .await?;
        self.release_gone_quarantined(&sides).await?;
        Ok(deleted + tail)
    }

    /// "the site" / "the master": where keys are read from, for messages.
    fn places(&self) -> (&'static str, &'static str) {
        match self.direction {
            Direction::Pull => ("the site", "the master"),
            Direction::Push => ("the master", "the site"),
        }
    }

    /// A read that failed at the source.
    fn read_source(&self, e: ConnectorError) -> RunError {
        let place = self.places().0;
        RunError::connector(
            format_args!("detecting deletes, reading keys from {place}"),
            &e,
        )
    }

    /// A read that failed at the target.
    fn read_target(&self, e: ConnectorError) -> RunError {
        let place = self.places().1;
        RunError::connector(
            format_args!("detecting deletes, reading keys from {place}"),
            &e,
        )
    }

    /// Steps 1-2 (module docs): the source's keys chunk by chunk against
    /// the target's same ranges. Returns (rows deleted, source keys seen,
    /// the last source key).
    async fn compare_chunks(
        &self,
        sides: &Sides<'_>,
    ) -> Result<(u64, i64, Option<Vec<Value>>), RunError> {
        let (source, target, window_start) = (&sides.source, &sides.target, sides.window_start);
        let mut after: Option<Vec<Value>> = None;
        let mut source_keys_seen = 0_i64;
        let mut deleted = 0;
        while !self.cancel.is_cancelled() {
            let range = source.range(after.as_deref(), None, window_start, Some(self.chunk));
            let Some(ours) = source
                .summary(&range)
                .await
                .map_err(|e| self.read_source(e))?
            else {
                break;
            };
            source_keys_seen += ours.count;
            let target_range = target.range(after.as_deref(), Some(&ours.last), window_start, None);
            let theirs = target
                .summary(&target_range)
                .await
                .map_err(|e| self.read_target(e))?;
            let unchanged = theirs
                .as_ref()
                .is_some_and(|t| t.count == ours.count && t.digest == ours.digest);
            if !unchanged && theirs.is_some() {
                let source_keys = match ours.keys {
                    Some(keys) => keys,
                    None => source
                        .keys(&source.range(after.as_deref(), Some(&ours.last), window_start, None))
                        .await
                        .map_err(|e| self.read_source(e))?,
                };
                let target_keys = match theirs.and_then(|t| t.keys) {
                    Some(keys) => keys,
                    None => target
                        .keys(&target_range)
                        .await
                        .map_err(|e| self.read_target(e))?,
                };
                let at_source: HashSet<TextKey> = source_keys.iter().map(|k| text_key(k)).collect();
                let candidates: Vec<Vec<Value>> = target_keys
                    .into_iter()
                    .filter(|k| !at_source.contains(&text_key(k)))
                    .collect();
                deleted += self.delete_confirmed(sides, candidates).await?;
            }
            let full = ours.count as usize >= self.chunk;
            after = Some(ours.last);
            if !full {
                break;
            }
        }
        Ok((deleted, source_keys_seen, after))
    }

    /// Step 3 (module docs): target keys after the source's last key (all
    /// of them when the source is empty), page by page. When the source has
    /// no key at all (even outside the window) but the target has some,
    /// nothing is deleted and a note says so: an emptied source is far more
    /// often a wrong route or a restored backup than a real mass delete.
    async fn delete_tail(
        &self,
        sides: &Sides<'_>,
        source_keys_seen: i64,
        after: Option<Vec<Value>>,
        notes: &mut Vec<String>,
    ) -> Result<u64, RunError> {
        let (source, target) = (&sides.source, &sides.target);
        let mut tail_after = after;
        let mut deleted = 0;
        while !self.cancel.is_cancelled() {
            let range = target.range(
                tail_after.as_deref(),
                None,
                sides.window_start,
                Some(self.chunk),
            );
            let keys = target.keys(&range).await.map_err(|e| self.read_target(e))?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            if source_keys_seen == 0
                && source_is_empty(source)
                    .await
                    .map_err(|e| self.read_source(e))?
            {
                let (source_place, target_place) = self.places();
                notes.push(format!(
                    "deletes not applied: {source_place} has no rows to compare while {target_place} has some; \
                     if the source really was emptied, delete the rows at the target by hand"
                ));
                return Ok(deleted);
            }
            let full = keys.len() >= self.chunk;
            deleted += self.delete_confirmed(sides, keys).await?;
            if !full {
                break;
            }
            tail_after = Some(last);
        }
        Ok(deleted)
    }

    /// Step 4 (module docs): deletes the `candidates` (target keys) that a
    /// lookup does not find at the source; returns rows deleted. One target
    /// transaction per call, holding a master write slot when the target is
    /// the master.
    async fn delete_confirmed(
        &self,
        sides: &Sides<'_>,
        candidates: Vec<Vec<Value>>,
    ) -> Result<u64, RunError> {
        if candidates.is_empty() {
            return Ok(0);
        }
        let at = &sides.at;
        let present = sides
            .source
            .present(&candidates)
            .await
            .map_err(|e| self.read_source(e))?;
        let gone: Vec<Vec<Value>> = candidates
            .into_iter()
            .filter(|key| !present.contains(&text_key(key)))
            .map(|key| {
                at.site
                    .map(|(_, site)| site.clone())
                    .into_iter()
                    .chain(key)
                    .collect()
            })
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        // The delete key is the upsert's conflict key (`site_column` first
        // on a pull, where `at.site` carries its value).
        let columns = MappingPlan::conflict_key_of(self.stream, self.direction);
        let types: Vec<String> = columns
            .iter()
            .map(|c| {
                at.info
                    .column(c)
                    .map_or_else(|| "text".to_string(), |info| info.cast_type.clone())
            })
            .collect();
        let spec = UpsertSpec {
            table: at.table,
            columns: &columns,
            column_types: &types,
            key: &columns,
        };
        let _permit = match self.master_writes {
            Some(writes) => Some(writes.acquire().await),
            None => None,
        };
        let delete = async {
            let mut tx = self.target.begin().await?;
            let deleted = tx.delete_keys(&spec, &gone).await?;
            if let Some((state, lease)) = self.fence {
                (state.check_lease(&mut tx, lease).await).map_err(StateError::into_connector)?;
            }
            tx.commit().await?;
            Ok::<u64, ConnectorError>(deleted)
        };
        delete
            .await
            .map_err(|e| RunError::connector("detecting deletes, deleting at the target", &e))
    }

    /// With `on_error = "quarantine"`: releases the quarantine entries of
    /// rows no longer at the source (a refused row deleted there since is
    /// not refused any more), looked up by key like a delete candidate.
    async fn release_gone_quarantined(&self, sides: &Sides<'_>) -> Result<(), RunError> {
        let Some((state, master, key)) = self.quarantine else {
            return Ok(());
        };
        let stored = state.quarantined_keys(master, key).await?;
        // A pull's row key starts with the site id, which the source lacks.
        let skip = usize::from(sides.at.site.is_some());
        let mut candidates = Vec::new();
        let mut by_key = Vec::new();
        for text in stored {
            let Ok(values) = serde_json::from_str::<Vec<Value>>(&text) else {
                continue;
            };
            if values.len() > skip {
                candidates.push(values[skip..].to_vec());
                by_key.push(text);
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        let present = sides
            .source
            .present(&candidates)
            .await
            .map_err(|e| self.read_source(e))?;
        let gone: Vec<String> = candidates
            .iter()
            .zip(by_key)
            .filter(|(candidate, _)| !present.contains(&text_key(candidate)))
            .map(|(_, text)| text)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let mut tx = master.begin().await.map_err(StateError::from)?;
        state.release_quarantine(&mut tx, key, &gone).await?;
        tx.commit().await.map_err(StateError::from)?;
        Ok(())
    }
}

/// The two sides of one detection and where it deletes.
struct Sides<'a> {
    source: Side<'a>,
    target: Side<'a>,
    at: DeleteAt<'a>,
    /// Only rows with a cursor at or after it are compared.
    window_start: Option<&'a Value>,
}
