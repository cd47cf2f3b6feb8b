//! `hubsync reset`: forget checkpoints so the next run backfills.

use std::sync::Arc;

use clap::Args;

use super::sync::unknown_site;
use super::{EXIT_OK, UsageError, known_names, plural};
use crate::config::{Config, Flow};
use crate::flow::Hub;

/// Arguments of `hubsync reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The flow whose checkpoints to forget.
    #[arg(long)]
    pub flow: String,
    /// Only this stream of the flow.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this site (repeat for several: `--site s1 --site s2`).
    #[arg(long)]
    pub site: Vec<String>,
}

pub(super) async fn run(config: Arc<Config>, mut args: ResetArgs) -> anyhow::Result<u8> {
    // A site named twice is reset (and named) once, in the order given.
    let mut seen = std::collections::HashSet::new();
    args.site.retain(|site| seen.insert(site.clone()));
    let flow = check_args(&config, &args)?;
    let hub = Hub::open_existing(config.clone()).await?;
    // Only this config's sites: other hubs may share the master.
    let sites: Vec<&str> = match args.site.is_empty() {
        false => args.site.iter().map(String::as_str).collect(),
        true => config.sites.iter().map(|s| s.id.as_str()).collect(),
    };
    let removed = hub
        .state()
        .delete_checkpoints(hub.master(), &flow.name, args.stream.as_deref(), &sites)
        .await?;
    hub.close().await;
    println!(
        "forgot {} of flow `{}`{}{}; the next run backfills {}",
        plural(removed, "checkpoint"),
        flow.name,
        args.stream
            .as_ref()
            .map(|s| format!(" stream `{s}`"))
            .unwrap_or_default(),
        match args.site.as_slice() {
            [] => String::new(),
            [site] => format!(" site `{site}`"),
            several => {
                let quoted: Vec<String> = several.iter().map(|s| format!("`{s}`")).collect();
                format!(" sites {}", quoted.join(", "))
            }
        },
        if removed == 1 { "it" } else { "them" },
    );
    Ok(EXIT_OK)
}

/// The flow to reset; an unknown flow, stream or site is a usage error that
/// lists the known ones (an unknown site would otherwise forget nothing and
/// still report success).
fn check_args<'c>(config: &'c Config, args: &ResetArgs) -> Result<&'c Flow, UsageError> {
    let flow = config.flow(&args.flow).ok_or_else(|| {
        UsageError(format!(
            "no flow `{}` in the config; flows: {}",
            args.flow,
            known_names(config.flows.iter().map(|f| f.name.as_str()))
        ))
    })?;
    if let Some(stream) = &args.stream
        && !flow.streams.iter().any(|s| &s.name == stream)
    {
        return Err(UsageError(format!(
            "flow `{}` has no stream `{stream}`; streams: {}",
            flow.name,
            known_names(flow.streams.iter().map(|s| s.name.as_str()))
        )));
    }
    if let Some(site) = args.site.iter().find(|site| config.site(site).is_none()) {
        return Err(unknown_site(config, site));
    }
    Ok(flow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::sync::tests::fleet_config;

    fn args(flow: &str, stream: Option<&str>, site: Option<&str>) -> ResetArgs {
        ResetArgs {
            flow: flow.into(),
            stream: stream.map(Into::into),
            site: site.into_iter().map(Into::into).collect(),
        }
    }

    /// Regression: `reset --flow sales --site nope` printed "forgot 0
    /// checkpoint(s)" and exited 0.
    #[test]
    fn unknown_site_is_a_usage_error() {
        let config = fleet_config(2);
        assert_eq!(
            check_args(&config, &args("up", None, Some("nope")))
                .unwrap_err()
                .0,
            "no site `nope` in the config; sites: s1, s2"
        );
        assert_eq!(
            check_args(&config, &args("up", None, Some("s2")))
                .unwrap()
                .name,
            "up"
        );
    }

    #[test]
    fn unknown_flow_or_stream_lists_the_known_ones() {
        let config = fleet_config(1);
        assert_eq!(
            check_args(&config, &args("nope", None, None))
                .unwrap_err()
                .0,
            "no flow `nope` in the config; flows: up, down"
        );
        assert_eq!(
            check_args(&config, &args("up", Some("nope"), None))
                .unwrap_err()
                .0,
            "flow `up` has no stream `nope`; streams: sales"
        );
    }
}
