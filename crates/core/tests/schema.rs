//! Every record type the code can emit validates against `schemas/`, and
//! the committed schema is the one generated from the record types.

use agentflow_core::record;
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

#[test]
fn the_committed_schema_is_the_one_generated_from_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/record.schema.json"
    );
    let generated =
        serde_json::to_string_pretty(&agentflow_core::schema::record_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == generated,
        "schemas/record.schema.json is not the schema generated from the record types; \
         write it again with `UPDATE_SCHEMAS=1 cargo nextest run -p agentflow-core --test schema` \
         and commit it"
    );
}

fn samples() -> Vec<Record> {
    let id = WorkflowId::new();
    let a = AgentName::parse("marketing_content_agent_1_101").unwrap();
    let err = StepError {
        kind: StepErrorKind::Timeout,
        message: "timed out after 30s".into(),
        http_status: None,
    };
    let chain = WorkflowDefinition::parse(&json!({
        "name": "x",
        "tasks": [{"agent": a.as_str(), "input": {"topic": "AI"}, "timeout_ms": 2500}]
    }))
    .unwrap();
    // A graph with every kind of step and every option.
    let graph = WorkflowDefinition::parse(&json!({
        "name": "Lead pipeline",
        "input": {"lead": "acme"},
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
             "input": {"score": "{{steps.score.output.score}}", "draft": "{{steps.proposal.output}}", "try": "{{iteration}}"},
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
    let step = |s: &str| StepId::parse(s).unwrap();
    let completed = {
        let mut st = None;
        let created = Record::new(id, UserId(42), 1, Utc::now(), created(&chain));
        let started =
            Record::new(id, UserId(42), 2, Utc::now(), Event::Started).after(created.event_id);
        let done = Record::new(
            id,
            UserId(42),
            3,
            Utc::now(),
            Event::AgentExecuted {
                step: StepId::of_task(1),
                iteration: 1,
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
        let [Action::Append { event, metadata }] = &decide(st.as_ref().unwrap(), Utc::now())[..]
        else {
            panic!()
        };
        let mut r = Record::new(id, UserId(42), 4, Utc::now(), event.clone()).after(done.event_id);
        r.metadata = metadata.clone();
        r
    };
    let events = [
        created(&chain),
        created(&graph),
        Event::Created {
            name: "bare".into(),
            steps: chain.steps.clone(),
            input: json!({}),
            timeout_ms: None,
            max_concurrency: None,
        },
        Event::Started,
        Event::AgentExecuted {
            step: StepId::of_task(1),
            iteration: 1,
            agent: a.clone(),
            output: json!("text"),
            attempts: 2,
            duration_ms: 120,
        },
        Event::AgentExecuted {
            step: step("proposal"),
            iteration: 3,
            agent: a.clone(),
            output: json!({"quality": 9}),
            attempts: 1,
            duration_ms: 12,
        },
        Event::StepFailed {
            step: StepId::of_task(1),
            iteration: 1,
            agent: Some(a.clone()),
            error: err.clone(),
            attempts: 3,
            duration_ms: 9000,
        },
        Event::StepFailed {
            step: StepId::of_task(1),
            iteration: 1,
            agent: Some(a.clone()),
            error: StepError {
                kind: StepErrorKind::WorkflowTimeout,
                message: "the workflow's timeout passed".into(),
                http_status: None,
            },
            attempts: 0,
            duration_ms: 0,
        },
        Event::StepFailed {
            step: step("approval"),
            iteration: 1,
            agent: None,
            error: StepError {
                kind: StepErrorKind::WaitTimeout,
                message: "no `approved` signal within 60000 ms".into(),
                http_status: None,
            },
            attempts: 0,
            duration_ms: 60_000,
        },
        Event::ConditionEvaluated {
            step: step("crm"),
            condition: ConditionKind::When,
            iteration: 0,
            expression: "steps.score.output.score >= 70".into(),
            result: true,
            error: None,
        },
        Event::ConditionEvaluated {
            step: step("proposal"),
            condition: ConditionKind::Until,
            iteration: 2,
            expression: "output.quality >= 8".into(),
            result: false,
            error: Some("No such key: quality".into()),
        },
        Event::StepWaiting {
            step: step("approval"),
            signal: Some("approved".into()),
            until: Some(Utc::now()),
        },
        Event::StepWaiting {
            step: step("ping"),
            signal: Some("ping.v1".into()),
            until: None,
        },
        Event::StepWaiting {
            step: step("follow_up"),
            signal: None,
            until: Some(Utc::now()),
        },
        Event::WaitCompleted {
            step: step("approval"),
            reason: WaitEnd::Signal,
            output: json!({"approved": true}),
        },
        Event::WaitCompleted {
            step: step("approval"),
            reason: WaitEnd::Timeout,
            output: json!({"approved": false}),
        },
        Event::WaitCompleted {
            step: step("follow_up"),
            reason: WaitEnd::Timer,
            output: Value::Null,
        },
        Event::Failed {
            step: StepId::of_task(1),
            agent: Some(a.clone()),
            error: err.clone(),
        },
        Event::Failed {
            step: step("approval"),
            agent: None,
            error: StepError {
                kind: StepErrorKind::MaxIterations,
                message: "`output.ok` did not hold after 2 iterations".into(),
                http_status: None,
            },
        },
        Event::CancelRequested,
        Event::Cancelled,
        Event::Paused,
        Event::Resumed,
        Event::SignalReceived {
            signal: "approved".into(),
            payload: json!({"by": "ana"}),
            key: Some("req-1".into()),
        },
        Event::SignalReceived {
            signal: "ping.v1".into(),
            payload: Value::Null,
            key: None,
        },
    ];
    let mut out: Vec<Record> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let seq = if matches!(e, Event::Created { .. }) {
                1
            } else {
                i as u64 + 1
            };
            Record::new(id, UserId(42), seq, Utc::now(), e)
                .with_metadata("node_id", "n1")
                .after(uuid::Uuid::new_v4())
        })
        .collect();
    out.push(completed);
    out
}

fn schema_errors(v: &jsonschema::Validator, j: &Value) -> Vec<String> {
    v.iter_errors(j).map(|e| e.to_string()).collect()
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
        assert_eq!(j["version"], json!(record::RECORD_VERSION));
        let errors = schema_errors(&v, &j);
        assert!(errors.is_empty(), "{}: {errors:?}\n{j:#}", r.event_type());
        // And it reads back as written.
        assert_eq!(&Record::from_bytes(&r.to_bytes()).unwrap(), r);
    }
}

#[test]
fn every_version_1_record_of_the_golden_log_validates_against_the_schema() {
    let v = validator();
    let mut types: Vec<String> = vec![];
    let mut n = 0;
    for line in include_str!("golden/v1.jsonl").lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let Some(r) = line.get("record") else {
            continue;
        };
        assert_eq!(r["version"], 1);
        if r["event_type"] == "workflow.completed" && r["metadata"] == json!({}) {
            // The generator that wrote the golden log dropped the metadata
            // `decide` gives `workflow.completed` (the guide's task_count,
            // duration_seconds and agents_used, which the engine writes):
            // that is all the schema may miss in it.
            let paths: Vec<String> = v
                .iter_errors(r)
                .map(|e| e.instance_path.to_string())
                .collect();
            assert_eq!(paths, ["/metadata"; 3], "{r:#}");
            let mut whole = r.clone();
            whole["metadata"] =
                json!({"task_count": 1, "duration_seconds": 0.5, "agents_used": ["a"]});
            let errors = schema_errors(&v, &whole);
            assert!(errors.is_empty(), "{errors:?}\n{whole:#}");
        } else {
            let errors = schema_errors(&v, r);
            assert!(errors.is_empty(), "{errors:?}\n{r:#}");
        }
        // Read as version 2, and written again, it validates too.
        let rec = Record::from_bytes(r.to_string().as_bytes()).unwrap();
        let mut again = rec.to_json();
        if again["event_type"] == "workflow.completed" {
            again["metadata"] =
                json!({"task_count": 1, "duration_seconds": 0.5, "agents_used": ["a"]});
        }
        let errors = schema_errors(&v, &again);
        assert!(errors.is_empty(), "{errors:?}\n{again:#}");
        types.push(r["event_type"].as_str().unwrap().to_owned());
        n += 1;
    }
    types.sort();
    types.dedup();
    assert_eq!(n, 1188);
    // Every type version 1 had.
    assert_eq!(
        types,
        [
            "agent.executed",
            "step.failed",
            "workflow.cancel_requested",
            "workflow.cancelled",
            "workflow.completed",
            "workflow.created",
            "workflow.failed",
            "workflow.started"
        ]
    );
}

#[test]
fn the_schema_rejects_what_the_code_rejects() {
    let v = validator();
    let sample = |t: &str| {
        samples()
            .into_iter()
            .find(|r| r.event_type() == t)
            .unwrap()
            .to_json()
    };
    let rejects = |j: Value, why: &str| {
        assert!(!v.is_valid(&j), "{why}: {j:#}");
        assert!(
            Record::from_bytes(j.to_string().as_bytes()).is_err(),
            "the code takes what the schema refuses ({why}): {j:#}"
        );
    };
    let mut j = sample("agent.executed");
    j["data"]["agent"] = json!("no/slashes");
    rejects(j, "an agent name with a slash");
    let mut j = sample("agent.executed");
    j["data"]["step"] = json!(1);
    rejects(j, "a version-1 step number in a version-2 record");
    let mut j = sample("agent.executed");
    j["data"]["iteration"] = json!(0);
    assert!(!v.is_valid(&j), "iteration 0");
    let mut j = sample("agent.executed");
    j["data"]
        .as_object_mut()
        .unwrap()
        .remove("iteration")
        .unwrap();
    rejects(j, "no iteration");
    let mut j = sample("workflow.started");
    j["data"] = json!({"from_step": 1});
    rejects(j, "a version-1 start in a version-2 record");
    let mut j = sample("workflow.created");
    j["seq"] = json!(2);
    assert!(!v.is_valid(&j), "created must be seq 1");
    let mut j = sample("workflow.created");
    j["data"]["steps"][0]["sleep_ms"] = json!(5);
    assert!(!v.is_valid(&j), "a step of two kinds");
    let mut j = sample("workflow.created");
    j["data"]["steps"][0]["id"] = json!("Step-1");
    rejects(j, "a step id with capitals");
    let mut j = sample("condition.evaluated");
    j["data"]["condition"] = json!("unless");
    rejects(j, "an unknown condition");
    let mut j = sample("wait.completed");
    j["data"]["reason"] = json!("boredom");
    rejects(j, "an unknown reason");
    let mut j = sample("signal.received");
    j["data"]
        .as_object_mut()
        .unwrap()
        .remove("payload")
        .unwrap();
    rejects(j, "a signal without its payload");
    let mut j = sample("workflow.paused");
    j["data"] = json!({"by": "me"});
    rejects(j, "data on a pause");
    let mut j = sample("workflow.started");
    j["surprise"] = json!(1);
    rejects(j, "an unknown envelope field");
    let mut j = sample("workflow.started");
    j["version"] = json!(3);
    rejects(j, "an unknown version");
    // Version 1 has no graph records, and its steps are numbers.
    let mut j = sample("workflow.paused");
    j["version"] = json!(1);
    rejects(j, "a pause in version 1");
    let mut j = sample("agent.executed");
    j["version"] = json!(1);
    rejects(j, "a step id in version 1");
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
