//! The definition parser, fed the raw bytes of a `POST /workflows/create`
//! body exactly as the API handles them: JSON first (serde_json, the API's
//! parser), then `WorkflowDefinition::parse`. It must never panic, and what
//! it accepts must keep its promises: the limits hold, and the
//! `workflow.created` record the API would append decodes back to the same
//! definition (what the engine and the projector will read).
#![no_main]

use agentflow_core::{Event, Record, UserId, WorkflowDefinition, WorkflowId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(def) = WorkflowDefinition::parse(&body) else {
        return;
    };
    assert!(!def.name.is_empty());
    assert_eq!(def.name, def.name.trim());
    assert!(def.name.chars().count() <= WorkflowDefinition::MAX_NAME_CHARS);
    assert!((1..=WorkflowDefinition::MAX_TASKS).contains(&def.tasks.len()));
    let in_range = |ms: Option<u64>| {
        ms.is_none_or(|ms| (1..=WorkflowDefinition::MAX_TIMEOUT_MS).contains(&ms))
    };
    assert!(in_range(def.timeout_ms));
    for t in &def.tasks {
        assert!(in_range(t.timeout_ms));
        assert!(!t.agent.as_str().is_empty() && t.agent.as_str().len() <= 128);
    }
    // Parsing is a function of the value: the same body, the same answer.
    assert_eq!(WorkflowDefinition::parse(&body).as_ref(), Ok(&def));

    let record = Record::new(
        WorkflowId::new(),
        UserId(1),
        1,
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        Event::Created {
            name: def.name.clone(),
            tasks: def.tasks.clone(),
            timeout_ms: def.timeout_ms,
        },
    );
    let back = Record::from_bytes(&record.to_bytes()).expect("a created record decodes");
    assert_eq!(back, record);
});
