//! Writes `tests/golden/v1.jsonl`: a log written by the version-1 code
//! (records as they went to Kafka, including the ones the fold rejected),
//! followed by the state each workflow folded to. Run once, with the
//! version-1 code, by `AGENTFLOW_WRITE_GOLDEN=1 cargo test -p agentflow-core
//! --test golden_v1_writer`; the file is committed and `golden.rs` checks
//! that every later version folds it to the same states.

mod support;

use agentflow_core::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use support::histories::{arb_script, run};

#[test]
fn write_the_golden_v1_log() {
    if std::env::var_os("AGENTFLOW_WRITE_GOLDEN").is_none() {
        return;
    }
    let mut runner = TestRunner::deterministic();
    let strategy = arb_script();
    let mut out = String::new();
    for _ in 0..150 {
        let script = strategy.new_tree(&mut runner).unwrap().current();
        let log = run(WorkflowId::new(), UserId(7), &script);
        let mut st = None;
        for r in &log {
            let _ = apply(&mut st, r);
            out.push_str(&serde_json::json!({"record": r.to_json()}).to_string());
            out.push('\n');
        }
        out.push_str(&serde_json::json!({"state": st}).to_string());
        out.push('\n');
    }
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v1.jsonl"),
        out,
    )
    .unwrap();
}
