//! The engine: runs workflows.
//!
//! A member of the `engine` consumer group. For each partition it is given,
//! it replays the log from the start (rebuilding every workflow's state with
//! the core fold), then goes live: one supervised ractor actor per running
//! workflow calls the agents and appends the results. Crash recovery is this
//! same replay.

mod agents;
mod checkpoints;
mod liveness;
pub mod metrics;
mod supervisor;
mod workflow_actor;

use std::sync::Arc;
use std::time::Duration;

use agentflow_log::{
    ConsumerEvent, FailureWatch, Input, Inputs, LogConfig, LogError, LogRecord, Producer,
    RevokeGuard, Subscription,
};
use agentflow_store::CheckpointReader;
use ractor::{Actor, ActorRef};

use checkpoints::FromCheckpoints;

pub use agents::{AgentClient, AgentDefaults, AgentSettings, CallOutcome};
use supervisor::{Supervisor, SupervisorMsg};

/// What every workflow actor needs.
pub struct Worker {
    pub producer: Producer,
    pub agents: AgentClient,
    pub node_id: String,
    /// At most this many agent calls of one workflow at once, unless its
    /// definition says (`max_concurrency`).
    pub max_concurrency: usize,
}

pub const CONSUMER_GROUP: &str = "engine";

/// How often idle workflows' timers are looked at.
const TICK: Duration = Duration::from_millis(200);

/// A running engine. Dropping it does not stop it; call [`Engine::stop`].
pub struct Engine {
    supervisor: ActorRef<SupervisorMsg>,
    subscription: std::sync::Mutex<Option<Subscription>>,
    forwarder: tokio::task::JoinHandle<()>,
    failure: FailureWatch,
}

/// How the engine runs beside the other roles.
#[derive(Default)]
pub struct EngineOptions {
    /// Start newly owned partitions from the projection's checkpoint (needs
    /// the store) instead of replaying them whole.
    pub checkpoints: bool,
    /// Also send every consumed event here (the in-process projector).
    pub tap: Option<tokio::sync::mpsc::UnboundedSender<ConsumerEvent>>,
    /// What this process appends, as the broker acknowledges it (see
    /// [`agentflow_log::Producer::with_acked`]): acted on at once instead of
    /// after a fetch round trip.
    pub acked: Option<tokio::sync::mpsc::UnboundedReceiver<LogRecord>>,
}

/// The engine's view of itself, for `/readyz` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStatus {
    /// The group has given this node its first assignment.
    pub joined: bool,
    pub partitions: usize,
    pub live_partitions: usize,
    pub running_workflows: usize,
}

impl EngineStatus {
    /// Ready to run workflows: joined the group and every owned partition
    /// replayed.
    pub fn is_ready(&self) -> bool {
        self.joined && self.live_partitions == self.partitions
    }
}

impl Engine {
    /// Joins the `engine` group and runs. With the `store` (Postgres) and
    /// `options.checkpoints`, a partition it is given starts from the
    /// projection's checkpoint and replays only the log's tail. With `options.tap`, every event the engine consumes is also
    /// sent there (the in-process projector follows the same stream, so the
    /// broker serves one fetch stream instead of two). The tap never blocks
    /// the engine: while Postgres is down the projector falls behind in
    /// memory and workflows keep running.
    pub async fn start(
        log: &LogConfig,
        worker: Worker,
        store: Option<CheckpointReader>,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        metrics::describe();
        liveness::start(log.session_timeout);
        let producer = worker.producer.clone();
        let checkpoints = store.clone().filter(|_| options.checkpoints);
        let tap = options.tap;
        let stash = checkpoints::Stash::default();
        let (supervisor, _) = Actor::spawn(None, Supervisor, (Arc::new(worker), stash.clone()))
            .await
            .map_err(|e| EngineError::Spawn(e.to_string()))?;
        // Sleeps and waits' timeouts wake within a tick of their time.
        let to = supervisor.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if to.send_message(SupervisorMsg::Tick).is_err() {
                    break; // the supervisor stopped
                }
            }
        });
        let assigner = FromCheckpoints {
            store: checkpoints,
            producer,
            topic: log.topic.clone(),
            runtime: tokio::runtime::Handle::current(),
            stash,
        };
        let (subscription, events) =
            Subscription::start(log, CONSUMER_GROUP, Arc::new(assigner), 4096)?;
        let failure = subscription.failure();
        let to = supervisor.clone();
        let mut inputs = Inputs::new(events, options.acked);
        let forwarder = tokio::spawn(async move {
            while let Some(input) = inputs.recv().await {
                let msg = match input {
                    Input::Acked(r) => SupervisorMsg::Acked(r),
                    Input::Stream(ev) => {
                        // The projector's copy of a revocation does not hold
                        // it open (it may be far behind, e.g. Postgres down).
                        let copy = || match &ev {
                            ConsumerEvent::Revoked(parts, guard) => ConsumerEvent::Revoked(
                                parts.clone(),
                                RevokeGuard::detached(guard.lost()),
                            ),
                            other => other.clone(),
                        };
                        if let Some(tap) = &tap
                            && tap.send(copy()).is_err()
                        {
                            tracing::error!("the projector stopped following the engine's stream");
                        }
                        SupervisorMsg::Log(ev)
                    }
                };
                if to.send_message(msg).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            supervisor,
            subscription: std::sync::Mutex::new(Some(subscription)),
            forwarder,
            failure,
        })
    }

    /// Resolves if this node's membership of the group fails for good (e.g.
    /// another process joined with its node_id): it then owns nothing, and
    /// must stop running workflows at once.
    pub fn failure(&self) -> FailureWatch {
        self.failure.clone()
    }

    pub async fn status(&self) -> Option<EngineStatus> {
        ractor::call_t!(self.supervisor, SupervisorMsg::Status, 2000).ok()
    }

    /// Graceful stop: starts no more steps and lets the agent calls in flight
    /// finish and their results reach the log, for up to `grace`; then leaves
    /// the group and stops. A step still in flight after `grace` is re-run by
    /// the next owner (same Idempotency-Key).
    pub async fn stop(&self, grace: Duration) {
        let _ = self.supervisor.send_message(SupervisorMsg::Drain);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match self.status().await {
                Some(s) if s.running_workflows > 0 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some(s) => {
                    if s.running_workflows > 0 {
                        tracing::warn!(
                            in_flight = s.running_workflows,
                            "shutdown grace ran out; the next owner re-runs the steps in flight"
                        );
                    }
                    break;
                }
                None => break,
            }
        }
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
