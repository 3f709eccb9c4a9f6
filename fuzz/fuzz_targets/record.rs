//! The record decoder: the bytes of a Kafka message value, as the engine,
//! the projector and the tools read them from the log (which anyone with
//! write access to the topic can fill). It must never panic; a record it
//! accepts must encode back to one that decodes to the same record, and
//! folding it into a fresh state or after a created workflow must not panic.
#![no_main]

use agentflow_core::{Record, apply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = Record::from_bytes(data) else {
        return;
    };
    let bytes = record.to_bytes();
    let back = Record::from_bytes(&bytes).expect("an encoded record decodes");
    assert_eq!(back.to_bytes(), bytes, "encoding is stable");

    let mut state = None;
    let _ = apply(&mut state, &record);
    let _ = apply(&mut state, &record);
});
