//! Between `WorkflowState` (the fold's type) and its rows.

use agentflow_core::{
    StepDef, StepState, StepStatus, TaskDef, UserId, WorkflowId, WorkflowState, WorkflowStatus,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use crate::StoreError;

#[derive(sqlx::FromRow)]
pub(crate) struct WorkflowRow {
    pub id: Uuid,
    pub name: String,
    pub tasks: Value,
    pub status: String,
    /// JSON text (see the migration `quarantine_and_json_text`).
    pub results: String,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub seq: i64,
    pub last_event_id: Uuid,
    pub runs: i32,
    pub timeout_ms: Option<i64>,
    pub cancel_requested: bool,
    /// The fold's whole state, JSON text (`None` in rows written before
    /// graphs: they are read from their columns).
    pub state: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    pub workflow_id: Uuid,
    pub step: i32,
    pub status: String,
    pub attempts: i32,
    pub duration_ms: i64,
    /// JSON text.
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub(crate) const WORKFLOW_COLUMNS: &str = "id, name, tasks, status, results, user_id, created_at, started_at, finished_at, seq, last_event_id, runs, timeout_ms, cancel_requested, state";

pub(crate) fn step_status_str(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Waiting => "waiting",
        StepStatus::Completed => "completed",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

fn parse_step_status(s: &str) -> Result<StepStatus, StoreError> {
    Ok(match s {
        "pending" => StepStatus::Pending,
        "waiting" => StepStatus::Waiting,
        "completed" => StepStatus::Completed,
        "failed" => StepStatus::Failed,
        "skipped" => StepStatus::Skipped,
        other => return Err(StoreError::Corrupt(format!("step status {other}"))),
    })
}

pub(crate) fn state_from_rows(
    row: WorkflowRow,
    steps: Vec<StepRow>,
) -> Result<WorkflowState, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("workflow {}: {what}", row.id));
    if let Some(text) = &row.state {
        let mut st: WorkflowState =
            serde_json::from_str(text).map_err(|e| corrupt(&e.to_string()))?;
        // The columns are what the list and the head queries read: they are
        // the truth for what they hold (a difference from the fold is then
        // one `replay --verify` names).
        st.status = WorkflowStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
        st.name = row.name;
        st.user_id = UserId(row.user_id);
        st.seq = row.seq.max(0) as u64;
        st.last_event_id = row.last_event_id;
        st.runs = row.runs.max(0) as u32;
        st.cancel_requested = row.cancel_requested;
        st.timeout_ms = row.timeout_ms.map(|ms| ms.max(0) as u64);
        st.created_at = row.created_at;
        st.started_at = row.started_at;
        st.finished_at = row.finished_at;
        return Ok(st);
    }
    // A row written before graphs: a chain of `tasks`.
    let tasks: Vec<TaskDef> =
        serde_json::from_value(row.tasks.clone()).map_err(|e| corrupt(&e.to_string()))?;
    let status = WorkflowStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
    let mut outputs: Vec<Option<Value>> = vec![None; tasks.len()];
    let results: Value = serde_json::from_str(&row.results).map_err(|e| corrupt(&e.to_string()))?;
    if let Value::Array(results) = results {
        for r in results {
            let step = r.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
            if let (Some(slot), Some(out)) =
                (outputs.get_mut(step.wrapping_sub(1)), r.get("output"))
            {
                *slot = Some(out.clone());
            }
        }
    }
    if steps.len() != tasks.len()
        || steps
            .iter()
            .enumerate()
            .any(|(i, s)| s.step != i as i32 + 1)
    {
        return Err(corrupt("step rows do not match tasks"));
    }
    let definition: Vec<StepDef> = tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| StepDef::of_task(i + 1, t))
        .collect();
    let steps = steps
        .into_iter()
        .zip(outputs)
        .zip(&definition)
        .map(|((s, output), def)| {
            let mut st = StepState::new(def);
            st.status = parse_step_status(&s.status)?;
            if st.status == StepStatus::Skipped {
                st.skip_reason = Some(agentflow_core::SkipReason::Ended);
            }
            st.iteration = u32::from(output.is_some());
            st.output = output;
            st.error = s
                .error
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(&e.to_string()))?;
            st.attempts = s.attempts.max(0) as u32;
            st.duration_ms = s.duration_ms.max(0) as u64;
            st.finished_at = s.finished_at;
            Ok(st)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(WorkflowState {
        workflow_id: WorkflowId::from(row.id),
        user_id: UserId(row.user_id),
        name: row.name,
        definition,
        input: Value::Object(Default::default()),
        steps,
        status,
        seq: row.seq.max(0) as u64,
        last_event_id: row.last_event_id,
        runs: row.runs.max(0) as u32,
        timeout_ms: row.timeout_ms.map(|ms| ms.max(0) as u64),
        cancel_requested: row.cancel_requested,
        max_concurrency: None,
        paused: false,
        commands: vec![],
        signal_keys: vec![],
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
    })
}

/// The states of `ids` that exist, read inside `tx`.
pub(crate) async fn load_states(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<WorkflowId, Option<WorkflowState>>, StoreError> {
    let rows: Vec<WorkflowRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::classify)?;
    let mut out = HashMap::with_capacity(ids.len());
    // Rows with their state need nothing more; older ones their steps.
    let mut legacy = Vec::new();
    for row in rows {
        if row.state.is_some() {
            let st = state_from_rows(row, vec![])?;
            out.insert(st.workflow_id, Some(st));
        } else {
            legacy.push(row);
        }
    }
    if legacy.is_empty() {
        return Ok(out);
    }
    let rows = legacy;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT workflow_id, step, status, attempts, duration_ms, error, finished_at
         FROM workflow_steps WHERE workflow_id = ANY($1) ORDER BY workflow_id, step",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::classify)?;
    let mut steps_by: HashMap<Uuid, Vec<StepRow>> = HashMap::new();
    for s in steps {
        steps_by.entry(s.workflow_id).or_default().push(s);
    }
    for row in rows {
        let id = row.id;
        let st = state_from_rows(row, steps_by.remove(&id).unwrap_or_default())?;
        out.insert(st.workflow_id, Some(st));
    }
    Ok(out)
}
