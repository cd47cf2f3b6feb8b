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

use super::stream::StreamRun;
use crate::config::Direction;
use crate::connector::{Connector, TableInfo};
use crate::dialect::keys::{KeyRange, digest_keys};
use crate::dialect::{Dialect, SelectFrom, UpsertSpec};
use crate::value::Value;

/// Keys looked up at the source per statement when confirming candidates.
const LOOKUP_KEYS: usize = 200;

/// One side of the comparison: a table or query, its key columns and
/// filters.
pub(super) struct Side<'a> {
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
    async fn keys(&self, range: &KeyRange<'_>) -> Result<Vec<Vec<Value>>, String> {
        let (sql, params) = self.conn.dialect().key_range_select(range);
        let batch = self
            .conn
            .query(&sql, &self.bound(params))
            .await
            .map_err(|e| e.to_string())?;
        Ok(batch.rows)
    }

    /// The summary of a range; `None` when it holds no key.
    async fn summary(&self, range: &KeyRange<'_>) -> Result<Option<Summary>, String> {
        if self.conn.dialect() == Dialect::Postgres {
            let (sql, params) = Dialect::Postgres.key_range_digest(range);
            let batch = self
                .conn
                .query(&sql, &self.bound(params))
                .await
                .map_err(|e| e.to_string())?;
            let Some(row) = batch.rows.into_iter().next() else {
                return Ok(None);
            };
            let n = self.key.len();
            let (count, digest) = match (&row[n], &row[n + 1]) {
                (Value::Int(count), Value::Text(digest)) => (*count, digest.clone()),
                other => return Err(format!("unexpected key summary {other:?}")),
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
    async fn present(&self, candidates: &[Vec<Value>]) -> Result<HashSet<TextKey>, String> {
        let mut present = HashSet::new();
        for chunk in candidates.chunks(LOOKUP_KEYS) {
            let (sql, params) =
                self.conn
                    .dialect()
                    .key_lookup(self.from, self.key, chunk, self.params.len());
            let batch = self
                .conn
                .query(&sql, &self.bound(params))
                .await
                .map_err(|e| e.to_string())?;
            present.extend(batch.rows.iter().map(|row| text_key(row)));
        }
        Ok(present)
    }
}

/// Whether the source has no key at all (whatever the window).
async fn source_is_empty(source: &Side<'_>) -> Result<bool, String> {
    let range = source.range(None, None, None, Some(1));
    Ok(source.keys(&range).await?.is_empty())
}

/// A key in its PostgreSQL text form, comparable across dialects.
type TextKey = Vec<Option<String>>;

fn text_key(row: &[Value]) -> TextKey {
    row.iter().map(Value::to_pg_text).collect()
}

/// Where the comparison deletes: the target table and its delete key.
pub(super) struct DeleteAt<'a> {
    /// The target table, as written in config.
    pub table: &'a str,
    /// The target's description (PostgreSQL casts the keys to its types).
    pub info: &'a TableInfo,
    /// Pull: the site column and the site id, prepended to each key.
    pub site: Option<(&'a str, &'a Value)>,
}

impl StreamRun<'_> {
    /// Compares the key sets of `source` and `target` (see the module docs)
    /// and deletes target rows gone at the source; returns rows deleted.
    ///
    /// `window_start`: only rows with a cursor at or after it are compared.
    /// Errors name the side (`reading keys from the site: ...`). When the
    /// source has no key at all (even outside the window) but the target has some,
    /// nothing is deleted and a note says so: an emptied source is far more
    /// often a wrong route or a restored backup than a real mass delete.
    pub(super) async fn detect_deletes(
        &self,
        source: &Side<'_>,
        target: &Side<'_>,
        at: &DeleteAt<'_>,
        window_start: Option<&Value>,
        notes: &mut Vec<String>,
    ) -> Result<u64, String> {
        let chunk = self.hub.config().hub.batch_size;
        let (source_place, target_place) = match self.flow.direction {
            Direction::Pull => ("the site", "the master"),
            Direction::Push => ("the master", "the site"),
        };
        let read_source =
            |e: String| format!("detecting deletes, reading keys from {source_place}: {e}");
        let read_target =
            |e: String| format!("detecting deletes, reading keys from {target_place}: {e}");
        let mut after: Option<Vec<Value>> = None;
        let mut source_keys_seen = 0_i64;
        let mut deleted = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(deleted);
            }
            let range = source.range(after.as_deref(), None, window_start, Some(chunk));
            let Some(ours) = source.summary(&range).await.map_err(read_source)? else {
                break;
            };
            source_keys_seen += ours.count;
            let target_range = target.range(after.as_deref(), Some(&ours.last), window_start, None);
            let theirs = target.summary(&target_range).await.map_err(read_target)?;
            let unchanged = theirs
                .as_ref()
                .is_some_and(|t| t.count == ours.count && t.digest == ours.digest);
            if !unchanged && theirs.is_some() {
                let source_keys = match ours.keys {
                    Some(keys) => keys,
                    None => source
                        .keys(&source.range(after.as_deref(), Some(&ours.last), window_start, None))
                        .await
                        .map_err(read_source)?,
                };
                let target_keys = match theirs.and_then(|t| t.keys) {
                    Some(keys) => keys,
                    None => target.keys(&target_range).await.map_err(read_target)?,
                };
                let at_source: HashSet<TextKey> = source_keys.iter().map(|k| text_key(k)).collect();
                let candidates: Vec<Vec<Value>> = target_keys
                    .into_iter()
                    .filter(|k| !at_source.contains(&text_key(k)))
                    .collect();
                deleted += self
                    .delete_confirmed(source, at, candidates, read_source)
                    .await?;
            }
            let full = ours.count as usize >= chunk;
            after = Some(ours.last);
            if !full {
                break;
            }
        }
        // Target keys after the source's last key (all of them when the
        // source is empty), page by page.
        let mut tail_after = after.clone();
        loop {
            if self.cancel.is_cancelled() {
                return Ok(deleted);
            }
            let range = target.range(tail_after.as_deref(), None, window_start, Some(chunk));
            let keys = target.keys(&range).await.map_err(read_target)?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            if source_keys_seen == 0 && source_is_empty(source).await.map_err(read_source)? {
                notes.push(format!(
                    "deletes not applied: {source_place} has no rows to compare while {target_place} has some; \
                     if the source really was emptied, delete the rows at the target by hand"
                ));
                return Ok(deleted);
            }
            let full = keys.len() >= chunk;
            deleted += self.delete_confirmed(source, at, keys, read_source).await?;
            if !full {
                break;
            }
            tail_after = Some(last);
        }
        Ok(deleted)
    }

    /// Deletes the `candidates` (target keys) that a lookup does not find at
    /// the source; returns rows deleted. One target transaction per call,
    /// holding a master write slot when the target is the master.
    async fn delete_confirmed(
        &self,
        source: &Side<'_>,
        at: &DeleteAt<'_>,
        candidates: Vec<Vec<Value>>,
        read_source: impl Fn(String) -> String,
    ) -> Result<u64, String> {
        if candidates.is_empty() {
            return Ok(0);
        }
        let present = source.present(&candidates).await.map_err(read_source)?;
        let mut columns: Vec<String> = Vec::new();
        let mut gone: Vec<Vec<Value>> = Vec::new();
        for key in candidates {
            if present.contains(&text_key(&key)) {
                continue;
            }
            let mut row = Vec::with_capacity(key.len() + 1);
            if let Some((_, site)) = at.site {
                row.push((*site).clone());
            }
            row.extend(key);
            gone.push(row);
        }
        if gone.is_empty() {
            return Ok(0);
        }
        if let Some((column, _)) = at.site {
            columns.push(column.to_string());
        }
        columns.extend(self.stream.primary_key.iter().cloned());
        let types: Vec<String> = columns
            .iter()
            .map(|c| {
                at.info
                    .column(c)
                    .map(|info| info.cast_type.clone())
                    .unwrap_or_else(|| "text".to_string())
            })
            .collect();
        let spec = UpsertSpec {
            table: at.table,
            columns: &columns,
            column_types: &types,
            key: &columns,
        };
        let target = match self.flow.direction {
            Direction::Pull => self.hub.master(),
            Direction::Push => self.site_conn,
        };
        let write_error =
            |e: &dyn std::fmt::Display| format!("detecting deletes, deleting at the target: {e}");
        let _permit = match self.flow.direction {
            Direction::Pull => Some(self.hub.master_writes.acquire().await),
            Direction::Push => None,
        };
        let mut tx = target.begin().await.map_err(|e| write_error(&e))?;
        let deleted = tx
            .delete_keys(&spec, &gone)
            .await
            .map_err(|e| write_error(&e))?;
        tx.commit().await.map_err(|e| write_error(&e))?;
        Ok(deleted)
    }
}
