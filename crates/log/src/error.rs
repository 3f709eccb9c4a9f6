use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The broker did not acknowledge in time, or is unreachable.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The record is larger than the broker takes: sending it again can
    /// only fail again.
    #[error("record too large for the event log: {0}")]
    TooLarge(String),
    /// The broker refused the record for good (invalid, not allowed):
    /// sending it again can only fail again.
    #[error("event log refused the record: {0}")]
    Rejected(String),
    #[error("event log error: {0}")]
    Kafka(#[from] KafkaError),
}

impl LogError {
    /// Whether trying again later may succeed (the broker is down or slow),
    /// as opposed to a bug or a misconfiguration.
    pub fn is_retriable(&self) -> bool {
        match self {
            LogError::Unavailable(_) => true,
            LogError::TooLarge(_) | LogError::Rejected(_) => false,
            LogError::Kafka(e) => e.rdkafka_error_code().is_some_and(|c| {
                !matches!(c, rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
            }),
        }
    }
}
