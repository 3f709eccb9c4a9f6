//! How far the projection has come in each partition, for read-your-writes:
//! the API appends a record, then waits until the projection has passed its
//! offset before answering, so the client's next read sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentflow_core::WorkflowId;
use tokio::sync::{Notify, watch};

use crate::Store;

/// Shared by the in-process projector (which pushes) and the API (which
/// waits). When the partition is projected by another process, the waiter
/// polls Postgres instead.
#[derive(Clone)]
pub struct Progress {
    tx: Arc<watch::Sender<HashMap<i32, i64>>>,
    /// One `Notify` per workflow someone is waiting on: a change of its
    /// status wakes only that workflow's waiters.
    waiters: Arc<Mutex<HashMap<WorkflowId, Arc<Notify>>>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(HashMap::new()).0),
            waiters: Default::default(),
        }
    }
}

/// Interest in one workflow's status (see [`Progress::watch_workflow`]).
/// Dropping it ends the interest.
pub struct WorkflowWatch {
    id: WorkflowId,
    notify: Arc<Notify>,
    waiters: Arc<Mutex<HashMap<WorkflowId, Arc<Notify>>>>,
}

impl WorkflowWatch {
    /// Runs `read`, and if `done` says so returns its result; otherwise
    /// waits until the workflow's status changes (or `at_most` passes:
    /// the projector may be another process that tells us nothing, then this
    /// is a poll) and reads again, until `deadline`.
    pub async fn read_until<T, E, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        at_most: Duration,
        mut read: F,
        done: impl Fn(&T) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        loop {
            // Registered before the read, so a change during it is not lost.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let value = read().await?;
            let now = tokio::time::Instant::now();
            if done(&value) || now >= deadline {
                return Ok(value);
            }
            let _ = tokio::time::timeout((deadline - now).min(at_most), notified).await;
        }
    }
}

impl Drop for WorkflowWatch {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().expect("not poisoned");
        // The map's and ours: nobody else waits on it.
        if Arc::strong_count(&self.notify) <= 2 {
            waiters.remove(&self.id);
        }
    }
}

impl Progress {
    /// Records that these workflows' statuses changed, waking whoever waits
    /// on them.
    pub fn statuses_changed(&self, ids: &[WorkflowId]) {
        let waiters = self.waiters.lock().expect("not poisoned");
        if waiters.is_empty() {
            return;
        }
        for id in ids {
            if let Some(n) = waiters.get(id) {
                n.notify_waiters();
            }
        }
    }

    /// Starts watching one workflow's status.
    pub fn watch_workflow(&self, id: WorkflowId) -> WorkflowWatch {
        let notify = self
            .waiters
            .lock()
            .expect("not poisoned")
            .entry(id)
            .or_default()
            .clone();
        WorkflowWatch {
            id,
            notify,
            waiters: self.waiters.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_on_its_workflow_and_only_on_it() {
        let p = Progress::default();
        let (mine, other) = (WorkflowId::new(), WorkflowId::new());
        let watch = p.watch_workflow(mine);
        let reads = std::sync::atomic::AtomicU32::new(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let p2 = p.clone();
        let changer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            p2.statuses_changed(&[other]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            p2.statuses_changed(&[mine]);
        });
        let began = tokio::time::Instant::now();
        let n: Result<u32, ()> = watch
            .read_until(
                deadline,
                Duration::from_secs(5),
                || async { Ok(reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) },
                |n| *n >= 2,
            )
            .await;
        changer.await.unwrap();
        assert_eq!(n, Ok(2), "read once, woken once (by its own change)");
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(90) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(watch);
        assert!(
            p.waiters.lock().unwrap().is_empty(),
            "interest ends with the watch"
        );
    }
}
