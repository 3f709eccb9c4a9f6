//! The records the service really writes — read back from the topic after a
//! run that makes it emit every event type — validate against
//! `schemas/record.schema.json` (the unit test in `core` checks hand-built
//! samples; this one checks what a subscriber gets).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Stack, failing, pipeline};
use serde_json::{Value, json};

#[tokio::test]
async fn every_record_the_service_writes_validates_against_the_schema() {
    let s = Stack::start().await;
    let t = s.token(9);

    // completed: created, started, agent.executed, workflow.completed
    let done = s.create(&t, pipeline("done", &["a", "b"])).await;
    assert_eq!(s.execute(&t, &done).await.0, 202);
    s.wait_done(&t, &done, Duration::from_secs(30)).await;

    // failed (a 4xx), then cancelled: step.failed, workflow.failed, workflow.cancelled
    let failed = s.create(&t, failing("fails", 400)).await;
    assert_eq!(s.execute(&t, &failed).await.0, 202);
    assert_eq!(
        s.wait_done(&t, &failed, Duration::from_secs(30)).await["status"],
        "failed"
    );
    let (st, _) = s
        .req(
            "POST",
            &format!("/workflows/{failed}/cancel"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(st, 202);

    // cancelled while running: workflow.cancel_requested
    let running = s
        .create(
            &t,
            json!({"name": "cancel me", "tasks": [
                {"agent": "a", "input": {"_mock": {"hold": "cancel"}}},
                {"agent": "b"}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &running).await.0, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.agent.in_flight.keys().is_empty() {
        assert!(Instant::now() < deadline, "the call never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (st, b) = s
        .req(
            "POST",
            &format!("/workflows/{running}/cancel"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!((st, b["status"].as_str()), (202, Some("cancelling")), "{b}");
    s.agent.gates.release("cancel");
    assert_eq!(
        s.wait_done(&t, &running, Duration::from_secs(30)).await["status"],
        "cancelled"
    );

    // A graph: condition.evaluated (when and until), step.waiting,
    // wait.completed (signal and timer), signal.received, workflow.paused
    // and workflow.resumed.
    let graph = s
        .create(
            &t,
            json!({"name": "graph", "input": {"min": 1}, "steps": [
                {"id": "score", "agent": "a", "input": {"score": 5, "_mock": {"hold": "graph"}}},
                {"id": "go", "agent": "b", "after": ["score"], "when": "steps.score.output.input.score >= input.min"},
                {"id": "loop", "agent": "c", "after": ["go"], "input": {"n": "{{iteration}}"},
                 "repeat": {"until": "output.input.n >= 2", "max_iterations": 3}},
                {"id": "nap", "after": ["loop"], "sleep_ms": 50},
                {"id": "ok", "after": ["nap"], "wait": {"signal": "ok"}}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &graph).await.0, 202);
    common::wait_for_call(&s, &format!("{graph}:score:1")).await;
    let (st, b) = s
        .req("POST", &format!("/workflows/{graph}/pause"), Some(&t), None)
        .await;
    assert_eq!(st, 202, "{b}");
    let (st, b) = s
        .req(
            "POST",
            &format!("/workflows/{graph}/resume"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(st, 202, "{b}");
    s.agent.gates.release("graph");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get(&t, &graph).await["waiting_for"] != json!(["ok"]) {
        assert!(Instant::now() < deadline, "never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, b) = s
        .req(
            "POST",
            &format!("/workflows/{graph}/signals/ok"),
            Some(&t),
            Some(json!({"by": "me"})),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    assert_eq!(
        s.wait_done(&t, &graph, Duration::from_secs(30)).await["status"],
        "completed"
    );

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/record.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut types = BTreeSet::new();
    for (_, header, record) in common::read_topic(&s.brokers, &s.topic) {
        let errors: Vec<String> = validator
            .iter_errors(&record)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{record}\n{errors:?}");
        assert_eq!(record["version"], 2, "{record}");
        assert_eq!(header, record["event_type"], "the event_type header");
        types.insert(header);
    }
    let want: BTreeSet<String> = [
        "workflow.created",
        "workflow.started",
        "agent.executed",
        "workflow.completed",
        "step.failed",
        "workflow.failed",
        "workflow.cancel_requested",
        "workflow.cancelled",
        "condition.evaluated",
        "step.waiting",
        "wait.completed",
        "signal.received",
        "workflow.paused",
        "workflow.resumed",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(types, want, "every event type was written and checked");
}
