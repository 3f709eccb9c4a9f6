//! The guide's §8 recovery paths beyond retries: cancelling a workflow
//! (pending, running, failed) and per-task and whole-workflow timeouts.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, pipeline};
use serde_json::json;

#[tokio::test]
async fn a_pending_workflow_cancels_at_once_and_stays_cancelled() {
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s.create(&t, pipeline("to cancel", &["a", "b"])).await;

    let (st, b) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!((st, b["status"].as_str()), (202, Some("cancelled")), "{b}");
    let w = s.get(&t, &id).await;
    assert_eq!(w["status"], "cancelled");
    assert_eq!(w["tasks"][0]["status"], "skipped");
    assert!(w["finished_at"].is_string());

    // Final: no run; a second cancel (a client retrying) says it is
    // cancelled and writes nothing; another user cannot even see it.
    assert_eq!(s.execute(&t, &id).await.0, 409);
    let (st, b) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!((st, b["status"].as_str()), (202, Some("cancelled")), "{b}");
    assert_eq!(events(&s, &t, &id).await, 2, "the repeat wrote nothing");
    let (st, _) = s
        .req(
            "POST",
            &format!("/workflows/{id}/cancel"),
            Some(&s.token(6)),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .req("POST", "/workflows/not-a-uuid/cancel", Some(&t), None)
        .await;
    assert_eq!(st, 400);
    let (st, b) = s
        .req("GET", "/workflows/list?status=cancelled", Some(&t), None)
        .await;
    assert_eq!((st, b["count"].as_u64()), (200, Some(1)), "{b}");
    assert!(s.agent.calls.snapshot().is_empty(), "no agent was called");
}

#[tokio::test]
async fn a_running_workflow_stops_after_its_step_in_flight() {
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "long", "tasks": [
                {"agent": "draft", "input": {"_mock": {"hold": "draft"}}},
                {"agent": "polish", "input": {"text": "{{previous_output}}"}},
                {"agent": "publish", "input": {}}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    // The cancel lands while the agent holds step 1's call.
    common::wait_for_call(&s, &format!("{id}:step_1:1")).await;

    let (st, b) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!((st, b["status"].as_str()), (202, Some("cancelling")), "{b}");
    let w = s.get(&t, &id).await;
    assert_eq!(
        (w["status"].as_str(), w["cancel_requested"].as_bool()),
        (Some("running"), Some(true))
    );
    // Asking twice is harmless (and writes nothing more).
    let (st, _) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!(st, 202);
    assert!(
        s.agent.in_flight.keys().contains(&format!("{id}:step_1:1")),
        "the cancel landed while step 1 was in flight"
    );
    s.agent.gates.release("draft");

    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    assert_eq!(w["status"], "cancelled", "{w}");
    // The step in flight finished and its result is kept; the rest never ran.
    assert_eq!(w["results"][0]["output"]["agent"], "draft");
    assert_eq!(w["tasks"][1]["status"], "skipped");
    assert_eq!(w["tasks"][2]["status"], "skipped");
    let calls = s.agent.calls.snapshot();
    assert_eq!(calls.get(&format!("{id}:step_1:1")), Some(&1));
    assert_eq!(calls.len(), 1, "{calls:?}");

    let types: Vec<String> = common::read_topic(&s.brokers, &s.topic)
        .into_iter()
        .filter(|(k, _, _)| *k == id)
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(
        types,
        [
            "workflow.created",
            "workflow.started",
            "workflow.cancel_requested",
            "agent.executed",
            "workflow.cancelled"
        ]
    );
    s.assert_projection_is_the_fold(std::slice::from_ref(&id))
        .await;
}

#[tokio::test]
async fn a_failed_workflow_can_be_cancelled_instead_of_resumed() {
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "broken", "tasks": [
                {"agent": "a", "input": {"_mock": {"fail_status": 422}}},
                {"agent": "b", "input": {}}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    assert_eq!(
        s.wait_done(&t, &id, Duration::from_secs(20)).await["status"],
        "failed"
    );
    let (st, b) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!((st, b["status"].as_str()), (202, Some("cancelled")), "{b}");
    let w = s.get(&t, &id).await;
    assert_eq!(w["status"], "cancelled");
    assert_eq!(
        w["tasks"][0]["status"], "failed",
        "the failure stays on record"
    );
    assert_eq!(s.execute(&t, &id).await.0, 409, "no resume after cancel");
}

#[tokio::test]
async fn a_task_timeout_overrides_the_agents_per_attempt() {
    // The agent's own timeout (5 s in tests) would let this 1 s call finish.
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "impatient", "tasks": [
                {"agent": "slow", "timeout_ms": 150, "input": {"_mock": {"delay_ms": 1000}}}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    assert_eq!(w["status"], "failed", "{w}");
    let step = &w["tasks"][0];
    assert_eq!(step["error"]["kind"], "timeout", "{w}");
    assert_eq!(step["attempts"], 3, "retried up to the attempts");
    assert!(
        step["error"]["message"]
            .as_str()
            .unwrap()
            .contains("150 ms"),
        "{w}"
    );
}

#[tokio::test]
async fn a_workflow_timeout_cuts_the_step_in_flight_and_skips_the_rest() {
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "deadline", "timeout_ms": 800, "tasks": [
                {"agent": "quick", "input": {"_mock": {"delay_ms": 100}}},
                {"agent": "stuck", "input": {"_mock": {"delay_ms": 4000}}},
                {"agent": "never", "input": {}}
            ]}),
        )
        .await;
    let began = Instant::now();
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    let took = began.elapsed();
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["timeout_ms"], 800);
    assert_eq!(w["tasks"][0]["status"], "completed");
    assert_eq!(w["tasks"][1]["error"]["kind"], "workflow_timeout", "{w}");
    assert_eq!(w["tasks"][2]["status"], "skipped");
    assert!(
        took < Duration::from_millis(3000),
        "cut at the deadline, took {took:?}"
    );
    assert_eq!(s.agent.calls.get(&format!("{id}:step_3:1")), 0);

    // A bad timeout is the user's mistake: 422, nothing written.
    let (st, b) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(json!({"name": "x", "timeout_ms": -5, "tasks": [{"agent": "a"}]})),
        )
        .await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (422, Some("invalid_workflow")),
        "{b}"
    );
}

#[tokio::test]
async fn a_cancel_stops_the_retries_of_the_step_in_flight() {
    // An agent that fails slowly, with many attempts allowed: without the
    // cancel the step would be tried 6 times (~3 s).
    let s = Stack::start_with(
        Duration::ZERO,
        "[agents.flaky]\nurl = \"{mock}/agents/flaky\"\nmax_attempts = 6\n",
        &[],
    )
    .await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "flaky", "tasks": [
                {"agent": "flaky", "input": {"_mock": {"delay_ms": 400, "fail_status": 503}}},
                {"agent": "after", "input": {}}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    // Cancel once the agent has answered 503 to the first attempt and holds
    // the second.
    let key = format!("{id}:step_1:1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(s.agent.calls.get(&key) >= 2 && s.agent.in_flight.keys().contains(&key)) {
        assert!(std::time::Instant::now() < deadline, "no second attempt");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (st, b) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!((st, b["status"].as_str()), (202, Some("cancelling")), "{b}");
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    assert_eq!(w["status"], "cancelled", "{w}");
    assert_eq!(
        w["tasks"][0]["status"], "skipped",
        "no result for an abandoned step"
    );
    let attempts = s.agent.calls.get(&format!("{id}:step_1:1"));
    assert!(
        (2..=3).contains(&attempts),
        "stopped retrying: {attempts} attempts"
    );
    assert_eq!(s.agent.calls.get(&format!("{id}:step_2:1")), 0);
    s.assert_projection_is_the_fold(std::slice::from_ref(&id))
        .await;
}

#[tokio::test]
async fn a_timed_out_workflow_resumes_with_a_fresh_deadline() {
    // Step 2 always takes 1.5 s, over the 400 ms deadline: each run times
    // out there; a resume is a new run with a deadline of its own, and keeps
    // step 1.
    let s = Stack::start().await;
    let t = s.token(5);
    let id = s
        .create(
            &t,
            json!({"name": "deadline", "timeout_ms": 400, "tasks": [
                {"agent": "a", "input": {}},
                {"agent": "b", "input": {"_mock": {"delay_ms": 1500}}},
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    assert_eq!(w["status"], "failed");
    assert_eq!(w["tasks"][1]["error"]["kind"], "workflow_timeout");
    let first_started = w["started_at"].clone();

    // Resuming starts the clock again from the resume.
    let (st, b) = s.execute(&t, &id).await;
    assert_eq!(st, 202, "{b}");
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    assert_eq!(w["status"], "failed", "still too slow: {w}");
    assert_eq!(w["runs"], 2);
    assert_ne!(w["started_at"], first_started, "a new run, a new deadline");
    assert_eq!(w["results"][0]["step"], 1, "step 1 kept from the first run");
    assert_eq!(
        s.agent.calls.get(&format!("{id}:step_1:1")),
        1,
        "and not run again"
    );
}

/// How many records the workflow's audit trail holds.
async fn events(s: &Stack, t: &str, id: &str) -> u64 {
    let (st, b) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(t), None)
        .await;
    assert_eq!(st, 200, "{b}");
    b["count"].as_u64().unwrap()
}
