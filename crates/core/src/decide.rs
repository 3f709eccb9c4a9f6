//! `decide`: given a workflow's state, everything that can happen now. Pure:
//! the caller passes the clock. The engine's actor does the actions (calls
//! agents, appends records, arms a timer); tests assert on them.
//!
//! Records that need no I/O come first (a condition's result, a wait's
//! beginning or end, the workflow's end): the actor appends them one by one,
//! deciding again after each. Agent calls come once there are none, several
//! at a time for steps whose parents are all done.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::definition::StepId;
use crate::definition::StepKind;
use crate::expr;
use crate::ids::AgentName;
use crate::record::{ConditionKind, Event, StepError, StepErrorKind, WaitEnd};
use crate::state::{StepStatus, WorkflowState};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call `agent` for iteration `iteration` of `step` with the rendered
    /// `input`. The result becomes `agent.executed` or `step.failed`.
    CallAgent {
        step: StepId,
        iteration: u32,
        agent: AgentName,
        input: Value,
        /// `{workflow_id}:{step}:{iteration}`: the same on every retry and
        /// after recovery, different for every call the workflow makes.
        idempotency_key: String,
        /// The step's own per-attempt timeout, overriding the agent's.
        attempt_timeout_ms: Option<u64>,
        /// The run's deadline: a call still going then fails the step with
        /// `workflow_timeout`.
        deadline: Option<DateTime<Utc>>,
    },
    /// Append this event (chained after the state) with `metadata`.
    Append {
        event: Event,
        metadata: Map<String, Value>,
    },
    /// Nothing more to do before this time (a sleep's wake-up, a wait's
    /// timeout, the run's deadline): decide again then.
    WakeAt(DateTime<Utc>),
}

fn append(event: Event) -> Action {
    Action::Append {
        event,
        metadata: Map::new(),
    }
}

/// What can happen now (empty: nothing until a record arrives).
pub fn decide(state: &WorkflowState, now: DateTime<Utc>) -> Vec<Action> {
    if !state.status.is_active() {
        return vec![];
    }
    if state.cancel_requested {
        return vec![append(Event::Cancelled)];
    }
    if let Some(i) = state.failed_step() {
        let (s, d) = (&state.steps[i], &state.definition[i]);
        return vec![append(Event::Failed {
            step: s.id.clone(),
            agent: d.agent.clone(),
            error: s.error.clone().unwrap_or_else(|| StepError {
                kind: StepErrorKind::ServerError,
                message: "the step failed".into(),
                http_status: None,
            }),
        })];
    }
    if state.steps.iter().all(|s| s.status.is_resolved()) {
        return vec![completed(state, now)];
    }
    let deadline = state.deadline();
    if let Some(d) = deadline.filter(|d| *d <= now)
        && let Some(i) = (0..state.steps.len()).find(|i| {
            let s = &state.steps[*i];
            s.status == StepStatus::Waiting
                || (s.status == StepStatus::Pending
                    && (s.until_pending || state.parents_done(*i) == Some(true)))
        })
    {
        let s = &state.steps[i];
        return vec![append(Event::StepFailed {
            step: s.id.clone(),
            iteration: s.iteration + 1,
            agent: state.definition[i].agent.clone(),
            error: timed_out(state, d),
            attempts: 0,
            duration_ms: 0,
        })];
    }
    let mut wake = deadline;
    let mut calls = Vec::new();
    for (i, s) in state.steps.iter().enumerate() {
        let def = &state.definition[i];
        match s.status {
            StepStatus::Pending if s.until_pending => {
                if let Some(r) = &def.repeat {
                    let output = s.output.clone().unwrap_or(Value::Null);
                    let iteration = Value::from(s.iteration);
                    let steps = state.condition_steps();
                    let vars = [
                        ("steps", &steps),
                        ("input", &state.input),
                        ("output", &output),
                        ("iteration", &iteration),
                    ];
                    return vec![evaluated(
                        s.id.clone(),
                        ConditionKind::Until,
                        s.iteration,
                        &r.until,
                        expr::evaluate(&r.until, &vars),
                    )];
                }
            }
            StepStatus::Pending if state.is_ready(i) => {
                if let Some(when) = def.when.as_ref().filter(|_| s.condition.is_none()) {
                    let steps = state.condition_steps();
                    let vars = [("steps", &steps), ("input", &state.input)];
                    return vec![evaluated(
                        s.id.clone(),
                        ConditionKind::When,
                        0,
                        when,
                        expr::evaluate(when, &vars),
                    )];
                }
                if state.paused {
                    continue;
                }
                match def.kind() {
                    StepKind::Agent(agent) => calls.push(Action::CallAgent {
                        step: s.id.clone(),
                        iteration: s.iteration + 1,
                        agent: agent.clone(),
                        input: state.render_input(i),
                        idempotency_key: format!(
                            "{}:{}:{}",
                            state.workflow_id,
                            s.id,
                            s.iteration + 1
                        ),
                        attempt_timeout_ms: def.timeout_ms,
                        deadline,
                    }),
                    StepKind::Wait(w) => {
                        return vec![append(Event::StepWaiting {
                            step: s.id.clone(),
                            signal: Some(w.signal.clone()),
                            until: w.timeout_ms.map(|ms| now + millis(ms)),
                        })];
                    }
                    StepKind::Sleep(ms) => {
                        return vec![append(Event::StepWaiting {
                            step: s.id.clone(),
                            signal: None,
                            until: Some(now + millis(ms)),
                        })];
                    }
                }
            }
            StepStatus::Waiting => {
                if let Some(inbox) = &s.inbox {
                    return vec![append(Event::WaitCompleted {
                        step: s.id.clone(),
                        reason: WaitEnd::Signal,
                        output: inbox.payload.clone(),
                    })];
                }
                match s.wait_until {
                    Some(t) if t <= now => return vec![wait_over(state, i)],
                    Some(t) => wake = Some(wake.map_or(t, |w| w.min(t))),
                    None => {}
                }
            }
            _ => {}
        }
    }
    if let Some(t) = wake {
        calls.push(Action::WakeAt(t));
    }
    calls
}

fn millis(ms: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2))
}

fn evaluated(
    step: StepId,
    condition: ConditionKind,
    iteration: u32,
    expression: &str,
    outcome: Result<bool, String>,
) -> Action {
    let (result, error) = match outcome {
        Ok(b) => (b, None),
        // CEL quotes the values it stumbled on (a map key built from a
        // large output, say): the record keeps a bounded part.
        Err(e) => (false, Some(crate::bounds::message(&e))),
    };
    append(Event::ConditionEvaluated {
        step,
        condition,
        iteration,
        expression: expression.to_owned(),
        result,
        error,
    })
}

/// The end of step `i`'s wait at its time: a sleep wakes; a wait takes its
/// `timeout_output`, or fails.
fn wait_over(state: &WorkflowState, i: usize) -> Action {
    let s = &state.steps[i];
    match state.definition[i].kind() {
        StepKind::Wait(w) => match &w.timeout_output {
            Some(output) => append(Event::WaitCompleted {
                step: s.id.clone(),
                reason: WaitEnd::Timeout,
                output: output.clone(),
            }),
            None => append(Event::StepFailed {
                step: s.id.clone(),
                iteration: s.iteration + 1,
                agent: None,
                error: StepError {
                    kind: StepErrorKind::WaitTimeout,
                    message: format!(
                        "no `{}` signal within {} ms",
                        w.signal,
                        w.timeout_ms.unwrap_or_default()
                    ),
                    http_status: None,
                },
                attempts: 0,
                duration_ms: w.timeout_ms.unwrap_or_default(),
            }),
        },
        _ => append(Event::WaitCompleted {
            step: s.id.clone(),
            reason: WaitEnd::Timer,
            output: Value::Null,
        }),
    }
}

/// `workflow.completed`, with the guide's `task_count`, `duration_seconds`
/// and `agents_used` in its metadata.
fn completed(state: &WorkflowState, now: DateTime<Utc>) -> Action {
    let started = state.started_at.unwrap_or(state.created_at);
    let duration = (now - started).num_milliseconds().max(0) as f64 / 1000.0;
    let metadata = json!({
        "task_count": state.steps.len(),
        "duration_seconds": duration,
        "agents_used": state.agents_used(),
    });
    let Value::Object(metadata) = metadata else {
        unreachable!("json! object literal")
    };
    Action::Append {
        event: Event::Completed,
        metadata,
    }
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
