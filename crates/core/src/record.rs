//! The records of the event log and their wire shape.
//!
//! A record is an envelope (`event_id`, `event_type`, `workflow_id`,
//! `user_id`, `seq`, `timestamp`, `version`, `metadata`) around one [`Event`]
//! in `data`. `schemas/record.schema.json` is generated from these types
//! ([`crate::schema::record_schema`]); a test checks every variant against
//! it and that the committed file is the generated one.

use chrono::{DateTime, SubsecRound, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::definition::{StepDef, StepId, WorkflowDefinition};
use crate::ids::{AgentName, UserId, WorkflowId};

/// The version of the envelope and payload shapes written by this code.
/// Version 2: graphs (steps named by id, iterations, conditions, waits,
/// pauses, signals). Version-1 records are upcast when read (`mod v1`).
pub const RECORD_VERSION: u32 = 2;

/// Why a step failed. Recorded in the log and shown in the step's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
pub struct StepError {
    pub kind: StepErrorKind,
    pub message: String,
    /// The agent's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub http_status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepErrorKind {
    /// The agent answered 4xx: the input is wrong, retrying will not help.
    Rejected,
    /// The agent answered 5xx on every attempt.
    ServerError,
    /// No answer within the timeout on every attempt.
    Timeout,
    /// Could not connect on every attempt.
    Connection,
    /// A 2xx whose body is not JSON.
    InvalidResponse,
    /// The workflow's own deadline (`timeout_ms`) passed during the step.
    WorkflowTimeout,
    /// The agent's answer is larger than `max_output_bytes`.
    OutputTooLarge,
    /// The event log refused the step's result for good (a broker limit or
    /// permission); retrying the same result would only fail again.
    LogRejected,
    /// The step's `when` or `repeat.until` has no boolean value (e.g. it
    /// reads a field the output does not have).
    ConditionError,
    /// A loop ran `max_iterations` times without `until` holding.
    MaxIterations,
    /// A wait's `timeout_ms` passed before its signal arrived.
    WaitTimeout,
}

impl StepErrorKind {
    /// The wire name (also a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            StepErrorKind::Rejected => "rejected",
            StepErrorKind::ServerError => "server_error",
            StepErrorKind::Timeout => "timeout",
            StepErrorKind::Connection => "connection",
            StepErrorKind::InvalidResponse => "invalid_response",
            StepErrorKind::WorkflowTimeout => "workflow_timeout",
            StepErrorKind::OutputTooLarge => "output_too_large",
            StepErrorKind::LogRejected => "log_rejected",
            StepErrorKind::ConditionError => "condition_error",
            StepErrorKind::MaxIterations => "max_iterations",
            StepErrorKind::WaitTimeout => "wait_timeout",
        }
    }
}

/// Where a step's output kept out of its `agent.executed` record is: in
/// `chunks` consecutive pieces of its JSON text on the log's payload topic
/// (`{topic}-payloads`), keyed `sha256:{sha256}:{index}`, all in
/// `partition`, the first at `offset` (or, after compaction kept a later
/// copy of the same content, further on). Written in `data.output_ref`
/// instead of `data.output`; readers of the log resolve it.
///
/// Read from `offset` on until every index is found (compaction may have
/// kept a later copy of a chunk, never an earlier one), concatenate in index
/// order, check the length and the SHA-256, parse as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRef {
    /// SHA-256 of the output's JSON text, lower-case hex.
    #[schemars(pattern("^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// Length of the output's JSON text.
    pub bytes: u64,
    #[schemars(range(min = 1))]
    pub chunks: u32,
    #[schemars(range(min = 0))]
    pub partition: i32,
    #[schemars(range(min = 0))]
    pub offset: i64,
}

impl OutputRef {
    /// The Kafka key of chunk `index`.
    pub fn chunk_key(sha256: &str, index: u32) -> String {
        format!("sha256:{sha256}:{index}")
    }
}

/// Turns an [`OutputRef`] into the output it names (reading the payload
/// topic), or says why it cannot.
pub type ResolveOutput<'a> = &'a mut dyn FnMut(&OutputRef) -> Result<Value, String>;

/// Which condition of a step an evaluation was of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    /// The step's `when`: false skips it.
    When,
    /// The loop's `repeat.until` after an iteration: true ends the loop.
    Until,
}

/// How a wait or a sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitEnd {
    /// The signal it waited for arrived; its body is the output.
    Signal,
    /// The wait timed out and took the definition's `timeout_output`.
    Timeout,
    /// A sleep's time came.
    Timer,
}

/// Declares [`Event`] with each variant's wire name written once: serde's
/// tag, [`Event::TYPES`], [`Event::event_type`] and the value a record may
/// keep out of itself ([`Event::offloaded`]) all come from it.
macro_rules! events {
    ($(
        $(#[$doc:meta])*
        $name:literal => $variant:ident $({ $($fields:tt)* })? $(offloads $field:ident)?
    ),* $(,)?) => {
        /// What happened (or what a user asked for), one variant per
        /// `event_type`. Serialised adjacently tagged, as in the envelope:
        /// `event_type` names the variant, `data` holds its fields.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "event_type", content = "data", deny_unknown_fields)]
        pub enum Event {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $variant $({ $($fields)* })?,
            )*
        }

        impl Event {
            /// Every `event_type`, in the order of the variants.
            pub const TYPES: &'static [&'static str] = &[$($name),*];

            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Event::$variant { .. } => $name,)*
                }
            }

            /// The field of `data` that a record of type `event_type` may keep
            /// out of itself (see [`Record::output`]); the record then carries
            /// `{field}_ref` instead.
            pub(crate) fn offloaded_field(event_type: &str) -> Option<&'static str> {
                match event_type {
                    $($($name => Some(stringify!($field)),)?)*
                    _ => None,
                }
            }

            /// The value this event may keep out of its record, with its field.
            fn offloaded(&self) -> Option<(&'static str, &Value)> {
                match self {
                    $($(Event::$variant { $field, .. } => Some((stringify!($field), $field)),)?)*
                    _ => None,
                }
            }
        }
    };
}

events! {
    /// `workflow.created`: a user defined a workflow.
    "workflow.created" => Created {
        #[schemars(length(min = 1, max = WorkflowDefinition::MAX_NAME_CHARS))]
        name: String,
        #[schemars(length(min = 1, max = WorkflowDefinition::MAX_TASKS))]
        steps: Vec<StepDef>,
        /// The workflow's input; left out of the record when empty.
        #[serde(
            default = "empty_object",
            deserialize_with = "null_as_empty",
            skip_serializing_if = "is_empty_object"
        )]
        #[schemars(with = "Map<String, Value>")]
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = WorkflowDefinition::MAX_TIMEOUT_MS))]
        timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = WorkflowDefinition::MAX_CONCURRENCY))]
        max_concurrency: Option<u32>,
    },
    /// `workflow.started`: a user asked to run it (the first time, or again
    /// after it failed: its failed steps and those the failure left unrun
    /// run again).
    "workflow.started" => Started,
    /// `agent.executed`: a step's agent answered with `output`.
    "agent.executed" => AgentExecuted {
        step: StepId,
        /// Which call of the step this is (a loop's are 1, 2, ...; any other
        /// step's is 1).
        #[schemars(range(min = 1))]
        iteration: u32,
        agent: AgentName,
        /// The agent's JSON response body.
        output: Value,
        #[schemars(range(min = 1))]
        attempts: u32,
        duration_ms: u64,
    } offloads output,
    /// `step.failed`: a step failed for good (its agent call, its
    /// condition, its wait's timeout or its loop's iterations).
    "step.failed" => StepFailed {
        step: StepId,
        #[schemars(range(min = 1))]
        iteration: u32,
        /// Absent for a step that is not an agent call (a wait).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<AgentName>,
        error: StepError,
        /// 0 when no call was made (the workflow's deadline had passed, or
        /// the step is a wait).
        attempts: u32,
        duration_ms: u64,
    },
    /// `condition.evaluated`: a step's `when` (before it ran) or its loop's
    /// `until` (after iteration `iteration`) was evaluated: the result, or
    /// why it has none (the step then fails). Recorded so that a replay never
    /// evaluates an expression again.
    "condition.evaluated" => ConditionEvaluated {
        step: StepId,
        condition: ConditionKind,
        /// 0 for `when`.
        iteration: u32,
        /// A CEL expression.
        #[schemars(length(max = crate::expr::MAX_LEN))]
        expression: String,
        result: bool,
        /// Why the expression has no boolean value (the step then fails with
        /// `condition_error`); `result` is then false.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `step.waiting`: a wait or sleep step began; it ends at `until` (a
    /// sleep's wake-up time, a wait's timeout) unless a signal ends it first.
    "step.waiting" => StepWaiting {
        step: StepId,
        /// The signal a wait step waits for; absent for a sleep.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "crate::schema::signal_name")]
        signal: Option<String>,
        /// When it ends by itself (a sleep's wake-up, a wait's timeout).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    },
    /// `wait.completed`: a waiting step ended with `output`.
    "wait.completed" => WaitCompleted {
        step: StepId,
        reason: WaitEnd,
        /// The signal's payload, the wait's `timeout_output`, or null for a
        /// sleep.
        output: Value,
    } offloads output,
    /// `workflow.completed`: every step completed or was skipped.
    "workflow.completed" => Completed,
    /// `workflow.failed`: a step failed; the steps not run are skipped.
    "workflow.failed" => Failed {
        step: StepId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<AgentName>,
        error: StepError,
    },
    /// `workflow.cancel_requested`: a user asked to cancel a running
    /// workflow. A command, not a step of the chain: it does not advance
    /// `seq` (it carries the seq it was asked at), so it never races the
    /// actor's records; the actor ends the workflow after its in-flight step.
    "workflow.cancel_requested" => CancelRequested,
    /// `workflow.cancelled`: the workflow stopped for good; the steps not run
    /// are skipped.
    "workflow.cancelled" => Cancelled,
    /// `workflow.paused` (a command, like `cancel_requested`): no new step
    /// starts; calls in flight finish and are kept.
    "workflow.paused" => Paused,
    /// `workflow.resumed` (a command): steps start again.
    "workflow.resumed" => Resumed,
    /// `signal.received` (a command): a signal for a waiting step, with its
    /// body; the step's `wait.completed` follows. `key` makes a retried
    /// request harmless.
    "signal.received" => SignalReceived {
        #[schemars(schema_with = "crate::schema::signal_name")]
        signal: String,
        /// The signal's body: the output of the steps waiting for it.
        payload: Value,
        /// The request's idempotency key: a signal with a key already
        /// received is ignored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    } offloads payload,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_none_or(Map::is_empty)
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.unwrap_or_else(empty_object))
}

impl Event {
    /// Whether the record takes the next place in the workflow's chain
    /// (`seq`, `prev_event_id`). Commands that merely flag the state (from
    /// the API, while the engine's actor may be writing) do not.
    pub fn is_chained(&self) -> bool {
        !matches!(
            self,
            Event::CancelRequested | Event::Paused | Event::Resumed | Event::SignalReceived { .. }
        )
    }

    /// The step the record is about, if any.
    pub fn step(&self) -> Option<&StepId> {
        match self {
            Event::AgentExecuted { step, .. }
            | Event::StepFailed { step, .. }
            | Event::ConditionEvaluated { step, .. }
            | Event::StepWaiting { step, .. }
            | Event::WaitCompleted { step, .. }
            | Event::Failed { step, .. } => Some(step),
            _ => None,
        }
    }

    /// The record's `data`: the event's fields (`{}` for an event without
    /// any), keys in order (serde_json's map is sorted), optional fields left
    /// out rather than written as null.
    fn to_data(&self) -> Value {
        match serde_json::to_value(self).expect("an event always serialises") {
            Value::Object(mut m) => m.remove("data").unwrap_or_else(empty_object),
            _ => unreachable!("an adjacently tagged enum serialises as an object"),
        }
    }

    fn from_data(
        event_type: &str,
        version: u32,
        mut data: Value,
        resolve: ResolveOutput<'_>,
    ) -> Result<Self, RecordError> {
        let bad = |e: serde_json::Error| RecordError::Data(event_type.to_owned(), e.to_string());
        if !Event::TYPES.contains(&event_type) {
            return Err(RecordError::UnknownType(event_type.to_owned()));
        }
        if let Some(field) = Event::offloaded_field(event_type)
            && let Some(obj) = data.as_object_mut()
            && let Some(r) = obj.remove(&format!("{field}_ref"))
        {
            // A value kept out of the record: put it back in place.
            let r: OutputRef = serde_json::from_value(r).map_err(bad)?;
            if obj.contains_key(field) {
                return Err(RecordError::Data(
                    event_type.to_owned(),
                    format!("both {field} and {field}_ref"),
                ));
            }
            let value = resolve(&r).map_err(|e| RecordError::Payload(r.sha256, e))?;
            obj.insert(field.into(), value);
        }
        match version {
            1 => v1::upcast(event_type, data).map_err(bad),
            RECORD_VERSION => Event::read(event_type, data).map_err(bad),
            other => Err(RecordError::Version(other)),
        }
    }

    /// The event of a version-2 record of a known `event_type`.
    fn read(event_type: &str, data: Value) -> Result<Self, serde_json::Error> {
        // An event without fields has `{}`, null or nothing as its data
        // (and, as serde reads an empty struct, `[]`).
        let unit = data.is_null()
            || data.as_object().is_some_and(Map::is_empty)
            || data.as_array().is_some_and(Vec::is_empty);
        tagged(event_type, (!unit).then_some(data))
    }
}

/// Reads an adjacently tagged enum from its tag and content, the tag first so
/// that serde reads the content straight into its variant (a JSON map, sorted,
/// would hand it `data` first, to be buffered).
fn tagged<T: serde::de::DeserializeOwned>(
    event_type: &str,
    data: Option<Value>,
) -> Result<T, serde_json::Error> {
    let tag = std::iter::once(("event_type", Value::from(event_type)));
    let fields = tag.chain(data.map(|d| ("data", d)));
    T::deserialize(serde::de::value::MapDeserializer::new(fields))
}

/// Version-1 records (before graphs: steps were numbers 1, 2, …), read as
/// the version-2 events they mean. The one place old records are upcast:
/// step `n` is `step_n` (the id a `tasks` chain gets), its one iteration is
/// 1, and `workflow.started`'s `from_step` (always the step the fold would
/// resume at) is implied.
pub(crate) mod v1 {
    use super::*;
    use crate::definition::TaskDef;
    use serde::de::IgnoredAny;

    /// The version-1 shapes, as they were written (read, never written).
    #[derive(Deserialize, JsonSchema)]
    #[serde(tag = "event_type", content = "data", deny_unknown_fields)]
    pub(crate) enum V1 {
        #[serde(rename = "workflow.created")]
        Created {
            #[schemars(length(min = 1, max = WorkflowDefinition::MAX_NAME_CHARS))]
            name: String,
            #[schemars(length(min = 1, max = WorkflowDefinition::MAX_TASKS))]
            tasks: Vec<TaskDef>,
            #[serde(default)]
            #[schemars(range(min = 1, max = WorkflowDefinition::MAX_TIMEOUT_MS))]
            timeout_ms: Option<u64>,
        },
        #[serde(rename = "workflow.started")]
        Started {
            #[allow(dead_code)]
            #[schemars(range(min = 1))]
            from_step: u32,
        },
        #[serde(rename = "agent.executed")]
        AgentExecuted {
            #[schemars(range(min = 1))]
            step: u32,
            agent: AgentName,
            output: Value,
            #[schemars(range(min = 1))]
            attempts: u32,
            duration_ms: u64,
        },
        #[serde(rename = "step.failed")]
        StepFailed {
            #[schemars(range(min = 1))]
            step: u32,
            agent: AgentName,
            error: StepError,
            attempts: u32,
            duration_ms: u64,
        },
        #[serde(rename = "workflow.failed")]
        Failed {
            #[schemars(range(min = 1))]
            step: u32,
            agent: AgentName,
            error: StepError,
        },
        // Version 1 wrote `{}` for these and read them whatever their data.
        #[serde(rename = "workflow.completed")]
        Completed(#[schemars(with = "crate::schema::Empty")] IgnoredAny),
        #[serde(rename = "workflow.cancel_requested")]
        CancelRequested(#[schemars(with = "crate::schema::Empty")] IgnoredAny),
        #[serde(rename = "workflow.cancelled")]
        Cancelled(#[schemars(with = "crate::schema::Empty")] IgnoredAny),
    }

    fn id(step: u32) -> StepId {
        StepId::of_task(step as usize)
    }

    /// The version-2 event a version-1 record means.
    pub(super) fn upcast(event_type: &str, data: Value) -> Result<Event, serde_json::Error> {
        let v1: V1 = tagged(event_type, Some(data))?;
        Ok(match v1 {
            V1::Created {
                name,
                tasks,
                timeout_ms,
            } => Event::Created {
                name,
                steps: tasks
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| StepDef::of_task(i + 1, t))
                    .collect(),
                input: empty_object(),
                timeout_ms,
                max_concurrency: None,
            },
            V1::Started { .. } => Event::Started,
            V1::AgentExecuted {
                step,
                agent,
                output,
                attempts,
                duration_ms,
            } => Event::AgentExecuted {
                step: id(step),
                iteration: 1,
                agent,
                output,
                attempts,
                duration_ms,
            },
            V1::StepFailed {
                step,
                agent,
                error,
                attempts,
                duration_ms,
            } => Event::StepFailed {
                step: id(step),
                iteration: 1,
                agent: Some(agent),
                error,
                attempts,
                duration_ms,
            },
            V1::Failed { step, agent, error } => Event::Failed {
                step: id(step),
                agent: Some(agent),
                error,
            },
            V1::Completed(_) => Event::Completed,
            V1::CancelRequested(_) => Event::CancelRequested,
            V1::Cancelled(_) => Event::Cancelled,
        })
    }
}

/// One record of the log: an [`Event`] in its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub event_id: Uuid,
    pub workflow_id: WorkflowId,
    pub user_id: UserId,
    /// The workflow's event number: 1 for `workflow.created`, then 2, 3, …
    pub seq: u64,
    /// The `event_id` of the record this one was decided on (the workflow's
    /// record `seq - 1`); `None` only for `workflow.created`. The fold
    /// rejects a record whose parent is not the state's last record, so a
    /// writer that decided on a state that lost a race cannot extend it.
    pub prev_event_id: Option<Uuid>,
    pub timestamp: DateTime<Utc>,
    /// Free-form context: who asked, which node wrote it, and for
    /// `workflow.completed` the guide's `task_count`, `duration_seconds` and
    /// `agents_used`.
    pub metadata: Map<String, Value>,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON of the envelope shape: {0}")]
    Envelope(String),
    #[error("unknown event_type `{0}`")]
    UnknownType(String),
    #[error("unsupported record version {0}")]
    Version(u32),
    #[error("bad data for `{0}`: {1}")]
    Data(String, String),
    #[error("output sha256:{0} kept on the payload topic cannot be read: {1}")]
    Payload(String, String),
}

/// One record of the workflow-events topic. Kafka key = workflow_id, header
/// event_type = the record's event_type. A workflow's records form a chain: a
/// record counts when its seq is the next one (1, 2, 3, ...) and its
/// prev_event_id is the event_id of the last record that counted; any other
/// record (a stale writer's, or one that lost a race) is ignored. Exception:
/// the commands workflow.cancel_requested, workflow.paused, workflow.resumed
/// and signal.received take no place in the chain; they repeat the seq and
/// prev_event_id of the state they were asked on and count while the
/// workflow is running (waiting or paused); a command counts once
/// (deduplicated by event_id, a signal also by its key). Records are written
/// with version 2 (a workflow is a graph of named steps); version-1 records
/// (before graphs: a chain of numbered steps) stay in the log and are read as
/// the version-2 records they mean (step n is step_n, its one iteration is 1).
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "agentflow event log record")]
pub(crate) struct Wire {
    /// Unique per record; deduplicate on it.
    event_id: Uuid,
    /// The type of the event in `data`.
    event_type: String,
    workflow_id: WorkflowId,
    /// The owner (the JWT sub of whoever created the workflow).
    user_id: UserId,
    #[schemars(range(min = 1))]
    seq: u64,
    /// The event_id of this workflow's record seq - 1, on which this one was
    /// decided. Absent only for workflow.created (seq 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev_event_id: Option<Uuid>,
    timestamp: DateTime<Utc>,
    /// 2 since graphs; 1 for the records written before.
    version: u32,
    /// Free-form context: who asked, which node wrote it, and for
    /// workflow.completed the guide's summary of the run.
    #[serde(default)]
    #[schemars(required)]
    metadata: Map<String, Value>,
    /// The event's fields, by event_type and version.
    #[serde(default)]
    #[schemars(required)]
    data: Value,
}

/// [`Wire`] for writing, borrowing what it can: a record is serialised
/// straight to bytes, without building a JSON tree first.
#[derive(Serialize)]
struct WireRef<'a> {
    event_id: Uuid,
    event_type: &'static str,
    workflow_id: WorkflowId,
    user_id: UserId,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_event_id: Option<Uuid>,
    timestamp: DateTime<Utc>,
    version: u32,
    metadata: &'a Map<String, Value>,
    data: Value,
}

impl Record {
    pub fn new(
        workflow_id: WorkflowId,
        user_id: UserId,
        seq: u64,
        timestamp: DateTime<Utc>,
        event: Event,
    ) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            workflow_id,
            user_id,
            seq,
            prev_event_id: None,
            // Microseconds: what Postgres and most consumers keep, so the
            // projection and the fold agree to the last digit.
            timestamp: timestamp.trunc_subsecs(6),
            metadata: Map::new(),
            event,
        }
    }

    /// Chains this record after `parent` (the state's `last_event_id`).
    pub fn after(mut self, parent: Uuid) -> Self {
        self.prev_event_id = Some(parent);
        self
    }

    pub fn with_metadata(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    pub fn event_type(&self) -> &'static str {
        self.event.event_type()
    }

    fn wire(&self) -> WireRef<'_> {
        self.wire_with(self.event.to_data())
    }

    fn wire_with(&self, data: Value) -> WireRef<'_> {
        WireRef {
            event_id: self.event_id,
            event_type: self.event_type(),
            workflow_id: self.workflow_id,
            user_id: self.user_id,
            seq: self.seq,
            prev_event_id: self.prev_event_id,
            timestamp: self.timestamp,
            version: RECORD_VERSION,
            metadata: &self.metadata,
            data,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.wire()).expect("a record always serialises")
    }

    /// The record as it is in the log (JSON text).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(&self.wire()).expect("a record always serialises")
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_json_string().into_bytes()
    }

    /// The value this record carries that may be kept out of it: a step's
    /// output (`agent.executed`; `wait.completed`, whose output is a
    /// signal's body or a timeout's value) or a signal's body
    /// (`signal.received`). Agents and users control its size, up to
    /// `max_output_bytes` and `max_body_bytes`, more than a broker takes in
    /// one message.
    pub fn output(&self) -> Option<&Value> {
        self.event.offloaded().map(|(_, value)| value)
    }

    /// The JSON text of [`Self::output`] when it is longer than `inline`
    /// bytes: it is then to be kept out of the record (see [`OutputRef`] and
    /// [`Self::to_bytes_with_ref`]).
    pub fn large_output(&self, inline: usize) -> Option<Vec<u8>> {
        let text = serde_json::to_vec(self.output()?).expect("JSON values serialise");
        (text.len() > inline).then_some(text)
    }

    /// The record as it is in the log with [`Self::output`] replaced by `r`
    /// (`data.output_ref`, or `data.payload_ref` for a signal).
    pub fn to_bytes_with_ref(&self, r: &OutputRef) -> Vec<u8> {
        let mut data = self.event.to_data();
        let field = self.event.offloaded().map(|(field, _)| field);
        let (Some(obj), Some(field)) = (data.as_object_mut(), field) else {
            return self.to_bytes();
        };
        obj.remove(field);
        obj.insert(
            format!("{field}_ref"),
            serde_json::to_value(r).expect("a reference serialises"),
        );
        let wire = self.wire_with(data);
        serde_json::to_vec(&wire).expect("a record always serialises")
    }

    /// A record of the log; an output kept out of it ([`OutputRef`]) is an
    /// error (readers of the log use [`Self::from_bytes_with`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        Self::from_bytes_with(bytes, &mut |_| {
            Err("this reader does not read the payload topic".into())
        })
    }

    /// A record of the log, an output kept out of it read with `resolve`.
    pub fn from_bytes_with(bytes: &[u8], resolve: ResolveOutput<'_>) -> Result<Self, RecordError> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Envelope(e.to_string()))?;
        let event = Event::from_data(&wire.event_type, wire.version, wire.data, resolve)?;
        Ok(Self {
            event_id: wire.event_id,
            workflow_id: wire.workflow_id,
            user_id: wire.user_id,
            seq: wire.seq,
            prev_event_id: wire.prev_event_id,
            timestamp: wire.timestamp,
            metadata: wire.metadata,
            event,
        })
    }
}
