//! A replicated cluster (three Kafka brokers, replication factor 3,
//! `min.insync.replicas=2`) loses a broker mid-run: the leader of a partition
//! is SIGKILLed while workflows run on it. Nothing the broker acknowledged is
//! lost, no workflow's chain gets a duplicate or a gap, and the workflows keep
//! going on the new leader.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{OwnBroker, Stack, pipeline};

const STEPS: [&str; 4] = ["a", "b", "c", "d"];

// Several threads: the mock agent runs in this process and must keep
// answering while a test thread waits on a broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_partition_leader_mid_run_loses_nothing_and_workflows_keep_going() {
    let cluster = OwnBroker::cluster(3);
    let brokers = cluster.brokers();
    let s = Stack::start_with(
        Duration::from_millis(300),
        "",
        &[("AGENTFLOW_KAFKA_BROKERS", brokers.as_str())],
    )
    .await;
    let t = s.token(6);
    let mut ids = vec![];
    for i in 0..24 {
        let id = s.create(&t, pipeline(&format!("wf{i}"), &STEPS)).await;
        assert_eq!(s.execute(&t, &id).await.0, 202);
        ids.push(id);
    }
    // Wait until steps are under way, then kill the broker leading the most
    // partitions of the topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.agent.in_flight.keys().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "no steps under way");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut leads: HashMap<usize, usize> = HashMap::new();
    for p in 0..4 {
        *leads.entry(cluster.leader(&s.topic, p)).or_default() += 1;
    }
    let (victim, _) = leads.into_iter().max_by_key(|(_, n)| *n).unwrap();
    cluster.kill_node(victim);
    eprintln!("killed broker {victim}, leader of partitions of the topic, mid-run");

    // New work is taken during the failover, too: a client retries a 503
    // (the leader moving outlasted the append timeout) with the same
    // Idempotency-Key, and gets one workflow.
    for i in 24..28 {
        let id = create_retrying(&s, &t, &format!("wf{i}")).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match s.execute(&t, &id).await {
                (202 | 409, _) => break,
                (503, _) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => panic!("execute during the failover: {other:?}"),
            }
        }
        ids.push(id);
    }
    for id in &ids {
        let w = s.wait_done(&t, id, Duration::from_secs(90)).await;
        assert_eq!(w["status"], "completed", "{w}");
        let results = w["results"].as_array().unwrap();
        assert_eq!(results.len(), STEPS.len(), "{w}");
        assert_eq!(
            results[1]["output"]["input"]["content"], results[0]["output"],
            "chain intact"
        );
    }

    // The log, read from the surviving replicas: each record once (the
    // idempotent producer's retries left no duplicates), and each workflow's
    // chain complete, seq 1..n with nothing missing.
    let records = common::read_topic(&brokers, &s.topic);
    let mut seen = HashSet::new();
    for (_, _, v) in &records {
        let event_id = v["event_id"].as_str().unwrap().to_owned();
        assert!(
            seen.insert(event_id.clone()),
            "record {event_id} twice in the log"
        );
    }
    let folded = common::fold_log(&brokers, &s.topic);
    for id in &ids {
        let st = &folded[id];
        assert_eq!(st.status, agentflow_core::WorkflowStatus::Completed);
        let chain: Vec<u64> = records
            .iter()
            .filter(|(k, _, v)| k == id && v["seq"].as_u64().is_some())
            .map(|(_, _, v)| v["seq"].as_u64().unwrap())
            .collect();
        let unique: HashSet<u64> = chain.iter().copied().collect();
        assert_eq!(
            unique,
            (1..=st.seq).collect::<HashSet<u64>>(),
            "{id}: chain has a gap: {chain:?}"
        );
    }
    s.assert_projection_is_the_fold(&ids).await;
}

async fn create_retrying(s: &Stack, t: &str, name: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = s
            .http
            .post(format!("{}/workflows/create", s.base))
            .bearer_auth(t)
            .header("Idempotency-Key", format!("failover-{name}"))
            .json(&pipeline(name, &STEPS))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        match status {
            201 => return body["workflow_id"].as_str().unwrap().to_owned(),
            503 if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            _ => panic!("create during the failover: {status} {body}"),
        }
    }
}
