//! The OpenAPI document (`GET /openapi.json`). Routes are registered through
//! `utoipa_axum`'s `routes!`, so the document and the router are built from
//! the same list and cannot drift; the shapes below describe the JSON the
//! handlers answer with (a test validates real answers against them).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentflow",
        description = "Event-sourced workflow engine for AI agents. Every /workflows route needs `Authorization: Bearer <JWT>` (HS256, `sub` = user id, `exp` required; `roles: [\"admin\"]` sees every user's workflows)."
    ),
    modifiers(&BearerAuth),
    tags((name = "workflows"), (name = "operations"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every error: `{"error": {"code", "message"}}`. 503 also sets `Retry-After`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `malformed_json`, `invalid_workflow`,
    /// `invalid_character` (U+0000 in user input; the message names the
    /// field), `invalid_id`, `unauthorized`, `not_found`, `invalid_state`,
    /// `projection_quarantined`, `body_too_large`, `unavailable`,
    /// `projection_behind` (503: the projection has not reached the log's
    /// end, so a workflow cannot be found or ruled out yet), …
    pub code: String,
    pub message: String,
}

/// The errors every `/workflows` route can answer with.
#[derive(utoipa::IntoResponses)]
pub enum CommonErrors {
    /// Bad input: malformed JSON, a bad id or query.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing, malformed, expired or wrongly signed token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The broker or the database is unavailable, or the projection is too
    /// far behind the log to tell whether the workflow exists (never a 404
    /// for a workflow the log has); see `Retry-After`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// A workflow definition.
#[derive(Serialize, ToSchema)]
pub struct CreateWorkflow {
    /// 1–255 characters.
    pub name: String,
    /// 1–100 steps, run in order.
    pub tasks: Vec<TaskInput>,
    /// Deadline of each run in milliseconds (1–86400000), from each start.
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskInput {
    /// The agent's name, `[A-Za-z0-9_.-]{1,128}`.
    pub agent: String,
    /// Any JSON; `"{{previous_output}}"` is replaced by the previous step's
    /// output (as a value when it is the whole string, as text inside one).
    pub input: Option<Value>,
    /// Per-attempt timeout for this step, overriding the agent's.
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowCreated {
    pub workflow_id: uuid::Uuid,
    pub name: String,
    /// `pending`; on a retry with the same Idempotency-Key, the workflow's
    /// current status.
    pub status: String,
    pub task_count: usize,
}

/// The answer to execute and cancel.
#[derive(Serialize, ToSchema)]
pub struct WorkflowAccepted {
    pub workflow_id: uuid::Uuid,
    /// `running` (execute); `cancelled` or `cancelling` (cancel).
    pub status: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowView {
    pub workflow_id: uuid::Uuid,
    pub name: String,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub user_id: i64,
    pub task_count: usize,
    pub tasks: Vec<StepView>,
    /// The outputs of the completed steps.
    pub results: Vec<StepResult>,
    /// The failed step's error, when failed.
    pub error: Option<Value>,
    /// How many times it was started (1 + resumes).
    pub runs: u32,
    pub timeout_ms: Option<u64>,
    /// Cancel was asked while it was running; it stops after its step in flight.
    pub cancel_requested: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Present only when records of this workflow could not be stored in
    /// the projection (quarantined): this state stops before the first.
    pub projection: Option<ProjectionNote>,
}

/// Why a workflow's projected state is behind its log.
#[derive(Serialize, ToSchema)]
pub struct ProjectionNote {
    /// Always false.
    pub complete: bool,
    pub message: String,
    pub quarantined: Vec<QuarantinedView>,
}

/// A record of the workflow that the projection could not hold.
#[derive(Serialize, ToSchema)]
pub struct QuarantinedView {
    pub partition: i32,
    pub offset: i64,
    pub event_type: Option<String>,
    pub seq: Option<u64>,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct StepView {
    pub step: u32,
    pub agent: String,
    /// `pending`, `running`, `completed`, `failed` or `skipped`.
    pub status: String,
    pub attempts: u32,
    pub duration_ms: u64,
    /// `{kind, message, http_status?}` when the step failed.
    pub error: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct StepResult {
    pub step: u32,
    /// The agent's JSON answer.
    pub output: Value,
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowList {
    /// Newest first.
    pub workflows: Vec<WorkflowSummary>,
    pub count: usize,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowSummary {
    pub workflow_id: uuid::Uuid,
    pub name: String,
    pub status: String,
    pub user_id: i64,
    pub task_count: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The audit trail: every record of the workflow in log order.
#[derive(Serialize, ToSchema)]
pub struct AuditTrail {
    pub workflow_id: uuid::Uuid,
    pub count: usize,
    pub events: Vec<AuditEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub event_type: String,
    pub seq: u64,
    pub event_id: uuid::Uuid,
    /// Whether the fold applied it (false: it lost a race and changed nothing).
    pub applied: bool,
    pub step: Option<u32>,
    pub agent: Option<String>,
    pub attempts: Option<u32>,
    pub duration_ms: Option<u64>,
    /// The user whose request wrote it.
    pub requested_by: Option<Value>,
    /// The node that wrote it.
    pub node_id: Option<Value>,
    pub error: Option<Value>,
    /// Present when the projection could not hold this record (why): it was
    /// quarantined, and the workflow's projected state stops before it.
    pub quarantined: Option<String>,
}

/// `GET /readyz`: `ready` or `not_ready`, with each check's verdict.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub checks: std::collections::BTreeMap<String, String>,
}
