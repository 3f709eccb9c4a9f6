//! Newtypes for the identifiers that cross the system's edges. Each is parsed
//! once, where it enters, and trusted after.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{0}` is not a valid workflow id (expected a UUID)")]
    WorkflowId(String),
    #[error("agent name must be 1 to {max} characters", max = AgentName::MAX_LEN)]
    AgentNameLength,
    #[error("agent name `{0}` may contain only letters, digits, `_`, `.` and `-`")]
    AgentNameChars(String),
}

/// A workflow's identity: a UUID, also the Kafka key of all its records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct WorkflowId(Uuid);

impl WorkflowId {
    /// A new, time-ordered id (UUIDv7), so ids sort roughly by creation.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id of the workflow a user creates with an `Idempotency-Key`: the
    /// same user and key always name the same workflow, so a retried create
    /// cannot make a second one.
    pub fn for_request(user: UserId, key: &str) -> Self {
        const NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b7d_4e5f_8a0b_1c2d_3e4f_5a6b);
        Self(Uuid::new_v5(
            &NAMESPACE,
            format!("{}:{key}", user.0).as_bytes(),
        ))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| IdError::WorkflowId(truncate(s, 64)))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for WorkflowId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for WorkflowId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WorkflowId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The id of the user who owns a workflow (the JWT `sub`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of an agent: a plain identifier, `[A-Za-z0-9_.-]{1,128}`, safe to
/// put in a URL path and in a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(IdError::AgentNameLength);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(IdError::AgentNameChars(truncate(s, 64)));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AgentName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_plain_identifiers() {
        assert!(AgentName::parse("marketing_content_agent_1_101").is_ok());
        assert!(AgentName::parse("a.b-c_9").is_ok());
        assert_eq!(AgentName::parse(""), Err(IdError::AgentNameLength));
        assert!(AgentName::parse(&"a".repeat(129)).is_err());
        for bad in ["a/b", "a b", "../x", "é", "a?b", "{agent}"] {
            assert!(AgentName::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn workflow_ids_must_be_uuids() {
        let id = WorkflowId::new();
        assert_eq!(WorkflowId::parse(&id.to_string()), Ok(id));
        assert!(WorkflowId::parse("not-a-uuid").is_err());
        assert!(WorkflowId::parse("").is_err());
    }
}
