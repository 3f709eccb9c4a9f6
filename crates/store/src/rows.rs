//! Between `WorkflowState` (the fold's type) and its rows.

use agentflow_core::{
    AgentName, StepState, StepStatus, TaskDef, UserId, WorkflowId, WorkflowState, WorkflowStatus,
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
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    pub workflow_id: Uuid,
    pub step: i32,
    pub agent: String,
    pub status: String,
    pub attempts: i32,
    pub duration_ms: i64,
    /// JSON text.
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub(crate) const WORKFLOW_COLUMNS: &str = "id, name, tasks, status, results, user_id, created_at, started_at, finished_at, seq, last_event_id, runs, timeout_ms, cancel_requested";

pub(crate) fn step_status_str(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Completed => "completed",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

fn parse_step_status(s: &str) -> Result<StepStatus, StoreError> {
    Ok(match s {
        "pending" => StepStatus::Pending,
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
    let steps = steps
        .into_iter()
        .zip(outputs)
        .map(|(s, output)| {
            Ok(StepState {
                agent: AgentName::parse(&s.agent).map_err(|e| corrupt(&e.to_string()))?,
                status: parse_step_status(&s.status)?,
                output,
                error: s
                    .error
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|e| corrupt(&e.to_string()))?,
                attempts: s.attempts.max(0) as u32,
                duration_ms: s.duration_ms.max(0) as u64,
                finished_at: s.finished_at,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(WorkflowState {
        workflow_id: WorkflowId::from(row.id),
        user_id: UserId(row.user_id),
        name: row.name,
        tasks,
        steps,
        status,
        seq: row.seq.max(0) as u64,
        last_event_id: row.last_event_id,
        runs: row.runs.max(0) as u32,
        timeout_ms: row.timeout_ms.map(|ms| ms.max(0) as u64),
        cancel_requested: row.cancel_requested,
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
    if rows.is_empty() {
        // New workflows: no steps to look for.
        return Ok(HashMap::new());
    }
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT workflow_id, step, agent, status, attempts, duration_ms, error, finished_at
         FROM workflow_steps WHERE workflow_id = ANY($1) ORDER BY workflow_id, step",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::classify)?;
    let mut steps_by: HashMap<Uuid, Vec<StepRow>> = HashMap::new();
    for s in steps {
        steps_by.entry(s.workflow_id).or_default().push(s);
    }
    let mut out = HashMap::with_capacity(ids.len());
    for row in rows {
        let id = row.id;
        let st = state_from_rows(row, steps_by.remove(&id).unwrap_or_default())?;
        out.insert(st.workflow_id, Some(st));
    }
    Ok(out)
}
