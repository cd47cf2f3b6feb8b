//! `[[flow.on]]` follow-up event handlers and `after` (chained flows).
//!
//! A handler reacts to one event of its flow at one site: `success` (a run
//! ended `succeeded` or `partial`), `failure` (a run ended `failed`) or
//! `rows_changed` (a batch wrote rows: one event per such batch, written
//! with its checkpoint). It either posts a webhook (Standard Webhooks
//! signature) or runs a data service operation on the master or on the
//! event's site. `after = "sales"` on a flow runs it at a site right after
//! flow `sales` succeeded there. Validation collects every problem, naming
//! the flow and the handler.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::{Flow, Service};

/// Default webhook timeout per attempt.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default attempts before an event becomes a dead letter.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Parameters an event fills in a service operation that declares them:
/// (parameter name, field of the event body's `data`). The site's id is
/// `site_id` (`site` is reserved for `:site.<tag>`).
pub const EVENT_PARAMS: [(&str, &str); 7] = [
    ("event_id", "event_id"),
    ("event", "event"),
    ("flow", "flow"),
    ("site_id", "site"),
    ("run_id", "run_id"),
    ("stream", "stream"),
    ("rows_written", "rows_written"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHandler {
    event: String,
    name: Option<String>,
    webhook: Option<String>,
    secret: Option<String>,
    timeout: Option<String>,
    max_attempts: Option<u32>,
    service: Option<String>,
    operation: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// Which event a handler reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A run ended `succeeded` or `partial`.
    Success,
    /// A run ended `failed`.
    Failure,
    /// A batch changed rows at the target (one event per such batch).
    RowsChanged,
}

impl EventKind {
    /// `success`, `failure` or `rows_changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Success => "success",
            EventKind::Failure => "failure",
            EventKind::RowsChanged => "rows_changed",
        }
    }

    fn parse(text: &str) -> Option<EventKind> {
        match text {
            "success" => Some(EventKind::Success),
            "failure" => Some(EventKind::Failure),
            "rows_changed" => Some(EventKind::RowsChanged),
            _ => None,
        }
    }
}

/// A Standard Webhooks signing secret: the bytes behind `whsec_<base64>`.
/// Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Decodes `whsec_` + standard base64 (RFC 4648, padded), the form
    /// Standard Webhooks gives secrets (<https://www.standardwebhooks.com/>).
    ///
    /// Errors (the text goes after "`secret` " in a config problem; it never
    /// holds the secret): no `whsec_` prefix (a verifier would decode the
    /// rest as the key, so deliveries signed with other bytes fail), a rest
    /// that is not base64, nothing after the prefix, or a key outside 24-64
    /// bytes (the specification's range); each says the expected form and
    /// how to make one.
    pub fn parse(text: &str) -> Result<WebhookSecret, String> {
        use base64::Engine as _;
        const FORM: &str = "a Standard Webhooks secret is `whsec_` + base64 of 24-64 random bytes; \
             make one with `echo whsec_$(head -c 32 /dev/urandom | base64)`";
        let Some(encoded) = text.strip_prefix("whsec_") else {
            return Err(format!("does not start with `whsec_`; {FORM}"));
        };
        match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(bytes) if (24..=64).contains(&bytes.len()) => Ok(WebhookSecret(bytes)),
            Ok(bytes) if bytes.is_empty() => Err(format!("has nothing after `whsec_`; {FORM}")),
            Ok(bytes) => Err(format!("holds {} bytes; {FORM}", bytes.len())),
            Err(e) => Err(format!("is not `whsec_` followed by base64 ({e}); {FORM}")),
        }
    }

    /// The key bytes HMAC-SHA256 signs with.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// What a handler does with an event.
#[derive(Clone, Debug)]
pub enum EventAction {
    /// POST the event's JSON to `url`.
    Webhook {
        /// `http` or `https` URL.
        url: url::Url,
        /// Signs each delivery (`webhook-signature`); `None`: unsigned.
        secret: Option<WebhookSecret>,
        /// Longest one attempt may take.
        timeout: Duration,
    },
    /// Run a data service operation: on the master, or on the event's site
    /// for a service `on = "site"`.
    Service {
        /// Service name.
        service: String,
        /// Operation name.
        operation: String,
        /// Fixed parameter values (text, parsed by the declared type);
        /// declared parameters named as in [`EVENT_PARAMS`] get the event's.
        params: BTreeMap<String, String>,
    },
}

/// One `[[flow.on]]` handler.
#[derive(Clone, Debug)]
pub struct EventHandler {
    /// Unique in its flow: given, else `on[<index>]`. Stored with each event.
    pub name: String,
    /// The event it reacts to.
    pub event: EventKind,
    /// What it does.
    pub action: EventAction,
    /// Attempts before the event becomes a dead letter (at least 1).
    pub max_attempts: u32,
}

/// Validates a flow's handlers (`place` names the flow); problems are
/// collected. Service names are checked later by [`check_references`].
pub(super) fn validate_handlers(
    raw: Vec<RawHandler>,
    place: &str,
    problems: &mut Vec<String>,
) -> Vec<EventHandler> {
    let mut handlers = Vec::new();
    let mut names = HashSet::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let name = raw.name.clone().unwrap_or_else(|| format!("on[{index}]"));
        let at = format!("{place} handler `{name}`");
        if name.trim().is_empty() || name.starts_with("flow:") {
            problems.push(format!(
                "{at}: `name` may not be empty or start with `flow:`"
            ));
        } else if !names.insert(name.clone()) {
            problems.push(format!("{at}: duplicate handler name in this flow"));
        }
        let event = EventKind::parse(&raw.event).unwrap_or_else(|| {
            problems.push(format!(
                "{at}: unknown `event` `{}`; use `success`, `failure` or `rows_changed`",
                raw.event
            ));
            EventKind::Success
        });
        let max_attempts = match raw.max_attempts {
            Some(0) => {
                problems.push(format!("{at}: `max_attempts` must be at least 1"));
                1
            }
            Some(n) => n,
            None => DEFAULT_MAX_ATTEMPTS,
        };
        if let Some(action) = validate_action(raw, &at, problems) {
            handlers.push(EventHandler {
                name,
                event,
                action,
                max_attempts,
            });
        }
    }
    handlers
}

fn validate_action(raw: RawHandler, at: &str, problems: &mut Vec<String>) -> Option<EventAction> {
    match (raw.webhook, raw.service, raw.operation) {
        (Some(webhook), None, None) => {
            if !raw.params.is_empty() {
                problems.push(format!("{at}: `params` is for a `service` handler"));
            }
            let url = match url::Url::parse(&webhook) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                Ok(url) => {
                    problems.push(format!(
                        "{at}: `webhook` scheme `{}` is not `http` or `https`",
                        url.scheme()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("{at}: `webhook` `{webhook}`: {e}"));
                    None
                }
            };
            let secret = raw.secret.as_deref().and_then(|text| {
                WebhookSecret::parse(text)
                    .map_err(|e| problems.push(format!("{at}: `secret` {e}")))
                    .ok()
            });
            let timeout = match raw.timeout.as_deref().map(humantime::parse_duration) {
                None => DEFAULT_WEBHOOK_TIMEOUT,
                Some(Ok(d)) if !d.is_zero() => d,
                Some(Ok(_)) => {
                    problems.push(format!("{at}: `timeout` must be above zero"));
                    DEFAULT_WEBHOOK_TIMEOUT
                }
                Some(Err(e)) => {
                    problems.push(format!("{at}: `timeout`: {e} (example: `10s`)"));
                    DEFAULT_WEBHOOK_TIMEOUT
                }
            };
            Some(EventAction::Webhook {
                url: url?,
                secret,
                timeout,
            })
        }
        (None, Some(service), Some(operation)) => {
            if raw.secret.is_some() || raw.timeout.is_some() {
                problems.push(format!(
                    "{at}: `secret` and `timeout` are for a `webhook` handler"
                ));
            }
            Some(EventAction::Service {
                service,
                operation,
                params: raw.params,
            })
        }
        _ => {
            problems.push(format!(
                "{at}: give either `webhook = \"https://...\"` or both `service` and `operation`"
            ));
            None
        }
    }
}

/// Cross-checks that need every flow and service: a handler's service,
/// operation and fixed parameters exist (and parse by their declared
/// type); `after` names another flow and chains no cycle.
pub(super) fn check_references(flows: &[Flow], services: &[Service], problems: &mut Vec<String>) {
    for flow in flows {
        for handler in &flow.on {
            let EventAction::Service {
                service,
                operation,
                params,
            } = &handler.action
            else {
                continue;
            };
            let at = format!("flow `{}` handler `{}`", flow.name, handler.name);
            let Some(declared) = services.iter().find(|s| &s.name == service) else {
                problems.push(format!("{at}: no `[[service]]` named `{service}`"));
                continue;
            };
            let Some(op) = declared.operation(operation) else {
                problems.push(format!(
                    "{at}: service `{service}` has no operation `{operation}`"
                ));
                continue;
            };
            for (name, value) in params {
                match op.params.iter().find(|p| &p.name == name) {
                    None => problems.push(format!(
                        "{at}: `params.{name}` is not a parameter of operation `{operation}`"
                    )),
                    Some(param) => {
                        if let Err(e) = param.param_type.parse_text(value) {
                            problems.push(format!("{at}: `params.{name}`: {e}"));
                        }
                    }
                }
            }
        }
        check_after(flow, flows, problems);
    }
}

/// `after` names another flow, and following `after` from `flow` never
/// comes back to it.
fn check_after(flow: &Flow, flows: &[Flow], problems: &mut Vec<String>) {
    let Some(first) = &flow.after else {
        return;
    };
    let mut seen = vec![flow.name.as_str()];
    let mut next = Some(first.as_str());
    while let Some(name) = next {
        if seen.contains(&name) {
            problems.push(format!(
                "flow `{}`: `after` chain comes back to flow `{name}` ({} -> {name}); break the cycle",
                flow.name,
                seen.join(" -> ")
            ));
            return;
        }
        let Some(before) = flows.iter().find(|f| f.name == name) else {
            problems.push(format!(
                "flow `{}`: `after` names no flow `{name}`; flows: {}",
                flow.name,
                flows
                    .iter()
                    .map(|f| format!("`{}`", f.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return;
        };
        seen.push(name);
        next = before.after.as_deref();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[master]\nurl = \"sqlite://m.db\"\n[[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\n\
        [[service]]\nname = \"svc\"\non = \"master\"\n  [[service.operation]]\n  name = \"op\"\n  \
        sql = \"SELECT :n AS n\"\n  params = [{ name = \"n\", type = \"int\" }]\n";

    fn flow(name: &str, extra: &str) -> String {
        format!(
            "[[flow]]\nname = \"{name}\"\ndirection = \"pull\"\n{extra}\n  [[flow.stream]]\n  source = \"t_{name}\"\n  \
             target = \"t_{name}\"\n  primary_key = [\"id\"]\n  cursor = \"u\"\n  site_column = \"site\"\n"
        )
    }

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("h.toml"), Path::new("/cfg"), &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn handlers_parse_with_their_defaults() {
        let text = format!(
            "{BASE}{}  [[flow.on]]\n  event = \"rows_changed\"\n  webhook = \"https://x.example/h\"\n  \
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n  \
             [[flow.on]]\n  event = \"failure\"\n  name = \"ops\"\n  service = \"svc\"\n  operation = \"op\"\n  \
             params = {{ n = \"7\" }}\n  max_attempts = 2\n",
            flow("f", "")
        );
        let config = Config::parse(&text, Path::new("h.toml"), Path::new("/cfg"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let on = &config.flow("f").unwrap().on;
        assert_eq!(
            (on[0].name.as_str(), on[0].event),
            ("on[0]", EventKind::RowsChanged)
        );
        assert_eq!(on[0].max_attempts, DEFAULT_MAX_ATTEMPTS);
        let EventAction::Webhook {
            secret, timeout, ..
        } = &on[0].action
        else {
            panic!("a webhook")
        };
        assert_eq!(*timeout, DEFAULT_WEBHOOK_TIMEOUT);
        // base64 "MfKQ9r8G..." decodes to 24 bytes.
        assert_eq!(secret.as_ref().unwrap().bytes().len(), 24);
        assert_eq!(format!("{secret:?}"), "Some(WebhookSecret(***))");
        assert_eq!((on[1].name.as_str(), on[1].max_attempts), ("ops", 2));
    }

    /// Regression (fresh-user trial): a secret without `whsec_` was taken
    /// as base64 of the key, so deliveries were signed with bytes a
    /// Standard Webhooks verifier (which decodes after `whsec_`) rejects.
    #[test]
    fn a_secret_must_be_whsec_and_base64() {
        let handler = |secret: &str| {
            format!(
                "{BASE}{}  [[flow.on]]\n  name = \"erp\"\n  event = \"success\"\n  \
                 webhook = \"https://x.example/h\"\n  secret = \"{secret}\"\n",
                flow("f", "")
            )
        };
        let form = "a Standard Webhooks secret is `whsec_` + base64 of 24-64 random bytes; \
             make one with `echo whsec_$(head -c 32 /dev/urandom | base64)`";
        // Valid base64 (24 bytes), but no prefix.
        assert_eq!(
            problems(&handler("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            [format!(
                "flow `f` handler `erp`: `secret` does not start with `whsec_`; {form}"
            )]
        );
        // The prefix, then a space: byte 32 at offset 3 of the rest.
        assert_eq!(
            problems(&handler("whsec_abc def")),
            [format!(
                "flow `f` handler `erp`: `secret` is not `whsec_` followed by base64 (Invalid symbol 32, offset 3.); {form}"
            )]
        );
        assert_eq!(
            problems(&handler("whsec_")),
            [format!(
                "flow `f` handler `erp`: `secret` has nothing after `whsec_`; {form}"
            )]
        );
        // Reported by a second trial: one byte (`YQ==` is "a") was taken.
        assert_eq!(
            problems(&handler("whsec_YQ==")),
            [format!(
                "flow `f` handler `erp`: `secret` holds 1 bytes; {form}"
            )]
        );
        assert!(problems(&handler("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).is_empty());
    }

    #[test]
    fn bad_handlers_are_named_with_their_flow() {
        let text = format!(
            "{BASE}{}  [[flow.on]]\n  event = \"done\"\n  webhook = \"ftp://x\"\n  secret = \"whsec_***\"\n  \
             [[flow.on]]\n  event = \"success\"\n  service = \"svc\"\n  operation = \"nope\"\n  \
             [[flow.on]]\n  event = \"success\"\n  name = \"p\"\n  service = \"svc\"\n  operation = \"op\"\n  \
             params = {{ n = \"seven\", m = \"1\" }}\n  \
             [[flow.on]]\n  event = \"success\"\n{}{}",
            flow("f", "after = \"g\""),
            flow("g", "after = \"f\""),
            flow("h", "after = \"zz\""),
        );
        let problems = problems(&text);
        let expected = [
            "flow `f` handler `on[0]`: unknown `event` `done`; use `success`, `failure` or `rows_changed`",
            "flow `f` handler `on[0]`: `webhook` scheme `ftp` is not `http` or `https`",
            "flow `f` handler `on[3]`: give either `webhook = \"https://...\"` or both `service` and `operation`",
            "flow `f` handler `on[1]`: service `svc` has no operation `nope`",
            "flow `f` handler `p`: `params.m` is not a parameter of operation `op`",
            "flow `f`: `after` chain comes back to flow `f` (f -> g -> f); break the cycle",
            "flow `g`: `after` chain comes back to flow `g` (g -> f -> g); break the cycle",
            "flow `h`: `after` names no flow `zz`; flows: `f`, `g`, `h`",
        ];
        for message in expected {
            assert!(
                problems.iter().any(|p| p == message),
                "missing `{message}` in {problems:#?}"
            );
        }
        assert!(
            problems.iter().any(|p| p.starts_with(
                "flow `f` handler `on[0]`: `secret` is not `whsec_` followed by base64"
            )),
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("flow `f` handler `p`: `params.n`: ")),
            "{problems:#?}"
        );
    }
}
