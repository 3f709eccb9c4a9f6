//! `decide`: given a workflow's state, what happens next. Pure: the caller
//! passes the clock. The engine's actor executes the action and appends the
//! resulting event; tests assert on the actions.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::ids::AgentName;
use crate::record::{Event, StepError, StepErrorKind};
use crate::state::{WorkflowState, WorkflowStatus};
use crate::template;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call `agent` for `step` with the rendered `input`. The result becomes
    /// `agent.executed` or `step.failed` with `seq` = state.seq + 1.
    CallAgent {
        step: u32,
        agent: AgentName,
        input: Value,
        /// `{workflow_id}:{step}`: the same on every retry and after recovery.
        idempotency_key: String,
        /// The task's own per-attempt timeout, overriding the agent's.
        attempt_timeout_ms: Option<u64>,
        /// The run's deadline: a call still going then fails the step with
        /// `workflow_timeout`.
        deadline: Option<DateTime<Utc>>,
    },
    /// Append this event (with `seq` = state.seq + 1) and `metadata`.
    Append {
        event: Event,
        metadata: serde_json::Map<String, Value>,
    },
}

/// The next action for a workflow, or `None` when there is nothing to do
/// (not running, or finished).
pub fn decide(state: &WorkflowState, now: DateTime<Utc>) -> Option<Action> {
    if state.status != WorkflowStatus::Running {
        return None;
    }
    if state.cancel_requested {
        return Some(Action::Append {
            event: Event::Cancelled,
            metadata: Default::default(),
        });
    }
    if let Some(step) = state.failed_step() {
        let failed = state.step(step)?;
        return Some(Action::Append {
            event: Event::Failed {
                step,
                agent: failed.agent.clone(),
                error: failed.error.clone()?,
            },
            metadata: Default::default(),
        });
    }
    if let Some(step) = state.next_step() {
        let task = &state.tasks[step as usize - 1];
        let deadline = state.deadline();
        if let Some(d) = deadline.filter(|d| *d <= now) {
            return Some(Action::Append {
                event: Event::StepFailed {
                    step,
                    agent: task.agent.clone(),
                    error: timed_out(state, d),
                    attempts: 0,
                    duration_ms: 0,
                },
                metadata: Default::default(),
            });
        }
        return Some(Action::CallAgent {
            step,
            agent: task.agent.clone(),
            input: template::render(&task.input, &state.previous_output(step)),
            idempotency_key: format!("{}:{}", state.workflow_id, step),
            attempt_timeout_ms: task.timeout_ms,
            deadline,
        });
    }
    let started = state.started_at.unwrap_or(state.created_at);
    let duration = (now - started).num_milliseconds().max(0) as f64 / 1000.0;
    let metadata = json!({
        "task_count": state.tasks.len(),
        "duration_seconds": duration,
        "agents_used": state.agents_used(),
    });
    let Value::Object(metadata) = metadata else {
        unreachable!("json! object literal")
    };
    Some(Action::Append {
        event: Event::Completed,
        metadata,
    })
}

/// The error of a step cut short by the workflow's deadline.
pub fn timed_out(state: &WorkflowState, deadline: DateTime<Utc>) -> StepError {
    StepError {
        kind: StepErrorKind::WorkflowTimeout,
        message: format!(
            "the workflow's timeout of {} ms passed at {}",
            state.timeout_ms.unwrap_or_default(),
            deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        http_status: None,
    }
}
