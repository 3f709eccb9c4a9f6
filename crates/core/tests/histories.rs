//! Properties of the fold over histories the system can really write
//! (see `support/histories.rs`): every prefix folds, statuses follow the
//! lifecycle, duplicates change nothing, the audit trail folds to the same
//! state, and a cancel request never outlives its run.

mod support;

use std::collections::{BTreeMap, HashSet};

use agentflow_core::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use support::histories::{Call, Script, arb_script, run_with_calls};

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
        Some(Running) => matches!(to, Completed | Failed | Cancelled),
        Some(Failed) => matches!(to, Running | Cancelled),
        Some(Completed | Cancelled) => false,
    }
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
        if !seen.contains(&now.status) {
            seen.push(now.status);
        }
        if now.cancel_requested {
            prop_assert_eq!(now.status, WorkflowStatus::Running);
        }
        if matches!(
            r.event,
            Event::Started { .. } | Event::Completed | Event::Failed { .. } | Event::Cancelled
        ) {
            prop_assert!(!now.cancel_requested, "{} kept the request", r.event_type());
        }
        if r.event == Event::CancelRequested && was == Some(WorkflowStatus::Running) {
            accepted = true;
        }
        if was == Some(WorkflowStatus::Running) && now.status != WorkflowStatus::Running {
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
        // decide never panics, on any state the log reaches.
        let _ = decide(&now, support::histories::t(1_000));
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
    // consumers are told to), or with any chained record delivered again
    // right after itself or at the end.
    let mut ids = HashSet::new();
    let dedup: Vec<Record> = log
        .iter()
        .filter(|r| ids.insert(r.event_id))
        .cloned()
        .collect();
    prop_assert_eq!(&fold(&dedup), &st, "deduplicated log folds differently");
    for (i, r) in log.iter().enumerate().filter(|(_, r)| r.event.is_chained()) {
        let mut twice = log.to_vec();
        twice.insert(i + 1, r.clone());
        prop_assert_eq!(&fold(&twice), &st, "record {} delivered twice in a row", i);
        let mut late = log.to_vec();
        late.push(r.clone());
        prop_assert_eq!(&fold(&late), &st, "record {} delivered again at the end", i);
    }
    // The fold is deterministic.
    prop_assert_eq!(&fold(log), &st);
    Ok(seen)
}

/// Calls made on states the log confirmed carry one input per key
/// (`{workflow_id}:{step}`); returns whether a call on an unconfirmed
/// state (what the actor did before issue 11.4) carried another.
fn check_calls(calls: &[Call]) -> Result<bool, TestCaseError> {
    let mut input: BTreeMap<u32, &serde_json::Value> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.confirmed) {
        let first = *input.entry(c.step).or_insert(&c.input);
        prop_assert_eq!(first, &c.input, "two inputs under key :{}", c.step);
    }
    Ok(calls
        .iter()
        .any(|c| !c.confirmed && input.get(&c.step).is_some_and(|i| *i != &c.input)))
}

fn check_script(script: &Script) -> Result<Vec<WorkflowStatus>, TestCaseError> {
    let (log, calls) = run_with_calls(WorkflowId::new(), UserId(7), script);
    check_calls(&calls)?;
    check(&log)
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn histories_of_actors_commands_and_faults_fold_by_the_rules(script in arb_script()) {
        check_script(&script)?;
    }
}

/// How much of the state space the generator reaches: the share of
/// histories that reach each status at some point, and that end in it.
/// Printed with `--nocapture`; the floors keep a change of the generator
/// from silently shrinking it.
#[test]
fn generated_histories_reach_every_status() {
    const CASES: usize = 2000;
    let mut runner = TestRunner::deterministic();
    let strategy = arb_script();
    let mut reached: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ended: BTreeMap<&str, usize> = BTreeMap::new();
    let mut records = 0;
    let mut ignored = 0;
    let mut raced = 0;
    let mut unconfirmed_differs = 0;
    for _ in 0..CASES {
        let script = strategy.new_tree(&mut runner).unwrap().current();
        let (log, calls) = run_with_calls(WorkflowId::new(), UserId(7), &script);
        if check_calls(&calls).unwrap_or_else(|e| panic!("{e}\n{script:?}")) {
            unconfirmed_differs += 1;
        }
        let (trail, st) = audit(&log);
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
        let seen = check(&log).unwrap_or_else(|e| panic!("{e}\n{script:?}"));
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
    for (s, floor) in [
        ("running", 60.0),
        ("completed", 15.0),
        ("failed", 15.0),
        ("cancelled", 15.0),
    ] {
        let r = pct(reached.get(s).copied().unwrap_or(0));
        assert!(r >= floor, "{s} reached in only {r:.1}% of histories");
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
            tasks: vec![TaskDef {
                agent: a.clone(),
                input: serde_json::json!({}),
                timeout_ms: None,
            }],
            timeout_ms: None,
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
    chain(&mut log, Event::Started { from_step: 1 });
    // A user asks to cancel run 1 (seq 2); the request reaches the log
    // after run 1 failed, and is rejected: there is nothing to cancel.
    let mut asked = log.clone();
    chain(&mut asked, Event::CancelRequested);
    let request = asked.last().unwrap().clone();
    chain(
        &mut log,
        Event::StepFailed {
            step: 1,
            agent: a.clone(),
            error: error.clone(),
            attempts: 1,
            duration_ms: 1,
        },
    );
    chain(
        &mut log,
        Event::Failed {
            step: 1,
            agent: a.clone(),
            error,
        },
    );
    log.push(request.clone());
    chain(&mut log, Event::Started { from_step: 1 });
    let run2 = fold(&log).unwrap();
    assert!(!run2.cancel_requested);
    // Delivered again in run 2 it must change nothing; today it cancels run 2.
    log.push(request);
    assert_eq!(fold(&log).unwrap(), run2);
}
