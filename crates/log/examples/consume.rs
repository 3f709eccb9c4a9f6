//! A minimal event subscriber, as another service would write it: its own
//! consumer group on the workflow-events topic, at-least-once delivery,
//! deduplicated by `event_id`, records of one workflow in order.
//!
//!   cargo run -p agentflow-log --example consume -- 127.0.0.1:9092 workflow-events
//!
//! It only needs rdkafka and serde_json; the record shape is
//! schemas/record.schema.json.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "workflow-events".into());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "example-subscriber")
        .set("auto.offset.reset", "earliest")
        // Commit after handling: a crash re-delivers, never skips.
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&topic])?;
    // A real subscriber keeps this in its own store, with what it did.
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg?;
        let record: serde_json::Value = serde_json::from_slice(msg.payload().unwrap_or_default())?;
        let event_id = record["event_id"].as_str().unwrap_or_default().to_owned();
        if seen.insert(event_id) {
            let event_type = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "event_type"))
                .and_then(|h| h.value)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            println!(
                "{event_type:<26} workflow {} seq {}",
                record["workflow_id"].as_str().unwrap_or_default(),
                record["seq"]
            );
        }
        consumer.commit_message(&msg, CommitMode::Async)?;
    }
}
