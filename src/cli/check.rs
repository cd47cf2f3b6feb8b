//! `hubsync check`: config, connectivity, tables, columns and keys.

use std::sync::Arc;

use super::{EXIT_FAILED, EXIT_OK};
use crate::config::Config;
use crate::flow::check::check;

pub(super) async fn run(config: Arc<Config>) -> anyhow::Result<u8> {
    println!(
        "config `{}`: ok ({} sites, {} flows); master {}",
        config.path.display(),
        config.sites.len(),
        config.flows.len(),
        config.master.redacted()
    );
    let report = check(&config).await;
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!(
        "{} of {} databases reachable; {} stream/site pairs ok; {} problem(s)",
        report.reachable,
        config.sites.len() + 1,
        report.streams_ok,
        report.problems.len()
    );
    Ok(if report.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
