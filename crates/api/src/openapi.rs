//! The OpenAPI document (`GET /openapi.json`). Routes are registered through
//! `utoipa_axum`'s `routes!`, so the document and the router are built from
//! the same list and cannot drift. The answers the handlers build are their
//! own types (`crate::views`, `agentflow_core::AuditEntry`); the shapes below
//! are requests, parameters and the few small answers built in place (a test
//! validates real answers against them all).

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

/// The fields of which a schema holds exactly one: a definition's `tasks`
/// or `steps`; a step's `agent`, `wait` or `sleep_ms`. (utoipa cannot say
/// it on a struct: the component becomes `allOf: [the object, oneOf:
/// [{required: [field]}, …]]`.)
pub struct ExactlyOne;

impl Modify for ExactlyOne {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{
            AllOfBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        // Present and not null (`null` is as good as absent).
        let not_null = || {
            ObjectBuilder::new().schema_type(SchemaType::from_iter([
                Type::Object,
                Type::Array,
                Type::String,
                Type::Number,
                Type::Integer,
                Type::Boolean,
            ]))
        };
        for (name, fields) in [
            ("CreateWorkflow", &["tasks", "steps"][..]),
            ("StepInput", &["agent", "wait", "sleep_ms"][..]),
        ] {
            let Some(object) = components.schemas.remove(name) else {
                continue;
            };
            let mut one = OneOfBuilder::new();
            for f in fields {
                one = one.item(ObjectBuilder::new().required(*f).property(*f, not_null()));
            }
            let all = AllOfBuilder::new().item(object).item(one);
            components.schemas.insert(name.to_owned(), all.into());
        }
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
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            "TemplateValue".to_owned(),
            json_without(
                "TemplateValue",
                TEMPLATE_TEXT_PATTERN,
                "Any JSON. Strings and keys hold no `{{` (but the placeholders of a template: \
                 `{{previous_output}}`, `{{steps.ID.output.PATH}}`, `{{input.PATH}}`, \
                 `{{iteration}}`) and no NUL.",
            ),
        );
        components.schemas.insert(
            "JsonValue".to_owned(),
            json_without(
                "JsonValue",
                r"^[^\u0000]*$",
                "Any JSON whose strings and keys hold no NUL (U+0000).",
            ),
        );
    }
}

/// Any JSON whose strings and keys match `pattern` (the component `name`
/// refers to itself for nested values).
fn json_without(
    name: &str,
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{
        AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType, Type,
    };
    use utoipa::openapi::{Ref, RefOr};
    let me = || RefOr::from(Ref::from_schema_name(name));
    let text = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
    };
    AnyOfBuilder::new()
        .description(Some(description))
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
        )
        .into()
}

fn json_value_ref() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::Ref::from_schema_name("JsonValue").into()
}

fn json_object_ref() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[^\u0000]*$")),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(json_value_ref())))
        .into()
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
    /// for a workflow the log has), or (`outcome_unknown`, cancel) the
    /// command is in the log but the projection did not show its outcome
    /// in time (asking again is safe); see `Retry-After`.
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
    pub status: Option<agentflow_core::WorkflowStatus>,
    /// Page size, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = "^(?:-?[0-9]{1,16}\\.[0-9a-fA-F]{32})?$", max_length = 50)]
    pub cursor: Option<String>,
    /// Only the workflows whose name contains this, ignoring case.
    #[param(pattern = "^[^\\u0000]*$", max_length = 255)]
    pub name: Option<String>,
}

/// `GET /workflows/{id}/stream`'s headers.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct StreamHeaders {
    /// Resume after this event: the `id:` of the last record received
    /// (records after it are sent; none twice, none lost).
    #[param(rename = "Last-Event-ID", value_type = i64, required = false, minimum = -1)]
    pub last_event_id: Option<i64>,
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

/// The status an execute or cancel answers with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    Running,
    Cancelling,
    Cancelled,
    Paused,
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
    /// A chain: 1–100 steps, run in order (their ids are `step_1`,
    /// `step_2`, …). Exactly one of `tasks` and `steps`.
    #[schema(min_items = 1, max_items = 100)]
    pub tasks: Option<Vec<TaskInput>>,
    /// A graph: 1–100 steps, each run once all its parents (`after`) are
    /// done. Ids are unique, parents are steps of the list, `after` never
    /// leads back to a step (no cycles), and a template or condition names
    /// only ancestors (`{{steps.ID.output.PATH}}`, `steps.ID.output` in
    /// CEL). Exactly one of `tasks` and `steps`.
    #[schema(min_items = 1, max_items = 100)]
    pub steps: Option<Vec<StepInput>>,
    /// The workflow's input: `{{input.PATH}}` in templates, `input` in
    /// conditions.
    #[schema(schema_with = json_object_ref)]
    pub input: Option<Value>,
    /// Deadline of each run in milliseconds, from each start.
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    /// At most this many agent calls at once (default: the server's
    /// `max_concurrent_steps`).
    #[schema(minimum = 1, maximum = 100)]
    pub max_concurrency: Option<u32>,
}

/// A step of a graph: exactly one of `agent` (with `input`), `wait` and
/// `sleep_ms`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
    pub id: String,
    /// Its parents: ids of other steps of the list, each once.
    #[schema(max_items = 100)]
    pub after: Option<Vec<StepIdString>>,
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    pub agent: Option<String>,
    /// An agent step's input (default `{}`): placeholders
    /// `{{previous_output}}` (the only parent's output),
    /// `{{steps.ID.output.PATH}}`, `{{input.PATH}}`, `{{iteration}}`.
    #[schema(schema_with = template_value_ref)]
    pub input: Option<Value>,
    /// Wait for a signal (`POST /workflows/{id}/signals/{signal}`).
    pub wait: Option<WaitInput>,
    /// Sleep this long (durable: across restarts), up to 90 days.
    #[schema(minimum = 1, maximum = 7_776_000_000_u64)]
    pub sleep_ms: Option<u64>,
    /// A CEL expression over `steps` and `input`; false skips the step
    /// (and the steps only it leads to).
    #[schema(max_length = 2048, pattern = "^[^\\u0000]*$")]
    pub when: Option<String>,
    pub repeat: Option<RepeatInput>,
    /// An agent step's per-attempt timeout, overriding the agent's.
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
}

/// A step id.
#[derive(Serialize, ToSchema)]
#[schema(pattern = "^[a-z0-9_]{1,64}$")]
pub struct StepIdString(String);

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitInput {
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    pub signal: String,
    /// Then the step fails (`wait_timeout`), or completes with
    /// `timeout_output`.
    #[schema(minimum = 1, maximum = 7_776_000_000_u64)]
    pub timeout_ms: Option<u64>,
    /// The output taken on timeout (needs `timeout_ms`; not `null`).
    #[schema(schema_with = json_value_ref)]
    pub timeout_output: Option<Value>,
}

/// Run the step again until `until` (CEL over `output`, `iteration`,
/// `steps`, `input`) holds; each iteration is its own call
/// (`Idempotency-Key` `{workflow_id}:{step}:{iteration}`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatInput {
    #[schema(max_length = 2048, pattern = "^[^\\u0000]*$")]
    pub until: String,
    #[schema(minimum = 1, maximum = 100)]
    pub max_iterations: u32,
    /// `fail` (default) or `continue` once `max_iterations` pass.
    pub on_exhausted: Option<OnExhaustedInput>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnExhaustedInput {
    Fail,
    Continue,
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
    #[schema(value_type = agentflow_core::WorkflowStatus)]
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

/// One Server-Sent Event of a stream, as a client parses it: `data` is JSON
/// text (an audit entry, a view, counts), `event` its kind, `id` the
/// position to resume from (`Last-Event-ID`).
#[derive(Serialize, ToSchema)]
pub struct SseEvent {
    pub data: String,
    pub event: Option<String>,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

/// A signal's body: any JSON without NUL.
pub struct SignalBody;

impl utoipa::PartialSchema for SignalBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        json_value_ref()
    }
}

impl ToSchema for SignalBody {}

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

/// `GET /readyz`: `ready` or `not_ready`, with each check's verdict.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub checks: std::collections::BTreeMap<String, String>,
}
