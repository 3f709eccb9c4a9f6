//! One actor per running workflow. It holds the workflow's folded state,
//! asks `decide` what to do, does it (call an agent, append an event), and
//! once the broker has acknowledged the record applies it and moves on.
//!
//! Each record is chained to the one it was decided on (`prev_event_id`),
//! and the log has the last word: every record of the workflow comes back
//! from the log, and if the record at some `seq` is not the one this actor
//! appended (a stale writer won a race), the actor fails and the supervisor
//! restarts it from the fold of the log. It calls an agent only on a state
//! the log has confirmed (every record it appended came back as the chain's
//! head), so a writer that lost a race never calls the next step's agent
//! with its losing input under the winner's `Idempotency-Key`. The actor
//! stops only when its workflow is no longer running and the log has
//! confirmed all it wrote.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use agentflow_core::{
    Action, Event, Record, StepError, StepErrorKind, WorkflowState, WorkflowStatus, apply, decide,
    timed_out,
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
    /// The node is shutting down: finish the step in flight (its result is
    /// appended), then stop instead of starting another.
    Drain,
}

pub struct WorkflowActor;

/// The workflows asked to cancel: their actors stop retrying steps.
/// Shared by the supervisor (which marks them as the request arrives, even
/// while the actor is busy in a call) and the actors.
pub(crate) type Cancelling = Arc<std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>>;

pub struct WorkflowActorState {
    st: Option<WorkflowState>,
    cancelling: Cancelling,
    /// Records this actor appended and applied, not yet seen in the log.
    unconfirmed: VecDeque<(u64, Uuid)>,
    worker: Arc<Worker>,
    draining: bool,
}

impl Actor for WorkflowActor {
    type Msg = WorkflowMsg;
    type State = WorkflowActorState;
    type Arguments = (WorkflowState, Arc<Worker>, Cancelling);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (st, worker, cancelling): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(WorkflowMsg::Drive)?;
        Ok(WorkflowActorState {
            st: Some(st),
            cancelling,
            unconfirmed: VecDeque::new(),
            worker,
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkflowMsg::Record(rec) if !rec.event.is_chained() => {
                // A command (cancel): it flags the state, takes no seq.
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
                            // A call may have waited for this (see `drive`).
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
        }
    }
}

impl WorkflowActor {
    fn stop_if_done(&self, myself: &ActorRef<WorkflowMsg>, state: &WorkflowActorState) {
        let running = state
            .st
            .as_ref()
            .is_some_and(|s| s.status == WorkflowStatus::Running);
        // Draining (shutdown or a revoked partition) it need not wait for
        // the log to echo what the broker acknowledged: the next owner
        // replays the log.
        if !running && (state.unconfirmed.is_empty() || state.draining) {
            myself.stop(None);
        }
    }

    async fn drive(
        &self,
        myself: &ActorRef<WorkflowMsg>,
        state: &mut WorkflowActorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(st) = state.st.as_ref() else {
            myself.stop(None);
            return Ok(());
        };
        let Some(action) = decide(st, Utc::now()) else {
            self.stop_if_done(myself, state);
            return Ok(());
        };
        let w = &state.worker;
        let (event, metadata) = match action {
            Action::CallAgent { .. } if state.draining => {
                // Shutting down: the next owner starts this step.
                myself.stop(None);
                return Ok(());
            }
            Action::CallAgent { .. } if !state.unconfirmed.is_empty() => {
                // Not before the log has confirmed every record this actor
                // appended: if another writer took one of those seqs, this
                // state lost the race, and a call on it would reach the agent
                // under the winner's `Idempotency-Key` with this state's
                // input. The confirmation (or the record that won, which
                // fails this actor) arrives as a `Record`, and drives again.
                return Ok(());
            }
            Action::CallAgent {
                step,
                agent,
                input,
                idempotency_key,
                attempt_timeout_ms,
                deadline,
            } => {
                // A stalled process may have lost this workflow to another node.
                crate::liveness::hold_while_suspect().await;
                let span = tracing::info_span!("step", workflow_id = %st.workflow_id, step, agent = %agent);
                let cancelling = state.cancelling.clone();
                let id = st.workflow_id.as_uuid();
                let give_up = move || cancelling.lock().expect("not poisoned").contains(&id);
                let call = w
                    .agents
                    .call(
                        st.workflow_id,
                        &agent,
                        &idempotency_key,
                        &input,
                        attempt_timeout_ms.map(Duration::from_millis),
                        &give_up,
                    )
                    .instrument(span);
                let began = std::time::Instant::now();
                let outcome = match deadline {
                    None => call.await,
                    Some(d) => {
                        let left = (d - Utc::now()).to_std().unwrap_or_default();
                        match tokio::time::timeout(left, call).await {
                            Ok(outcome) => outcome,
                            Err(_) => Some(CallOutcome {
                                result: Err(timed_out(st, d)),
                                attempts: 1,
                                duration: began.elapsed(),
                            }),
                        }
                    }
                };
                let Some(outcome) = outcome else {
                    // Cancelled between attempts: the request is in the
                    // mailbox, ahead of this Drive; the next decision ends it.
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
                        agent,
                        output,
                        attempts,
                        duration_ms,
                    },
                    Err(error) => {
                        metrics::counter!(m::STEP_FAILURES, "agent" => w.agents.label(&agent))
                            .increment(1);
                        tracing::info!(workflow_id = %st.workflow_id, step, error = %error.message, attempts, "step failed");
                        Event::StepFailed {
                            step,
                            agent,
                            error,
                            attempts,
                            duration_ms,
                        }
                    }
                };
                (event, Default::default())
            }
            Action::Append { event, metadata } => (event, metadata),
        };
        // The record, and any that follow from it without an agent call
        // (the last step's result and `workflow.completed`, a failed step and
        // `workflow.failed`): appended together, one round trip to the broker.
        // A cancel that arrived meanwhile goes first, as it would one Drive later.
        let id = st.workflow_id.as_uuid();
        let chain = !state.cancelling.lock().expect("not poisoned").contains(&id);
        // A step's result may be refused by the log for good (a broker
        // limit): the step then fails instead, decided on the same state.
        let before = matches!(event, Event::AgentExecuted { .. }).then(|| st.clone());
        let base = state.st.take().expect("checked above");
        let (mut next, mut records) = chain_records(w, base, event, metadata, chain)?;
        crate::liveness::hold_while_suspect().await;
        if let Err(refused) = w.append_until_acked(&records).await {
            let (
                Some(before),
                Event::AgentExecuted {
                    step,
                    agent,
                    attempts,
                    duration_ms,
                    ..
                },
            ) = (before, records[0].event.clone())
            else {
                // Not a step's result: nothing to decide instead. Stop
                // without retrying; the workflow goes on when its partition
                // is next taken (a restart, a rebalance).
                tracing::error!(workflow_id = %records[0].workflow_id, seq = records[0].seq,
                    error = %refused, "the event log refused a record for good; stopping this workflow's actor");
                myself.stop(Some(refused.to_string()));
                return Ok(());
            };
            tracing::warn!(workflow_id = %records[0].workflow_id, step, error = %refused,
                "the event log refused the step's result; the step fails");
            let failed = Event::StepFailed {
                step,
                agent,
                error: refused_result(&refused),
                attempts,
                duration_ms,
            };
            (next, records) = chain_records(w, before, failed, Default::default(), chain)?;
            if let Err(e) = w.append_until_acked(&records).await {
                return Err(format!("the event log refused a step's failure: {e}").into());
            }
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
}

/// The record of `event` on `state`, and any that follow from it without an
/// agent call (up to [`MAX_CHAINED`], only when `chain`), with the state
/// after them.
fn chain_records(
    w: &Worker,
    state: WorkflowState,
    event: Event,
    metadata: serde_json::Map<String, serde_json::Value>,
    chain: bool,
) -> Result<(WorkflowState, Vec<Record>), ActorProcessingErr> {
    let node_id: serde_json::Value = w.node_id.clone().into();
    let mut next = state;
    let mut records = Vec::with_capacity(2);
    let (mut event, mut metadata) = (event, metadata);
    loop {
        let mut record = Record::new(
            next.workflow_id,
            next.user_id,
            next.seq + 1,
            Utc::now(),
            event,
        )
        .after(next.last_event_id);
        record.metadata = metadata;
        record.metadata.insert("node_id".into(), node_id.clone());
        let mut slot = Some(next);
        apply(&mut slot, &record).map_err(|e| format!("own record rejected: {e}"))?;
        next = slot.expect("apply keeps a state");
        records.push(record);
        match decide(&next, Utc::now()) {
            Some(Action::Append {
                event: e,
                metadata: m,
            }) if chain && records.len() < MAX_CHAINED => {
                (event, metadata) = (e, m);
            }
            _ => break,
        }
    }
    Ok((next, records))
}

/// The step error for a result the log refused for good.
fn refused_result(e: &LogError) -> StepError {
    StepError {
        kind: if matches!(e, LogError::TooLarge(_)) {
            StepErrorKind::OutputTooLarge
        } else {
            StepErrorKind::LogRejected
        },
        message: format!("the event log refused the step's result: {e}"),
        http_status: None,
    }
}

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
    let mut delay = Duration::from_millis(100);
    loop {
        match append().await {
            Ok(_) => return Ok(()),
            Err(e) if !e.is_retriable() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "append failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
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
