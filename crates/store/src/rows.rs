//! Between `WorkflowState` (the fold's type) and its rows.

use agentflow_core::{
    Inbox, SkipReason, StepDef, StepState, StepStatus, TaskDef, UserId, WorkflowId, WorkflowState,
    WorkflowStatus,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use std::collections::HashMap;

use sqlx::PgConnection;

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
    /// The fold's whole state, JSON text, in rows written before the state
    /// was kept in rows (`None` in rows written before graphs: they are
    /// read from their columns).
    pub state: Option<String>,
    /// The state is in rows: these columns, the step rows and
    /// `step_outputs` (see the migration `state_in_rows`).
    pub in_rows: bool,
    /// `[StepDef]`, JSON text (rows in rows only).
    pub definition: Option<String>,
    /// JSON text (rows in rows only).
    pub input: Option<String>,
    pub max_concurrency: Option<i32>,
    pub paused: bool,
    /// `[uuid]`, JSON text.
    pub commands: String,
    /// `[string]`, JSON text.
    pub signal_keys: String,
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
    pub iteration: i32,
    pub loop_base: i32,
    pub until_pending: bool,
    pub condition: Option<bool>,
    pub skip_reason: Option<String>,
    pub wait_until: Option<DateTime<Utc>>,
    /// The signal payload, JSON text.
    pub inbox: Option<String>,
}

pub(crate) const WORKFLOW_COLUMNS: &str = "id, name, tasks, status, results, user_id, created_at, started_at, finished_at, seq, last_event_id, runs, timeout_ms, cancel_requested, state, in_rows, definition, input, max_concurrency, paused, commands, signal_keys";

const STEP_COLUMNS: &str = "workflow_id, step, status, attempts, duration_ms, error, finished_at, iteration, loop_base, until_pending, condition, skip_reason, wait_until, inbox";

/// One output of a step (one iteration's, for a loop), as read back.
pub(crate) struct OutputRow {
    pub step: i32,
    /// JSON text.
    pub output: String,
}

/// A step status or skip reason as its column holds it: the name core
/// spells it by (`as_str`).
fn parse_column<T>(what: &str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(s).ok_or_else(|| StoreError::Corrupt(format!("{what} {s}")))
}

/// Whether `steps` holds one row per step of `n`, in order.
fn one_per_step(steps: &[StepRow], n: usize) -> bool {
    steps.len() == n
        && steps
            .iter()
            .enumerate()
            .all(|(i, s)| s.step == i as i32 + 1)
}

/// What every version of a step row holds: its status, error, attempts,
/// duration and end.
fn step_state(
    s: &StepRow,
    def: &StepDef,
    corrupt: &dyn Fn(&str) -> StoreError,
) -> Result<StepState, StoreError> {
    let mut st = StepState::new(def);
    st.status = parse_column("step status", &s.status, StepStatus::parse)?;
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
}

pub(crate) fn state_from_rows(
    row: WorkflowRow,
    steps: Vec<StepRow>,
    outputs: Vec<OutputRow>,
) -> Result<WorkflowState, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("workflow {}: {what}", row.id));
    if row.in_rows {
        return state_in_rows(row, steps, outputs);
    }
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
    if !one_per_step(&steps, tasks.len()) {
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
            let mut st = step_state(&s, def, &corrupt)?;
            if st.status == StepStatus::Skipped {
                st.skip_reason = Some(agentflow_core::SkipReason::Ended);
            }
            st.iteration = u32::from(output.is_some());
            st.output = output;
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

/// A state kept in rows: the workflow's, its steps' (one per step, in
/// order) and its outputs (in step and iteration order).
fn state_in_rows(
    row: WorkflowRow,
    steps: Vec<StepRow>,
    outputs: Vec<OutputRow>,
) -> Result<WorkflowState, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("workflow {}: {what}", row.id));
    let json = |text: &str| -> Result<Value, StoreError> {
        serde_json::from_str(text).map_err(|e| corrupt(&e.to_string()))
    };
    let definition: Vec<StepDef> = serde_json::from_str(row.definition.as_deref().unwrap_or(""))
        .map_err(|e| corrupt(&format!("definition: {e}")))?;
    if !one_per_step(&steps, definition.len()) {
        return Err(corrupt("step rows do not match the definition"));
    }
    let mut outputs_of: Vec<Vec<Value>> = vec![Vec::new(); definition.len()];
    for o in outputs {
        let slot = usize::try_from(o.step - 1)
            .ok()
            .and_then(|i| outputs_of.get_mut(i))
            .ok_or_else(|| corrupt("an output of no step"))?;
        slot.push(json(&o.output)?);
    }
    let steps = steps
        .into_iter()
        .zip(outputs_of)
        .zip(&definition)
        .map(|((s, mut outs), def)| {
            let mut st = step_state(&s, def, &corrupt)?;
            // A loop keeps every iteration's output, its last as `output`;
            // another step has at most one.
            st.output = outs.last().cloned();
            if def.repeat.is_some() {
                st.iterations = std::mem::take(&mut outs);
            }
            st.iteration = s.iteration.max(0) as u32;
            st.loop_base = s.loop_base.max(0) as u32;
            st.until_pending = s.until_pending;
            st.condition = s.condition;
            st.skip_reason = s
                .skip_reason
                .as_deref()
                .map(|r| parse_column("skip reason", r, SkipReason::parse))
                .transpose()?;
            st.wait_until = s.wait_until;
            st.inbox = s
                .inbox
                .as_deref()
                .map(|p| json(p).map(|payload| Inbox { payload }))
                .transpose()?;
            Ok(st)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(WorkflowState {
        workflow_id: WorkflowId::from(row.id),
        user_id: UserId(row.user_id),
        name: row.name,
        definition,
        input: json(row.input.as_deref().unwrap_or("{}"))?,
        steps,
        status: WorkflowStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
        seq: row.seq.max(0) as u64,
        last_event_id: row.last_event_id,
        runs: row.runs.max(0) as u32,
        timeout_ms: row.timeout_ms.map(|ms| ms.max(0) as u64),
        max_concurrency: row.max_concurrency.map(|n| n.max(0) as u32),
        cancel_requested: row.cancel_requested,
        paused: row.paused,
        commands: serde_json::from_str(&row.commands).map_err(|e| corrupt(&e.to_string()))?,
        signal_keys: serde_json::from_str(&row.signal_keys).map_err(|e| corrupt(&e.to_string()))?,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
    })
}

/// The states of `rows` (read by the caller), with their step rows and
/// outputs read on `conn`; each with whether it is kept in rows.
pub(crate) async fn states_of(
    conn: &mut PgConnection,
    rows: Vec<WorkflowRow>,
) -> Result<Vec<(WorkflowState, bool)>, StoreError> {
    // Rows with their whole state in a blob need nothing more.
    let ids: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.in_rows || r.state.is_none())
        .map(|r| r.id)
        .collect();
    let in_rows: Vec<Uuid> = rows.iter().filter(|r| r.in_rows).map(|r| r.id).collect();
    let mut steps_by: HashMap<Uuid, Vec<StepRow>> = HashMap::new();
    if !ids.is_empty() {
        let steps: Vec<StepRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {STEP_COLUMNS} FROM workflow_steps
             WHERE workflow_id = ANY($1) ORDER BY workflow_id, step"
        )))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
        for s in steps {
            steps_by.entry(s.workflow_id).or_default().push(s);
        }
    }
    let mut outputs_by: HashMap<Uuid, Vec<OutputRow>> = HashMap::new();
    if !in_rows.is_empty() {
        let outputs: Vec<(Uuid, i32, String)> = sqlx::query_as(
            "SELECT s.workflow_id, s.step, COALESCE(s.output, o.body)
             FROM step_outputs s LEFT JOIN outputs o ON o.sha256 = s.output_sha256
             WHERE s.workflow_id = ANY($1) ORDER BY s.workflow_id, s.step, s.iteration",
        )
        .bind(&in_rows)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
        for (workflow_id, step, output) in outputs {
            outputs_by
                .entry(workflow_id)
                .or_default()
                .push(OutputRow { step, output });
        }
    }
    rows.into_iter()
        .map(|row| {
            let id = row.id;
            let kept_in_rows = row.in_rows;
            let st = state_from_rows(
                row,
                steps_by.remove(&id).unwrap_or_default(),
                outputs_by.remove(&id).unwrap_or_default(),
            )?;
            Ok((st, kept_in_rows))
        })
        .collect()
}

/// The states of `ids` that exist, read on `conn` (in a transaction, for
/// one snapshot), each with whether it is kept in rows.
pub(crate) async fn load_states_in_rows(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(WorkflowState, bool)>, StoreError> {
    let rows: Vec<WorkflowRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    states_of(conn, rows).await
}

/// The states of `ids` that exist, read on `conn`.
pub(crate) async fn load_states(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<WorkflowId, Option<WorkflowState>>, StoreError> {
    Ok(load_states_in_rows(conn, ids)
        .await?
        .into_iter()
        .map(|(st, _)| (st.workflow_id, Some(st)))
        .collect())
}
