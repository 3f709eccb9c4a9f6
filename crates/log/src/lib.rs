//! The event log: one Kafka topic keyed by workflow id.
//!
//! - [`Producer`] appends records (idempotent, `acks=all`) and answers with
//!   where each landed.
//! - [`Subscription`] follows the topic as a member of a consumer group, on a
//!   thread of its own, and lets its owner choose where each newly assigned
//!   partition starts ([`Assigner`]).
//! - [`Inputs`] follows a subscription's stream and this process's own
//!   acknowledged appends together; [`Origin::due`] says which copy to take.
//! - [`ensure_topic`] creates the topic with the configured partitions, and
//!   the payload topic where outputs too large for a record go ([`Payloads`]),
//!   both kept forever; [`check_log_lifetime`] refuses settings that would
//!   expire or compact records, and [`delete_records_before`] is the
//!   operator's archive moving the log's start.

mod config;
mod error;
mod follow;
mod lifetime;
mod payloads;
mod producer;
mod reader;
mod retry;
mod subscription;
mod throttle;
mod topic;

pub use config::LogConfig;
pub use error::LogError;
pub use follow::{EventSource, Input, Inputs, Origin};
pub use lifetime::{LifetimeReport, check_log_lifetime, delete_records_before};
pub use payloads::{CHUNK_BYTES, Payloads};
pub use producer::{Position, Producer};
pub use reader::{RawRecord, ReadFrom, Reader};
pub use retry::{Backoff, Retry, Tries, always};
pub use subscription::{
    Assigned, Assigner, ConsumerEvent, FailureWatch, GroupFailure, LogRecord, RevokeGuard,
    RevokeWait, StartAt, Subscription,
};
pub use throttle::Throttle;
pub use topic::{
    ensure_topic, group_members, partition_count, partition_high_watermarks, partition_watermarks,
};
