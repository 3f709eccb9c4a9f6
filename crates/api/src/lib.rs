//! The REST API (the guide's §4 plus operations endpoints).
//!
//! Writes go to the event log and answer once the projection shows them
//! (read-your-writes); reads come from the Postgres projection.

mod auth;
mod error;
pub mod openapi;
mod routes;
pub mod ui;
mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agentflow_log::Producer;
use agentflow_projector::Progress;
use agentflow_store::ProjectionReader;
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

/// Reads the event log's end (the high watermark of every partition, in
/// partition order), e.g. on a blocking thread; `Err(why)` when the broker
/// does not answer.
pub type LogEndFetch =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Vec<i64>, String>> + Send>> + Send + Sync>;

/// The log's end as the read API needs it: a value read after a given
/// moment. One read at a time; everyone who asked before a read began
/// shares it, so a burst of lookups costs the broker one round trip.
pub struct LogEnd {
    fetch: LogEndFetch,
    /// The last read: when it began, and what it gave.
    last: tokio::sync::Mutex<Option<LogEndRead>>,
}

type LogEndRead = (tokio::time::Instant, Result<Vec<i64>, String>);

impl LogEnd {
    pub fn new(fetch: LogEndFetch) -> Self {
        Self {
            fetch,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The log's end as read at or after `since`.
    pub async fn since(&self, since: tokio::time::Instant) -> Result<Vec<i64>, String> {
        let mut last = self.last.lock().await;
        if let Some((at, ends)) = &*last
            && *at >= since
        {
            return ends.clone();
        }
        let at = tokio::time::Instant::now();
        let ends = (self.fetch)().await;
        *last = Some((at, ends.clone()));
        ends
    }
}

/// Renders the Prometheus exposition for `/metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub store: ProjectionReader,
    pub producer: Producer,
    pub progress: Progress,
    pub topic: String,
    pub jwt: Arc<Jwt>,
    pub node_id: String,
    /// How long an append may wait for the broker before answering 503.
    pub append_timeout: Duration,
    /// How long a write waits for the projection before answering anyway;
    /// and how long a read of a workflow not (yet) in the projection waits
    /// for it to reach the log's end before answering 503.
    pub projection_wait: Duration,
    /// The log's end, to tell "not projected yet" from "no such workflow".
    pub log_end: Arc<LogEnd>,
    pub ready_checks: Vec<(&'static str, ReadyCheck)>,
    pub metrics: MetricsRender,
    /// The engine's cap on the calls in flight of a workflow without
    /// `max_concurrency` (`max_concurrent_steps`): a view shows running only
    /// the steps the engine runs.
    pub max_concurrent_steps: usize,
}

pub struct ApiConfig {
    pub max_body_bytes: usize,
    /// Serve `POST /ui/dev-token` (a token for anyone who asks): only
    /// `agentflow dev` sets it.
    pub dev_sign_in: bool,
}

/// The routes and the OpenAPI document, built from one list (every route
/// goes through `routes!`, which documents it).
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use routes::{ops, steering, stream, workflows};
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(workflows::create))
        .routes(routes!(workflows::list))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::execute))
        .routes(routes!(workflows::cancel))
        .routes(routes!(steering::pause))
        .routes(routes!(steering::resume))
        .routes(routes!(steering::signal))
        .routes(routes!(workflows::events))
        .routes(routes!(stream::workflow))
        .routes(routes!(stream::list))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts();
    // After the routes have added their schemas.
    utoipa::Modify::modify(&openapi::ExactlyOne, &mut doc);
    (router, doc)
}

/// Answers carry workflows' data and are asked for with a token: no cache
/// (the browser's included) keeps them.
async fn no_store(mut r: axum::response::Response) -> axum::response::Response {
    r.headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    r
}

pub fn router(state: AppState, config: &ApiConfig) -> Router {
    let (router, doc) = routes();
    let doc = routes::ops::OpenApiJson(Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    ));
    router
        .merge(ui::routes(config.dev_sign_in))
        .fallback(routes::ops::not_found)
        .layer(axum::middleware::map_response(no_store))
        .layer(Extension(doc))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}
