//! The live streams (Server-Sent Events) on the real stack: a workflow's
//! records arrive as they are projected, in order, and the stream ends when
//! the workflow does; `Last-Event-ID` resumes without loss or duplicates;
//! the list's stream carries status changes of the caller's workflows only;
//! both answer like the rest of the API to strangers and bad tokens.

mod common;

use std::time::Duration;

use common::Stack;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: Value,
}

/// Reads Server-Sent Events off a response, chunk by chunk.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(s: &Stack, path: &str, token: &str, last_event_id: Option<&str>) -> Self {
        let mut r = s.http.get(format!("{}{path}", s.base)).bearer_auth(token);
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        assert_eq!(resp.headers()["cache-control"], "no-store");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped); `None` when the stream ended.
    /// Panics if none comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && id.is_none() {
                    continue; // a keep-alive comment
                }
                return Some(SseEvent {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("no event in time")
                .expect("stream failed");
            match chunk {
                Some(c) => self.buf.push_str(std::str::from_utf8(&c).unwrap()),
                None => return None,
            }
        }
    }

    /// Events until one of type `event` (which is included).
    async fn until(&mut self, event: &str) -> Vec<SseEvent> {
        let mut got = vec![];
        loop {
            let e = self
                .next(Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("stream ended before {event}: {got:#?}"));
            let last = e.event == event;
            got.push(e);
            if last {
                return got;
            }
        }
    }
}

fn records(events: &[SseEvent]) -> Vec<&SseEvent> {
    events.iter().filter(|e| e.id.is_some()).collect()
}

/// A fan-out whose first step is held until the test releases `gate`.
fn held_graph(gate: &str) -> Value {
    json!({"name": "streamed", "steps": [
        {"id": "a", "agent": "a", "input": {"_mock": {"hold": gate}}},
        {"id": "b", "agent": "b", "after": ["a"]},
        {"id": "c", "agent": "c", "after": ["a"]},
        {"id": "d", "agent": "d", "after": ["b", "c"]}
    ]})
}

#[tokio::test]
async fn records_arrive_live_in_order_and_the_stream_ends_with_the_workflow() {
    let s = Stack::start().await;
    let t = s.token(1);
    let id = s.create(&t, held_graph("live")).await;
    let mut sse = SseReader::open(&s, &format!("/workflows/{id}/stream"), &t, None).await;
    // What exists now, then the state to draw.
    let first = sse.until("state").await;
    assert_eq!(records(&first)[0].event, "workflow.created");
    assert_eq!(first.last().unwrap().data["status"], "pending");

    let (st, _) = s.execute(&t, &id).await;
    assert_eq!(st, 202);
    let started = sse.until("state").await;
    assert_eq!(records(&started)[0].event, "workflow.started");
    let running = &started.last().unwrap().data;
    assert_eq!(running["status"], "running");
    assert_eq!(running["tasks"][0]["status"], "running");
    // Nothing more while the step is held: the stream stays open.
    common::wait_for_call(&s, &format!("{id}:a:1")).await;
    let quiet = tokio::time::timeout(Duration::from_millis(700), sse.next(Duration::from_secs(5)));
    assert!(quiet.await.is_err(), "an event while nothing happened");

    s.agent.gates.release("live");
    let rest = sse.until("end").await;
    assert_eq!(rest.last().unwrap().data["status"], "completed");
    let last_state = rest.iter().rev().find(|e| e.event == "state").unwrap();
    assert_eq!(last_state.data["status"], "completed");
    assert!(
        last_state.data["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "completed")
    );
    assert!(
        sse.next(Duration::from_secs(5)).await.is_none(),
        "the stream ends after `end`"
    );

    // Every record of the audit trail, once, in its order, with its
    // applied flag; ids increase.
    let streamed: Vec<SseEvent> = [&first, &started, &rest]
        .iter()
        .flat_map(|b| records(b))
        .cloned()
        .collect();
    let (st, trail) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
        .await;
    assert_eq!(st, 200);
    let trail = trail["events"].as_array().unwrap();
    assert_eq!(streamed.len(), trail.len());
    for (e, a) in streamed.iter().zip(trail) {
        assert_eq!(e.event, a["event_type"].as_str().unwrap());
        assert_eq!(&e.data, a);
    }
    let ids: Vec<i64> = streamed
        .iter()
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let agents: Vec<&str> = streamed
        .iter()
        .filter(|e| e.event == "agent.executed")
        .map(|e| e.data["step"].as_str().unwrap())
        .collect();
    assert_eq!(agents.len(), 4);
    assert_eq!(agents[0], "a");
    assert_eq!(agents[3], "d");
}

#[tokio::test]
async fn last_event_id_resumes_without_loss_or_duplicates() {
    let s = Stack::start().await;
    let t = s.token(2);
    let id = s
        .create(&t, common::pipeline("resume", &["a", "b", "c"]))
        .await;
    s.execute(&t, &id).await;
    s.wait_done(&t, &id, Duration::from_secs(30)).await;
    let path = format!("/workflows/{id}/stream");

    let mut whole = SseReader::open(&s, &path, &t, None).await;
    let all = whole.until("end").await;
    let all: Vec<SseEvent> = records(&all).into_iter().cloned().collect();
    let types: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(types, common::THREE_STEP_EVENTS);

    // From each point: exactly the records after it.
    for cut in 0..all.len() {
        let last = all[cut].id.as_deref().unwrap();
        let mut again = SseReader::open(&s, &path, &t, Some(last)).await;
        let got = again.until("end").await;
        let got: Vec<Option<String>> = records(&got).iter().map(|e| e.id.clone()).collect();
        let want: Vec<Option<String>> = all[cut + 1..].iter().map(|e| e.id.clone()).collect();
        assert_eq!(got, want, "after {last}");
    }

    // A bad Last-Event-ID is a 400, not a stream.
    let resp = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(&t)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn a_stream_answers_strangers_and_bad_tokens_like_the_api() {
    let s = Stack::start().await;
    let owner = s.token(3);
    let id = s.create(&owner, common::pipeline("mine", &["a"])).await;
    let path = format!("/workflows/{id}/stream");
    let get = |token: Option<String>, path: String| {
        let mut r = s.http.get(format!("{}{path}", s.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let resp = r.send().await.unwrap();
            let st = resp.status().as_u16();
            let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
            (st, ct)
        }
    };
    for (token, want) in [
        (Some(s.token(4)), 404),
        (Some("not.a.token".to_owned()), 401),
        (None, 401),
        (
            Some(agentflow_api::Jwt::new(b"another secret").mint(
                3,
                false,
                Duration::from_secs(60),
            )),
            401,
        ),
    ] {
        let (st, ct) = get(token.clone(), path.clone()).await;
        assert_eq!(st, want, "{token:?}");
        assert_eq!(ct, "application/json", "errors are JSON");
    }
    let (st, _) = get(Some(s.token(4)), "/workflows/stream".into()).await;
    assert_eq!(st, 200);
    let (st, _) = get(None, "/workflows/stream".into()).await;
    assert_eq!(st, 401);
    // An admin sees it.
    let mut admin = SseReader::open(&s, &path, &s.admin_token(99), None).await;
    let first = admin.until("state").await;
    assert_eq!(first.last().unwrap().data["workflow_id"], id.as_str());
}

#[tokio::test]
async fn the_list_stream_carries_the_callers_changes_and_counts() {
    let s = Stack::start().await;
    let me = s.token(5);
    let other = s.token(6);
    let before = s.create(&me, common::pipeline("before", &["a"])).await;
    let mut sse = SseReader::open(&s, "/workflows/stream", &me, None).await;
    let counts = sse.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(counts.event, "counts");
    assert_eq!(counts.data["counts"]["pending"], 1);
    assert_eq!(counts.data["counts"]["completed"], 0);

    let theirs = s.create(&other, common::pipeline("theirs", &["a"])).await;
    s.execute(&other, &theirs).await;
    s.execute(&me, &before).await;
    s.wait_done(&me, &before, Duration::from_secs(30)).await;
    s.wait_done(&other, &theirs, Duration::from_secs(30)).await;

    // My workflow's changes arrive, ending completed, with counts to match;
    // never the other user's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen_completed = false;
    let mut counts_completed = false;
    while !(seen_completed && counts_completed) {
        assert!(tokio::time::Instant::now() < deadline, "no completion seen");
        let e = sse.next(Duration::from_secs(20)).await.unwrap();
        match e.event.as_str() {
            "workflow" => {
                assert_eq!(e.data["workflow_id"], before.as_str(), "{e:?}");
                assert_eq!(e.data["user_id"], 5);
                if e.data["status"] == "completed" {
                    seen_completed = true;
                }
            }
            "counts" => {
                let c = &e.data["counts"];
                counts_completed = c["completed"] == 1 && c["pending"] == 0;
            }
            other => panic!("unexpected {other}: {e:?}"),
        }
    }
}
