//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the response types (utoipa), served at `GET /api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{events, routes};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hubsync",
        description = "Hub-only data sync: fleet status, run history, flow control, data services and follow-up events. \
                       Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        routes::health,
        routes::healthz,
        routes::readyz,
        routes::metrics,
        routes::sites,
        routes::flows,
        routes::runs,
        routes::status,
        routes::sync_flow,
        routes::call_service,
        events::list_events,
        events::replay_event,
        document,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "hub", description = "health and metrics"),
        (name = "fleet", description = "sites and flows from the config"),
        (name = "runs", description = "run history, status and starting syncs"),
        (name = "services", description = "declared data service operations"),
        (name = "events", description = "follow-up events: the outbox, dead letters and replay"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "hub", security(("bearer" = [])),
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
