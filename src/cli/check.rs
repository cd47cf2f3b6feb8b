//! `hubsync check`: config, connectivity, tables, columns and keys; every
//! data service operation prepared where it would run.

use std::sync::Arc;

use super::{EXIT_FAILED, EXIT_OK, plural};
use crate::config::Config;
use crate::flow::check::check;

pub(super) async fn run(config: Arc<Config>) -> anyhow::Result<u8> {
    println!(
        "config `{}`: ok ({}{}, {}); master {}",
        config.path.display(),
        plural(config.sites.len() as u64, "site"),
        if config.inventory.is_some() {
            " + [inventory]"
        } else {
            ""
        },
        plural(config.flows.len() as u64, "flow"),
        config.master.redacted()
    );
    let report = check(&config).await;
    let service_problems = crate::service::check(&config).await;
    for problem in report
        .problems
        .iter()
        .map(ToString::to_string)
        .chain(service_problems.iter().cloned())
    {
        println!("problem: {problem}");
    }
    let problem_count = report.problems.len() + service_problems.len();
    // The same warning at many sites is one line naming them.
    let warnings = crate::flow::check::grouped_warnings(&report.warnings);
    for warning in &warnings {
        println!("warning: {warning}");
    }
    println!(
        "{} of {} reachable; {} ok; {}{}",
        report.reachable,
        plural(report.databases as u64, "database"),
        plural(report.streams_ok as u64, "stream/site pair"),
        plural(problem_count as u64, "problem"),
        if warnings.is_empty() {
            String::new()
        } else {
            format!(", {}", plural(warnings.len() as u64, "warning"))
        }
    );
    Ok(if problem_count == 0 {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
