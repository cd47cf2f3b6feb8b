//! The capture stage of a stream run: the source resolved for one site
//! ([`ResolvedSource`]: `:site.*` bound, select list chosen by preparing
//! the first read) and the streamed reads of a run ([`ReadPart`]), each
//! feeding its batches to the apply stage as they arrive. The cursor
//! windows themselves (overlap, late commits, snapshots) are
//! `crate::capture`'s; the SQL is `crate::dialect`'s.

use super::StreamReport;
use super::context::{Applied, ReadPart, StreamRun};
use super::error::RunError;
use super::leg::RunPlace;
use crate::state::INTERRUPTED;
use crate::value::Value;

impl StreamRun<'_> {
    /// Runs one read, streamed: the source sends rows while earlier batches
    /// are applied (a channel of one batch between the two, so at most
    /// three batches are in memory). Returns the rows read.
    pub(super) async fn read_and_apply(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
        sql: &str,
        params: &[Value],
        part: ReadPart,
        report: &mut StreamReport,
    ) -> Result<u64, RunError> {
        if matches!(part, ReadPart::Cursor | ReadPart::Side)
            && place.shared_read
            && let Some(rows_read) = self
                .shared_read_and_apply(place, applied, sql, params, part, report)
                .await?
        {
            return Ok(rows_read);
        }
        if part == ReadPart::Cursor && !place.leg.writes_master() {
            self.hub
                .push_reads
                .sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let batch_size = self.hub.config().hub.batch_size;
        let (sender, batches) = tokio::sync::mpsc::channel(1);
        let read = place
            .leg
            .source
            .query_batches(sql, params, batch_size, sender);
        let apply_all = async {
            // Owned here: when applying stops (an error, a stop signal), the
            // receiver is dropped, which stops the read.
            let mut batches = batches;
            let mut rows_read = 0;
            while let Some(batch) = batches.recv().await {
                let batch = batch.map_err(|e| {
                    RunError::connector(format_args!("reading from {}", place.leg.source_place), &e)
                })?;
                if self.cancel.is_cancelled() {
                    return Err(RunError::interrupted(format!(
                        "{INTERRUPTED}stopped after the last committed batch; the next run resumes there"
                    )));
                }
                rows_read += self
                    .apply_batch(place, applied, batch, part, report)
                    .await?;
            }
            Ok::<u64, RunError>(rows_read)
        };
        let ((), rows_read) = tokio::join!(read, apply_all);
        rows_read
    }
}
