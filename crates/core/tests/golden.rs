//! The log is forever: a log written by the version-1 code (before graphs)
//! folds to the same states with this code. `golden/v1.jsonl` holds 150
//! generated histories (stale writers, redeliveries, cancels, deadlines,
//! resumes) as written to Kafka by commit 392e67d, each followed by the
//! state that code folded them to; it was written by the test
//! `golden_v1_writer.rs` of commit bcd829a and must never be regenerated.

use agentflow_core::*;
use serde_json::{Value, json};

/// The version-1 state's fields, from a state of this version.
fn as_v1(st: &WorkflowState) -> Value {
    let tasks: Vec<Value> = st
        .definition
        .iter()
        .map(|d| {
            let mut t = json!({"agent": d.agent, "input": d.input});
            if let Some(ms) = d.timeout_ms {
                t["timeout_ms"] = ms.into();
            }
            t
        })
        .collect();
    let steps: Vec<Value> = st
        .steps
        .iter()
        .map(|s| {
            let mut v = json!({
                "agent": s.agent, "status": s.status.as_str(),
                "attempts": s.attempts, "duration_ms": s.duration_ms,
            });
            if let Some(o) = &s.output {
                v["output"] = o.clone();
            }
            if let Some(e) = &s.error {
                v["error"] = json!(e);
            }
            if let Some(t) = s.finished_at {
                v["finished_at"] = json!(t);
            }
            v
        })
        .collect();
    let mut v = json!({
        "workflow_id": st.workflow_id, "user_id": st.user_id, "name": st.name,
        "tasks": tasks, "steps": steps, "status": st.status.as_str(), "seq": st.seq,
        "last_event_id": st.last_event_id, "runs": st.runs,
        "cancel_requested": st.cancel_requested, "created_at": st.created_at,
    });
    for (k, x) in [
        ("timeout_ms", json!(st.timeout_ms)),
        ("started_at", json!(st.started_at)),
        ("finished_at", json!(st.finished_at)),
    ] {
        if !x.is_null() {
            v[k] = x;
        }
    }
    v
}

#[test]
fn the_version_1_golden_log_folds_to_the_same_states() {
    let text = include_str!("golden/v1.jsonl");
    let (mut workflows, mut records) = (0, 0);
    let mut st: Option<WorkflowState> = None;
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(r) = v.get("record") {
            assert_eq!(r["version"], 1);
            let rec = Record::from_bytes(r.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
            let _ = apply(&mut st, &rec);
            records += 1;
        } else {
            let want = &v["state"];
            let got = st.take().map(|s| as_v1(&s)).unwrap_or(Value::Null);
            assert_eq!(&got, want, "the workflow ending at line {}", n + 1);
            workflows += 1;
        }
    }
    assert_eq!((workflows, records), (150, 1188));
}

#[test]
fn version_1_records_read_as_their_version_2_meaning() {
    let text = include_str!("golden/v1.jsonl");
    let executed = text
        .lines()
        .find(|l| l.contains("\"agent.executed\""))
        .unwrap();
    let v: Value = serde_json::from_str(executed).unwrap();
    let rec = Record::from_bytes(v["record"].to_string().as_bytes()).unwrap();
    let Event::AgentExecuted {
        step, iteration, ..
    } = &rec.event
    else {
        panic!("{rec:?}")
    };
    assert!(step.as_str().starts_with("step_"));
    assert_eq!(*iteration, 1);
    // Written again, it is a version-2 record.
    assert_eq!(rec.to_json()["version"], 2);
    assert_eq!(rec.to_json()["data"]["iteration"], 1);
}
