//! The log is forever (DESIGN §5). A topic whose settings let the broker
//! expire or compact records would, after a week on the brokers' defaults,
//! silently lose workflows to every replay, audit and rebuild; a node checks
//! the settings of both topics when it starts ([`check_log_lifetime`]).
//!
//! The only way the main topic's start moves is an operator's archive:
//! [`delete_records_before`] (Kafka's DeleteRecords), after the records
//! before it were written elsewhere.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ConfigResource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::{LogConfig, LogError};

/// What [`check_log_lifetime`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LifetimeReport {
    /// Settings that let records disappear: each names the topic, the
    /// setting, its value and the fix. A node refuses to start on any,
    /// unless its operator accepted them (`allow_log_expiry`).
    pub expiring: Vec<String>,
    /// Settings that risk acknowledged records without removing any
    /// (`min.insync.replicas` of 1 on a replicated cluster): logged loudly.
    pub warnings: Vec<String>,
}

/// Reads the settings of the main topic and the payload topic (as the
/// broker applies them: the topic's own value or the broker's default) and
/// says which of them can lose records.
///
/// - Main topic: `cleanup.policy` must not contain `compact` (compaction
///   keeps only a workflow's last record), and with `delete` (the only other
///   policy) `retention.ms` and `retention.bytes` must be -1.
/// - Payload topic: `compact` is right (an output written twice is kept
///   once); `delete` in its policy needs both retentions at -1 too.
/// - On a cluster with replication ≥ 3, `min.insync.replicas` of 1 means an
///   acknowledged record may live on one broker only: a warning.
pub async fn check_log_lifetime(config: &LogConfig) -> Result<LifetimeReport, LogError> {
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let payload_topic = config.payload_topic();
    let specs = [
        ResourceSpecifier::Topic(&config.topic),
        ResourceSpecifier::Topic(&payload_topic),
    ];
    let results = admin.describe_configs(&specs, &opts).await?;
    let mut report = LifetimeReport::default();
    let mut main_settings = None;
    for (i, result) in results.into_iter().enumerate() {
        let main = i == 0;
        let name = if main { &config.topic } else { &payload_topic };
        let resource = result.map_err(|code| {
            LogError::Unavailable(format!("cannot read the settings of topic {name}: {code}"))
        })?;
        report
            .expiring
            .extend(expiring(name, main, &resource, &config.brokers));
        if main {
            main_settings = Some(resource);
        }
    }
    let replicas = {
        let log = config.clone();
        tokio::task::spawn_blocking(move || replication(&log))
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))??
    };
    if let Some(resource) = &main_settings
        && let Some(isr) =
            value(resource, "min.insync.replicas").and_then(|v| v.parse::<i32>().ok())
        && replicas >= 3
        && isr < 2
    {
        report.warnings.push(format!(
            "topic {}: min.insync.replicas={isr} with {replicas} replicas: a record is acknowledged \
             once one broker has it, and is lost if that broker dies before the others copy it. \
             Fix: set min.insync.replicas=2 on the topic (kafka-configs.sh --alter --entity-type topics \
             --entity-name {} --add-config min.insync.replicas=2; rpk topic alter-config {} --set \
             min.insync.replicas=2)",
            config.topic, config.topic, config.topic
        ));
    }
    Ok(report)
}

fn value<'a>(resource: &'a ConfigResource, name: &str) -> Option<&'a str> {
    resource.get(name).and_then(|e| e.value.as_deref())
}

/// The settings of one topic that let records disappear.
fn expiring(topic: &str, main: bool, resource: &ConfigResource, brokers: &str) -> Vec<String> {
    let fix = |setting: &str, good: &str| {
        format!(
            "Fix: kafka-configs.sh --bootstrap-server {brokers} --alter --entity-type topics \
             --entity-name {topic} --add-config {setting}={good} (Redpanda: rpk topic alter-config \
             {topic} --set {setting}={good}), or accept it with allow_log_expiry = true \
             (AGENTFLOW_ALLOW_LOG_EXPIRY=true)"
        )
    };
    let mut out = Vec::new();
    let policy = value(resource, "cleanup.policy").unwrap_or("delete");
    let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
    if main && policies.contains(&"compact") {
        out.push(format!(
            "topic {topic}: cleanup.policy={policy} compacts the event log (only each workflow's \
             last record would be kept). {}",
            fix("cleanup.policy", "delete")
        ));
    }
    if policies.contains(&"delete") {
        for (setting, what) in [
            (
                "retention.ms",
                "expires records older than that many milliseconds",
            ),
            (
                "retention.bytes",
                "drops the oldest records beyond that many bytes per partition",
            ),
        ] {
            let v = value(resource, setting).unwrap_or("-1");
            if v.parse::<i64>().is_ok_and(|n| n >= 0) {
                out.push(format!(
                    "topic {topic}: {setting}={v} {what}; the log must be kept forever \
                     (retention -1). {}",
                    fix(setting, "-1")
                ));
            }
        }
    }
    out
}

/// The replicas of the topic's first partition. Blocks.
fn replication(config: &LogConfig) -> Result<usize, LogError> {
    let c: BaseConsumer = config.client().create()?;
    let md = c.fetch_metadata(Some(&config.topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == config.topic)
        .and_then(|t| t.partitions().first())
        .map_or(0, |p| p.replicas().len()))
}

/// Moves the start of each given partition of the main topic up to its
/// offset (records before it are deleted: Kafka's DeleteRecords), and
/// answers with each partition's new start. The payload topic is never
/// touched.
pub async fn delete_records_before(
    config: &LogConfig,
    starts: &[(i32, i64)],
) -> Result<Vec<(i32, i64)>, LogError> {
    if starts.is_empty() {
        return Ok(vec![]);
    }
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in starts {
        tpl.add_partition_offset(&config.topic, *p, Offset::Offset(*o))?;
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let done = admin.delete_records(&tpl, &opts).await?;
    let mut out = Vec::new();
    for e in done.elements() {
        if let Err(err) = e.error() {
            return Err(LogError::Unavailable(format!(
                "cannot move the start of partition {}: {err}",
                e.partition()
            )));
        }
        let start = match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        };
        out.push((e.partition(), start));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rdkafka::admin::{ConfigEntry, ConfigSource, OwnedResourceSpecifier};

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> ConfigResource {
        ConfigResource {
            specifier: OwnedResourceSpecifier::Topic("t".into()),
            entries: pairs
                .iter()
                .map(|(k, v)| ConfigEntry {
                    name: (*k).into(),
                    value: Some((*v).into()),
                    source: ConfigSource::DynamicTopic,
                    is_read_only: false,
                    is_default: false,
                    is_sensitive: false,
                })
                .collect(),
        }
    }

    fn check(main: bool, pairs: &[(&str, &str)]) -> Vec<String> {
        expiring("t", main, &settings(pairs), "b:9092")
    }

    #[test]
    fn only_settings_that_lose_records_are_refused() {
        let forever = [
            ("cleanup.policy", "delete"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
        ];
        assert!(check(true, &forever).is_empty());
        let week = check(
            true,
            &[("cleanup.policy", "delete"), ("retention.ms", "604800000")],
        );
        assert_eq!(week.len(), 1);
        assert!(
            week[0].contains("topic t: retention.ms=604800000"),
            "{week:?}"
        );
        assert!(week[0].contains("--add-config retention.ms=-1"), "{week:?}");
        assert!(week[0].contains("allow_log_expiry"), "{week:?}");
        let bytes = check(true, &[("retention.ms", "-1"), ("retention.bytes", "1000")]);
        assert!(bytes[0].contains("retention.bytes=1000"), "{bytes:?}");
        let compact = check(
            true,
            &[("cleanup.policy", "compact"), ("retention.ms", "-1")],
        );
        assert_eq!(compact.len(), 1);
        assert!(compact[0].contains("cleanup.policy=compact"), "{compact:?}");
        // The payload topic: compaction is right, and with compaction alone
        // retention deletes nothing; `delete` with a limit expires.
        assert!(
            check(
                false,
                &[("cleanup.policy", "compact"), ("retention.ms", "1000")]
            )
            .is_empty()
        );
        let both = check(
            false,
            &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "1000"),
                ("retention.bytes", "-1"),
            ],
        );
        assert_eq!(both.len(), 1, "{both:?}");
    }
}
