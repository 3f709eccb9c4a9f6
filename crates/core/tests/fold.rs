//! The fold and decide, as given/when/then: given these records, when the
//! workflow is folded, then this state and this next action.

use agentflow_core::*;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn agent(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

struct Given {
    id: WorkflowId,
    records: Vec<Record>,
}

impl Given {
    fn created(agents: &[&str]) -> Self {
        let id = WorkflowId::new();
        let tasks = agents
            .iter()
            .enumerate()
            .map(|(i, a)| TaskDef {
                agent: agent(a),
                input: if i == 0 {
                    json!({"topic": "AI"})
                } else {
                    json!({"content": "{{previous_output}}"})
                },
                timeout_ms: None,
            })
            .collect();
        let mut g = Self {
            id,
            records: vec![],
        };
        g.push(created("pipeline", tasks, None));
        g
    }

    fn push(&mut self, event: Event) -> &mut Self {
        // A command repeats the seq and parent of the state it was asked on.
        let last = self.records.iter().rev().find(|r| r.event.is_chained());
        let seq = last.map_or(0, |r| r.seq) + u64::from(event.is_chained());
        let at = self.records.len() as i64 + 1;
        self.records.push(chain(
            Record::new(self.id, UserId(42), seq, t(at), event),
            last,
        ));
        self
    }

    fn fold(&self) -> WorkflowState {
        let mut st = None;
        for r in &self.records {
            apply(&mut st, r).unwrap_or_else(|e| panic!("{} rejected: {e}", r.event_type()));
        }
        st.unwrap()
    }
}

/// Step `n` (1-based) of a `tasks` chain.
fn step(n: usize) -> StepId {
    StepId::of_task(n)
}

/// `workflow.created` for a `tasks` chain.
fn created(name: &str, tasks: Vec<TaskDef>, timeout_ms: Option<u64>) -> Event {
    Event::Created {
        name: name.into(),
        steps: tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| StepDef::of_task(i + 1, t))
            .collect(),
        input: json!({}),
        timeout_ms,
        max_concurrency: None,
    }
}

fn executed(n: usize, a: &str, output: Value) -> Event {
    Event::AgentExecuted {
        step: step(n),
        iteration: 1,
        agent: agent(a),
        output,
        attempts: 1,
        duration_ms: 5,
    }
}

fn call(st: &WorkflowState, n: usize, input: Value) -> Action {
    Action::CallAgent {
        step: step(n),
        iteration: 1,
        agent: st.definition[n - 1].agent.clone().unwrap(),
        input,
        idempotency_key: format!("{}:step_{n}:1", st.workflow_id),
        attempt_timeout_ms: None,
        deadline: None,
    }
}

fn step_error() -> StepError {
    StepError {
        kind: StepErrorKind::ServerError,
        message: "HTTP 503".into(),
        http_status: Some(503),
    }
}

fn step_failed(n: usize, a: &str, attempts: u32, duration_ms: u64) -> Event {
    Event::StepFailed {
        step: step(n),
        iteration: 1,
        agent: Some(agent(a)),
        error: step_error(),
        attempts,
        duration_ms,
    }
}

fn failed(n: usize, a: &str) -> Event {
    Event::Failed {
        step: step(n),
        agent: Some(agent(a)),
        error: step_error(),
    }
}

#[test]
fn created_workflow_is_pending_and_waits() {
    let st = Given::created(&["a", "b"]).fold();
    assert_eq!(st.status, WorkflowStatus::Pending);
    assert_eq!(st.seq, 1);
    assert_eq!(decide(&st, t(9)), vec![]);
}

#[test]
fn started_workflow_calls_the_first_agent_with_its_input() {
    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started);
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Running);
    assert_eq!(
        decide(&st, t(9)),
        vec![Action::CallAgent {
            step: step(1),
            iteration: 1,
            agent: agent("a"),
            input: json!({"topic": "AI"}),
            idempotency_key: format!("{}:step_1:1", g.id),
            attempt_timeout_ms: None,
            deadline: None,
        }]
    );
}

#[test]
fn next_step_gets_the_previous_output() {
    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started)
        .push(executed(1, "a", json!({"draft": "x"})));
    let st = g.fold();
    assert_eq!(
        decide(&st, t(9)),
        vec![call(&st, 2, json!({"content": {"draft": "x"}}))]
    );
}

#[test]
fn all_steps_done_completes_with_the_guides_metadata() {
    let mut g = Given::created(&["a", "b", "a"]);
    g.push(Event::Started)
        .push(executed(1, "a", json!(1)))
        .push(executed(2, "b", json!(2)))
        .push(executed(3, "a", json!(3)));
    let st = g.fold();
    let [
        Action::Append {
            event: Event::Completed,
            metadata,
        },
    ] = &decide(&st, t(12))[..]
    else {
        panic!("expected completion")
    };
    assert_eq!(metadata["task_count"], json!(3));
    assert_eq!(metadata["agents_used"], json!(["a", "b"]));
    // started at t(2), now t(12)
    assert_eq!(metadata["duration_seconds"], json!(10.0));
    g.push(Event::Completed);
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Completed);
    assert_eq!(decide(&st, t(13)), vec![]);
}

#[test]
fn a_failed_step_fails_the_workflow_and_skips_the_rest() {
    let mut g = Given::created(&["a", "b", "c"]);
    g.push(Event::Started)
        .push(executed(1, "a", json!(1)))
        .push(step_failed(2, "b", 3, 70));
    let st = g.fold();
    assert_eq!(
        decide(&st, t(9)),
        vec![Action::Append {
            event: failed(2, "b"),
            metadata: Default::default(),
        }]
    );
    g.push(failed(2, "b"));
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Failed);
    let statuses: Vec<_> = st.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Completed,
            StepStatus::Failed,
            StepStatus::Skipped
        ]
    );
    assert_eq!(
        st.step(&step(3)).unwrap().skip_reason,
        Some(SkipReason::Ended)
    );
    assert_eq!(st.step(&step(2)).unwrap().error, Some(step_error()));
}

#[test]
fn resuming_a_failed_workflow_starts_at_the_failed_step_and_keeps_earlier_results() {
    let mut g = Given::created(&["a", "b", "c"]);
    g.push(Event::Started)
        .push(executed(1, "a", json!("one")))
        .push(step_failed(2, "b", 3, 1))
        .push(failed(2, "b"));
    g.push(Event::Started);
    let st = g.fold();
    assert_eq!(st.runs, 2);
    assert_eq!(st.status, WorkflowStatus::Running);
    assert_eq!(st.step(&step(1)).unwrap().output, Some(json!("one")));
    assert_eq!(st.step(&step(1)).unwrap().status, StepStatus::Completed);
    assert_eq!(st.step(&step(2)).unwrap().error, None);
    // The failed step runs again under the same key (its first iteration
    // never ended), and only it.
    assert_eq!(
        decide(&st, t(9)),
        vec![call(&st, 2, json!({"content": "one"}))]
    );
    // A result for the step that completed before is not taken again.
    let mut slot = Some(st.clone());
    let again = Record::new(
        g.id,
        UserId(42),
        st.seq + 1,
        t(10),
        executed(1, "a", json!(1)),
    )
    .after(st.last_event_id);
    assert!(matches!(
        apply(&mut slot, &again),
        Err(Rejected::WrongStep { .. })
    ));
}

#[test]
fn illegal_transitions_are_rejected_and_change_nothing() {
    let mut g = Given::created(&["a"]);
    let before = Some(g.fold());
    let cases = [
        Event::Completed,
        executed(1, "a", json!(1)),
        Event::Created {
            name: "again".into(),
            steps: vec![],
            input: json!({}),
            timeout_ms: None,
            max_concurrency: None,
        },
        failed(1, "a"),
        Event::WaitCompleted {
            step: step(1),
            reason: WaitEnd::Signal,
            output: json!(1),
        },
    ];
    for ev in cases {
        let mut st = before.clone();
        let rec = Record::new(g.id, UserId(42), 2, t(2), ev).after(g.records[0].event_id);
        assert!(
            apply(&mut st, &rec).is_err(),
            "{} accepted",
            rec.event_type()
        );
        assert_eq!(st, before);
    }
    // Commands need a run: a pending workflow cannot be paused, resumed or
    // signalled.
    for ev in [
        Event::Paused,
        Event::Resumed,
        Event::CancelRequested,
        Event::SignalReceived {
            signal: "ok".into(),
            payload: json!(1),
            key: None,
        },
    ] {
        let mut st = before.clone();
        let rec = Record::new(g.id, UserId(42), 1, t(2), ev).after(g.records[0].event_id);
        assert!(
            matches!(
                apply(&mut st, &rec),
                Err(Rejected::IllegalTransition { .. })
            ),
            "{} accepted",
            rec.event_type()
        );
        assert_eq!(st, before);
    }
    g.push(Event::Started).push(executed(1, "a", json!(1)));
    let mut st = Some(g.fold());
    let again = Record::new(g.id, UserId(42), 4, t(4), Event::Started).after(g.records[2].event_id);
    assert!(matches!(
        apply(&mut st, &again),
        Err(Rejected::IllegalTransition {
            status: Some(WorkflowStatus::Running),
            ..
        })
    ));
    let wrong_agent = Record::new(g.id, UserId(42), 4, t(4), executed(1, "zzz", json!(1)))
        .after(g.records[2].event_id);
    assert!(apply(&mut st, &wrong_agent).is_err());
    // Nor a step of another name, an iteration that is not the next, or a
    // wait's end for an agent step.
    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started);
    let st = g.fold();
    for ev in [
        Event::AgentExecuted {
            step: StepId::parse("nope").unwrap(),
            iteration: 1,
            agent: agent("a"),
            output: json!(1),
            attempts: 1,
            duration_ms: 1,
        },
        Event::AgentExecuted {
            step: step(1),
            iteration: 2,
            agent: agent("a"),
            output: json!(1),
            attempts: 1,
            duration_ms: 1,
        },
        executed(2, "b", json!(1)),
        Event::StepWaiting {
            step: step(1),
            signal: None,
            until: Some(t(5)),
        },
    ] {
        let mut slot = Some(st.clone());
        let rec = Record::new(g.id, UserId(42), 3, t(3), ev).after(st.last_event_id);
        assert!(
            matches!(apply(&mut slot, &rec), Err(Rejected::WrongStep { .. })),
            "{:?} accepted",
            rec.event
        );
        assert_eq!(slot.as_ref(), Some(&st));
    }
}

#[test]
fn first_record_with_a_seq_wins_and_later_duplicates_are_ignored() {
    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started);
    let mut st = Some(g.fold());
    let parent = g.records[1].event_id;
    let winner =
        Record::new(g.id, UserId(42), 3, t(3), executed(1, "a", json!("first"))).after(parent);
    let zombie =
        Record::new(g.id, UserId(42), 3, t(3), executed(1, "a", json!("second"))).after(parent);
    apply(&mut st, &winner).unwrap();
    assert_eq!(
        apply(&mut st, &zombie),
        Err(Rejected::OutOfSequence {
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        st.unwrap().step(&step(1)).unwrap().output,
        Some(json!("first"))
    );
}

#[test]
fn records_round_trip_through_their_wire_shape() {
    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started)
        .push(executed(1, "a", json!({"x": [1, 2]})))
        .push(step_failed(2, "b", 2, 9))
        .push(failed(2, "b"));
    for r in &g.records {
        assert_eq!(&Record::from_bytes(&r.to_bytes()).unwrap(), r);
    }
    assert!(matches!(
        Record::from_bytes(b"{}"),
        Err(RecordError::Envelope(_))
    ));
    let mut j = g.records[1].to_json();
    j["event_type"] = json!("workflow.exploded");
    assert!(matches!(
        Record::from_bytes(j.to_string().as_bytes()),
        Err(RecordError::UnknownType(_))
    ));
    let mut j = g.records[1].to_json();
    j["version"] = json!(3);
    assert_eq!(
        Record::from_bytes(j.to_string().as_bytes()),
        Err(RecordError::Version(3))
    );
}

#[test]
fn a_record_decided_on_a_state_that_lost_the_race_is_rejected() {
    // Two writers both decided on seq 2; the loser's next record (seq 4,
    // built on its own seq 3) must not extend the winner's chain.
    let mut g = Given::created(&["a", "b", "c"]);
    g.push(Event::Started);
    let mut st = Some(g.fold());
    let parent = g.records[1].event_id;
    let winner = Record::new(g.id, UserId(42), 3, t(3), executed(1, "a", json!("w"))).after(parent);
    let loser = Record::new(g.id, UserId(42), 3, t(3), executed(1, "a", json!("l"))).after(parent);
    let losers_next = Record::new(g.id, UserId(42), 4, t(4), executed(2, "b", json!("from l")))
        .after(loser.event_id);
    apply(&mut st, &winner).unwrap();
    assert!(apply(&mut st, &loser).is_err());
    assert!(matches!(
        apply(&mut st, &losers_next),
        Err(Rejected::WrongParent { .. })
    ));
    assert_eq!(st.as_ref().unwrap().seq, 3);
    let unchained = Record::new(g.id, UserId(42), 4, t(4), executed(2, "b", json!(1)));
    assert!(matches!(
        apply(&mut st, &unchained),
        Err(Rejected::WrongParent { got: None, .. })
    ));
}

#[test]
fn cancelling_a_running_workflow_waits_for_the_step_in_flight() {
    let mut g = Given::created(&["a", "b", "c"]);
    g.push(Event::Started).push(Event::CancelRequested);
    let st = g.fold();
    // The request does not take a place in the chain...
    assert_eq!(st.seq, 2);
    assert!(st.cancel_requested);
    assert_eq!(st.status, WorkflowStatus::Running);
    // ...so the step in flight still lands, and then the actor cancels.
    g.push(executed(1, "a", json!("draft")));
    let st = g.fold();
    assert_eq!(st.seq, 3);
    let [Action::Append { event, .. }] = &decide(&st, t(9))[..] else {
        panic!("expected an append")
    };
    assert_eq!(event, &Event::Cancelled);
    g.push(event.clone());
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Cancelled);
    assert!(st.status.is_terminal());
    let statuses: Vec<StepStatus> = st.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Completed,
            StepStatus::Skipped,
            StepStatus::Skipped
        ]
    );
    assert_eq!(
        st.results(),
        json!([{"step": 1, "id": "step_1", "output": "draft"}])
    );
    assert_eq!(decide(&st, t(9)), vec![]);
}

#[test]
fn pending_and_failed_workflows_cancel_at_once_but_finished_ones_do_not() {
    let mut g = Given::created(&["a"]);
    g.push(Event::Cancelled);
    assert_eq!(g.fold().status, WorkflowStatus::Cancelled);

    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started)
        .push(step_failed(1, "a", 3, 9))
        .push(failed(1, "a"))
        .push(Event::Cancelled);
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Cancelled);
    assert_eq!(st.step(&step(1)).unwrap().status, StepStatus::Failed);

    // Cancelled is final: no resume, no second cancel, no request, no
    // pause.
    for ev in [
        Event::Started,
        Event::Cancelled,
        Event::CancelRequested,
        Event::Paused,
    ] {
        let mut st = Some(st.clone());
        let r =
            Record::new(g.id, UserId(42), 6, t(20), ev).after(st.as_ref().unwrap().last_event_id);
        assert!(apply(&mut st, &r).is_err());
        assert_eq!(st.as_ref().unwrap().status, WorkflowStatus::Cancelled);
    }

    // A running workflow is cancelled only by its actor, once asked.
    let mut g = Given::created(&["a"]);
    g.push(Event::Started);
    let mut st = Some(g.fold());
    let r = Record::new(g.id, UserId(42), 3, t(20), Event::Cancelled)
        .after(st.as_ref().unwrap().last_event_id);
    assert!(matches!(
        apply(&mut st, &r),
        Err(Rejected::IllegalTransition { .. })
    ));
}

#[test]
fn a_task_timeout_and_the_workflow_deadline_reach_the_call() {
    let id = WorkflowId::new();
    let tasks = vec![
        TaskDef {
            agent: agent("a"),
            input: json!({}),
            timeout_ms: Some(1500),
        },
        TaskDef {
            agent: agent("b"),
            input: json!({}),
            timeout_ms: None,
        },
    ];
    let mut g = Given {
        id,
        records: vec![],
    };
    g.push(created("t", tasks, Some(10_000)))
        .push(Event::Started); // at t(2)
    let st = g.fold();
    assert_eq!(st.deadline(), Some(t(12)));
    // The call, and a wake-up at the deadline.
    let [
        Action::CallAgent {
            attempt_timeout_ms,
            deadline,
            ..
        },
        Action::WakeAt(wake),
    ] = &decide(&st, t(3))[..]
    else {
        panic!("expected a call")
    };
    assert_eq!(
        (*attempt_timeout_ms, *deadline, *wake),
        (Some(1500), Some(t(12)), t(12))
    );

    // Past the deadline the next step fails without a call...
    g.push(executed(1, "a", json!(1)));
    let st = g.fold();
    let [
        Action::Append {
            event:
                Event::StepFailed {
                    step: s,
                    error,
                    attempts,
                    ..
                },
            ..
        },
    ] = &decide(&st, t(12))[..]
    else {
        panic!("expected the step to fail")
    };
    assert_eq!(
        (s, *attempts, error.kind),
        (&step(2), 0, StepErrorKind::WorkflowTimeout)
    );
}

fn chain(r: Record, prev: Option<&Record>) -> Record {
    match prev {
        Some(p) => r.after(p.event_id),
        None => r,
    }
}

// ---------- properties ----------

fn arb_event() -> impl Strategy<Value = Event> {
    let agent = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(agent);
    // Step ids of the chain below, and one of no step.
    let step = (0usize..5).prop_map(|n| {
        if n == 0 {
            StepId::parse("nope").unwrap()
        } else {
            StepId::of_task(n)
        }
    });
    let iteration = 0u32..3;
    prop_oneof![
        Just(created(
            "p",
            vec![
                TaskDef {
                    agent: agent_static("a"),
                    input: json!({}),
                    timeout_ms: None,
                },
                TaskDef {
                    agent: agent_static("b"),
                    input: json!("{{previous_output}}"),
                    timeout_ms: None,
                },
            ],
            None,
        )),
        Just(Event::Started),
        (step.clone(), iteration.clone(), agent.clone()).prop_map(|(step, iteration, a)| {
            Event::AgentExecuted {
                output: json!(step.as_str()),
                step,
                iteration,
                agent: a,
                attempts: 1,
                duration_ms: 1,
            }
        }),
        (
            step.clone(),
            iteration.clone(),
            prop::option::of(agent.clone())
        )
            .prop_map(|(step, iteration, agent)| Event::StepFailed {
                step,
                iteration,
                agent,
                error: step_error(),
                attempts: 1,
                duration_ms: 1
            }),
        (step.clone(), any::<bool>()).prop_map(|(step, result)| Event::ConditionEvaluated {
            step,
            condition: ConditionKind::When,
            iteration: 0,
            expression: "true".into(),
            result,
            error: None,
        }),
        step.clone().prop_map(|step| Event::StepWaiting {
            step,
            signal: Some("ok".into()),
            until: None,
        }),
        step.clone().prop_map(|step| Event::WaitCompleted {
            step,
            reason: WaitEnd::Signal,
            output: json!(1),
        }),
        Just(Event::Completed),
        Just(Event::CancelRequested),
        Just(Event::Cancelled),
        Just(Event::Paused),
        Just(Event::Resumed),
        Just(Event::SignalReceived {
            signal: "ok".into(),
            payload: json!(1),
            key: None,
        }),
        (step, prop::option::of(agent)).prop_map(|(step, agent)| Event::Failed {
            step,
            agent,
            error: step_error()
        }),
    ]
}

fn agent_static(s: &str) -> AgentName {
    agent(s)
}

proptest! {
    /// Any sequence of records — duplicates, gaps, out-of-order seq, nonsense
    /// transitions — folds without panicking, deterministically, and a
    /// rejected record never changes the state.
    #[test]
    fn fold_is_total_deterministic_and_rejections_change_nothing(
        events in prop::collection::vec((arb_event(), 0u64..8), 0..40),
        chained in prop::collection::vec(prop::bool::weighted(0.8), 1..8),
    ) {
        let id = WorkflowId::new();
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, (ev, seq))| Record::new(id, UserId(1), seq, t(i as i64), ev))
            .collect::<Vec<_>>();
        // Chain each record to its predecessor in the list, or not: both
        // well-formed chains and broken ones must fold safely.
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| if i > 0 && chained[i % chained.len().max(1)] { r.clone().after(records[i - 1].event_id) } else { r.clone() })
            .collect();
        let fold = |rs: &[Record]| {
            let mut st = None;
            for r in rs {
                let before = st.clone();
                if apply(&mut st, r).is_err() {
                    assert_eq!(st, before);
                }
            }
            st
        };
        let a = fold(&records);
        prop_assert_eq!(&a, &fold(&records));
        if let Some(st) = &a {
            // seq only moves forward, one at a time, and decide never panics.
            prop_assert!(st.seq >= 1);
            let _ = decide(st, t(100));
            // A completed workflow has every step completed (a chain has no
            // condition to skip one).
            if st.status == WorkflowStatus::Completed {
                prop_assert!(st.steps.iter().all(|s| s.status == StepStatus::Completed));
            }
        }
    }

    /// Driving a workflow with decide's own actions always finishes it, and
    /// replaying the resulting log gives the same state.
    #[test]
    fn decide_drives_any_workflow_to_an_end(fail_at in prop::option::of(1usize..4), n in 1usize..4) {
        let names = ["a", "b", "c"];
        let mut g = Given::created(&names[..n]);
        g.push(Event::Started);
        for _ in 0..20 {
            let st = g.fold();
            let actions = decide(&st, t(50));
            match actions.first() {
                None => break,
                Some(Action::Append { event, .. }) => { g.push(event.clone()); }
                Some(Action::CallAgent { step, agent, .. }) => {
                    // A chain has one call at a time.
                    prop_assert_eq!(actions.len(), 1);
                    if Some(step) == fail_at.map(StepId::of_task).as_ref() {
                        g.push(Event::StepFailed { step: step.clone(), iteration: 1, agent: Some(agent.clone()), error: step_error(), attempts: 1, duration_ms: 1 });
                    } else {
                        g.push(Event::AgentExecuted { step: step.clone(), iteration: 1, agent: agent.clone(), output: json!(step.as_str()), attempts: 1, duration_ms: 1 });
                    }
                }
                Some(Action::WakeAt(_)) => prop_assert!(false, "a chain without a timeout never sleeps"),
            }
        }
        let st = g.fold();
        let want = match fail_at { Some(f) if f <= n => WorkflowStatus::Failed, _ => WorkflowStatus::Completed };
        prop_assert_eq!(st.status, want);
        let mut again = None;
        for r in &g.records {
            apply(&mut again, r).unwrap();
        }
        prop_assert_eq!(again.as_ref(), Some(&st));
    }
}

// ---------- a cancel racing the actor's records (issue 11, item 3) ----------

#[test]
fn a_step_failing_after_a_cancel_was_requested_decides_cancelled_not_failed() {
    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started)
        .push(Event::CancelRequested)
        .push(step_failed(1, "a", 3, 9));
    let [Action::Append { event, .. }] = &decide(&g.fold(), t(9))[..] else {
        panic!("expected an append")
    };
    assert_eq!(event, &Event::Cancelled);
    g.push(event.clone());
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Cancelled);
    assert!(!st.cancel_requested);
    assert_eq!(st.step(&step(1)).unwrap().status, StepStatus::Failed);
    assert_eq!(st.step(&step(2)).unwrap().status, StepStatus::Skipped);
}

#[test]
fn a_cancel_accepted_before_the_actors_failure_records_ends_cancelled() {
    // The actor decided `step.failed` + `workflow.failed` on a state without
    // the request, which reached the log first: the user was told
    // `cancelling`, so the workflow ends cancelled, and stays so.
    for cancel_after in [2usize, 3] {
        let mut g = Given::created(&["a", "b"]);
        g.push(Event::Started);
        let mut events = vec![step_failed(1, "a", 3, 9), failed(1, "a")];
        events.insert(cancel_after - 2, Event::CancelRequested);
        for ev in events {
            g.push(ev);
        }
        let st = g.fold();
        assert_eq!(st.status, WorkflowStatus::Cancelled, "{cancel_after}");
        assert!(!st.cancel_requested);
        assert_eq!(st.step(&step(1)).unwrap().status, StepStatus::Failed);
        assert_eq!(st.step(&step(2)).unwrap().status, StepStatus::Skipped);
        assert_eq!(decide(&st, t(9)), vec![]);
        let mut slot = Some(st.clone());
        let resume = Record::new(g.id, UserId(42), st.seq + 1, t(30), Event::Started)
            .after(st.last_event_id);
        assert!(apply(&mut slot, &resume).is_err(), "cancelled is final");
    }
}

#[test]
fn a_cancel_accepted_before_the_last_steps_completion_ends_cancelled_with_its_result() {
    let mut g = Given::created(&["a"]);
    g.push(Event::Started)
        .push(Event::CancelRequested)
        .push(executed(1, "a", json!("kept")))
        .push(Event::Completed);
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Cancelled);
    assert!(!st.cancel_requested);
    assert_eq!(
        st.results(),
        json!([{"step": 1, "id": "step_1", "output": "kept"}])
    );
}

#[test]
fn a_failed_workflow_resumed_after_a_cancel_it_never_saw_runs() {
    // Failed first, then a (stale) cancel request: rejected, since only a
    // running workflow takes one. The resume then runs, not cancelled.
    let mut g = Given::created(&["a", "b"]);
    g.push(Event::Started)
        .push(step_failed(1, "a", 3, 9))
        .push(failed(1, "a"));
    let mut st = Some(g.fold());
    let late = Record::new(g.id, UserId(42), 4, t(10), Event::CancelRequested)
        .after(g.records[2].event_id);
    assert!(apply(&mut st, &late).is_err());
    g.push(Event::Started);
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Running);
    assert!(!st.cancel_requested);
    assert!(matches!(
        &decide(&st, t(11))[..],
        [Action::CallAgent { step: s, .. }] if *s == step(1)
    ));
}
