//! One actor per running workflow. It holds the workflow's folded state,
//! asks `decide` what to do, does it (call an agent, append an event), and
//! waits for the record to come back from the log before deciding again —
//! so its state only ever moves by the log, exactly as a replay would.

use std::sync::Arc;
use std::time::Duration;

use agentflow_core::{Action, Event, Record, WorkflowState, WorkflowStatus, apply, decide};
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::Worker;
use crate::metrics as m;

pub enum WorkflowMsg {
    /// A record of this workflow, from the log, in log order.
    Record(Box<Record>),
    /// Decide and act, unless an appended record is still on its way back.
    Drive,
}

pub struct WorkflowActor;

pub struct WorkflowActorState {
    st: Option<WorkflowState>,
    /// The seq of a record this actor appended and has not yet seen.
    awaiting: Option<u64>,
    worker: Arc<Worker>,
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
            awaiting: None,
            worker,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkflowMsg::Record(rec) => {
                if apply(&mut state.st, &rec).is_err() {
                    return Ok(());
                }
                let seq = rec.seq;
                if state.awaiting.is_some_and(|a| seq >= a) {
                    state.awaiting = None;
                }
                self.drive(&myself, state).await
            }
            WorkflowMsg::Drive => self.drive(&myself, state).await,
        }
    }
}

impl WorkflowActor {
    async fn drive(
        &self,
        myself: &ActorRef<WorkflowMsg>,
        state: &mut WorkflowActorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(st) = state.st.as_ref() else {
            myself.stop(None);
            return Ok(());
        };
        if st.status != WorkflowStatus::Running {
            myself.stop(None);
            return Ok(());
        }
        if state.awaiting.is_some() {
            return Ok(());
        }
        let Some(action) = decide(st, Utc::now()) else {
            return Ok(());
        };
        let w = &state.worker;
        let (event, metadata) = match action {
            Action::CallAgent {
                step,
                agent,
                input,
                idempotency_key,
            } => {
                let span = tracing::info_span!("step", workflow_id = %st.workflow_id, step, agent = %agent);
                let outcome = w
                    .agents
                    .call(st.workflow_id, &agent, &idempotency_key, &input)
                    .instrument(span)
                    .await;
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
                        tracing::info!(error = %error.message, attempts, "step failed");
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
        let seq = st.seq + 1;
        let mut record = Record::new(st.workflow_id, st.user_id, seq, Utc::now(), event);
        record.metadata = metadata;
        record
            .metadata
            .insert("node_id".into(), w.node_id.clone().into());
        w.append_until_acked(&record).await;
        state.awaiting = Some(seq);
        Ok(())
    }
}

impl Worker {
    /// Appends and retries until the broker acknowledges: while the log is
    /// unreachable the workflow pauses here, and resumes when it is back.
    pub(crate) async fn append_until_acked(&self, record: &Record) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.producer.append(record, self.append_timeout).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(workflow_id = %record.workflow_id, seq = record.seq, error = %e,
                        "append failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
