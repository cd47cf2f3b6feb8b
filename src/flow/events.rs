//! The follow-up events a run raises, as outbox rows (`state::NewEvent`):
//! one per matching `[[flow.on]]` handler, plus one per flow chained with
//! `after` when the run succeeded.
//!
//! Body (the webhook's JSON, after Standard Webhooks' recommended shape):
//! `{"type": "flow.<event>", "timestamp": "<RFC 3339 UTC>", "data": {...}}`
//! where `data` holds `event_id`, `event`, `flow`, `site`, `run_id` and,
//! for `success`/`failure`, `status`, `rows_read`, `rows_written`,
//! `error`; for `rows_changed`, `stream` and `rows_written` (that batch's).

use chrono::{SecondsFormat, Utc};
use serde_json::{Value as Json, json};

use super::SiteReport;
use crate::config::{Config, EventKind, Flow};
use crate::state::{NewEvent, RunStatus};

/// The handler name an event for flow `name` chained with `after` carries.
pub fn chained_handler(name: &str) -> String {
    format!("flow:{name}")
}

/// One event for `handler`: a fresh id, the body built from `data` (to
/// which `event_id` and `event` are added).
fn event(flow: &str, site: &str, kind: EventKind, handler: String, mut data: Json) -> NewEvent {
    let event_id = uuid::Uuid::new_v4().to_string();
    data["event_id"] = json!(event_id);
    data["event"] = json!(kind.as_str());
    let body = json!({
        "type": format!("flow.{}", kind.as_str()),
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": data,
    });
    NewEvent {
        event_id,
        flow: flow.to_string(),
        site: site.to_string(),
        event: kind.as_str().to_string(),
        handler,
        payload: body.to_string(),
    }
}

/// The `rows_changed` events of one batch that wrote `rows_written` rows
/// (none when the flow has no such handler or nothing was written).
pub(super) fn rows_changed(
    flow: &Flow,
    site: &str,
    run_id: Option<&str>,
    stream: &str,
    rows_written: u64,
) -> Vec<NewEvent> {
    if rows_written == 0 {
        return Vec::new();
    }
    flow.on
        .iter()
        .filter(|h| h.event == EventKind::RowsChanged)
        .map(|handler| {
            let data = json!({
                "flow": flow.name, "site": site, "run_id": run_id,
                "stream": stream, "rows_written": rows_written,
            });
            event(
                &flow.name,
                site,
                EventKind::RowsChanged,
                handler.name.clone(),
                data,
            )
        })
        .collect()
}

/// The events of a finished run: its `success` handlers and chained flows
/// (status `succeeded`, or `partial` for handlers only), or its `failure`
/// handlers (status `failed`). A skipped run raises none.
pub(super) fn run_ended(config: &Config, flow: &Flow, report: &SiteReport) -> Vec<NewEvent> {
    let kind = match report.status {
        RunStatus::Succeeded | RunStatus::Partial => EventKind::Success,
        RunStatus::Failed => EventKind::Failure,
        RunStatus::Skipped | RunStatus::Running => return Vec::new(),
    };
    let data = json!({
        "flow": flow.name, "site": report.site, "run_id": report.run_id,
        "status": report.status.as_str(), "rows_read": report.rows_read(),
        "rows_written": report.rows_written(), "error": report.error,
    });
    let mut events: Vec<NewEvent> = flow
        .on
        .iter()
        .filter(|h| h.event == kind)
        .map(|h| event(&flow.name, &report.site, kind, h.name.clone(), data.clone()))
        .collect();
    if report.status == RunStatus::Succeeded {
        for chained in config.flows_after(&flow.name) {
            let handler = chained_handler(&chained.name);
            events.push(event(&flow.name, &report.site, kind, handler, data.clone()));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[master]
url = "sqlite://m.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "t"
  target = "t"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "site"
  [[flow.on]]
  event = "rows_changed"
  name = "hook"
  webhook = "http://127.0.0.1:9/x"
  [[flow.on]]
  event = "failure"
  webhook = "http://127.0.0.1:9/y"
[[flow]]
name = "totals"
direction = "pull"
after = "sales"
  [[flow.stream]]
  source = "u"
  target = "u"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "site"
"#;
        Config::parse(text, "h.toml".as_ref(), ".".as_ref(), &|_| None).unwrap()
    }

    fn report(status: RunStatus) -> SiteReport {
        SiteReport {
            flow: "sales".into(),
            site: "s1".into(),
            run_id: Some("r1".into()),
            status,
            streams: vec![super::super::StreamReport {
                stream: "t".into(),
                rows_read: 7,
                rows_written: 5,
                ..Default::default()
            }],
            error: None,
            error_kind: None,
            duration: std::time::Duration::ZERO,
            note: None,
        }
    }

    #[test]
    fn a_batch_that_wrote_rows_raises_one_event_per_rows_changed_handler() {
        let config = config();
        let flow = config.flow("sales").unwrap();
        assert!(rows_changed(flow, "s1", Some("r1"), "t", 0).is_empty());
        let events = rows_changed(flow, "s1", Some("r1"), "t", 3);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].handler, "hook");
        assert_eq!(events[0].event, "rows_changed");
        let body: Json = serde_json::from_str(&events[0].payload).unwrap();
        assert_eq!(body["type"], "flow.rows_changed");
        assert_eq!(body["data"]["rows_written"], 3);
        assert_eq!(body["data"]["stream"], "t");
        assert_eq!(body["data"]["event_id"], json!(events[0].event_id));
    }

    #[test]
    fn a_success_chains_the_flows_after_it_and_a_failure_runs_failure_handlers() {
        let config = config();
        let flow = config.flow("sales").unwrap();
        let ok = run_ended(&config, flow, &report(RunStatus::Succeeded));
        let handlers: Vec<&str> = ok.iter().map(|e| e.handler.as_str()).collect();
        assert_eq!(handlers, ["flow:totals"]);
        // A partial run is no success for the chained flow.
        assert!(run_ended(&config, flow, &report(RunStatus::Partial)).is_empty());
        let failed = run_ended(&config, flow, &report(RunStatus::Failed));
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].handler, "on[1]");
        let body: Json = serde_json::from_str(&failed[0].payload).unwrap();
        assert_eq!(body["data"]["rows_read"], 7);
        assert_eq!(body["data"]["rows_written"], 5);
        assert_eq!(body["data"]["status"], "failed");
        assert!(run_ended(&config, flow, &report(RunStatus::Skipped)).is_empty());
    }
}
