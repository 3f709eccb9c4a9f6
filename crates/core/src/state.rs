//! The fold: a workflow's state is `apply` over its records, in log order.
//!
//! The lifecycle `pending → running ⇄ waiting | paused → completed | failed`
//! (and `failed → running` on resume; `pending | running | waiting | paused
//! | failed → cancelled`) lives here and only here. `running`, `waiting` and
//! `paused` are one run: `waiting` when every step that can still run waits
//! for a signal or a time, `paused` while a user holds new steps back.
//!
//! A record that does not fit — wrong `seq`, wrong workflow, an illegal
//! transition, a step that cannot take it — is rejected and changes
//! nothing: the first record in log order that extends the chain wins,
//! which makes a stale writer after a rebalance harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::definition::{OnExhausted, StepDef, StepId, StepKind};
use crate::ids::{AgentName, UserId, WorkflowId};
use crate::record::{ConditionKind, Event, Record, StepError, StepErrorKind};
use crate::spelled::spelled;
use crate::template::{self, Ref};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum WorkflowStatus {
    Pending,
    Running,
    /// Running, and every step that can still run waits for a signal or a
    /// time: no call is in flight and none is held in memory.
    Waiting,
    /// Running, but a user paused it: no new step starts.
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl WorkflowStatus {
    pub const ALL: [WorkflowStatus; 7] = [
        WorkflowStatus::Pending,
        WorkflowStatus::Running,
        WorkflowStatus::Waiting,
        WorkflowStatus::Paused,
        WorkflowStatus::Completed,
        WorkflowStatus::Failed,
        WorkflowStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Pending => "pending",
            WorkflowStatus::Running => "running",
            WorkflowStatus::Waiting => "waiting",
            WorkflowStatus::Paused => "paused",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    /// Whether it can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, WorkflowStatus::Completed | WorkflowStatus::Cancelled)
    }

    /// Whether `POST /execute` may start (or resume) it.
    pub fn can_start(self) -> bool {
        matches!(self, WorkflowStatus::Pending | WorkflowStatus::Failed)
    }

    /// Whether a run is going on (running, waiting or paused).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Running | WorkflowStatus::Waiting | WorkflowStatus::Paused
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum StepStatus {
    /// Not finished: waiting for its parents, or ready (then running once
    /// the engine calls its agent).
    Pending,
    /// A wait or sleep step that began.
    Waiting,
    Completed,
    Failed,
    Skipped,
}

impl StepStatus {
    pub const ALL: [StepStatus; 5] = [
        StepStatus::Pending,
        StepStatus::Waiting,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Waiting => "waiting",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }

    /// Completed or skipped: its children may go on.
    pub fn is_resolved(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Skipped)
    }
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum SkipReason {
    /// Its `when` was false.
    Condition,
    /// Every parent was skipped: no way left to run it.
    Unreachable,
    /// The workflow ended (failed or cancelled) before it ran.
    Ended,
}

impl SkipReason {
    pub const ALL: [SkipReason; 3] = [
        SkipReason::Condition,
        SkipReason::Unreachable,
        SkipReason::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Condition => "condition",
            SkipReason::Unreachable => "unreachable",
            SkipReason::Ended => "ended",
        }
    }
}

// The names above are their only spelling: serde, `parse`, the
// projection's columns and the OpenAPI document read them.
spelled!(
    WorkflowStatus,
    "Status",
    "A workflow's status (`waiting`: running, and every step that can still run waits for a \
     signal or a time; `paused`: running, but paused by a user, so no new step starts)."
);
spelled!(StepStatus);
spelled!(
    SkipReason,
    "SkipReason",
    "Why a step was skipped: `condition` (its `when` was false), `unreachable` (every parent \
     skipped) or `ended` (the workflow ended first)."
);

/// A signal received for a waiting step, not yet taken by the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbox {
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub id: StepId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentName>,
    pub status: StepStatus,
    /// The output (a loop's: its last iteration's). `Some(null)` is an
    /// output (an agent may answer `null`) and stays one through JSON.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// How many iterations (agent calls that answered) it has had.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iteration: u32,
    /// A loop's outputs, one per iteration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<Value>,
    /// A loop's iteration count when its current run began (a resumed loop
    /// gets `max_iterations` more).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub loop_base: u32,
    /// An iteration ended and `until` is still to be evaluated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_pending: bool,
    /// The recorded result of its `when`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// A waiting step ends by itself then (a sleep's wake-up, a wait's
    /// timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<Inbox>,
}

impl StepState {
    /// A step before anything happened to it.
    pub fn new(def: &StepDef) -> Self {
        StepState {
            id: def.id.clone(),
            agent: def.agent.clone(),
            status: StepStatus::Pending,
            output: None,
            error: None,
            attempts: 0,
            duration_ms: 0,
            finished_at: None,
            iteration: 0,
            iterations: vec![],
            loop_base: 0,
            until_pending: false,
            condition: None,
            skip_reason: None,
            wait_until: None,
            inbox: None,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A field that is there is `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty) || v.is_null()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowState {
    pub workflow_id: WorkflowId,
    pub user_id: UserId,
    pub name: String,
    pub definition: Vec<StepDef>,
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub input: Value,
    pub steps: Vec<StepState>,
    pub status: WorkflowStatus,
    /// The `seq` of the last record applied.
    pub seq: u64,
    /// The `event_id` of the last record applied: the next record's parent.
    pub last_event_id: Uuid,
    /// How many times it was started (1 + resumes).
    pub runs: u32,
    /// Each run's deadline, from its start (`None`: no deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// A user asked to cancel it during this run (only ever true while
    /// running: every end and every start clears it).
    #[serde(default)]
    pub cancel_requested: bool,
    /// A user paused it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The commands (pause, resume, signal) applied, by `event_id`: one
    /// delivered again changes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Uuid>,
    /// The `key`s of the signals received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signal_keys: Vec<String>,
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
    WrongParent { expected: Uuid, got: Option<Uuid> },
    #[error("record is for another workflow")]
    OtherWorkflow,
    #[error("{event} is not allowed while {status:?}")]
    IllegalTransition {
        status: Option<WorkflowStatus>,
        event: &'static str,
    },
    #[error("step `{step}` cannot take it: {why}")]
    WrongStep { step: String, why: &'static str },
    #[error("the command was applied already")]
    Duplicate,
}

fn wrong(step: &StepId, why: &'static str) -> Rejected {
    Rejected::WrongStep {
        step: step.to_string(),
        why,
    }
}

impl WorkflowState {
    pub fn index(&self, id: &StepId) -> Option<usize> {
        self.steps.iter().position(|s| &s.id == id)
    }

    pub fn step(&self, id: &StepId) -> Option<&StepState> {
        self.index(id).map(|i| &self.steps[i])
    }

    /// The indices of step `i`'s parents.
    pub fn parents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.definition[i]
            .after
            .iter()
            .filter_map(|p| self.index(p))
    }

    /// Whether step `i`'s parents let it run: `None` while one is not
    /// resolved, `Some(false)` when all were skipped, else `Some(true)`.
    pub fn parents_done(&self, i: usize) -> Option<bool> {
        let mut any = self.definition[i].after.is_empty();
        for p in self.parents(i) {
            match self.steps[p].status {
                StepStatus::Completed => any = true,
                StepStatus::Skipped => {}
                _ => return None,
            }
        }
        Some(any)
    }

    /// Whether step `i` can start now (its parents let it run and it has not
    /// begun).
    pub fn is_ready(&self, i: usize) -> bool {
        let s = &self.steps[i];
        s.status == StepStatus::Pending && !s.until_pending && self.parents_done(i) == Some(true)
    }

    /// The index of the step that failed, if any.
    pub fn failed_step(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.status == StepStatus::Failed)
    }

    /// The guide's `results`: `[{step, id, output}]` of the steps with an
    /// output, `step` being the 1-based position in the definition.
    pub fn results(&self) -> Value {
        Value::Array(
            self.steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    s.output
                        .as_ref()
                        .map(|o| serde_json::json!({"step": i + 1, "id": s.id, "output": o}))
                })
                .collect(),
        )
    }

    /// The distinct agents of the workflow, in definition order.
    pub fn agents_used(&self) -> Vec<AgentName> {
        let mut seen: Vec<AgentName> = Vec::new();
        for a in self.definition.iter().filter_map(|d| d.agent.as_ref()) {
            if !seen.contains(a) {
                seen.push(a.clone());
            }
        }
        seen
    }

    /// When the current run must end, if the workflow has a timeout.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let ms = i64::try_from(self.timeout_ms?).ok()?;
        Some(self.started_at? + chrono::Duration::milliseconds(ms))
    }

    /// Step `i`'s input for its next call, rendered from its template.
    pub fn render_input(&self, i: usize) -> Value {
        self.input_of(i, self.steps[i].iteration + 1)
    }

    /// The input step `i` was (or is to be) called with on iteration
    /// `iteration`: its template over its ancestors' outputs (final once it
    /// may run) and, for a loop, its own output of the iteration before.
    /// `None` for a step that is not an agent call or cannot run yet.
    pub fn call_input(&self, i: usize, iteration: u32) -> Option<Value> {
        let s = &self.steps[i];
        let began = s.iteration > 0
            || s.status == StepStatus::Failed
            || (s.status == StepStatus::Pending && self.parents_done(i) == Some(true));
        (self.definition[i].agent.is_some() && began && iteration >= 1)
            .then(|| self.input_of(i, iteration))
    }

    fn input_of(&self, i: usize, iteration: u32) -> Value {
        // A loop's own output, as it was before this iteration.
        let own = match iteration {
            1 => None,
            n if !self.steps[i].iterations.is_empty() => {
                self.steps[i].iterations.get(n as usize - 2).cloned()
            }
            _ => self.steps[i].output.clone(),
        };
        template::render(&self.definition[i].input, &|r| match r {
            Ref::PreviousOutput => self
                .parents(i)
                .next()
                .and_then(|p| self.steps[p].output.clone())
                .unwrap_or(Value::Null),
            Ref::Step(id, path) if *id == self.steps[i].id.as_str() => own
                .as_ref()
                .map_or(Value::Null, |o| template::lookup(o, path)),
            Ref::Step(id, path) => self
                .steps
                .iter()
                .find(|s| s.id.as_str() == *id)
                .and_then(|s| s.output.as_ref())
                .map_or(Value::Null, |o| template::lookup(o, path)),
            Ref::Input(path) => template::lookup(&self.input, path),
            Ref::Iteration => iteration.into(),
        })
    }

    /// What conditions see as `steps`: each step's output, status and
    /// iterations, by id.
    pub fn condition_steps(&self) -> Value {
        Value::Object(
            self.steps
                .iter()
                .map(|s| {
                    (
                        s.id.to_string(),
                        serde_json::json!({
                            "output": s.output.clone().unwrap_or(Value::Null),
                            "status": s.status.as_str(),
                            "iteration": s.iteration,
                        }),
                    )
                })
                .collect(),
        )
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
            .filter(|s| matches!(s.status, StepStatus::Pending | StepStatus::Waiting))
        {
            s.status = StepStatus::Skipped;
            s.skip_reason = Some(SkipReason::Ended);
            // `until_pending` stays: a resume evaluates the `until` that
            // was due (its iteration's output is in).
            s.wait_until = None;
            s.inbox = None;
        }
        self.status = if self.cancel_requested {
            WorkflowStatus::Cancelled
        } else {
            status
        };
        self.cancel_requested = false;
        self.paused = false;
        self.finished_at = Some(record.timestamp);
    }

    /// Skips the steps no parent can lead to any more, and says whether the
    /// run is running, waiting or paused.
    fn settle(&mut self) {
        loop {
            let unreachable: Vec<usize> = (0..self.steps.len())
                .filter(|i| {
                    self.steps[*i].status == StepStatus::Pending
                        && self.parents_done(*i) == Some(false)
                })
                .collect();
            if unreachable.is_empty() {
                break;
            }
            for i in unreachable {
                self.steps[i].status = StepStatus::Skipped;
                self.steps[i].skip_reason = Some(SkipReason::Unreachable);
            }
        }
        if !self.status.is_active() {
            return;
        }
        self.status = if self.paused {
            WorkflowStatus::Paused
        } else if self.only_waits() {
            WorkflowStatus::Waiting
        } else {
            WorkflowStatus::Running
        };
    }

    /// Whether nothing can happen but a signal or a time: some step waits,
    /// and no step can start, end or be decided on.
    fn only_waits(&self) -> bool {
        if self.cancel_requested || self.failed_step().is_some() {
            return false;
        }
        let mut waits = false;
        for (i, s) in self.steps.iter().enumerate() {
            match s.status {
                StepStatus::Waiting if s.inbox.is_some() => return false,
                StepStatus::Waiting => waits = true,
                StepStatus::Pending if s.until_pending || self.is_ready(i) => return false,
                _ => {}
            }
        }
        waits
    }

    /// The step `id` names, which must be in `status`.
    fn step_in(&self, id: &StepId, status: StepStatus) -> Result<usize, Rejected> {
        let i = self.index(id).ok_or_else(|| wrong(id, "no such step"))?;
        if self.steps[i].status != status {
            return Err(wrong(id, "it is not in the status this record needs"));
        }
        Ok(i)
    }

    /// The step `id` names, which must be able to start now.
    fn ready_step(&self, id: &StepId) -> Result<usize, Rejected> {
        let i = self.step_in(id, StepStatus::Pending)?;
        if !self.is_ready(i) {
            return Err(wrong(id, "it cannot start yet"));
        }
        if self.definition[i].when.is_some() && self.steps[i].condition != Some(true) {
            return Err(wrong(id, "its condition has not been found true"));
        }
        Ok(i)
    }

    fn finish(&mut self, i: usize, status: StepStatus, record: &Record) {
        let s = &mut self.steps[i];
        s.status = status;
        s.finished_at = Some(record.timestamp);
        s.wait_until = None;
        s.inbox = None;
        s.until_pending = false;
    }

    fn fail(&mut self, i: usize, error: StepError, record: &Record) {
        self.steps[i].error = Some(error);
        self.finish(i, StepStatus::Failed, record);
    }

    /// A (re)start: failed steps and those the end left unrun run again.
    fn restart(&mut self, record: &Record) {
        for s in &mut self.steps {
            let again = s.status == StepStatus::Failed
                || (s.status == StepStatus::Skipped && s.skip_reason == Some(SkipReason::Ended));
            if again {
                s.status = StepStatus::Pending;
                s.error = None;
                s.finished_at = None;
                s.skip_reason = None;
                s.loop_base = s.iteration;
            }
        }
        self.status = WorkflowStatus::Running;
        // A request of an earlier run never carries over (see `end`).
        self.cancel_requested = false;
        self.paused = false;
        self.runs += 1;
        self.started_at = Some(record.timestamp);
        self.finished_at = None;
    }

    /// An agent call's answer: a step completes, or a loop's iteration ends
    /// with its `until` due.
    fn agent_executed(&mut self, record: &Record) -> Result<(), Rejected> {
        let Event::AgentExecuted {
            step,
            iteration,
            agent,
            output,
            attempts,
            duration_ms,
        } = &record.event
        else {
            unreachable!("called for agent.executed")
        };
        let i = self.ready_step(step)?;
        if self.definition[i].agent.as_ref() != Some(agent) {
            return Err(wrong(step, "another agent runs it"));
        }
        if *iteration != self.steps[i].iteration + 1 {
            return Err(wrong(step, "not its next iteration"));
        }
        let looped = self.definition[i].repeat.is_some();
        let s = &mut self.steps[i];
        s.iteration = *iteration;
        s.attempts = *attempts;
        s.duration_ms = *duration_ms;
        s.output = Some(output.clone());
        if looped {
            s.iterations.push(output.clone());
            s.until_pending = true;
            s.finished_at = Some(record.timestamp);
        } else {
            self.finish(i, StepStatus::Completed, record);
        }
        Ok(())
    }

    /// A step fails: its call failed, its wait timed out, or the run's
    /// deadline passed while it was due (its `when` or `until` not yet
    /// evaluated).
    fn step_failed(&mut self, record: &Record) -> Result<(), Rejected> {
        let Event::StepFailed {
            step,
            iteration,
            error,
            attempts,
            duration_ms,
            ..
        } = &record.event
        else {
            unreachable!("called for step.failed")
        };
        let i = self
            .index(step)
            .ok_or_else(|| wrong(step, "no such step"))?;
        let s = &self.steps[i];
        let due = s.status == StepStatus::Waiting
            || (s.status == StepStatus::Pending
                && (s.until_pending || self.parents_done(i) == Some(true)));
        if !due {
            return Err(wrong(step, "it cannot start yet"));
        }
        if *iteration != self.steps[i].iteration + 1 {
            return Err(wrong(step, "not its next iteration"));
        }
        self.steps[i].attempts = *attempts;
        self.steps[i].duration_ms = *duration_ms;
        // A loop whose `until` was due when the deadline passed
        // still has it due: a resume evaluates it first.
        let until_due = self.steps[i].until_pending;
        self.fail(i, error.clone(), record);
        self.steps[i].until_pending = until_due;
        Ok(())
    }

    /// A step's `when`: it may run, is skipped, or fails on an error.
    fn when_evaluated(&mut self, record: &Record) -> Result<(), Rejected> {
        let Event::ConditionEvaluated {
            step,
            result,
            error,
            expression,
            ..
        } = &record.event
        else {
            unreachable!("called for condition.evaluated")
        };
        let i = self.step_in(step, StepStatus::Pending)?;
        if self.definition[i].when.is_none()
            || self.steps[i].condition.is_some()
            || !self.is_ready(i)
        {
            return Err(wrong(step, "its `when` is not due"));
        }
        match error {
            Some(e) => self.fail(i, condition_error(expression, e), record),
            None if *result => self.steps[i].condition = Some(true),
            None => {
                self.steps[i].condition = Some(false);
                self.steps[i].skip_reason = Some(SkipReason::Condition);
                self.finish(i, StepStatus::Skipped, record);
            }
        }
        Ok(())
    }

    /// A loop's `until` after an iteration: it completes, runs again, or
    /// fails (an error, or its iterations exhausted).
    fn until_evaluated(&mut self, record: &Record) -> Result<(), Rejected> {
        let Event::ConditionEvaluated {
            step,
            iteration,
            result,
            error,
            expression,
            ..
        } = &record.event
        else {
            unreachable!("called for condition.evaluated")
        };
        let i = self.step_in(step, StepStatus::Pending)?;
        let Some(repeat) = self.definition[i].repeat.clone() else {
            return Err(wrong(step, "it does not repeat"));
        };
        let s = &self.steps[i];
        if !s.until_pending || *iteration != s.iteration {
            return Err(wrong(step, "its `until` is not due"));
        }
        let exhausted = s.iteration - s.loop_base >= repeat.max_iterations;
        self.steps[i].until_pending = false;
        match error {
            Some(e) => self.fail(i, condition_error(expression, e), record),
            None if *result => self.finish(i, StepStatus::Completed, record),
            None if exhausted && repeat.on_exhausted == OnExhausted::Continue => {
                self.finish(i, StepStatus::Completed, record);
            }
            None if exhausted => {
                let error = StepError {
                    kind: StepErrorKind::MaxIterations,
                    message: format!(
                        "`{}` did not hold after {} iterations",
                        repeat.until, repeat.max_iterations
                    ),
                    http_status: None,
                };
                self.fail(i, error, record);
            }
            // Another iteration.
            None => {}
        }
        Ok(())
    }

    /// Applies a record that takes a place in the chain (see
    /// [`Event::is_chained`]), by its event.
    fn apply_chained(&mut self, record: &Record) -> Result<(), Rejected> {
        let active = self.status.is_active();
        match &record.event {
            Event::Started if self.status.can_start() => self.restart(record),
            Event::AgentExecuted { .. } if active => self.agent_executed(record)?,
            Event::StepFailed { .. } if active => self.step_failed(record)?,
            Event::ConditionEvaluated {
                condition: ConditionKind::When,
                ..
            } if active => self.when_evaluated(record)?,
            Event::ConditionEvaluated {
                condition: ConditionKind::Until,
                ..
            } if active => self.until_evaluated(record)?,
            Event::StepWaiting { step, until, .. } if active => {
                let i = self.ready_step(step)?;
                if matches!(self.definition[i].kind(), StepKind::Agent(_)) {
                    return Err(wrong(step, "an agent step does not wait"));
                }
                self.steps[i].status = StepStatus::Waiting;
                self.steps[i].wait_until = *until;
            }
            Event::WaitCompleted { step, output, .. } if active => {
                let i = self.step_in(step, StepStatus::Waiting)?;
                let s = &mut self.steps[i];
                s.output = Some(output.clone());
                s.iteration = 1;
                self.finish(i, StepStatus::Completed, record);
            }
            Event::Completed if active && self.steps.iter().all(|s| s.status.is_resolved()) => {
                self.end(WorkflowStatus::Completed, record);
            }
            Event::Failed { step, .. } if active => {
                if self.failed_step().map(|i| &self.steps[i].id) != Some(step) {
                    return Err(wrong(step, "it is not the failed step"));
                }
                self.end(WorkflowStatus::Failed, record);
            }
            // Pending and failed workflows have no actor: the API cancels them
            // directly. A running one only by its actor, once asked.
            Event::Cancelled
                if matches!(
                    self.status,
                    WorkflowStatus::Pending | WorkflowStatus::Failed
                ) || (active && self.cancel_requested) =>
            {
                self.end(WorkflowStatus::Cancelled, record);
            }
            event => {
                return Err(Rejected::IllegalTransition {
                    status: Some(self.status),
                    event: event.event_type(),
                });
            }
        }
        Ok(())
    }

    /// Applies a command that flags the state without taking a place in the
    /// chain (see [`Event::is_chained`]). Applying one twice changes
    /// nothing.
    fn apply_command(&mut self, record: &Record) -> Result<(), Rejected> {
        let illegal = || Rejected::IllegalTransition {
            status: Some(self.status),
            event: record.event_type(),
        };
        if !self.status.is_active() {
            return Err(illegal());
        }
        if record.event != Event::CancelRequested && self.commands.contains(&record.event_id) {
            return Err(Rejected::Duplicate);
        }
        match &record.event {
            Event::CancelRequested => self.cancel_requested = true,
            // Pausing a paused run (or resuming a running one) changes
            // nothing but is taken, so that the same record delivered again
            // later (after a resume) is known and refused.
            Event::Paused => self.paused = true,
            Event::Resumed => self.paused = false,
            Event::SignalReceived {
                signal,
                payload,
                key,
            } => {
                if key.as_ref().is_some_and(|k| self.signal_keys.contains(k)) {
                    return Err(Rejected::Duplicate);
                }
                let waiting: Vec<usize> = (0..self.steps.len())
                    .filter(|i| {
                        self.steps[*i].status == StepStatus::Waiting
                            && self.steps[*i].inbox.is_none()
                            && matches!(self.definition[*i].kind(), StepKind::Wait(w) if &w.signal == signal)
                    })
                    .collect();
                if waiting.is_empty() {
                    return Err(illegal());
                }
                for i in waiting {
                    self.steps[i].inbox = Some(Inbox {
                        payload: payload.clone(),
                    });
                }
                if let Some(k) = key {
                    self.signal_keys.push(k.clone());
                }
            }
            _ => return Err(illegal()),
        }
        if record.event != Event::CancelRequested {
            self.commands.push(record.event_id);
        }
        Ok(())
    }

    /// The signals the workflow waits for now (each once).
    pub fn awaited_signals(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            if s.status == StepStatus::Waiting
                && s.inbox.is_none()
                && let StepKind::Wait(w) = self.definition[i].kind()
                && !out.contains(&w.signal.as_str())
            {
                out.push(&w.signal);
            }
        }
        out
    }
}

fn condition_error(expression: &str, e: &str) -> StepError {
    StepError {
        kind: StepErrorKind::ConditionError,
        message: format!("`{expression}` has no boolean value: {e}"),
        http_status: None,
    }
}

/// Applies `record` to `state` (`None` before the workflow exists). On
/// `Err`, `state` is left exactly as it was.
pub fn apply(state: &mut Option<WorkflowState>, record: &Record) -> Result<(), Rejected> {
    let Some(st) = state.as_mut() else {
        return create(state, record);
    };
    if st.workflow_id != record.workflow_id {
        // Checked before anything else about the record is trusted.
        return Err(Rejected::OtherWorkflow);
    }
    if !record.event.is_chained() {
        st.apply_command(record)?;
        st.settle();
        return Ok(());
    }
    if record.seq != st.seq + 1 {
        return Err(Rejected::OutOfSequence {
            expected: st.seq + 1,
            got: record.seq,
        });
    }
    if record.prev_event_id != Some(st.last_event_id) {
        return Err(Rejected::WrongParent {
            expected: st.last_event_id,
            got: record.prev_event_id,
        });
    }
    // Each rule checks everything before it changes anything.
    st.apply_chained(record)?;
    st.seq = record.seq;
    st.last_event_id = record.event_id;
    st.settle();
    Ok(())
}

fn create(state: &mut Option<WorkflowState>, record: &Record) -> Result<(), Rejected> {
    let Event::Created {
        name,
        steps,
        input,
        timeout_ms,
        max_concurrency,
    } = &record.event
    else {
        return Err(Rejected::IllegalTransition {
            status: None,
            event: record.event_type(),
        });
    };
    if record.seq != 1 {
        return Err(Rejected::OutOfSequence {
            expected: 1,
            got: record.seq,
        });
    }
    *state = Some(WorkflowState {
        workflow_id: record.workflow_id,
        user_id: record.user_id,
        name: name.clone(),
        steps: steps.iter().map(StepState::new).collect(),
        definition: steps.clone(),
        input: input.clone(),
        status: WorkflowStatus::Pending,
        seq: record.seq,
        last_event_id: record.event_id,
        runs: 0,
        timeout_ms: *timeout_ms,
        max_concurrency: *max_concurrency,
        cancel_requested: false,
        paused: false,
        commands: vec![],
        signal_keys: vec![],
        created_at: record.timestamp,
        started_at: None,
        finished_at: None,
    });
    Ok(())
}
