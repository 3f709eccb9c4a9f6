//! The engine: runs workflows.
//!
//! A member of the `engine` consumer group. For each partition it is given,
//! it replays the log from the start (rebuilding every workflow's state with
//! the core fold), then goes live: one supervised ractor actor per running
//! workflow calls the agents and appends the results. Crash recovery is this
//! same replay.

mod agents;
pub mod metrics;
mod supervisor;
mod workflow_actor;

use std::sync::Arc;
use std::time::Duration;

use agentflow_log::{
    Assigner, ConsumerEvent, LogConfig, LogError, Producer, StartAt, Subscription,
};
use ractor::{Actor, ActorRef};

pub use agents::{AgentClient, AgentDefaults, AgentSettings, CallOutcome};
use supervisor::{Supervisor, SupervisorMsg};

/// What every workflow actor needs.
pub struct Worker {
    pub producer: Producer,
    pub agents: AgentClient,
    pub node_id: String,
    /// How long one append may wait for the broker before it is retried.
    pub append_timeout: Duration,
}

pub const CONSUMER_GROUP: &str = "engine";

/// A running engine. Dropping it does not stop it; call [`Engine::stop`].
pub struct Engine {
    supervisor: ActorRef<SupervisorMsg>,
    subscription: std::sync::Mutex<Option<Subscription>>,
    forwarder: tokio::task::JoinHandle<()>,
}

/// The engine's view of itself, for `/readyz` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStatus {
    pub partitions: usize,
    pub live_partitions: usize,
    pub running_workflows: usize,
}

struct FromTheBeginning;

impl Assigner for FromTheBeginning {
    fn start_positions(&self, partitions: &[i32]) -> Vec<StartAt> {
        vec![StartAt::Beginning; partitions.len()]
    }
}

impl Engine {
    /// Joins the `engine` group and runs. With `tap`, every event the engine
    /// consumes is also sent there (the in-process projector follows the
    /// same stream, so the broker serves one fetch stream instead of two).
    pub async fn start(
        log: &LogConfig,
        worker: Worker,
        tap: Option<tokio::sync::mpsc::Sender<ConsumerEvent>>,
    ) -> Result<Self, EngineError> {
        metrics::describe();
        let (supervisor, _) = Actor::spawn(None, Supervisor, Arc::new(worker))
            .await
            .map_err(|e| EngineError::Spawn(e.to_string()))?;
        let (subscription, mut events) =
            Subscription::start(log, CONSUMER_GROUP, Arc::new(FromTheBeginning), 4096)?;
        let to = supervisor.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let Some(tap) = &tap
                    && tap.send(ev.clone()).await.is_err()
                {
                    tracing::error!("the projector stopped following the engine's stream");
                }
                if to.send_message(SupervisorMsg::Log(ev)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            supervisor,
            subscription: std::sync::Mutex::new(Some(subscription)),
            forwarder,
        })
    }

    pub async fn status(&self) -> Option<EngineStatus> {
        let (partitions, live_partitions, running_workflows) =
            ractor::call_t!(self.supervisor, SupervisorMsg::Status, 2000).ok()?;
        Some(EngineStatus {
            partitions,
            live_partitions,
            running_workflows,
        })
    }

    /// Leaves the group and stops every actor (in-flight steps are re-run by
    /// the next owner).
    pub async fn stop(&self) {
        let sub = self.subscription.lock().expect("not poisoned").take();
        if let Some(s) = sub {
            s.stop(Duration::from_secs(5)).await;
        }
        self.forwarder.abort();
        self.supervisor.stop(None);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the supervisor: {0}")]
    Spawn(String),
    #[error(transparent)]
    Log(#[from] LogError),
}
