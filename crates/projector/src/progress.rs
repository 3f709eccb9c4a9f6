//! How far the projection has come in each partition, for read-your-writes:
//! the API appends a record, then waits until the projection has passed its
//! offset before answering, so the client's next read sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentflow_core::{WorkflowId, WorkflowState, WorkflowStatus};
use tokio::sync::{Notify, watch};

use agentflow_store::{ProjectionReader, WorkflowHead};

/// Shared by the in-process projector (which pushes) and the API (which
/// waits). When the partition is projected by another process, the waiter
/// polls Postgres instead.
#[derive(Clone)]
pub struct Progress {
    tx: Arc<watch::Sender<HashMap<i32, i64>>>,
    /// One slot per workflow someone is waiting on: a change of its status
    /// is put there and wakes only that workflow's waiters.
    waiters: Arc<Mutex<HashMap<WorkflowId, Arc<Slot>>>>,
}

#[derive(Default)]
struct Slot {
    notify: Notify,
    /// The state the projector last committed with a new status.
    latest: Mutex<Option<Arc<WorkflowState>>>,
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
    slot: Arc<Slot>,
    waiters: Arc<Mutex<HashMap<WorkflowId, Arc<Slot>>>>,
}

impl WorkflowWatch {
    /// Waits until `done` holds for the workflow's status, or `deadline`.
    /// Only the workflow's head is read (`read`): at the start and, while
    /// nothing is pushed, every `at_most` (the projector may be another
    /// process that tells us nothing: then this is a poll). Returns the state
    /// the projector pushed when a push ended the wait, so it is not read
    /// back; `None` when a read did (`done`, or the deadline passed): the
    /// caller then reads the state itself.
    pub async fn wait_for<E, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        at_most: Duration,
        mut read: F,
        done: impl Fn(WorkflowStatus) -> bool,
    ) -> Result<Option<WorkflowState>, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<WorkflowHead, E>>,
    {
        let mut current: Option<(u32, u64)> = None;
        loop {
            // Registered before the read, so a change during it is not lost.
            let notified = self.slot.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pushed = current.and_then(|c| self.newer_than(c));
            let now = tokio::time::Instant::now();
            match pushed {
                Some(st) => {
                    if done(st.status) || now >= deadline {
                        return Ok(Some(st));
                    }
                    current = Some((st.runs, st.seq));
                }
                None => {
                    let head = read().await?;
                    if done(head.status) || tokio::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    current = Some((head.runs, head.seq));
                }
            }
            let now = tokio::time::Instant::now();
            let _ = tokio::time::timeout(
                deadline.saturating_duration_since(now).min(at_most),
                notified,
            )
            .await;
        }
    }

    /// The state the in-process projector last pushed for this workflow (on
    /// a status change), if any: possibly from before this watch began, so
    /// check its `seq`. Nothing when another process projects it.
    pub fn pushed(&self) -> Option<Arc<WorkflowState>> {
        self.slot.latest.lock().expect("not poisoned").clone()
    }

    /// The pushed state, if it is newer than `(runs, seq)` (a push may trail
    /// a read that already saw a later commit).
    fn newer_than(&self, (runs, seq): (u32, u64)) -> Option<WorkflowState> {
        let latest = self.slot.latest.lock().expect("not poisoned");
        latest
            .as_deref()
            .filter(|st| (st.runs, st.seq) > (runs, seq))
            .cloned()
    }
}

impl Drop for WorkflowWatch {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().expect("not poisoned");
        // The map's and ours: nobody else waits on it.
        if Arc::strong_count(&self.slot) <= 2 {
            waiters.remove(&self.id);
        }
    }
}

impl Progress {
    /// Records the new states of workflows whose status changed (committed
    /// by the projector), waking whoever waits on them.
    pub fn statuses_changed(&self, states: &[WorkflowState]) {
        let waiters = self.waiters.lock().expect("not poisoned");
        if waiters.is_empty() {
            return;
        }
        for st in states {
            if let Some(slot) = waiters.get(&st.workflow_id) {
                *slot.latest.lock().expect("not poisoned") = Some(Arc::new(st.clone()));
                slot.notify.notify_waiters();
            }
        }
    }

    /// Starts watching one workflow's status.
    pub fn watch_workflow(&self, id: WorkflowId) -> WorkflowWatch {
        let slot = self
            .waiters
            .lock()
            .expect("not poisoned")
            .entry(id)
            .or_default()
            .clone();
        WorkflowWatch {
            id,
            slot,
            waiters: self.waiters.clone(),
        }
    }

    /// How far the in-process projector has come, partition → next offset:
    /// changes whenever it commits a batch (a stream of a workflow's records
    /// wakes on it). Nothing changes here when another process projects.
    pub fn offsets(&self) -> watch::Receiver<HashMap<i32, i64>> {
        self.tx.subscribe()
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
        store: &ProjectionReader,
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
    use agentflow_core::{
        AgentName, Event, Record, StepDef, StepId, TaskDef, UserId, WorkflowStatus, apply,
    };
    use chrono::Utc;
    use serde_json::json;

    /// The states of a one-step workflow after each of its records:
    /// pending, running, running (step done), completed.
    fn states(id: WorkflowId) -> Vec<WorkflowState> {
        let agent = AgentName::parse("a").unwrap();
        let events = [
            Event::Created {
                name: "w".into(),
                steps: vec![StepDef::of_task(
                    1,
                    TaskDef {
                        agent: agent.clone(),
                        input: json!({}),
                        timeout_ms: None,
                    },
                )],
                input: json!({}),
                timeout_ms: None,
                max_concurrency: None,
            },
            Event::Started,
            Event::AgentExecuted {
                step: StepId::of_task(1),
                iteration: 1,
                agent,
                output: json!(1),
                attempts: 1,
                duration_ms: 1,
            },
            Event::Completed,
        ];
        let mut st: Option<WorkflowState> = None;
        let mut out = vec![];
        for (i, ev) in events.into_iter().enumerate() {
            let mut r = Record::new(id, UserId(1), i as u64 + 1, Utc::now(), ev);
            if let Some(prev) = &st {
                r = r.after(prev.last_event_id);
            }
            apply(&mut st, &r).unwrap();
            out.push(st.clone().unwrap());
        }
        out
    }

    #[test]
    fn a_watch_holds_the_last_state_pushed_for_its_workflow_only() {
        let p = Progress::default();
        let (mine, other) = (WorkflowId::new(), WorkflowId::new());
        let (mine_states, other_states) = (states(mine), states(other));
        let watch = p.watch_workflow(mine);
        assert!(watch.pushed().is_none(), "nothing pushed yet");
        p.statuses_changed(&[other_states[1].clone()]);
        assert!(watch.pushed().is_none(), "another workflow's push");
        p.statuses_changed(&[mine_states[1].clone(), other_states[3].clone()]);
        assert_eq!(watch.pushed().as_deref(), Some(&mine_states[1]));
        // A second watch on the same workflow shares the slot, so what it
        // sees may predate it: callers compare seq.
        let later = p.watch_workflow(mine);
        assert_eq!(later.pushed().as_deref(), Some(&mine_states[1]));
    }

    #[tokio::test]
    async fn a_waiter_takes_its_workflows_new_state_and_only_its_own() {
        let p = Progress::default();
        let (mine, other) = (WorkflowId::new(), WorkflowId::new());
        let (mine_states, other_states) = (states(mine), states(other));
        let watch = p.watch_workflow(mine);
        let reads = std::sync::atomic::AtomicU32::new(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let p2 = p.clone();
        let pushes = (mine_states.clone(), other_states[3].clone());
        let changer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            p2.statuses_changed(&[pushes.1]);
            // A push older than what the waiter read is not taken for news.
            p2.statuses_changed(&[pushes.0[0].clone()]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            p2.statuses_changed(&[pushes.0[3].clone()]);
        });
        let began = tokio::time::Instant::now();
        let got: Result<Option<WorkflowState>, ()> = watch
            .wait_for(
                deadline,
                Duration::from_secs(5),
                || async {
                    reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(WorkflowHead::of(&mine_states[1]))
                },
                |status| status == WorkflowStatus::Completed,
            )
            .await;
        changer.await.unwrap();
        assert_eq!(
            got,
            Ok(Some(mine_states[3].clone())),
            "its own completion, as pushed"
        );
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "read at the start and after the stale push; the completion is not read back"
        );
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
