//! The path every handler that changes a workflow takes (DESIGN §5):
//! parse, load what the caller may see, call core, append, wait for the
//! projection, answer. Each handler says only what differs.

use agentflow_core::{Command, CommandRejected, Record, WorkflowId, WorkflowState, command};
use agentflow_store::{Projected, WorkflowHead};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::lookup;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// The path's workflow id: 400 `invalid_id` when it is not one.
pub(super) fn parse_id(id: &str) -> Result<WorkflowId, ApiError> {
    WorkflowId::parse(id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

/// The workflow, if it exists and the caller may see it; 404 otherwise, so
/// another user's workflow is indistinguishable from a missing one (503
/// while the projection is too far behind to tell: see `lookup`).
pub(super) async fn load_visible(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Projected, ApiError> {
    let id = parse_id(id)?;
    lookup::find(s, caller, id, || async {
        Ok(s.store
            .get_projected(id)
            .await?
            .map(|p| (p.state.user_id, p)))
    })
    .await
}

/// [`load_visible`], reading only the workflow's head.
pub(super) async fn head_visible(
    s: &AppState,
    caller: &Caller,
    id: WorkflowId,
) -> Result<WorkflowHead, ApiError> {
    lookup::find(s, caller, id, || async {
        Ok(s.store.workflow_head(id).await?.map(|h| (h.user_id, h)))
    })
    .await
}

/// The workflow, if the caller may change it: 409 when records of it were
/// quarantined (its projected state is behind its log).
pub(super) async fn changeable(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<WorkflowState, ApiError> {
    let p = load_visible(s, caller, id).await?;
    if p.quarantined {
        return Err(ApiError::quarantined());
    }
    Ok(p.state)
}

/// Core refused the command: not legal in the workflow's state now.
pub(super) fn refused(e: CommandRejected) -> ApiError {
    ApiError::conflict(e.to_string())
}

/// What [`apply`] did: the state it judged the command on, and whether the
/// projection showed its record in time (`None`: nothing to append, the
/// command was in effect already).
pub(super) struct Applied {
    pub state: WorkflowState,
    pub seen: Option<bool>,
}

/// Loads the workflow the caller may change, lets core make the record
/// `cmd` asks for (409 when it is not legal now), appends it and waits for
/// the projection to show it.
pub(super) async fn apply(
    s: &AppState,
    caller: &Caller,
    id: &str,
    cmd: Command,
) -> Result<Applied, ApiError> {
    let state = changeable(s, caller, id).await?;
    let seen = match command(&state, cmd, Utc::now()).map_err(refused)? {
        Some(record) => Some(append(s, caller, record).await?),
        None => None,
    };
    Ok(Applied { state, seen })
}

/// Appends a record of the caller's request (noting who asked, through
/// which node) and waits, up to `projection_wait`, until the projection
/// shows it; says whether it did (if not, it is in the log all the same).
pub(super) async fn append(
    s: &AppState,
    caller: &Caller,
    record: Record,
) -> Result<bool, ApiError> {
    let record = record
        .with_metadata("requested_by", caller.user.0)
        .with_metadata("node_id", s.node_id.clone());
    let pos = s.producer.append(&record, s.append_timeout).await?;
    let seen = s
        .progress
        .wait_past(
            &s.store,
            &s.topic,
            pos.partition,
            pos.offset,
            s.projection_wait,
        )
        .await;
    if !seen {
        tracing::warn!(workflow_id = %record.workflow_id, partition = pos.partition, offset = pos.offset,
            "projection did not catch up in time; answering anyway (the log has the record)");
    }
    Ok(seen)
}

/// Another change reached the log first and left the workflow `now`.
pub(super) fn changed_meanwhile(now: &str) -> ApiError {
    ApiError::conflict(format!("workflow changed meanwhile and is now {now}"))
}

/// The 202 a command answers: the workflow, its status, and what happened.
pub(super) fn accepted(workflow_id: WorkflowId, status: &str, message: &str) -> Response {
    let body = json!({"workflow_id": workflow_id, "status": status, "message": message});
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}
