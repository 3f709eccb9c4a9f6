//! Properties of the fold over histories the system can really write
//! (see `support/histories.rs`, chains and small graphs): every prefix
//! folds, statuses follow the lifecycle and agree with `decide`, duplicates
//! change nothing, the audit trail folds to the same state, a cancel
//! request never outlives its run, and the commands (cancel, pause,
//! resume, signal), which take no place in the chain, leave a writer that
//! applied them after its own records where the log's fold is.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use agentflow_core::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use support::histories::{Call, Run, Script, Shape, arb_script, run_full};

fn fold(records: &[Record]) -> Option<WorkflowState> {
    let mut st = None;
    for r in records {
        let _ = apply(&mut st, r);
    }
    st
}

/// The legal status changes (`None`: the workflow does not exist yet).
fn legal(from: Option<WorkflowStatus>, to: WorkflowStatus) -> bool {
    use WorkflowStatus::*;
    match from {
        None => to == Pending,
        Some(from) if from == to => true,
        Some(Pending) => matches!(to, Running | Cancelled),
        // One run: running, waiting and paused turn into each other.
        Some(Running | Waiting | Paused) => {
            matches!(
                to,
                Running | Waiting | Paused | Completed | Failed | Cancelled
            )
        }
        Some(Failed) => matches!(to, Running | Cancelled),
        Some(Completed | Cancelled) => false,
    }
}

/// What `decide` says about a state must match its status: a waiting run
/// has nothing to do before a time (or a signal), a paused one starts no
/// call, a running one has something to do now.
fn check_status_against_decide(st: &WorkflowState) -> Result<(), TestCaseError> {
    // Before any timer or deadline of the run.
    let early = support::histories::t(0);
    let actions = decide(st, early);
    let wakes = actions
        .iter()
        .filter(|a| matches!(a, Action::WakeAt(_)))
        .count();
    let calls = actions
        .iter()
        .filter(|a| matches!(a, Action::CallAgent { .. }))
        .count();
    prop_assert!(
        !actions.iter().any(|a| matches!(a, Action::Append { .. })) || actions.len() == 1,
        "an append comes alone: {:?}",
        actions
    );
    prop_assert_eq!(st.paused, st.status == WorkflowStatus::Paused);
    match st.status {
        WorkflowStatus::Waiting => {
            prop_assert_eq!(wakes, actions.len(), "waiting, yet {:?}", actions);
            prop_assert!(!st.awaited_signals().is_empty() || wakes > 0);
        }
        WorkflowStatus::Paused => prop_assert_eq!(calls, 0, "paused, yet {:?}", actions),
        WorkflowStatus::Running => {
            prop_assert!(actions.len() > wakes, "running, yet nothing to do");
        }
        _ => prop_assert!(actions.is_empty(), "{:?}, yet {:?}", st.status, actions),
    }
    // Each call is for its step's next iteration, under its key.
    for a in &actions {
        if let Action::CallAgent {
            step,
            iteration,
            idempotency_key,
            ..
        } = a
        {
            let s = st.step(step).expect("a call for a step of the workflow");
            prop_assert_eq!(*iteration, s.iteration + 1);
            prop_assert_eq!(
                idempotency_key,
                &format!("{}:{step}:{iteration}", st.workflow_id)
            );
        }
    }
    Ok(())
}

/// Checks every property on one log; returns the statuses it went through.
fn check(log: &[Record]) -> Result<Vec<WorkflowStatus>, TestCaseError> {
    let mut st: Option<WorkflowState> = None;
    let mut seen = vec![];
    // A cancel request that counted in the current run.
    let mut accepted = false;
    for (i, r) in log.iter().enumerate() {
        let before = st.clone();
        let ok = apply(&mut st, r).is_ok();
        if !ok {
            prop_assert_eq!(&st, &before, "rejected record {} changed the state", i);
            continue;
        }
        let now = st.as_ref().expect("applied").clone();
        let was = before.as_ref().map(|s| s.status);
        prop_assert!(
            legal(was, now.status),
            "record {} ({}) moved {:?} -> {:?}",
            i,
            r.event_type(),
            was,
            now.status
        );
        if !r.event.is_chained() {
            // A command takes no place in the chain.
            let before = before.as_ref().expect("a command after the creation");
            prop_assert_eq!(now.seq, before.seq);
            prop_assert_eq!(now.last_event_id, before.last_event_id);
        }
        if !seen.contains(&now.status) {
            seen.push(now.status);
        }
        if now.cancel_requested {
            prop_assert!(now.status.is_active(), "a request while {:?}", now.status);
        }
        if matches!(
            r.event,
            Event::Started | Event::Completed | Event::Failed { .. } | Event::Cancelled
        ) {
            prop_assert!(!now.cancel_requested, "{} kept the request", r.event_type());
            prop_assert!(!now.paused, "{} kept the pause", r.event_type());
        }
        if r.event == Event::CancelRequested && was.is_some_and(WorkflowStatus::is_active) {
            accepted = true;
        }
        if was.is_some_and(WorkflowStatus::is_active) && !now.status.is_active() {
            if accepted {
                prop_assert_eq!(
                    now.status,
                    WorkflowStatus::Cancelled,
                    "an accepted cancel ended {:?}",
                    now.status
                );
            }
            accepted = false;
        }
        if now.status == WorkflowStatus::Completed {
            prop_assert!(now.steps.iter().all(|s| s.status.is_resolved()));
        }
        check_status_against_decide(&now)?;
        // decide never panics, on any state the log reaches, at any time.
        let _ = decide(&now, support::histories::t(1_000));
    }

    // A loop calls its next iteration only once its `until` was found
    // false (or without a value) on the iteration before.
    let applied: Vec<&Record> = {
        let mut st = None;
        log.iter().filter(|r| apply(&mut st, r).is_ok()).collect()
    };
    for (i, r) in applied.iter().enumerate() {
        if let Event::AgentExecuted {
            step,
            iteration: k @ 2..,
            ..
        } = &r.event
        {
            prop_assert!(
                applied[..i].iter().any(|e| matches!(
                    &e.event,
                    Event::ConditionEvaluated {
                        step: s,
                        condition: ConditionKind::Until,
                        iteration,
                        result: false,
                        ..
                    } if s == step && *iteration == k - 1
                )),
                "iteration {} of {} without the `until` of the one before",
                k,
                step
            );
        }
    }

    // The audit trail folds to the same state, and the records it marks
    // applied, alone, fold to it too, each one applied.
    let (trail, audited) = audit(log);
    prop_assert_eq!(&audited, &st);
    let kept: Vec<&Record> = log
        .iter()
        .zip(&trail)
        .filter(|(_, e)| e.applied)
        .map(|(r, _)| r)
        .collect();
    let mut again = None;
    for r in &kept {
        prop_assert!(
            apply(&mut again, r).is_ok(),
            "an applied record no longer applies alone"
        );
    }
    prop_assert_eq!(&again, &st);

    // Duplicates change nothing: without them (deduplicated by event_id, as
    // consumers are told to), or with any record delivered again right
    // after itself, or any chained record (or command the last run
    // applied) delivered again at the end.
    let mut ids = HashSet::new();
    let dedup: Vec<Record> = log
        .iter()
        .filter(|r| ids.insert(r.event_id))
        .cloned()
        .collect();
    prop_assert_eq!(&fold(&dedup), &st, "deduplicated log folds differently");
    let runs = st.as_ref().map_or(0, |s| s.runs);
    for (i, r) in log.iter().enumerate() {
        let mut twice = log.to_vec();
        twice.insert(i + 1, r.clone());
        prop_assert_eq!(&fold(&twice), &st, "record {} delivered twice in a row", i);
        // A command only if the fold applied it, in the same run (see the
        // known gaps at the end).
        let same_run = fold(&log[..=i]).map_or(0, |s| s.runs) == runs;
        if r.event.is_chained() || (same_run && trail[i].applied) {
            let mut late = log.to_vec();
            late.push(r.clone());
            prop_assert_eq!(&fold(&late), &st, "record {} delivered again at the end", i);
        }
    }
    // The fold is deterministic.
    prop_assert_eq!(&fold(log), &st);
    Ok(seen)
}

/// A writer (an engine actor) folds its own records as it appends them
/// and the commands as they reach it, so it may apply a command after
/// records the log holds after it. Once it has read the whole log and the
/// log confirmed all it appended, its state must be the log's, but for
/// the two ways this order can matter:
///
/// - a cancel request that reached the log before the writer's own end of
///   the run (issue 11.3): the log's fold ends the run cancelled, while
///   the writer already ended it and refused the request;
/// - a command the writer refused because its own record had ended the
///   run or the wait it was for (a pause, a resume or a signal reaching
///   the log just before the writer's record that made it moot): the
///   log's fold counts it among the commands it applied.
///
/// Returns how many views were compared and how many differed only in
/// those ways.
fn check_views(run: &Run) -> Result<(usize, usize), TestCaseError> {
    let mut excused = 0;
    for v in &run.views {
        let log = fold(&run.log[..v.upto]);
        let (Some(log), Some(view)) = (&log, &v.state) else {
            prop_assert_eq!(&log, &v.state);
            continue;
        };
        if log == view {
            continue;
        }
        let mut a = log.clone();
        let mut b = view.clone();
        // Commands one applied and the other refused as moot.
        a.commands.retain(|c| b.commands.contains(c));
        b.commands.retain(|c| a.commands.contains(c));
        a.signal_keys.retain(|k| b.signal_keys.contains(k));
        b.signal_keys.retain(|k| a.signal_keys.contains(k));
        if a.status == WorkflowStatus::Cancelled
            && matches!(b.status, WorkflowStatus::Completed | WorkflowStatus::Failed)
        {
            // Issue 11.3: the log's fold cancelled the run the writer ended.
            b.status = WorkflowStatus::Cancelled;
        }
        prop_assert_eq!(
            &a,
            &b,
            "writer {} read {} records and differs from the log",
            v.writer,
            v.upto
        );
        excused += 1;
    }
    Ok((run.views.len(), excused))
}

/// Calls made on states the log confirmed carry one input per key
/// (`{workflow_id}:{step}:{iteration}`); returns whether a call on an
/// unconfirmed state (what the actor did before issue 11.4) carried
/// another.
fn check_calls(calls: &[Call]) -> Result<bool, TestCaseError> {
    let mut input: BTreeMap<(&str, u32), &serde_json::Value> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.confirmed) {
        let first = *input
            .entry((c.step.as_str(), c.iteration))
            .or_insert(&c.input);
        prop_assert_eq!(
            first,
            &c.input,
            "two inputs under key :{}:{}",
            c.step,
            c.iteration
        );
    }
    Ok(calls.iter().any(|c| {
        !c.confirmed
            && input
                .get(&(c.step.as_str(), c.iteration))
                .is_some_and(|i| *i != &c.input)
    }))
}

/// Every record the system writes validates against the log's schema.
fn check_schema(log: &[Record]) -> Result<(), TestCaseError> {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let v = SCHEMA.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/record.schema.json"
        );
        let schema = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).expect("schema compiles")
    });
    for r in log {
        let j = r.to_json();
        let errors: Vec<String> = v.iter_errors(&j).map(|e| e.to_string()).collect();
        prop_assert!(errors.is_empty(), "{:?}\n{:#}", errors, j);
    }
    Ok(())
}

fn check_script(script: &Script) -> Result<Vec<WorkflowStatus>, TestCaseError> {
    let run = run_full(WorkflowId::new(), UserId(7), script);
    check_calls(&run.calls)?;
    check_views(&run)?;
    check_schema(&run.log)?;
    check(&run.log)
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn histories_of_actors_commands_and_faults_fold_by_the_rules(script in arb_script()) {
        check_script(&script)?;
    }
}

/// The kind of a shape, for the coverage figures.
fn kind(shape: Shape) -> &'static str {
    match shape {
        Shape::Chain(_) => "chain",
        Shape::FanOut => "fan-out",
        Shape::Branch => "branch",
        Shape::Loop { .. } => "loop",
        Shape::Wait { .. } => "wait",
        Shape::Sleep => "sleep",
    }
}

/// How much of the state space the generator reaches: the share of
/// histories that reach each status at some point, and that end in it;
/// how often each shape completes; how often the graph-only records and
/// endings happen. Printed with `--nocapture`; the floors keep a change of
/// the generator from silently shrinking it.
#[test]
fn generated_histories_reach_every_status() {
    const CASES: usize = 2000;
    let mut runner = TestRunner::deterministic();
    let strategy = arb_script();
    let mut reached: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ended: BTreeMap<&str, usize> = BTreeMap::new();
    // Per shape kind: histories, and those that completed.
    let mut shapes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    // Histories with at least one applied record of each kind.
    let mut happened: BTreeMap<&str, usize> = BTreeMap::new();
    let mut records = 0;
    let mut ignored = 0;
    let mut raced = 0;
    let mut unconfirmed_differs = 0;
    let (mut views, mut excused) = (0, 0);
    let mut inflight = 0;
    for _ in 0..CASES {
        let script = strategy.new_tree(&mut runner).unwrap().current();
        let run = run_full(WorkflowId::new(), UserId(7), &script);
        if check_calls(&run.calls).unwrap_or_else(|e| panic!("{e}\n{script:?}")) {
            unconfirmed_differs += 1;
        }
        check_schema(&run.log).unwrap_or_else(|e| panic!("{e}\n{script:?}"));
        let (v, e) = check_views(&run).unwrap_or_else(|e| panic!("{e}\n{script:?}"));
        views += v;
        excused += e;
        inflight += usize::from(run.inflight_results > 0);
        let log = &run.log;
        let (trail, st) = audit(log);
        records += log.len();
        ignored += trail.iter().filter(|e| !e.applied).count();
        // The race of issue 11.3: a request counted, then the actor's
        // `workflow.failed` or `workflow.completed` decided without it.
        let counted: Vec<&str> = trail
            .iter()
            .filter(|e| e.applied)
            .map(|e| e.event_type)
            .collect();
        if counted
            .windows(2)
            .any(|w| w[0] == "workflow.cancel_requested" && w[1] != "workflow.cancelled")
            && counted
                .iter()
                .skip_while(|t| **t != "workflow.cancel_requested")
                .any(|t| matches!(*t, "workflow.failed" | "workflow.completed"))
        {
            raced += 1;
        }
        let mut kinds: Vec<&str> = vec![];
        let mut paused = false;
        for (r, _) in log.iter().zip(&trail).filter(|(_, e)| e.applied) {
            let was_paused = paused;
            match r.event {
                Event::Paused => paused = true,
                Event::Resumed
                | Event::Started
                | Event::Completed
                | Event::Failed { .. }
                | Event::Cancelled => paused = false,
                _ => {}
            }
            kinds.push(match &r.event {
                Event::AgentExecuted { .. } if was_paused => "a call's result while paused",
                Event::ConditionEvaluated {
                    condition: ConditionKind::When,
                    result: false,
                    error: None,
                    ..
                } => "a `when` false",
                Event::ConditionEvaluated { error: Some(_), .. } => "a condition with no value",
                Event::ConditionEvaluated {
                    condition: ConditionKind::Until,
                    result: false,
                    ..
                } => "an `until` false (another iteration)",
                Event::AgentExecuted { iteration: 2.., .. } => "a second iteration",
                Event::Failed { error, .. } if error.kind == StepErrorKind::MaxIterations => {
                    "a loop exhausted"
                }
                Event::SignalReceived { .. } => "a signal",
                Event::WaitCompleted {
                    reason: WaitEnd::Signal,
                    ..
                } => "a wait ended by its signal",
                Event::WaitCompleted {
                    reason: WaitEnd::Timeout,
                    ..
                } => "a wait ended by its timeout_output",
                Event::WaitCompleted {
                    reason: WaitEnd::Timer,
                    ..
                } => "a sleep woke",
                Event::StepFailed { error, .. } if error.kind == StepErrorKind::WaitTimeout => {
                    "a wait timed out"
                }
                Event::Paused => "a pause",
                Event::Resumed => "a resume",
                _ => continue,
            });
        }
        if st.as_ref().is_some_and(|s| {
            s.steps
                .iter()
                .any(|x| x.skip_reason == Some(SkipReason::Unreachable))
        }) {
            kinds.push("a step unreachable");
        }
        if st.as_ref().is_some_and(|s| {
            s.steps.iter().any(|x| {
                x.iterations.len() > 1
                    && x.status == StepStatus::Completed
                    && x.output
                        .as_ref()
                        .is_some_and(|o| o["v"].as_u64().unwrap_or(0) % 2 == 1)
            })
        }) {
            kinds.push("a loop exhausted, going on");
        }
        if st
            .as_ref()
            .is_some_and(|s| s.runs > 1 && s.status == WorkflowStatus::Completed)
        {
            kinds.push("a resumed run completed");
        }
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            *happened.entry(k).or_default() += 1;
        }
        let seen = check(log).unwrap_or_else(|e| panic!("{e}\n{script:?}"));
        let shape = shapes.entry(kind(script.shape)).or_default();
        shape.0 += 1;
        if seen.contains(&WorkflowStatus::Completed) {
            shape.1 += 1;
        }
        for s in seen {
            *reached.entry(s.as_str()).or_default() += 1;
        }
        *ended.entry(st.unwrap().status.as_str()).or_default() += 1;
    }
    let pct = |n: usize| 100.0 * n as f64 / CASES as f64;
    println!(
        "{CASES} histories, {:.1} records each, {:.1}% of records ignored by the fold",
        records as f64 / CASES as f64,
        100.0 * ignored as f64 / records as f64
    );
    println!(
        "a cancel request racing the actor's end (issue 11.3) in {:.1}%",
        pct(raced)
    );
    println!(
        "a call on an unconfirmed state with another input than the key's (issue 11.4) in {:.1}%",
        pct(unconfirmed_differs)
    );
    println!(
        "{views} caught-up writer states compared with the log's, {excused} differing only by a moot command or the issue 11.3 race"
    );
    println!(
        "the result of a call kept in flight appended in {:.1}%",
        pct(inflight)
    );
    for s in WorkflowStatus::ALL {
        let (r, e) = (
            reached.get(s.as_str()).copied().unwrap_or(0),
            ended.get(s.as_str()).copied().unwrap_or(0),
        );
        println!(
            "{:>10}: reached in {:5.1}%, final in {:5.1}%",
            s.as_str(),
            pct(r),
            pct(e)
        );
    }
    for (k, (n, done)) in &shapes {
        println!(
            "{k:>10}: {:5.1}% of histories, completed in {:5.1}% of them",
            pct(*n),
            100.0 * *done as f64 / *n as f64
        );
    }
    for (k, n) in &happened {
        println!("{:5.1}%: {k}", pct(*n));
    }
    for (s, floor) in [
        ("running", 60.0),
        ("waiting", 5.0),
        ("paused", 5.0),
        ("completed", 15.0),
        ("failed", 15.0),
        ("cancelled", 15.0),
    ] {
        let r = pct(reached.get(s).copied().unwrap_or(0));
        assert!(r >= floor, "{s} reached in only {r:.1}% of histories");
    }
    assert!(
        pct(inflight) >= 5.0,
        "calls kept in flight in {:.1}%",
        pct(inflight)
    );
    for (k, (n, done)) in &shapes {
        let r = 100.0 * *done as f64 / *n as f64;
        assert!(r >= 10.0, "{k} completed in only {r:.1}% of its histories");
    }
    for k in [
        "a `when` false",
        "a condition with no value",
        "an `until` false (another iteration)",
        "a second iteration",
        "a loop exhausted",
        "a loop exhausted, going on",
        "a signal",
        "a wait ended by its signal",
        "a wait ended by its timeout_output",
        "a wait timed out",
        "a sleep woke",
        "a pause",
        "a resume",
        "a call's result while paused",
        "a step unreachable",
        "a resumed run completed",
    ] {
        let r = pct(happened.get(k).copied().unwrap_or(0));
        assert!(r >= 0.25, "{k} in only {r:.2}% of histories");
    }
}

/// Known gap, found by the property above: `workflow.cancel_requested`
/// takes no place in the chain, so the fold cannot tell a request asked in
/// an earlier run from one of the current run: a request that reached the
/// log too late for its run is rejected, and the same record delivered
/// again after a resume cancels the new run. Kafka itself never re-delivers a record at a later offset (the
/// engine and the projector follow offsets), and consumers are told to
/// deduplicate by `event_id`; a fix needs the run a request was asked in
/// (in its data, or the state's first seq of the run), which changes the
/// record's schema and the projection's columns. Left for a follow-up.
#[test]
#[ignore = "known gap: a cancel request redelivered into a later run (issue 11 follow-up)"]
fn a_cancel_request_delivered_again_in_a_later_run_is_taken_for_a_new_one() {
    use chrono::{TimeZone, Utc};
    let id = WorkflowId::new();
    let a = AgentName::parse("a").unwrap();
    let at = |s| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
    let mut log: Vec<Record> = vec![Record::new(
        id,
        UserId(1),
        1,
        at(0),
        Event::Created {
            name: "w".into(),
            steps: vec![StepDef::of_task(
                1,
                TaskDef {
                    agent: a.clone(),
                    input: serde_json::json!({}),
                    timeout_ms: None,
                },
            )],
            input: serde_json::json!({}),
            timeout_ms: None,
            max_concurrency: None,
        },
    )];
    let chain = |log: &mut Vec<Record>, ev: Event| {
        let prev = log
            .iter()
            .rev()
            .find(|r| r.event.is_chained())
            .unwrap()
            .clone();
        let seq = prev.seq + u64::from(ev.is_chained());
        log.push(Record::new(id, UserId(1), seq, at(log.len() as i64), ev).after(prev.event_id));
    };
    let error = StepError {
        kind: StepErrorKind::ServerError,
        message: "x".into(),
        http_status: None,
    };
    chain(&mut log, Event::Started);
    // A user asks to cancel run 1 (seq 2); the request reaches the log
    // after run 1 failed, and is rejected: there is nothing to cancel.
    let mut asked = log.clone();
    chain(&mut asked, Event::CancelRequested);
    let request = asked.last().unwrap().clone();
    chain(
        &mut log,
        Event::StepFailed {
            step: StepId::of_task(1),
            iteration: 1,
            agent: Some(a.clone()),
            error: error.clone(),
            attempts: 1,
            duration_ms: 1,
        },
    );
    chain(
        &mut log,
        Event::Failed {
            step: StepId::of_task(1),
            agent: Some(a.clone()),
            error,
        },
    );
    log.push(request.clone());
    chain(&mut log, Event::Started);
    let run2 = fold(&log).unwrap();
    assert!(!run2.cancel_requested);
    // Delivered again in run 2 it must change nothing; today it cancels run 2.
    log.push(request);
    assert_eq!(fold(&log).unwrap(), run2);
}

/// A pause sent twice (two API nodes, both seeing the run unpaused) is
/// taken twice, the second a no-op the fold records; delivered again after
/// a resume it is known and changes nothing.
#[test]
fn a_pause_delivered_again_after_a_resume_changes_nothing() {
    use chrono::{TimeZone, Utc};
    let id = WorkflowId::new();
    let at = |s| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
    let def =
        WorkflowDefinition::parse(&serde_json::json!({"name": "w", "tasks": [{"agent": "a"}]}))
            .unwrap();
    let created = Record::new(
        id,
        UserId(1),
        1,
        at(0),
        Event::Created {
            name: def.name,
            steps: def.steps,
            input: def.input,
            timeout_ms: None,
            max_concurrency: None,
        },
    );
    let started = Record::new(id, UserId(1), 2, at(1), Event::Started).after(created.event_id);
    let parent = started.event_id;
    let command = |ev: Event, s: i64| Record::new(id, UserId(1), 2, at(s), ev).after(parent);
    let (first, second) = (command(Event::Paused, 2), command(Event::Paused, 3));
    let mut log = vec![created, started, first, second.clone()];
    let mut st = None;
    let applied: Vec<bool> = log.iter().map(|r| apply(&mut st, r).is_ok()).collect();
    assert_eq!(
        applied,
        [true, true, true, true],
        "the second pause is taken, and changes nothing"
    );
    log.push(command(Event::Resumed, 4));
    let resumed = fold(&log).unwrap();
    assert_eq!(resumed.status, WorkflowStatus::Running);
    // Delivered again it changes nothing.
    log.push(second);
    assert_eq!(fold(&log).unwrap(), resumed);
}
