//! The REST API (the guide's §4 plus operations endpoints).
//!
//! Writes go to the event log and answer once the projection shows them
//! (read-your-writes); reads come from the Postgres projection.

mod auth;
mod error;
mod routes;
mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agentflow_log::Producer;
use agentflow_store::{Progress, Store};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

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

pub fn router(state: AppState, config: &ApiConfig) -> Router {
    Router::new()
        .route("/workflows/create", post(routes::workflows::create))
        .route("/workflows/list", get(routes::workflows::list))
        .route("/workflows/{id}", get(routes::workflows::get))
        .route("/workflows/{id}/execute", post(routes::workflows::execute))
        .route("/workflows/{id}/cancel", post(routes::workflows::cancel))
        .route("/workflows/{id}/events", get(routes::workflows::events))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(routes::ops::not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}
