//! Finding a workflow in the projection without ever denying one the log
//! has. A create answers 201 once the broker has the record, even when the
//! projection is slow to show it (bounded wait), so "not in Postgres" is not
//! "no such workflow". A 404 is given only once the projection has reached
//! the log's end as it was when the request came (every record appended
//! before it, including the create the client was answered for); until then
//! the lookup waits, bounded by `projection_wait`, and then answers 503 with
//! `Retry-After`.

use std::future::Future;

use agentflow_core::{UserId, WorkflowId};
use tokio::time::Instant;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Reads a workflow with `read` (its owner and the part wanted) and returns
/// it if the caller may see it; see the module's documentation for when it
/// is not in the projection.
pub async fn find<T, F, Fut>(
    s: &AppState,
    caller: &Caller,
    id: WorkflowId,
    mut read: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<(UserId, T)>, ApiError>>,
{
    let asked = Instant::now();
    let visible = |(owner, t): (UserId, T)| {
        if caller.may_see(owner) {
            Ok(t)
        } else {
            Err(ApiError::not_found())
        }
    };
    if let Some(found) = read().await? {
        return visible(found);
    }
    let deadline = asked + s.projection_wait;
    let ends = s.log_end.since(asked).await.map_err(|why| {
        tracing::warn!(workflow_id = %id, %why, "cannot read the log's end");
        ApiError::unavailable("the event log")
    })?;
    for (partition, end) in ends.iter().enumerate() {
        if *end == 0 {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let reached = s
            .progress
            .wait_past(&s.store, &s.topic, partition as i32, end - 1, left)
            .await;
        if !reached {
            // It may be in the part not projected yet.
            if let Some(found) = read().await? {
                return visible(found);
            }
            tracing::warn!(workflow_id = %id, partition, log_end = end,
                "projection behind the log: cannot tell whether the workflow exists");
            return Err(ApiError::projection_behind());
        }
    }
    // The projection has everything appended before the request: read
    // again (the row commits with the offsets).
    if let Some(found) = read().await? {
        return visible(found);
    }
    // In the log, but only as records the projection could not hold.
    let kept = s.store.quarantined_of(&s.topic, id).await?;
    if kept
        .iter()
        .any(|q| q.user_id.is_some_and(|u| caller.may_see(UserId(u))))
    {
        return Err(ApiError::quarantined());
    }
    Err(ApiError::not_found())
}
