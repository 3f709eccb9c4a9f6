//! Issue 11: the read side can be neither stopped by one record nor made
//! to deny a workflow the log has.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use agentflow_core::{AgentName, Event, Record, StepDef, TaskDef, UserId, WorkflowId};
use agentflow_log::{LogConfig, Producer};
use common::{Stack, pipeline};
use serde_json::{Value, json};

fn run(s: &Stack, args: &[&str]) -> Output {
    let mut cmd = s.command(args);
    cmd.stderr(std::process::Stdio::piped());
    cmd.output().expect("run agentflow")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// 11.1: a record that Postgres cannot hold (U+0000 in a name, as written
/// by a version that did not check) no longer stops the projection: it is
/// quarantined, counted, listed, and everyone else's workflows go on.
#[tokio::test]
async fn a_record_postgres_cannot_hold_is_quarantined_and_the_read_side_goes_on() {
    let s = Stack::start().await;
    let (t, other) = (s.token(5), s.token(6));
    let bad = WorkflowId::new();
    let record = Record::new(
        bad,
        UserId(5),
        1,
        chrono::Utc::now(),
        Event::Created {
            name: "bad\u{0}name".into(),
            steps: vec![StepDef::of_task(
                1,
                TaskDef {
                    agent: AgentName::parse("a").unwrap(),
                    input: json!({}),
                    timeout_ms: None,
                },
            )],
            input: json!({}),
            timeout_ms: None,
            max_concurrency: None,
        },
    );
    let producer = Producer::new(&LogConfig::new(&s.brokers, &s.topic)).unwrap();
    producer
        .append(&record, Duration::from_secs(10))
        .await
        .unwrap();

    // Every other workflow is projected as before, at once.
    let began = Instant::now();
    let after = s.create(&t, pipeline("after", &["a", "b"])).await;
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "the create waited out the projection: {:?}",
        began.elapsed()
    );
    assert_eq!(s.get(&t, &after).await["status"], "pending");
    assert_eq!(s.execute(&t, &after).await.0, 202);
    let done = s.wait_done(&t, &after, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed", "{done}");

    // The quarantined workflow: its owner is told why, no one else learns
    // it exists.
    let path = format!("/workflows/{bad}");
    let (st, body) = s.req("GET", &path, Some(&t), None).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["error"]["code"], "projection_quarantined", "{body}");
    let (st, _) = s.req("GET", &path, Some(&other), None).await;
    assert_eq!(st, 404);

    // Counted, listed by replay --verify (which fails), marked by audit.
    let (_, metrics) = s.req("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("agentflow_projector_quarantined_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    let o = run(&s, &["replay", "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("quarantined record at") && text.contains(&bad.to_string()),
        "{text}"
    );
    let o = run(&s, &["audit", &bad.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("QUARANTINED"), "{}", stdout(&o));
    let o = run(&s, &["audit", &bad.to_string(), "--json"]);
    let audit: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(audit["events"][0]["quarantined"].is_string(), "{audit}");
}

/// 11.1: when a later record of a projected workflow is quarantined, its
/// row stops before it: GET says so, the trail shows the record marked,
/// and changes through the API are refused instead of being decided on a
/// state the log has left behind.
#[tokio::test]
async fn a_workflow_with_a_quarantined_record_says_so_and_refuses_changes() {
    let s = Stack::start().await;
    let t = s.token(7);
    let id = s.create(&t, pipeline("w", &["a"])).await;
    let store = agentflow_store::Store::connect(&s.db_url, 1).await.unwrap();
    let wid = WorkflowId::parse(&id).unwrap();
    let st = store.reader().get_workflow(wid).await.unwrap().unwrap();
    let partition = store
        .reader()
        .workflow_partition(wid)
        .await
        .unwrap()
        .unwrap();
    // What the projector does with a record Postgres refuses.
    let started = Record::new(
        wid,
        UserId(7),
        st.seq + 1,
        chrono::Utc::now(),
        Event::Started,
    )
    .after(st.last_event_id);
    store
        .writer()
        .quarantine(
            &s.topic,
            partition,
            1_000_000,
            Ok(&started),
            "test: refused by Postgres",
        )
        .await
        .unwrap();

    let w = s.get(&t, &id).await;
    assert_eq!(w["projection"]["complete"], false, "{w}");
    assert_eq!(
        w["projection"]["quarantined"][0]["event_type"], "workflow.started",
        "{w}"
    );
    let (st, body) = s.execute(&t, &id).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["error"]["code"], "projection_quarantined");
    let (st, body) = s
        .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
        .await;
    assert_eq!(st, 409, "{body}");
    let (st, trail) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
        .await;
    assert_eq!(st, 200, "{trail}");
    let events = trail["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{trail}");
    assert_eq!(events[1]["event_type"], "workflow.started");
    assert_eq!(events[1]["quarantined"], "test: refused by Postgres");
    assert_eq!(events[1]["applied"], false);
    // A wait for the end does not run out the clock on a row that no
    // longer changes.
    let began = Instant::now();
    let (st, w) = s
        .req(
            "GET",
            &format!("/workflows/{id}?wait=finished&timeout_ms=20000"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(st, 200, "{w}");
    assert!(began.elapsed() < Duration::from_secs(5));
}

/// 11.2: a 201 is a promise. While the projector is down, creates are
/// acknowledged (the log has them) after the bounded projection wait; the
/// GET, execute and cancel that follow must not deny them with a 404: they
/// answer 503 with Retry-After until the projection can tell, then the
/// workflow is there. A 404 still comes for an id the log does not have.
#[tokio::test]
async fn a_201_is_never_followed_by_a_404_while_the_projector_lags() {
    let mut s = Stack::prepare_with(&[("AGENTFLOW_PROJECTION_WAIT_MS", "300")]).await;
    s.serve_args = vec!["--no-projector".into()];
    s.spawn_helper(&["serve", "--no-api", "--no-engine"]);
    s.spawn_server().await;
    let t = s.token(3);
    // The projector works (on a loaded machine it may trail the 300 ms
    // wait: then 503 with Retry-After, never 404)...
    let first = s.create(&t, pipeline("first", &["a"])).await;
    assert_eq!(found(&s, &t, &first).await["status"], "pending");
    // ...then stops.
    let mut projector = s.helpers.remove(0);
    projector.kill().unwrap();
    projector.wait().unwrap();

    let mut ids = vec![];
    for i in 0..6 {
        ids.push(s.create(&t, pipeline(&format!("w{i}"), &["a"])).await);
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    for id in ids.iter().chain([&unknown]) {
        for (method, path) in [
            ("GET", format!("/workflows/{id}")),
            (
                "GET",
                format!("/workflows/{id}?wait=finished&timeout_ms=100"),
            ),
            ("GET", format!("/workflows/{id}/events")),
            ("POST", format!("/workflows/{id}/execute")),
            ("POST", format!("/workflows/{id}/cancel")),
        ] {
            let (status, retry, body) = answer(&s, &t, method, &path).await;
            assert_eq!(status, 503, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "projection_behind", "{body}");
            assert!(retry, "{method} {path}: no Retry-After");
        }
    }

    // The projector is back: every acknowledged workflow is found.
    s.spawn_helper(&["serve", "--no-api", "--no-engine"]);
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (st, body) = s.execute(&t, id).await;
            if st == 202 {
                break;
            }
            assert_eq!(st, 503, "execute {id}: {body}");
            assert!(Instant::now() < deadline, "{id} never found");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for id in &ids {
        let w = s.wait_done(&t, id, Duration::from_secs(30)).await;
        assert_eq!(w["status"], "completed", "{w}");
    }
    let (st, body) = s
        .req("GET", &format!("/workflows/{unknown}"), Some(&t), None)
        .await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

/// The status of `method path`, whether it carries `Retry-After`, and its
/// body.
async fn answer(s: &Stack, t: &str, method: &str, path: &str) -> (u16, bool, Value) {
    let r = s
        .http
        .request(method.parse().unwrap(), format!("{}{path}", s.base))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").is_some();
    (status, retry, r.json().await.unwrap())
}

/// GET of a workflow the log has: 200, or 503 with `Retry-After` while
/// the projection cannot tell yet (never a 404); polled until 200.
async fn found(s: &Stack, t: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, retry, body) = answer(s, t, "GET", &format!("/workflows/{id}")).await;
        if status == 200 {
            return body;
        }
        assert_eq!(status, 503, "GET {id}: {body}");
        assert!(retry, "a 503 without Retry-After: {body}");
        assert!(Instant::now() < deadline, "{id} not found in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cancel the log took is never denied: with the projector stopped, the
/// API cannot tell what the cancel did, so it answers 503 with Retry-After
/// (never a 409 "changed meanwhile" read off the stale row), and asked
/// again once the projector is back it answers 202 with the outcome.
#[tokio::test]
async fn a_cancel_written_while_the_projector_is_stopped_is_never_a_409() {
    let mut s = Stack::prepare_with(&[("AGENTFLOW_PROJECTION_WAIT_MS", "300")]).await;
    s.serve_args = vec!["--no-projector".into()];
    s.spawn_helper(&["serve", "--no-api", "--no-engine"]);
    s.spawn_server().await;
    let t = s.token(3);
    let pending = s.create(&t, pipeline("pending", &["a"])).await;
    let running = s
        .create(
            &t,
            json!({"name": "running", "tasks": [
                {"agent": "slow", "input": {"_mock": {"hold": "cancel-test"}}},
                {"agent": "after"}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &running).await.0, 202);
    common::wait_for_call(&s, &format!("{running}:step_1:1")).await;
    assert_eq!(found(&s, &t, &pending).await["status"], "pending");
    assert_eq!(found(&s, &t, &running).await["status"], "running");

    let mut projector = s.helpers.remove(0);
    projector.kill().unwrap();
    projector.wait().unwrap();
    for id in [&pending, &running] {
        let (status, retry, body) =
            answer(&s, &t, "POST", &format!("/workflows/{id}/cancel")).await;
        assert_eq!(status, 503, "cancel {id}: {body}");
        assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
        assert!(retry, "no Retry-After: {body}");
    }

    s.spawn_helper(&["serve", "--no-api", "--no-engine"]);
    let mut outcomes = vec![];
    for id in [&pending, &running] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (st, body) = s
                .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
                .await;
            if st == 202 {
                outcomes.push(body["status"].as_str().unwrap().to_owned());
                break;
            }
            assert_eq!(st, 503, "cancel {id} again: {body}");
            assert!(Instant::now() < deadline, "cancel {id} never answered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(outcomes[0], "cancelled");
    assert!(
        matches!(outcomes[1].as_str(), "cancelling" | "cancelled"),
        "{outcomes:?}"
    );
    s.agent.gates.release("cancel-test");
    for id in [&pending, &running] {
        let w = s.wait_done(&t, id, Duration::from_secs(30)).await;
        assert_eq!(w["status"], "cancelled", "{w}");
    }
}

/// 11.1: what an agent answers is the agent's. An output holding U+0000
/// (and the next step's input made from it) goes through the log and the
/// projection, and GET returns it unchanged.
#[tokio::test]
async fn an_agent_output_with_nul_comes_back_unchanged() {
    // An agent that answers every call with U+0000 in its JSON.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Requests are small: one read holds the whole of one.
                let mut buf = vec![0u8; 65536];
                let _ = conn.read(&mut buf).await;
                let body = r#"{"text":"a\u0000b","k\u0000":["\u0000"]}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    let agents = format!("[agents.nul]\nurl = \"http://{addr}\"\n");
    let s = Stack::start_with(Duration::ZERO, &agents, &[]).await;
    let t = s.token(4);
    let id = s
        .create(
            &t,
            json!({"name": "nul", "tasks": [
                {"agent": "nul", "input": {}},
                {"agent": "nul", "input": {"previous": "{{previous_output}}"}}
            ]}),
        )
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    let want = json!({"text": "a\u{0}b", "k\u{0}": ["\u{0}"]});
    assert_eq!(w["results"][0]["output"], want, "{w}");
    assert_eq!(w["results"][1]["output"], want, "{w}");
    let o = run(&s, &["replay", "--verify"]);
    assert!(o.status.success(), "{}", stdout(&o));
}
