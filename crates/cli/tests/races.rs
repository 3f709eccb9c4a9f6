//! Writers racing for one workflow, seen from the agents: an agent that
//! deduplicates by `Idempotency-Key` (as the README tells agent authors to)
//! must never be handed two different requests under one key.

mod common;

use std::time::Duration;

use common::Stack;
use serde_json::json;

#[tokio::test]
async fn a_writer_that_lost_a_step_never_calls_the_next_agent_with_its_own_output() {
    let mut s = Stack::start().await;
    // A second engine in a consumer group of its own: it owns every
    // partition too, so every workflow has two actors, on two nodes, that
    // race for each step (what a zombie owner does after a rebalance, here
    // on every step of every workflow).
    let rival_group = format!("{}.rival.", s.topic);
    s.spawn_node_with("rival", &[("AGENTFLOW_GROUP_PREFIX", &rival_group)])
        .await;
    let t = s.token(5);
    let mut ids = vec![];
    for i in 0..6 {
        // Step 1 is answered only once both actors have called it, so both
        // have a result for it and race to append it; the outputs differ
        // (the mock numbers its calls), so a step-2 call shows whose it got.
        let id = s
            .create(
                &t,
                json!({"name": format!("race{i}"), "tasks": [
                    {"agent": "first", "input": {"_mock": {"hold_until_calls": 2}}},
                    {"agent": "second", "input": {"content": "{{previous_output}}"}},
                    {"agent": "third", "input": {"content": "{{previous_output}}"}}
                ]}),
            )
            .await;
        assert_eq!(s.execute(&t, &id).await.0, 202);
        ids.push(id);
    }
    for id in &ids {
        let w = s.wait_done(&t, id, Duration::from_secs(60)).await;
        assert_eq!(w["status"], "completed", "{w}");
        assert_eq!(
            s.agent.calls.bodies(&format!("{id}:step_1:1")).len(),
            2,
            "both actors called step 1"
        );
        // The agent's view: each key of steps 2 and 3 got one or two calls
        // (one per actor at most), every one of them with the output of the
        // previous step that the log kept, never a losing writer's.
        for step in 2..=3usize {
            let key = format!("{id}:step_{step}:1");
            let bodies = s.agent.calls.bodies(&key);
            assert!(
                (1..=2).contains(&bodies.len()),
                "{key}: {} calls",
                bodies.len()
            );
            let want = json!({"content": w["results"][step - 2]["output"]});
            for (n, body) in bodies.iter().enumerate() {
                assert_eq!(
                    body,
                    &want,
                    "{key}, call {}: not the log's step {}",
                    n + 1,
                    step - 1
                );
            }
        }
    }
    s.assert_projection_is_the_fold(&ids).await;
}
