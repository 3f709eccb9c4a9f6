//! The guide's workflow endpoints (§4).

use std::collections::HashMap;
use std::time::Duration;

use agentflow_core::{
    AuditEntry, Command, DefinitionError, Event, Record, WorkflowDefinition, WorkflowId,
    WorkflowState, WorkflowStatus, command,
};
use agentflow_store::{Cursor, ListFilter, Projected, WorkflowHead};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::handle::{
    accepted, append, apply, changed_meanwhile, head_visible, load_visible, parse_id, refused,
};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{
    CommonErrors, CreateHeaders, CreateWorkflow, ErrorBody, GetQuery, ListQuery, WorkflowAccepted,
    WorkflowCreated,
};
use crate::views::{AuditTrail, ProjectionNote, WorkflowList, WorkflowSummary, WorkflowView};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
const DEFAULT_WAIT_MS: u64 = 30_000;
const MAX_WAIT_MS: u64 = 60_000;

/// Creates a workflow. With an `Idempotency-Key` header the workflow's id is
/// derived from the caller and the key, so retrying a create (after a 503 or
/// a lost answer) gives the same workflow, never a second one.
#[utoipa::path(post, path = "/workflows/create", tag = "workflows", security(("bearer" = [])),
    request_body = CreateWorkflow,
    params(CreateHeaders),
    responses(
        (status = 201, description = "Created (pending), or the one this Idempotency-Key created before", body = WorkflowCreated),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
        (status = 415, description = "A Content-Type other than JSON", body = ErrorBody),
        (status = 422, description = "Invalid workflow definition (`invalid_character`: U+0000 in the name or an input, the field named), or an Idempotency-Key reused with another one", body = ErrorBody),
        CommonErrors
    ))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    json_content_type(&headers)?;
    let value = json_body(body)?;
    let def = WorkflowDefinition::parse(&value).map_err(|e| {
        let field = e.field();
        match e {
            DefinitionError::NulCharacter(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_character",
                e.to_string(),
            ),
            e => ApiError::invalid(e.to_string()),
        }
        .at(field)
    })?;
    let key = idempotency_key(&headers)?;
    let id = key.map_or_else(WorkflowId::new, |k| WorkflowId::for_request(caller.user, k));
    let task_count = def.steps.len();
    let name = def.name.clone();
    let created = |status| {
        let body =
            json!({"workflow_id": id, "name": name, "status": status, "task_count": task_count});
        (StatusCode::CREATED, axum::Json(body)).into_response()
    };
    if key.is_some()
        && let Some(existing) = s.store.get_workflow(id).await?
    {
        // A retry: answer as the first time, if it is the same request.
        same_definition(&existing, &def)?;
        return Ok(created(existing.status.as_str()));
    }
    let record = Record::new(
        id,
        caller.user,
        1,
        Utc::now(),
        Event::Created {
            name: def.name.clone(),
            steps: def.steps.clone(),
            input: def.input.clone(),
            timeout_ms: def.timeout_ms,
            max_concurrency: def.max_concurrency,
        },
    );
    append(&s, &caller, record).await?;
    if key.is_some()
        && let Some(existing) = s.store.get_workflow(id).await?
    {
        // Two creates with one key raced: the first in the log won.
        same_definition(&existing, &def)?;
    }
    Ok(created("pending"))
}

/// The request's body as JSON: 413 over `max_body_bytes`, 400 when it is
/// not JSON.
pub(super) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body is too large",
            )
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("body is not valid JSON: {e}"))
    })
}

/// A body that says it is not JSON is refused (415) rather than guessed at.
/// No Content-Type at all is read as JSON, as before.
pub(super) fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = v
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some(m)
            if m == "application/json"
                || (m.starts_with("application/") && m.ends_with("+json")) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        )),
    }
}

/// JSON equality where numbers are compared by value: the stored definition
/// comes back from Postgres `jsonb`, which keeps a number's value but not
/// its spelling (`3.372039349979969e+16` returns as `33720393499799690`), so
/// a retry must not be told it sent another definition (found by
/// schemathesis).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_i128(), y.as_i128()) {
                    (Some(i), Some(j)) => i == j,
                    _ => x.as_f64() == y.as_f64(),
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| same_json(a, b)))
        }
        _ => a == b,
    }
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })
}

fn same_definition(existing: &WorkflowState, def: &WorkflowDefinition) -> Result<(), ApiError> {
    let steps = |v: &[agentflow_core::StepDef]| serde_json::to_value(v).unwrap_or_default();
    let same = existing.name == def.name
        && same_json(&steps(&existing.definition), &steps(&def.steps))
        && same_json(&existing.input, &def.input)
        && existing.timeout_ms == def.timeout_ms
        && existing.max_concurrency == def.max_concurrency;
    if same {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used with another workflow definition",
    ))
}

#[utoipa::path(post, path = "/workflows/{id}/execute", tag = "workflows", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Workflow id")),
    responses(
        (status = 202, description = "Started, or resumed from the failed step", body = WorkflowAccepted),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "Not pending or failed, or records of it were quarantined (`projection_quarantined`)", body = ErrorBody),
        CommonErrors
    ))]
pub async fn execute(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let wid = parse_id(&id)?;
    let head = head_visible(&s, &caller, wid).await?;
    if head.quarantined {
        return Err(ApiError::quarantined());
    }
    // A pending workflow starts: its head is all we need. Any other is
    // read whole (a failed one resumes at its failed step).
    let (retried, head) = if head.status == WorkflowStatus::Pending {
        (vec![], head)
    } else {
        let st = load_visible(&s, &caller, &id).await?.state;
        let failed: Vec<String> = command::resumed_steps(&st)
            .iter()
            .map(|s| s.to_string())
            .collect();
        (failed, WorkflowHead::of(&st))
    };
    let start = command::Head {
        workflow_id: wid,
        user_id: head.user_id,
        status: head.status,
        seq: head.seq,
        last_event_id: head.last_event_id,
    };
    let record = command::start(start, Utc::now()).map_err(refused)?;
    let seq = record.seq;
    // Start is a status change, so the in-process projector pushes the state
    // it commits: watched from before the append, it answers the check below
    // without reading the workflow back.
    let watch = s.progress.watch_workflow(wid);
    append(&s, &caller, record).await?;
    // The log decides: if another change took this seq first, ours was
    // ignored by the fold. Report what the projection now says.
    let now = match watch.pushed().filter(|st| st.seq >= seq) {
        Some(st) => Some(WorkflowHead::of(&st)),
        None => s.store.workflow_head(wid).await?,
    };
    if let Some(now) = now
        && now.seq >= seq
        && now.runs <= head.runs
    {
        return Err(changed_meanwhile(now.status.as_str()));
    }
    let message = if retried.is_empty() {
        "Workflow execution started".to_owned()
    } else {
        format!("Workflow execution resumed from {}", retried.join(", "))
    };
    Ok(accepted(wid, "running", &message))
}

/// Cancels a workflow. Pending and failed ones stop at once; a running one
/// after its step in flight (its actor appends `workflow.cancelled`), so the
/// answer says `cancelling` and a GET shows `cancel_requested` until then.
#[utoipa::path(post, path = "/workflows/{id}/cancel", tag = "workflows", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Workflow id")),
    responses(
        (status = 202, description = "Cancelled, or cancelling after the step in flight", body = WorkflowAccepted),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "Already completed or cancelled, or records of it were quarantined (`projection_quarantined`)", body = ErrorBody),
        CommonErrors
    ))]
pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let applied = apply(&s, &caller, &id, Command::Cancel).await?;
    let now = match applied.seen {
        // Asked already: the state loaded says how it stands.
        None => applied.state,
        // The log has the cancel, but whether the fold took it (the
        // workflow may have ended just before) shows only once the
        // projection passes it. Asking again is safe.
        Some(false) => return Err(ApiError::outcome_unknown()),
        // The log decides: the projection has passed the record, so it
        // shows whether the cancel took.
        Some(true) => s
            .store
            .get_workflow(applied.state.workflow_id)
            .await?
            .ok_or_else(ApiError::not_found)?,
    };
    let (status, message) = match now.status {
        WorkflowStatus::Cancelled => ("cancelled", "Workflow cancelled"),
        status if status.is_active() && now.cancel_requested => (
            "cancelling",
            "Cancellation requested; the workflow stops after its step in flight",
        ),
        other => return Err(changed_meanwhile(other.as_str())),
    };
    Ok(accepted(now.workflow_id, status, message))
}

/// The workflow. With `?wait=finished` it answers as soon as the workflow is
/// completed, failed or cancelled, or when `timeout_ms` runs out (then with
/// its state at that moment): a client needs no polling loop.
#[utoipa::path(get, path = "/workflows/{id}", tag = "workflows", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Workflow id"), GetQuery),
    responses(
        (status = 200, description = "The workflow (with `projection` when records of it were quarantined)", body = WorkflowView),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "Its creation was quarantined: the log has it, the projection cannot hold it (`projection_quarantined`)", body = ErrorBody),
        CommonErrors
    ))]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // `timeout_ms` is checked even without `wait` (where it means nothing):
    // a request the document calls invalid is refused, not ignored.
    let timeout_ms = q
        .get("timeout_ms")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|ms| (1..=MAX_WAIT_MS).contains(ms))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_timeout",
                        format!("timeout_ms must be an integer from 1 to {MAX_WAIT_MS}"),
                    )
                })
        })
        .transpose()?;
    let wait = match q.get("wait").map(String::as_str) {
        None => None,
        Some("finished") => Some(timeout_ms.unwrap_or(DEFAULT_WAIT_MS)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_wait",
                "wait must be `finished`",
            ));
        }
    };
    let Some(wait_ms) = wait else {
        let p = load_visible(&s, &caller, &id).await?;
        return Ok(axum::Json(view(&s, &p).await?).into_response());
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let wid = parse_id(&id)?;
    // Watched from before the first read, so no push is missed.
    let watch = s.progress.watch_workflow(wid);
    // It exists (or the answer is a 404 or 503 now, see `lookup`).
    let head = head_visible(&s, &caller, wid).await?;
    if head.quarantined {
        // Its row no longer changes: waiting would only run out the clock.
        let p = load_visible(&s, &caller, &id).await?;
        return Ok(axum::Json(view(&s, &p).await?).into_response());
    }
    // Waits on the head (five columns), starting from the one just read;
    // the state comes with the push that ends the wait, or is read once at
    // the end.
    let mut first = Some(head);
    let (store, who) = (&s.store, &caller);
    let pushed = watch
        .wait_for(
            deadline,
            // A projector in another process wakes nobody here: poll.
            Duration::from_millis(250),
            || {
                let first = first.take();
                async move {
                    if let Some(h) = first {
                        return Ok(h);
                    }
                    match store.workflow_head(wid).await? {
                        Some(h) if who.may_see(h.user_id) => Ok(h),
                        _ => Err(ApiError::not_found()),
                    }
                }
            },
            |status| {
                matches!(
                    status,
                    WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Cancelled
                )
            },
        )
        .await?;
    let p = match pushed {
        Some(state) => Projected {
            state,
            quarantined: false,
        },
        None => load_visible(&s, &caller, &id).await?,
    };
    Ok(axum::Json(view(&s, &p).await?).into_response())
}

/// The workflow's view; when records of it were quarantined, with a
/// `projection` note saying its state stops before them.
async fn view(s: &AppState, p: &Projected) -> Result<WorkflowView, ApiError> {
    let mut v = WorkflowView::of(&p.state, s.max_concurrent_steps);
    if p.quarantined {
        let kept = s
            .store
            .quarantined_of(&s.topic, p.state.workflow_id)
            .await?;
        v.projection = Some(ProjectionNote::of(&kept));
    }
    Ok(v)
}

#[utoipa::path(get, path = "/workflows/{id}/events", tag = "workflows", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The audit trail", body = AuditTrail),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "Its creation was quarantined (`projection_quarantined`)", body = ErrorBody),
        CommonErrors
    ))]
pub async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let st = load_visible(&s, &caller, &id).await?.state;
    let mut events: Vec<(i64, AuditEntry)> = s
        .store
        .workflow_events(&s.topic, st.workflow_id)
        .await?
        .iter()
        .map(|(offset, r, applied)| (*offset, AuditEntry::new(r, *applied)))
        .collect();
    // Records the projection could not hold are in the trail too, marked.
    for q in s.store.quarantined_of(&s.topic, st.workflow_id).await? {
        if let Some(r) = q
            .record
            .as_deref()
            .and_then(|j| Record::from_bytes(j.as_bytes()).ok())
        {
            events.push((q.offset, AuditEntry::new(&r, false).quarantined(q.reason)));
        }
    }
    events.sort_by_key(|(offset, _)| *offset);
    let events: Vec<AuditEntry> = events.into_iter().map(|(_, e)| e).collect();
    Ok(axum::Json(AuditTrail {
        count: events.len(),
        events,
        workflow_id: st.workflow_id.as_uuid(),
    })
    .into_response())
}

#[utoipa::path(get, path = "/workflows/list", tag = "workflows", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The caller's workflows (every user's for admins), newest first", body = WorkflowList),
        CommonErrors
    ))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let status = q
        .get("status")
        .map(|v| {
            WorkflowStatus::parse(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_status",
                    "status must be one of pending, running, waiting, paused, completed, failed, cancelled",
                )
            })
        })
        .transpose()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let after = q
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| {
            Cursor::decode(c).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this API gave out")
            })
        })
        .transpose()?;
    let name = q
        .get("name")
        .filter(|n| !n.is_empty())
        .map(|n| {
            if n.chars().count() > 255 || n.contains('\0') {
                Err(ApiError::bad_request(
                    "invalid_name",
                    "name must be at most 255 characters, without U+0000",
                ))
            } else {
                Ok(n.clone())
            }
        })
        .transpose()?;
    let filter = ListFilter {
        user: (!caller.admin).then_some(caller.user),
        status,
        name,
        // One more than asked tells whether there is a next page.
        limit: limit + 1,
        after,
    };
    let mut rows = s.store.list_workflows(&filter).await?;
    let next_cursor = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.cursor().encode())
    });
    let workflows: Vec<WorkflowSummary> = rows.iter().map(WorkflowSummary::from).collect();
    Ok(axum::Json(WorkflowList {
        count: workflows.len(),
        next_cursor: next_cursor.flatten(),
        workflows,
    })
    .into_response())
}
