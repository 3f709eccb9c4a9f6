//! Reading the topic outside any consumer group, for tools: replay, audit,
//! `events tail`. Every partition is read from its start (or its end), up to
//! the end it had when reading began, or on and on when following. Blocking:
//! use it from a blocking thread.

use std::collections::HashMap;
use std::time::Duration;

use agentflow_core::Record;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::subscription::LogRecord;
use crate::{LogConfig, LogError};

/// Where a [`Reader`] starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Beginning,
    End,
}

/// A record as it is in the log, unparsed (for archives).
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The broker's timestamp, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

pub struct Reader {
    consumer: BaseConsumer,
    /// Partition → (next offset to read, end to stop at).
    positions: HashMap<i32, (i64, i64)>,
    /// Partition → the first offset still in the log when opened.
    starts: HashMap<i32, i64>,
    follow: bool,
    total: i64,
    payloads: crate::Payloads,
}

impl Reader {
    /// Every partition of the topic.
    pub fn open(config: &LogConfig, from: ReadFrom, follow: bool) -> Result<Self, LogError> {
        Self::open_partitions(config, None, from, follow)
    }

    /// Only `partitions` (all when `None`; ones the topic lacks are skipped).
    pub fn open_partitions(
        config: &LogConfig,
        partitions: Option<&[i32]>,
        from: ReadFrom,
        follow: bool,
    ) -> Result<Self, LogError> {
        Self::open_with(config, partitions, from, None, follow)
    }

    /// Only `partitions`, each read from its start up to (not including)
    /// the end given (at most its end when opened).
    pub fn open_until(config: &LogConfig, ends: &HashMap<i32, i64>) -> Result<Self, LogError> {
        let partitions: Vec<i32> = ends.keys().copied().collect();
        Self::open_with(
            config,
            Some(&partitions),
            ReadFrom::Beginning,
            Some(ends),
            false,
        )
    }

    fn open_with(
        config: &LogConfig,
        partitions: Option<&[i32]>,
        from: ReadFrom,
        ends: Option<&HashMap<i32, i64>>,
        follow: bool,
    ) -> Result<Self, LogError> {
        let timeout = Duration::from_secs(10);
        let consumer: BaseConsumer = config
            .client()
            .set("group.id", format!("{}reader", config.group_prefix))
            .set("enable.auto.commit", "false")
            .create()?;
        let md = consumer.fetch_metadata(Some(&config.topic), timeout)?;
        let topic = md
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .filter(|t| !t.partitions().is_empty())
            .ok_or_else(|| LogError::Unavailable(format!("no topic {}", config.topic)))?;
        let mut tpl = TopicPartitionList::new();
        let mut positions = HashMap::new();
        let mut starts = HashMap::new();
        let mut total = 0;
        for p in topic
            .partitions()
            .iter()
            .filter(|p| partitions.is_none_or(|only| only.contains(&p.id())))
        {
            let (low, high) = consumer.fetch_watermarks(&config.topic, p.id(), timeout)?;
            let high = match ends.and_then(|e| e.get(&p.id())) {
                Some(end) => high.min(*end),
                None => high,
            };
            starts.insert(p.id(), low);
            let start = match from {
                ReadFrom::Beginning => low,
                ReadFrom::End => high,
            };
            tpl.add_partition_offset(&config.topic, p.id(), Offset::Offset(start))?;
            positions.insert(p.id(), (start, high));
            total += high - start;
        }
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            positions,
            starts,
            follow,
            total,
            payloads: crate::Payloads::new(config),
        })
    }

    /// How many records there are to read (up to the ends seen at open).
    pub fn total(&self) -> i64 {
        self.total
    }

    /// Partition → the first offset still in the log when it was opened
    /// (above 0 once an archive moved the partition's start).
    pub fn starts(&self) -> &HashMap<i32, i64> {
        &self.starts
    }

    /// The payload store this reader resolves outputs kept out of records with.
    pub fn payloads(&mut self) -> &mut crate::Payloads {
        &mut self.payloads
    }

    fn at_end(&self) -> bool {
        self.positions.values().all(|(next, end)| next >= end)
    }

    /// The next record, or `None` once every partition is read to its end
    /// (never when following).
    pub fn next_record(&mut self) -> Option<Result<LogRecord, LogError>> {
        let raw = match self.next_raw()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(LogRecord {
            partition: raw.partition,
            offset: raw.offset,
            // Outputs kept out of their records, read back.
            record: Record::from_bytes_with(&raw.payload, &mut |r| self.payloads.resolve(r)),
        }))
    }

    /// The next record as it is in the log, or `None` once every partition
    /// is read to its end (never when following).
    pub fn next_raw(&mut self) -> Option<Result<RawRecord, LogError>> {
        loop {
            if !self.follow && self.at_end() {
                return None;
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(e)) => return Some(Err(e.into())),
                Some(Ok(m)) => {
                    let Some(pos) = self.positions.get_mut(&m.partition()) else {
                        continue;
                    };
                    if !self.follow && m.offset() >= pos.1 {
                        // Past the end asked for: this partition is done.
                        pos.0 = pos.1;
                        continue;
                    }
                    pos.0 = m.offset() + 1;
                    return Some(Ok(RawRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        timestamp_ms: m.timestamp().to_millis(),
                    }));
                }
            }
        }
    }
}
