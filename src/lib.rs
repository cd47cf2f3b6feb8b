//! hubsync: one central hub syncs a master database with a fleet of site
//! databases, both ways, with nothing installed at the sites.
//!
//! Layers, each depending only on those below it (see docs/ARCHITECTURE.md):
//! `cli` / `api` -> `flow` / `service` -> `connector` / `state` -> `dialect` ->
//! `value` / `config`; `telemetry` is called from `flow`, `service` and `api`.

#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod connector;
pub mod dialect;
pub mod events;
pub mod flow;
pub mod inventory;
pub mod mediate;
pub mod scheduler;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod value;
