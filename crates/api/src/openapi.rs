//! The OpenAPI document (`GET /openapi.json`). Routes are registered through
//! `utoipa_axum`'s `routes!`, so the document and the router are built from
//! the same list and cannot drift; the shapes below describe the JSON the
//! handlers answer with (a test validates real answers against them).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentflow",
        description = "Event-sourced workflow engine for AI agents. Every /workflows route needs `Authorization: Bearer <JWT>` (HS256, `sub` = user id, `exp` required; `roles: [\"admin\"]` sees every user's workflows)."
    ),
    modifiers(&BearerAuth, &TemplateValue),
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

/// A step's input: any JSON whose strings (and keys) hold no `{{` but the
/// `{{previous_output}}` placeholder, and no NUL. The placeholder is left
/// out of the schema, since step 1 rejects it.
struct TemplateValue;

/// A string with no `{{` and no NUL.
const TEMPLATE_TEXT_PATTERN: &str = r"^(?:[^{\u0000]|\{(?:[^{\u0000]|$))*$";

impl Modify for TemplateValue {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{
            AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType, Type,
        };
        use utoipa::openapi::{Ref, RefOr};
        let me = || RefOr::from(Ref::from_schema_name("TemplateValue"));
        let text = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(TEMPLATE_TEXT_PATTERN))
        };
        let schema = AnyOfBuilder::new()
            .description(Some(
                "Any JSON. Strings and keys hold no `{{` (but `{{previous_output}}` after step 1: \
                 the previous step's output, as a value when it is the whole string, as text \
                 inside one) and no NUL.",
            ))
            .item(ObjectBuilder::new().schema_type(SchemaType::from_iter([
                Type::Null,
                Type::Boolean,
                Type::Number,
            ])))
            .item(text())
            .item(ArrayBuilder::new().items(me()))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property_names(Some(text()))
                    .additional_properties(Some(AdditionalProperties::RefOr(me()))),
            );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .insert("TemplateValue".to_owned(), schema.into());
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

// The document states what the server enforces, so that every request the
// schema allows is one the server accepts and the rest are rejected
// (schemathesis checks both ways in `scripts/fuzz.sh`). No string may hold
// U+0000 (Postgres cannot store it).

/// `POST /workflows/create`'s headers.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CreateHeaders {
    /// Makes retries safe: the same key (per user) always names the same
    /// workflow; reusing it with another definition is a 422.
    #[param(rename = "Idempotency-Key", value_type = String, required = false,
        pattern = "^[!-~]{1,255}$", min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
}

/// `GET /workflows/list`'s query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the workflows in this status.
    #[param(inline)]
    pub status: Option<Status>,
    /// Page size, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = "^(?:-?[0-9]{1,16}\\.[0-9a-fA-F]{32})?$", max_length = 50)]
    pub cursor: Option<String>,
}

/// `GET /workflows/{id}`'s query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// `finished`: hold the answer until the workflow is completed, failed
    /// or cancelled.
    #[param(inline)]
    pub wait: Option<Wait>,
    /// With `wait`: answer after this long at the latest (default 30000).
    #[param(minimum = 1, maximum = 60000)]
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    Finished,
}

/// A workflow's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// A step's status (`running`: the step in flight).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
}

/// The status an execute or cancel answers with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    Running,
    Cancelling,
    Cancelled,
}

/// A workflow definition. The whole body is at most `max_body_bytes`
/// (413 beyond) and nests at most 128 levels deep (400 beyond).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// 1–255 characters once trimmed of white space.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000]*[^\\u0000\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub name: String,
    /// 1–100 steps, run in order.
    #[schema(min_items = 1, max_items = 100)]
    pub tasks: Vec<TaskInput>,
    /// Deadline of each run in milliseconds, from each start.
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// The agent's name.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    pub agent: String,
    /// Any JSON (default `{}`); `"{{previous_output}}"` (after step 1) is
    /// replaced by the previous step's output (as a value when it is the
    /// whole string, as text inside one). No other `{{` may appear.
    #[schema(schema_with = template_value_ref)]
    pub input: Option<Value>,
    /// Per-attempt timeout for this step, overriding the agent's.
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
}

fn template_value_ref() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::Ref::from_schema_name("TemplateValue").into()
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowCreated {
    pub workflow_id: uuid::Uuid,
    pub name: String,
    /// `pending`; on a retry with the same Idempotency-Key, the workflow's
    /// current status.
    #[schema(value_type = Status)]
    pub status: String,
    pub task_count: usize,
}

/// The answer to execute and cancel.
#[derive(Serialize, ToSchema)]
pub struct WorkflowAccepted {
    pub workflow_id: uuid::Uuid,
    /// `running` (execute); `cancelled` or `cancelling` (cancel).
    #[schema(value_type = AcceptedStatus)]
    pub status: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowView {
    pub workflow_id: uuid::Uuid,
    pub name: String,
    #[schema(value_type = Status)]
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

/// The answer to a signal.
#[derive(Serialize, ToSchema)]
pub struct SignalAccepted {
    pub workflow_id: uuid::Uuid,
    pub signal: String,
    /// Always `accepted`.
    pub status: String,
    /// The wait steps of this signal that have begun (waiting or done).
    pub steps: Vec<String>,
}

/// The signal's headers.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct SignalHeaders {
    /// Makes a retried signal harmless: with the same key it is delivered
    /// once and answered the same.
    #[param(rename = "Idempotency-Key", value_type = String, required = false,
        pattern = "^[!-~]{1,255}$", min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StepView {
    pub step: u32,
    pub agent: String,
    #[schema(value_type = StepStatus)]
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
    #[schema(value_type = Status)]
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
