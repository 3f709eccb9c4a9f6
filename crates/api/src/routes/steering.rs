//! Steering a run: pause, resume, and signals for steps that wait for a
//! person (or another system).
//!
//! Each is a command record (`workflow.paused`, `workflow.resumed`,
//! `signal.received`): it does not take a place in the workflow's chain,
//! so it never races the engine's actor, which hears it as a message and
//! acts (starts no new step; starts them again; completes the waiting
//! step with the signal's body).

use agentflow_core::definition::{contains_nul, valid_signal_name};
use agentflow_core::{Command, command};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::handle::{accepted, apply};
use super::workflows::{idempotency_key, json_body, json_content_type};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{CommonErrors, ErrorBody, SignalAccepted, SignalHeaders, WorkflowAccepted};

/// Pauses a run: no new step starts; agent calls in flight finish and their
/// results are kept. Pausing a paused workflow changes nothing.
#[utoipa::path(post, path = "/workflows/{id}/pause", tag = "workflows", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Workflow id")),
    responses(
        (status = 202, description = "Paused (or already paused)", body = WorkflowAccepted),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "Not running or waiting (pending, finished, failed), or records of it were quarantined", body = ErrorBody),
        CommonErrors
    ))]
pub async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let st = apply(&s, &caller, &id, Command::Pause).await?.state;
    Ok(accepted(
        st.workflow_id,
        "paused",
        "Workflow paused: no new step starts; calls in flight finish",
    ))
}

/// Resumes a paused run. Resuming a workflow that is not paused (but
/// running or waiting) changes nothing.
#[utoipa::path(post, path = "/workflows/{id}/resume", tag = "workflows", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Workflow id")),
    responses(
        (status = 202, description = "Resumed (or was not paused)", body = WorkflowAccepted),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "Not running, waiting or paused (a failed one is resumed by `execute`), or records of it were quarantined", body = ErrorBody),
        CommonErrors
    ))]
pub async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let st = apply(&s, &caller, &id, Command::Resume).await?.state;
    Ok(accepted(st.workflow_id, "running", "Workflow resumed"))
}

/// Sends signal `name` to the workflow: each step waiting for it completes
/// with the request's JSON body as its output (an empty body is `null`).
/// With an `Idempotency-Key` a retried request is answered as the first
/// one and delivers nothing twice.
#[utoipa::path(post, path = "/workflows/{id}/signals/{name}", tag = "workflows", security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Workflow id"),
        ("name" = String, Path, description = "The signal a wait step names (`wait.signal`)", pattern = "^[a-z0-9_.-]{1,64}$"),
        SignalHeaders
    ),
    request_body(content = crate::openapi::SignalBody, description = "Any JSON (no NUL): the waiting step's output; an empty body is `null`", content_type = "application/json"),
    responses(
        (status = 202, description = "Delivered to the steps waiting for it (or delivered before, with this Idempotency-Key)", body = SignalAccepted),
        (status = 400, description = "A malformed signal name, body or Idempotency-Key", body = ErrorBody),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "No step waits for this signal now, or records of it were quarantined", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
        (status = 415, description = "A Content-Type other than JSON", body = ErrorBody),
        (status = 422, description = "The body holds U+0000 (`invalid_character`)", body = ErrorBody),
        CommonErrors
    ))]
pub async fn signal(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    json_content_type(&headers)?;
    if !valid_signal_name(&name) {
        return Err(ApiError::bad_request(
            "invalid_signal",
            "a signal's name is 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`",
        ));
    }
    // An empty body is `null`.
    let body = body.map(|b| {
        if b.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"null")
        } else {
            b
        }
    });
    let payload = json_body(body)?;
    if contains_nul(&payload) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_character",
            "the body must not contain the NUL character (U+0000)",
        ));
    }
    let key = idempotency_key(&headers)?.map(str::to_owned);
    let cmd = Command::Signal {
        name: name.clone(),
        payload,
        key,
    };
    let st = apply(&s, &caller, &id, cmd).await?.state;
    let steps = command::receivers(&st, &name);
    let body = json!({"workflow_id": st.workflow_id, "signal": name, "status": "accepted", "steps": steps});
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}
