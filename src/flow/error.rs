//! The error of a stream or site run: a message that names its place
//! (flow, stream, site, column, row key) and the [`ErrorKind`] that decides
//! what happens next (a retry, the circuit breaker, the run history's
//! `error_kind`).

use crate::connector::{ConnectorError, ErrorKind};
use crate::mediate::MapError;
use crate::state::StateError;

/// A failed stream or site run. Displays as its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    /// What kind of failure (from the database's code where one caused it).
    pub kind: ErrorKind,
    /// What went wrong, where, and what to do.
    pub message: String,
}

impl RunError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RunError {
        RunError {
            kind,
            message: message.into(),
        }
    }

    /// The hub stopped the work (see [`ErrorKind::Interrupted`]).
    pub fn interrupted(message: impl Into<String>) -> RunError {
        RunError::new(ErrorKind::Interrupted, message)
    }

    /// `error` met while doing `context` ("writing to master table `t`"),
    /// keeping its kind: "{context}: {error}".
    pub fn connector(context: impl std::fmt::Display, error: &ConnectorError) -> RunError {
        RunError::new(error.kind(), format!("{context}: {error}"))
    }

    /// The same error with `place` ("flow `f` stream `s` site `x`") in front.
    pub fn at(self, place: impl std::fmt::Display) -> RunError {
        RunError {
            kind: self.kind,
            message: format!("{place}: {}", self.message),
        }
    }
}

/// A message of hubsync's own (a refused value, a missing table) is of
/// kind [`ErrorKind::Other`], unless built with [`RunError::new`].
impl From<String> for RunError {
    fn from(message: String) -> RunError {
        RunError::new(ErrorKind::Other, message)
    }
}

/// A mapping that cannot be built is the config's or a table's problem
/// (kind `other`); a refused row value is the data's (kind `data`).
impl From<MapError> for RunError {
    fn from(error: MapError) -> RunError {
        match error {
            MapError::Plan(message) => RunError::new(ErrorKind::Other, message),
            MapError::Row(message) => RunError::new(ErrorKind::Data, message),
        }
    }
}

impl From<StateError> for RunError {
    fn from(error: StateError) -> RunError {
        let kind = match &error {
            StateError::Connector(e) => e.kind(),
            StateError::LeaseLost { .. } => ErrorKind::Interrupted,
            // Another writer moved the checkpoint since this run read it (a
            // replica that held the lease committing as it woke, `reset`):
            // nothing was written, and the next run resumes from the stored
            // position, so it may start again soon.
            StateError::CheckpointMoved { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Other,
        };
        RunError::new(kind, error.to_string())
    }
}
