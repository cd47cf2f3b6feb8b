//! `[api]`: where the HTTP API listens and who may call it.
//!
//! Tokens are bearer tokens with a role: `read` may use every `GET` route,
//! `operate` also starts syncs and calls data services. Token values usually
//! come from the environment (`token = "${HUBSYNC_OPS_TOKEN}"`) and are kept
//! in a [`Secret`]. Without any token the API is open, so the hub refuses to
//! listen anywhere but a loopback address.

use std::net::SocketAddr;

use serde::Deserialize;

use super::Secret;

/// Default `api.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    listen: Option<String>,
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token: String,
    role: String,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `GET` routes: sites, flows, runs, status, metrics, the dashboard.
    Read,
    /// Everything `read` may, plus `POST` routes: start syncs, call services.
    Operate,
}

impl Role {
    /// `read` or `operate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }
}

/// One bearer token.
#[derive(Clone, Debug)]
pub struct ApiToken {
    /// A name for logs (never the token itself).
    pub name: String,
    /// The token value (redacted in Debug/Display).
    pub token: Secret,
    /// What it may do.
    pub role: Role,
}

/// The validated `[api]` section.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Address and port the API listens on (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// Accepted tokens; empty means no authentication (loopback only).
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_LISTEN.parse().expect("default listen address"),
            tokens: Vec::new(),
        }
    }
}

/// Validates `[api]`; problems are pushed with their key.
pub(super) fn validate_api(raw: RawApi, problems: &mut Vec<String>) -> ApiConfig {
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            problems.push(format!(
                "`api.listen` `{listen_text}`: not an address and port; write e.g. `127.0.0.1:7070` or `[::1]:7070`"
            ));
            DEFAULT_LISTEN.parse().expect("default listen address")
        }
    };
    let mut tokens = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (index, raw_token) in raw.token.into_iter().enumerate() {
        let place = format!("`api.token[{index}]`");
        if raw_token.name.trim().is_empty() {
            problems.push(format!("{place}: `name` is empty"));
        } else if !names.insert(raw_token.name.clone()) {
            problems.push(format!(
                "{place}: duplicate token name `{}`",
                raw_token.name
            ));
        }
        if raw_token.token.trim().len() < 16 {
            problems.push(format!(
                "{place} (`{}`): `token` is shorter than 16 characters; use a long random value such as `openssl rand -hex 32`",
                raw_token.name
            ));
        }
        let role = match raw_token.role.as_str() {
            "read" => Role::Read,
            "operate" => Role::Operate,
            other => {
                problems.push(format!(
                    "{place} (`{}`): unknown role `{other}`; use `read` (GET routes) or `operate` (also sync and services)",
                    raw_token.name
                ));
                Role::Read
            }
        };
        tokens.push(ApiToken {
            name: raw_token.name,
            token: Secret::new(raw_token.token),
            role,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for token in &tokens {
        if !seen.insert(token.token.expose()) {
            problems.push(format!(
                "`api.token` `{}`: the same token value is used twice; give each token its own value",
                token.name
            ));
        }
    }
    if tokens.is_empty() && !listen.ip().is_loopback() {
        problems.push(format!(
            "`api.listen` `{listen}` is not a loopback address and no `[[api.token]]` is configured: \
             anyone on the network could start syncs and call services; add a token or listen on `127.0.0.1`"
        ));
    }
    ApiConfig { listen, tokens }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawApi {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn non_loopback_without_tokens_is_refused() {
        let mut problems = Vec::new();
        validate_api(raw("listen = \"0.0.0.0:7070\""), &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("`api.listen` `0.0.0.0:7070` is not a loopback address"),
            "{}",
            problems[0]
        );
        let mut problems = Vec::new();
        let api = validate_api(
            raw(
                "listen = \"0.0.0.0:7070\"\n[[token]]\nname = \"ops\"\ntoken = \"0123456789abcdef\"\nrole = \"operate\"",
            ),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(api.tokens[0].role, Role::Operate);
        assert_eq!(format!("{:?}", api.tokens[0].token), "***");
    }

    #[test]
    fn bad_tokens_are_named() {
        let mut problems = Vec::new();
        validate_api(
            raw(
                "listen = \"localhost\"\n[[token]]\nname = \"a\"\ntoken = \"short\"\nrole = \"admin\"",
            ),
            &mut problems,
        );
        assert_eq!(
            problems,
            [
                "`api.listen` `localhost`: not an address and port; write e.g. `127.0.0.1:7070` or `[::1]:7070`",
                "`api.token[0]` (`a`): `token` is shorter than 16 characters; use a long random value such as `openssl rand -hex 32`",
                "`api.token[0]` (`a`): unknown role `admin`; use `read` (GET routes) or `operate` (also sync and services)",
            ]
        );
    }
}
