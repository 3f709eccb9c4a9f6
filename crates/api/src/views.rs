//! The JSON shapes the API answers with.

use agentflow_core::{StepStatus, WorkflowState, WorkflowStatus};
use agentflow_store::WorkflowSummary;
use serde_json::{Value, json};

pub fn workflow(st: &WorkflowState) -> Value {
    let running_step = (st.status == WorkflowStatus::Running)
        .then(|| st.next_step())
        .flatten();
    let tasks: Vec<Value> = st
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let step = i as u32 + 1;
            let status = match s.status {
                StepStatus::Pending if Some(step) == running_step => "running",
                StepStatus::Pending => "pending",
                StepStatus::Completed => "completed",
                StepStatus::Failed => "failed",
                StepStatus::Skipped => "skipped",
            };
            let mut t = json!({
                "step": step,
                "agent": s.agent,
                "status": status,
                "attempts": s.attempts,
                "duration_ms": s.duration_ms,
            });
            if let Some(e) = &s.error {
                t["error"] = json!(e);
            }
            t
        })
        .collect();
    let error = st
        .failed_step()
        .and_then(|f| st.step(f).map(|s| (f, s)))
        .map(|(f, s)| json!({"step": f, "agent": s.agent, "error": s.error}));
    json!({
        "workflow_id": st.workflow_id,
        "name": st.name,
        "status": st.status.as_str(),
        "user_id": st.user_id,
        "task_count": st.tasks.len(),
        "tasks": tasks,
        "results": st.results(),
        "error": error,
        "runs": st.runs,
        "timeout_ms": st.timeout_ms,
        "cancel_requested": st.cancel_requested,
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
