//! Live updates as Server-Sent Events: a workflow's records as they are
//! projected (`GET /workflows/{id}/stream`), and the changes of the caller's
//! list (`GET /workflows/stream`).
//!
//! Both streams are pulled, never pushed: the next page is read from the
//! projection only when the client has taken the previous one, so a slow
//! client costs the server one page, never a growing buffer (it simply
//! falls behind, and a client that wants only the present reconnects
//! without `Last-Event-ID` and starts from a snapshot). They wake when the
//! in-process projector commits, and poll when another process projects.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use agentflow_core::{AuditEntry, UserId, WorkflowId, WorkflowStatus};
use agentflow_store::Projected;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::handle::load_visible;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{CommonErrors, ErrorBody, StreamHeaders};
use crate::views::{WorkflowSummary, WorkflowView};

/// Records read (and held) per page of a workflow's stream.
const PAGE: u32 = 32;
/// Rows read per look at the list.
const LIST_PAGE: u32 = 200;
/// How often a stream looks when nothing wakes it (a projector in another
/// process tells this one nothing).
const POLL: Duration = Duration::from_millis(500);
/// The list looks at most this often, however busy the projector is.
const LIST_MIN_GAP: Duration = Duration::from_millis(250);
/// A row's `updated_at` is the projecting process's clock at its commit:
/// the list looks this far back to catch a commit that landed late (and
/// sends nothing twice for the same `seq`).
const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The workflow's records as they are projected, as Server-Sent Events.
///
/// Each record is an event with `id:` its offset in the workflow's log
/// partition, `event:` its `event_type` and `data:` its audit entry (as in
/// `/events`). After each batch comes `event: state` with the workflow's
/// view (as `GET /workflows/{id}`, no `id:`), so a client can redraw
/// without a second request. The stream starts with every record (or, with
/// `Last-Event-ID`, those after it) and ends, after `event: end`, once the
/// workflow is completed, failed or cancelled. Comments keep it alive.
/// Records the projection quarantined are not in it (see `/events`).
#[utoipa::path(get, path = "/workflows/{id}/stream", tag = "workflows", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Workflow id"), StreamHeaders),
    responses(
        (status = 200, description = "Server-Sent Events: one per record (`id:` its position, `event:` its event_type, `data:` its audit entry), `event: state` with the workflow's view after each batch, `event: end` when it is finished", content_type = "text/event-stream", body = crate::openapi::SseEvent),
        (status = 404, description = "No such workflow, or another user's", body = ErrorBody),
        (status = 409, description = "Its creation was quarantined (`projection_quarantined`)", body = ErrorBody),
        CommonErrors
    ))]
pub async fn workflow(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = last_event_id(&headers)?;
    let first = load_visible(&s, &caller, &id).await?;
    let wid = first.state.workflow_id;
    let partition = s.store.workflow_partition(wid).await?;
    let tail = Tail {
        wake: Wake::new(s.progress.offsets(), partition),
        s,
        wid,
        after: after.unwrap_or(-1),
        out: VecDeque::new(),
        first: Some(first),
        shown: None,
        done: false,
    };
    Ok(sse(futures::stream::unfold(tail, Tail::next)))
}

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies must pass events on as they come.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `Last-Event-ID`: the id of the last record the client has (an offset).
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(str::trim)
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|n| *n >= -1)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID must be the id of an event of this stream (an integer)",
            )
        })
}

/// Waits for the projection to move: the in-process projector's offsets
/// (of one partition, if known), or a poll.
struct Wake {
    offsets: watch::Receiver<HashMap<i32, i64>>,
    partition: Option<i32>,
    seen: i64,
}

impl Wake {
    fn new(offsets: watch::Receiver<HashMap<i32, i64>>, partition: Option<i32>) -> Self {
        let mut w = Self {
            offsets,
            partition,
            seen: 0,
        };
        w.seen = w.now();
        w
    }

    fn now(&mut self) -> i64 {
        let m = self.offsets.borrow_and_update();
        self.partition
            .map_or(0, |p| m.get(&p).copied().unwrap_or(0))
    }

    async fn wait(&mut self, at_most: Duration) {
        let deadline = tokio::time::Instant::now() + at_most;
        loop {
            tokio::select! {
                r = self.offsets.changed() => {
                    if r.is_err() {
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                    let now = self.now();
                    if self.partition.is_none() || now > self.seen {
                        self.seen = now;
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// One client's place in a workflow's records.
struct Tail {
    s: AppState,
    wid: WorkflowId,
    wake: Wake,
    /// The offset of the last record sent.
    after: i64,
    /// Events read and not yet taken by the client (at most a page).
    out: VecDeque<Event>,
    /// The state read when the stream opened (sent first).
    first: Option<Projected>,
    /// `(runs, seq)` of the last state sent.
    shown: Option<(u32, u64)>,
    done: bool,
}

impl Tail {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Some((Ok(e), self));
            }
            if self.done {
                return None;
            }
            let (state, full) = match self.read().await {
                Ok(r) => r,
                Err(e) => {
                    // The client reconnects with Last-Event-ID and loses
                    // nothing.
                    tracing::warn!(workflow_id = %self.wid, error = %e.message, "stream read failed; closing it");
                    self.done = true;
                    self.out.push_back(error_event(&e));
                    continue;
                }
            };
            if full {
                // More records wait: no snapshot between pages.
                continue;
            }
            let st = state;
            let key = (st.state.runs, st.state.seq);
            if self.shown != Some(key) {
                self.shown = Some(key);
                self.out
                    .push_back(
                        Event::default()
                            .event("state")
                            .data(json_text(&WorkflowView::of(
                                &st.state,
                                self.s.max_concurrent_steps,
                            ))),
                    );
            }
            if matches!(
                st.state.status,
                WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Cancelled
            ) {
                self.done = true;
                self.out.push_back(
                    Event::default()
                        .event("end")
                        .data(json!({"status": st.state.status.as_str()}).to_string()),
                );
                continue;
            }
            if self.out.is_empty() {
                self.wake.wait(POLL).await;
            }
        }
    }

    /// Reads the state, then the records after the last one sent (so the
    /// records include everything the state reflects): queues the records
    /// and returns the state, and whether the page was full.
    async fn read(&mut self) -> Result<(Projected, bool), ApiError> {
        let state = match self.first.take() {
            Some(p) => p,
            None => match self.s.store.get_projected(self.wid).await? {
                Some(p) => p,
                None => return Err(ApiError::not_found()),
            },
        };
        let page = self
            .s
            .store
            .workflow_events_after(&self.s.topic, self.wid, self.after, PAGE)
            .await?;
        let full = page.len() == PAGE as usize;
        for (offset, record, applied) in &page {
            let entry = AuditEntry::new(record, *applied);
            self.out.push_back(
                Event::default()
                    .id(offset.to_string())
                    .event(entry.event_type)
                    .data(json_text(&entry)),
            );
            self.after = *offset;
        }
        Ok((state, full))
    }
}

/// An event's `data`: a view as JSON text.
fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("a view serialises")
}

fn error_event(e: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(json!({"error": {"code": e.code, "message": e.message}}).to_string())
}

/// The caller's workflows as they change, as Server-Sent Events: first
/// `event: counts` (`{"counts": {status: n}}`, over every workflow the
/// caller may see); then, whenever the projection writes some of them,
/// `event: workflow` with each one's summary (as in `/workflows/list`, plus
/// `seq`, so a client keeps the newest) and `event: counts` again. When
/// more changed at once than one look reads, `event: resync` tells the
/// client to reload its page. No `Last-Event-ID`: a client that reconnects
/// reloads its list. Comments keep it alive; it never ends on its own.
#[utoipa::path(get, path = "/workflows/stream", tag = "workflows", security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: `counts`, then `workflow` (a changed workflow's summary) and `counts` as they change, `resync` when too many changed at once", content_type = "text/event-stream", body = crate::openapi::SseEvent),
        CommonErrors
    ))]
pub async fn list(State(s): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let user = (!caller.admin).then_some(caller.user);
    // The first look happens here, so an unavailable database is a 503.
    let counts = counts(&s, user).await?;
    let watch = ListWatch {
        wake: Wake::new(s.progress.offsets(), None),
        s,
        user,
        since: Utc::now(),
        sent: HashMap::new(),
        counts: None,
        out: VecDeque::new(),
        pending_counts: Some(counts),
        done: false,
    };
    Ok(sse(futures::stream::unfold(watch, ListWatch::next)))
}

async fn counts(s: &AppState, user: Option<UserId>) -> Result<Value, ApiError> {
    let rows = s.store.counts_by_status(user).await?;
    let mut counts = serde_json::Map::new();
    for st in WorkflowStatus::ALL {
        counts.insert(st.as_str().to_owned(), json!(0));
    }
    for (status, n) in rows {
        counts.insert(status, json!(n));
    }
    Ok(json!({"counts": counts}))
}

struct ListWatch {
    s: AppState,
    user: Option<UserId>,
    wake: Wake,
    /// Changes after this (minus `OVERLAP`) are looked at.
    since: DateTime<Utc>,
    /// Workflow → the seq last sent, for changes within the overlap.
    sent: HashMap<uuid::Uuid, (i64, DateTime<Utc>)>,
    counts: Option<Value>,
    pending_counts: Option<Value>,
    out: VecDeque<Event>,
    done: bool,
}

impl ListWatch {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(c) = self.pending_counts.take()
                && self.counts.as_ref() != Some(&c)
            {
                self.out
                    .push_back(Event::default().event("counts").data(c.to_string()));
                self.counts = Some(c);
            }
            if let Some(e) = self.out.pop_front() {
                return Some((Ok(e), self));
            }
            if self.done {
                return None;
            }
            let began = tokio::time::Instant::now();
            if let Err(e) = self.look().await {
                tracing::warn!(error = %e.message, "list stream read failed; closing it");
                self.out.push_back(error_event(&e));
                self.done = true;
                continue;
            }
            if self.out.is_empty() && self.pending_counts.is_none() {
                tokio::time::sleep_until(began + LIST_MIN_GAP).await;
                self.wake.wait(POLL).await;
            }
        }
    }

    async fn look(&mut self) -> Result<(), ApiError> {
        let rows = self
            .s
            .store
            .changed_since(self.user, self.since - OVERLAP, LIST_PAGE)
            .await?;
        if rows.len() == LIST_PAGE as usize {
            // Too many at once to send one by one: the client reloads.
            self.out
                .push_back(Event::default().event("resync").data("{}"));
            self.since = rows.last().map_or(self.since, |r| r.updated_at);
            self.sent.clear();
        } else {
            for r in &rows {
                let id = r.summary.id;
                if self.sent.get(&id).is_some_and(|(seq, _)| *seq >= r.seq) {
                    continue;
                }
                self.sent.insert(id, (r.seq, r.updated_at));
                let summary = WorkflowSummary {
                    seq: Some(r.seq),
                    ..WorkflowSummary::from(&r.summary)
                };
                self.out
                    .push_back(Event::default().event("workflow").data(json_text(&summary)));
                if r.updated_at > self.since {
                    self.since = r.updated_at;
                }
            }
        }
        // What is older than the overlap is never looked at again.
        let horizon = self.since - OVERLAP;
        self.sent.retain(|_, (_, at)| *at > horizon);
        if !rows.is_empty() || self.counts.is_none() {
            self.pending_counts = Some(counts(&self.s, self.user).await?);
        }
        Ok(())
    }
}
