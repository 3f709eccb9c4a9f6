//! The projector: a member of the `projector` consumer group that folds the
//! log into Postgres. Each batch of records and the partition offsets after
//! it are written in one transaction, and a newly assigned partition starts
//! at the offset stored there — so a restart neither loses nor doubles.
//! [`Progress`] tells the API of this process how far that has come.

mod progress;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_log::{
    Assigner, Backoff, ConsumerEvent, EventSource, FailureWatch, Input, Inputs, LogConfig,
    LogError, LogRecord, Origin, Retry, StartAt, Subscription, Throttle, always,
};
use agentflow_store::{Positioned, ProjectionCache, ProjectionWriter, StoreError};

pub use progress::{Progress, WorkflowWatch};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const CONSUMER_GROUP: &str = "projector";
pub const BATCH_SECONDS: &str = "agentflow_projector_batch_seconds";
pub const RECORDS_APPLIED: &str = "agentflow_projector_records_total";
pub const LAG_SECONDS: &str = "agentflow_projector_lag_seconds";
pub const QUARANTINED: &str = "agentflow_projector_quarantined_total";
pub const WRITE_FAILURES: &str = "agentflow_projector_write_failures_total";

/// Up to this many records go in one transaction.
const MAX_BATCH: usize = 1000;

/// Postgres being away is waited for without a bound: the log keeps
/// everything meanwhile, so nothing is lost.
static POSTGRES_AWAY_LINES: Throttle = Throttle::per_second(1);
const UNTIL_POSTGRES_ANSWERS: Retry<StoreError> = Retry {
    backoff: Backoff::forever(Duration::from_millis(100), Duration::from_secs(5)),
    retryable: always,
    lines: &POSTGRES_AWAY_LINES,
};

struct StoredOffsets {
    store: ProjectionWriter,
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
    metrics::describe_counter!(
        QUARANTINED,
        "Records the projector could not write or read, kept in quarantined_records."
    );
    metrics::describe_counter!(
        WRITE_FAILURES,
        "Projector writes Postgres refused (each try; Postgres being away is not counted). \
         A write that keeps failing is narrowed to its record, which is quarantined."
    );
}

pub struct Projector {
    subscription: std::sync::Mutex<Option<Subscription>>,
    task: JoinHandle<()>,
    failure: FailureWatch,
}

impl Projector {
    /// Joins the `projector` group. With `acked` (see
    /// [`agentflow_log::Producer::with_acked`]), what this process appends is
    /// projected as soon as the broker acknowledges it, without waiting to
    /// fetch it back; the group's stream still delivers everything.
    pub fn start(
        log: &LogConfig,
        store: ProjectionWriter,
        progress: Progress,
        acked: Option<mpsc::UnboundedReceiver<LogRecord>>,
    ) -> Result<Self, LogError> {
        describe();
        let assigner = StoredOffsets {
            store: store.clone(),
            topic: log.topic.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let (subscription, events) =
            Subscription::start(log, CONSUMER_GROUP, Arc::new(assigner), 8192)?;
        let failure = subscription.failure();
        let task = tokio::spawn(run(
            Inputs::new(events, acked),
            store,
            log.topic.clone(),
            progress,
        ));
        Ok(Self {
            subscription: std::sync::Mutex::new(Some(subscription)),
            task,
            failure,
        })
    }

    /// Follows another consumer's stream (the engine's, in one process)
    /// instead of a subscription of its own. That stream starts partitions at
    /// the checkpoint or earlier; records below the stored offsets are
    /// skipped. `acked` as for [`Self::start`].
    ///
    /// The sender never waits for us: while Postgres is down the backlog
    /// waits here, in memory, and is written when it is back.
    pub fn follow(
        events: mpsc::UnboundedReceiver<ConsumerEvent>,
        acked: Option<mpsc::UnboundedReceiver<LogRecord>>,
        store: ProjectionWriter,
        topic: &str,
        progress: Progress,
    ) -> Self {
        describe();
        let task = tokio::spawn(run(
            Inputs::new(events, acked),
            store,
            topic.to_owned(),
            progress,
        ));
        Self {
            subscription: std::sync::Mutex::new(None),
            task,
            failure: FailureWatch::never(),
        }
    }

    /// Resolves if this process's membership of the `projector` group fails
    /// for good (e.g. another process joined with its node_id); never for a
    /// projector that follows another consumer's stream.
    pub fn failure(&self) -> FailureWatch {
        self.failure.clone()
    }

    pub async fn stop(&self) {
        let sub = self.subscription.lock().expect("not poisoned").take();
        if let Some(s) = sub {
            s.stop(Duration::from_secs(5)).await;
        }
        self.task.abort();
    }
}

async fn run<E: EventSource>(
    mut inputs: Inputs<E>,
    store: ProjectionWriter,
    topic: String,
    progress: Progress,
) {
    // Partition → the next offset to take: everything before it is in
    // Postgres or in the batch being written.
    let mut owned: HashMap<i32, i64> = HashMap::new();
    let mut batch: Vec<Positioned> = Vec::with_capacity(MAX_BATCH);
    // Records that could not be read: (partition, offset, why).
    let mut unreadable: Vec<(i32, i64, String)> = Vec::new();
    let mut cache = ProjectionCache::default();
    loop {
        let Some(first) = inputs.recv().await else {
            return;
        };
        let mut next = Some(first);
        // Take what is already waiting, up to a batch.
        while let Some(input) = next.take() {
            match input {
                Input::Stream(ConsumerEvent::Assigned(parts)) => {
                    let partitions: Vec<i32> = parts.iter().map(|a| a.partition).collect();
                    let from = claim(&store, &topic, &partitions).await;
                    owned.extend(partitions.into_iter().zip(from));
                }
                Input::Stream(ConsumerEvent::Revoked(parts, _)) => {
                    for p in &parts {
                        owned.remove(p);
                    }
                    batch.retain(|r| owned.contains_key(&r.partition));
                }
                Input::Stream(ConsumerEvent::Record(lr)) => {
                    take(&mut owned, &mut batch, &mut unreadable, lr, Origin::Stream);
                }
                Input::Acked(lr) => {
                    take(&mut owned, &mut batch, &mut unreadable, lr, Origin::Acked);
                }
            }
            if batch.len() < MAX_BATCH {
                next = inputs.try_recv();
            }
        }
        if !batch.is_empty() {
            write(&store, &topic, &progress, &batch, &mut cache).await;
            batch.clear();
        }
        for (partition, offset, why) in unreadable.drain(..) {
            quarantine_unreadable(&store, &topic, &progress, partition, offset, &why).await;
        }
    }
}

/// Adds the record to the batch if its partition is ours and it is due (to
/// `unreadable` if it is not a record this code can read).
fn take(
    owned: &mut HashMap<i32, i64>,
    batch: &mut Vec<Positioned>,
    unreadable: &mut Vec<(i32, i64, String)>,
    lr: LogRecord,
    origin: Origin,
) {
    let Some(next) = owned.get_mut(&lr.partition) else {
        return;
    };
    if !origin.due(*next, lr.offset) {
        return;
    }
    *next = lr.offset + 1;
    match lr.record {
        Ok(record) => batch.push(Positioned {
            partition: lr.partition,
            offset: lr.offset,
            record,
        }),
        Err(e) => unreadable.push((lr.partition, lr.offset, format!("unreadable record: {e}"))),
    }
}

/// Where each partition's projection stands, retrying until Postgres answers.
async fn claim(store: &ProjectionWriter, topic: &str, partitions: &[i32]) -> Vec<i64> {
    UNTIL_POSTGRES_ANSWERS
        .until_ok(
            || store.claim_partitions(topic, partitions),
            |e, suppressed| {
                tracing::warn!(error = %e, suppressed, "cannot read projector offsets, retrying");
            },
        )
        .await
}

/// Writes one batch. A record Postgres keeps refusing is quarantined after
/// bounded tries ([`ProjectionWriter::project`]); while Postgres is away this waits
/// for it without a bound: the log keeps everything meanwhile, so nothing
/// is lost, and the offsets in the same transaction make a retry after an
/// unknown outcome harmless.
async fn write(
    store: &ProjectionWriter,
    topic: &str,
    progress: &Progress,
    batch: &[Positioned],
    cache: &mut ProjectionCache,
) {
    let mut started = Instant::now();
    // Each try borrows the cache in turn.
    let cache = tokio::sync::Mutex::new(cache);
    let out = UNTIL_POSTGRES_ANSWERS
        .until_ok(
            || {
                started = Instant::now();
                async { store.project(topic, batch, *cache.lock().await).await }
            },
            |e, suppressed| {
                tracing::warn!(error = %e, records = batch.len(), suppressed,
                    "projector cannot reach Postgres, waiting for it");
            },
        )
        .await;
    metrics::counter!(QUARANTINED).increment(out.quarantined.len() as u64);
    metrics::counter!(WRITE_FAILURES).increment(u64::from(out.write_failures));
    metrics::histogram!(BATCH_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(RECORDS_APPLIED, "result" => "applied").increment(out.applied as u64);
    metrics::counter!(RECORDS_APPLIED, "result" => "rejected").increment(out.rejected as u64);
    metrics::counter!(RECORDS_APPLIED, "result" => "duplicate").increment(out.duplicates as u64);
    if let Some(last) = batch.last() {
        let age = chrono_age(last.record.timestamp);
        metrics::gauge!(LAG_SECONDS).set(age);
    }
    // States first: whoever wakes at the offsets may look for them.
    progress.statuses_changed(&out.status_changed);
    progress.advance(&out.next_offsets);
}

/// Keeps an unreadable record aside and consumes its offset, retrying until
/// Postgres takes it (so a partition whose last record is unreadable still
/// reaches the log's end).
async fn quarantine_unreadable(
    store: &ProjectionWriter,
    topic: &str,
    progress: &Progress,
    partition: i32,
    offset: i64,
    why: &str,
) {
    UNTIL_POSTGRES_ANSWERS
        .until_ok(
            || store.quarantine(topic, partition, offset, Err(why), why),
            |e, suppressed| {
                tracing::warn!(error = %e, partition, offset, suppressed,
                    "cannot quarantine a record, retrying");
            },
        )
        .await;
    metrics::counter!(QUARANTINED).increment(1);
    progress.advance(&[(partition, offset + 1)]);
}

fn chrono_age(ts: chrono::DateTime<chrono::Utc>) -> f64 {
    (chrono::Utc::now() - ts).num_milliseconds().max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentflow_core::{Event, Record, UserId, WorkflowId};

    fn at(partition: i32, offset: i64) -> LogRecord {
        LogRecord {
            partition,
            offset,
            record: Ok(Record::new(
                WorkflowId::new(),
                UserId(1),
                1,
                chrono::Utc::now(),
                Event::Cancelled,
            )),
        }
    }

    fn offsets(batch: &[Positioned]) -> Vec<(i32, i64)> {
        batch.iter().map(|r| (r.partition, r.offset)).collect()
    }

    #[test]
    fn acknowledged_records_are_taken_only_in_order_and_the_stream_fills_gaps() {
        // Partition 0 is ours from offset 10 (what Postgres holds); 1 is not.
        let mut owned = HashMap::from([(0, 10)]);
        let mut batch = Vec::new();
        let mut unreadable = Vec::new();
        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(1, 0),
            Origin::Acked,
        );
        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(1, 0),
            Origin::Stream,
        );
        assert!(batch.is_empty(), "not our partition");

        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(0, 10),
            Origin::Acked,
        );
        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(0, 11),
            Origin::Acked,
        );
        // Another process wrote 12: our 13 waits for the stream.
        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(0, 13),
            Origin::Acked,
        );
        assert_eq!(offsets(&batch), [(0, 10), (0, 11)]);

        // The stream catches up: what was taken already is not taken again.
        for o in 9..=13 {
            take(
                &mut owned,
                &mut batch,
                &mut unreadable,
                at(0, o),
                Origin::Stream,
            );
        }
        assert_eq!(offsets(&batch), [(0, 10), (0, 11), (0, 12), (0, 13)]);
        // Its copy of 13 came too late for the acknowledgement's.
        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(0, 13),
            Origin::Acked,
        );
        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(0, 14),
            Origin::Acked,
        );
        // The stream may skip offsets it will never deliver.
        take(
            &mut owned,
            &mut batch,
            &mut unreadable,
            at(0, 17),
            Origin::Stream,
        );
        assert_eq!(
            offsets(&batch),
            [(0, 10), (0, 11), (0, 12), (0, 13), (0, 14), (0, 17)]
        );
        assert_eq!(owned[&0], 18);
    }
}
