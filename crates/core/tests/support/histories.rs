//! Histories of one workflow's log as the system can write them: generated
//! from `decide` (what the actors do) and the API's commands, with the
//! faults of a real deployment injected — redeliveries anywhere, writers on
//! stale states after another took a seq, cancels, deadlines, resumes,
//! crashes between a call and its append. Shared by the property tests of
//! the fold (crates/core/tests/histories.rs) and of the projection
//! (crates/store/tests/projection.rs, which includes this file by path).
#![allow(dead_code)]

use std::collections::VecDeque;

use agentflow_core::*;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

/// How many engine actors may write the same workflow at once (an owner
/// and a zombie after a rebalance).
pub const WRITERS: u8 = 2;

/// One thing that happens to a workflow.
#[derive(Debug, Clone)]
pub enum Op {
    /// A user's execute, decided on the state `lag` records behind the log
    /// (the API reads a projection that may lag).
    Execute { lag: u8 },
    /// A user's cancel, decided the same way.
    Cancel { lag: u8 },
    /// Writer `w` decides on its own state and acts; an agent call ends
    /// with `outcome`.
    Act { w: u8, outcome: Outcome },
    /// Writer `w` reads up to `n` more records of the log (as its actor
    /// receives them from the supervisor: only those the fold applied).
    Catch { w: u8, n: u8 },
    /// Writer `w` crashes and recovers from the whole log.
    Restart { w: u8 },
    /// The record at `at` (modulo the log's length) is delivered again, at
    /// the end.
    Redeliver { at: u16 },
    /// Time passes (deadlines).
    Tick { secs: u16 },
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Answered,
    Failed,
    /// The process dies after the call, before its append.
    Crashed,
}

/// A workflow's definition and what happens to it.
#[derive(Debug, Clone)]
pub struct Script {
    pub steps: u8,
    pub timeout_ms: Option<u64>,
    pub ops: Vec<Op>,
}

pub fn arb_op() -> impl Strategy<Value = Op> {
    let w = 0..WRITERS;
    let outcome = prop_oneof![
        7 => Just(Outcome::Answered),
        2 => Just(Outcome::Failed),
        1 => Just(Outcome::Crashed),
    ];
    prop_oneof![
        14 => (0u8..3).prop_map(|lag| Op::Execute { lag: lag.saturating_sub(1) }),
        3 => (0u8..3).prop_map(|lag| Op::Cancel { lag: lag.saturating_sub(1) }),
        30 => (w.clone(), outcome).prop_map(|(w, outcome)| Op::Act { w, outcome }),
        25 => (w.clone(), 1u8..6).prop_map(|(w, n)| Op::Catch { w, n }),
        3 => w.prop_map(|w| Op::Restart { w }),
        5 => any::<u16>().prop_map(|at| Op::Redeliver { at }),
        3 => (1u16..8).prop_map(|secs| Op::Tick { secs }),
    ]
}

pub fn arb_script() -> impl Strategy<Value = Script> {
    (
        1u8..4,
        prop::option::weighted(0.3, Just(10_000u64)),
        prop::collection::vec(arb_op(), 0..80),
    )
        .prop_map(|(steps, timeout_ms, ops)| Script {
            steps,
            timeout_ms,
            ops,
        })
}

pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

/// An engine actor as `workflow_actor.rs` behaves: its own state, ahead of
/// the log by what it appended; a record at a seq it already has that is
/// not its own sends it back to the log's state.
#[derive(Default, Clone)]
struct Writer {
    view: Option<WorkflowState>,
    cursor: usize,
    unconfirmed: VecDeque<(u64, uuid::Uuid)>,
}

/// An agent call a writer made: its step, its input, and whether the log
/// had confirmed every record the writer appended (the engine's actor
/// calls only then; issue 11.4).
#[derive(Debug, Clone)]
pub struct Call {
    pub step: u32,
    pub input: serde_json::Value,
    pub confirmed: bool,
}

/// Runs `script` and returns the log it leaves.
pub fn run(id: WorkflowId, user: UserId, script: &Script) -> Vec<Record> {
    run_with_calls(id, user, script).0
}

/// Runs `script` and returns the log it leaves and the agent calls made.
pub fn run_with_calls(id: WorkflowId, user: UserId, script: &Script) -> (Vec<Record>, Vec<Call>) {
    let agents = ["a", "b", "c"];
    let tasks = (0..script.steps as usize)
        .map(|i| TaskDef {
            agent: AgentName::parse(agents[i]).unwrap(),
            input: if i == 0 {
                json!({"topic": "x"})
            } else {
                json!({"content": "{{previous_output}}"})
            },
            timeout_ms: None,
        })
        .collect();
    let mut sim = Sim {
        id,
        user,
        log: vec![],
        applied: vec![],
        head: None,
        writers: vec![Writer::default(); WRITERS as usize],
        now: 0,
        calls: 0,
        made: vec![],
    };
    sim.push(Record::new(
        id,
        user,
        1,
        t(0),
        Event::Created {
            name: "h".into(),
            tasks,
            timeout_ms: script.timeout_ms,
        },
    ));
    for op in &script.ops {
        sim.now += 1;
        sim.op(op);
    }
    (sim.log, sim.made)
}

struct Sim {
    id: WorkflowId,
    user: UserId,
    log: Vec<Record>,
    /// Whether the fold applied each record of the log.
    applied: Vec<bool>,
    /// The fold of the whole log.
    head: Option<WorkflowState>,
    writers: Vec<Writer>,
    now: i64,
    calls: u64,
    made: Vec<Call>,
}

impl Sim {
    fn push(&mut self, r: Record) {
        self.applied.push(apply(&mut self.head, &r).is_ok());
        self.log.push(r);
    }

    fn fold(&self, upto: usize) -> Option<WorkflowState> {
        let mut st = None;
        for r in &self.log[..upto] {
            let _ = apply(&mut st, r);
        }
        st
    }

    fn record(&self, st: &WorkflowState, event: Event) -> Record {
        let seq = st.seq + u64::from(event.is_chained());
        Record::new(self.id, self.user, seq, t(self.now), event).after(st.last_event_id)
    }

    fn op(&mut self, op: &Op) {
        match *op {
            Op::Execute { lag } => {
                let Some(st) = self.fold(self.log.len().saturating_sub(lag as usize)) else {
                    return;
                };
                if let Some(from_step) = st.start_step() {
                    let r = self.record(&st, Event::Started { from_step });
                    self.push(r);
                }
            }
            Op::Cancel { lag } => {
                let Some(st) = self.fold(self.log.len().saturating_sub(lag as usize)) else {
                    return;
                };
                let event = match st.status {
                    WorkflowStatus::Running if !st.cancel_requested => Event::CancelRequested,
                    WorkflowStatus::Pending | WorkflowStatus::Failed => Event::Cancelled,
                    _ => return,
                };
                let r = self.record(&st, event);
                self.push(r);
            }
            Op::Act { w, outcome } => self.act(w as usize, outcome),
            Op::Catch { w, n } => {
                for _ in 0..n {
                    self.catch_one(w as usize);
                }
            }
            Op::Restart { w } => self.restart(w as usize, self.log.len()),
            Op::Redeliver { at } => {
                let at = at as usize % self.log.len();
                let r = self.log[at].clone();
                // Not a cancel request into a later run than the one it was
                // asked in: the fold cannot tell it from a new request
                // (a known gap, see `a_cancel_request_delivered_again_in_a_
                // later_run_is_taken_for_a_new_one` in histories.rs).
                let run = |st: Option<WorkflowState>| st.map_or(0, |s| s.runs);
                if !r.event.is_chained() && run(self.fold(at + 1)) != run(self.head.clone()) {
                    return;
                }
                self.push(r);
            }
            Op::Tick { secs } => self.now += i64::from(secs),
        }
    }

    fn restart(&mut self, w: usize, upto: usize) {
        self.writers[w] = Writer {
            view: self.fold(upto),
            cursor: upto,
            unconfirmed: VecDeque::new(),
        };
    }

    /// The next record of the log reaches writer `w`, if the fold applied it
    /// (the supervisor forwards only those).
    fn catch_one(&mut self, w: usize) {
        let i = self.writers[w].cursor;
        if i >= self.log.len() {
            return;
        }
        self.writers[w].cursor += 1;
        if !self.applied[i] {
            return;
        }
        let rec = self.log[i].clone();
        let wr = &mut self.writers[w];
        let have = wr.view.as_ref().map_or(0, |s| s.seq);
        if rec.event.is_chained() && rec.seq <= have {
            while wr.unconfirmed.front().is_some_and(|(s, _)| *s < rec.seq) {
                wr.unconfirmed.pop_front();
            }
            if let Some((seq, own)) = wr.unconfirmed.front().copied()
                && seq == rec.seq
            {
                if own == rec.event_id {
                    wr.unconfirmed.pop_front();
                } else {
                    // Lost a race: back to the log's state.
                    self.restart(w, i + 1);
                }
            }
            return;
        }
        let _ = apply(&mut wr.view, &rec);
    }

    /// Writer `w` decides and acts, as `WorkflowActor::drive` does (also on
    /// an unconfirmed state, as the actor did before issue 11.4: the log
    /// must fold safely either way).
    fn act(&mut self, w: usize, outcome: Outcome) {
        let Some(st) = self.writers[w].view.clone() else {
            return;
        };
        let now = t(self.now);
        let event = match decide(&st, now) {
            None => return,
            Some(Action::Append { event, .. }) => event,
            Some(Action::CallAgent {
                step, agent, input, ..
            }) => {
                self.calls += 1;
                self.made.push(Call {
                    step,
                    input,
                    confirmed: self.writers[w].unconfirmed.is_empty(),
                });
                match outcome {
                    Outcome::Answered => Event::AgentExecuted {
                        step,
                        agent,
                        output: json!({"call": self.calls}),
                        attempts: 1,
                        duration_ms: 1,
                    },
                    Outcome::Failed => Event::StepFailed {
                        step,
                        agent,
                        error: StepError {
                            kind: StepErrorKind::ServerError,
                            message: "HTTP 503".into(),
                            http_status: Some(503),
                        },
                        attempts: 3,
                        duration_ms: 1,
                    },
                    Outcome::Crashed => {
                        self.restart(w, self.log.len());
                        return;
                    }
                }
            }
        };
        // The record and those that follow from it without a call, in one
        // append, each applied to the writer's own state.
        let mut view = Some(st);
        let mut event = event;
        for _ in 0..4 {
            let r = self.record(view.as_ref().unwrap(), event);
            apply(&mut view, &r).expect("a writer's own record fits its state");
            self.writers[w].unconfirmed.push_back((r.seq, r.event_id));
            self.push(r);
            match decide(view.as_ref().unwrap(), now) {
                Some(Action::Append { event: e, .. }) => event = e,
                _ => break,
            }
        }
        self.writers[w].view = view;
    }
}
