//! Outputs kept out of their records, against the real broker
//! (`AGENTFLOW_KAFKA_BROKERS`, started by scripts/test.sh or stack.sh).

use std::time::{Duration, Instant};

use agentflow_core::{AgentName, Event, OutputRef, Record, UserId, WorkflowId};
use agentflow_log::{LogConfig, Payloads, Producer, ReadFrom, Reader, ensure_topic};
use serde_json::{Value, json};

fn config() -> LogConfig {
    let brokers = std::env::var("AGENTFLOW_KAFKA_BROKERS")
        .expect("AGENTFLOW_KAFKA_BROKERS: run with scripts/test.sh or scripts/stack.sh");
    let mut c = LogConfig::new(brokers, format!("t-{}", uuid::Uuid::new_v4().simple()));
    // One partition: every payload lands in partition 0, in write order.
    c.partitions = 1;
    c.inline_output_bytes = 1024;
    c
}

fn executed(output: Value) -> Record {
    Record::new(
        WorkflowId::new(),
        UserId(1),
        3,
        chrono::Utc::now(),
        Event::AgentExecuted {
            step: agentflow_core::StepId::of_task(1),
            iteration: 1,
            agent: AgentName::parse("writer").unwrap(),
            output,
            attempts: 1,
            duration_ms: 5,
        },
    )
}

/// The references in the main topic's records, as written (read plainly,
/// with no resolving).
fn raw_refs(config: &LogConfig) -> Vec<OutputRef> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", "payload-test")
        .create()
        .unwrap();
    let (_, high) = c
        .fetch_watermarks(&config.topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&config.topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = vec![];
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while next < high && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert!(v["data"].get("output").is_none(), "{}", v["data"]);
            out.push(serde_json::from_value(v["data"]["output_ref"].clone()).unwrap());
            next = m.offset() + 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_is_chunked_and_read_back_from_any_earlier_offset() {
    let config = config();
    ensure_topic(&config).await.unwrap();
    let producer = Producer::new(&config).unwrap();
    let other = json!({"doc": "o".repeat(700_000)});
    let doc = json!({"doc": "z".repeat(1_500_000)});
    // Another output first, then the document twice (a retried append).
    for output in [&other, &doc, &doc] {
        producer
            .append_all(&[executed(output.clone())], Duration::from_secs(30))
            .await
            .unwrap();
    }
    let cfg = config.clone();
    tokio::task::spawn_blocking(move || {
        let refs = raw_refs(&cfg);
        assert_eq!(refs.len(), 3);
        let (first, again) = (&refs[1], &refs[2]);
        assert_eq!(first.sha256, again.sha256, "same content, same key");
        assert_eq!(first.chunks, 3, "1.5 MB in chunks of 512 KiB");
        assert_eq!(refs[0].chunks, 2);
        assert!(again.offset > first.offset);

        let mut payloads = Payloads::uncached(&cfg);
        assert_eq!(payloads.resolve(first).unwrap(), doc);
        assert_eq!(payloads.resolve(again).unwrap(), doc);
        // From an earlier offset (as after compaction removed the copy the
        // reference points at) it reads on to the chunks.
        let earlier = OutputRef {
            offset: 0,
            ..first.clone()
        };
        assert_eq!(payloads.resolve(&earlier).unwrap(), doc);

        // Chunks that are not there: an error, soon, not a hang.
        let began = Instant::now();
        let missing = OutputRef {
            sha256: "0".repeat(64),
            offset: 0,
            ..first.clone()
        };
        let e = payloads.resolve(&missing).unwrap_err();
        assert!(e.contains("not found"), "{e}");
        let beyond = OutputRef {
            offset: 1_000,
            ..first.clone()
        };
        assert!(payloads.resolve(&beyond).is_err());
        assert!(began.elapsed() < Duration::from_secs(10));

        // A tools' reader sees every record whole.
        let mut reader = Reader::open(&cfg, ReadFrom::Beginning, false).unwrap();
        let mut outputs = vec![];
        while let Some(r) = reader.next_record() {
            if let Event::AgentExecuted { output, .. } = r.unwrap().record.unwrap().event {
                outputs.push(output);
            }
        }
        assert_eq!(outputs, [other, doc.clone(), doc]);
    })
    .await
    .unwrap();
}
