//! The bytes of the log are forever: a record written today is byte for byte
//! the record written before any refactoring of `record.rs`. The fixture
//! `wire/records.jsonl` was written by the code as it was before the record
//! type was derived (one line per event type and per optional field present
//! or absent, and the `*_ref` forms of offloaded values); it is never
//! regenerated to make this test pass. Only a deliberate change of the wire
//! format (a new `RECORD_VERSION`) may add lines:
//! `UPDATE_WIRE_FIXTURE=1 cargo nextest run -p agentflow-core --test wire`.

use agentflow_core::*;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wire/records.jsonl");

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// Every record shape, with fixed ids and times, and how it is written:
/// whole, or with its offloaded value replaced by a reference.
fn records() -> Vec<(Record, Option<OutputRef>)> {
    let id = WorkflowId::from(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
    let a = AgentName::parse("marketing_content_agent_1_101").unwrap();
    let step = |s: &str| StepId::parse(s).unwrap();
    let err = StepError {
        kind: StepErrorKind::Timeout,
        message: "timed out after 30s".into(),
        http_status: None,
    };
    let err_http = StepError {
        kind: StepErrorKind::ServerError,
        message: "agent answered 503 \"busy\" — ünïcode".into(),
        http_status: Some(503),
    };
    let chain = WorkflowDefinition::parse(&json!({
        "name": "x",
        "tasks": [
            {"agent": a.as_str(), "input": {"topic": "AI", "n": 1.5e-7}, "timeout_ms": 2500},
            {"agent": "b", "input": "{{previous_output}}"}
        ]
    }))
    .unwrap();
    let graph = WorkflowDefinition::parse(&json!({
        "name": "Lead pipeline",
        "input": {"lead": "acme", "z": [1, 2], "a": null},
        "timeout_ms": 60_000,
        "max_concurrency": 4,
        "steps": [
            {"id": "score", "agent": "scorer", "input": {"lead": "{{input.lead}}"}, "timeout_ms": 2500},
            {"id": "crm", "agent": "crm", "after": ["score"], "when": "steps.score.output.score >= 70"},
            {"id": "nurture", "agent": "mail", "after": ["score"], "when": "steps.score.output.score < 70"},
            {"id": "approval", "after": ["crm"],
             "wait": {"signal": "approved", "timeout_ms": 60000, "timeout_output": {"approved": false}}},
            {"id": "ping", "after": ["crm"], "wait": {"signal": "ping.v1"}},
            {"id": "follow_up", "after": ["nurture"], "sleep_ms": 1000},
            {"id": "proposal", "agent": "writer", "after": ["approval", "ping", "follow_up"],
             "input": {"score": "{{steps.score.output.score}}", "try": "{{iteration}}"},
             "repeat": {"until": "output.quality >= 8", "max_iterations": 5, "on_exhausted": "continue"}},
            {"id": "publish", "agent": "publisher", "after": ["proposal"], "input": "{{previous_output}}",
             "repeat": {"until": "output.ok", "max_iterations": 2}}
        ]
    }))
    .unwrap();
    let created = |def: &WorkflowDefinition| Event::Created {
        name: def.name.clone(),
        steps: def.steps.clone(),
        input: def.input.clone(),
        timeout_ms: def.timeout_ms,
        max_concurrency: def.max_concurrency,
    };
    let r = OutputRef {
        sha256: "ab".repeat(32),
        bytes: 3_000_000,
        chunks: 3,
        partition: 2,
        offset: 17,
    };
    let executed = Event::AgentExecuted {
        step: step("proposal"),
        iteration: 3,
        agent: a.clone(),
        output: json!({"quality": 9, "text": "<b>\u{1F600}</b>\n", "list": [1, {"y": 2, "x": 1}]}),
        attempts: 2,
        duration_ms: 1234,
    };
    let wait_done = Event::WaitCompleted {
        step: step("approval"),
        reason: WaitEnd::Signal,
        output: json!({"approved": true}),
    };
    let signal = Event::SignalReceived {
        signal: "approved".into(),
        payload: json!({"by": "ana"}),
        key: Some("req-1".into()),
    };
    let whole = |e: Event| (e, None);
    let events: Vec<(Event, Option<OutputRef>)> = vec![
        whole(created(&chain)),
        whole(created(&graph)),
        whole(Event::Created {
            name: "bare".into(),
            steps: chain.steps.clone(),
            input: json!({}),
            timeout_ms: None,
            max_concurrency: None,
        }),
        whole(Event::Started),
        whole(executed.clone()),
        (executed, Some(r.clone())),
        whole(Event::AgentExecuted {
            step: StepId::of_task(1),
            iteration: 1,
            agent: a.clone(),
            output: Value::Null,
            attempts: 1,
            duration_ms: 0,
        }),
        whole(Event::StepFailed {
            step: StepId::of_task(1),
            iteration: 1,
            agent: Some(a.clone()),
            error: err_http.clone(),
            attempts: 3,
            duration_ms: 9000,
        }),
        whole(Event::StepFailed {
            step: step("approval"),
            iteration: 2,
            agent: None,
            error: err.clone(),
            attempts: 0,
            duration_ms: 60_000,
        }),
        whole(Event::ConditionEvaluated {
            step: step("crm"),
            condition: ConditionKind::When,
            iteration: 0,
            expression: "steps.score.output.score >= 70".into(),
            result: true,
            error: None,
        }),
        whole(Event::ConditionEvaluated {
            step: step("proposal"),
            condition: ConditionKind::Until,
            iteration: 2,
            expression: "output.quality >= 8".into(),
            result: false,
            error: Some("No such key: quality".into()),
        }),
        whole(Event::StepWaiting {
            step: step("approval"),
            signal: Some("approved".into()),
            until: Some(at("2026-01-02T03:04:05.123456Z")),
        }),
        whole(Event::StepWaiting {
            step: step("ping"),
            signal: Some("ping.v1".into()),
            until: None,
        }),
        whole(Event::StepWaiting {
            step: step("follow_up"),
            signal: None,
            until: Some(at("2026-01-02T03:04:05Z")),
        }),
        whole(wait_done.clone()),
        (wait_done, Some(r.clone())),
        whole(Event::WaitCompleted {
            step: step("approval"),
            reason: WaitEnd::Timeout,
            output: json!({"approved": false}),
        }),
        whole(Event::WaitCompleted {
            step: step("follow_up"),
            reason: WaitEnd::Timer,
            output: Value::Null,
        }),
        whole(Event::Completed),
        whole(Event::Failed {
            step: StepId::of_task(1),
            agent: Some(a.clone()),
            error: err_http,
        }),
        whole(Event::Failed {
            step: step("approval"),
            agent: None,
            error: err,
        }),
        whole(Event::CancelRequested),
        whole(Event::Cancelled),
        whole(Event::Paused),
        whole(Event::Resumed),
        whole(signal.clone()),
        (signal, Some(r)),
        whole(Event::SignalReceived {
            signal: "ping.v1".into(),
            payload: Value::Null,
            key: None,
        }),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (e, r))| {
            let n = i as u128 + 1;
            let seq = if matches!(e, Event::Created { .. }) {
                1
            } else {
                n as u64
            };
            let mut rec = Record::new(id, UserId(42), seq, at("2026-01-02T03:04:05.678901Z"), e);
            rec.event_id = Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 + n);
            if seq > 1 {
                rec = rec.after(Uuid::from_u128(
                    0x0190_0000_0000_7000_a000_0000_0000_0000 + n,
                ));
            }
            if i % 2 == 0 {
                rec = rec.with_metadata("node_id", "n1").with_metadata("by", 7);
            }
            if matches!(rec.event, Event::Completed) {
                rec = rec
                    .with_metadata("task_count", 2)
                    .with_metadata("duration_seconds", 0.25)
                    .with_metadata("agents_used", json!(["a", "b"]));
            }
            (rec, r)
        })
        .collect()
}

fn bytes(rec: &Record, r: &Option<OutputRef>) -> Vec<u8> {
    match r {
        None => rec.to_bytes(),
        Some(r) => rec.to_bytes_with_ref(r),
    }
}

#[test]
fn records_are_written_byte_for_byte_as_before() {
    let recs = records();
    let mut written = Vec::new();
    for (rec, r) in &recs {
        let b = bytes(rec, r);
        if r.is_none() {
            assert_eq!(rec.to_json_string().as_bytes(), b);
            assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), rec.to_json());
        }
        written.extend_from_slice(&b);
        written.push(b'\n');
    }
    if std::env::var_os("UPDATE_WIRE_FIXTURE").is_some() {
        std::fs::write(FIXTURE, &written).unwrap();
    }
    let pinned = std::fs::read(FIXTURE).expect("the fixture is committed");
    let (pinned, written) = (
        String::from_utf8(pinned).unwrap(),
        String::from_utf8(written).unwrap(),
    );
    assert_eq!(pinned.lines().count(), recs.len());
    for (i, (want, got)) in pinned.lines().zip(written.lines()).enumerate() {
        assert_eq!(got, want, "line {} ({})", i + 1, recs[i].0.event_type());
    }
}

#[test]
fn every_pinned_line_reads_back_as_its_record() {
    let recs = records();
    let pinned = std::fs::read_to_string(FIXTURE).unwrap();
    let mut types: Vec<&str> = vec![];
    for ((rec, r), line) in recs.iter().zip(pinned.lines()) {
        let back = Record::from_bytes_with(line.as_bytes(), &mut |got| {
            assert_eq!(Some(got), r.as_ref());
            Ok(rec.output().unwrap().clone())
        })
        .unwrap();
        assert_eq!(&back, rec, "{line}");
        if r.is_some() {
            assert!(Record::from_bytes(line.as_bytes()).is_err(), "{line}");
        }
        types.push(rec.event_type());
    }
    types.sort();
    types.dedup();
    let mut all = Event::TYPES.to_vec();
    all.sort();
    assert_eq!(types, all, "a line for every event type");
}

/// What was readable stays readable, what was refused stays refused.
#[test]
fn the_edges_of_the_envelope_read_as_before() {
    let line = |t: &str, data: Option<Value>| {
        let mut j = json!({
            "event_id": "01900000-0000-7000-9000-000000000001",
            "event_type": t,
            "workflow_id": "01900000-0000-7000-8000-000000000001",
            "user_id": 42,
            "seq": 2,
            "prev_event_id": "01900000-0000-7000-a000-000000000001",
            "timestamp": "2026-01-02T03:04:05.678901Z",
            "version": 2,
            "metadata": {}
        });
        if let Some(d) = data {
            j["data"] = d;
        }
        Record::from_bytes(j.to_string().as_bytes())
    };
    for t in [
        "workflow.started",
        "workflow.completed",
        "workflow.cancel_requested",
        "workflow.cancelled",
        "workflow.paused",
        "workflow.resumed",
    ] {
        // A unit event's data: `{}`, null or absent.
        for d in [Some(json!({})), Some(Value::Null), None] {
            let r = line(t, d.clone()).unwrap_or_else(|e| panic!("{t} {d:?}: {e}"));
            assert_eq!(r.event_type(), t);
        }
        assert!(line(t, Some(json!({"x": 1}))).is_err(), "{t}");
        // (An empty array reads as an empty struct: serde's way, kept.)
        assert!(line(t, Some(json!([]))).is_ok(), "{t}");
    }
    // Optional fields: absent or null read as none.
    let r = line(
        "workflow.failed",
        Some(json!({"step": "a", "agent": null, "error": {"kind": "timeout", "message": "m"}})),
    )
    .unwrap();
    assert!(matches!(r.event, Event::Failed { agent: None, .. }));
    let r = line("step.waiting", Some(json!({"step": "a"}))).unwrap();
    assert!(matches!(
        r.event,
        Event::StepWaiting {
            signal: None,
            until: None,
            ..
        }
    ));
    // Created without input reads with `{}`.
    let r = line(
        "workflow.created",
        Some(json!({"name": "n", "steps": [{"id": "a", "agent": "a"}]})),
    )
    .unwrap();
    assert!(matches!(&r.event, Event::Created { input, .. } if *input == json!({})));
    // Unknown fields, unknown types, a missing required field: refused.
    assert!(
        line(
            "workflow.failed",
            Some(json!({"step": "a", "error": {"kind": "timeout", "message": "m"}, "x": 1}))
        )
        .is_err()
    );
    assert!(matches!(
        line("workflow.exploded", Some(json!({}))),
        Err(RecordError::UnknownType(t)) if t == "workflow.exploded"
    ));
    assert!(line("agent.executed", Some(json!({"step": "a"}))).is_err());
    assert!(line("agent.executed", None).is_err());
    // An `output_ref` where no value is offloaded is refused.
    assert!(
        line(
            "workflow.failed",
            Some(json!({"step": "a", "error": {"kind": "timeout", "message": "m"},
                        "output_ref": {"sha256": "ab", "bytes": 1, "chunks": 1, "partition": 0, "offset": 0}}))
        )
        .is_err()
    );
    // A signal's value is `payload_ref`, never `output_ref`.
    assert!(
        line(
            "signal.received",
            Some(json!({"signal": "s",
                        "output_ref": {"sha256": "ab", "bytes": 1, "chunks": 1, "partition": 0, "offset": 0}}))
        )
        .is_err()
    );
}
