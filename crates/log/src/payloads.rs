//! Step outputs kept out of their records.
//!
//! A Kafka-API broker takes messages of about 1 MB (`message.max.bytes`, on
//! Kafka and Redpanda alike), and an agent that writes documents answers
//! more. An output whose JSON is longer than `inline_output_bytes` is
//! written first to the payload topic (`{topic}-payloads`,
//! `cleanup.policy=compact`) in chunks of [`CHUNK_BYTES`], keyed
//! `sha256:{hex}:{index}`, all in one partition chosen by the hash, and only
//! once every chunk is acknowledged is its `agent.executed` record appended,
//! carrying an [`OutputRef`] (`data.output_ref`) instead of the output. The
//! log stays the whole truth: the two topics together hold every byte.
//!
//! Compaction keeps the latest copy of each key, so the same content
//! written twice (a retried append, two workflows with one output) leaves
//! one copy, at or after every reference's offset, in the same partition (the
//! hash chooses it): a reader seeks to the reference's offset and reads on
//! until it has every chunk, and checks the hash.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentflow_core::OutputRef;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{LogConfig, LogError};

/// Bytes of output per chunk: well under the ~1 MB message limit of the
/// broker and of librdkafka (which counts key, headers and framing too).
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Resolved outputs a reader keeps, in total bytes of JSON text.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// How long a reader looks for the chunks of one output.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The partition of the payload topic that holds the output with this hash.
fn partition_of(sha: &[u8], partitions: i32) -> i32 {
    let n = u32::from_be_bytes([sha[0], sha[1], sha[2], sha[3]]);
    (n % partitions.max(1) as u32) as i32
}

/// Writes `text` (an output's JSON) to the payload topic and answers with
/// the reference to put in its record, once every chunk is acknowledged.
pub(crate) async fn write(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    text: &[u8],
) -> Result<OutputRef, LogError> {
    let digest = Sha256::digest(text);
    let sha: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let partition = partition_of(&digest, partitions);
    let pieces: Vec<&[u8]> = text.chunks(CHUNK_BYTES).collect();
    let mut deliveries = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.iter().enumerate() {
        let key = OutputRef::chunk_key(&sha, i as u32);
        let msg = FutureRecord::to(topic)
            .key(&key)
            .payload(*piece)
            .partition(partition);
        match producer.send_result(msg) {
            Ok(d) => deliveries.push(d),
            Err((e, _)) => return Err(crate::producer::classify(e)),
        }
    }
    let mut first = None;
    for d in futures::future::join_all(deliveries).await {
        match d {
            Ok(Ok(d)) => {
                first.get_or_insert(d.offset);
            }
            Ok(Err((e, _))) => return Err(crate::producer::classify(e)),
            Err(_cancelled) => return Err(LogError::Unavailable("producer closed".into())),
        }
    }
    Ok(OutputRef {
        sha256: sha,
        bytes: text.len() as u64,
        chunks: pieces.len() as u32,
        partition,
        offset: first.unwrap_or_default(),
    })
}

/// Outputs of this process, by hash, up to [`CACHE_BYTES`] of JSON text,
/// oldest out first: shared by every reader and the producer, so the
/// engine's and the projector's streams do not read back from the broker
/// what this process has just written.
#[derive(Default)]
struct Cache {
    values: HashMap<String, Value>,
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

static CACHE: std::sync::LazyLock<Mutex<Cache>> = std::sync::LazyLock::new(Default::default);

/// Keeps `value` (whose JSON text is `len` bytes long) for readers.
pub(crate) fn remember(sha256: &str, len: usize, value: &Value) {
    if len > CACHE_BYTES / 4 {
        return;
    }
    let mut c = CACHE.lock().expect("not poisoned");
    if c.values.contains_key(sha256) {
        return;
    }
    c.bytes += len;
    c.order.push_back((sha256.to_owned(), len));
    c.values.insert(sha256.to_owned(), value.clone());
    while c.bytes > CACHE_BYTES
        && let Some((old, n)) = c.order.pop_front()
    {
        c.values.remove(&old);
        c.bytes -= n;
    }
}

fn recall(sha256: &str) -> Option<Value> {
    CACHE
        .lock()
        .expect("not poisoned")
        .values
        .get(sha256)
        .cloned()
}

/// Reads outputs back from the payload topic (through a bounded cache,
/// shared in the process). Blocking: use it from a blocking thread (the
/// consumer threads and the tools' reader are).
pub struct Payloads {
    config: LogConfig,
    consumer: Option<BaseConsumer>,
    cached: bool,
}

impl Payloads {
    /// Connects on first use.
    pub fn new(config: &LogConfig) -> Self {
        Self {
            config: config.clone(),
            consumer: None,
            cached: true,
        }
    }

    /// Always reads from the broker (and checks the hash), never from the
    /// process's cache.
    pub fn uncached(config: &LogConfig) -> Self {
        Self {
            cached: false,
            ..Self::new(config)
        }
    }

    /// The output `r` names.
    pub fn resolve(&mut self, r: &OutputRef) -> Result<Value, String> {
        if self.cached
            && let Some(v) = recall(&r.sha256)
        {
            return Ok(v);
        }
        let text = self.read(r)?;
        let value: Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        remember(&r.sha256, text.len(), &value);
        Ok(value)
    }

    fn consumer(&mut self) -> Result<&BaseConsumer, String> {
        if self.consumer.is_none() {
            let c: BaseConsumer = self
                .config
                .client()
                .set("group.id", format!("{}payloads", self.config.group_prefix))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .create()
                .map_err(|e| e.to_string())?;
            self.consumer = Some(c);
        }
        Ok(self.consumer.as_ref().expect("just set"))
    }

    fn read(&mut self, r: &OutputRef) -> Result<Vec<u8>, String> {
        let topic = self.config.payload_topic();
        let c = self.consumer()?;
        let (_, high) = c
            .fetch_watermarks(&topic, r.partition, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        if r.offset >= high {
            return Err(format!(
                "{topic}/{} ends at {high}, before the reference's offset {}",
                r.partition, r.offset
            ));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, r.partition, Offset::Offset(r.offset))
            .map_err(|e| e.to_string())?;
        c.assign(&tpl).map_err(|e| e.to_string())?;
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; r.chunks as usize];
        let mut missing = r.chunks as usize;
        let prefix = format!("sha256:{}:", r.sha256);
        let deadline = Instant::now() + READ_TIMEOUT;
        while missing > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "{missing} of {} chunks not found in {topic}/{} from offset {}",
                    r.chunks, r.partition, r.offset
                ));
            }
            let m = match c.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(m)) => m,
            };
            let index = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.strip_prefix(&prefix))
                .and_then(|i| i.parse::<usize>().ok());
            if let Some(i) = index
                && let Some(slot) = pieces.get_mut(i)
                && slot.is_none()
            {
                *slot = Some(m.payload().unwrap_or_default().to_vec());
                missing -= 1;
            }
            if missing > 0 && m.offset() + 1 >= high {
                return Err(format!(
                    "{missing} of {} chunks not found in {topic}/{} from offset {} to its end",
                    r.chunks, r.partition, r.offset
                ));
            }
        }
        let text: Vec<u8> = pieces.into_iter().flatten().flatten().collect();
        if text.len() as u64 != r.bytes || sha256_hex(&text) != r.sha256 {
            return Err(format!(
                "the chunks read ({} bytes) do not hash to the reference",
                text.len()
            ));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_content_always_goes_to_one_partition() {
        let a = Sha256::digest(b"document");
        assert_eq!(partition_of(&a, 8), partition_of(&a, 8));
        assert!((0..8).contains(&partition_of(&a, 8)));
        assert_eq!(partition_of(&a, 1), 0);
    }
}
