//! The shared context of a stream run's stages: the run itself
//! ([`StreamRun`], whose stages live in `stream.rs`, `plan.rs`, `read.rs`
//! and `apply.rs`), the row counters its heartbeat reads, which read a
//! batch comes from ([`ReadPart`]) and what the apply stage carries from
//! batch to batch ([`Applied`]). It imports no other stage, so the stages
//! form no cycle.

use tokio_util::sync::CancellationToken;

use super::plan::StreamPlan;
use super::{Hub, Progress, StreamReport, SyncOptions};
use crate::config::{Flow, Site, Stream};
use crate::connector::Connector;
use crate::state::{Checkpoint, Lease};

/// Appends a remark to the stream's note (several may apply to one run).
pub(super) fn add_note(report: &mut StreamReport, note: String) {
    report.note = Some(match report.note.take() {
        Some(earlier) => format!("{earlier}; {note}"),
        None => note,
    });
}

/// The work of one stream at one site.
pub(super) struct StreamRun<'a> {
    pub hub: &'a Hub,
    pub flow: &'a Flow,
    pub stream: &'a Stream,
    pub plan: &'a StreamPlan,
    pub site: &'a Site,
    pub site_conn: &'a Connector,
    pub options: SyncOptions,
    pub progress: &'a dyn Progress,
    pub cancel: &'a CancellationToken,
    pub counters: &'a RunCounters,
    /// The run in the history (`None` for a dry run).
    pub run_id: Option<&'a str>,
    /// The lease of a leased run (`hub.leases`): every master write checks
    /// it in its transaction. `None`: a hub running alone.
    pub lease: Option<&'a Lease>,
}

/// Rows read and written so far by one site run, over all its streams;
/// shared with the heartbeat that records them in the run history.
#[derive(Debug, Default)]
pub struct RunCounters {
    read: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
}

impl RunCounters {
    /// Adds rows read and written (a batch, or detected deletes).
    pub(super) fn add(&self, read: u64, written: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.read.fetch_add(read, Relaxed);
        self.written.fetch_add(written, Relaxed);
    }

    /// (rows read, rows written) so far.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.read.load(Relaxed), self.written.load(Relaxed))
    }
}

/// Which read of a run a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadPart {
    /// The cursor read: each batch moves the checkpoint to its last row.
    Cursor,
    /// A read outside cursor order (NULL cursors): rows are applied, the
    /// checkpoint's position stays.
    Side,
    /// The late-commit read by transaction id: like [`ReadPart::Side`], but
    /// it also returns rows of transactions that committed before the last
    /// run and were seen then (see `Dialect::late_commit_select`), so only
    /// the rows it changes at the target count as read: the run history
    /// does not depend on what else the site's server was doing.
    Late,
}

/// What the apply side carries from batch to batch and read to read.
pub(super) struct Applied {
    /// The checkpoint as stored now.
    pub(super) saved: Option<Checkpoint>,
    /// Whether the quarantine may hold rows of this (stream, site).
    pub(super) quarantine_open: bool,
    /// The source snapshot the stored checkpoint carries (a batch that
    /// leaves the checkpoint as stored does not write this run's).
    pub(super) stored_snapshot: Option<String>,
    /// Source rows the stream's `filter` left out so far this run.
    pub(super) filtered: u64,
    /// Rows of cursor batches re-read unchanged this run, the checkpoint
    /// staying where it was (the `cursor_lag` overlap, a gap hold).
    pub(super) reread: u64,
    /// Gaps in an integer cursor read from MySQL (`capture::GapScan`);
    /// `None` for other sources.
    pub(super) gaps: Option<crate::capture::GapScan>,
}
