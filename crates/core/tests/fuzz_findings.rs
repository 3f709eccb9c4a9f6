//! Regression tests for what fuzzing at the edges found (scripts/fuzz.sh:
//! the cargo-fuzz targets in fuzz/ and schemathesis against the API).

use agentflow_core::*;
use chrono::{TimeZone, Utc};
use serde_json::json;

/// cargo-fuzz, `definition` target: a number in a step's input came back
/// from the log one ULP off (`1.844674407370496e20` read back as
/// `1.8446744073704958e20`), so the agent got another value than the user
/// sent. serde_json's `float_roundtrip` makes reading exact.
#[test]
fn numbers_in_a_definition_read_back_from_the_log_unchanged() {
    let def = WorkflowDefinition::parse(&json!({
        "name": "t",
        "tasks": [
            {"agent": "a"},
            {"agent": "b", "input": [1.844674407370496e20, 0.1, 1e-300, 2.2250738585072014e-308]}
        ]
    }))
    .unwrap();
    let record = Record::new(
        WorkflowId::new(),
        UserId(1),
        1,
        Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        Event::Created {
            name: def.name.clone(),
            steps: def.steps.clone(),
            input: def.input.clone(),
            timeout_ms: def.timeout_ms,
            max_concurrency: def.max_concurrency,
        },
    );
    assert_eq!(Record::from_bytes(&record.to_bytes()).unwrap(), record);

    // The same holds for the numbers a graph keeps elsewhere: the
    // workflow's input and a wait's timeout_output.
    let numbers = json!([1.844674407370496e20, 0.1, 1e-300, 2.2250738585072014e-308]);
    let def = WorkflowDefinition::parse(&json!({
        "name": "g",
        "input": {"n": numbers},
        "steps": [
            {"id": "a", "agent": "a", "input": {"n": numbers}},
            {"id": "w", "after": ["a"],
             "wait": {"signal": "ok", "timeout_ms": 1000, "timeout_output": numbers}}
        ]
    }))
    .unwrap();
    let record = Record::new(
        WorkflowId::new(),
        UserId(1),
        1,
        Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        Event::Created {
            name: def.name.clone(),
            steps: def.steps.clone(),
            input: def.input.clone(),
            timeout_ms: def.timeout_ms,
            max_concurrency: def.max_concurrency,
        },
    );
    assert_eq!(Record::from_bytes(&record.to_bytes()).unwrap(), record);
}

/// schemathesis, positive data: `55260.0` is an integer to JSON Schema (and
/// so to the OpenAPI document), but was rejected as a timeout.
#[test]
fn a_timeout_written_as_an_integral_float_is_that_integer() {
    let def = WorkflowDefinition::parse(&json!({
        "name": "x",
        "tasks": [{"agent": "a", "timeout_ms": 55260.0}],
        "timeout_ms": 86_400_000.0
    }))
    .unwrap();
    assert_eq!(def.timeout_ms, Some(86_400_000));
    assert_eq!(def.steps[0].timeout_ms, Some(55_260));
    for bad in [
        json!(-1.0),
        json!(0.0),
        json!(0.5),
        json!(86_400_001.0),
        json!(1e300),
        json!(-0.0),
    ] {
        assert_eq!(
            WorkflowDefinition::parse(
                &json!({"name": "x", "tasks": [{"agent": "a"}], "timeout_ms": bad})
            ),
            Err(DefinitionError::BadTimeout("timeout_ms".into())),
            "{bad}"
        );
    }
}
