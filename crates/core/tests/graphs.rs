//! The fold and decide on graphs, as given/when/then: fan-out and joins,
//! `when` branches, `repeat` loops, waits for signals, sleeps, pause and
//! resume, and a resume after a failure.

use agentflow_core::*;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn id(s: &str) -> StepId {
    StepId::parse(s).unwrap()
}

fn agent(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

/// A workflow's log, each record at `t(its index + 1)`.
struct Given {
    id: WorkflowId,
    records: Vec<Record>,
}

impl Given {
    /// `workflow.created` for the definition `body` (with a `name`).
    fn created(mut body: Value) -> Self {
        body["name"] = json!("g");
        let def = WorkflowDefinition::parse(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
        let mut g = Self {
            id: WorkflowId::new(),
            records: vec![],
        };
        g.push(Event::Created {
            name: def.name,
            steps: def.steps,
            input: def.input,
            timeout_ms: def.timeout_ms,
            max_concurrency: def.max_concurrency,
        });
        g
    }

    /// The next record (a command repeats the seq and parent of the last
    /// chained record), applied: it must fit.
    fn push(&mut self, event: Event) -> &mut Self {
        let r = self.record(event);
        self.push_record(r)
    }

    fn record(&self, event: Event) -> Record {
        let last = self.records.iter().rev().find(|r| r.event.is_chained());
        let seq = last.map_or(0, |r| r.seq) + u64::from(event.is_chained());
        let r = Record::new(
            self.id,
            UserId(42),
            seq,
            t(self.records.len() as i64 + 1),
            event,
        );
        match last {
            Some(p) => r.after(p.event_id),
            None => r,
        }
    }

    fn push_record(&mut self, r: Record) -> &mut Self {
        let mut st = self.try_fold();
        if let Err(e) = apply(&mut st, &r) {
            panic!("{} rejected: {e}\n{:?}", r.event_type(), r.event);
        }
        self.records.push(r);
        self
    }

    fn try_fold(&self) -> Option<WorkflowState> {
        let mut st = None;
        for r in &self.records {
            apply(&mut st, r).unwrap_or_else(|e| panic!("{} rejected: {e}", r.event_type()));
        }
        st
    }

    fn fold(&self) -> WorkflowState {
        self.try_fold().unwrap()
    }

    /// What `decide` says at `now`.
    fn decide(&self, now: i64) -> Vec<Action> {
        decide(&self.fold(), t(now))
    }

    /// Appends what `decide` asks for at `now` while it asks for a record;
    /// returns the events appended and the actions it asked for then.
    fn appends(&mut self, now: i64) -> (Vec<Event>, Vec<Action>) {
        let mut done = vec![];
        loop {
            let actions = self.decide(now);
            match &actions[..] {
                [Action::Append { event, .. }] => {
                    done.push(event.clone());
                    self.push(event.clone());
                }
                [Action::Append { .. }, ..] => panic!("an append comes alone: {actions:?}"),
                _ => return (done, actions),
            }
        }
    }

    fn status(&self, step: &str) -> StepStatus {
        self.fold().step(&id(step)).unwrap().status
    }
}

fn executed(step: &str, a: &str, output: Value) -> Event {
    executed_at(step, 1, a, output)
}

fn executed_at(step: &str, iteration: u32, a: &str, output: Value) -> Event {
    Event::AgentExecuted {
        step: id(step),
        iteration,
        agent: agent(a),
        output,
        attempts: 1,
        duration_ms: 5,
    }
}

fn step_failed(step: &str, a: &str) -> Event {
    Event::StepFailed {
        step: id(step),
        iteration: 1,
        agent: Some(agent(a)),
        error: StepError {
            kind: StepErrorKind::ServerError,
            message: "HTTP 503".into(),
            http_status: Some(503),
        },
        attempts: 3,
        duration_ms: 9,
    }
}

fn signal(payload: Value, key: Option<&str>) -> Event {
    Event::SignalReceived {
        signal: "approved".into(),
        payload,
        key: key.map(str::to_owned),
    }
}

/// The steps and inputs of the calls among `actions`.
fn calls(actions: &[Action]) -> Vec<(String, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CallAgent { step, input, .. } => Some((step.to_string(), input.clone())),
            _ => None,
        })
        .collect()
}

fn called(actions: &[Action]) -> Vec<String> {
    calls(actions).into_iter().map(|(s, _)| s).collect()
}

// ---------- fan-out and fan-in ----------

#[test]
fn three_steps_after_one_parent_are_all_called_at_once() {
    let mut g = Given::created(json!({"steps": [
        {"id": "root", "agent": "a"},
        {"id": "x", "agent": "b", "after": ["root"], "input": "{{previous_output}}"},
        {"id": "y", "agent": "c", "after": ["root"], "input": {"n": "{{steps.root.output.n}}"}},
        {"id": "z", "agent": "b", "after": ["root"]}
    ]}));
    g.push(Event::Started);
    assert_eq!(called(&g.decide(5)), ["root"]);
    g.push(executed("root", "a", json!({"n": 7})));
    let actions = g.decide(5);
    assert_eq!(
        calls(&actions),
        [
            ("x".into(), json!({"n": 7})),
            ("y".into(), json!({"n": 7})),
            ("z".into(), json!({}))
        ]
    );
    assert_eq!(actions.len(), 3, "no wake-up without a timeout");
    for a in &actions {
        let Action::CallAgent {
            step,
            iteration,
            idempotency_key,
            ..
        } = a
        else {
            unreachable!()
        };
        assert_eq!(*iteration, 1);
        assert_eq!(idempotency_key, &format!("{}:{step}:1", g.id));
    }
    // Results land in any order; each call that is left is still asked for.
    g.push(executed("y", "c", json!(2)));
    assert_eq!(called(&g.decide(6)), ["x", "z"]);
}

#[test]
fn a_join_waits_for_all_its_parents() {
    let mut g = Given::created(json!({"steps": [
        {"id": "a", "agent": "a"},
        {"id": "b", "agent": "b"},
        {"id": "c", "agent": "c"},
        {"id": "join", "agent": "a", "after": ["a", "b", "c"],
         "input": {"a": "{{steps.a.output}}", "b": "{{steps.b.output}}", "c": "{{steps.c.output}}"}}
    ]}));
    g.push(Event::Started);
    assert_eq!(called(&g.decide(5)), ["a", "b", "c"]);
    g.push(executed("b", "b", json!("B")))
        .push(executed("a", "a", json!("A")));
    assert_eq!(called(&g.decide(5)), ["c"], "the join waits for c");
    // A join cannot be run early either.
    let mut st = Some(g.fold());
    let early = g.record(executed("join", "a", json!(1)));
    assert!(matches!(
        apply(&mut st, &early),
        Err(Rejected::WrongStep { .. })
    ));
    g.push(executed("c", "c", json!("C")));
    assert_eq!(
        calls(&g.decide(5)),
        [("join".into(), json!({"a": "A", "b": "B", "c": "C"}))]
    );
    g.push(executed("join", "a", json!("done")));
    let (events, actions) = g.appends(9);
    assert!(matches!(&events[..], [Event::Completed]), "{events:?}");
    assert_eq!(actions, vec![]);
    assert_eq!(g.fold().status, WorkflowStatus::Completed);
}

// ---------- when ----------

fn branches() -> Given {
    Given::created(json!({"steps": [
        {"id": "score", "agent": "scorer"},
        {"id": "hi", "agent": "crm", "after": ["score"], "when": "steps.score.output.score >= 70"},
        {"id": "lo", "agent": "mail", "after": ["score"], "when": "steps.score.output.score < 70"},
        {"id": "lo_tail", "agent": "mail", "after": ["lo"], "input": "{{previous_output}}"},
        {"id": "end", "agent": "writer", "after": ["hi", "lo_tail"],
         "input": {"hi": "{{steps.hi.output}}", "lo": "{{steps.lo_tail.output}}"}}
    ]}))
}

#[test]
fn a_join_after_two_exclusive_branches_runs_after_whichever_ran() {
    // A high score: `hi` runs, `lo` is skipped and so is its only child.
    let mut g = branches();
    g.push(Event::Started)
        .push(executed("score", "scorer", json!({"score": 82})));
    let (events, actions) = g.appends(5);
    assert_eq!(
        events,
        [
            Event::ConditionEvaluated {
                step: id("hi"),
                condition: ConditionKind::When,
                iteration: 0,
                expression: "steps.score.output.score >= 70".into(),
                result: true,
                error: None,
            },
            Event::ConditionEvaluated {
                step: id("lo"),
                condition: ConditionKind::When,
                iteration: 0,
                expression: "steps.score.output.score < 70".into(),
                result: false,
                error: None,
            }
        ]
    );
    assert_eq!(called(&actions), ["hi"]);
    let st = g.fold();
    let lo = st.step(&id("lo")).unwrap();
    assert_eq!(
        (lo.status, lo.skip_reason, lo.condition),
        (
            StepStatus::Skipped,
            Some(SkipReason::Condition),
            Some(false)
        )
    );
    let tail = st.step(&id("lo_tail")).unwrap();
    assert_eq!(
        (tail.status, tail.skip_reason),
        (StepStatus::Skipped, Some(SkipReason::Unreachable))
    );
    g.push(executed("hi", "crm", json!("deal")));
    assert_eq!(
        calls(&g.decide(6)),
        [("end".into(), json!({"hi": "deal", "lo": null}))]
    );
    g.push(executed("end", "writer", json!("ok")));
    assert!(matches!(&g.appends(9).0[..], [Event::Completed]));
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Completed);
    // The results hold the steps that ran, in definition order.
    assert_eq!(
        st.results(),
        json!([
            {"step": 1, "id": "score", "output": {"score": 82}},
            {"step": 2, "id": "hi", "output": "deal"},
            {"step": 5, "id": "end", "output": "ok"}
        ])
    );

    // A low score: the other way round.
    let mut g = branches();
    g.push(Event::Started)
        .push(executed("score", "scorer", json!({"score": 10})));
    let (_, actions) = g.appends(5);
    assert_eq!(called(&actions), ["lo"]);
    assert_eq!(
        g.fold().step(&id("hi")).unwrap().skip_reason,
        Some(SkipReason::Condition)
    );
    g.push(executed("lo", "mail", json!("sent")));
    assert_eq!(calls(&g.decide(6)), [("lo_tail".into(), json!("sent"))]);
    g.push(executed("lo_tail", "mail", json!("again")));
    assert_eq!(
        calls(&g.decide(6)),
        [("end".into(), json!({"hi": null, "lo": "again"}))]
    );
}

#[test]
fn a_false_when_skips_the_step_and_every_step_after_it_only() {
    let mut g = Given::created(json!({"steps": [
        {"id": "a", "agent": "a"},
        {"id": "b", "agent": "b", "after": ["a"], "when": "steps.a.output.go"},
        {"id": "c", "agent": "c", "after": ["b"]},
        {"id": "d", "agent": "a", "after": ["c"]}
    ]}));
    g.push(Event::Started)
        .push(executed("a", "a", json!({"go": false})));
    let (events, actions) = g.appends(5);
    assert!(
        matches!(
            &events[..],
            [
                Event::ConditionEvaluated { result: false, .. },
                Event::Completed
            ]
        ),
        "{events:?}"
    );
    assert_eq!(actions, vec![]);
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Completed);
    let skipped: Vec<_> = st.steps.iter().map(|s| (s.status, s.skip_reason)).collect();
    assert_eq!(
        skipped,
        [
            (StepStatus::Completed, None),
            (StepStatus::Skipped, Some(SkipReason::Condition)),
            (StepStatus::Skipped, Some(SkipReason::Unreachable)),
            (StepStatus::Skipped, Some(SkipReason::Unreachable))
        ]
    );
    // A skipped step takes no result.
    let mut g = Given::created(json!({"steps": [
        {"id": "a", "agent": "a"},
        {"id": "b", "agent": "b", "after": ["a"], "when": "steps.a.output.go"},
        {"id": "c", "agent": "c"}
    ]}));
    g.push(Event::Started)
        .push(executed("a", "a", json!({"go": false})));
    g.appends(5);
    let mut st = Some(g.fold());
    assert!(apply(&mut st, &g.record(executed("b", "b", json!(1)))).is_err());
}

#[test]
fn a_when_with_no_boolean_value_fails_the_step() {
    let mut g = Given::created(json!({"steps": [
        {"id": "a", "agent": "a"},
        {"id": "b", "agent": "b", "after": ["a"], "when": "steps.a.output.missing > 1"}
    ]}));
    g.push(Event::Started)
        .push(executed("a", "a", json!({"x": 1})));
    let (events, _) = g.appends(5);
    let [
        Event::ConditionEvaluated {
            result: false,
            error: Some(_),
            ..
        },
        Event::Failed {
            step,
            agent: who,
            error,
        },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!((step, who), (&id("b"), &Some(agent("b"))));
    assert_eq!(error.kind, StepErrorKind::ConditionError);
    assert_eq!(g.fold().status, WorkflowStatus::Failed);
}

// ---------- templates ----------

#[test]
fn inputs_render_from_the_workflow_input_any_ancestor_and_the_parent() {
    let mut g = Given::created(json!({
        "input": {"topic": "AI", "tags": ["x", "y"]},
        "steps": [
            {"id": "a", "agent": "a",
             "input": {"t": "{{input.topic}}", "tag": "{{input.tags.1}}", "s": "about {{input.topic}}",
                       "all": "{{input}}"}},
            {"id": "b", "agent": "b", "after": ["a"],
             "input": {"prev": "{{previous_output}}"}},
            {"id": "c", "agent": "c", "after": ["b"],
             "input": {"title": "{{steps.a.output.title}}", "words": "{{steps.a.output.meta.words}}",
                       "missing": "{{steps.a.output.nope}}", "text": "{{steps.b.output}} ({{steps.a.output.meta.words}} words)"}}
        ]
    }));
    g.push(Event::Started);
    assert_eq!(
        calls(&g.decide(3)),
        [(
            "a".into(),
            json!({"t": "AI", "tag": "y", "s": "about AI", "all": {"topic": "AI", "tags": ["x", "y"]}})
        )]
    );
    g.push(executed(
        "a",
        "a",
        json!({"title": "T", "meta": {"words": 900}}),
    ));
    assert_eq!(
        calls(&g.decide(4)),
        [(
            "b".into(),
            json!({"prev": {"title": "T", "meta": {"words": 900}}})
        )]
    );
    g.push(executed("b", "b", json!("summary")));
    assert_eq!(
        calls(&g.decide(5)),
        [(
            "c".into(),
            json!({"title": "T", "words": 900, "missing": null, "text": "summary (900 words)"})
        )]
    );
}

// ---------- repeat ----------

fn looped(max_iterations: u32, on_exhausted: &str) -> Given {
    Given::created(json!({"steps": [
        {"id": "draft", "agent": "writer",
         "input": {"last": "{{steps.draft.output}}", "try": "{{iteration}}"},
         "repeat": {"until": "output.score >= 8", "max_iterations": max_iterations,
                    "on_exhausted": on_exhausted}},
        {"id": "publish", "agent": "pub", "after": ["draft"], "input": "{{previous_output}}"}
    ]}))
}

#[test]
fn a_loop_runs_until_its_condition_holds_and_keeps_every_output() {
    let mut g = looped(5, "fail");
    g.push(Event::Started);
    let wf = g.id;
    let key = |n: u32| format!("{wf}:draft:{n}");
    let [
        Action::CallAgent {
            iteration: 1,
            input,
            idempotency_key,
            ..
        },
    ] = &g.decide(3)[..]
    else {
        panic!()
    };
    assert_eq!(input, &json!({"last": null, "try": 1}));
    assert_eq!(idempotency_key, &key(1));
    g.push(executed_at("draft", 1, "writer", json!({"score": 5})));
    // Not done: the condition is evaluated (and recorded) first.
    assert_eq!(g.status("draft"), StepStatus::Pending);
    assert!(g.fold().step(&id("draft")).unwrap().until_pending);
    let (events, actions) = g.appends(4);
    assert_eq!(
        events,
        [Event::ConditionEvaluated {
            step: id("draft"),
            condition: ConditionKind::Until,
            iteration: 1,
            expression: "output.score >= 8".into(),
            result: false,
            error: None,
        }]
    );
    let [
        Action::CallAgent {
            iteration: 2,
            input,
            idempotency_key,
            ..
        },
    ] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(input, &json!({"last": {"score": 5}, "try": 2}));
    assert_eq!(idempotency_key, &key(2));
    // The same iteration cannot land twice.
    let mut st = Some(g.fold());
    let again = g.record(executed_at("draft", 1, "writer", json!({"score": 9})));
    assert!(apply(&mut st, &again).is_err());
    g.push(executed_at("draft", 2, "writer", json!({"score": 9})));
    let (events, actions) = g.appends(5);
    assert!(matches!(
        &events[..],
        [Event::ConditionEvaluated {
            iteration: 2,
            result: true,
            ..
        }]
    ));
    assert_eq!(calls(&actions), [("publish".into(), json!({"score": 9}))]);
    let st = g.fold();
    let draft = st.step(&id("draft")).unwrap();
    assert_eq!(draft.status, StepStatus::Completed);
    assert_eq!(draft.iteration, 2);
    assert_eq!(draft.iterations, [json!({"score": 5}), json!({"score": 9})]);
    assert_eq!(draft.output, Some(json!({"score": 9})));
}

#[test]
fn an_exhausted_loop_fails_or_goes_on_with_its_last_output() {
    for on_exhausted in ["fail", "continue"] {
        let mut g = looped(2, on_exhausted);
        g.push(Event::Started)
            .push(executed_at("draft", 1, "writer", json!({"score": 1})));
        g.appends(4);
        g.push(executed_at("draft", 2, "writer", json!({"score": 2})));
        let (events, actions) = g.appends(5);
        let st = g.fold();
        let draft = st.step(&id("draft")).unwrap();
        assert_eq!(draft.iterations.len(), 2);
        if on_exhausted == "fail" {
            let [
                Event::ConditionEvaluated { result: false, .. },
                Event::Failed { step, error, .. },
            ] = &events[..]
            else {
                panic!("{events:?}")
            };
            assert_eq!(step, &id("draft"));
            assert_eq!(error.kind, StepErrorKind::MaxIterations);
            assert_eq!(draft.status, StepStatus::Failed);
            assert_eq!(st.status, WorkflowStatus::Failed);
            assert_eq!(actions, vec![]);
        } else {
            assert!(matches!(
                &events[..],
                [Event::ConditionEvaluated { result: false, .. }]
            ));
            assert_eq!(draft.status, StepStatus::Completed);
            assert_eq!(draft.output, Some(json!({"score": 2})));
            assert_eq!(calls(&actions), [("publish".into(), json!({"score": 2}))]);
        }
    }
}

#[test]
fn a_resumed_loop_gets_its_iterations_again_under_new_keys() {
    let mut g = looped(1, "fail");
    g.push(Event::Started)
        .push(executed_at("draft", 1, "writer", json!({"score": 1})));
    g.appends(4);
    assert_eq!(g.fold().status, WorkflowStatus::Failed);
    g.push(Event::Started);
    let [
        Action::CallAgent {
            iteration: 2,
            input,
            idempotency_key,
            ..
        },
    ] = &g.decide(9)[..]
    else {
        panic!()
    };
    assert_eq!(input, &json!({"last": {"score": 1}, "try": 2}));
    assert_eq!(idempotency_key, &format!("{}:draft:2", g.id));
    g.push(executed_at("draft", 2, "writer", json!({"score": 9})));
    let (_, actions) = g.appends(10);
    assert_eq!(called(&actions), ["publish"]);
}

// ---------- wait and sleep ----------

fn approval(wait: Value) -> Given {
    Given::created(json!({"steps": [
        {"id": "ask", "agent": "a"},
        {"id": "approve", "after": ["ask"], "wait": wait},
        {"id": "act", "agent": "b", "after": ["approve"], "input": {"approval": "{{previous_output}}"}}
    ]}))
}

#[test]
fn a_wait_takes_the_signals_payload_as_its_output() {
    let mut g = approval(json!({"signal": "approved"}));
    g.push(Event::Started)
        .push(executed("ask", "a", json!("?")));
    assert_eq!(g.fold().status, WorkflowStatus::Running);
    let (events, actions) = g.appends(4);
    assert_eq!(
        events,
        [Event::StepWaiting {
            step: id("approve"),
            signal: Some("approved".into()),
            until: None,
        }]
    );
    assert_eq!(actions, vec![], "nothing to do, not even a wake-up");
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Waiting);
    assert_eq!(st.awaited_signals(), ["approved"]);
    assert_eq!(g.status("approve"), StepStatus::Waiting);
    // Another signal is refused, and so is a wait's end without one.
    let mut slot = Some(st.clone());
    let other = g.record(Event::SignalReceived {
        signal: "other".into(),
        payload: json!(1),
        key: None,
    });
    assert!(matches!(
        apply(&mut slot, &other),
        Err(Rejected::IllegalTransition { .. })
    ));
    // The signal: in the step's inbox, then its output.
    g.push(signal(json!({"by": "ana"}), Some("req-1")));
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Running);
    assert_eq!(st.seq, 4, "a signal takes no place in the chain");
    assert_eq!(
        st.step(&id("approve")).unwrap().inbox,
        Some(Inbox {
            payload: json!({"by": "ana"})
        })
    );
    assert!(st.awaited_signals().is_empty());
    let (events, actions) = g.appends(5);
    assert_eq!(
        events,
        [Event::WaitCompleted {
            step: id("approve"),
            reason: WaitEnd::Signal,
            output: json!({"by": "ana"}),
        }]
    );
    assert_eq!(
        calls(&actions),
        [("act".into(), json!({"approval": {"by": "ana"}}))]
    );
    let approve = g.fold().step(&id("approve")).unwrap().clone();
    assert_eq!(approve.status, StepStatus::Completed);
    assert_eq!(approve.inbox, None);
}

#[test]
fn a_signal_is_taken_once_by_event_and_by_key_and_by_every_step_waiting_for_it() {
    let mut g = Given::created(json!({"steps": [
        {"id": "one", "wait": {"signal": "approved"}},
        {"id": "two", "wait": {"signal": "approved"}},
        {"id": "after", "agent": "a", "after": ["one", "two"],
         "input": ["{{steps.one.output}}", "{{steps.two.output}}"]}
    ]}));
    g.push(Event::Started);
    g.appends(3);
    assert_eq!(g.fold().status, WorkflowStatus::Waiting);
    let first = g.record(signal(json!(1), Some("k")));
    g.push_record(first.clone());
    let st = g.fold();
    assert!(st.steps[..2].iter().all(|s| s.inbox.is_some()));
    // The same record again, or another with the same key: nothing.
    for r in [first, g.record(signal(json!(2), Some("k")))] {
        let mut slot = Some(st.clone());
        assert_eq!(apply(&mut slot, &r), Err(Rejected::Duplicate));
        assert_eq!(slot.as_ref(), Some(&st));
    }
    let (events, actions) = g.appends(4);
    assert_eq!(events.len(), 2);
    assert_eq!(calls(&actions), [("after".into(), json!([1, 1]))]);
}

#[test]
fn a_wait_that_times_out_fails_or_takes_its_timeout_output() {
    // Without a timeout_output: the step fails, and with it the workflow.
    let mut g = approval(json!({"signal": "approved", "timeout_ms": 5000}));
    g.push(Event::Started)
        .push(executed("ask", "a", json!("?")));
    let (events, actions) = g.appends(10);
    assert_eq!(
        events,
        [Event::StepWaiting {
            step: id("approve"),
            signal: Some("approved".into()),
            until: Some(t(15)),
        }]
    );
    assert_eq!(actions, [Action::WakeAt(t(15))]);
    assert_eq!(g.decide(14), [Action::WakeAt(t(15))]);
    let (events, _) = g.appends(15);
    let [
        Event::StepFailed {
            step,
            iteration: 1,
            agent: None,
            error,
            attempts: 0,
            duration_ms: 5000,
        },
        Event::Failed { .. },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(step, &id("approve"));
    assert_eq!(error.kind, StepErrorKind::WaitTimeout);
    assert_eq!(g.fold().status, WorkflowStatus::Failed);
    assert_eq!(g.status("act"), StepStatus::Skipped);

    // With one: the step completes with it.
    let mut g = approval(json!({"signal": "approved", "timeout_ms": 5000,
                                "timeout_output": {"approved": false}}));
    g.push(Event::Started)
        .push(executed("ask", "a", json!("?")));
    g.appends(10);
    let (events, actions) = g.appends(16);
    assert_eq!(
        events,
        [Event::WaitCompleted {
            step: id("approve"),
            reason: WaitEnd::Timeout,
            output: json!({"approved": false}),
        }]
    );
    assert_eq!(
        calls(&actions),
        [("act".into(), json!({"approval": {"approved": false}}))]
    );
}

#[test]
fn a_sleep_wakes_at_its_time() {
    let mut g = Given::created(json!({"steps": [
        {"id": "nap", "sleep_ms": 3000},
        {"id": "b", "agent": "b", "after": ["nap"]}
    ]}));
    g.push(Event::Started);
    let (events, actions) = g.appends(5);
    assert_eq!(
        events,
        [Event::StepWaiting {
            step: id("nap"),
            signal: None,
            until: Some(t(8)),
        }]
    );
    assert_eq!(actions, [Action::WakeAt(t(8))]);
    assert_eq!(g.fold().status, WorkflowStatus::Waiting);
    assert!(g.fold().awaited_signals().is_empty());
    assert_eq!(g.decide(7), [Action::WakeAt(t(8))]);
    let (events, actions) = g.appends(8);
    assert_eq!(
        events,
        [Event::WaitCompleted {
            step: id("nap"),
            reason: WaitEnd::Timer,
            output: Value::Null,
        }]
    );
    assert_eq!(called(&actions), ["b"]);
    assert_eq!(g.fold().status, WorkflowStatus::Running);
}

#[test]
fn the_earliest_time_is_the_wake_up_beside_the_calls() {
    let mut g = Given::created(json!({"timeout_ms": 60000, "steps": [
        {"id": "nap", "sleep_ms": 9000},
        {"id": "short", "sleep_ms": 2000},
        {"id": "b", "agent": "b"}
    ]}));
    g.push(Event::Started);
    let (events, actions) = g.appends(3);
    assert_eq!(events.len(), 2);
    let b_deadline = Some(t(62));
    assert!(matches!(
        &actions[..],
        [Action::CallAgent { deadline, .. }, Action::WakeAt(w)] if *deadline == b_deadline && *w == t(5)
    ));
    assert_eq!(g.fold().status, WorkflowStatus::Running, "b can run");
}

// ---------- pause and resume ----------

#[test]
fn a_paused_run_starts_no_call_but_takes_the_results_of_those_in_flight() {
    let mut g = Given::created(json!({"steps": [
        {"id": "a", "agent": "a"},
        {"id": "b", "agent": "b"},
        {"id": "c", "agent": "c", "after": ["a", "b"]}
    ]}));
    g.push(Event::Started);
    assert_eq!(called(&g.decide(3)), ["a", "b"]);
    let pause = g.record(Event::Paused);
    g.push_record(pause.clone());
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Paused);
    assert!(st.paused);
    assert_eq!(st.seq, 2, "a pause takes no place in the chain");
    assert_eq!(g.decide(4), vec![]);
    // A call made before the pause lands.
    g.push(executed("a", "a", json!("A")));
    assert_eq!(g.status("a"), StepStatus::Completed);
    assert_eq!(g.fold().status, WorkflowStatus::Paused);
    assert_eq!(g.decide(5), vec![]);
    // A second pause changes nothing (and is remembered).
    let before = g.fold();
    let mut slot = Some(before.clone());
    assert!(apply(&mut slot, &g.record(Event::Paused)).is_ok());
    let after = slot.unwrap();
    assert_eq!(
        (after.status, after.paused, after.seq),
        (before.status, before.paused, before.seq)
    );
    g.push(executed("b", "b", json!("B")));
    assert_eq!(g.decide(6), vec![], "c does not start while paused");
    g.push(Event::Resumed);
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Running);
    assert!(!st.paused);
    assert_eq!(called(&g.decide(7)), ["c"]);
    // The pause delivered again (the same event_id) changes nothing...
    let mut slot = Some(st.clone());
    assert_eq!(apply(&mut slot, &pause), Err(Rejected::Duplicate));
    assert_eq!(slot.as_ref(), Some(&st));
    // ...nor a resume of a run that is not paused (taken, a no-op); a new
    // pause counts.
    let mut slot = Some(st.clone());
    assert!(apply(&mut slot, &g.record(Event::Resumed)).is_ok());
    assert!(!slot.unwrap().paused);
    g.push(Event::Paused);
    assert_eq!(g.fold().status, WorkflowStatus::Paused);
}

#[test]
fn a_wait_moves_the_run_between_running_waiting_and_paused() {
    let mut g = approval(json!({"signal": "approved"}));
    g.push(Event::Started);
    let mut statuses = vec![g.fold().status];
    g.push(executed("ask", "a", json!("?")));
    statuses.push(g.fold().status);
    g.appends(4);
    statuses.push(g.fold().status);
    g.push(Event::Paused);
    statuses.push(g.fold().status);
    g.push(Event::Resumed);
    statuses.push(g.fold().status);
    g.push(signal(json!(true), None));
    statuses.push(g.fold().status);
    g.appends(6);
    statuses.push(g.fold().status);
    use WorkflowStatus::*;
    assert_eq!(
        statuses,
        [Running, Running, Waiting, Paused, Waiting, Running, Running]
    );
    assert!(WorkflowStatus::Waiting.is_active() && WorkflowStatus::Paused.is_active());
}

#[test]
fn a_cancel_ends_a_waiting_or_paused_run() {
    for pause in [false, true] {
        let mut g = approval(json!({"signal": "approved"}));
        g.push(Event::Started)
            .push(executed("ask", "a", json!("?")));
        g.appends(4);
        if pause {
            g.push(Event::Paused);
        }
        g.push(Event::CancelRequested);
        let (events, _) = g.appends(5);
        assert_eq!(events, [Event::Cancelled]);
        let st = g.fold();
        assert_eq!(st.status, WorkflowStatus::Cancelled);
        assert!(!st.paused);
        let approve = st.step(&id("approve")).unwrap();
        assert_eq!(
            (approve.status, approve.skip_reason),
            (StepStatus::Skipped, Some(SkipReason::Ended))
        );
    }
}

// ---------- resume after a failure ----------

#[test]
fn a_resume_reruns_the_failed_step_and_those_the_end_skipped_not_those_a_condition_skipped() {
    let mut g = Given::created(json!({"steps": [
        {"id": "a", "agent": "a"},
        {"id": "skip", "agent": "b", "after": ["a"], "when": "steps.a.output.n > 5"},
        {"id": "skip_child", "agent": "b", "after": ["skip"]},
        {"id": "bad", "agent": "c", "after": ["a"]},
        {"id": "bad_child", "agent": "c", "after": ["bad"]},
        {"id": "side", "agent": "a"},
        {"id": "gate", "after": ["a"], "wait": {"signal": "approved"}}
    ]}));
    g.push(Event::Started);
    assert_eq!(called(&g.decide(3)), ["a", "side"]);
    g.push(executed("a", "a", json!({"n": 1})));
    let (_, actions) = g.appends(4);
    assert_eq!(called(&actions), ["bad", "side"]);
    assert_eq!(g.status("gate"), StepStatus::Waiting);
    g.push(step_failed("bad", "c"));
    let (events, _) = g.appends(5);
    assert!(matches!(&events[..], [Event::Failed { .. }]));
    let st = g.fold();
    assert_eq!(st.status, WorkflowStatus::Failed);
    let reasons: Vec<_> = st
        .steps
        .iter()
        .map(|s| (s.id.to_string(), s.status, s.skip_reason))
        .collect();
    use StepStatus::*;
    assert_eq!(
        reasons,
        [
            ("a".into(), Completed, None),
            ("skip".into(), Skipped, Some(SkipReason::Condition)),
            ("skip_child".into(), Skipped, Some(SkipReason::Unreachable)),
            ("bad".into(), Failed, None),
            ("bad_child".into(), Skipped, Some(SkipReason::Ended)),
            ("side".into(), Skipped, Some(SkipReason::Ended)),
            ("gate".into(), Skipped, Some(SkipReason::Ended)),
        ]
    );
    g.push(Event::Started);
    let st = g.fold();
    assert_eq!(st.runs, 2);
    let statuses: Vec<_> = st.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            Completed, Skipped, Skipped, Pending, Pending, Pending, Pending
        ]
    );
    // The wait begins again first, then the failed step and the one the
    // end cut short are called; the condition is not evaluated again.
    let (events, actions) = g.appends(7);
    assert!(
        matches!(&events[..], [Event::StepWaiting { step, .. }] if *step == id("gate")),
        "{events:?}"
    );
    assert_eq!(called(&actions), ["bad", "side"]);
    assert!(
        actions.iter().all(|a| match a {
            Action::CallAgent {
                idempotency_key, ..
            } => idempotency_key.ends_with(":1"),
            _ => true,
        }),
        "a step whose call failed is called again under the same key"
    );
}

// ---------- found by the history properties ----------

/// Found by `histories.rs` (a workflow timeout on a graph with a `when`):
/// past the deadline, `decide` fails the first step that could start —
/// also one whose `when` has not been evaluated — with `step.failed`
/// (`workflow_timeout`), but the fold takes `step.failed` only for a step
/// that may start, and a step with a `when` may start only once it was
/// found true (`ready_step`): the record is refused
/// (`WrongStep { step: "b", why: "its condition has not been found true" }`),
/// so the actor appends a record that never counts and the run never ends.
/// Either decide evaluates the `when` first (or skips to another step), or
/// the fold takes a deadline's failure for a step whose `when` is due.
#[test]
fn past_the_deadline_a_step_whose_when_is_due_fails_by_a_record_that_fits() {
    let mut g = Given::created(json!({"timeout_ms": 10000, "steps": [
        {"id": "a", "agent": "a"},
        {"id": "b", "agent": "b", "after": ["a"], "when": "steps.a.output.ok"}
    ]}));
    g.push(Event::Started) // t(2): the deadline is t(12)
        .push(executed("a", "a", json!({"ok": true})));
    // decide at t(13): [Append(StepFailed { step: "b", iteration: 1,
    // agent: Some("b"), error: workflow_timeout, attempts: 0 })].
    for action in g.decide(13) {
        if let Action::Append { event, .. } = action {
            let mut st = Some(g.fold());
            let r = g.record(event);
            assert_eq!(apply(&mut st, &r), Ok(()), "{:?}", r.event);
        }
    }
}

/// Found by `histories.rs` (a workflow timeout on a loop): past the
/// deadline, right after an iteration (its `until` not yet evaluated),
/// `decide` fails the loop with `step.failed` for the next iteration, but
/// the fold takes `step.failed` only for a step that may start, which a
/// step whose `until` is due may not (`is_ready` is false while
/// `until_pending`): the record is refused (`WrongStep { step: "draft",
/// why: "it cannot start yet" }`) and the run never ends.
#[test]
fn past_the_deadline_a_loop_whose_until_is_due_fails_by_a_record_that_fits() {
    let mut g = Given::created(json!({"timeout_ms": 10000, "steps": [
        {"id": "draft", "agent": "a", "repeat": {"until": "output.ok", "max_iterations": 3}}
    ]}));
    g.push(Event::Started) // t(2): the deadline is t(12)
        .push(executed("draft", "a", json!({"ok": false})));
    // decide at t(13): [Append(StepFailed { step: "draft", iteration: 2,
    // agent: Some("a"), error: workflow_timeout, attempts: 0 })].
    for action in g.decide(13) {
        if let Action::Append { event, .. } = action {
            let mut st = Some(g.fold());
            let r = g.record(event);
            assert_eq!(apply(&mut st, &r), Ok(()), "{:?}", r.event);
        }
    }
}

/// Found writing the tests above: a loop's iteration ended (its `until`
/// due, `until_pending`) when another step failed — here the deadline
/// passed and `decide` failed the step listed first (`side`, ready) with
/// `workflow_timeout`; an actor that appends a call's result before it
/// decides again can do the same. `decide` then asks for
/// `workflow.failed`, and the end drops `until_pending` and skips the loop
/// (`Ended`). A resume then calls the loop's next iteration (`draft:2`)
/// without ever evaluating `until` on the first one's output, which here
/// held (`{"ok": true}`): the loop runs once more than its definition
/// says, and its output changes. Expected: the resume evaluates the
/// `until` that was due (and the loop completes without another call).
#[test]
fn a_resume_evaluates_the_until_that_was_due_when_the_run_failed() {
    let mut g = Given::created(json!({"timeout_ms": 10000, "steps": [
        {"id": "side", "agent": "b"},
        {"id": "draft", "agent": "a", "repeat": {"until": "output.ok", "max_iterations": 3}}
    ]}));
    g.push(Event::Started) // t(2): the deadline is t(12)
        .push(executed("draft", "a", json!({"ok": true})));
    // Past the deadline: side fails, then the workflow.
    let (events, _) = g.appends(13);
    assert!(
        matches!(
            &events[..],
            [Event::StepFailed { step, .. }, Event::Failed { .. }] if *step == id("side")
        ),
        "{events:?}"
    );
    g.push(Event::Started);
    // Today: [CallAgent side, CallAgent { step: "draft", iteration: 2 }, WakeAt(t(16))].
    let (events, actions) = g.appends(7);
    assert!(
        matches!(
            &events[..],
            [Event::ConditionEvaluated {
                condition: ConditionKind::Until,
                iteration: 1,
                result: true,
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(called(&actions), ["side"]);
}

// ---------- the cap on calls in flight ----------

fn running(g: &Given, default_cap: Option<usize>) -> Vec<String> {
    let st = g.fold();
    running_steps(&st, default_cap)
        .into_iter()
        .map(|i| st.steps[i].id.to_string())
        .collect()
}

fn decide_with(g: &Given, in_flight: &[&str], default_cap: Option<usize>) -> Vec<Action> {
    let in_flight: Vec<StepId> = in_flight.iter().map(|s| id(s)).collect();
    let ctx = Context {
        now: t(100),
        in_flight: &in_flight,
        default_cap,
    };
    decide(&g.fold(), ctx)
}

#[test]
fn under_max_concurrency_the_steps_ready_first_run_and_a_freed_place_goes_to_the_next() {
    // Given two roots under a cap of 2, and two steps after the first root
    // that come before the second root in the definition.
    let mut g = Given::created(json!({"max_concurrency": 2, "steps": [
        {"id": "root", "agent": "a"},
        {"id": "x1", "agent": "a", "after": ["root"]},
        {"id": "x2", "agent": "a", "after": ["root"]},
        {"id": "late", "agent": "b"}
    ]}));
    g.push(Event::Started);
    // Both roots run; with one in flight only the other starts.
    assert_eq!(running(&g, None), ["root", "late"]);
    assert_eq!(called(&decide_with(&g, &[], None)), ["root", "late"]);
    assert_eq!(called(&decide_with(&g, &["root"], None)), ["late"]);
    assert!(called(&decide_with(&g, &["root", "late"], None)).is_empty());
    // When root ends, `late` (in flight, ready since the start) keeps its
    // place; the freed one goes to x1, the first of the steps ready now.
    g.push(executed("root", "a", json!(1)));
    assert_eq!(running(&g, None), ["late", "x1"]);
    assert_eq!(called(&decide_with(&g, &["late"], None)), ["x1"]);
    assert_eq!(g.status("x2"), StepStatus::Pending);
    g.push(executed("late", "b", json!(2)));
    assert_eq!(running(&g, None), ["x1", "x2"]);
    assert_eq!(called(&decide_with(&g, &["x1"], None)), ["x2"]);
}

#[test]
fn the_server_cap_holds_when_the_workflow_sets_none() {
    let mut g = Given::created(json!({"steps": [
        {"id": "a", "agent": "a"}, {"id": "b", "agent": "a"}, {"id": "c", "agent": "a"}
    ]}));
    g.push(Event::Started);
    assert_eq!(running(&g, None), ["a", "b", "c"]);
    assert_eq!(running(&g, Some(1)), ["a"]);
    assert_eq!(called(&decide_with(&g, &[], Some(1))), ["a"]);
    assert!(called(&decide_with(&g, &["a"], Some(1))).is_empty());
}

#[test]
fn a_paused_run_runs_nothing_new_and_the_end_waits_for_the_calls_in_flight() {
    let mut g = Given::created(json!({"max_concurrency": 1, "steps": [
        {"id": "a", "agent": "a"}, {"id": "b", "agent": "a"}
    ]}));
    g.push(Event::Started);
    g.push(Event::Paused);
    assert!(running(&g, None).is_empty());
    assert!(called(&decide_with(&g, &[], None)).is_empty());
    g.push(Event::Resumed);
    assert_eq!(running(&g, None), ["a"]);
    // A cancel asked while `a`'s call runs ends the run only after it.
    g.push(Event::CancelRequested);
    assert!(decide_with(&g, &["a"], None).is_empty());
    assert!(matches!(
        &decide_with(&g, &[], None)[..],
        [Action::Append {
            event: Event::Cancelled,
            ..
        }]
    ));
    // Its result no longer fits once the run is cancelled.
    let st = g.fold();
    assert!(takes_result(&st, &id("a"), 1));
    g.push(Event::Cancelled);
    assert!(!takes_result(&g.fold(), &id("a"), 1));
}
