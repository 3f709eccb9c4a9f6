//! How far the projection has come in each partition, for read-your-writes:
//! the API appends a record, then waits until the projection has passed its
//! offset before answering, so the client's next read sees it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agentflow_core::WorkflowId;
use tokio::sync::{broadcast, watch};

use crate::Store;

/// Shared by the in-process projector (which pushes) and the API (which
/// waits). When the partition is projected by another process, the waiter
/// polls Postgres instead.
#[derive(Clone)]
pub struct Progress {
    tx: Arc<watch::Sender<HashMap<i32, i64>>>,
    changes: broadcast::Sender<WorkflowId>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(HashMap::new()).0),
            changes: broadcast::channel(4096).0,
        }
    }
}

/// Waits for one workflow's projection to change (see
/// [`Progress::watch_workflow`]).
pub struct WorkflowWatch {
    id: WorkflowId,
    rx: broadcast::Receiver<WorkflowId>,
}

impl WorkflowWatch {
    /// Returns when the workflow's projection may have changed, or after
    /// `at_most` (the projector may be another process that tells us
    /// nothing: then this is a poll).
    pub async fn changed(&mut self, at_most: Duration) {
        let wait = async {
            loop {
                match self.rx.recv().await {
                    Ok(id) if id == self.id => return,
                    Ok(_) => {}
                    // Missed some: it may have been ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(at_most, wait).await;
    }
}

impl Progress {
    /// Records that these workflows' projections changed.
    pub fn workflows_changed(&self, ids: &[WorkflowId]) {
        for id in ids {
            // No receiver is fine: nobody is waiting.
            let _ = self.changes.send(*id);
        }
    }

    /// Starts watching a workflow: take it *before* reading the workflow so
    /// that no change falls between the read and the wait.
    pub fn watch_workflow(&self, id: WorkflowId) -> WorkflowWatch {
        WorkflowWatch {
            id,
            rx: self.changes.subscribe(),
        }
    }

    /// Records that partitions are projected up to (excluding) these offsets.
    pub fn advance(&self, next_offsets: &[(i32, i64)]) {
        self.tx.send_if_modified(|m| {
            let mut changed = false;
            for (p, o) in next_offsets {
                let e = m.entry(*p).or_insert(0);
                if *o > *e {
                    *e = *o;
                    changed = true;
                }
            }
            changed
        });
    }

    fn passed(&self, partition: i32, offset: i64) -> bool {
        self.tx
            .borrow()
            .get(&partition)
            .is_some_and(|n| *n > offset)
    }

    /// Waits until the record at `offset` in `partition` is projected.
    /// Returns `false` if `timeout` ran out first.
    pub async fn wait_past(
        &self,
        store: &Store,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.tx.subscribe();
        let mut poll_every = Duration::from_millis(20);
        loop {
            if self.passed(partition, offset) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let tick = (now + poll_every).min(deadline);
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return false; } }
                _ = tokio::time::sleep_until(tick) => {
                    if let Ok(offsets) = store.projector_offsets(topic).await {
                        self.advance(&offsets);
                    }
                    poll_every = (poll_every * 2).min(Duration::from_millis(200));
                }
            }
        }
    }
}
