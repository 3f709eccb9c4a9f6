use std::time::Duration;

use rdkafka::ClientConfig;

/// How to reach the log. Built by the binary from `config/agentflow.toml`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    pub topic: String,
    /// Partitions to create the topic with when it does not exist.
    pub partitions: i32,
    /// Prepended to consumer group names.
    pub group_prefix: String,
    /// Replicas per partition for a topic created here (-1: the broker's default).
    pub replication_factor: i32,
    /// Identifies this process to the broker (`client.id`).
    pub client_id: String,
    /// Consumer group session timeout: how soon a dead node's partitions move.
    pub session_timeout: Duration,
    /// How long a member may keep revoked partitions while it finishes the
    /// work in flight on them (see [`crate::RevokeGuard`]).
    pub revoke_grace: Duration,
    /// This member's stable name in its consumer groups (static membership,
    /// `group.instance.id`); `None` joins as a new member each time.
    pub group_instance_id: Option<String>,
    /// How long a producer batch may wait to fill (`linger.ms`).
    pub linger: Duration,
    /// How long the broker may hold a fetch that has no data (`fetch.wait.max.ms`).
    pub fetch_wait: Duration,
    /// A step output whose JSON is longer than this is kept out of its
    /// record, in chunks on [`Self::payload_topic`].
    pub inline_output_bytes: usize,
}

impl LogConfig {
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            partitions: 8,
            group_prefix: String::new(),
            replication_factor: -1,
            client_id: "agentflow".into(),
            session_timeout: Duration::from_secs(10),
            group_instance_id: None,
            revoke_grace: Duration::from_secs(30),
            linger: Duration::from_millis(1),
            fetch_wait: Duration::from_millis(500),
            inline_output_bytes: 256 * 1024,
        }
    }

    /// Where outputs kept out of their records go: `{topic}-payloads`.
    pub fn payload_topic(&self) -> String {
        format!("{}-payloads", self.topic)
    }

    pub(crate) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("log_level", "4");
        c
    }
}
