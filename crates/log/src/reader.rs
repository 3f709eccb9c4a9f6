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

pub struct Reader {
    consumer: BaseConsumer,
    /// Partition → (next offset to read, end to stop at).
    positions: HashMap<i32, (i64, i64)>,
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
        let mut total = 0;
        for p in topic
            .partitions()
            .iter()
            .filter(|p| partitions.is_none_or(|only| only.contains(&p.id())))
        {
            let (low, high) = consumer.fetch_watermarks(&config.topic, p.id(), timeout)?;
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
            follow,
            total,
            payloads: crate::Payloads::new(config),
        })
    }

    /// How many records there are to read (up to the ends seen at open).
    pub fn total(&self) -> i64 {
        self.total
    }

    fn at_end(&self) -> bool {
        self.positions.values().all(|(next, end)| next >= end)
    }

    /// The next record, or `None` once every partition is read to its end
    /// (never when following).
    pub fn next_record(&mut self) -> Option<Result<LogRecord, LogError>> {
        loop {
            if !self.follow && self.at_end() {
                return None;
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(e)) => return Some(Err(e.into())),
                Some(Ok(m)) => {
                    if let Some(pos) = self.positions.get_mut(&m.partition()) {
                        pos.0 = m.offset() + 1;
                    }
                    return Some(Ok(LogRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        // Outputs kept out of their records, read back.
                        record: Record::from_bytes_with(
                            m.payload().unwrap_or_default(),
                            &mut |r| self.payloads.resolve(r),
                        ),
                    }));
                }
            }
        }
    }
}
