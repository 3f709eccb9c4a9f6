use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use agentflow_core::{Record, RecordError};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use tokio::sync::mpsc;

use crate::{LogConfig, LogError};

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    /// The next offset to read.
    Offset(i64),
}

/// Chooses the start of each newly assigned partition. Called on the
/// subscription's own thread, during the rebalance: it may block (e.g. to read
/// stored offsets from Postgres), and the partitions are not read until it
/// returns.
pub trait Assigner: Send + Sync + 'static {
    fn start_positions(&self, partitions: &[i32]) -> Vec<StartAt>;
}

/// A partition this member now owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub partition: i32,
    /// The high watermark when it was assigned: records below it existed
    /// before this member took over (replay); records at or above it are new.
    pub high_watermark: i64,
    /// The first offset still in the log when it was assigned. A partition
    /// whose low and high watermarks meet has nothing to replay.
    pub low_watermark: i64,
}

#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    /// A record this code cannot read (corrupt, or from a newer version) is
    /// passed on as an error so the owner can log and skip it.
    pub record: Result<Record, RecordError>,
}

#[derive(Debug, Clone)]
pub enum ConsumerEvent {
    /// Always sent before the first record of those partitions.
    Assigned(Vec<Assigned>),
    /// Sent before the partitions are given up. The partitions go (and
    /// another member may take them) once every clone of the guard is
    /// dropped, or after [`LogConfig::revoke_grace`].
    Revoked(Vec<i32>, RevokeGuard),
    Record(LogRecord),
}

/// Holds a revocation open: whoever still has work on revoked partitions
/// (an agent call in flight whose result must reach the log) keeps a clone
/// until it is done. Dropping the last clone lets the partitions go.
#[derive(Debug, Clone)]
pub struct RevokeGuard {
    _held: Arc<std::sync::mpsc::SyncSender<()>>,
    lost: bool,
}

impl RevokeGuard {
    /// A guard and the wait that ends when every clone of it is dropped.
    /// `lost`: see [`RevokeGuard::lost`].
    pub fn new(lost: bool) -> (Self, RevokeWait) {
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        (
            Self {
                _held: Arc::new(tx),
                lost,
            },
            RevokeWait(rx),
        )
    }

    /// The partitions were lost, not handed over: this member's session
    /// expired (it was stalled or cut off) and another member may own them
    /// already. Nothing more may be written for them: stop, don't finish.
    pub fn lost(&self) -> bool {
        self.lost
    }
}

impl RevokeGuard {
    /// A guard that holds nothing open, for copies of the event handed to
    /// someone who has no say in the revocation.
    pub fn detached(lost: bool) -> Self {
        Self::new(lost).0
    }
}

/// See [`RevokeGuard::new`].
pub struct RevokeWait(std::sync::mpsc::Receiver<()>);

impl RevokeWait {
    /// Blocks until every guard is dropped or `limit` passes; true if they were.
    pub fn wait(self, limit: Duration) -> bool {
        !matches!(
            self.0.recv_timeout(limit),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    }
}

/// A consumer group member following the topic on a thread of its own.
/// Dropping it stops the thread (see [`Subscription::stop`] for how it
/// leaves the group).
pub struct Subscription {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    failure: FailureWatch,
}

/// Why a subscription stopped on its own: the broker will not let this
/// member go on, and nothing it does can change that. The process must stop
/// acting on its partitions (another member owns them) and tell the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupFailure {
    /// Another live process joined the group with this member's static id
    /// (`group.instance.id`), and the broker fenced this one out.
    #[error(
        "another process joined consumer group `{group}` as static member `{instance_id}`, \
         so the broker fenced this one out: two live processes share node_id `{node_id}`. \
         Give each process its own node_id (AGENTFLOW_NODE_ID); the default, {{host}}-{{port}} \
         of http_addr, collides only when two machines share a host name or one host \
         listens on one port at two addresses"
    )]
    Fenced {
        group: String,
        instance_id: String,
        node_id: String,
    },
    /// Any other error librdkafka declares fatal for the consumer.
    #[error("consumer group `{group}`: fatal error: {reason}")]
    Fatal { group: String, reason: String },
}

/// Resolves when a [`Subscription`] fails for good (see [`GroupFailure`]);
/// never, if it does not.
#[derive(Debug, Clone)]
pub struct FailureWatch(tokio::sync::watch::Receiver<Option<GroupFailure>>);

impl FailureWatch {
    /// A watch that never fires (for a component with no subscription).
    pub fn never() -> Self {
        Self(tokio::sync::watch::channel(None).1)
    }

    /// Waits for the failure.
    pub async fn failed(mut self) -> GroupFailure {
        loop {
            if let Some(f) = self.0.borrow_and_update().clone() {
                return f;
            }
            if self.0.changed().await.is_err() {
                // The subscription ended without failing (or there is none).
                std::future::pending::<()>().await;
            }
        }
    }
}

pub const RECORDS_CONSUMED: &str = "agentflow_log_records_consumed_total";

struct Ctx {
    tx: mpsc::Sender<ConsumerEvent>,
    assigner: Arc<dyn Assigner>,
    topic: String,
    watermarks: BaseConsumer,
    stop: Arc<AtomicBool>,
    revoke_grace: Duration,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let starts = self.assigner.start_positions(&partitions);
                let mut assigned = Vec::with_capacity(partitions.len());
                for (p, start) in partitions.iter().zip(starts) {
                    let offset = match start {
                        StartAt::Beginning => Offset::Beginning,
                        StartAt::Offset(o) => Offset::Offset(o),
                    };
                    if let Err(e) = tpl.set_partition_offset(&self.topic, *p, offset) {
                        tracing::error!(partition = p, error = %e, "cannot set start offset");
                    }
                    let (low_watermark, high_watermark) = self.watermarks(*p);
                    assigned.push(Assigned {
                        partition: *p,
                        high_watermark,
                        low_watermark,
                    });
                }
                tracing::info!(?partitions, "partitions assigned");
                if self
                    .tx
                    .blocking_send(ConsumerEvent::Assigned(assigned))
                    .is_err()
                {
                    self.stop.store(true, Ordering::Relaxed);
                }
                let assigned = if cooperative(consumer) {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(
                    ?partitions,
                    lost = consumer.assignment_lost(),
                    "partitions revoked"
                );
                let lost = consumer.assignment_lost();
                let (guard, wait) = RevokeGuard::new(lost);
                if self
                    .tx
                    .blocking_send(ConsumerEvent::Revoked(partitions.clone(), guard))
                    .is_err()
                {
                    self.stop.store(true, Ordering::Relaxed);
                }
                // Hand over cleanly: the owner finishes what it has in flight
                // on these partitions (and its results reach the log) before
                // another member may take them, so a rebalance repeats no
                // call. The other partitions of the group are not held up
                // (incremental rebalancing).
                let began = std::time::Instant::now();
                if !wait.wait(self.revoke_grace) {
                    tracing::warn!(?partitions, grace = ?self.revoke_grace,
                        "work on revoked partitions still in flight after the grace; giving them up");
                }
                tracing::debug!(?partitions, took = ?began.elapsed(), "revocation done");
                if let Err(e) = unassign(consumer, tpl) {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = unassign(consumer, tpl);
            }
        }
    }
}

/// Whether the group rebalances incrementally (only the partitions that
/// move are revoked and assigned), as `cooperative-sticky` does.
fn cooperative(consumer: &BaseConsumer<Ctx>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

fn unassign(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> KafkaResult<()> {
    if cooperative(consumer) {
        consumer.incremental_unassign(tpl)
    } else {
        consumer.unassign()
    }
}

impl Ctx {
    /// Retries until the broker answers: a partition whose end is unknown
    /// cannot be told apart into replay and live.
    fn watermarks(&self, partition: i32) -> (i64, i64) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self
                .watermarks
                .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))
            {
                Ok(w) => return w,
                Err(e) if !self.stop.load(Ordering::Relaxed) => {
                    tracing::warn!(partition, error = %e, "cannot read high watermark, retrying");
                    // After every broker was down, this client's metadata may
                    // no longer know the partition ("Local: Unknown
                    // partition") and asking for watermarks does not refresh
                    // it: ask for the topic's metadata, then try again.
                    let _ = self
                        .watermarks
                        .fetch_metadata(Some(&self.topic), Duration::from_secs(5));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(_) => return (0, 0),
            }
        }
    }
}

impl Subscription {
    /// Joins consumer group `group` on the topic and starts delivering
    /// [`ConsumerEvent`]s. Offsets are never committed to the broker: where a
    /// partition starts is the [`Assigner`]'s decision.
    pub fn start(
        config: &LogConfig,
        group: &str,
        assigner: Arc<dyn Assigner>,
        buffer: usize,
    ) -> Result<(Self, mpsc::Receiver<ConsumerEvent>), LogError> {
        let (tx, rx) = mpsc::channel(buffer);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            tx: tx.clone(),
            assigner,
            topic: config.topic.clone(),
            watermarks: config.client().create()?,
            stop: stop.clone(),
            revoke_grace: config.revoke_grace,
        };
        let mut client = config.client();
        let group_name = format!("{}{group}", config.group_prefix);
        let instance_id = config
            .group_instance_id
            .as_ref()
            .map(|id| format!("{}{group}-{id}", config.group_prefix));
        // Static membership (KIP-345): a member that names itself keeps its
        // partitions across a restart within the session timeout — the
        // coordinator hands the same member its assignment back at once,
        // with no rebalance — instead of joining as a stranger and waiting
        // for its dead self to expire.
        if let Some(id) = &instance_id {
            client.set("group.instance.id", id);
        }
        let consumer: BaseConsumer<Ctx> = client
            .set("group.id", &group_name)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 5)
                    .max(100)
                    .to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                config.fetch_wait.as_millis().to_string(),
            )
            // Incremental rebalancing: when a node joins or leaves, only the
            // partitions that move are revoked. With an eager strategy every
            // member gives up every partition at each rebalance, and the
            // engine stops the workflows of a revoked partition mid-step:
            // the survivors would repeat calls whenever another node comes
            // or goes.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create_with_context(ctx)?;
        consumer.subscribe(&[&config.topic])?;
        let (failed, failure) = tokio::sync::watch::channel(None);
        let member = Member {
            group: group_name,
            instance_id,
            node_id: config.group_instance_id.clone().unwrap_or_default(),
            failed,
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("log-{group}"))
            .spawn({
                let payloads = crate::Payloads::new(config);
                move || run(consumer, payloads, tx, thread_stop, member)
            })
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        Ok((
            Self {
                stop,
                thread: Some(thread),
                failure: FailureWatch(failure),
            },
            rx,
        ))
    }

    /// Resolves if this member fails for good (e.g. fenced by another
    /// process with its static id); the subscription has then stopped.
    pub fn failure(&self) -> FailureWatch {
        self.failure.clone()
    }

    /// Stops following the topic, waiting at most `timeout` for the consumer
    /// to close (closing blocks in librdkafka, so the wait runs on a
    /// blocking thread).
    ///
    /// A dynamic member leaves the group, so its partitions move at once. A
    /// static member leaves too when the group has other members, so they
    /// take its partitions at once; alone in its group it does not leave, so
    /// that it takes its partitions straight back when restarted within the
    /// session timeout (leaving would make the broker form the group anew,
    /// which waits `group.initial.rebalance.delay.ms`, 3 s on Kafka's
    /// defaults). A node that joins meanwhile waits for the session timeout.
    pub async fn stop(mut self, timeout: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + timeout;
                while !t.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Who this member is in its group, and where it reports a failure.
struct Member {
    group: String,
    instance_id: Option<String>,
    node_id: String,
    failed: tokio::sync::watch::Sender<Option<GroupFailure>>,
}

impl Member {
    /// The client's fatal error, if it has one: the consumer is then of no
    /// more use (librdkafka fences a static member for good when another
    /// process joins with its id).
    fn fatal(&self, consumer: &BaseConsumer<Ctx>) -> Option<GroupFailure> {
        let (code, reason) = consumer.client().fatal_error()?;
        Some(match (code, &self.instance_id) {
            (RDKafkaErrorCode::FencedInstanceId, Some(id)) => GroupFailure::Fenced {
                group: self.group.clone(),
                instance_id: id.clone(),
                node_id: self.node_id.clone(),
            },
            _ => GroupFailure::Fatal {
                group: self.group.clone(),
                reason,
            },
        })
    }

    /// Leaves the group. A dynamic member leaves as the consumer closes. A
    /// static one does not (KIP-345): librdkafka sends its LeaveGroup only
    /// when it unsubscribes and the unassignment is done before the close.
    /// So serve the revocation here, until the group no longer lists this
    /// member (the broker names a static member `{group.instance.id}-{uuid}`)
    /// or `limit` passes.
    fn leave(&self, consumer: &BaseConsumer<Ctx>, limit: Duration) {
        consumer.unsubscribe();
        let Some(id) = &self.instance_id else {
            return;
        };
        let me = format!("{id}-");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            // Records still buffered are dropped: the next owner reads them.
            let _ = consumer.poll(Duration::from_millis(50));
            let listed = consumer
                .fetch_group_list(Some(&self.group), Duration::from_millis(500))
                .map(|l| {
                    l.groups()
                        .iter()
                        .flat_map(|g| g.members())
                        .any(|m| m.id().starts_with(&me))
                })
                .unwrap_or(true);
            if !listed {
                tracing::info!(group = %self.group, "left the group");
                return;
            }
        }
        tracing::warn!(group = %self.group, ?limit,
            "still a member after the limit: its partitions move when its session times out");
    }

    /// Whether to leave the group on the way out (see [`Subscription::stop`]).
    fn leave_on_stop(&self, consumer: &BaseConsumer<Ctx>) -> bool {
        if self.instance_id.is_none() {
            return true;
        }
        match consumer.fetch_group_list(Some(&self.group), Duration::from_secs(2)) {
            Ok(list) => {
                let members: usize = list
                    .groups()
                    .iter()
                    .filter(|g| g.name() == self.group)
                    .map(|g| g.members().len())
                    .sum();
                tracing::info!(
                    group = %self.group,
                    members,
                    "static member stopping: {}",
                    if members > 1 {
                        "leaving the group, so the others take its partitions at once"
                    } else {
                        "alone in the group, keeping its place for a restart"
                    }
                );
                members > 1
            }
            // Not knowing, hand over: slower to restart alone, never slower
            // for the others.
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "cannot list the group's members; leaving it");
                true
            }
        }
    }
}

fn run(
    consumer: BaseConsumer<Ctx>,
    mut payloads: crate::Payloads,
    tx: mpsc::Sender<ConsumerEvent>,
    stop: Arc<AtomicBool>,
    member: Member,
) {
    let counter = metrics::counter!(RECORDS_CONSUMED);
    while !stop.load(Ordering::Relaxed) {
        if let Some(failure) = member.fatal(&consumer) {
            tracing::error!("{failure}");
            let _ = member.failed.send(Some(failure));
            // Nothing more to say to the group: another member has this
            // one's place. Closing can hang in librdkafka; this thread is
            // ours alone, so at worst it lingers.
            drop(consumer);
            return;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) if member.fatal(&consumer).is_some() => {
                tracing::debug!(error = %e, "consumer failed");
            }
            Some(Err(e)) => {
                static LINES: crate::Throttle = crate::Throttle::per_second(1);
                if let Some(suppressed) = LINES.allow() {
                    tracing::warn!(error = %e, suppressed, "consumer error");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(Ok(m)) => {
                counter.increment(1);
                // An output kept out of its record is read back here, so
                // every follower sees the record whole.
                let record = Record::from_bytes_with(m.payload().unwrap_or_default(), &mut |r| {
                    payloads.resolve(r)
                });
                let ev = ConsumerEvent::Record(LogRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    record,
                });
                if tx.blocking_send(ev).is_err() {
                    break;
                }
            }
        }
    }
    // Leaving makes the partitions move at once rather than after the
    // session timeout. Closing can hang in librdkafka; this thread is ours
    // alone, so at worst it lingers.
    if member.leave_on_stop(&consumer) {
        member.leave(&consumer, Duration::from_secs(3));
    }
    drop(consumer);
}
