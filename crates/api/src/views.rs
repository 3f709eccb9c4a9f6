//! The JSON shapes the API answers with, as types: the handlers, the event
//! streams and the OpenAPI document (`crate::openapi`) all use these.
//!
//! Fields are in alphabetical order: the order in which the API has always
//! sent its keys (answers used to be built as `serde_json::Value`, whose
//! objects sort them), so answers stay byte for byte what they were.

use agentflow_core::{SkipReason, StepStatus, WorkflowState, WorkflowStatus};
use agentflow_store::QuarantinedRecord;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A step's status as shown: its status in the fold, or `running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownStatus {
    /// A pending step the engine runs now (see [`step_status`]).
    Running,
    Is(StepStatus),
}

impl ShownStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShownStatus::Running => "running",
            ShownStatus::Is(s) => s.as_str(),
        }
    }
}

impl Serialize for ShownStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for ShownStatus {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut names: Vec<&str> = StepStatus::ALL.map(StepStatus::as_str).to_vec();
        names.insert(1, ShownStatus::Running.as_str());
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A step's status (`running`: being run now; `waiting`: a wait or sleep under way).",
            ))
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for ShownStatus {
    fn name() -> std::borrow::Cow<'static, str> {
        "StepStatus".into()
    }
}

/// A step's status as shown: `running` is a step whose agent call the
/// engine has in flight or starts now (`running`: the engine's own rule,
/// [`agentflow_core::running_steps`], computed once per view), or a loop
/// between two iterations.
pub fn step_status(st: &WorkflowState, i: usize, running: &[usize]) -> ShownStatus {
    let s = &st.steps[i];
    let runs_now = st.status == WorkflowStatus::Running
        && s.status == StepStatus::Pending
        && (s.until_pending || running.contains(&i));
    if runs_now {
        ShownStatus::Running
    } else {
        ShownStatus::Is(s.status)
    }
}

/// `GET /workflows/{id}`, and the `state` events of its stream.
#[derive(Serialize, ToSchema)]
pub struct WorkflowView {
    /// Cancel was asked while it was running; it stops after its step in flight.
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    /// The failed step's error, when failed.
    pub error: Option<FailedStep>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The workflow's input.
    pub input: Value,
    pub max_concurrency: Option<u32>,
    pub name: String,
    /// Paused by a user (`POST /workflows/{id}/pause`).
    pub paused: bool,
    /// Present only when records of this workflow could not be stored in
    /// the projection (quarantined): this state stops before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionNote>,
    /// The outputs of the completed steps.
    pub results: Vec<StepResult>,
    /// How many times it was started (1 + resumes).
    pub runs: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub status: WorkflowStatus,
    pub task_count: usize,
    pub tasks: Vec<StepView>,
    pub timeout_ms: Option<u64>,
    pub user_id: i64,
    /// The signals its waiting steps wait for.
    pub waiting_for: Vec<String>,
    pub workflow_id: Uuid,
}

/// A step of [`WorkflowView`].
#[derive(Serialize, ToSchema)]
pub struct StepView {
    /// Its parents.
    pub after: Vec<String>,
    /// Null for a wait or sleep.
    pub agent: Option<String>,
    pub attempts: u32,
    /// Its `when`'s recorded result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<bool>,
    pub duration_ms: u64,
    /// `{kind, message, http_status?}` when the step failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub id: String,
    /// What its agent call was sent (a loop's: its last or coming
    /// iteration's), once its parents are done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Iterations run (a loop's), or 1 once done.
    pub iteration: u32,
    /// A loop's outputs, one per iteration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<Vec<Value>>,
    /// `agent`, `wait` or `sleep`.
    pub kind: &'static str,
    /// The output (a loop's last iteration's; a wait's signal body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The signal a wait step waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// `condition` (its `when` was false), `unreachable` (every parent
    /// skipped) or `ended` (the workflow ended first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    pub status: ShownStatus,
    /// Its place in the definition, from 1.
    pub step: usize,
    /// When a waiting step ends by itself (a sleep's wake-up, a wait's timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<DateTime<Utc>>,
}

/// The failed step of a failed workflow.
#[derive(Serialize, ToSchema)]
pub struct FailedStep {
    pub agent: Option<String>,
    /// `{kind, message, http_status?}`.
    pub error: Option<Value>,
    pub id: String,
    /// Its place in the definition, from 1.
    pub step: usize,
}

/// A completed step's output.
#[derive(Serialize, ToSchema)]
pub struct StepResult {
    pub id: String,
    /// The agent's JSON answer.
    pub output: Value,
    pub step: usize,
}

/// Why a workflow's projected state is behind its log.
#[derive(Serialize, ToSchema)]
pub struct ProjectionNote {
    /// Always false.
    pub complete: bool,
    pub message: &'static str,
    pub quarantined: Vec<QuarantinedView>,
}

/// A record of the workflow that the projection could not hold.
#[derive(Serialize, ToSchema)]
pub struct QuarantinedView {
    pub event_type: Option<String>,
    pub offset: i64,
    pub partition: i32,
    pub reason: String,
    pub seq: Option<u64>,
}

/// A row of `GET /workflows/list`, and the `workflow` events of
/// `GET /workflows/stream` (with `seq`).
#[derive(Serialize, ToSchema)]
pub struct WorkflowSummary {
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub name: String,
    /// Only in `GET /workflows/stream`: the workflow's `seq` at this change
    /// (keep the highest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub status: WorkflowStatus,
    pub task_count: i32,
    pub user_id: i64,
    pub workflow_id: Uuid,
}

/// `GET /workflows/list`.
#[derive(Serialize, ToSchema)]
pub struct WorkflowList {
    pub count: usize,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Newest first.
    pub workflows: Vec<WorkflowSummary>,
}

/// `GET /workflows/{id}/events`: every record of the workflow in log order.
#[derive(Serialize, ToSchema)]
pub struct AuditTrail {
    pub count: usize,
    pub events: Vec<agentflow_core::AuditEntry>,
    pub workflow_id: Uuid,
}

impl WorkflowView {
    /// The view of `st`; `default_cap` is the server's cap on the calls in
    /// flight of a workflow without `max_concurrency` (`max_concurrent_steps`),
    /// so that the steps shown running are those the engine runs.
    pub fn of(st: &WorkflowState, default_cap: usize) -> Self {
        let running = agentflow_core::running_steps(st, Some(default_cap));
        let error = st.failed_step().map(|i| {
            let s = &st.steps[i];
            FailedStep {
                agent: s.agent.as_ref().map(|a| a.to_string()),
                error: s.error.as_ref().map(json),
                id: s.id.to_string(),
                step: i + 1,
            }
        });
        let results = st
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.output.as_ref().map(|o| StepResult {
                    id: s.id.to_string(),
                    output: o.clone(),
                    step: i + 1,
                })
            })
            .collect();
        WorkflowView {
            cancel_requested: st.cancel_requested,
            created_at: st.created_at,
            error,
            finished_at: st.finished_at,
            input: st.input.clone(),
            max_concurrency: st.max_concurrency,
            name: st.name.clone(),
            paused: st.paused,
            projection: None,
            results,
            runs: st.runs,
            started_at: st.started_at,
            status: st.status,
            task_count: st.steps.len(),
            tasks: (0..st.steps.len())
                .map(|i| StepView::of(st, i, &running))
                .collect(),
            timeout_ms: st.timeout_ms,
            user_id: st.user_id.0,
            waiting_for: st.awaited_signals().into_iter().map(String::from).collect(),
            workflow_id: st.workflow_id.as_uuid(),
        }
    }
}

impl StepView {
    fn of(st: &WorkflowState, i: usize, running: &[usize]) -> Self {
        let (s, def) = (&st.steps[i], &st.definition[i]);
        // What its (last) call was sent: rendered again from the state,
        // which is exact (see `WorkflowState::call_input`).
        let next = if s.status == StepStatus::Pending {
            s.iteration + 1
        } else {
            s.iteration.max(1)
        };
        StepView {
            after: def.after.iter().map(|p| p.to_string()).collect(),
            agent: s.agent.as_ref().map(|a| a.to_string()),
            attempts: s.attempts,
            condition: s.condition,
            duration_ms: s.duration_ms,
            error: s.error.as_ref().map(json),
            finished_at: s.finished_at,
            id: s.id.to_string(),
            input: st.call_input(i, next),
            iteration: s.iteration,
            iterations: def.repeat.is_some().then(|| s.iterations.clone()),
            kind: def.kind().as_str(),
            output: s.output.clone(),
            signal: def.wait.as_ref().map(|w| w.signal.to_string()),
            skip_reason: s.skip_reason,
            status: step_status(st, i, running),
            step: i + 1,
            wait_until: s.wait_until,
        }
    }
}

impl ProjectionNote {
    /// The note of a workflow with quarantined records.
    pub fn of(kept: &[QuarantinedRecord]) -> Self {
        ProjectionNote {
            complete: false,
            message: "records of this workflow could not be stored in the projection and were \
                      quarantined: this state stops before the first of them",
            quarantined: kept
                .iter()
                .map(|q| QuarantinedView {
                    event_type: q.event_type.clone(),
                    offset: q.offset,
                    partition: q.partition,
                    reason: q.reason.clone(),
                    seq: q.seq,
                })
                .collect(),
        }
    }
}

impl From<&agentflow_store::WorkflowSummary> for WorkflowSummary {
    fn from(w: &agentflow_store::WorkflowSummary) -> Self {
        WorkflowSummary {
            created_at: w.created_at,
            finished_at: w.finished_at,
            name: w.name.clone(),
            seq: None,
            started_at: w.started_at,
            status: w.status,
            task_count: w.task_count,
            user_id: w.user_id,
            workflow_id: w.id,
        }
    }
}

/// A nested value as JSON, its keys sorted as the API has always sent them.
fn json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("a step error serialises")
}
