//! Where the engine starts a partition it is given: from the projection's
//! checkpoint when there is one (bounded recovery: only the log's tail is
//! replayed), else from the beginning of the log (always correct; the log
//! is the truth, Postgres may be empty, behind or down).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentflow_log::{Assigner, Producer, StartAt};
use agentflow_store::{CheckpointReader, PartitionSnapshot};

/// Snapshots loaded during a rebalance, taken by the supervisor when it
/// learns of the assignment (which the subscription sends afterwards).
pub(crate) type Stash = Arc<Mutex<HashMap<i32, PartitionSnapshot>>>;

/// How long a rebalance waits for Postgres before replaying from the start.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a rebalance waits for this node's queued appends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct FromCheckpoints {
    pub store: Option<CheckpointReader>,
    /// This node's producer: flushed before a partition is replayed.
    pub producer: Producer,
    pub topic: String,
    pub runtime: tokio::runtime::Handle,
    pub stash: Stash,
}

impl Assigner for FromCheckpoints {
    fn start_positions(&self, partitions: &[i32]) -> Vec<StartAt> {
        // Records that actors stopped at the last revocation had appended
        // but not seen acknowledged may still sit in the producer's queue
        // (e.g. after a broker outage). Let them land first, so the replay
        // sees them and does not run those steps again.
        if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
            tracing::warn!(error = %e, "producer not flushed before replay; steps appended late may run again");
        }
        let snapshots = match &self.store {
            None => Vec::new(),
            // On the subscription's own thread: blocking is allowed here.
            Some(store) => match self.runtime.block_on(async {
                tokio::time::timeout(LOAD_TIMEOUT, store.engine_snapshot(&self.topic, partitions))
                    .await
            }) {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "no checkpoint from Postgres; replaying from the beginning");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!("Postgres did not answer in time; replaying from the beginning");
                    Vec::new()
                }
            },
        };
        let mut stash = self.stash.lock().expect("not poisoned");
        partitions
            .iter()
            .map(|p| {
                stash.remove(p);
                match snapshots.iter().find(|s| s.partition == *p) {
                    Some(s) => {
                        let at = StartAt::Offset(s.next_offset);
                        stash.insert(*p, s.clone());
                        at
                    }
                    None => StartAt::Beginning,
                }
            })
            .collect()
    }
}
