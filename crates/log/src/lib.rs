//! The event log: one Kafka topic keyed by workflow id.
//!
//! - [`Producer`] appends records (idempotent, `acks=all`) and answers with
//!   where each landed.
//! - [`Subscription`] follows the topic as a member of a consumer group, on a
//!   thread of its own, and lets its owner choose where each newly assigned
//!   partition starts ([`Assigner`]).
//! - [`ensure_topic`] creates the topic with the configured partitions.

mod config;
mod error;
mod producer;
mod reader;
mod subscription;
mod topic;

pub use config::LogConfig;
pub use error::LogError;
pub use producer::{Position, Producer};
pub use reader::{ReadFrom, Reader};
pub use subscription::{
    Assigned, Assigner, ConsumerEvent, LogRecord, Origin, RejoinHandle, StartAt, Subscription,
};
pub use topic::{ensure_topic, partition_count, partition_high_watermarks};
