//! Health, readiness, metrics.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::Readiness;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when every dependency answers: 200 or 503 with what is failing.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Database, event log and engine ready", body = Readiness),
        (status = 503, description = "Not ready; the failing checks say why", body = Readiness)
    ))]
pub async fn readyz(State(s): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    for (name, check) in &s.ready_checks {
        let r = tokio::time::timeout(std::time::Duration::from_secs(3), check()).await;
        let v = match r {
            Ok(Ok(())) => json!("ok"),
            Ok(Err(why)) => {
                ready = false;
                json!(why)
            }
            Err(_) => {
                ready = false;
                json!("no answer within 3 s")
            }
        };
        checks.insert((*name).to_owned(), v);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks});
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        (s.metrics)(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document of this API")))]
pub async fn openapi(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
        .into_response()
}

/// The rendered document, shared with the handler.
#[derive(Clone)]
pub struct OpenApiJson(pub std::sync::Arc<String>);

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
