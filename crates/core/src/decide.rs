//! `decide`: given a workflow's state, everything that can happen now. Pure:
//! the caller passes the clock, the agent calls it has in flight and the
//! server's cap on them ([`Context`]). The engine's actor does the actions
//! (calls agents, appends records, arms a timer) and decides nothing of its
//! own; tests assert on them.
//!
//! Records that need no I/O come first (a condition's result, a wait's
//! beginning or end, the workflow's end): the actor appends them one by one,
//! deciding again after each ([`chain`]). Agent calls come once there are
//! none, several at a time for steps whose parents are all done, never more
//! in flight than the cap: which steps those are is [`running_steps`], the
//! same rule the API's view shows as `running`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::definition::StepId;
use crate::definition::StepKind;
use crate::expr;
use crate::ids::AgentName;
use crate::record::{ConditionKind, Event, Record, StepError, StepErrorKind, WaitEnd};
use crate::state::{Rejected, SkipReason, StepStatus, WorkflowState, WorkflowStatus, apply};

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

/// What `decide` needs besides the state.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub now: DateTime<Utc>,
    /// The steps whose agent calls are in flight.
    pub in_flight: &'a [StepId],
    /// The server's cap on a run's calls in flight, for a workflow that
    /// sets no `max_concurrency` (`None`: no cap).
    pub default_cap: Option<usize>,
}

impl From<DateTime<Utc>> for Context<'static> {
    /// No call in flight and no server cap.
    fn from(now: DateTime<Utc>) -> Self {
        Context {
            now,
            in_flight: &[],
            default_cap: None,
        }
    }
}

/// How many agent calls of `state` may be in flight at once: its
/// `max_concurrency`, else the server's `default_cap`.
pub fn cap(state: &WorkflowState, default_cap: Option<usize>) -> usize {
    state
        .max_concurrency
        .map(|n| n as usize)
        .or(default_cap)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The steps whose agent calls run now: in flight, or started by the next
/// `decide`. Of the agent steps that can be called (ready, their `when`
/// found true), the first `cap` in the order they became ready, then in
/// definition order ([`ready_at`]). A call's step stays among them until
/// its result is in, since steps that become ready later come after it:
/// so the engine, which starts exactly these, and the API's view, which
/// cannot see the engine and shows these as `running`, agree. None while
/// the run is paused (no call starts; those in flight finish) or not
/// running.
pub fn running_steps(state: &WorkflowState, default_cap: Option<usize>) -> Vec<usize> {
    if state.status != WorkflowStatus::Running || state.paused {
        return vec![];
    }
    let mut callable: Vec<(Option<DateTime<Utc>>, usize)> = (0..state.steps.len())
        .filter(|&i| {
            let (s, def) = (&state.steps[i], &state.definition[i]);
            state.is_ready(i)
                && matches!(def.kind(), StepKind::Agent(_))
                && (def.when.is_none() || s.condition == Some(true))
        })
        .map(|i| (ready_at(state, i), i))
        .collect();
    callable.sort();
    callable.truncate(cap(state, default_cap));
    callable.into_iter().map(|(_, i)| i).collect()
}

/// When ready step `i` became ready: the latest of its run's start, its
/// parents' ends (a parent skipped as unreachable ends with its own
/// parents) and, for a loop, its last iteration's end.
pub fn ready_at(state: &WorkflowState, i: usize) -> Option<DateTime<Utc>> {
    let own = state.steps[i]
        .finished_at
        .filter(|_| state.steps[i].iteration > 0);
    state
        .parents(i)
        .map(|p| resolved_at(state, p, 0))
        .chain([state.started_at, own])
        .max()
        .flatten()
}

/// When resolved step `i` was resolved (`depth` bounds the walk through
/// unreachable steps, which keep no time of their own).
fn resolved_at(state: &WorkflowState, i: usize, depth: usize) -> Option<DateTime<Utc>> {
    let s = &state.steps[i];
    if s.finished_at.is_some() || depth > state.steps.len() {
        return s.finished_at;
    }
    if s.skip_reason != Some(SkipReason::Unreachable) {
        return None;
    }
    state
        .parents(i)
        .map(|p| resolved_at(state, p, depth + 1))
        .max()
        .flatten()
}

/// Whether the result of `step`'s call for `iteration` still fits `state`
/// (the run was not cancelled meanwhile, no other writer took the step):
/// if not, the engine drops it.
pub fn takes_result(state: &WorkflowState, step: &StepId, iteration: u32) -> bool {
    state.status.is_active()
        && state
            .index(step)
            .is_some_and(|i| state.is_ready(i) && state.steps[i].iteration + 1 == iteration)
}

/// The record of `event` decided on `state` and those that follow from it
/// without an agent call, at most `max` in all, each applied in turn and
/// carrying `metadata` besides its own: the state after them, and the
/// records to append in one go.
pub fn chain(
    state: WorkflowState,
    event: Event,
    own_metadata: Map<String, Value>,
    metadata: &Map<String, Value>,
    ctx: Context<'_>,
    max: usize,
) -> Result<(WorkflowState, Vec<Record>), Rejected> {
    let mut next = Some(state);
    let mut records = Vec::with_capacity(2);
    let (mut event, mut own) = (event, own_metadata);
    loop {
        let st = next.as_ref().expect("apply keeps a state");
        let mut record = Record::new(st.workflow_id, st.user_id, st.seq + 1, ctx.now, event)
            .after(st.last_event_id);
        record.metadata = own;
        record
            .metadata
            .extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        apply(&mut next, &record)?;
        records.push(record);
        let st = next.as_ref().expect("apply keeps a state");
        match decide(st, ctx).into_iter().next() {
            Some(Action::Append { event: e, metadata }) if records.len() < max => {
                (event, own) = (e, metadata);
            }
            _ => break,
        }
    }
    Ok((next.expect("apply keeps a state"), records))
}

/// What can happen now (empty: nothing until a record arrives or a call
/// ends). The run ends (cancelled, failed) only once no call is in flight,
/// so that their results are kept.
pub fn decide<'a>(state: &WorkflowState, ctx: impl Into<Context<'a>>) -> Vec<Action> {
    let ctx = ctx.into();
    let now = ctx.now;
    if !state.status.is_active() {
        return vec![];
    }
    let ending = state.cancel_requested || state.failed_step().is_some();
    if ending && !ctx.in_flight.is_empty() {
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
    steps_now(state, ctx, deadline)
}

/// What the run's steps do now, on a run that goes on: the first record
/// one needs (a condition's result, a wait's beginning or end), else the
/// calls to start under the cap and the time to decide again.
fn steps_now(
    state: &WorkflowState,
    ctx: Context<'_>,
    deadline: Option<DateTime<Utc>>,
) -> Vec<Action> {
    let now = ctx.now;
    let mut wake = deadline;
    let mut calls = Vec::new();
    let running = running_steps(state, ctx.default_cap);
    // A call in flight for a step no longer among the running ones (one
    // that became ready earlier by a clock that went back) still counts.
    let mut free = cap(state, ctx.default_cap).saturating_sub(ctx.in_flight.len());
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
                    StepKind::Agent(_)
                        if !running.contains(&i) || ctx.in_flight.contains(&s.id) || free == 0 => {}
                    StepKind::Agent(agent) => {
                        free -= 1;
                        calls.push(Action::CallAgent {
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
                        })
                    }
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
