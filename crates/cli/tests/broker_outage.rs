//! The broker goes away: writes answer 503 with Retry-After within the
//! bounded wait (never hang, never 500), reads keep answering from Postgres,
//! and writes work again once it is back. Each with one broker, and with a
//! three-broker cluster of which every broker goes.

mod common;

use std::time::{Duration, Instant};

use common::{OwnBroker, Stack};
use serde_json::json;

#[tokio::test]
async fn writes_answer_503_while_the_broker_is_down_and_reads_keep_working() {
    writes_503_reads_work(OwnBroker::start()).await;
}

#[tokio::test]
async fn writes_answer_503_while_a_whole_cluster_is_down_and_reads_keep_working() {
    writes_503_reads_work(OwnBroker::cluster(3)).await;
}

async fn writes_503_reads_work(mut broker: OwnBroker) {
    let brokers = broker.brokers();
    let s = Stack::start_with(
        Duration::ZERO,
        "",
        &[
            ("AGENTFLOW_KAFKA_BROKERS", brokers.as_str()),
            ("AGENTFLOW_APPEND_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let t = s.token(4);
    let id = s
        .create(&t, json!({"name": "before", "tasks": [{"agent": "a"}]}))
        .await;

    broker.kill9();
    let started = Instant::now();
    let r = s
        .http
        .post(format!("{}/workflows/create", s.base))
        .bearer_auth(&t)
        .json(&json!({"name": "during", "tasks": [{"agent": "a"}]}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        waited < Duration::from_secs(10),
        "bounded wait, took {waited:?}"
    );
    let (st, _) = s.execute(&t, &id).await;
    assert_eq!(st, 503);
    // Reads come from Postgres.
    assert_eq!(s.get(&t, &id).await["name"], "before");
    let (st, _) = s.req("GET", "/workflows/list", Some(&t), None).await;
    assert_eq!(st, 200);
    let (st, ready) = s.req("GET", "/readyz", None, None).await;
    assert_eq!(st, 503, "{ready}");

    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, _) = s
            .req(
                "POST",
                "/workflows/create",
                Some(&t),
                Some(json!({"name": "after", "tasks": [{"agent": "a"}]})),
            )
            .await;
        if st == 201 {
            break;
        }
        assert_eq!(st, 503);
        assert!(Instant::now() < deadline, "writes did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A 503 means "not acknowledged in time": the execute sent during the
    // outage may still take effect once the broker is back. Retrying is safe:
    // 202, or 409 when the earlier one already started it.
    let (st, body) = s.execute(&t, &id).await;
    assert!(st == 202 || st == 409, "{st} {body}");
    assert_eq!(
        s.wait_done(&t, &id, Duration::from_secs(60)).await["status"],
        "completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_workflows_pause_while_the_broker_is_down_and_finish_after() {
    running_workflows_pause(OwnBroker::start()).await;
}

// Every broker of a replicated cluster (RF 3, min.insync.replicas 2) killed,
// then started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_workflows_pause_while_a_whole_cluster_is_down_and_finish_after() {
    running_workflows_pause(OwnBroker::cluster(3)).await;
}

async fn running_workflows_pause(mut broker: OwnBroker) {
    let brokers = broker.brokers();
    let s = Stack::start_with(
        Duration::from_millis(400),
        "",
        &[
            ("AGENTFLOW_KAFKA_BROKERS", brokers.as_str()),
            ("AGENTFLOW_APPEND_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let t = s.token(4);
    let mut ids = vec![];
    for i in 0..6 {
        // Step 2 holds its answer until the broker is gone.
        let mut def = common::pipeline(&format!("wf{i}"), &["a", "b", "c", "d"]);
        def["tasks"][1]["input"]["_mock"] = json!({"hold": "outage"});
        let id = s.create(&t, def).await;
        assert_eq!(s.execute(&t, &id).await.0, 202);
        ids.push(id);
    }
    // Every workflow's step 2 is under way: the log goes, then the agents
    // answer. Ten seconds without a log: nothing can be recorded, so no
    // workflow may finish or lose a step.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.agent.in_flight.keys().len() < ids.len() {
        assert!(Instant::now() < deadline, "step 2 not under way everywhere");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.kill9();
    s.agent.gates.release("outage");
    tokio::time::sleep(Duration::from_secs(10)).await;
    for id in &ids {
        let w = s.get(&t, id).await;
        assert_eq!(w["status"], "running", "{w}");
    }
    broker.restart();

    for id in &ids {
        let w = s.wait_done(&t, id, Duration::from_secs(90)).await;
        assert_eq!(w["status"], "completed", "{w}");
        assert_eq!(w["results"].as_array().unwrap().len(), 4, "{w}");
    }
    // Every step was recorded once; a step ran twice only if the group moved
    // its partition while it was in flight (at most one per workflow).
    let calls = s.agent.calls.snapshot();
    for id in &ids {
        let repeated = (1..=4)
            .filter(|step| {
                calls
                    .get(&format!("{id}:step_{step}:1"))
                    .copied()
                    .unwrap_or(0)
                    > 1
            })
            .count();
        assert!(repeated <= 1, "{id}: {calls:?}");
    }
    s.assert_projection_is_the_fold(&ids).await;
}
