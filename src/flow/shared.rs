//! Shared reads of a push pass: sites whose cursor read of a stream is the
//! same statement with the same parameters (the same `:site.*` values and
//! the same checkpoint to resume from, or none: a first push to new sites;
//! typically a fleet in steady state, with K distinct parameter sets among
//! N sites) share ONE read of the master. The first site to need it reads; the others wait for it and
//! get the same rows. Each site still applies the rows with its own `when`,
//! upsert and checkpoint; a site that took its clock after the read
//! checkpoints no higher than the reader's late-commit floor (a
//! transaction open during the read may have committed since, its rows
//! below the read's last cursor value and absent from the rows). The
//! NULL-cursor read is shared the same way, and so is the describe of the
//! source statement ([`SharedDescribes`]): a site whose reads are all
//! shared opens no read connection at the master.
//!
//! Bounds: only a read that fits in one batch (`hub.batch_size` rows) is
//! kept, so memory stays at one batch per distinct parameter set (a first
//! push of a large table costs one read of a batch more per parameter set
//! and pass, the one that found it larger); a larger read is noted
//! as such and every site streams its own (the site that tried reads again).
//! The cache lives for one pass (`StreamPlan`), so a later pass never sees
//! stale rows; a read shared by sites started a little later in the pass
//! may miss rows committed in between, which their next pass reads (their
//! checkpoints are where the shared read ended).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::StreamReport;
use super::context::{Applied, ReadPart, StreamRun};
use super::error::RunError;
use super::leg::RunPlace;
use crate::connector::{Connector, ConnectorError};
use crate::value::{Batch, Value};

/// A shared read's outcome: the rows (one batch at most) with the
/// late-commit floor the reading site took before reading, or `None` when
/// the read was larger than a batch (each site then reads for itself).
type SharedRows = Option<SharedBatch>;

/// The rows of a shared read and the floor that bounds what they saw.
#[derive(Clone)]
struct SharedBatch {
    rows: Arc<Batch>,
    /// The reading site's late-commit floor (`RunPlace::floor`): rows of
    /// transactions still open when it read may carry cursor values down
    /// to it. A site that took its own clock later (a transaction open
    /// then may have committed since) checkpoints no higher than this, or
    /// it would step over rows the shared read could not see.
    floor: Option<chrono::DateTime<chrono::Utc>>,
}

/// One pass's shared reads of one stream, by statement and parameters.
#[derive(Clone, Default)]
pub struct SharedReads {
    reads: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<SharedRows>>>>>,
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.reads.lock().map_or(0, |reads| reads.len());
        write!(f, "SharedReads({count} reads)")
    }
}

impl SharedReads {
    /// The cell of the read of `sql` with `params` (created empty).
    fn cell(&self, sql: &str, params: &[Value]) -> Arc<tokio::sync::OnceCell<SharedRows>> {
        let key = format!("{sql}\u{1f}{params:?}");
        let mut reads = self
            .reads
            .lock()
            .expect("shared reads lock is never poisoned");
        reads.entry(key).or_default().clone()
    }
}

/// One pass's describes of push sources, by statement: a push's source is
/// the master, whose statement is the same for every site of the pass
/// (`:site.*` values are bound parameters), so the first site to prepare
/// it keeps its columns for the others. A failed describe is not kept: the
/// next site tries again and reports its own error.
#[derive(Clone, Default)]
pub struct SharedDescribes {
    described: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Described>>>>>,
}

/// A statement's columns as (name, type name) (`Connector::describe_query`).
type Described = Vec<(String, String)>;

impl std::fmt::Debug for SharedDescribes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.described.lock().map_or(0, |d| d.len());
        write!(f, "SharedDescribes({count} statements)")
    }
}

impl SharedDescribes {
    /// The columns of `sql` at `source`: prepared there by the first caller
    /// of the pass, the same answer for the others.
    ///
    /// Errors: the source's, from `Connector::describe_query`.
    pub(super) async fn describe(
        &self,
        source: &Connector,
        sql: &str,
    ) -> Result<Described, ConnectorError> {
        let cell = {
            let mut described = self
                .described
                .lock()
                .expect("shared describes lock is never poisoned");
            described.entry(sql.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| source.describe_query(sql))
            .await
            .cloned()
    }
}

/// Push cursor reads of a hub since it opened: those sent to the master,
/// and those answered by another site's read of the same pass.
#[derive(Debug, Default)]
pub struct PushReads {
    /// Cursor reads of push streams sent to the master.
    pub sent: AtomicU64,
    /// Cursor reads of push streams answered by a shared read.
    pub shared: AtomicU64,
}

impl PushReads {
    /// (reads sent to the master, reads answered by a shared read).
    pub fn get(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.shared.load(Ordering::Relaxed),
        )
    }
}

impl StreamRun<'_> {
    /// A push's read (the cursor read or the NULL-cursor read) through the
    /// pass's shared reads: `Some(rows read)` when the read was shared
    /// (read here for the others, or by another site for this one) and its
    /// rows applied as `part`; `None` when this site must stream its own
    /// read (too large to share). Rows read by another site are applied
    /// under the lower of both sites' late-commit floors (see
    /// [`SharedBatch::floor`]).
    pub(super) async fn shared_read_and_apply(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
        sql: &str,
        params: &[Value],
        part: ReadPart,
        report: &mut StreamReport,
    ) -> Result<Option<u64>, RunError> {
        let cell = self.plan.shared_reads.cell(sql, params);
        let read_here = AtomicBool::new(false);
        let shared = cell
            .get_or_try_init(|| async {
                read_here.store(true, Ordering::Relaxed);
                self.read_one_batch(place, sql, params, part).await
            })
            .await?
            .clone();
        let Some(SharedBatch { rows: batch, floor }) = shared else {
            return Ok(None);
        };
        let mut place = place.clone();
        if !read_here.load(Ordering::Relaxed) {
            if part == ReadPart::Cursor {
                self.hub.push_reads.shared.fetch_add(1, Ordering::Relaxed);
            }
            place.floor = match (place.floor, floor) {
                (Some(own), Some(reader)) => Some(own.min(reader)),
                (own, reader) => own.or(reader),
            };
        }
        if self.cancel.is_cancelled() {
            return Err(RunError::interrupted(format!(
                "{}stopped before applying; the next run resumes at the checkpoint",
                crate::state::INTERRUPTED
            )));
        }
        if batch.rows.is_empty() {
            return Ok(Some(0));
        }
        let read = self
            .apply_batch(&place, applied, (*batch).clone(), part, report)
            .await?;
        Ok(Some(read))
    }

    /// Reads `sql` at the source, keeping at most one batch: `None` (and
    /// the read stopped) as soon as a second batch arrives.
    async fn read_one_batch(
        &self,
        place: &RunPlace<'_>,
        sql: &str,
        params: &[Value],
        part: ReadPart,
    ) -> Result<SharedRows, RunError> {
        if part == ReadPart::Cursor {
            self.hub.push_reads.sent.fetch_add(1, Ordering::Relaxed);
        }
        let batch_size = self.hub.config().hub.batch_size;
        let (sender, mut batches) = tokio::sync::mpsc::channel(1);
        let read = place
            .leg
            .source
            .query_batches(sql, params, batch_size, sender);
        let collect = async move {
            let mut kept: Option<Batch> = None;
            while let Some(batch) = batches.recv().await {
                let batch = batch.map_err(|e| {
                    RunError::connector(format_args!("reading from {}", place.leg.source_place), &e)
                })?;
                match &mut kept {
                    Some(first) if !batch.rows.is_empty() && !first.rows.is_empty() => {
                        return Ok(None);
                    }
                    Some(first) => first.rows.extend(batch.rows),
                    None => kept = Some(batch),
                }
            }
            Ok(Some(SharedBatch {
                rows: Arc::new(kept.unwrap_or_default()),
                floor: place.floor,
            }))
        };
        let ((), rows) = tokio::join!(read, collect);
        rows
    }
}
