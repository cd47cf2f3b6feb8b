//! Bearer-token authentication and roles.
//!
//! `GET`/`HEAD` routes need a `read` or `operate` token, other methods an
//! `operate` token; `/health`, `/healthz` and `/readyz` need none. A token is sent as
//! `Authorization: Bearer <token>`; the dashboard may instead keep it in
//! the `hubsync_token` cookie (set by opening `/?token=<token>` once), which
//! is accepted for `GET` only so that a cookie can never start a sync.
//! Tokens are compared as SHA-256 digests, so the comparison time does not
//! depend on how many leading characters match.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};
use crate::config::{ApiToken, Role};

/// Name of the dashboard's token cookie.
pub const COOKIE: &str = "hubsync_token";

/// The accepted tokens, as digests.
pub struct Tokens(Vec<([u8; 32], String, Role)>);

impl Tokens {
    /// Digests of `tokens`.
    pub fn new(tokens: &[ApiToken]) -> Tokens {
        Tokens(
            tokens
                .iter()
                .map(|t| (digest(t.token.expose()), t.name.clone(), t.role))
                .collect(),
        )
    }

    /// True when no token is configured (the API is open).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name and role of `presented`, if it is a configured token.
    pub fn lookup(&self, presented: &str) -> Option<(&str, Role)> {
        let presented = digest(presented);
        self.0
            .iter()
            .find(|(d, _, _)| *d == presented)
            .map(|(_, name, role)| (name.as_str(), *role))
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The middleware: lets the request through or answers 401/403 (the
/// dashboard gets a token form instead of a JSON 401).
pub async fn auth(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let tokens = state.tokens();
    let path = request.uri().path().to_string();
    if tokens.is_empty() || matches!(path.as_str(), "/health" | "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    // `/?token=...`: check it, keep it in a cookie, and drop it from the URL.
    if path == "/"
        && is_read
        && let Some(token) = query_token(request.uri().query())
    {
        if tokens.lookup(&token).is_some() {
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_string()),
                    (
                        header::SET_COOKIE,
                        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                    ),
                ],
            )
                .into_response();
        }
        return super::dashboard::login_page(Some("unknown token")).into_response();
    }
    let bearer = request
        .headers()
        .typed_get::<Authorization<Bearer>>()
        .map(|a| a.token().to_string());
    let cookie = is_read
        .then(|| {
            request
                .headers()
                .typed_get::<headers::Cookie>()
                .and_then(|c| c.get(COOKIE).map(str::to_string))
        })
        .flatten();
    let Some(presented) = bearer.or(cookie) else {
        if path == "/" {
            return super::dashboard::login_page(None).into_response();
        }
        return ApiError::unauthorized(
            "missing token; send `Authorization: Bearer <token>` with a token from `[[api.token]]`",
        )
        .into_response();
    };
    let Some((name, role)) = tokens.lookup(&presented) else {
        if path == "/" {
            return super::dashboard::login_page(Some("unknown token")).into_response();
        }
        return ApiError::unauthorized("unknown token; use a token from `[[api.token]]`")
            .into_response();
    };
    let needed = if is_read { Role::Read } else { Role::Operate };
    if role < needed {
        return ApiError::forbidden(format!(
            "token `{name}` has role `{}`; {} {path} needs role `{}`",
            role.as_str(),
            request.method(),
            needed.as_str()
        ))
        .into_response();
    }
    next.run(request).await
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn tokens_are_found_by_value_and_roles_are_ordered() {
        let tokens = Tokens::new(&[
            ApiToken {
                name: "viewer".into(),
                token: Secret::new("read-token-0123456789".into()),
                role: Role::Read,
            },
            ApiToken {
                name: "ops".into(),
                token: Secret::new("operate-token-0123456".into()),
                role: Role::Operate,
            },
        ]);
        assert_eq!(
            tokens.lookup("read-token-0123456789"),
            Some(("viewer", Role::Read))
        );
        assert_eq!(
            tokens.lookup("operate-token-0123456"),
            Some(("ops", Role::Operate))
        );
        assert_eq!(tokens.lookup("read-token-012345678"), None);
        assert_eq!(tokens.lookup(""), None);
        assert!(Role::Read < Role::Operate);
        assert!(!tokens.is_empty());
        assert!(Tokens::new(&[]).is_empty());
    }

    #[test]
    fn the_dashboard_token_is_read_from_the_query() {
        assert_eq!(query_token(Some("token=abc%20d&x=1")), Some("abc d".into()));
        assert_eq!(query_token(Some("x=1")), None);
        assert_eq!(query_token(None), None);
    }
}
