//! The projector: a member of the `projector` consumer group that folds the
//! log into Postgres. Each batch of records and the partition offsets after
//! it are written in one transaction, and a newly assigned partition starts
//! at the offset stored there — so a restart neither loses nor doubles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_log::{Assigner, ConsumerEvent, LogConfig, LogError, StartAt, Subscription};
use agentflow_store::{Positioned, Progress, ProjectionCache, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const CONSUMER_GROUP: &str = "projector";
pub const BATCH_SECONDS: &str = "agentflow_projector_batch_seconds";
pub const RECORDS_APPLIED: &str = "agentflow_projector_records_total";
pub const LAG_SECONDS: &str = "agentflow_projector_lag_seconds";

/// Up to this many records go in one transaction.
const MAX_BATCH: usize = 1000;

struct StoredOffsets {
    store: Store,
    topic: String,
    runtime: tokio::runtime::Handle,
}

impl Assigner for StoredOffsets {
    fn start_positions(&self, partitions: &[i32]) -> Vec<StartAt> {
        // On the subscription's own thread, so blocking here is allowed; the
        // partitions are not read until Postgres says where they start.
        self.runtime
            .block_on(claim(&self.store, &self.topic, partitions))
            .into_iter()
            .map(StartAt::Offset)
            .collect()
    }
}

fn describe() {
    metrics::describe_histogram!(
        BATCH_SECONDS,
        metrics::Unit::Seconds,
        "Time to write one projector batch."
    );
    metrics::describe_counter!(RECORDS_APPLIED, "Records the projector wrote, by result.");
    metrics::describe_gauge!(LAG_SECONDS, "Age of the newest record the projector wrote.");
}

pub struct Projector {
    subscription: std::sync::Mutex<Option<Subscription>>,
    task: JoinHandle<()>,
}

impl Projector {
    pub fn start(log: &LogConfig, store: Store, progress: Progress) -> Result<Self, LogError> {
        describe();
        let assigner = StoredOffsets {
            store: store.clone(),
            topic: log.topic.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let (subscription, events) =
            Subscription::start(log, CONSUMER_GROUP, Arc::new(assigner), 8192)?;
        let task = tokio::spawn(run(events, store, log.topic.clone(), progress));
        Ok(Self {
            subscription: std::sync::Mutex::new(Some(subscription)),
            task,
        })
    }

    /// Follows another consumer's stream (the engine's, in one process)
    /// instead of a subscription of its own. That stream starts partitions at
    /// the checkpoint or earlier; records below the stored offsets are
    /// skipped.
    pub fn follow(
        mut events: mpsc::UnboundedReceiver<ConsumerEvent>,
        store: Store,
        topic: &str,
        progress: Progress,
    ) -> Self {
        describe();
        // The sender never waits for us: while Postgres is down the backlog
        // waits here, in memory, and is written when it is back.
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let topic = topic.to_owned();
        let task = tokio::spawn(async move {
            let forward = async move {
                while let Some(ev) = events.recv().await {
                    if tx.send(ev).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(forward, run(rx, store, topic, progress));
        });
        Self {
            subscription: std::sync::Mutex::new(None),
            task,
        }
    }

    pub async fn stop(&self) {
        let sub = self.subscription.lock().expect("not poisoned").take();
        if let Some(s) = sub {
            s.stop(Duration::from_secs(5)).await;
        }
        self.task.abort();
    }
}

async fn run(
    mut events: mpsc::Receiver<ConsumerEvent>,
    store: Store,
    topic: String,
    progress: Progress,
) {
    // Partition → the first offset not yet in Postgres.
    let mut owned: HashMap<i32, i64> = HashMap::new();
    let mut batch: Vec<Positioned> = Vec::with_capacity(MAX_BATCH);
    let mut cache = ProjectionCache::default();
    loop {
        let Some(first) = events.recv().await else {
            return;
        };
        let mut next = Some(first);
        // Take what is already waiting, up to a batch.
        while let Some(ev) = next.take() {
            match ev {
                ConsumerEvent::Assigned(parts) => {
                    let partitions: Vec<i32> = parts.iter().map(|a| a.partition).collect();
                    let from = claim(&store, &topic, &partitions).await;
                    owned.extend(partitions.into_iter().zip(from));
                }
                ConsumerEvent::Revoked(parts) => {
                    for p in &parts {
                        owned.remove(p);
                    }
                    batch.retain(|r| owned.contains_key(&r.partition));
                }
                ConsumerEvent::Record(lr) => match lr.record {
                    Ok(record)
                        if owned
                            .get(&lr.partition)
                            .is_some_and(|from| lr.offset >= *from) =>
                    {
                        batch.push(Positioned {
                            partition: lr.partition,
                            offset: lr.offset,
                            record,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(partition = lr.partition, offset = lr.offset, error = %e,
                            "unreadable record skipped by the projector");
                    }
                },
            }
            if batch.len() < MAX_BATCH {
                next = events.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        write(&store, &topic, &progress, &batch, &mut cache).await;
        batch.clear();
    }
}

/// Where each partition's projection stands, retrying until Postgres answers.
async fn claim(store: &Store, topic: &str, partitions: &[i32]) -> Vec<i64> {
    let mut delay = Duration::from_millis(100);
    loop {
        match store.claim_partitions(topic, partitions).await {
            Ok(from) => return from,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read projector offsets, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Writes one batch, retrying until Postgres takes it: the log keeps
/// everything meanwhile, so nothing is lost, and the offsets in the same
/// transaction make a retry after an unknown outcome harmless.
async fn write(
    store: &Store,
    topic: &str,
    progress: &Progress,
    batch: &[Positioned],
    cache: &mut ProjectionCache,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match store.apply_batch(topic, batch, cache).await {
            Ok(out) => {
                metrics::histogram!(BATCH_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::counter!(RECORDS_APPLIED, "result" => "applied")
                    .increment(out.applied as u64);
                metrics::counter!(RECORDS_APPLIED, "result" => "rejected")
                    .increment(out.rejected as u64);
                metrics::counter!(RECORDS_APPLIED, "result" => "duplicate")
                    .increment(out.duplicates as u64);
                if let Some(last) = batch.last() {
                    let age = chrono_age(last.record.timestamp);
                    metrics::gauge!(LAG_SECONDS).set(age);
                }
                // States first: whoever wakes at the offsets may look for them.
                progress.statuses_changed(&out.status_changed);
                progress.advance(&out.next_offsets);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), "projector write failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn chrono_age(ts: chrono::DateTime<chrono::Utc>) -> f64 {
    (chrono::Utc::now() - ts).num_milliseconds().max(0) as f64 / 1000.0
}
