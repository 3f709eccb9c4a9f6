use std::time::{Duration, Instant};

use agentflow_core::Record;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{mpsc, oneshot};

use crate::{LogConfig, LogError, LogRecord};

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// Appends records to the log. Cheap to clone; share one per process.
///
/// Records are handed to librdkafka one batch at a time: whatever was
/// appended while a batch was on its way goes together as the next batch,
/// once every record of the previous one is acknowledged. librdkafka's
/// idempotent producer has only one request per partition in flight anyway
/// (it counts messages against its limit of five requests), and while
/// records it holds wait for that request its broker thread polls without
/// sleeping: a quarter of the server's CPU under load, taken from the broker
/// it waits for. Holding them here costs nothing and lets it sleep.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    topic: String,
    queue: mpsc::UnboundedSender<Pending>,
    keep_records: bool,
    /// Outputs longer than this go to the payload topic (see [`crate::payloads`]).
    inline_output_bytes: usize,
    payload_topic: String,
    /// The payload topic's partition count, looked up on first use.
    payload_partitions: std::sync::Arc<tokio::sync::OnceCell<i32>>,
    brokers: LogConfig,
}

/// Records of one `append_all` call and where to answer.
struct Pending {
    records: Vec<Encoded>,
    reply: oneshot::Sender<Result<Vec<Position>, LogError>>,
}

struct Encoded {
    key: String,
    payload: Vec<u8>,
    event_type: &'static str,
    /// Kept for `acked`, when there is one.
    record: Option<Record>,
}

pub const APPEND_SECONDS: &str = "agentflow_log_append_seconds";

impl Producer {
    /// Must be called within a Tokio runtime (it starts the task that hands
    /// batches to librdkafka).
    pub fn new(config: &LogConfig) -> Result<Self, LogError> {
        Self::start(config, Vec::new())
    }

    /// Like [`Self::new`], and every record the broker acknowledges is also
    /// sent to each of `acked` with where it landed, in log order per
    /// partition, before its appender hears of it. Lets this process's
    /// engine and projector act on what this process appended without
    /// waiting to fetch it back.
    pub fn with_acked(
        config: &LogConfig,
        acked: Vec<mpsc::UnboundedSender<LogRecord>>,
    ) -> Result<Self, LogError> {
        Self::start(config, acked)
    }

    fn start(
        config: &LogConfig,
        acked: Vec<mpsc::UnboundedSender<LogRecord>>,
    ) -> Result<Self, LogError> {
        let inner: FutureProducer = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger.as_millis().to_string())
            // Same key → same partition as Java clients and Redpanda tooling.
            .set("partitioner", "murmur2_random")
            .create()?;
        let (queue, rx) = mpsc::unbounded_channel();
        let keep_records = !acked.is_empty();
        tokio::spawn(send_batches(inner.clone(), config.topic.clone(), rx, acked));
        Ok(Self {
            inner,
            topic: config.topic.clone(),
            queue,
            keep_records,
            inline_output_bytes: config.inline_output_bytes,
            payload_topic: config.payload_topic(),
            payload_partitions: Default::default(),
            brokers: config.clone(),
        })
    }

    /// Appends one record, keyed by its workflow id, and waits until the
    /// broker acknowledged it (all in-sync replicas). Gives up after
    /// `timeout` with [`LogError::Unavailable`]; the record may still land
    /// later: a retry then writes the same record again (same `event_id`,
    /// `seq` and parent), which the fold ignores.
    pub async fn append(&self, record: &Record, timeout: Duration) -> Result<Position, LogError> {
        let positions = self
            .append_all(std::slice::from_ref(record), timeout)
            .await?;
        Ok(positions[0])
    }

    /// Appends records in order and waits until the broker acknowledged all
    /// of them. They are queued together, so records of one workflow (one
    /// partition) travel in one batch and the idempotent producer keeps
    /// their order. On an error some may have landed: a retry of all of them
    /// writes those again, which the fold ignores (as for [`Self::append`]).
    pub async fn append_all(
        &self,
        records: &[Record],
        timeout: Duration,
    ) -> Result<Vec<Position>, LogError> {
        let started = Instant::now();
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            // A large output goes to the payload topic first; the record
            // carries its reference, appended only once every chunk landed.
            let payload = match r.large_output(self.inline_output_bytes) {
                None => r.to_bytes(),
                Some(text) => {
                    let left = timeout.saturating_sub(started.elapsed());
                    let written = tokio::time::timeout(left, self.offload(&text)).await;
                    let Ok(output_ref) = written else {
                        return Err(LogError::Unavailable(format!(
                            "no acknowledgement within {} ms",
                            timeout.as_millis()
                        )));
                    };
                    let output_ref = output_ref?;
                    if let Some(output) = r.output() {
                        crate::payloads::remember(&output_ref.sha256, text.len(), output);
                    }
                    r.to_bytes_with_ref(&output_ref)
                }
            };
            encoded.push(Encoded {
                key: r.workflow_id.to_string(),
                payload,
                event_type: r.event_type(),
                record: self.keep_records.then(|| r.clone()),
            });
        }
        let records = encoded;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { records, reply })
            .map_err(|_| LogError::Unavailable("producer closed".into()))?;
        // The delivery itself may take up to `message.timeout.ms` (minutes)
        // while the broker is down, so bound the whole wait here.
        let Ok(answer) = tokio::time::timeout(timeout, answer).await else {
            return Err(LogError::Unavailable(format!(
                "no acknowledgement within {} ms",
                timeout.as_millis()
            )));
        };
        let positions = answer.map_err(|_| LogError::Unavailable("producer closed".into()))??;
        metrics::histogram!(APPEND_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(positions)
    }

    async fn offload(&self, text: &[u8]) -> Result<agentflow_core::OutputRef, LogError> {
        let partitions = *self
            .payload_partitions
            .get_or_try_init(|| {
                let mut config = self.brokers.clone();
                config.topic = self.payload_topic.clone();
                async move {
                    let name = config.topic.clone();
                    tokio::task::spawn_blocking(move || {
                        crate::partition_count(&config, Duration::from_secs(10))
                    })
                    .await
                    .map_err(|e| LogError::Unavailable(e.to_string()))?
                    .and_then(|n| match n {
                        0 => Err(LogError::Unavailable(format!(
                            "no topic {name} (agentflow creates it at start)"
                        ))),
                        n => Ok(n as i32),
                    })
                }
            })
            .await?;
        crate::payloads::write(&self.inner, &self.payload_topic, partitions, text).await
    }

    /// Whether the broker answers a metadata request for the topic.
    pub async fn check(&self, timeout: Duration) -> Result<(), LogError> {
        use rdkafka::producer::Producer as _;
        let inner = self.inner.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
                .map_err(LogError::from)
        })
        .await
        .map_err(|e| LogError::Unavailable(e.to_string()))?
    }

    /// Waits until every queued record is acknowledged (for shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), LogError> {
        use rdkafka::producer::Producer as _;
        self.inner.flush(timeout).map_err(Into::into)
    }
}

/// Hands everything queued to librdkafka at once, waits for all of it to be
/// acknowledged, passes it to `acked`, answers each caller, and repeats.
async fn send_batches(
    inner: FutureProducer,
    topic: String,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    acked: Vec<mpsc::UnboundedSender<LogRecord>>,
) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let waits = batch.drain(..).map(|p| {
            let mut deliveries = Vec::with_capacity(p.records.len());
            let mut queued = Ok(());
            for r in &p.records {
                let headers = OwnedHeaders::new().insert(Header {
                    key: "event_type",
                    value: Some(r.event_type),
                });
                let msg = FutureRecord::to(&topic)
                    .key(&r.key)
                    .payload(&r.payload)
                    .headers(headers);
                match inner.send_result(msg) {
                    Ok(d) => deliveries.push(d),
                    Err((e, _)) => {
                        queued = Err(classify(e));
                        break;
                    }
                }
            }
            async move {
                let result: Result<Vec<Position>, LogError> = match queued {
                    Err(e) => Err(e),
                    Ok(()) => futures::future::join_all(deliveries)
                        .await
                        .into_iter()
                        .map(|r| match r {
                            Ok(Ok(d)) => Ok(Position {
                                partition: d.partition,
                                offset: d.offset,
                            }),
                            Ok(Err((e, _))) => Err(classify(e)),
                            Err(_cancelled) => Err(LogError::Unavailable("producer closed".into())),
                        })
                        .collect(),
                };
                (p, result)
            }
        });
        let mut done = futures::future::join_all(waits).await;
        if !acked.is_empty() {
            let mut landed: Vec<LogRecord> = Vec::new();
            for (p, result) in &mut done {
                let Ok(positions) = result else { continue };
                for (r, pos) in p.records.iter_mut().zip(positions.iter()) {
                    if let Some(record) = r.record.take() {
                        landed.push(LogRecord {
                            partition: pos.partition,
                            offset: pos.offset,
                            record: Ok(record),
                        });
                    }
                }
            }
            landed.sort_unstable_by_key(|r| (r.partition, r.offset));
            for r in landed {
                // A follower that is gone has nothing else to hear.
                for to in &acked[1..] {
                    let _ = to.send(r.clone());
                }
                let _ = acked[0].send(r);
            }
        }
        for (p, result) in done {
            // The caller may have given up waiting.
            let _ = p.reply.send(result);
        }
    }
}

/// Errors that mean "the broker cannot be reached now" become
/// [`LogError::Unavailable`] (a 503 to API callers); a record the broker
/// refuses for good becomes [`LogError::TooLarge`] or
/// [`LogError::Rejected`] (malformed, not allowed), which no one retries; the rest stay as they are.
pub(crate) fn classify(e: rdkafka::error::KafkaError) -> LogError {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match e.rdkafka_error_code() {
        Some(
            Code::MessageTimedOut
            | Code::QueueFull
            | Code::AllBrokersDown
            | Code::BrokerTransportFailure,
        ) => LogError::Unavailable(e.to_string()),
        Some(Code::MessageSizeTooLarge | Code::MessageBatchTooLarge | Code::InvalidMessageSize) => {
            LogError::TooLarge(e.to_string())
        }
        Some(
            Code::InvalidMessage
            | Code::InvalidRecord
            | Code::BadMessage
            | Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed,
        ) => LogError::Rejected(e.to_string()),
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;

    use super::*;

    #[test]
    fn a_record_the_broker_refuses_for_good_is_not_retriable() {
        for code in [
            Code::MessageSizeTooLarge,
            Code::MessageBatchTooLarge,
            Code::InvalidMessageSize,
            Code::InvalidRecord,
            Code::TopicAuthorizationFailed,
        ] {
            let e = classify(KafkaError::MessageProduction(code));
            assert!(
                matches!(e, LogError::TooLarge(_) | LogError::Rejected(_)),
                "{code:?}: {e:?}"
            );
            assert!(!e.is_retriable(), "{code:?}");
        }
        for code in [Code::MessageTimedOut, Code::AllBrokersDown] {
            let e = classify(KafkaError::MessageProduction(code));
            assert!(matches!(e, LogError::Unavailable(_)), "{code:?}: {e:?}");
            assert!(e.is_retriable());
        }
    }
}
