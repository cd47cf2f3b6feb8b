//! The dashboard at `GET /`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};

use super::ApiState;

/// The dashboard page.
pub async fn page(State(_state): State<ApiState>) -> impl IntoResponse {
    Html("<html></html>".to_string())
}

/// The token form shown instead of the dashboard without a valid token.
pub fn login_page(error: Option<&str>) -> impl IntoResponse {
    (StatusCode::UNAUTHORIZED, Html(format!("{error:?}")))
}
