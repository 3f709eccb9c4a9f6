//! Workflow graphs end to end, on the real stack: fan-out/fan-in, branches,
//! loops, waits for a signal, durable sleep, pause and resume.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, step};
use serde_json::{Value, json};

/// Polls the workflow until `check` holds.
async fn wait_until(
    s: &Stack,
    t: &str,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = s.get(t, id).await;
        if check(&w) {
            return w;
        }
        assert!(Instant::now() < deadline, "not {what}: {w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events(s: &Stack, t: &str, id: &str) -> Vec<Value> {
    let (st, b) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(t), None)
        .await;
    assert_eq!(st, 200, "{b}");
    b["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_fan_out_runs_its_steps_at_once_and_the_join_waits_for_all() {
    let s = Stack::start().await;
    let t = s.token(3);
    let id = s
        .create(
            &t,
            json!({"name": "research", "input": {"topic": "tides"}, "steps": [
                {"id": "plan", "agent": "planner", "input": {"topic": "{{input.topic}}"}},
                {"id": "web", "agent": "web", "after": ["plan"], "input": {"_mock": {"hold": "fan"}, "q": "{{steps.plan.output.input.topic}}"}},
                {"id": "papers", "agent": "papers", "after": ["plan"], "input": {"_mock": {"hold": "fan"}}},
                {"id": "news", "agent": "news", "after": ["plan"], "input": {"_mock": {"hold": "fan"}}},
                {"id": "report", "agent": "writer", "after": ["web", "papers", "news"],
                 "input": {"web": "{{steps.web.output.input.q}}", "n": "{{steps.news.output.agent}}"}}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    // All three branches are under way together: a chain would hold one.
    let keys: Vec<String> = ["web", "papers", "news"]
        .iter()
        .map(|b| format!("{id}:{b}:1"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !keys.iter().all(|k| s.agent.in_flight.keys().contains(k)) {
        assert!(
            Instant::now() < deadline,
            "the branches did not run at once"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The projection shows them running (it may trail the engine a little).
    let w = wait_until(&s, &t, &id, "all three running", |w| {
        ["web", "papers", "news"]
            .iter()
            .all(|b| step(w, b)["status"] == "running")
    })
    .await;
    assert_eq!(step(&w, "report")["status"], "pending");
    assert_eq!(s.agent.calls.get(&format!("{id}:report:1")), 0);
    s.agent.gates.release("fan");

    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    let report = step(&w, "report");
    assert_eq!(report["after"], json!(["web", "papers", "news"]));
    assert_eq!(report["input"], report["output"]["input"]);
    assert_eq!(
        report["output"]["input"],
        json!({"web": "tides", "n": "news"})
    );
    for key in keys {
        assert_eq!(s.agent.calls.get(&key), 1, "{key}");
    }
    s.assert_projection_is_the_fold(std::slice::from_ref(&id))
        .await;
}

#[tokio::test]
async fn a_per_workflow_cap_limits_the_calls_in_flight() {
    let s = Stack::start().await;
    let t = s.token(3);
    let branches: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("b{i}"), "agent": "worker", "input": {"_mock": {"hold": "cap"}}}))
        .collect();
    let id = s
        .create(
            &t,
            json!({"name": "capped", "max_concurrency": 2, "steps": branches}),
        )
        .await;
    s.execute(&t, &id).await;
    let in_flight = || {
        (0..4)
            .filter(|i| s.agent.in_flight.keys().contains(&format!("{id}:b{i}:1")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(in_flight(), 2, "no more than max_concurrency at once");
    s.agent.gates.release("cap");
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
}

/// GET shows `running` exactly the steps whose calls the engine has in
/// flight under `max_concurrency`, the others `pending`; as calls end the
/// next ones run.
#[tokio::test]
async fn under_a_cap_get_shows_running_only_the_calls_in_flight() {
    let s = Stack::start().await;
    let t = s.token(3);
    let branches: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("b{i}"), "agent": "worker", "input": {"_mock": {"hold": format!("g{i}")}}}))
        .collect();
    let id = s
        .create(
            &t,
            json!({"name": "capped", "max_concurrency": 2, "steps": branches}),
        )
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let in_flight = || -> Vec<usize> {
        (0..4)
            .filter(|i| s.agent.in_flight.keys().contains(&format!("{id}:b{i}:1")))
            .collect()
    };
    let statuses = |w: &Value| -> Vec<String> {
        (0..4)
            .map(|i| {
                step(w, &format!("b{i}"))["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight().len() < 2 {
        assert!(Instant::now() < deadline, "the calls did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first two in definition order (all four became ready together).
    assert_eq!(in_flight(), vec![0, 1]);
    let w = wait_until(&s, &t, &id, "b0 and b1 running", |w| {
        statuses(w) == ["running", "running", "pending", "pending"]
    })
    .await;
    assert_eq!(w["status"], "running");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        in_flight(),
        vec![0, 1],
        "no more than max_concurrency at once"
    );
    assert_eq!(
        statuses(&s.get(&t, &id).await),
        ["running", "running", "pending", "pending"]
    );

    // b0 ends: b2 takes its place, b1 keeps running.
    s.agent.gates.release("g0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight() != vec![1, 2] {
        assert!(
            Instant::now() < deadline,
            "b2 did not start: {:?}",
            in_flight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until(&s, &t, &id, "b1 and b2 running", |w| {
        statuses(w) == ["completed", "running", "running", "pending"]
    })
    .await;

    for g in ["g1", "g2", "g3"] {
        s.agent.gates.release(g);
    }
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    for i in 0..4 {
        assert_eq!(s.agent.calls.get(&format!("{id}:b{i}:1")), 1, "b{i}");
    }
    s.assert_projection_is_the_fold(std::slice::from_ref(&id))
        .await;
}

#[tokio::test]
async fn a_condition_takes_one_branch_and_the_join_runs_after_it() {
    let s = Stack::start().await;
    let t = s.token(3);
    let def = |score: u32| {
        json!({"name": "lead", "input": {"lead": "acme"}, "steps": [
            {"id": "score", "agent": "scorer", "input": {"score": score}},
            {"id": "crm", "agent": "crm", "after": ["score"], "when": "steps.score.output.input.score >= 70"},
            {"id": "nurture", "agent": "mailer", "after": ["score"], "when": "steps.score.output.input.score < 70"},
            {"id": "thank", "agent": "mailer", "after": ["nurture"]},
            {"id": "report", "agent": "writer", "after": ["crm", "thank"], "input": {"lead": "{{input.lead}}"}}
        ]})
    };
    let hot = s.create(&t, def(85)).await;
    s.execute(&t, &hot).await;
    let w = s.wait_done(&t, &hot, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(step(&w, "crm")["status"], "completed");
    assert_eq!(step(&w, "nurture")["status"], "skipped");
    assert_eq!(step(&w, "nurture")["skip_reason"], "condition");
    assert_eq!(step(&w, "thank")["status"], "skipped");
    assert_eq!(step(&w, "thank")["skip_reason"], "unreachable");
    assert_eq!(step(&w, "report")["output"]["input"]["lead"], "acme");
    assert_eq!(s.agent.calls.get(&format!("{hot}:nurture:1")), 0);
    // Each decision is a record: what was evaluated, and the result.
    let decisions: Vec<(String, Value)> = events(&s, &t, &hot)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "condition.evaluated")
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_owned(),
                e["condition"]["result"].clone(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("crm".into(), json!(true)),
            ("nurture".into(), json!(false))
        ]
    );

    let cold = s.create(&t, def(40)).await;
    s.execute(&t, &cold).await;
    let w = s.wait_done(&t, &cold, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(step(&w, "crm")["status"], "skipped");
    assert_eq!(step(&w, "thank")["status"], "completed");
    assert_eq!(step(&w, "report")["status"], "completed");

    // A condition that has no boolean value fails its step, with the reason.
    let broken = s
        .create(
            &t,
            json!({"name": "broken", "steps": [
                {"id": "a", "agent": "x"},
                {"id": "b", "agent": "x", "after": ["a"], "when": "steps.a.output.missing > 1"}
            ]}),
        )
        .await;
    s.execute(&t, &broken).await;
    let w = s.wait_done(&t, &broken, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["error"]["error"]["kind"], "condition_error", "{w}");
    s.assert_projection_is_the_fold(&[hot, cold, broken]).await;
}

#[tokio::test]
async fn a_loop_runs_until_its_condition_holds_and_keeps_every_iteration() {
    let s = Stack::start().await;
    let t = s.token(3);
    let id = s
        .create(
            &t,
            json!({"name": "revise", "steps": [
                {"id": "draft", "agent": "writer", "input": {"text": "v0"}},
                {"id": "revise", "agent": "editor", "after": ["draft"],
                 "input": {"n": "{{iteration}}", "last": "{{steps.revise.output.input.n}}"},
                 "repeat": {"until": "output.input.n >= 3", "max_iterations": 5}},
                {"id": "publish", "agent": "publisher", "after": ["revise"], "input": {"final": "{{previous_output}}"}}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    let revise = step(&w, "revise");
    assert_eq!(revise["iteration"], 3);
    let iterations = revise["iterations"].as_array().unwrap();
    assert_eq!(iterations.len(), 3);
    for (i, it) in iterations.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(it["input"]["n"], n);
        // Each iteration sees the one before it.
        let last = if n == 1 { Value::Null } else { json!(n - 1) };
        assert_eq!(it["input"]["last"], last, "{it}");
        // Its own Idempotency-Key.
        assert_eq!(it["idempotency_key"], format!("{id}:revise:{n}"));
        assert_eq!(s.agent.calls.get(&format!("{id}:revise:{n}")), 1);
    }
    assert_eq!(
        step(&w, "publish")["output"]["input"]["final"]["input"]["n"],
        3
    );
    // The view shows what each call was sent (the mock echoes it).
    assert_eq!(revise["input"], iterations[2]["input"]);
    assert_eq!(
        step(&w, "publish")["input"],
        step(&w, "publish")["output"]["input"]
    );
    let untils: Vec<Value> = events(&s, &t, &id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "condition.evaluated")
        .map(|e| json!([e["iteration"], e["condition"]["result"]]))
        .collect();
    assert_eq!(
        untils,
        vec![json!([1, false]), json!([2, false]), json!([3, true])]
    );

    // Past max_iterations the workflow fails, clearly.
    let endless = s
        .create(
            &t,
            json!({"name": "endless", "steps": [
                {"id": "spin", "agent": "x", "repeat": {"until": "false", "max_iterations": 2}}
            ]}),
        )
        .await;
    s.execute(&t, &endless).await;
    let w = s.wait_done(&t, &endless, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["error"]["error"]["kind"], "max_iterations");
    assert_eq!(step(&w, "spin")["iterations"].as_array().unwrap().len(), 2);
    s.assert_projection_is_the_fold(&[id, endless]).await;
}

#[tokio::test]
async fn a_wait_parks_the_workflow_until_its_signal_arrives() {
    let s = Stack::start().await;
    let (t, other) = (s.token(3), s.token(4));
    let id = s
        .create(
            &t,
            json!({"name": "proposal", "steps": [
                {"id": "draft", "agent": "writer"},
                {"id": "approval", "after": ["draft"], "wait": {"signal": "approved"}},
                {"id": "send", "agent": "mailer", "after": ["approval"],
                 "when": "steps.approval.output.ok == true", "input": {"note": "{{steps.approval.output.note}}"}}
            ]}),
        )
        .await;
    // Nothing waits yet.
    let path = format!("/workflows/{id}/signals/approved");
    let (st, b) = s
        .req("POST", &path, Some(&t), Some(json!({"ok": true})))
        .await;
    assert_eq!(st, 409, "{b}");
    s.execute(&t, &id).await;
    let w = wait_until(&s, &t, &id, "waiting", |w| w["status"] == "waiting").await;
    assert_eq!(step(&w, "approval")["status"], "waiting");
    assert_eq!(w["waiting_for"], json!(["approved"]));
    // A waiting workflow holds no actor.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&s, "workflow_active_count").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "an actor is still held while waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Not another user's; not another signal; not a malformed name.
    let (st, _) = s
        .req("POST", &path, Some(&other), Some(json!({"ok": true})))
        .await;
    assert_eq!(st, 404);
    let (st, b) = s
        .req(
            "POST",
            &format!("/workflows/{id}/signals/rejected"),
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 409, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("approved"),
        "{b}"
    );
    let (st, _) = s
        .req(
            "POST",
            &format!("/workflows/{id}/signals/Bad%20Name"),
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 400);

    // Delivered once, however often it is retried with its key.
    for _ in 0..2 {
        let resp = s
            .http
            .post(format!("{}{path}", s.base))
            .bearer_auth(&t)
            .header("Idempotency-Key", "approve-1")
            .json(&json!({"ok": true, "note": "ship it"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    }
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(
        step(&w, "approval")["output"],
        json!({"ok": true, "note": "ship it"})
    );
    assert_eq!(step(&w, "send")["output"]["input"]["note"], "ship it");
    let received = events(&s, &t, &id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "signal.received")
        .count();
    assert_eq!(received, 1);
    s.assert_projection_is_the_fold(std::slice::from_ref(&id))
        .await;
}

#[tokio::test]
async fn a_wait_times_out_into_its_default_or_a_failure() {
    let s = Stack::start().await;
    let t = s.token(3);
    let def = |default: Option<Value>| {
        let mut wait = json!({"signal": "approved", "timeout_ms": 800});
        if let Some(d) = default {
            wait["timeout_output"] = d;
        }
        json!({"name": "approval", "steps": [
            {"id": "approval", "wait": wait},
            {"id": "next", "agent": "x", "after": ["approval"], "when": "steps.approval.output.ok"}
        ]})
    };
    let fails = s.create(&t, def(None)).await;
    let defaults = s.create(&t, def(Some(json!({"ok": false})))).await;
    s.execute(&t, &fails).await;
    s.execute(&t, &defaults).await;
    let w = s.wait_done(&t, &fails, Duration::from_secs(20)).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["error"]["error"]["kind"], "wait_timeout");
    let w = s.wait_done(&t, &defaults, Duration::from_secs(20)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(step(&w, "approval")["output"], json!({"ok": false}));
    assert_eq!(step(&w, "next")["status"], "skipped");
}

#[tokio::test]
async fn a_sleep_survives_a_restart_and_wakes_on_time() {
    // A node id: the restarted node takes its partitions back at once
    // (static membership), not after the session timeout.
    let mut s = Stack::start_with(Duration::ZERO, "", &[("AGENTFLOW_NODE_ID", "sleeper")]).await;
    let t = s.token(3);
    let id = s
        .create(
            &t,
            json!({"name": "follow up", "steps": [
                {"id": "hello", "agent": "mailer"},
                {"id": "later", "after": ["hello"], "sleep_ms": 4000},
                {"id": "follow_up", "agent": "mailer", "after": ["later"]}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    let w = wait_until(&s, &t, &id, "sleeping", |w| {
        step(w, "later")["status"] == "waiting"
    })
    .await;
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(step(&w, "later")["wait_until"].clone()).unwrap();
    // The node dies while it sleeps; another takes over from the log.
    s.kill9();
    s.spawn_server().await;
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    let woke: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(step(&w, "later")["finished_at"].clone()).unwrap();
    let late = (woke - until).num_milliseconds();
    assert!((0..=1000).contains(&late), "woke {late} ms after its time");
    assert_eq!(s.agent.calls.get(&format!("{id}:follow_up:1")), 1);
}

#[tokio::test]
async fn pause_holds_new_steps_and_resume_goes_on() {
    let s = Stack::start().await;
    let t = s.token(3);
    let id = s
        .create(
            &t,
            json!({"name": "paused", "tasks": [
                {"agent": "first", "input": {"_mock": {"hold": "first"}}},
                {"agent": "second"}
            ]}),
        )
        .await;
    let pause = format!("/workflows/{id}/pause");
    let resume = format!("/workflows/{id}/resume");
    // Not before it runs.
    assert_eq!(s.req("POST", &pause, Some(&t), None).await.0, 409);
    s.execute(&t, &id).await;
    common::wait_for_call(&s, &format!("{id}:step_1:1")).await;
    let (st, b) = s.req("POST", &pause, Some(&t), None).await;
    assert_eq!((st, b["status"].as_str()), (202, Some("paused")), "{b}");
    // Idempotent.
    assert_eq!(s.req("POST", &pause, Some(&t), None).await.0, 202);
    assert_eq!(s.get(&t, &id).await["status"], "paused");
    // The call in flight finishes and is kept; the next step does not start.
    s.agent.gates.release("first");
    let w = wait_until(&s, &t, &id, "step 1 kept", |w| {
        w["tasks"][0]["status"] == "completed"
    })
    .await;
    assert_eq!(w["status"], "paused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.agent.calls.get(&format!("{id}:step_2:1")), 0);
    assert_eq!(s.get(&t, &id).await["tasks"][1]["status"], "pending");

    let (st, b) = s.req("POST", &resume, Some(&t), None).await;
    assert_eq!(st, 202, "{b}");
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(s.agent.calls.get(&format!("{id}:step_2:1")), 1);
    // Finished: neither is legal any more.
    assert_eq!(s.req("POST", &pause, Some(&t), None).await.0, 409);
    assert_eq!(s.req("POST", &resume, Some(&t), None).await.0, 409);
    let types: Vec<Value> = events(&s, &t, &id)
        .await
        .into_iter()
        .map(|e| e["event_type"].clone())
        .filter(|t| t == "workflow.paused" || t == "workflow.resumed")
        .collect();
    assert_eq!(
        types,
        vec![json!("workflow.paused"), json!("workflow.resumed")]
    );
    s.assert_projection_is_the_fold(std::slice::from_ref(&id))
        .await;
}

#[tokio::test]
async fn each_graph_mistake_is_a_422_naming_its_field() {
    let s = Stack::start().await;
    let t = s.token(3);
    let cases = [
        (
            json!({"name": "g", "steps": [{"id": "a", "agent": "x", "after": ["b"]}, {"id": "b", "agent": "x", "after": ["a"]}]}),
            "steps[0].after",
        ),
        (
            json!({"name": "g", "steps": [{"id": "a", "agent": "x", "after": ["nope"]}]}),
            "steps[0].after",
        ),
        (
            json!({"name": "g", "steps": [{"id": "a", "agent": "x"}, {"id": "a", "agent": "y"}]}),
            "steps[1].id",
        ),
        (
            json!({"name": "g", "steps": [{"id": "a", "agent": "x"}, {"id": "b", "agent": "x", "input": "{{steps.a.output}}"}]}),
            "steps[1].input",
        ),
        (
            json!({"name": "g", "steps": [{"id": "a", "agent": "x", "when": "steps.a.output >"}]}),
            "steps[0].when",
        ),
        (
            json!({"name": "g", "steps": [{"id": "a", "wait": {"signal": "ok"}, "sleep_ms": 5}]}),
            "steps[0]",
        ),
    ];
    for (body, field) in cases {
        let (st, b) = s
            .req("POST", "/workflows/create", Some(&t), Some(body.clone()))
            .await;
        assert_eq!(st, 422, "{body}: {b}");
        assert_eq!(b["error"]["field"], field, "{body}: {b}");
        assert_eq!(b["error"]["code"], "invalid_workflow");
    }
}

async fn metric(s: &Stack, name: &str) -> Option<f64> {
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
