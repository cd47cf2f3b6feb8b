//! Follow-up event routes: the outbox (dead letters by default) and replay.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiState};
use crate::state::{DeliveryState, OutboxRecord};

/// Most events one `GET /api/v1/events` answers with.
const MAX_EVENTS_LIMIT: usize = 1000;

/// Outbox rows per state.
#[derive(Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventCounts {
    /// Not delivered yet (due, being delivered, or waiting for a retry).
    pub pending: i64,
    /// Taken by their handler.
    pub delivered: i64,
    /// Dead letters: every attempt failed; replay them.
    pub dead: i64,
}

/// `GET /api/v1/events`.
#[derive(Serialize, ToSchema)]
pub struct EventsResponse {
    /// Events, newest first.
    pub events: Vec<OutboxRecord>,
    /// Counts over the whole outbox.
    pub counts: EventCounts,
}

/// `POST /api/v1/events/{event_id}/replay`.
#[derive(Serialize, ToSchema)]
pub struct ReplayResponse {
    /// The replayed event.
    pub event_id: String,
    /// Now `pending`: the delivery worker delivers it again under its id.
    pub state: DeliveryState,
}

/// The outbox counts of `state`'s hub.
pub(super) async fn counts(state: &ApiState) -> Result<EventCounts, crate::state::StateError> {
    let hub = state.hub();
    let (pending, delivered, dead) = hub.state().event_counts(hub.master()).await?;
    Ok(EventCounts {
        pending,
        delivered,
        dead,
    })
}

/// Follow-up events of the outbox, newest first: dead letters unless
/// `state` says otherwise.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    params(
        ("state" = Option<String>, Query, description = "pending, delivered, dead (default) or all"),
        ("limit" = Option<usize>, Query, description = "1 to 1000 (default 100)"),
    ),
    responses((status = 200, body = EventsResponse), (status = 400, body = super::error::ErrorBody)))]
pub async fn list_events(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<EventsResponse>, ApiError> {
    let mut filter = Some(DeliveryState::Dead);
    let mut limit = 100;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "state" if value == "all" => filter = None,
            "state" => {
                filter = Some(DeliveryState::parse(&value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "query param `state`: unknown state `{value}`; use pending, delivered, dead or all"
                    ))
                })?)
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_EVENTS_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "query param `limit`: `{value}` is not a whole number from 1 to {MAX_EVENTS_LIMIT}"
                        ))
                    })?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query param `{other}`; use state or limit"
                )));
            }
        }
    }
    let hub = state.hub();
    let events = (hub.state())
        .events(hub.master(), filter, limit)
        .await
        .map_err(ApiError::internal)?;
    let counts = counts(&state).await.map_err(ApiError::internal)?;
    Ok(Json(EventsResponse { events, counts }))
}

/// Makes a dead (or delivered) event pending again: it is delivered again
/// under the same event id (the receiver's idempotency key).
#[utoipa::path(post, path = "/api/v1/events/{event_id}/replay", tag = "events", security(("bearer" = [])),
    params(("event_id" = String, Path, description = "event id")),
    responses((status = 200, body = ReplayResponse), (status = 404, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody)))]
pub async fn replay_event(
    State(state): State<ApiState>,
    Path(event_id): Path<String>,
) -> Result<Json<ReplayResponse>, ApiError> {
    let hub = state.hub();
    let replayed = (hub.state())
        .replay_event(hub.master(), &event_id)
        .await
        .map_err(ApiError::internal)?;
    if !replayed {
        return Err(ApiError::not_found(format!(
            "no dead or delivered event `{event_id}`; see GET /api/v1/events?state=all"
        )));
    }
    Ok(Json(ReplayResponse {
        event_id,
        state: DeliveryState::Pending,
    }))
}
