//! Every record type the code can emit validates against `schemas/`.

use agentflow_core::*;
use chrono::Utc;
use serde_json::{Value, json};

fn validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/record.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn samples() -> Vec<Record> {
    let id = WorkflowId::new();
    let a = AgentName::parse("marketing_content_agent_1_101").unwrap();
    let err = StepError {
        kind: StepErrorKind::Timeout,
        message: "timed out after 30s".into(),
        http_status: None,
    };
    let tasks = vec![TaskDef {
        agent: a.clone(),
        input: json!({"topic": "AI"}),
        timeout_ms: Some(2500),
    }];
    let completed = {
        let mut st = None;
        let created = Record::new(
            id,
            UserId(42),
            1,
            Utc::now(),
            Event::Created {
                name: "x".into(),
                tasks: tasks.clone(),
                timeout_ms: None,
            },
        );
        let started = Record::new(
            id,
            UserId(42),
            2,
            Utc::now(),
            Event::Started { from_step: 1 },
        )
        .after(created.event_id);
        let done = Record::new(
            id,
            UserId(42),
            3,
            Utc::now(),
            Event::AgentExecuted {
                step: 1,
                agent: a.clone(),
                output: json!({"ok": true}),
                attempts: 1,
                duration_ms: 3,
            },
        )
        .after(started.event_id);
        for r in [&created, &started, &done] {
            apply(&mut st, r).unwrap();
        }
        let Some(Action::Append { event, metadata }) = decide(st.as_ref().unwrap(), Utc::now())
        else {
            panic!()
        };
        let mut r = Record::new(id, UserId(42), 4, Utc::now(), event).after(done.event_id);
        r.metadata = metadata;
        r
    };
    let events = [
        Event::Created {
            name: "Content Marketing Pipeline".into(),
            tasks,
            timeout_ms: Some(60_000),
        },
        Event::Started { from_step: 1 },
        Event::AgentExecuted {
            step: 1,
            agent: a.clone(),
            output: json!("text"),
            attempts: 2,
            duration_ms: 120,
        },
        Event::StepFailed {
            step: 1,
            agent: a.clone(),
            error: err.clone(),
            attempts: 3,
            duration_ms: 9000,
        },
        Event::StepFailed {
            step: 1,
            agent: a.clone(),
            error: StepError {
                kind: StepErrorKind::WorkflowTimeout,
                message: "the workflow's timeout passed".into(),
                http_status: None,
            },
            attempts: 0,
            duration_ms: 0,
        },
        Event::Failed {
            step: 1,
            agent: a,
            error: err,
        },
        Event::CancelRequested,
        Event::Cancelled,
    ];
    let mut out: Vec<Record> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            Record::new(id, UserId(42), i as u64 + 1, Utc::now(), e)
                .with_metadata("node_id", "n1")
                .after(uuid::Uuid::new_v4())
        })
        .collect();
    out.push(completed);
    out
}

#[test]
fn every_event_type_validates_against_the_schema() {
    let v = validator();
    let recs = samples();
    let mut seen: Vec<&str> = recs.iter().map(|r| r.event_type()).collect();
    seen.sort();
    seen.dedup();
    let mut all = Event::TYPES.to_vec();
    all.sort();
    assert_eq!(seen, all, "a sample for every event type");
    for r in &recs {
        let j = r.to_json();
        let errors: Vec<String> = v.iter_errors(&j).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}\n{j:#}", r.event_type());
    }
}

#[test]
fn the_schema_rejects_what_the_code_rejects() {
    let v = validator();
    let mut j = samples()[2].to_json();
    j["data"]["agent"] = json!("no/slashes");
    assert!(!v.is_valid(&j));
    let mut j = samples()[0].to_json();
    j["seq"] = json!(2);
    assert!(!v.is_valid(&j), "created must be seq 1");
    let mut j = samples()[1].to_json();
    j["surprise"] = json!(1);
    assert!(!v.is_valid(&j));
}

#[test]
fn a_record_whose_output_is_kept_out_validates_and_reads_back_whole() {
    let v = validator();
    let rec = samples()
        .into_iter()
        .find(|r| r.event_type() == "agent.executed")
        .unwrap();
    let text = rec.large_output(2).expect("longer than 2 bytes");
    assert_eq!(text, br#""text""#);
    assert!(rec.large_output(1 << 20).is_none());
    let output_ref = OutputRef {
        sha256: "ab".repeat(32),
        bytes: text.len() as u64,
        chunks: 1,
        partition: 3,
        offset: 17,
    };
    let bytes = rec.to_bytes_with_ref(&output_ref);
    let j: Value = serde_json::from_slice(&bytes).unwrap();
    let errors: Vec<String> = v.iter_errors(&j).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{j:#}");
    assert!(j["data"].get("output").is_none(), "{j}");

    // A reader that resolves references gets the record back whole...
    let back = Record::from_bytes_with(&bytes, &mut |r| {
        assert_eq!(r, &output_ref);
        Ok(json!("text"))
    })
    .unwrap();
    assert_eq!(back, rec);
    // ...one that cannot says so, naming the hash.
    let err = Record::from_bytes(&bytes).unwrap_err();
    assert!(matches!(err, RecordError::Payload(ref sha, _) if *sha == output_ref.sha256));

    // Both at once, or a reference of the wrong shape, is no record.
    let mut both = j.clone();
    both["data"]["output"] = json!(1);
    assert!(!v.is_valid(&both));
    assert!(Record::from_bytes_with(both.to_string().as_bytes(), &mut |_| Ok(json!(1))).is_err());
    let mut bad = j.clone();
    bad["data"]["output_ref"]["chunks"] = json!("many");
    assert!(!v.is_valid(&bad));
}

#[test]
fn an_output_that_looks_like_a_reference_is_only_an_output() {
    // An agent may answer anything, a `$ref` or an `output_ref` key
    // included: inline it is never taken for a reference.
    let mut rec = samples()
        .into_iter()
        .find(|r| r.event_type() == "agent.executed")
        .unwrap();
    let Event::AgentExecuted { output, .. } = &mut rec.event else {
        unreachable!()
    };
    *output = json!({"output_ref": {"sha256": "x"}, "$ref": "#/a"});
    let back = Record::from_bytes(&rec.to_bytes()).unwrap();
    assert_eq!(back, rec);
}
