//! The definition parser, fed the raw bytes of a `POST /workflows/create`
//! body exactly as the API handles them: JSON first (serde_json, the API's
//! parser), then `WorkflowDefinition::parse`. It must never panic, and what
//! it accepts must keep its promises: the limits hold, the graph is well
//! formed (unique ids, known parents, one kind per step), and the
//! `workflow.created` record the API would append decodes back to the same
//! definition (what the engine and the projector will read).
#![no_main]

use agentflow_core::{Event, Record, StepKind, UserId, WorkflowDefinition, WorkflowId};
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
    assert!((1..=WorkflowDefinition::MAX_TASKS).contains(&def.steps.len()));
    assert!(def.input.is_object());
    let within = |ms: Option<u64>, max: u64| ms.is_none_or(|ms| (1..=max).contains(&ms));
    assert!(within(def.timeout_ms, WorkflowDefinition::MAX_TIMEOUT_MS));
    assert!(
        def.max_concurrency
            .is_none_or(|n| (1..=WorkflowDefinition::MAX_CONCURRENCY).contains(&n))
    );
    for (i, s) in def.steps.iter().enumerate() {
        assert!(!def.steps[..i].iter().any(|o| o.id == s.id), "duplicate id");
        for p in &s.after {
            assert!(
                p != &s.id && def.steps.iter().any(|o| &o.id == p),
                "bad parent"
            );
        }
        let kinds = [s.agent.is_some(), s.wait.is_some(), s.sleep_ms.is_some()];
        assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "one kind");
        assert!(within(s.timeout_ms, WorkflowDefinition::MAX_TIMEOUT_MS));
        match s.kind() {
            StepKind::Agent(a) => assert!(!a.as_str().is_empty() && a.as_str().len() <= 128),
            StepKind::Wait(w) => {
                assert!(within(w.timeout_ms, WorkflowDefinition::MAX_WAIT_MS));
                assert!(w.timeout_output.is_none() || w.timeout_ms.is_some());
            }
            StepKind::Sleep(ms) => assert!(within(Some(ms), WorkflowDefinition::MAX_WAIT_MS)),
        }
        if let Some(r) = &s.repeat {
            assert!((1..=WorkflowDefinition::MAX_ITERATIONS).contains(&r.max_iterations));
        }
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
            steps: def.steps.clone(),
            input: def.input.clone(),
            timeout_ms: def.timeout_ms,
            max_concurrency: def.max_concurrency,
        },
    );
    let back = Record::from_bytes(&record.to_bytes()).expect("a created record decodes");
    assert_eq!(back, record);
});
