//! One actor per running workflow. It holds the workflow's folded state,
//! asks `decide` what to do, and does it: records that need no I/O are
//! appended at once; agent calls run as tasks (several at once for parallel
//! steps, up to the workflow's `max_concurrency`) that report back as
//! messages, so a cancel, a pause or a signal is heard while calls run; a
//! sleep or a wait's timeout is a timer that sends a message. Once the
//! broker has acknowledged a record the actor applies it and moves on.
//!
//! Each record is chained to the one it was decided on (`prev_event_id`),
//! and the log has the last word: every record of the workflow comes back
//! from the log, and if the record at some `seq` is not the one this actor
//! appended (a stale writer won a race), the actor fails and the supervisor
//! restarts it from the fold of the log. It calls an agent only on a state
//! the log has confirmed (every record it appended came back as the chain's
//! head), so a writer that lost a race never calls the next step's agent
//! with its losing input under the winner's `Idempotency-Key`. The actor
//! stops when nothing is left for it (the workflow ended, or only waits, or
//! is paused with no call in flight) and the log has confirmed all it
//! wrote; the supervisor starts another when a record or a timer gives the
//! workflow something to do.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentflow_core::{
    Action, AgentName, Context, Event, Record, StepError, StepErrorKind, StepId, WorkflowState,
    apply, chain, decide, takes_result, timed_out,
};
use agentflow_log::LogError;
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;
use uuid::Uuid;

use crate::metrics as m;
use crate::{CallOutcome, Worker};

pub enum WorkflowMsg {
    /// A record of this workflow, from the log, in log order.
    Record(Box<Record>),
    /// Decide and act.
    Drive,
    /// The node is shutting down or handing the partition over: finish the
    /// calls in flight (their results are appended), then stop instead of
    /// starting others.
    Drain,
    /// An agent call ended.
    CallDone(Box<CallDone>),
}

pub struct CallDone {
    step: StepId,
    iteration: u32,
    agent: AgentName,
    /// `None`: it gave up between attempts (the workflow is being
    /// cancelled), with no result.
    outcome: Option<CallOutcome>,
}

pub struct WorkflowActor;

/// A call in flight: aborted when the actor stops (or is killed, which
/// drops its state), so no call outlives the actor that would record it.
struct InFlight(tokio::task::JoinHandle<()>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct WorkflowActorState {
    st: Option<WorkflowState>,
    /// Records this actor appended and applied, not yet seen in the log.
    unconfirmed: VecDeque<(u64, Uuid)>,
    worker: Arc<Worker>,
    draining: bool,
    /// Agent calls in flight, by step.
    in_flight: HashMap<StepId, InFlight>,
    /// The timer armed for `Action::WakeAt`, and its time.
    timer: Option<(chrono::DateTime<Utc>, InFlight)>,
    /// Set once a cancel is asked: the calls in flight make no more
    /// attempts.
    give_up: Arc<AtomicBool>,
    /// The log refused a record for good and this actor appended a small
    /// `step.failed` in its place, at this seq: its own state is not the
    /// log's any more. It does nothing until the log shows a record at or
    /// past that seq, then stops, and the supervisor starts the workflow
    /// again from its fold of the log.
    rebuild_at: Option<u64>,
}

impl WorkflowActorState {
    /// What `decide` is told besides the state: now, the calls in flight,
    /// the server's cap.
    fn context<'a>(&self, in_flight: &'a [StepId]) -> Context<'a> {
        Context {
            now: Utc::now(),
            in_flight,
            default_cap: Some(self.worker.max_concurrency),
        }
    }
}

impl Actor for WorkflowActor {
    type Msg = WorkflowMsg;
    type State = WorkflowActorState;
    type Arguments = (WorkflowState, Arc<Worker>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (st, worker): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(WorkflowMsg::Drive)?;
        Ok(WorkflowActorState {
            st: Some(st),
            unconfirmed: VecDeque::new(),
            worker,
            draining: false,
            in_flight: HashMap::new(),
            timer: None,
            give_up: Arc::new(AtomicBool::new(false)),
            rebuild_at: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkflowMsg::Record(rec) if state.rebuild_at.is_some() => {
                if state.rebuild_at.is_some_and(|at| rec.seq >= at) {
                    myself.stop(None);
                }
                Ok(())
            }
            WorkflowMsg::Record(rec) if !rec.event.is_chained() => {
                // A command (cancel, pause, resume, signal): it flags the
                // state, takes no seq.
                if apply(&mut state.st, &rec).is_ok() {
                    myself.send_message(WorkflowMsg::Drive)?;
                }
                Ok(())
            }
            WorkflowMsg::Record(rec) => {
                let applied_seq = state.st.as_ref().map_or(0, |s| s.seq);
                if rec.seq <= applied_seq {
                    // An echo of something already applied: it must be ours.
                    while state.unconfirmed.front().is_some_and(|(s, _)| *s < rec.seq) {
                        state.unconfirmed.pop_front();
                    }
                    if let Some((seq, id)) = state.unconfirmed.front().copied()
                        && seq == rec.seq
                    {
                        if id != rec.event_id {
                            return Err(format!(
                                "seq {seq} in the log is not the record this actor appended; restarting from the log"
                            )
                            .into());
                        }
                        state.unconfirmed.pop_front();
                        if state.unconfirmed.is_empty() {
                            // Calls may have waited for this (see `drive`).
                            myself.send_message(WorkflowMsg::Drive)?;
                        }
                    }
                    self.stop_if_done(&myself, state);
                    return Ok(());
                }
                if apply(&mut state.st, &rec).is_ok() {
                    myself.send_message(WorkflowMsg::Drive)?;
                }
                Ok(())
            }
            WorkflowMsg::Drive => self.drive(&myself, state).await,
            WorkflowMsg::Drain => {
                state.draining = true;
                myself.send_message(WorkflowMsg::Drive)?;
                Ok(())
            }
            WorkflowMsg::CallDone(done) => self.call_done(&myself, state, *done).await,
        }
    }
}

impl WorkflowActor {
    /// Stops once nothing is left for it: the workflow is not running (or
    /// only waits, or is paused with nothing in flight), and the log has
    /// confirmed all it wrote. The supervisor starts a new actor when a
    /// record or a timer gives the workflow something to do.
    fn stop_if_done(&self, myself: &ActorRef<WorkflowMsg>, state: &WorkflowActorState) {
        if !state.in_flight.is_empty() {
            return;
        }
        // Draining (shutdown or a revoked partition) it need not wait for
        // the log to echo what the broker acknowledged: the next owner
        // replays the log.
        if !state.unconfirmed.is_empty() && !state.draining {
            return;
        }
        let idle = state.st.as_ref().is_none_or(|st| {
            decide(st, state.context(&[]))
                .iter()
                .all(|a| matches!(a, Action::WakeAt(_)))
        });
        if idle || state.draining {
            myself.stop(None);
        }
    }

    async fn drive(
        &self,
        myself: &ActorRef<WorkflowMsg>,
        state: &mut WorkflowActorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.rebuild_at.is_some() {
            return Ok(()); // waiting for the log (see `rebuild_at`)
        }
        let Some(st) = state.st.as_ref() else {
            myself.stop(None);
            return Ok(());
        };
        if st.cancel_requested {
            // The calls in flight make no more attempts.
            state.give_up.store(true, Ordering::Relaxed);
        }
        let in_flight: Vec<StepId> = state.in_flight.keys().cloned().collect();
        let actions = decide(st, state.context(&in_flight));
        if let Some(Action::Append { event, metadata }) = actions.first() {
            let (event, metadata) = (event.clone(), metadata.clone());
            return self.append(myself, state, event, metadata).await;
        }
        if state.draining {
            // Shutting down: the next owner starts what is left.
            self.stop_if_done(myself, state);
            return Ok(());
        }
        if !state.unconfirmed.is_empty() {
            // Not before the log has confirmed every record this actor
            // appended: if another writer took one of those seqs, this
            // state lost the race, and a call on it would reach the agent
            // under the winner's `Idempotency-Key` with this state's
            // input. The confirmation (or the record that won, which fails
            // this actor) arrives as a `Record`, and drives again.
            return Ok(());
        }
        let mut wake = None;
        for action in actions {
            match action {
                Action::CallAgent {
                    step,
                    iteration,
                    agent,
                    input,
                    idempotency_key,
                    attempt_timeout_ms,
                    deadline,
                } => {
                    let task = Call {
                        actor: myself.clone(),
                        worker: state.worker.clone(),
                        give_up: state.give_up.clone(),
                        ctx: CallContext::of(st),
                        step: step.clone(),
                        iteration,
                        agent,
                        input,
                        idempotency_key,
                        attempt_timeout_ms,
                        deadline,
                    };
                    state
                        .in_flight
                        .insert(step, InFlight(tokio::spawn(task.run())));
                }
                Action::WakeAt(t) => wake = Some(t),
                Action::Append { .. } => {}
            }
        }
        match wake {
            Some(t) if state.timer.as_ref().is_none_or(|(at, _)| *at != t) => {
                let me = myself.clone();
                let left = (t - Utc::now()).to_std().unwrap_or_default();
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(left).await;
                    let _ = me.send_message(WorkflowMsg::Drive);
                });
                state.timer = Some((t, InFlight(timer)));
            }
            Some(_) => {}
            None => state.timer = None,
        }
        self.stop_if_done(myself, state);
        Ok(())
    }

    async fn call_done(
        &self,
        myself: &ActorRef<WorkflowMsg>,
        state: &mut WorkflowActorState,
        done: CallDone,
    ) -> Result<(), ActorProcessingErr> {
        state.in_flight.remove(&done.step);
        if state.rebuild_at.is_some() {
            // The next actor starts from the log and calls again, with the
            // same key.
            return Ok(());
        }
        let w = &state.worker;
        let CallDone {
            step,
            iteration,
            agent,
            outcome,
        } = done;
        let Some(outcome) = outcome else {
            // Gave up (cancelled): no result; the end follows.
            myself.send_message(WorkflowMsg::Drive)?;
            return Ok(());
        };
        metrics::histogram!(m::STEP_DURATION, "agent" => w.agents.label(&agent))
            .record(outcome.duration.as_secs_f64());
        let attempts = outcome.attempts;
        let duration_ms = outcome.duration.as_millis() as u64;
        let event = match outcome.result {
            Ok(output) => Event::AgentExecuted {
                step,
                iteration,
                agent,
                output,
                attempts,
                duration_ms,
            },
            Err(error) => {
                metrics::counter!(m::STEP_FAILURES, "agent" => w.agents.label(&agent)).increment(1);
                tracing::info!(step = %step, error = %error.message, attempts, "step failed");
                Event::StepFailed {
                    step,
                    iteration,
                    agent: Some(agent),
                    error,
                    attempts,
                    duration_ms,
                }
            }
        };
        let fits = state.st.as_ref().is_some_and(|st| {
            event
                .step()
                .is_some_and(|step| takes_result(st, step, iteration))
        });
        if !fits {
            tracing::debug!("a call's result no longer fits the workflow; dropped");
            myself.send_message(WorkflowMsg::Drive)?;
            return Ok(());
        }
        self.append(myself, state, event, Default::default()).await
    }

    /// Appends `event` (and what follows from it without I/O), waiting for
    /// the broker's acknowledgement, then drives again.
    async fn append(
        &self,
        myself: &ActorRef<WorkflowMsg>,
        state: &mut WorkflowActorState,
        event: Event,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ActorProcessingErr> {
        let w = state.worker.clone();
        let base = state.st.take().expect("checked by the caller");
        // Decided on the state before the records, in case the log refuses
        // them (a message over the broker's limit, a permission): no copy of
        // the state is needed for it.
        let refusal = Refusal::on(&base, &event);
        let in_flight: Vec<StepId> = state.in_flight.keys().cloned().collect();
        let node_id = serde_json::Map::from_iter([("node_id".into(), w.node_id.clone().into())]);
        let (next, records) = chain(
            base,
            event,
            metadata,
            &node_id,
            state.context(&in_flight),
            MAX_CHAINED,
        )
        .map_err(|e| format!("own record rejected: {e}"))?;
        crate::liveness::hold_while_suspect().await;
        if let Err(refused) = w.append_until_acked(&records).await {
            return self
                .refused(myself, state, &records[0], refusal, refused)
                .await;
        }
        // Acknowledged: durable. Apply them and go on; the log will confirm.
        state.st = Some(next);
        state
            .unconfirmed
            .extend(records.iter().map(|r| (r.seq, r.event_id)));
        // Through the mailbox, so records that arrived meanwhile go first.
        myself.send_message(WorkflowMsg::Drive)?;
        Ok(())
    }

    /// The log refused `first` (and what was chained to it) for good:
    /// sending it again would only fail again. The step it was about fails
    /// with a small record instead (the workflow then fails, and can be
    /// resumed); where there is no such step, or that record is refused
    /// too, the actor stops with the reason, and the supervisor starts the
    /// workflow again only after a growing delay, and after a few times not
    /// until a user acts on it. Never a loop.
    async fn refused(
        &self,
        myself: &ActorRef<WorkflowMsg>,
        state: &mut WorkflowActorState,
        first: &Record,
        refusal: Option<Refusal>,
        refused: LogError,
    ) -> Result<(), ActorProcessingErr> {
        let w = state.worker.clone();
        metrics::counter!(m::RECORDS_REFUSED, "event_type" => first.event_type()).increment(1);
        if let Some(suppressed) = REFUSED_LOG.allow() {
            tracing::error!(workflow_id = %first.workflow_id, seq = first.seq,
                event_type = first.event_type(), error = %refused, suppressed,
                "the event log refused a record for good; its step fails instead");
        }
        let Some(refusal) = refusal else {
            myself.stop(Some(format!(
                "the event log refused a `{}` record for good: {refused}",
                first.event_type()
            )));
            return Ok(());
        };
        let failed = refusal.record(first, &refused, &w.node_id);
        let seq = failed.seq;
        if let Err(e) = w.append_until_acked(std::slice::from_ref(&failed)).await {
            myself.stop(Some(format!(
                "the event log refused a `{}` record, and the step's failure, for good: {e}",
                first.event_type()
            )));
            return Ok(());
        }
        // This actor's state holds the refused records: wait for the log to
        // show the failure (or whatever won that seq), then stop; the
        // supervisor starts the workflow again from the log.
        state.rebuild_at = Some(seq);
        state.in_flight.clear();
        // Should the fold not take the failure (another writer moved the
        // workflow on meanwhile), the log shows nothing at that seq: stop
        // anyway after a while, and let the supervisor decide again.
        let me = myself.clone();
        let give_up = tokio::spawn(async move {
            tokio::time::sleep(REBUILD_WAIT).await;
            me.stop(Some("the log did not show the step's failure".into()));
        });
        state.timer = Some((Utc::now(), InFlight(give_up)));
        Ok(())
    }
}

/// How a step fails when the log refuses the record decided for it: the
/// `step.failed` that replaces it, built from the state it was decided on.
struct Refusal {
    step: StepId,
    iteration: u32,
    agent: Option<AgentName>,
    attempts: u32,
    duration_ms: u64,
    seq: u64,
    prev_event_id: Uuid,
}

impl Refusal {
    /// `None` when `event` is not about a step that can still fail (the
    /// workflow's own end, a command).
    fn on(st: &WorkflowState, event: &Event) -> Option<Refusal> {
        let (iteration, attempts, duration_ms) = match event {
            Event::AgentExecuted {
                iteration,
                attempts,
                duration_ms,
                ..
            }
            | Event::StepFailed {
                iteration,
                attempts,
                duration_ms,
                ..
            } => (*iteration, *attempts, *duration_ms),
            Event::ConditionEvaluated { .. }
            | Event::StepWaiting { .. }
            | Event::WaitCompleted { .. } => (0, 0, 0),
            _ => return None,
        };
        let i = st.index(event.step()?)?;
        Some(Refusal {
            step: st.steps[i].id.clone(),
            iteration: if iteration == 0 {
                st.steps[i].iteration + 1
            } else {
                iteration
            },
            agent: st.definition[i].agent.clone(),
            attempts,
            duration_ms,
            seq: st.seq + 1,
            prev_event_id: st.last_event_id,
        })
    }

    /// The `step.failed` record, in the refused record's place.
    fn record(self, refused_record: &Record, e: &LogError, node_id: &str) -> Record {
        let error = StepError {
            kind: if matches!(e, LogError::TooLarge(_))
                && matches!(refused_record.event, Event::AgentExecuted { .. })
            {
                StepErrorKind::OutputTooLarge
            } else {
                StepErrorKind::LogRejected
            },
            message: agentflow_core::bounds::message(&format!(
                "the event log refused the step's `{}` record: {e}",
                refused_record.event_type()
            )),
            http_status: None,
        };
        Record::new(
            refused_record.workflow_id,
            refused_record.user_id,
            self.seq,
            Utc::now(),
            Event::StepFailed {
                step: self.step,
                iteration: self.iteration,
                agent: self.agent,
                error,
                attempts: self.attempts,
                duration_ms: self.duration_ms,
            },
        )
        .after(self.prev_event_id)
        .with_metadata("node_id", node_id)
    }
}

/// One error line per second at most for refused records, whatever the
/// number of workflows hitting it; the others are counted in the next line.
static REFUSED_LOG: agentflow_log::Throttle = agentflow_log::Throttle::per_second(1);

/// What a call task needs of the state: its identity and deadline message.
struct CallContext {
    workflow_id: agentflow_core::WorkflowId,
    deadline_error: Option<StepError>,
}

impl CallContext {
    fn of(st: &WorkflowState) -> CallContext {
        CallContext {
            workflow_id: st.workflow_id,
            deadline_error: st.deadline().map(|d| timed_out(st, d)),
        }
    }
}

/// One agent call (an [`Action::CallAgent`]), as a task that reports back
/// to the actor.
struct Call {
    actor: ActorRef<WorkflowMsg>,
    worker: Arc<Worker>,
    give_up: Arc<AtomicBool>,
    ctx: CallContext,
    step: StepId,
    iteration: u32,
    agent: AgentName,
    input: serde_json::Value,
    idempotency_key: String,
    attempt_timeout_ms: Option<u64>,
    deadline: Option<chrono::DateTime<Utc>>,
}

impl Call {
    async fn run(self) {
        let Call {
            actor,
            worker: w,
            give_up,
            ctx,
            step,
            iteration,
            agent,
            input,
            idempotency_key,
            attempt_timeout_ms,
            deadline,
        } = self;
        // A stalled process may have lost this workflow to another node.
        crate::liveness::hold_while_suspect().await;
        let span = tracing::info_span!("step", workflow_id = %ctx.workflow_id, step = %step, iteration, agent = %agent);
        let began = std::time::Instant::now();
        let gave_up = move || give_up.load(Ordering::Relaxed);
        let call = w
            .agents
            .call(
                ctx.workflow_id,
                &agent,
                &idempotency_key,
                &input,
                attempt_timeout_ms.map(Duration::from_millis),
                &gave_up,
            )
            .instrument(span);
        let outcome = match deadline {
            None => call.await,
            Some(d) => {
                let left = (d - Utc::now()).to_std().unwrap_or_default();
                match tokio::time::timeout(left, call).await {
                    Ok(outcome) => outcome,
                    Err(_) => Some(CallOutcome {
                        result: Err(ctx.deadline_error.clone().expect("a deadline")),
                        attempts: 1,
                        duration: began.elapsed(),
                    }),
                }
            }
        };
        let _ = actor.send_message(WorkflowMsg::CallDone(Box::new(CallDone {
            step,
            iteration,
            agent,
            outcome,
        })));
    }
}

/// How long an actor whose record was refused waits for the log to show
/// the step's failure before it stops anyway.
const REBUILD_WAIT: Duration = Duration::from_secs(30);

/// At most this many records go to the broker in one round trip.
const MAX_CHAINED: usize = 4;

/// How long an actor waits for the broker's answer to one append. The
/// delivery ends by itself, acknowledged or failed, within librdkafka's
/// `message.timeout.ms` (300 s): the actor waits for that answer rather than
/// giving up sooner, because a record given up on may still land (a broker
/// failover outlasts any short wait), and sending it again would put it in
/// the log twice.
const UNTIL_ANSWERED: Duration = Duration::from_secs(3600);

impl Worker {
    /// Appends until the broker acknowledges all `records`: while the log is
    /// unreachable the workflow pauses here, and resumes when it is back. A
    /// delivery that failed for a passing reason is sent again; one the
    /// broker refused for good ([`LogError::is_retriable`] false) is
    /// returned, never retried.
    pub(crate) async fn append_until_acked(&self, records: &[Record]) -> Result<(), LogError> {
        until_acked(|| self.producer.append_all(records, UNTIL_ANSWERED)).await
    }
}

async fn until_acked<T, F, Fut>(mut append: F) -> Result<(), LogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LogError>>,
{
    // Every workflow of a node retries during an outage: one line a second
    // for all of them.
    static LINES: agentflow_log::Throttle = agentflow_log::Throttle::per_second(1);
    let policy = agentflow_log::Retry {
        backoff: agentflow_log::Backoff::forever(
            Duration::from_millis(100),
            Duration::from_secs(5),
        ),
        retryable: LogError::is_retriable,
        lines: &LINES,
    };
    policy
        .run(&mut append, |e, suppressed| {
            tracing::warn!(error = %e, suppressed, "append failed, retrying");
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn a_refused_append_is_not_retried() {
        let calls = Cell::new(0);
        let result = until_acked(|| {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(LogError::Rejected("Broker: Message size too large".into())) }
        })
        .await;
        assert!(matches!(result, Err(LogError::Rejected(_))), "{result:?}");
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test]
    async fn an_unavailable_log_is_waited_for() {
        let calls = Cell::new(0);
        let result = until_acked(|| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(LogError::Unavailable("down".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls.get(), 3);
    }
}
