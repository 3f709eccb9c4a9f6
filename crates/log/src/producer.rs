use std::time::{Duration, Instant};

use agentflow_core::Record;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{LogConfig, LogError};

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// Appends records to the log. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    topic: String,
}

pub const APPEND_SECONDS: &str = "agentflow_log_append_seconds";

impl Producer {
    pub fn new(config: &LogConfig) -> Result<Self, LogError> {
        let inner: FutureProducer = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger.as_millis().to_string())
            // Same key → same partition as Java clients and Redpanda tooling.
            .set("partitioner", "murmur2_random")
            .create()?;
        Ok(Self {
            inner,
            topic: config.topic.clone(),
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
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let key = record.workflow_id.to_string();
            let payload = record.to_bytes();
            let headers = OwnedHeaders::new().insert(Header {
                key: "event_type",
                value: Some(record.event_type()),
            });
            let msg = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            // Queued now, in order; the acknowledgement comes through the future.
            let delivery = self.inner.send_result(msg).map_err(|(e, _)| classify(e))?;
            deliveries.push(delivery);
        }
        // The delivery itself may take up to `message.timeout.ms` (minutes)
        // while the broker is down, so bound the whole wait here.
        let Ok(results) =
            tokio::time::timeout(timeout, futures::future::join_all(deliveries)).await
        else {
            return Err(LogError::Unavailable(format!(
                "no acknowledgement within {} ms",
                timeout.as_millis()
            )));
        };
        metrics::histogram!(APPEND_SECONDS).record(started.elapsed().as_secs_f64());
        results
            .into_iter()
            .map(|r| match r {
                Ok(Ok(d)) => Ok(Position {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Ok(Err((e, _))) => Err(classify(e)),
                Err(_cancelled) => Err(LogError::Unavailable("producer closed".into())),
            })
            .collect()
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

/// Errors that mean "the broker cannot be reached now" become
/// [`LogError::Unavailable`] (a 503 to API callers); the rest stay as they are.
fn classify(e: rdkafka::error::KafkaError) -> LogError {
    match e.rdkafka_error_code() {
        Some(
            rdkafka::types::RDKafkaErrorCode::MessageTimedOut
            | rdkafka::types::RDKafkaErrorCode::QueueFull
            | rdkafka::types::RDKafkaErrorCode::AllBrokersDown
            | rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
        ) => LogError::Unavailable(e.to_string()),
        _ => e.into(),
    }
}
