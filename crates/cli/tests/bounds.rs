//! Nothing a user sends (or an agent answers) can make a record larger than
//! the log takes, or make the engine spin: values that must stay whole go
//! through the payload store, texts that only explain are cut with a
//! marker, and every value at its documented maximum works end to end.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, step};
use serde_json::{Value, json};

async fn wait_for_status(s: &Stack, t: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = s.get(t, id).await;
        if w["status"] == status {
            return w;
        }
        assert!(Instant::now() < deadline, "not {status}: {w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_error_quoting_a_huge_value_fails_the_step_with_a_cut_message() {
    // Step a answers ~600 KB; b's condition looks up a key built from it,
    // and CEL's error quotes that 1.2 MB key. The record of the error must
    // still fit the log: the step fails, and the workflow with it, at once.
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "huge-key", "steps": [
                {"id": "a", "agent": "writer", "input": {"_mock": {"pad_bytes": 600_000}}},
                {"id": "b", "agent": "editor", "after": ["a"],
                 "when": "steps.a.output[steps.a.output.pad + steps.a.output.pad] == 1"}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.finished(&t, &id).await;
    assert_eq!(w["status"], "failed", "{}", w["status"]);
    let b = step(&w, "b");
    assert_eq!(b["error"]["kind"], "condition_error", "{}", b["error"]);
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.len() < 4096, "{} bytes", message.len());
    assert!(message.contains("bytes cut]"), "{message:.300}");
    assert_eq!(w["error"]["error"]["kind"], "condition_error");
    // Nothing was refused, nothing restarted.
    assert_eq!(
        s.counter("agentflow_engine_records_refused_total").await,
        0.0
    );
    assert_eq!(
        s.counter("agentflow_engine_actor_restarts_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_body_just_under_the_limit_reaches_the_waiting_step_whole() {
    // A body just under max_body_bytes (1 MiB) is larger than the broker
    // takes in one record: the signal's record and the wait's record both
    // carry it by reference (the payload topic), and the step's output is
    // the whole body.
    let s = Stack::start().await;
    let t = s.token(5);
    let wait_id = "w".repeat(64);
    let id = s
        .create(
            &t,
            json!({"name": "big-signal", "steps": [
                {"id": wait_id, "wait": {"signal": "doc"}},
                {"id": "edit", "agent": "editor", "after": [wait_id],
                 "input": {"len": "{{steps.".to_owned() + &wait_id + ".output.size}}"}}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    wait_for_status(&s, &t, &id, "waiting").await;
    let text = "d".repeat(1_048_576 - 200);
    let body = json!({"size": text.len(), "text": text});
    assert!(serde_json::to_vec(&body).unwrap().len() < 1_048_576);
    let (st, b) = s
        .req(
            "POST",
            &format!("/workflows/{id}/signals/doc"),
            Some(&t),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let w = s.finished(&t, &id).await;
    assert_eq!(w["status"], "completed", "{}", w["error"]);
    assert!(
        step(&w, &wait_id)["output"] == body,
        "the body came back changed"
    );
    assert_eq!(
        step(&w, "edit")["output"]["input"]["len"],
        json!(text.len())
    );
    // In the log both records carry a reference, not the body.
    let log = common::read_topic(&s.brokers, &s.topic);
    for (ty, field) in [
        ("signal.received", "payload_ref"),
        ("wait.completed", "output_ref"),
    ] {
        let (_, _, r) = log
            .iter()
            .find(|(k, t, _)| k == &id && t == ty)
            .unwrap_or_else(|| panic!("no {ty}"));
        assert!(
            r["data"][field]["sha256"].is_string(),
            "{ty}: {}",
            r["data"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_expression_runs_and_a_longer_one_is_a_422() {
    let s = Stack::start().await;
    let t = s.token(5);
    let base = "steps.a.output.agent == 'writer'";
    let filler = " && 1 == 1";
    let mut when = base.to_owned();
    while when.len() + filler.len() <= 2048 {
        when.push_str(filler);
    }
    when.push_str(&" ".repeat(2048 - when.len()));
    assert_eq!(when.len(), 2048);
    let def = |when: &str| {
        json!({"name": "long-when", "steps": [
            {"id": "a", "agent": "writer"},
            {"id": "b", "agent": "editor", "after": ["a"], "when": when}
        ]})
    };
    let id = s.create(&t, def(&when)).await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.finished(&t, &id).await;
    assert_eq!(w["status"], "completed", "{}", w["error"]);
    assert_eq!(step(&w, "b")["status"], "completed");
    let (st, b) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(def(&format!("{when} "))),
        )
        .await;
    assert_eq!(st, 422, "{b}");
    assert_eq!(b["error"]["field"], "steps[1].when", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_huge_error_body_is_cut_in_the_record() {
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "loud-failure", "tasks": [
                {"agent": "writer", "input": {"_mock": {"fail_status": 422, "pad_bytes": 2_000_000}}}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.finished(&t, &id).await;
    assert_eq!(w["status"], "failed");
    let e = &w["tasks"][0]["error"];
    assert_eq!(e["kind"], "rejected", "{e}");
    assert_eq!(e["http_status"], 422);
    assert!(e["message"].as_str().unwrap().len() < 1024, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_ids_at_their_maximum_length_run_end_to_end() {
    let s = Stack::start().await;
    let t = s.token(5);
    // 255 characters of 4 bytes each.
    let name = "𝄞".repeat(255);
    let ids: Vec<String> = ["a", "b", "c"].iter().map(|c| c.repeat(64)).collect();
    let agent = format!("{}.-_", "A".repeat(125));
    assert_eq!(agent.len(), 128);
    let signal = format!("{}.-_", "s".repeat(61));
    let key = "k".repeat(255);
    let (st, b) = s
        .req_with_headers(
            "POST",
            "/workflows/create",
            &t,
            &[("Idempotency-Key", &key)],
            json!({"name": name, "steps": [
                {"id": ids[0], "agent": agent, "input": {"n": 1}},
                {"id": ids[1], "after": [ids[0]], "wait": {"signal": signal}},
                {"id": ids[2], "agent": agent, "after": [ids[1]],
                 "when": format!("steps.{}.output.ok == true", ids[1]),
                 "input": {"prev": format!("{{{{steps.{}.output.input.n}}}}", ids[0])}}
            ]}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let id = b["workflow_id"].as_str().unwrap().to_owned();
    assert_eq!(s.execute(&t, &id).await.0, 202);
    wait_for_status(&s, &t, &id, "waiting").await;
    let (st, b) = s
        .req_with_headers(
            "POST",
            &format!("/workflows/{id}/signals/{signal}"),
            &t,
            &[("Idempotency-Key", &key)],
            json!({"ok": true}),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let w = s.finished(&t, &id).await;
    assert_eq!(w["status"], "completed", "{}", w["error"]);
    assert_eq!(w["name"], name);
    assert_eq!(step(&w, &ids[2])["output"]["input"]["prev"], 1);
    assert_eq!(step(&w, &ids[0])["agent"], agent);
    // The list and the audit trail show them too.
    let (st, l) = s
        .req("GET", "/workflows/list?limit=5", Some(&t), None)
        .await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["workflows"][0]["name"], name);
    let (st, e) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
        .await;
    assert_eq!(st, 200, "{e}");
}
