//! `/api/v1/status` for fleets of 1,000+ sites: the fleet summary (pairs
//! per state, open circuits), filters (flow, state, site tag, site id
//! search) and offset paging over the (flow, site) pairs, in flow-then-site
//! order. Pure: the handler reads the pairs, this module chooses.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::routes::PairStatus;
use crate::config::Site;

/// Most pairs one page may hold.
pub const MAX_STATUS_LIMIT: usize = 1000;

/// The states a pair can be filtered by: its newest run's status, `never`
/// (no run yet), or `circuit_open`.
pub const STATES: [&str; 7] = [
    "running",
    "succeeded",
    "failed",
    "skipped",
    "partial",
    "never",
    "circuit_open",
];

/// Counts over the whole fleet (whatever the filters).
#[derive(Serialize, ToSchema, Debug, PartialEq, Eq)]
pub struct FleetSummary {
    /// Sites of the fleet: the static `[[site]]`s and those of the
    /// `[inventory]` query.
    pub sites: usize,
    /// (flow, site) pairs.
    pub pairs: usize,
    /// Pairs per newest-run status (`running`, `succeeded`, `failed`,
    /// `skipped`, `partial`) or `never`.
    pub by_state: BTreeMap<String, usize>,
    /// Pairs whose circuit is open.
    pub circuits_open: usize,
    /// Rows of all pairs in the quarantine (`quarantined_rows` summed).
    pub quarantined_rows: u64,
}

/// Which pairs `/api/v1/status` returns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusFilter {
    /// Only this flow.
    pub flow: Option<String>,
    /// Only pairs in this state (see [`STATES`]).
    pub state: Option<String>,
    /// Only sites with this tag value (`key`, `value`).
    pub tag: Option<(String, String)>,
    /// Only sites whose id contains this text (case-insensitive).
    pub search: Option<String>,
    /// Pairs per page (`None`: all).
    pub limit: Option<usize>,
    /// Pairs skipped before the page.
    pub offset: usize,
}

/// The pair's state for filters and counts: its newest run's status, or
/// `never`.
pub fn pair_state(pair: &PairStatus) -> &str {
    pair.last_run
        .as_ref()
        .map_or("never", |run| run.status.as_str())
}

impl StatusFilter {
    /// Parses `flow`, `state`, `tag` (`key:value`), `q`, `limit` (1 to
    /// 1,000) and `offset` from a query string. An empty value is no filter
    /// (an HTML form sends its empty fields).
    ///
    /// Errors: a 400 naming the param and what it takes.
    pub fn parse(query: &str) -> Result<StatusFilter, ApiError> {
        let mut filter = StatusFilter::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let known = ["flow", "state", "tag", "q", "limit", "offset"];
            if value.is_empty() && known.contains(&key.as_ref()) {
                continue;
            }
            match key.as_ref() {
                "flow" => filter.flow = Some(value.into_owned()),
                "state" if STATES.contains(&value.as_ref()) => {
                    filter.state = Some(value.into_owned())
                }
                "state" => {
                    return Err(ApiError::bad_request(format!(
                        "query param `state`: unknown state `{value}`; use {}",
                        STATES.join(", ")
                    )));
                }
                "tag" => {
                    let (tag, tag_value) = value.split_once(':').ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "query param `tag`: `{value}` is not `name:value` (e.g. `region:north`)"
                        ))
                    })?;
                    filter.tag = Some((tag.to_string(), tag_value.to_string()));
                }
                "q" => filter.search = Some(value.to_lowercase()),
                "limit" => {
                    let limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_STATUS_LIMIT).contains(n));
                    filter.limit = Some(limit.ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "query param `limit`: `{value}` is not a whole number from 1 to {MAX_STATUS_LIMIT}"
                        ))
                    })?);
                }
                "offset" => {
                    filter.offset = value.parse::<usize>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "query param `offset`: `{value}` is not a whole number from 0"
                        ))
                    })?;
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query param `{other}`; use flow, state, tag, q, limit or offset"
                    )));
                }
            }
        }
        Ok(filter)
    }

    /// True if `pair` passes every filter (site tags from `sites`, the
    /// fleet's); paging aside.
    pub fn keeps(&self, pair: &PairStatus, sites: &[Site]) -> bool {
        let flow_ok = self.flow.as_ref().is_none_or(|flow| *flow == pair.flow);
        let state_ok = match self.state.as_deref() {
            None => true,
            Some("circuit_open") => pair.circuit.open,
            Some(state) => pair_state(pair) == state,
        };
        let search_ok = (self.search.as_ref()).is_none_or(|q| pair.site.to_lowercase().contains(q));
        let tag_ok = self.tag.as_ref().is_none_or(|(tag, value)| {
            (sites.iter())
                .find(|site| site.id == pair.site)
                .is_some_and(|site| site.tags.get(tag) == Some(value))
        });
        flow_ok && state_ok && search_ok && tag_ok
    }

    /// The page of `pairs` this filter keeps, the number kept before
    /// paging, and the next page's offset (`None` on the last page).
    pub fn page(
        &self,
        pairs: Vec<PairStatus>,
        sites: &[Site],
    ) -> (Vec<PairStatus>, usize, Option<usize>) {
        let kept: Vec<PairStatus> = pairs.into_iter().filter(|p| self.keeps(p, sites)).collect();
        let total = kept.len();
        let limit = self.limit.unwrap_or(usize::MAX);
        let page: Vec<PairStatus> = kept.into_iter().skip(self.offset).take(limit).collect();
        let end = self.offset.saturating_add(page.len());
        let next = (self.limit.is_some() && end < total).then_some(end);
        (page, total, next)
    }
}

/// Counts over every pair of the fleet.
pub fn summary(pairs: &[PairStatus], sites: usize) -> FleetSummary {
    let mut by_state = BTreeMap::new();
    for pair in pairs {
        *by_state.entry(pair_state(pair).to_string()).or_insert(0) += 1;
    }
    FleetSummary {
        sites,
        pairs: pairs.len(),
        by_state,
        circuits_open: pairs.iter().filter(|p| p.circuit.open).count(),
        quarantined_rows: pairs.iter().map(|p| p.quarantined_rows).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::{CircuitView, RunView};

    fn pair(flow: &str, site: &str, status: Option<&str>, open: bool) -> PairStatus {
        PairStatus {
            flow: flow.into(),
            site: site.into(),
            last_run: status.map(|status| RunView {
                run_id: "r".into(),
                flow: flow.into(),
                site: site.into(),
                status: status.into(),
                started_at: chrono::DateTime::UNIX_EPOCH,
                finished_at: None,
                rows_read: 0,
                rows_written: 0,
                error: None,
                error_kind: None,
                note: None,
            }),
            last_success_at: None,
            lag_seconds: None,
            checkpoints: Vec::new(),
            circuit: CircuitView {
                open,
                failures: 0,
                until: None,
            },
            quarantined_rows: if open { 3 } else { 0 },
        }
    }

    fn config() -> crate::config::Config {
        let dir = std::path::Path::new("/");
        let mut text = String::from("[master]\nurl = \"sqlite://m.db\"\n");
        for (id, region) in [
            ("store-001", "north"),
            ("store-002", "south"),
            ("Store-010", "north"),
        ] {
            text.push_str(&format!(
                "[[site]]\nid = \"{id}\"\nurl = \"sqlite://{id}.db\"\ntags = {{ region = \"{region}\" }}\n"
            ));
        }
        crate::config::Config::parse(&text, &dir.join("h.toml"), dir, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn fleet() -> Vec<PairStatus> {
        vec![
            pair("prices", "store-001", Some("succeeded"), false),
            pair("prices", "store-002", Some("failed"), true),
            pair("prices", "Store-010", None, false),
            pair("sales", "store-001", Some("failed"), false),
            pair("sales", "store-002", Some("succeeded"), false),
            pair("sales", "Store-010", Some("running"), false),
        ]
    }

    fn sites(pairs: &[PairStatus]) -> Vec<String> {
        pairs
            .iter()
            .map(|p| format!("{}/{}", p.flow, p.site))
            .collect()
    }

    #[test]
    fn the_summary_counts_every_pair_by_state() {
        let summary = summary(&fleet(), 3);
        assert_eq!(summary.pairs, 6);
        assert_eq!(summary.circuits_open, 1);
        // The one open pair holds 3 quarantined rows.
        assert_eq!(summary.quarantined_rows, 3);
        let expected: BTreeMap<String, usize> = [
            ("failed", 2),
            ("never", 1),
            ("running", 1),
            ("succeeded", 2),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(summary.by_state, expected);
    }

    #[test]
    fn filters_combine_and_pages_follow_each_other() {
        let config = config().sites;
        let parse = |q: &str| StatusFilter::parse(q).unwrap_or_else(|e| panic!("{}", e.message));
        let (page, total, next) = parse("state=failed").page(fleet(), &config);
        assert_eq!(
            (sites(&page), total, next),
            (
                vec!["prices/store-002".into(), "sales/store-001".into()],
                2,
                None
            )
        );
        let (page, ..) = parse("tag=region:north&flow=sales").page(fleet(), &config);
        assert_eq!(sites(&page), ["sales/store-001", "sales/Store-010"]);
        // Search ignores case.
        let (page, ..) = parse("q=STORE-01").page(fleet(), &config);
        assert_eq!(sites(&page), ["prices/Store-010", "sales/Store-010"]);
        let (page, ..) = parse("state=circuit_open").page(fleet(), &config);
        assert_eq!(sites(&page), ["prices/store-002"]);
        let (page, ..) = parse("state=never").page(fleet(), &config);
        assert_eq!(sites(&page), ["prices/Store-010"]);
        // Empty fields (an HTML form's) filter nothing.
        assert_eq!(parse("q=&state=&tag=&flow=sales"), parse("flow=sales"));
        // Pages of 4: 4 then 2, the second says there is no third.
        assert_eq!(parse("limit=4").page(fleet(), &config).2, Some(4));
        let (page, total, next) = parse("limit=4&offset=4").page(fleet(), &config);
        assert_eq!(
            (sites(&page), total, next),
            (
                vec!["sales/store-002".into(), "sales/Store-010".into()],
                6,
                None
            )
        );
    }

    #[test]
    fn bad_params_are_named() {
        let message = |q: &str| StatusFilter::parse(q).unwrap_err().message;
        assert_eq!(
            message("state=broken"),
            "query param `state`: unknown state `broken`; use running, succeeded, failed, skipped, partial, never, circuit_open"
        );
        assert_eq!(
            message("tag=north"),
            "query param `tag`: `north` is not `name:value` (e.g. `region:north`)"
        );
        assert_eq!(
            message("limit=0"),
            "query param `limit`: `0` is not a whole number from 1 to 1000"
        );
        assert_eq!(
            message("offset=-1"),
            "query param `offset`: `-1` is not a whole number from 0"
        );
        assert_eq!(
            message("page=2"),
            "unknown query param `page`; use flow, state, tag, q, limit or offset"
        );
    }
}
