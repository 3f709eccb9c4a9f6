//! The log as the source of truth: the records of one workflow read back
//! with a plain Kafka consumer, and recovery from kill -9 by replay.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Stack, pipeline};
use serde_json::Value;

fn read_topic(s: &Stack) -> Vec<(String, String, Value)> {
    common::read_topic(&s.brokers, &s.topic)
}

#[tokio::test]
async fn one_workflows_events_read_back_from_the_topic() {
    let s = Stack::start().await;
    let t = s.token(42);
    let agents = [
        "marketing_content_agent_1_101",
        "marketing_seo_agent_1_102",
        "marketing_social_media_agent_1_103",
    ];
    let id = s
        .create(&t, pipeline("Content Marketing Pipeline", &agents))
        .await;
    s.execute(&t, &id).await;
    assert_eq!(
        s.wait_done(&t, &id, Duration::from_secs(30)).await["status"],
        "completed"
    );

    let records: Vec<_> = read_topic(&s)
        .into_iter()
        .filter(|(k, _, _)| *k == id)
        .collect();
    let types: Vec<&str> = records
        .iter()
        .map(|(_, _, v)| v["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, common::THREE_STEP_EVENTS);
    for (i, (_, header, v)) in records.iter().enumerate() {
        assert_eq!(v["seq"], i as u64 + 1, "seq is 1, 2, 3, …");
        assert_eq!(
            header,
            v["event_type"].as_str().unwrap(),
            "event_type header"
        );
        assert_eq!(v["workflow_id"], id.as_str());
        assert_eq!(v["user_id"], 42);
        assert_eq!(v["version"], 2);
        assert!(uuid::Uuid::parse_str(v["event_id"].as_str().unwrap()).is_ok());
        assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
    }
    for (i, agent) in agents.iter().enumerate() {
        let data = &records[2 + i].2["data"];
        assert_eq!(data["step"], format!("step_{}", i + 1));
        assert_eq!(data["iteration"], 1);
        assert_eq!(data["agent"], *agent);
        assert_eq!(data["output"]["agent"], *agent);
    }
    let done = &records[5].2["metadata"];
    assert_eq!(done["task_count"], 3);
    assert_eq!(done["agents_used"], serde_json::json!(agents));
    assert!(done["duration_seconds"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn kill_9_mid_run_then_restart_finishes_every_workflow_repeating_only_in_flight_steps() {
    // Each agent call takes 300 ms; 12 workflows of 3 steps run at once.
    let mut s = Stack::start_with(Duration::from_millis(300), "", &[]).await;
    let t = s.token(9);
    let mut ids = vec![];
    for i in 0..12 {
        let id = s
            .create(&t, pipeline(&format!("wf{i}"), &["a1", "a2", "a3"]))
            .await;
        assert_eq!(s.execute(&t, &id).await.0, 202);
        ids.push(id);
    }
    // Let them get into their steps, then kill without warning.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls_at_kill = s.agent.calls.snapshot();
    assert!(!calls_at_kill.is_empty(), "steps were under way");
    s.kill9();
    // Calls in flight at the kill may still be answered; their results were
    // never appended.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before_restart = s.agent.calls.snapshot();

    s.spawn_server().await;
    for id in &ids {
        let w = s.wait_done(&t, id, Duration::from_secs(60)).await;
        assert_eq!(w["status"], "completed", "{w}");
        let results = w["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(
            results[1]["output"]["input"]["content"], results[0]["output"],
            "chain intact after recovery"
        );
    }
    // Every step ran; a step ran twice only if it was under way at the kill.
    let after = s.agent.calls.snapshot();
    let mut repeated = 0;
    for id in &ids {
        for step in 1..=3 {
            let key = format!("{id}:step_{step}:1");
            let n = after.get(&key).copied().unwrap_or(0);
            assert!(n >= 1, "{key} never called");
            if n > 1 {
                assert_eq!(n, 2, "{key} called {n} times");
                assert!(
                    before_restart.contains_key(&key),
                    "{key} repeated but was not in flight at the kill"
                );
                repeated += 1;
            }
        }
    }
    // At most one step per workflow can have been in flight.
    assert!(repeated <= ids.len(), "{repeated} repeated steps");
    let per_workflow: HashMap<&str, usize> = ids
        .iter()
        .map(|id| {
            (
                id.as_str(),
                (1..=3)
                    .filter(|st| {
                        after
                            .get(&format!("{id}:step_{st}:1"))
                            .copied()
                            .unwrap_or(0)
                            > 1
                    })
                    .count(),
            )
        })
        .collect();
    assert!(per_workflow.values().all(|n| *n <= 1), "{per_workflow:?}");
}

#[tokio::test]
async fn a_stale_writer_that_wins_a_seq_is_followed_and_the_actor_restarts_from_the_log() {
    use agentflow_core::{AgentName, Event, Record, UserId, WorkflowId};
    // Step 1's agent holds its answer; meanwhile a "zombie" appends its own result
    // for step 1 at the same seq. It is first in the log, so it wins: the
    // engine's actor must notice, restart from the log, and continue from
    // the zombie's output, and the projection must agree.
    let s = Stack::start().await;
    let t = s.token(2);
    // A producer of its own, warmed up first (its first append also sets up
    // the idempotent producer): a record for a workflow that does not exist,
    // which every fold rejects.
    let producer =
        agentflow_log::Producer::new(&agentflow_log::LogConfig::new(&s.brokers, &s.topic)).unwrap();
    let nothing = Record::new(
        WorkflowId::new(),
        UserId(2),
        7,
        chrono::Utc::now(),
        Event::Completed,
    );
    producer
        .append(&nothing, Duration::from_secs(10))
        .await
        .unwrap();
    let id = s
        .create(
            &t,
            serde_json::json!({"name": "zombie", "tasks": [
                {"agent": "slow", "input": {"_mock": {"hold": "step1"}}},
                {"agent": "next", "input": {"content": "{{previous_output}}"}}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    let started = read_topic(&s)
        .into_iter()
        .find(|(k, _, v)| *k == id && v["event_type"] == "workflow.started")
        .expect("started record")
        .2;
    let parent = uuid::Uuid::parse_str(started["event_id"].as_str().unwrap()).unwrap();
    let zombie = Record::new(
        WorkflowId::parse(&id).unwrap(),
        UserId(2),
        3,
        chrono::Utc::now(),
        Event::AgentExecuted {
            step: agentflow_core::StepId::of_task(1),
            iteration: 1,
            agent: AgentName::parse("slow").unwrap(),
            output: serde_json::json!({"from": "zombie"}),
            attempts: 1,
            duration_ms: 1,
        },
    )
    .after(parent);
    producer
        .append(&zombie, Duration::from_secs(10))
        .await
        .unwrap();
    // The actor's own call for step 1 is still held: the zombie's record is
    // first in the log. Now let the agent answer.
    s.agent.gates.release("step1");

    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(
        w["results"][0]["output"],
        serde_json::json!({"from": "zombie"}),
        "first in the log wins"
    );
    assert_eq!(
        w["results"][1]["output"]["input"]["content"],
        serde_json::json!({"from": "zombie"}),
        "step 2 was decided on the log's step 1, not the actor's own"
    );
    // The log may hold the losing record too (the actor's own step 1), and
    // nothing chained onto it (the actor calls an agent only on a state the
    // log confirmed). The fold applies exactly one record per seq, 1..=5,
    // one of them the completion; the loser is marked ignored.
    let recs: Vec<agentflow_core::Record> = read_topic(&s)
        .into_iter()
        .filter(|(k, _, _)| *k == id)
        .map(|(_, _, v)| agentflow_core::Record::from_bytes(v.to_string().as_bytes()).unwrap())
        .collect();
    let (trail, state) = agentflow_core::audit(&recs);
    let applied: Vec<(u64, &str)> = trail
        .iter()
        .filter(|e| e.applied)
        .map(|e| (e.seq, e.event_type))
        .collect();
    assert_eq!(
        applied,
        [
            (1, "workflow.created"),
            (2, "workflow.started"),
            (3, "agent.executed"),
            (4, "agent.executed"),
            (5, "workflow.completed")
        ],
        "{trail:#?}"
    );
    let ignored: Vec<(u64, &str)> = trail
        .iter()
        .filter(|e| !e.applied)
        .map(|e| (e.seq, e.event_type))
        .collect();
    // The actor's own result for step 1 is either dropped (the zombie's
    // record reached the actor before its call answered: the step was no
    // longer its to finish) or appended and ignored (it lost the race).
    assert!(
        ignored.is_empty() || ignored == [(3, "agent.executed")],
        "{trail:#?}"
    );
    // The agent's view: step 2 was called once, with the zombie's step 1.
    assert_eq!(
        s.agent.calls.bodies(&format!("{id}:step_2:1")),
        [serde_json::json!({"content": {"from": "zombie"}})]
    );
    assert_eq!(
        state.unwrap().status,
        agentflow_core::WorkflowStatus::Completed
    );
    // The projection agrees with the fold of the log, loser and all, and
    // so does the audit view over the API, record for record.
    s.assert_projection_is_the_fold(std::slice::from_ref(&id))
        .await;
    let (_, api) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
        .await;
    assert_eq!(api["events"], serde_json::to_value(&trail).unwrap());
}
