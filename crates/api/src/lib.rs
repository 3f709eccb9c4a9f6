//! The REST API (the guide's §4 plus operations endpoints).
//!
//! Writes go to the event log and answer once the projection shows them
//! (read-your-writes); reads come from the Postgres projection.

mod auth;
mod error;
pub mod openapi;
mod routes;
mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agentflow_log::Producer;
use agentflow_store::{Progress, Store};
use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, Claims, Jwt};
pub use error::ApiError;

/// Checks a dependency for `/readyz`: `Err(why)` when not ready.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Renders the Prometheus exposition for `/metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub producer: Producer,
    pub progress: Progress,
    pub topic: String,
    pub jwt: Arc<Jwt>,
    pub node_id: String,
    /// How long an append may wait for the broker before answering 503.
    pub append_timeout: Duration,
    /// How long a write waits for the projection before answering anyway.
    pub projection_wait: Duration,
    pub ready_checks: Vec<(&'static str, ReadyCheck)>,
    pub metrics: MetricsRender,
}

pub struct ApiConfig {
    pub max_body_bytes: usize,
}

/// The routes and the OpenAPI document, built from one list (every route
/// goes through `routes!`, which documents it).
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use routes::{ops, workflows};
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(workflows::create))
        .routes(routes!(workflows::list))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::execute))
        .routes(routes!(workflows::cancel))
        .routes(routes!(workflows::events))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts()
}

pub fn router(state: AppState, config: &ApiConfig) -> Router {
    let (router, doc) = routes();
    let doc = routes::ops::OpenApiJson(Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    ));
    router
        .fallback(routes::ops::not_found)
        .layer(Extension(doc))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}
