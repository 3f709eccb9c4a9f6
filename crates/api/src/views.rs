//! The JSON shapes the API answers with.

use agentflow_core::{StepStatus, WorkflowState, WorkflowStatus};
use agentflow_store::WorkflowSummary;
use serde_json::{Value, json};

/// A step's status as shown: `running` is a step whose agent call the
/// engine has in flight or starts now, by the engine's own rule
/// ([`agentflow_core::running_steps`], under the workflow's
/// `max_concurrency`), or a loop between two iterations.
pub fn step_status(st: &WorkflowState, i: usize) -> &'static str {
    let s = &st.steps[i];
    let runs_now = st.status == WorkflowStatus::Running
        && s.status == StepStatus::Pending
        && (s.until_pending || agentflow_core::running_steps(st, None).contains(&i));
    if runs_now {
        "running"
    } else {
        s.status.as_str()
    }
}

pub fn workflow(st: &WorkflowState) -> Value {
    let tasks: Vec<Value> = st
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let def = &st.definition[i];
            let mut t = json!({
                "step": i + 1,
                "id": s.id,
                "after": def.after,
                "kind": def.kind().as_str(),
                "agent": s.agent,
                "status": step_status(st, i),
                "attempts": s.attempts,
                "duration_ms": s.duration_ms,
                "iteration": s.iteration,
            });
            // What its (last) call was sent: rendered again from the state,
            // which is exact (see `WorkflowState::call_input`).
            let last = s.iteration.max(1);
            let next = if s.status == StepStatus::Pending {
                s.iteration + 1
            } else {
                last
            };
            if let Some(input) = st.call_input(i, next) {
                t["input"] = input;
            }
            if let Some(o) = &s.output {
                t["output"] = o.clone();
            }
            if def.repeat.is_some() {
                t["iterations"] = json!(s.iterations);
            }
            if let Some(e) = &s.error {
                t["error"] = json!(e);
            }
            if let Some(r) = s.skip_reason {
                t["skip_reason"] = json!(r);
            }
            if let Some(c) = s.condition {
                t["condition"] = c.into();
            }
            if let Some(w) = &def.wait {
                t["signal"] = w.signal.clone().into();
            }
            if let Some(u) = s.wait_until {
                t["wait_until"] = json!(u);
            }
            if let Some(f) = s.finished_at {
                t["finished_at"] = json!(f);
            }
            t
        })
        .collect();
    let error = st.failed_step().map(|i| {
        let s = &st.steps[i];
        json!({"step": i + 1, "id": s.id, "agent": s.agent, "error": s.error})
    });
    json!({
        "workflow_id": st.workflow_id,
        "name": st.name,
        "status": st.status.as_str(),
        "user_id": st.user_id,
        "task_count": st.steps.len(),
        "tasks": tasks,
        "input": st.input,
        "results": st.results(),
        "error": error,
        "runs": st.runs,
        "timeout_ms": st.timeout_ms,
        "max_concurrency": st.max_concurrency,
        "cancel_requested": st.cancel_requested,
        "paused": st.paused,
        "waiting_for": st.awaited_signals(),
        "created_at": st.created_at,
        "started_at": st.started_at,
        "finished_at": st.finished_at,
    })
}

/// The `projection` note of a workflow with quarantined records.
pub fn quarantined(kept: &[agentflow_store::QuarantinedRecord]) -> Value {
    let records: Vec<Value> = kept
        .iter()
        .map(|q| {
            json!({
                "partition": q.partition,
                "offset": q.offset,
                "event_type": q.event_type,
                "seq": q.seq,
                "reason": q.reason,
            })
        })
        .collect();
    json!({
        "complete": false,
        "message": "records of this workflow could not be stored in the projection and were \
                    quarantined: this state stops before the first of them",
        "quarantined": records,
    })
}

pub fn summary(w: &WorkflowSummary) -> Value {
    json!({
        "workflow_id": w.id,
        "name": w.name,
        "status": w.status,
        "user_id": w.user_id,
        "task_count": w.task_count,
        "created_at": w.created_at,
        "started_at": w.started_at,
        "finished_at": w.finished_at,
    })
}
