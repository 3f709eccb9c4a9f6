//! Agent outputs larger than the broker's message limit (≈1 MB): they go
//! through the log (offloaded in chunks to `{topic}-payloads`, the record
//! carrying a reference) and reach every reader whole; an output over
//! `max_output_bytes` fails its step at once; a record the broker refuses
//! fails its step instead of hanging the workflow.

mod common;

use std::process::Output;
use std::time::Duration;

use common::Stack;
use serde_json::{Value, json};

fn run(s: &Stack, args: &[&str]) -> Output {
    let mut cmd = s.command(args);
    cmd.stderr(std::process::Stdio::piped());
    cmd.output().expect("run agentflow")
}

/// A writer whose output carries `pad` bytes, then an editor that gets the
/// whole output as its input (and echoes it).
fn document_pipeline(name: &str, pad: u64) -> Value {
    json!({"name": name, "tasks": [
        {"agent": "writer", "input": {"_mock": {"pad_bytes": pad}}},
        {"agent": "editor", "input": {"content": "{{previous_output}}"}},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_of_1_2_mb_and_10_mb_complete_and_every_reader_sees_them_whole() {
    let mut s = Stack::start().await;
    let t = s.token(7);
    let sizes = [1_200_000u64, 10_000_000];
    let mut ids = vec![];
    for pad in sizes {
        let id = s
            .create(&t, document_pipeline(&format!("doc {pad}"), pad))
            .await;
        assert_eq!(s.execute(&t, &id).await.0, 202);
        ids.push(id);
    }
    for (id, pad) in ids.iter().zip(sizes) {
        let w = s.finished(&t, id).await;
        assert_eq!(w["status"], "completed", "{}", w["tasks"]);
        let first = &w["results"][0]["output"];
        assert_eq!(first["pad"].as_str().map(str::len), Some(pad as usize));
        // `{{previous_output}}` passed the whole value on.
        assert_eq!(&w["results"][1]["output"]["input"]["content"], first);
    }

    // The log holds references, not the bytes: every record of the
    // workflow topic is under the broker's limit.
    let log = common::read_topic(&s.brokers, &s.topic);
    let executed: Vec<&Value> = log
        .iter()
        .filter(|(_, ty, _)| ty == "agent.executed")
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(executed.len(), 4);
    for v in &executed {
        assert!(v.to_string().len() < 100_000, "a record carries its output");
        assert!(v["data"]["output"].is_null(), "{}", v["data"]);
        assert!(v["data"]["output_ref"]["sha256"].is_string());
    }

    // The audit trail (CLI and API) shows the steps.
    for id in &ids {
        let o = run(&s, &["audit", id, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let cli: Value = serde_json::from_slice(&o.stdout).unwrap();
        let types: Vec<&str> = cli["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "workflow.created",
                "workflow.started",
                "agent.executed",
                "agent.executed",
                "workflow.completed"
            ]
        );
        let (st, api) = s
            .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(api["events"], cli["events"]);
    }

    // Replay folds the log (resolving the references) to what Postgres has.
    let o = run(&s, &["replay", "--verify"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // A node on a brand-new database rebuilds the projection from the log
    // alone (the consumer group's stream, references resolved) and serves
    // the same outputs.
    let before = s.get(&t, &ids[1]).await;
    let admin = std::env::var("AGENTFLOW_TEST_ADMIN_URL").unwrap();
    let (_, fresh) = common::new_database(&admin, "r").await;
    s.kill9();
    s.db_url = fresh;
    s.spawn_server().await;
    let after = s.finished(&t, &ids[1]).await;
    assert_eq!(before["results"], after["results"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_cap_fails_the_step_at_once_and_the_workflow_can_be_resumed_or_cancelled()
 {
    let s = Stack::start_with(
        Duration::ZERO,
        "",
        &[("AGENTFLOW_MAX_OUTPUT_BYTES", "2000000")],
    )
    .await;
    let t = s.token(7);
    let id = s.create(&t, document_pipeline("too big", 3_000_000)).await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed", "{w}");
    let step = &w["tasks"][0];
    assert_eq!(step["error"]["kind"], "output_too_large", "{step}");
    assert_eq!(step["attempts"], 1, "not retried: {step}");
    assert_eq!(w["tasks"][1]["status"], "skipped");

    // Resumable: it fails the same way; then it can be cancelled.
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed");
    assert_eq!(w["runs"], 2);
    let (st, b) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!((st, b["status"].as_str()), (202, Some("cancelled")), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_broker_refuses_fails_the_step_instead_of_hanging() {
    // Offloading switched off: a 1.2 MB result goes inline, and the broker
    // (or librdkafka) refuses it as too large.
    let s = Stack::start_with(
        Duration::ZERO,
        "",
        &[("AGENTFLOW_INLINE_OUTPUT_BYTES", "16777216")],
    )
    .await;
    let t = s.token(7);
    let id = s.create(&t, document_pipeline("refused", 1_200_000)).await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["tasks"][0]["error"]["kind"], "output_too_large", "{w}");
    assert_eq!(s.agent.calls.snapshot().len(), 1);
    // Counted once; the step's small failure took its place, and no actor
    // had to be started again.
    assert_eq!(
        s.counter("agentflow_engine_records_refused_total").await,
        1.0
    );
    assert_eq!(
        s.counter("agentflow_engine_actor_restarts_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_too_large_for_the_log_is_a_413_not_a_503_to_retry() {
    // Under max_body_bytes (1 MiB), over what the broker takes per record.
    let s = Stack::start().await;
    let t = s.token(7);
    let body = json!({"name": "huge", "tasks": [
        {"agent": "a", "input": {"text": "y".repeat(1_040_000)}},
    ]});
    let (st, b) = s
        .req("POST", "/workflows/create", Some(&t), Some(body))
        .await;
    assert_eq!(st, 413, "{b}");
    assert_eq!(b["error"]["code"], "body_too_large", "{b}");
}
