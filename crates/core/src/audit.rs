//! The audit trail: a workflow's records as a person reads them — when,
//! what, which step and agent, how many attempts and how long, who asked,
//! which node wrote it, and whether the fold applied it. The same shape is
//! printed by `agentflow audit` (from the log) and served by
//! `GET /workflows/{id}/events` (from the projection).

use serde::Serialize;
use serde_json::Value;

use crate::record::{Event, Record};
use crate::state::{WorkflowState, apply};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub event_type: &'static str,
    pub seq: u64,
    pub event_id: uuid::Uuid,
    /// Whether the fold applied it (`false`: it lost a race or did not fit,
    /// and changed nothing).
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The user whose request wrote it (create, execute, cancel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Value>,
    /// The node that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<Value>,
    /// The error of a failed step or workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Why the projection could not hold this record, when it was
    /// quarantined (the projected workflow stops before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
}

impl AuditEntry {
    pub fn new(record: &Record, applied: bool) -> Self {
        let (step, agent, attempts, duration_ms, error) = match &record.event {
            Event::AgentExecuted {
                step,
                agent,
                attempts,
                duration_ms,
                ..
            } => (
                Some(*step),
                Some(agent),
                Some(*attempts),
                Some(*duration_ms),
                None,
            ),
            Event::StepFailed {
                step,
                agent,
                attempts,
                duration_ms,
                error,
            } => (
                Some(*step),
                Some(agent),
                Some(*attempts),
                Some(*duration_ms),
                Some(error),
            ),
            Event::Failed { step, agent, error } => {
                (Some(*step), Some(agent), None, None, Some(error))
            }
            Event::Started { from_step } => (Some(*from_step), None, None, None, None),
            _ => (None, None, None, None, None),
        };
        Self {
            timestamp: record.timestamp,
            event_type: record.event_type(),
            seq: record.seq,
            event_id: record.event_id,
            applied,
            step,
            agent: agent.map(|a| a.as_str().to_owned()),
            attempts,
            duration_ms,
            requested_by: record.metadata.get("requested_by").cloned(),
            node_id: record.metadata.get("node_id").cloned(),
            error: error.map(|e| serde_json::to_value(e).expect("serialisable")),
            quarantined: None,
        }
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
