//! The HTTP API (axum): health, fleet and run history, flow control, data
//! services, Prometheus metrics, an OpenAPI document and the dashboard.
//!
//! [`router`] builds the whole app from an [`ApiState`]; [`serve`] binds
//! it to `[api] listen` and runs until the cancellation token fires
//! (graceful shutdown: requests in flight finish). Authentication is a
//! middleware ([`auth`]) in front of every route but `/health`.

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod fleet;
pub mod json;
pub mod openapi;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

pub use self::error::ApiError;
use crate::config::ApiConfig;
use crate::flow::{Hub, Progress};

/// Shared state of every request: the hub, where sync progress goes, the
/// accepted tokens and the metrics handle.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Arc<Hub>,
    progress: Arc<dyn Progress>,
    tokens: auth::Tokens,
    metrics: &'static PrometheusHandle,
    /// Syncs started by requests; [`serve`] waits for them at shutdown.
    tasks: tokio_util::task::TaskTracker,
}

impl ApiState {
    /// State for an API serving `hub`; syncs it starts report to `progress`
    /// (the daemon's log lines). Installs the metrics recorder.
    pub fn new(hub: Arc<Hub>, api: &ApiConfig, progress: Arc<dyn Progress>) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                hub,
                progress,
                tokens: auth::Tokens::new(&api.tokens),
                metrics: crate::telemetry::install(),
                tasks: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    fn progress(&self) -> &Arc<dyn Progress> {
        &self.inner.progress
    }

    fn tokens(&self) -> &auth::Tokens {
        &self.inner.tokens
    }

    fn metrics(&self) -> &'static PrometheusHandle {
        self.inner.metrics
    }

    fn tasks(&self) -> &tokio_util::task::TaskTracker {
        &self.inner.tasks
    }
}

/// Every route, behind the auth middleware. JSON errors for unknown routes
/// (404) and wrong methods (405).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/health", get(routes::health))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/sites", get(routes::sites))
        .route("/api/v1/flows", get(routes::flows))
        .route("/api/v1/runs", get(routes::runs))
        .route("/api/v1/status", get(routes::status))
        .route("/api/v1/flows/{flow}/sync", post(routes::sync_flow))
        .route("/api/v1/events", get(events::list_events))
        .route(
            "/api/v1/events/{event_id}/replay",
            post(events::replay_event),
        )
        .route(
            "/api/v1/services/{service}/{operation}",
            post(routes::call_service),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /api/v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "this route does not take this method; see /api/v1/openapi.json".into(),
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::auth,
        ))
        .with_state(state)
}

/// Binds `listen` (`api.listen`).
///
/// Errors: the address is in use or may not be bound; the message names
/// the address and the key.
pub async fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on `{listen}` (`api.listen`): {e}"),
        )
    })
}

/// Serves [`router`] on `listener` until `cancel` fires (requests in flight
/// finish, and syncs started by requests stop after their current batch,
/// as the hub shares `cancel`). Prints `hubsync API listening on http://ADDR` to stderr first
/// (the real port when `api.listen` has port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let auth_note = if state.tokens().is_empty() {
        "no tokens configured: open to local callers"
    } else {
        "bearer tokens required"
    };
    eprintln!("hubsync API listening on http://{bound} ({auth_note})");
    let tasks = state.tasks().clone();
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
    tasks.close();
    tasks.wait().await;
    served
}

/// Deletes finished runs older than `hub.run_history_days` now and then
/// every hour, until `cancel` fires. Failures are logged and retried at the
/// next hour.
pub async fn prune_history(hub: Arc<Hub>, cancel: CancellationToken) {
    let days = hub.config().hub.run_history_days;
    if days == 0 {
        return;
    }
    loop {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        match hub.state().prune_runs(hub.master(), cutoff).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!("removed {removed} runs older than {days} days from the history")
            }
            Err(e) => tracing::warn!("cannot prune the run history: {e}"),
        }
        match hub.state().prune_events(hub.master(), cutoff).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                "removed {removed} delivered follow-up events older than {days} days from the outbox"
            ),
            Err(e) => tracing::warn!("cannot prune the outbox: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
