use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{LogConfig, LogError};

/// Creates the topic with `config.partitions` partitions if it is missing.
/// An existing topic is left as it is (its partition count wins; its
/// settings are checked by [`crate::check_log_lifetime`]).
///
/// The log is forever (DESIGN §5): both topics are created with no time or
/// size limit (`retention.ms=-1`, `retention.bytes=-1`), whatever the
/// broker's default (7 days on Kafka and Redpanda). Only an operator's
/// `agentflow archive --truncate` moves the main topic's start.
pub async fn ensure_topic(config: &LogConfig) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let topic = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "delete")
    .set("retention.ms", "-1")
    .set("retention.bytes", "-1");
    // Outputs too large for a record (see `payloads`): compacted, so an
    // output written twice is kept once, and nothing expires with time.
    let payload_topic = config.payload_topic();
    let payloads = NewTopic::new(
        &payload_topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "compact")
    .set("retention.ms", "-1")
    .set("retention.bytes", "-1");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic, &payloads], &opts).await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(LogError::Unavailable(format!(
                    "cannot create topic {t}: {code}"
                )));
            }
        }
    }
    // Wait until the broker's metadata shows it, so that consumers that
    // subscribe right away get its partitions.
    for topic_name in [config.topic.clone(), payload_topic] {
        let probe: BaseConsumer = config.client().create()?;
        tokio::task::spawn_blocking(move || {
            for _ in 0..100 {
                if let Ok(md) = probe.fetch_metadata(Some(&topic_name), Duration::from_secs(2))
                    && md
                        .topics()
                        .iter()
                        .any(|t| t.name() == topic_name && !t.partitions().is_empty())
                {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(LogError::Unavailable(format!(
                "topic {topic_name} did not appear"
            )))
        })
        .await
        .map_err(|e| LogError::Unavailable(e.to_string()))??;
    }
    Ok(())
}

/// The high watermark (next offset to be written) of every partition, in
/// partition order. Blocks: call it from a blocking thread.
pub fn partition_high_watermarks(
    config: &LogConfig,
    timeout: Duration,
) -> Result<Vec<i64>, LogError> {
    let c: BaseConsumer = config.client().create()?;
    let md = c.fetch_metadata(Some(&config.topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == config.topic) else {
        return Ok(vec![]);
    };
    let mut out = vec![0; t.partitions().len()];
    for p in t.partitions() {
        let (_, high) = c.fetch_watermarks(&config.topic, p.id(), timeout)?;
        if let Some(slot) = out.get_mut(p.id() as usize) {
            *slot = high;
        }
    }
    Ok(out)
}

/// The low and high watermarks (first offset still in the log, next offset
/// to be written) of every partition, in partition order. Blocks: call it
/// from a blocking thread.
pub fn partition_watermarks(
    config: &LogConfig,
    timeout: Duration,
) -> Result<Vec<(i64, i64)>, LogError> {
    let c: BaseConsumer = config.client().create()?;
    let md = c.fetch_metadata(Some(&config.topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == config.topic) else {
        return Ok(vec![]);
    };
    let mut out = vec![(0, 0); t.partitions().len()];
    for p in t.partitions() {
        let w = c.fetch_watermarks(&config.topic, p.id(), timeout)?;
        if let Some(slot) = out.get_mut(p.id() as usize) {
            *slot = w;
        }
    }
    Ok(out)
}

/// How many partitions the topic has (0 when it does not exist). Blocks:
/// call it from a blocking thread.
pub fn partition_count(config: &LogConfig, timeout: Duration) -> Result<usize, LogError> {
    let c: BaseConsumer = config.client().create()?;
    let md = c.fetch_metadata(Some(&config.topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == config.topic)
        .map_or(0, |t| t.partitions().len()))
}

/// The members of consumer group `group` (prefixed as configured), as the
/// group coordinator sees them: their client ids. Blocks: call it from a
/// blocking thread.
pub fn group_members(
    config: &LogConfig,
    group: &str,
    timeout: Duration,
) -> Result<Vec<String>, LogError> {
    let c: BaseConsumer = config.client().create()?;
    let name = format!("{}{group}", config.group_prefix);
    let groups = c.fetch_group_list(Some(&name), timeout)?;
    Ok(groups
        .groups()
        .iter()
        .filter(|g| g.name() == name)
        .flat_map(|g| g.members().iter().map(|m| m.client_id().to_owned()))
        .collect())
}
