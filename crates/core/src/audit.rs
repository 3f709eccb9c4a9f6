//! The audit trail: a workflow's records as a person reads them — when,
//! what, which step and agent, how many attempts and how long, who asked,
//! which node wrote it, and whether the fold applied it. The same shape is
//! printed by `agentflow audit` (from the log) and served by
//! `GET /workflows/{id}/events` (from the projection).

use serde::Serialize;
use serde_json::Value;

use crate::record::{Event, Record};
use crate::state::{WorkflowState, apply};

/// One record of the audit trail (`GET /workflows/{id}/events`, the stream's
/// record events, `agentflow audit`). Fields are in alphabetical order, the
/// order in which its JSON has always listed them.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Whether the fold applied it (`false`: it lost a race or did not fit,
    /// and changed nothing).
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// A branch decision or a loop's exit test (`condition.evaluated`):
    /// `{kind, expression, result, error}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The error of a failed step or workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub event_id: uuid::Uuid,
    #[schema(value_type = String)]
    pub event_type: &'static str,
    /// The step's iteration (a loop's calls are 1, 2, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u32>,
    /// The node that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<Value>,
    /// Why the projection could not hold this record, when it was
    /// quarantined (the projected workflow stops before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    /// The user whose request wrote it (create, execute, cancel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Value>,
    pub seq: u64,
    /// The step it is about (its id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// A wait's beginning (`{signal, until}`) or end (`{ended_by}`), or a
    /// signal (`{signal, key}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<Value>,
}

impl AuditEntry {
    pub fn new(record: &Record, applied: bool) -> Self {
        let mut e = Self {
            timestamp: record.timestamp,
            event_type: record.event_type(),
            seq: record.seq,
            event_id: record.event_id,
            applied,
            step: record.event.step().map(|s| s.to_string()),
            iteration: None,
            agent: None,
            attempts: None,
            duration_ms: None,
            condition: None,
            wait: None,
            requested_by: record.metadata.get("requested_by").cloned(),
            node_id: record.metadata.get("node_id").cloned(),
            error: None,
            quarantined: None,
        };
        let error =
            |e: &crate::record::StepError| Some(serde_json::to_value(e).expect("serialisable"));
        match &record.event {
            Event::AgentExecuted {
                iteration,
                agent,
                attempts,
                duration_ms,
                ..
            } => {
                e.iteration = Some(*iteration);
                e.agent = Some(agent.to_string());
                e.attempts = Some(*attempts);
                e.duration_ms = Some(*duration_ms);
            }
            Event::StepFailed {
                iteration,
                agent,
                error: err,
                attempts,
                duration_ms,
                ..
            } => {
                e.iteration = Some(*iteration);
                e.agent = agent.as_ref().map(|a| a.to_string());
                e.attempts = Some(*attempts);
                e.duration_ms = Some(*duration_ms);
                e.error = error(err);
            }
            Event::Failed {
                agent, error: err, ..
            } => {
                e.agent = agent.as_ref().map(|a| a.to_string());
                e.error = error(err);
            }
            Event::ConditionEvaluated {
                condition,
                iteration,
                expression,
                result,
                error: err,
                ..
            } => {
                if *condition == crate::record::ConditionKind::Until {
                    e.iteration = Some(*iteration);
                }
                e.condition = Some(serde_json::json!({
                    "kind": condition, "expression": expression, "result": result, "error": err,
                }));
            }
            Event::StepWaiting { signal, until, .. } => {
                e.wait = Some(serde_json::json!({"signal": signal, "until": until}));
            }
            Event::WaitCompleted { reason, .. } => {
                e.wait = Some(serde_json::json!({"ended_by": reason}));
            }
            Event::SignalReceived { signal, key, .. } => {
                e.wait = Some(serde_json::json!({"signal": signal, "key": key}));
            }
            _ => {}
        }
        e
    }

    /// Marks the entry as a record the projection quarantined, and why.
    pub fn quarantined(mut self, reason: impl Into<String>) -> Self {
        self.quarantined = Some(reason.into());
        self
    }
}

/// Folds one workflow's records (in log order) into its audit trail and the
/// state they fold to.
pub fn audit(records: &[Record]) -> (Vec<AuditEntry>, Option<WorkflowState>) {
    let mut state = None;
    let entries = records
        .iter()
        .map(|r| {
            let applied = apply(&mut state, r).is_ok();
            AuditEntry::new(r, applied)
        })
        .collect();
    (entries, state)
}
