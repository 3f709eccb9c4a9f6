//! The fold: a workflow's state is `apply` over its records, in log order.
//!
//! The lifecycle `pending → running → completed | failed` (and `failed →
//! running` on resume; `pending | running | failed → cancelled`) lives here
//! and only here. A record that does not fit —
//! wrong `seq`, wrong workflow, an illegal transition — is rejected and
//! changes nothing: the first record in log order that extends the chain wins,
//! which makes a stale writer after a rebalance harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::definition::TaskDef;
use crate::ids::{AgentName, UserId, WorkflowId};
use crate::record::{Event, Record, StepError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl WorkflowStatus {
    pub const ALL: [WorkflowStatus; 5] = [
        WorkflowStatus::Pending,
        WorkflowStatus::Running,
        WorkflowStatus::Completed,
        WorkflowStatus::Failed,
        WorkflowStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Pending => "pending",
            WorkflowStatus::Running => "running",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether it can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, WorkflowStatus::Completed | WorkflowStatus::Cancelled)
    }

    /// Whether `POST /execute` may start (or resume) it.
    pub fn can_start(self) -> bool {
        matches!(self, WorkflowStatus::Pending | WorkflowStatus::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Completed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub agent: AgentName,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowState {
    pub workflow_id: WorkflowId,
    pub user_id: UserId,
    pub name: String,
    pub tasks: Vec<TaskDef>,
    pub steps: Vec<StepState>,
    pub status: WorkflowStatus,
    /// The `seq` of the last record applied.
    pub seq: u64,
    /// The `event_id` of the last record applied: the next record's parent.
    pub last_event_id: uuid::Uuid,
    /// How many times it was started (1 + resumes).
    pub runs: u32,
    /// Each run's deadline, from its start (`None`: no deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A user asked to cancel it during this run (only ever true while
    /// running: every end and every start clears it).
    #[serde(default)]
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Why a record was not applied. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("seq {got} is not the next one ({expected})")]
    OutOfSequence { expected: u64, got: u64 },
    #[error("record was decided on another state (parent {got:?}, expected {expected})")]
    WrongParent {
        expected: uuid::Uuid,
        got: Option<uuid::Uuid>,
    },
    #[error("record is for another workflow")]
    OtherWorkflow,
    #[error("{event} is not allowed while {status:?}")]
    IllegalTransition {
        status: Option<WorkflowStatus>,
        event: &'static str,
    },
    #[error("step {got} does not match the step in progress ({expected:?})")]
    WrongStep { expected: Option<u32>, got: u32 },
}

impl WorkflowState {
    /// The 1-based step to run next, if any step is still pending.
    pub fn next_step(&self) -> Option<u32> {
        self.steps
            .iter()
            .position(|s| s.status == StepStatus::Pending)
            .map(|i| i as u32 + 1)
    }

    /// The step that failed, if any.
    pub fn failed_step(&self) -> Option<u32> {
        self.steps
            .iter()
            .position(|s| s.status == StepStatus::Failed)
            .map(|i| i as u32 + 1)
    }

    pub fn step(&self, step: u32) -> Option<&StepState> {
        self.steps.get((step as usize).checked_sub(1)?)
    }

    /// The output of the step before `step` (`null` for the first step).
    pub fn previous_output(&self, step: u32) -> Value {
        step.checked_sub(1)
            .and_then(|p| self.step(p))
            .and_then(|s| s.output.clone())
            .unwrap_or(Value::Null)
    }

    /// The guide's `results`: `[{step, output}]` of the completed steps.
    pub fn results(&self) -> Value {
        Value::Array(
            self.steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    s.output
                        .as_ref()
                        .map(|o| serde_json::json!({"step": i + 1, "output": o}))
                })
                .collect(),
        )
    }

    /// The distinct agents of the workflow, in task order.
    pub fn agents_used(&self) -> Vec<AgentName> {
        let mut seen: Vec<AgentName> = Vec::new();
        for t in &self.tasks {
            if !seen.contains(&t.agent) {
                seen.push(t.agent.clone());
            }
        }
        seen
    }

    /// When the current run must end, if the workflow has a timeout.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let ms = i64::try_from(self.timeout_ms?).ok()?;
        Some(self.started_at? + chrono::Duration::milliseconds(ms))
    }

    /// The step a (re)start begins at: 1 when pending, the failed step when
    /// failed; `None` when it cannot start.
    pub fn start_step(&self) -> Option<u32> {
        match self.status {
            WorkflowStatus::Pending => Some(1),
            WorkflowStatus::Failed => self.failed_step(),
            _ => None,
        }
    }

    /// Ends the workflow with `status`: the steps not run are skipped.
    ///
    /// A cancel accepted while it was running wins over the end its writer
    /// decided: the writer (the actor) decided `workflow.failed` or
    /// `workflow.completed` on a state without the request, which reached the
    /// log first. `decide` on the log's state would have cancelled it (the
    /// request comes before everything), and the user was told
    /// `cancelling`, so the workflow ends `cancelled`. Either way no request
    /// outlives the run it was made in.
    fn end(&mut self, status: WorkflowStatus, record: &Record) {
        for s in self
            .steps
            .iter_mut()
            .filter(|s| s.status == StepStatus::Pending)
        {
            s.status = StepStatus::Skipped;
        }
        self.status = if self.cancel_requested {
            WorkflowStatus::Cancelled
        } else {
            status
        };
        self.cancel_requested = false;
        self.finished_at = Some(record.timestamp);
    }

    /// Ends the step in progress, which must be `step` run by `agent`.
    fn finish_step(
        &mut self,
        step: u32,
        agent: &AgentName,
        status: StepStatus,
        attempts: u32,
        duration_ms: u64,
        record: &Record,
    ) -> Result<&mut StepState, Rejected> {
        let expected = self.next_step();
        let agent_matches = self.step(step).is_some_and(|s| &s.agent == agent);
        if expected != Some(step) || !agent_matches {
            return Err(Rejected::WrongStep {
                expected,
                got: step,
            });
        }
        let s = &mut self.steps[step as usize - 1];
        s.status = status;
        s.attempts = attempts;
        s.duration_ms = duration_ms;
        s.finished_at = Some(record.timestamp);
        Ok(s)
    }
}

/// Applies `record` to `state` (`None` before the workflow exists). On
/// `Err`, `state` is left exactly as it was.
pub fn apply(state: &mut Option<WorkflowState>, record: &Record) -> Result<(), Rejected> {
    if !record.event.is_chained() {
        return apply_command(state, record);
    }
    let expected = state.as_ref().map_or(1, |s| s.seq + 1);
    if record.seq != expected {
        return Err(Rejected::OutOfSequence {
            expected,
            got: record.seq,
        });
    }
    let Some(st) = state.as_mut() else {
        let Event::Created {
            name,
            tasks,
            timeout_ms,
        } = &record.event
        else {
            return Err(Rejected::IllegalTransition {
                status: None,
                event: record.event_type(),
            });
        };
        *state = Some(WorkflowState {
            workflow_id: record.workflow_id,
            user_id: record.user_id,
            name: name.clone(),
            steps: tasks
                .iter()
                .map(|t| StepState {
                    agent: t.agent.clone(),
                    status: StepStatus::Pending,
                    output: None,
                    error: None,
                    attempts: 0,
                    duration_ms: 0,
                    finished_at: None,
                })
                .collect(),
            tasks: tasks.clone(),
            status: WorkflowStatus::Pending,
            seq: record.seq,
            last_event_id: record.event_id,
            runs: 0,
            timeout_ms: *timeout_ms,
            cancel_requested: false,
            created_at: record.timestamp,
            started_at: None,
            finished_at: None,
        });
        return Ok(());
    };
    if st.workflow_id != record.workflow_id {
        // Checked before anything else about the record is trusted.
        return Err(Rejected::OtherWorkflow);
    }
    if record.prev_event_id != Some(st.last_event_id) {
        return Err(Rejected::WrongParent {
            expected: st.last_event_id,
            got: record.prev_event_id,
        });
    }
    match (&record.event, st.status) {
        (Event::Started { from_step }, status) if status.can_start() => {
            if st.start_step() != Some(*from_step) {
                return Err(Rejected::WrongStep {
                    expected: st.start_step(),
                    got: *from_step,
                });
            }
            for s in st.steps.iter_mut().skip(*from_step as usize - 1) {
                s.status = StepStatus::Pending;
                s.error = None;
                s.finished_at = None;
            }
            st.status = WorkflowStatus::Running;
            // A request of an earlier run never carries over (see `end`).
            st.cancel_requested = false;
            st.runs += 1;
            st.started_at = Some(record.timestamp);
            st.finished_at = None;
        }
        (
            Event::AgentExecuted {
                step,
                agent,
                output,
                attempts,
                duration_ms,
            },
            WorkflowStatus::Running,
        ) if st.failed_step().is_none() => {
            let s = st.finish_step(
                *step,
                agent,
                StepStatus::Completed,
                *attempts,
                *duration_ms,
                record,
            )?;
            s.output = Some(output.clone());
        }
        (
            Event::StepFailed {
                step,
                agent,
                error,
                attempts,
                duration_ms,
            },
            WorkflowStatus::Running,
        ) if st.failed_step().is_none() => {
            let s = st.finish_step(
                *step,
                agent,
                StepStatus::Failed,
                *attempts,
                *duration_ms,
                record,
            )?;
            s.error = Some(error.clone());
        }
        (Event::Completed, WorkflowStatus::Running)
            if st.steps.iter().all(|s| s.status == StepStatus::Completed) =>
        {
            st.end(WorkflowStatus::Completed, record);
        }
        (Event::Failed { step, .. }, WorkflowStatus::Running) => {
            if st.failed_step() != Some(*step) {
                return Err(Rejected::WrongStep {
                    expected: st.failed_step(),
                    got: *step,
                });
            }
            st.end(WorkflowStatus::Failed, record);
        }
        // Pending and failed workflows have no actor: the API cancels them
        // directly. A running one only by its actor, once asked.
        (Event::Cancelled, status)
            if matches!(status, WorkflowStatus::Pending | WorkflowStatus::Failed)
                || (status == WorkflowStatus::Running && st.cancel_requested) =>
        {
            st.end(WorkflowStatus::Cancelled, record);
        }
        (event, status) => {
            return Err(Rejected::IllegalTransition {
                status: Some(status),
                event: event.event_type(),
            });
        }
    }
    st.seq = record.seq;
    st.last_event_id = record.event_id;
    Ok(())
}

/// Applies a command that flags the state without taking a place in the
/// chain (see [`Event::is_chained`]). Applying it twice changes nothing.
fn apply_command(state: &mut Option<WorkflowState>, record: &Record) -> Result<(), Rejected> {
    let Some(st) = state.as_mut() else {
        return Err(Rejected::IllegalTransition {
            status: None,
            event: record.event_type(),
        });
    };
    if st.workflow_id != record.workflow_id {
        return Err(Rejected::OtherWorkflow);
    }
    match (&record.event, st.status) {
        (Event::CancelRequested, WorkflowStatus::Running) => {
            st.cancel_requested = true;
            Ok(())
        }
        (event, status) => Err(Rejected::IllegalTransition {
            status: Some(status),
            event: event.event_type(),
        }),
    }
}
