//! The leg of a stream run: everything that differs between a pull and a
//! push, decided once per (stream, site) run, so the stages below do not
//! branch on the direction again for which database is read or written.

use crate::config::Direction;
use crate::connector::{Connector, TableInfo};
use crate::mediate::MappingPlan;
use crate::state::CheckpointKey;

use super::read::ResolvedSource;

/// The facts of one stream run at one site, fixed before the first read.
pub(super) struct Leg<'a> {
    pub(super) direction: Direction,
    /// How source rows become target rows, built once before reading.
    pub(super) mapping: &'a MappingPlan,
    pub(super) source: &'a Connector,
    pub(super) target: &'a Connector,
    pub(super) resolved: &'a ResolvedSource,
    pub(super) target_info: &'a TableInfo,
    /// "the site" / "the master", for messages.
    pub(super) source_place: &'a str,
    /// "master table `t`" / "site table `t`", for messages.
    pub(super) target_place: &'a str,
    pub(super) key: &'a CheckpointKey,
    pub(super) fingerprint: &'a str,
    /// The late-commit floor taken before reading (`crate::capture`).
    pub(super) floor: Option<chrono::DateTime<chrono::Utc>>,
    /// The snapshot text checkpoints written during the run carry.
    pub(super) snapshot: Option<String>,
}

