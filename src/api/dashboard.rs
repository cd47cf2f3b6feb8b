//! The fleet dashboard at `GET /`: one server-rendered HTML page (maud, so
//! every value is escaped), no scripts and no external assets, that reloads
//! itself every 15 s. It shows the fleet as a grid (sites × flows) coloured
//! by each pair's last result, with its lag; the failing pairs with their
//! last error; the recent runs; and rows written per hour over the last 24
//! hours as an inline SVG bar chart.
//!
//! Large fleets: the grid and the failing list take the filters of
//! `/api/v1/status` from the page's query (`state`, `tag`, `q`, `flow`; a
//! form at the top) and the grid shows [`GRID_PAGE`] sites a page
//! (`limit`/`offset`, with a link to the next page); the counts are always
//! the whole fleet's.

use std::collections::{HashMap, HashSet};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, Duration, Timelike, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::routes::{PairStatus, fleet_status};
use super::{ApiError, ApiState};
use crate::state::RunFilter;

/// Seconds between automatic reloads.
pub const REFRESH_SECONDS: u32 = 15;

/// Runs shown in "Recent runs".
const RECENT_RUNS: usize = 20;

/// Sites per page of the grid (without `limit`).
pub const GRID_PAGE: usize = 200;

/// Failing pairs listed (the count above says how many there are).
const FAILING_SHOWN: usize = 100;

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d2433}
header{background:#1d2433;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:20px;margin:0}header span{opacity:.8;font-size:13px}
main{padding:16px 24px;display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:16px}
section{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e8eb;vertical-align:top}
#grid th:first-child{width:140px}
td.cell{text-align:center;font-weight:600;border-radius:4px;border:2px solid #fff}
.succeeded{background:#d3f5dc;color:#0f5c24}.failed{background:#fbd5d5;color:#8a1313}
.running{background:#dbe8ff;color:#12407a}.skipped{background:#fde9c8;color:#7a4a00}
.partial{background:#fdf3c0;color:#6b5900}.never{background:#eceef1;color:#5b6472}
.stale{outline:3px dashed #d97706;outline-offset:-3px}
.counts{display:flex;gap:16px;font-size:14px}.counts b{font-size:22px;display:block}
.error{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word}
.bar{fill:#3b82f6}.axis{font-size:10px;fill:#5b6472}
"#;

/// The dashboard page (tokens are checked by the auth middleware).
pub async fn page(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    // `token` is the login's (handled by `auth`); the rest are filters.
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .filter(|(key, _)| key != "token"),
        )
        .finish();
    let filter = super::fleet::StatusFilter::parse(&query)?;
    let (status, fleet) = fleet_status(&state).await.map_err(ApiError::internal)?;
    let hub = state.hub();
    let recent = hub
        .state()
        .list_runs(hub.master(), &RunFilter::default(), RECENT_RUNS)
        .await
        .map_err(ApiError::internal)?;
    let now = Utc::now();
    let bounds = hour_bounds(now);
    let hourly = hub
        .state()
        .rows_written_between(hub.master(), &bounds)
        .await
        .map_err(ApiError::internal)?;
    let config = hub.config();
    let flows: Vec<&str> = config.flows.iter().map(|f| f.name.as_str()).collect();
    let sites: Vec<&str> = fleet.iter().map(|s| s.id.as_str()).collect();
    let by_pair: HashMap<(&str, &str), &PairStatus> = status
        .pairs
        .iter()
        .map(|p| ((p.flow.as_str(), p.site.as_str()), p))
        .collect();
    let failing: Vec<&PairStatus> = status
        .pairs
        .iter()
        .filter(|p| {
            p.last_run
                .as_ref()
                .is_some_and(|r| matches!(r.status.as_str(), "failed" | "skipped" | "partial"))
        })
        .collect();
    let ok = status
        .pairs
        .iter()
        .filter(|p| p.last_run.as_ref().is_some_and(|r| r.status == "succeeded"))
        .count();
    // The filters choose the grid's sites and the failing pairs listed.
    let kept_sites: HashSet<&str> = (status.pairs.iter())
        .filter(|p| filter.keeps(p, &fleet))
        .map(|p| p.site.as_str())
        .collect();
    let matching: Vec<&str> = (sites.iter().copied())
        .filter(|site| kept_sites.contains(site))
        .collect();
    let per_page = filter.limit.unwrap_or(GRID_PAGE);
    let grid_sites: Vec<&str> = (matching.iter().copied())
        .skip(filter.offset)
        .take(per_page)
        .collect();
    let next_offset = (filter.offset + grid_sites.len() < matching.len())
        .then(|| filter.offset + grid_sites.len());
    let failing_shown: Vec<&PairStatus> = (failing.iter().copied())
        .filter(|p| filter.keeps(p, &fleet))
        .take(FAILING_SHOWN)
        .collect();

    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "hubsync fleet" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "hubsync fleet" }
                    span { "master " (config.master.redacted()) }
                    span id="generated" { "updated " (now.format("%Y-%m-%d %H:%M:%S UTC")) ", every " (REFRESH_SECONDS) " s" }
                }
                main {
                    @if let Some(error) = &status.inventory_error {
                        section class="wide" {
                            p id="inventory-error" class="error" {
                                "The inventory could not be read: " (error)
                                "; the sites shown are those of its last good read."
                            }
                        }
                    }
                    section class="wide" {
                        div class="counts" {
                            div { b id="count-sites" { (sites.len()) } "sites" }
                            div { b id="count-flows" { (flows.len()) } "flows" }
                            div { b id="count-ok" { (ok) } "pairs ok" }
                            div { b id="count-failing" { (failing.len()) } "pairs failing" }
                            div title="follow-up events every attempt failed for: hubsync events, GET /api/v1/events" {
                                b id="count-dead-events" { (status.events.dead) } "dead events"
                            }
                            div title="rows the target refused (on_error = quarantine), retried when they change at the source; see README, State in the master" {
                                b id="count-quarantined" { (status.summary.quarantined_rows) } "rows in quarantine"
                            }
                        }
                    }
                    section class="wide" {
                        h2 { "Fleet: last result and lag per site and flow" }
                        (filter_form(&filter))
                        p id="grid-range" {
                            "sites " (filter.offset + usize::from(!grid_sites.is_empty())) "–" (filter.offset + grid_sites.len())
                            " of " (matching.len()) " matching"
                            @if let Some(next) = next_offset {
                                " · " a id="next-page" href=(next_page_link(&query, next)) { "next page" }
                            }
                        }
                        table id="grid" {
                            thead { tr { th { "site" } @for flow in &flows { th { (flow) } } } }
                            tbody {
                                @for site in &grid_sites {
                                    tr data-site=(site) {
                                        th { (site) }
                                        @for flow in &flows {
                                            (grid_cell(by_pair.get(&(*flow, *site)).copied(), flow, site, now))
                                        }
                                    }
                                }
                            }
                        }
                    }
                    section {
                        h2 { "Failing sites" }
                        @if failing.is_empty() {
                            p id="failing-none" { "None: every pair's last run succeeded or has not run yet." }
                        } @else {
                            table id="failing" {
                                thead { tr { th { "site" } th { "flow" } th { "since" } th { "last error" } } }
                                tbody {
                                    @for pair in &failing_shown {
                                        @let run = pair.last_run.as_ref().expect("failing pairs have a run");
                                        tr data-site=(pair.site) data-flow=(pair.flow) {
                                            td { (pair.site) }
                                            td { (pair.flow) }
                                            td { (ago(run.started_at, now)) }
                                            td class="error" { (run.error.as_deref().unwrap_or(run.status.as_str())) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    section {
                        h2 { "Rows written per hour, last 24 h" }
                        (chart(&hourly))
                    }
                    section class="wide" {
                        h2 { "Recent runs" }
                        table id="runs" {
                            thead { tr { th { "started" } th { "flow" } th { "site" } th { "result" } th { "rows read" } th { "rows written" } th { "error" } } }
                            tbody {
                                @for run in &recent {
                                    tr data-run=(run.run_id) {
                                        td { (run.started_at.format("%m-%d %H:%M:%S")) }
                                        td { (run.flow) }
                                        td { (run.site) }
                                        td class=(run.status.as_str()) { (run.status.as_str()) }
                                        td { (run.rows_read) }
                                        td { (run.rows_written) }
                                        td class="error" { (run.error.as_deref().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(markup.into_string()))
}

/// The filter form (GET: the page's own query).
fn filter_form(filter: &super::fleet::StatusFilter) -> Markup {
    let tag = filter
        .tag
        .as_ref()
        .map(|(name, value)| format!("{name}:{value}"));
    html! {
        form id="filters" method="get" action="/" {
            "site " input name="q" value=(filter.search.clone().unwrap_or_default()) size="12";
            " state " select name="state" {
                option value="" { "any" }
                @for state in super::fleet::STATES {
                    option value=(state) selected[filter.state.as_deref() == Some(state)] { (state) }
                }
            }
            " tag " input name="tag" placeholder="region:north" value=(tag.unwrap_or_default()) size="14";
            " " button type="submit" { "filter" }
        }
    }
}

/// The page's query with `offset` set to `next` (other params kept; empty
/// ones from the form dropped).
fn next_page_link(query: &str, next: usize) -> String {
    let mut link = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "offset" && !value.is_empty() {
            link.append_pair(&key, &value);
        }
    }
    link.append_pair("offset", &next.to_string());
    format!("/?{}", link.finish())
}

/// A pair is shown as stale when its last success is older than this.
const STALE_AFTER: Duration = Duration::hours(1);

fn grid_cell(pair: Option<&PairStatus>, flow: &str, site: &str, now: DateTime<Utc>) -> Markup {
    let status = pair
        .and_then(|p| p.last_run.as_ref())
        .map_or("never", |r| r.status.as_str());
    let lag = pair.and_then(|p| p.last_success_at);
    let stale = lag.is_some_and(|at| now - at > STALE_AFTER);
    let class = if stale {
        format!("cell {status} stale")
    } else {
        format!("cell {status}")
    };
    let title = pair
        .and_then(|p| p.last_run.as_ref())
        .and_then(|r| r.error.clone())
        .unwrap_or_default();
    html! {
        td class=(class) data-flow=(flow) data-site=(site) data-status=(status) title=(title) {
            (status)
            br;
            small { @if let Some(at) = lag { "ok " (ago(at, now)) } @else { "never ok" } }
        }
    }
}

/// `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86400 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86400),
    }
}

/// The 25 bounds of the chart's 24 hourly buckets: from the start of the
/// hour 23 hours before `now`'s to the end of `now`'s hour.
fn hour_bounds(now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let next_hour = hour_of(now) + Duration::hours(1);
    (0..=24)
        .rev()
        .map(|back| next_hour - Duration::hours(back))
        .collect()
}

/// The start of the hour `at` falls in.
fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
}

fn chart(buckets: &[i64]) -> Markup {
    let max = buckets.iter().copied().max().unwrap_or(0).max(1);
    let total: i64 = buckets.iter().sum();
    let (width, height, bar) = (480.0, 120.0, 20.0);
    html! {
        svg id="chart" viewBox={"0 0 " (width) " " (height + 16.0)} width="100%" role="img"
            aria-label={"rows written per hour, " (total) " in 24 h"} data-total=(total) {
            @for (i, rows) in buckets.iter().enumerate() {
                @let h = (*rows as f64 / max as f64) * height;
                rect class="bar" x=(i as f64 * bar) y=(height - h) width=(bar - 2.0) height=(h) {
                    title { (rows) " rows" }
                }
            }
            text class="axis" x="0" y=(height + 12.0) { "-24 h" }
            text class="axis" x=(width - 30.0) y=(height + 12.0) { "now" }
            text class="axis" x="2" y="10" { (max) " rows/h max, " (total) " in 24 h" }
        }
    }
}

/// The token form shown instead of the dashboard without a valid token
/// (401); submitting it opens `/?token=...`, which sets the cookie.
pub fn login_page(error: Option<&str>) -> impl IntoResponse {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "hubsync: sign in" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { h1 { "hubsync fleet" } }
                main {
                    section class="wide" {
                        h2 { "API token" }
                        @if let Some(error) = error { p id="login-error" class="failed" { (error) } }
                        form method="get" action="/" {
                            input type="password" name="token" placeholder="token from [[api.token]]" autofocus;
                            " "
                            button type="submit" { "Open the dashboard" }
                        }
                        p { "The token is kept in a cookie for this browser." }
                    }
                }
            }
        }
    };
    (StatusCode::UNAUTHORIZED, Html(markup.into_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_covers_the_last_24_hours_by_the_hour() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T10:30:00Z")
            .unwrap()
            .to_utc();
        let bounds = hour_bounds(now);
        assert_eq!(bounds.len(), 25);
        assert_eq!(bounds[0].to_rfc3339(), "2026-01-01T11:00:00+00:00");
        assert_eq!(bounds[23].to_rfc3339(), "2026-01-02T10:00:00+00:00");
        assert_eq!(bounds[24].to_rfc3339(), "2026-01-02T11:00:00+00:00");
    }

    #[test]
    fn ages_read_naturally() {
        let now = Utc::now();
        assert_eq!(ago(now - Duration::seconds(42), now), "42 s ago");
        assert_eq!(ago(now - Duration::seconds(300), now), "5 min ago");
        assert_eq!(ago(now - Duration::hours(3), now), "3 h ago");
        assert_eq!(ago(now - Duration::days(2), now), "2 d ago");
    }
}
