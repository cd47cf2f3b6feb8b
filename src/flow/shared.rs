//! Shared reads of a push pass: sites whose cursor read of a stream is the
//! same statement with the same parameters (the same `:site.*` values and
//! the same checkpoint to resume from, or none: a first push to new sites;
//! typically a fleet in steady state, with K distinct parameter sets among
//! N sites) share ONE read of the master. The first site to need it reads; the others wait for it and
//! get the same rows. Each site still applies the rows with its own `when`,
//! upsert and checkpoint.
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
use crate::value::{Batch, Value};

/// A shared read's outcome: the rows (one batch at most), or `None` when
/// the read was larger than a batch (each site then reads for itself).
type SharedRows = Option<Arc<Batch>>;

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
    /// A push's cursor read through the pass's shared reads: `Some(rows
    /// read)` when the read was shared (read here for the others, or by
    /// another site for this one) and its rows applied; `None` when this
    /// site must stream its own read (too large to share).
    pub(super) async fn shared_read_and_apply(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
        sql: &str,
        params: &[Value],
        report: &mut StreamReport,
    ) -> Result<Option<u64>, RunError> {
        let cell = self.plan.shared_reads.cell(sql, params);
        let read_here = AtomicBool::new(false);
        let rows = cell
            .get_or_try_init(|| async {
                read_here.store(true, Ordering::Relaxed);
                self.read_one_batch(place, sql, params).await
            })
            .await?
            .clone();
        let Some(batch) = rows else {
            return Ok(None);
        };
        if !read_here.load(Ordering::Relaxed) {
            self.hub.push_reads.shared.fetch_add(1, Ordering::Relaxed);
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
            .apply_batch(place, applied, (*batch).clone(), ReadPart::Cursor, report)
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
    ) -> Result<SharedRows, RunError> {
        self.hub.push_reads.sent.fetch_add(1, Ordering::Relaxed);
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
            Ok(Some(Arc::new(kept.unwrap_or_default())))
        };
        let ((), rows) = tokio::join!(read, collect);
        rows
    }
}
