//! The template renderer. The input is two JSON documents separated by a NUL
//! byte: a step's `input` template and a value every placeholder reads (an
//! agent's answer, or the workflow's input: any JSON). `validate` must never
//! panic; for a template it accepts, `render` must never panic, and a
//! template without placeholders renders to itself.
#![no_main]

use agentflow_core::template::{Ref, lookup, render, validate};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (input, value) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"null"[..]),
    };
    let Ok(input) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let value = serde_json::from_slice::<Value>(value).unwrap_or(Value::Null);
    let Ok(refs) = validate(&input) else {
        return;
    };
    let resolve = |r: &Ref<'_>| match r {
        Ref::PreviousOutput => value.clone(),
        Ref::Step(_, path) | Ref::Input(path) => lookup(&value, path),
        Ref::Iteration => Value::from(1),
    };
    let out = render(&input, &resolve);
    if refs.is_empty() {
        assert_eq!(
            out, input,
            "a template without placeholders renders to itself"
        );
    }
    // Rendering is a function of its inputs.
    assert_eq!(render(&input, &resolve), out);
});
