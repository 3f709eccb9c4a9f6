//! The template renderer. The input is two JSON documents separated by a NUL
//! byte: a step's `input` template and the previous step's output (an agent's
//! answer: any JSON). `validate` must never panic; for a template it accepts,
//! `render` must never panic, and a template that does not use
//! `{{previous_output}}` renders to itself.
#![no_main]

use agentflow_core::template::{render, validate};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (input, previous) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"null"[..]),
    };
    let Ok(input) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let previous = serde_json::from_slice::<Value>(previous).unwrap_or(Value::Null);
    let Ok(uses_previous) = validate(&input) else {
        return;
    };
    let out = render(&input, &previous);
    if !uses_previous {
        assert_eq!(
            out, input,
            "a template without placeholders renders to itself"
        );
    }
    // Rendering is a function of its inputs.
    assert_eq!(render(&input, &previous), out);
});
