//! The supervisor: owns the engine's partitions. It folds every record of
//! its partitions (replay first, then live), keeps one child actor per
//! running workflow, forwards each live record to its workflow's actor, and
//! restarts a child that fails from the fold of the log.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use agentflow_core::{Action, Record, WorkflowId, WorkflowState, WorkflowStatus, apply, decide};
use agentflow_log::{Assigned, ConsumerEvent, LogRecord, Origin, RevokeGuard};
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::checkpoints::Stash;
use crate::metrics as m;
use crate::workflow_actor::{WorkflowActor, WorkflowMsg};
use crate::{EngineStatus, Worker};

pub struct Supervisor;

#[derive(Default)]
struct Partition {
    /// Records below this offset existed when the partition was assigned.
    replay_until: i64,
    live: bool,
    /// The next offset to fold: everything before it has been.
    next_offset: i64,
    workflows: HashMap<WorkflowId, WorkflowState>,
}

impl SupervisorState {
    /// Whether the record at `offset` is one to fold now (see `handle`);
    /// if so the partition moves past it.
    fn take(&mut self, partition: i32, offset: i64, origin: Origin) -> bool {
        let Some(part) = self.partitions.get_mut(&partition) else {
            return false;
        };
        if (origin == Origin::Acked && !part.live) || !origin.due(part.next_offset, offset) {
            return false;
        }
        part.next_offset = offset + 1;
        true
    }
}

pub struct SupervisorState {
    worker: Arc<Worker>,
    /// When idle workflows (sleeping, waiting with a timeout) have something
    /// to do again. Checked by `Tick`; an entry may be stale (the workflow
    /// moved on), which costs one look.
    timers: BTreeSet<(DateTime<Utc>, WorkflowId)>,
    stash: Stash,
    partitions: HashMap<i32, Partition>,
    children: HashMap<WorkflowId, (i32, ActorRef<WorkflowMsg>)>,
    by_actor: HashMap<ActorId, WorkflowId>,
    /// Shutting down: no new actors; running ones finish their step.
    draining: bool,
    /// Actors of revoked partitions finishing their step; each holds the
    /// revocation open until it stops.
    handing_over: HashMap<ActorId, RevokeGuard>,
    /// Whether the group has given this node its first assignment (which
    /// may be empty).
    joined: bool,
    /// Pending workflows in the owned partitions.
    pending: i64,
    /// Workflows whose actors ended on an error, one after another.
    restarts: Restarts,
}

pub enum SupervisorMsg {
    Log(ConsumerEvent),
    /// A record this process appended, as soon as the broker acknowledged it
    /// (the log's stream brings it again later).
    Acked(LogRecord),
    Status(ractor::RpcReplyPort<EngineStatus>),
    /// Start no more steps: each actor finishes the one in flight and stops.
    Drain,
    /// Time passed: start the actors of idle workflows whose time came.
    Tick,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (Arc<Worker>, Stash);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (worker, stash): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            worker,
            timers: BTreeSet::new(),
            stash,
            partitions: HashMap::new(),
            children: HashMap::new(),
            by_actor: HashMap::new(),
            draining: false,
            handing_over: HashMap::new(),
            joined: false,
            pending: 0,
            restarts: Restarts::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Log(ConsumerEvent::Assigned(parts)) => {
                state.joined = true;
                for Assigned {
                    partition,
                    high_watermark,
                    low_watermark,
                } in parts
                {
                    let snapshot = state.stash.lock().expect("not poisoned").remove(&partition);
                    let (start, workflows) = match snapshot {
                        // A checkpoint from before the partition's start
                        // moved (an archive deleted the records after it):
                        // its states may be of workflows that finished and
                        // were archived since. Replay what the log still
                        // holds instead: the archive never moves the start
                        // past a record of a workflow it did not archive,
                        // and the consumer resets to the start on its own.
                        Some(s) if s.next_offset < low_watermark => {
                            tracing::warn!(
                                partition,
                                checkpoint = s.next_offset,
                                log_start = low_watermark,
                                "checkpoint older than the log's start (archived); replaying the partition from its start"
                            );
                            (low_watermark, HashMap::new())
                        }
                        Some(s) => (
                            s.next_offset,
                            s.states.into_iter().map(|w| (w.workflow_id, w)).collect(),
                        ),
                        None => (low_watermark, HashMap::new()),
                    };
                    tracing::info!(
                        partition,
                        from = start,
                        replay_until = high_watermark,
                        checkpointed = workflows.len(),
                        "replaying partition"
                    );
                    let p = Partition {
                        replay_until: high_watermark,
                        live: false,
                        next_offset: start,
                        workflows,
                    };
                    state.pending += count_pending(&p);
                    state.partitions.insert(partition, p);
                    if high_watermark <= start {
                        self.go_live(&myself, state, partition).await;
                    }
                }
                partition_metrics(state);
            }
            SupervisorMsg::Log(ConsumerEvent::Revoked(parts, guard)) => {
                for partition in parts {
                    if let Some(p) = state.partitions.remove(&partition) {
                        state.pending -= count_pending(&p);
                    }
                    let gone: Vec<WorkflowId> = state
                        .children
                        .iter()
                        .filter(|(_, (p, _))| *p == partition)
                        .map(|(id, _)| *id)
                        .collect();
                    // Handed over: each finishes the step in flight (its
                    // result reaches the log) and stops; the partition goes
                    // when all have stopped, so the next owner repeats
                    // nothing. Lost: another node may own it already, so
                    // they stop at once and write nothing more.
                    for id in gone {
                        if guard.lost() {
                            if let Some((_, child)) = state.children.remove(&id) {
                                state.by_actor.remove(&child.get_id());
                                child.kill();
                            }
                        } else if let Some((_, child)) = state.children.get(&id) {
                            let _ = child.send_message(WorkflowMsg::Drain);
                            state.handing_over.insert(child.get_id(), guard.clone());
                        }
                    }
                }
                metrics::gauge!(m::ACTIVE).set(state.children.len() as f64);
                partition_metrics(state);
            }
            SupervisorMsg::Log(ConsumerEvent::Record(lr)) => {
                self.take_record(&myself, state, lr, Origin::Stream).await;
            }
            SupervisorMsg::Acked(lr) => {
                self.take_record(&myself, state, lr, Origin::Acked).await;
            }
            SupervisorMsg::Drain => {
                state.draining = true;
                for (_, child) in state.children.values() {
                    let _ = child.send_message(WorkflowMsg::Drain);
                }
            }
            SupervisorMsg::Tick => {
                let now = Utc::now();
                while let Some(first) = state.timers.first().copied()
                    && first.0 <= now
                {
                    state.timers.pop_first();
                    self.ensure_child(&myself, state, first.1).await;
                }
                metrics::gauge!(m::ACTIVE).set(state.children.len() as f64);
                metrics::gauge!(m::TIMERS).set(state.timers.len() as f64);
            }
            SupervisorMsg::Status(reply) => {
                let _ = reply.send(EngineStatus {
                    joined: state.joined,
                    partitions: state.partitions.len(),
                    live_partitions: state.partitions.values().filter(|p| p.live).count(),
                    running_workflows: state.children.len(),
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Never stop because a child did: that is the point of supervising.
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, None) => {
                // An actor stops when its workflow is no longer running; if
                // a record it never saw started it again, start a new one.
                if let Some(id) = self.forget(state, &cell) {
                    self.ensure_child(&myself, state, id).await;
                }
            }
            // Stopped on an error, or failed: started again from the log,
            // after a delay that grows with each failure in a row.
            SupervisionEvent::ActorTerminated(cell, _, Some(err)) => {
                if let Some(id) = self.forget(state, &cell) {
                    self.restart_later(state, id, &err);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = self.forget(state, &cell) {
                    self.restart_later(state, id, &err.to_string());
                }
            }
            _ => {}
        }
        metrics::gauge!(m::ACTIVE).set(state.children.len() as f64);
        Ok(())
    }
}

impl Supervisor {
    /// A workflow's actor ended on `err`: start it again once its backoff
    /// has passed (a timer, see `Tick`), or park it after too many failures
    /// in a row.
    fn restart_later(&self, state: &mut SupervisorState, id: WorkflowId, err: &str) {
        metrics::counter!(m::ACTOR_RESTARTS).increment(1);
        match state.restarts.failed(id, Utc::now()) {
            Some(at) => {
                if let Some(suppressed) = ACTOR_FAILED_LOG.allow() {
                    tracing::error!(workflow_id = %id, error = %err, restart_at = %at, suppressed,
                        "workflow actor failed; starting it again from the log after a backoff");
                }
                state.timers.insert((at, id));
            }
            None => {
                tracing::error!(workflow_id = %id, error = %err, failures = RESTART_LIMIT,
                    "workflow actor failed too many times in a row; parked until a user acts on it (cancel, resume, signal, execute) or the node restarts");
                metrics::gauge!(m::PARKED).set(state.restarts.parked() as f64);
            }
        }
    }

    fn forget(&self, state: &mut SupervisorState, cell: &ActorCell) -> Option<WorkflowId> {
        state.handing_over.remove(&cell.get_id());
        let id = state.by_actor.remove(&cell.get_id())?;
        if state
            .children
            .get(&id)
            .is_some_and(|(_, c)| c.get_id() == cell.get_id())
        {
            state.children.remove(&id);
        }
        Some(id)
    }

    /// Each offset is folded once, from whichever brings it first
    /// (acknowledged records only once the partition is live).
    async fn take_record(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lr: LogRecord,
        origin: Origin,
    ) {
        if !state.take(lr.partition, lr.offset, origin) {
            return;
        }
        match lr.record {
            Ok(rec) => {
                self.on_record(myself, state, lr.partition, lr.offset, rec)
                    .await
            }
            Err(e) => tracing::error!(partition = lr.partition, offset = lr.offset, error = %e,
                "unreadable record skipped"),
        }
    }

    async fn on_record(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        partition: i32,
        offset: i64,
        rec: Record,
    ) {
        let Some(part) = state.partitions.get_mut(&partition) else {
            return; // not ours (any more)
        };
        let id = rec.workflow_id;
        let mut slot = part.workflows.remove(&id);
        let was = slot.as_ref().map(|s| s.status);
        let applied = apply(&mut slot, &rec);
        let live = part.live;
        if let Err(why) = &applied {
            metrics::counter!(m::RECORDS_REJECTED).increment(1);
            tracing::debug!(workflow_id = %id, seq = rec.seq, event_type = rec.event_type(), %why, "record rejected");
        }
        let now = slot.as_ref().map(|s| s.status);
        if applied.is_ok() && was != now {
            let pending = |s: Option<WorkflowStatus>| i64::from(s == Some(WorkflowStatus::Pending));
            state.pending += pending(now) - pending(was);
        }
        if applied.is_ok() && live {
            // A user's command gives a parked workflow another chance; a
            // record that moves it on shows its actor works again.
            if state.restarts.on_record(id, rec.event.is_chained()) {
                metrics::gauge!(m::PARKED).set(state.restarts.parked() as f64);
            }
        }
        if let Some(st) = slot {
            if applied.is_ok() && live {
                record_metrics(was, &st);
                event_metrics(&rec.event);
            }
            // A finished workflow never changes again: forget it.
            if !st.status.is_terminal() {
                part.workflows.insert(id, st);
            }
        }
        if live {
            if applied.is_ok() {
                self.forward(myself, state, id, rec).await;
            }
        } else if offset + 1 >= part.replay_until {
            self.go_live(myself, state, partition).await;
        }
        metrics::gauge!(m::ACTIVE).set(state.children.len() as f64);
        metrics::gauge!(m::PENDING).set(state.pending as f64);
    }

    /// The partition has caught up with the log: resume its running
    /// workflows, and from now on act on its records.
    async fn go_live(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        partition: i32,
    ) {
        let Some(part) = state.partitions.get_mut(&partition) else {
            return;
        };
        part.live = true;
        let running: Vec<WorkflowId> = part
            .workflows
            .iter()
            .filter(|(_, s)| s.status.is_active())
            .map(|(id, _)| *id)
            .collect();
        tracing::info!(
            partition,
            resuming = running.len(),
            "partition replayed; now live"
        );
        for id in running {
            self.ensure_child(myself, state, id).await;
        }
        metrics::gauge!(m::ACTIVE).set(state.children.len() as f64);
        partition_metrics(state);
    }

    /// Sends a live record to its workflow's actor, starting one if the
    /// workflow has something to do and no actor.
    async fn forward(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: WorkflowId,
        rec: Record,
    ) {
        if let Some((_, child)) = state.children.get(&id) {
            if child
                .send_message(WorkflowMsg::Record(Box::new(rec)))
                .is_ok()
            {
                return;
            }
            // The actor has stopped: a new one starts from the fold, which
            // already holds this record.
            if let Some((_, stale)) = state.children.remove(&id) {
                state.by_actor.remove(&stale.get_id());
            }
        }
        self.ensure_child(myself, state, id).await;
    }

    async fn ensure_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: WorkflowId,
    ) {
        if state.draining || state.children.contains_key(&id) {
            return;
        }
        if !state.restarts.may_start(id, Utc::now()) {
            return; // its timer starts it, or a user's command
        }
        let Some((partition, st)) = state
            .partitions
            .iter()
            .find_map(|(p, part)| part.workflows.get(&id).map(|s| (*p, s)))
        else {
            return;
        };
        if !st.status.is_active() {
            return;
        }
        // A workflow that only waits (a sleep, a person) or is paused holds
        // no actor: only its state, and a timer when it has a time.
        let actions = decide(st, Utc::now());
        if actions.iter().all(|a| matches!(a, Action::WakeAt(_))) {
            if let Some(Action::WakeAt(t)) = actions.first() {
                state.timers.insert((*t, id));
            }
            return;
        }
        // Cloned only for an actor that will run.
        let st = st.clone();
        match Actor::spawn_linked(
            None,
            WorkflowActor,
            (st, state.worker.clone()),
            myself.get_cell(),
        )
        .await
        {
            Ok((child, _)) => {
                state.by_actor.insert(child.get_id(), id);
                state.children.insert(id, (partition, child));
            }
            Err(e) => tracing::error!(workflow_id = %id, error = %e, "cannot start workflow actor"),
        }
    }
}

fn count_pending(p: &Partition) -> i64 {
    p.workflows
        .values()
        .filter(|s| s.status == WorkflowStatus::Pending)
        .count() as i64
}

fn partition_metrics(state: &SupervisorState) {
    metrics::gauge!(m::PENDING).set(state.pending as f64);
    let replaying = state.partitions.values().filter(|p| !p.live).count();
    metrics::gauge!(m::PARTITIONS_OWNED).set(state.partitions.len() as f64);
    metrics::gauge!(m::PARTITIONS_REPLAYING).set(replaying as f64);
}

fn event_metrics(event: &agentflow_core::Event) {
    use agentflow_core::{ConditionKind, Event};
    match event {
        Event::ConditionEvaluated {
            condition,
            result,
            error,
            ..
        } => {
            let condition = match condition {
                ConditionKind::When => "when",
                ConditionKind::Until => "until",
            };
            let result = match (error, result) {
                (Some(_), _) => "error",
                (None, true) => "true",
                (None, false) => "false",
            };
            metrics::counter!(m::CONDITIONS, "condition" => condition, "result" => result)
                .increment(1);
        }
        Event::SignalReceived { .. } => metrics::counter!(m::SIGNALS).increment(1),
        _ => {}
    }
}

fn record_metrics(was: Option<WorkflowStatus>, st: &WorkflowState) {
    if was == Some(st.status) {
        return;
    }
    if matches!(
        st.status,
        WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Cancelled
    ) {
        metrics::counter!(m::WORKFLOW_EXECUTIONS, "status" => st.status.as_str()).increment(1);
        if let (Some(start), Some(end)) = (st.started_at, st.finished_at) {
            let secs = (end - start).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(m::WORKFLOW_DURATION, "workflow" => m::workflow_label(&st.name))
                .record(secs);
        }
    }
}

/// After this many failures in a row a workflow's actor is not started
/// again until a user acts on the workflow (or the node restarts).
const RESTART_LIMIT: u32 = 8;
/// The first restart waits 250 ms; each failure in a row doubles the wait,
/// up to a minute; the [`RESTART_LIMIT`]-th parks the workflow.
const RESTART_BACKOFF: agentflow_log::Backoff = agentflow_log::Backoff::at_most(
    RESTART_LIMIT,
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(60),
);

static ACTOR_FAILED_LOG: agentflow_log::Throttle = agentflow_log::Throttle::per_second(2);

/// Failures in a row of each workflow's actors: when the next may start,
/// and which are parked. A workflow that failed once and then moved on is
/// forgotten, so the map holds only workflows in trouble.
#[derive(Default)]
struct Restarts {
    by_workflow: HashMap<WorkflowId, Failing>,
}

struct Failing {
    failures: u32,
    /// `None`: parked.
    not_before: Option<DateTime<Utc>>,
}

impl Restarts {
    /// Counts a failure; when the next actor may start, or `None` if the
    /// workflow is parked now.
    fn failed(&mut self, id: WorkflowId, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let f = self.by_workflow.entry(id).or_insert(Failing {
            failures: 0,
            not_before: None,
        });
        f.failures += 1;
        f.not_before = (!RESTART_BACKOFF.gives_up_after(f.failures)).then(|| {
            let delay = RESTART_BACKOFF.delay(f.failures);
            now + chrono::Duration::from_std(delay).expect("at most a minute")
        });
        f.not_before
    }

    fn may_start(&self, id: WorkflowId, now: DateTime<Utc>) -> bool {
        self.by_workflow
            .get(&id)
            .is_none_or(|f| f.not_before.is_some_and(|t| t <= now))
    }

    /// A record of the workflow was folded: a command (not chained) lifts a
    /// park (the count stays, so a new failure parks it again at once); a
    /// chained record is progress, and forgets the failures. Whether the
    /// number parked changed.
    fn on_record(&mut self, id: WorkflowId, chained: bool) -> bool {
        let Some(f) = self.by_workflow.get_mut(&id) else {
            return false;
        };
        let was_parked = f.not_before.is_none();
        if chained {
            self.by_workflow.remove(&id);
        } else if was_parked {
            f.failures = RESTART_LIMIT - 1;
            f.not_before = Some(DateTime::<Utc>::MIN_UTC);
        }
        was_parked
    }

    fn parked(&self) -> usize {
        self.by_workflow
            .values()
            .filter(|f| f.not_before.is_none())
            .count()
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    #[test]
    fn failures_in_a_row_back_off_then_park() {
        let mut r = Restarts::default();
        let id = WorkflowId::new();
        let now = Utc::now();
        let mut delays = vec![];
        for _ in 1..RESTART_LIMIT {
            let at = r.failed(id, now).expect("not parked yet");
            assert!(!r.may_start(id, now), "started before its backoff");
            assert!(r.may_start(id, at));
            delays.push((at - now).num_milliseconds());
        }
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 16000]);
        assert_eq!(r.failed(id, now), None, "parked after {RESTART_LIMIT}");
        assert!(!r.may_start(id, now + chrono::Duration::days(1)));
        assert_eq!(r.parked(), 1);
        // A user's command: one more try; failing again parks at once.
        assert!(r.on_record(id, false));
        assert!(r.may_start(id, now));
        assert_eq!(r.failed(id, now), None);
        // Progress forgets it.
        assert!(r.on_record(id, true));
        assert!(r.may_start(id, now));
        assert_eq!(r.parked(), 0);
        assert!(r.failed(id, now).is_some());
    }

    #[test]
    fn the_delay_is_capped() {
        let mut r = Restarts::default();
        let id = WorkflowId::new();
        let now = Utc::now();
        let mut last = now;
        for _ in 1..RESTART_LIMIT {
            last = r.failed(id, now).unwrap();
        }
        assert!((last - now).to_std().unwrap() <= RESTART_BACKOFF.cap);
    }
}
