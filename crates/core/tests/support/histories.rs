//! Histories of one workflow's log as the system can write them: generated
//! from `decide` (what the actors do) and the API's commands, with the
//! faults of a real deployment injected — redeliveries anywhere, writers on
//! stale states after another took a seq, calls kept in flight while
//! others end, cancels, pauses, signals, deadlines, timers, resumes,
//! crashes between a call and its append or after it.
//! Workflows are chains (the guide's `tasks`) or small graphs: a fan-out
//! joined again, exclusive `when` branches, a `repeat` loop, a wait for a
//! signal, a sleep. Shared by the property tests of the fold
//! (crates/core/tests/histories.rs) and of the projection
//! (crates/store/tests/projection.rs, which includes this file by path).
#![allow(dead_code)]

use std::collections::VecDeque;

use agentflow_core::*;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// How many engine actors may write the same workflow at once (an owner
/// and a zombie after a rebalance).
pub const WRITERS: u8 = 2;

/// The server's cap on a run's calls in flight (`max_concurrent_steps`) the
/// writers are given: the fan-out's two branches, and a step beside another,
/// run one at a time.
pub const DEFAULT_CAP: Option<usize> = Some(1);

/// The signal the wait steps of [`Shape::Wait`] wait for.
pub const SIGNAL: &str = "ok";

/// One thing that happens to a workflow.
#[derive(Debug, Clone)]
pub enum Op {
    /// A user's execute, decided on the state `lag` records behind the log
    /// (the API reads a projection that may lag).
    Execute { lag: u8 },
    /// A user's cancel, decided the same way.
    Cancel { lag: u8 },
    /// A user's pause, decided the same way.
    Pause { lag: u8 },
    /// A user's resume (of a paused run), decided the same way.
    Resume { lag: u8 },
    /// A user sends the signal [`SIGNAL`] (decided the same way: only while
    /// a step waits for it), with the request key `k{key}` when `Some`, so
    /// that a retried request repeats a key.
    Signal { lag: u8, key: Option<u8> },
    /// Writer `w` decides on its own state and acts: it appends the first
    /// record `decide` asks for, or (when `pick` is even) ends one of its
    /// calls in flight with `outcome`, or makes one of the agent calls
    /// `decide` asks for (the `pick`th, modulo their number) and ends it at
    /// once with `outcome`.
    Act { w: u8, outcome: Outcome, pick: u8 },
    /// Writer `w` makes one of the agent calls `decide` asks for and keeps
    /// it in flight (its result comes with a later [`Op::Act`]).
    Call { w: u8, pick: u8 },
    /// Writer `w` reads up to `n` more records of the log (as its actor
    /// receives them from the supervisor: only those the fold applied).
    Catch { w: u8, n: u8 },
    /// Writer `w` crashes and recovers from the whole log.
    Restart { w: u8 },
    /// The record at `at` (modulo the log's length) is delivered again, at
    /// the end.
    Redeliver { at: u16 },
    /// Time passes (deadlines, sleeps, wait timeouts).
    Tick { secs: u16 },
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Answered,
    Failed,
    /// The process dies after the call, before its append.
    Crashed,
    /// The call is answered and its result appended, then the process dies
    /// before it appends the records that follow from it.
    Interrupted,
}

/// The workflow a script runs. Agent outputs are `{"call": n, "v": v}`,
/// `n` counting the calls of the whole history and `v` the `pick` of the
/// [`Op::Act`] that made the call, so the conditions below go one way or
/// the other depending on the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The guide's `tasks`: a chain of 1 to 3 agents, each given the
    /// previous output.
    Chain(u8),
    /// Two agent steps at once (`left`, `right`), both read by `join`.
    FanOut,
    /// `score`, then exactly one of `hi` (`v % 5` is 0 or 1) and `lo` (2
    /// or 3; `lo`'s `when` has no boolean value when it is 4), `lo`
    /// followed by `lo_tail`; `end` after `hi` and `lo_tail`.
    Branch,
    /// `draft` repeats until its `v` is even, at most twice
    /// (then fails, or goes on with its last output), `side` beside it;
    /// `publish` after both.
    Loop { continue_when_exhausted: bool },
    /// `ask`, then `approve` waits for [`SIGNAL`] at most 6 s (then fails,
    /// or takes a default output), with `also` waiting for the same signal
    /// beside it when `twice`; `act` after them.
    Wait { timeout_output: bool, twice: bool },
    /// `first`, then `nap` sleeps 3 s beside `side` (an agent); `last`
    /// after both.
    Sleep,
}

impl Shape {
    /// The definition, as a user submits it.
    pub fn body(self) -> Value {
        let steps = match self {
            Shape::Chain(n) => {
                let tasks: Vec<Value> = ["a", "b", "c"][..n.clamp(1, 3) as usize]
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        if i == 0 {
                            json!({"agent": a, "input": {"topic": "x"}})
                        } else {
                            json!({"agent": a, "input": {"content": "{{previous_output}}"}})
                        }
                    })
                    .collect();
                return json!({"name": "h", "tasks": tasks});
            }
            Shape::FanOut => json!([
                {"id": "left", "agent": "a", "input": {"topic": "{{input.topic}}"}},
                {"id": "right", "agent": "b"},
                {"id": "join", "agent": "c", "after": ["left", "right"],
                 "input": {"l": "{{steps.left.output}}", "r": "{{steps.right.output.call}}"}}
            ]),
            Shape::Branch => json!([
                {"id": "score", "agent": "a"},
                {"id": "hi", "agent": "b", "after": ["score"],
                 "when": "steps.score.output.v % 5 < 2"},
                {"id": "lo", "agent": "c", "after": ["score"],
                 "when": "steps.score.output.v % 5 >= 2 && (steps.score.output.v % 5 < 4 || steps.score.output.nope)"},
                {"id": "lo_tail", "agent": "a", "after": ["lo"], "input": "{{previous_output}}"},
                {"id": "end", "agent": "b", "after": ["hi", "lo_tail"],
                 "input": {"hi": "{{steps.hi.output}}", "lo": "{{steps.lo_tail.output}}"}}
            ]),
            Shape::Loop {
                continue_when_exhausted,
            } => json!([
                {"id": "draft", "agent": "a",
                 "input": {"last": "{{steps.draft.output}}", "try": "{{iteration}}"},
                 "repeat": {"until": "output.v % 2 == 0", "max_iterations": 2,
                            "on_exhausted": if continue_when_exhausted { "continue" } else { "fail" }}},
                {"id": "side", "agent": "c"},
                {"id": "publish", "agent": "b", "after": ["draft", "side"],
                 "input": {"draft": "{{steps.draft.output}}", "side": "{{steps.side.output}}"}}
            ]),
            Shape::Wait {
                timeout_output,
                twice,
            } => {
                let mut wait = json!({"signal": SIGNAL, "timeout_ms": 6000});
                if timeout_output {
                    wait["timeout_output"] = json!({"default": true});
                }
                let mut steps = vec![
                    json!({"id": "ask", "agent": "a"}),
                    json!({"id": "approve", "after": ["ask"], "wait": wait}),
                ];
                let mut last = vec!["approve"];
                if twice {
                    steps.push(json!({"id": "also", "after": ["ask"], "wait": {"signal": SIGNAL}}));
                    last.push("also");
                }
                steps.push(json!({"id": "act", "agent": "b", "after": last,
                                  "input": {"approval": "{{steps.approve.output}}"}}));
                Value::Array(steps)
            }
            Shape::Sleep => json!([
                {"id": "first", "agent": "a"},
                {"id": "nap", "after": ["first"], "sleep_ms": 3000},
                {"id": "side", "agent": "c", "after": ["first"], "input": "{{previous_output}}"},
                {"id": "last", "agent": "b", "after": ["nap", "side"]}
            ]),
        };
        json!({"name": "h", "input": {"topic": "x"}, "steps": steps})
    }
}

/// A workflow's definition and what happens to it.
#[derive(Debug, Clone)]
pub struct Script {
    pub shape: Shape,
    pub timeout_ms: Option<u64>,
    pub ops: Vec<Op>,
}

pub fn arb_shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        4 => (1u8..4).prop_map(Shape::Chain),
        2 => Just(Shape::FanOut),
        2 => Just(Shape::Branch),
        5 => any::<bool>().prop_map(|c| Shape::Loop { continue_when_exhausted: c }),
        4 => (any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(timeout_output, twice)| Shape::Wait { timeout_output, twice }),
        1 => Just(Shape::Sleep),
    ]
}

pub fn arb_op() -> impl Strategy<Value = Op> {
    let w = 0..WRITERS;
    let lag = || (0u8..3).prop_map(|lag| lag.saturating_sub(1));
    let outcome = prop_oneof![
        7 => Just(Outcome::Answered),
        2 => Just(Outcome::Failed),
        1 => Just(Outcome::Crashed),
        1 => Just(Outcome::Interrupted),
    ];
    prop_oneof![
        14 => lag().prop_map(|lag| Op::Execute { lag }),
        2 => lag().prop_map(|lag| Op::Cancel { lag }),
        2 => lag().prop_map(|lag| Op::Pause { lag }),
        4 => lag().prop_map(|lag| Op::Resume { lag }),
        6 => (lag(), prop::option::weighted(0.5, 0u8..3))
            .prop_map(|(lag, key)| Op::Signal { lag, key }),
        30 => (w.clone(), outcome, any::<u8>())
            .prop_map(|(w, outcome, pick)| Op::Act { w, outcome, pick }),
        6 => (w.clone(), any::<u8>()).prop_map(|(w, pick)| Op::Call { w, pick }),
        25 => (w.clone(), 1u8..6).prop_map(|(w, n)| Op::Catch { w, n }),
        3 => w.prop_map(|w| Op::Restart { w }),
        5 => any::<u16>().prop_map(|at| Op::Redeliver { at }),
        3 => (1u16..8).prop_map(|secs| Op::Tick { secs }),
    ]
}

pub fn arb_script() -> impl Strategy<Value = Script> {
    (
        arb_shape(),
        prop::option::weighted(0.3, Just(10_000u64)),
        prop::collection::vec(arb_op(), 0..120),
    )
        .prop_map(|(shape, timeout_ms, ops)| Script {
            shape,
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
    /// The calls it made that have not ended yet.
    inflight: Vec<InFlight>,
}

/// An agent call in flight.
#[derive(Debug, Clone)]
struct InFlight {
    step: StepId,
    iteration: u32,
    agent: AgentName,
    /// The run it was made in.
    run: u32,
}

/// What a writer does next.
enum Next {
    /// Append this record (with its metadata).
    Append(Event, Map<String, Value>),
    /// Call an agent.
    Call(InFlight),
}

/// An agent call a writer made: its step and iteration (its idempotency
/// key), its input, and whether the log had confirmed every record the
/// writer appended (the engine's actor calls only then; issue 11.4).
#[derive(Debug, Clone)]
pub struct Call {
    pub step: StepId,
    pub iteration: u32,
    pub input: Value,
    pub confirmed: bool,
}

/// A writer's own state when it had read the whole log and the log had
/// confirmed all it appended, beside the log's: the commands it received
/// after records of its own that the log holds after them (or before)
/// must leave it where the log is.
#[derive(Debug, Clone)]
pub struct View {
    /// How many records of the log it had read.
    pub upto: usize,
    pub writer: u8,
    pub state: Option<WorkflowState>,
}

/// Everything a script leaves: the log, the agent calls made, and the
/// writers' caught-up states.
#[derive(Debug, Clone)]
pub struct Run {
    pub log: Vec<Record>,
    pub calls: Vec<Call>,
    pub views: Vec<View>,
    /// How many results of calls kept in flight ([`Op::Call`]) were
    /// appended.
    pub inflight_results: usize,
}

/// Runs `script` and returns the log it leaves.
pub fn run(id: WorkflowId, user: UserId, script: &Script) -> Vec<Record> {
    run_full(id, user, script).log
}

/// Runs `script` and returns the log it leaves and the agent calls made.
pub fn run_with_calls(id: WorkflowId, user: UserId, script: &Script) -> (Vec<Record>, Vec<Call>) {
    let r = run_full(id, user, script);
    (r.log, r.calls)
}

/// Runs `script` and returns all it leaves.
pub fn run_full(id: WorkflowId, user: UserId, script: &Script) -> Run {
    let mut body = script.shape.body();
    if let Some(ms) = script.timeout_ms {
        body["timeout_ms"] = ms.into();
    }
    let def = WorkflowDefinition::parse(&body)
        .unwrap_or_else(|e| panic!("{:?} is not a valid definition: {e}", script.shape));
    let mut sim = Sim {
        id,
        user,
        log: vec![],
        applied: vec![],
        head: None,
        writers: vec![Writer::default(); WRITERS as usize],
        now: 0,
        calls: 0,
        signals: 0,
        made: vec![],
        views: vec![],
        inflight_results: 0,
    };
    sim.push(Record::new(
        id,
        user,
        1,
        t(0),
        Event::Created {
            name: def.name,
            steps: def.steps,
            input: def.input,
            timeout_ms: def.timeout_ms,
            max_concurrency: def.max_concurrency,
        },
    ));
    for op in &script.ops {
        sim.now += 1;
        sim.op(op);
    }
    Run {
        log: sim.log,
        calls: sim.made,
        views: sim.views,
        inflight_results: sim.inflight_results,
    }
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
    signals: u64,
    made: Vec<Call>,
    views: Vec<View>,
    inflight_results: usize,
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

    /// What the API decides on the state `lag` records behind the log.
    fn command(&mut self, lag: u8, what: impl FnOnce(&WorkflowState, u64) -> Option<Event>) {
        let Some(st) = self.fold(self.log.len().saturating_sub(lag as usize)) else {
            return;
        };
        if let Some(event) = what(&st, self.now as u64) {
            let r = self.record(&st, event);
            self.push(r);
        }
    }

    /// The steps of writer `w`'s calls in flight.
    fn in_flight(&self, w: usize) -> Vec<StepId> {
        self.writers[w]
            .inflight
            .iter()
            .map(|c| c.step.clone())
            .collect()
    }

    /// Every writer keeps at most the cap of calls in flight, and those
    /// whose results still fit its state are the steps `running_steps`
    /// names; with the calls `decide` starts now, all of them.
    fn check_running(&self) {
        for (w, wr) in self.writers.iter().enumerate() {
            let Some(st) = &wr.view else { continue };
            let in_flight = self.in_flight(w);
            assert!(
                in_flight.len() <= decide::cap(st, DEFAULT_CAP),
                "writer {w} has {} calls in flight over the cap: {in_flight:?}\n{st:#?}",
                in_flight.len()
            );
            if st.status != WorkflowStatus::Running
                || st.paused
                || st.cancel_requested
                || st.failed_step().is_some()
            {
                continue;
            }
            let running: Vec<&StepId> = running_steps(st, DEFAULT_CAP)
                .into_iter()
                .map(|i| &st.steps[i].id)
                .collect();
            let live: Vec<&InFlight> = wr
                .inflight
                .iter()
                // Calls of an earlier run (another writer ended it while
                // this one had them in flight) are its alone.
                .filter(|c| c.run == st.runs && takes_result(st, &c.step, c.iteration))
                .collect();
            for c in &live {
                assert!(
                    running.contains(&&c.step),
                    "writer {w}'s call of {} is in flight but not running: {running:?}\n{st:#?}",
                    c.step
                );
            }
            let ctx = Context {
                now: t(self.now),
                in_flight: &in_flight,
                default_cap: DEFAULT_CAP,
            };
            let actions = decide(st, ctx);
            if matches!(actions.first(), Some(Action::Append { .. })) {
                continue;
            }
            let mut now: Vec<&StepId> = live.iter().map(|c| &c.step).collect();
            now.extend(actions.iter().filter_map(|a| match a {
                Action::CallAgent { step, .. } => Some(step),
                _ => None,
            }));
            now.sort();
            let mut running = running;
            running.sort();
            // Stale calls (results that no longer fit) still hold places.
            if live.len() == in_flight.len() {
                assert_eq!(
                    now, running,
                    "writer {w}: calls in flight and to start\n{st:#?}"
                );
            }
        }
    }

    fn op(&mut self, op: &Op) {
        self.apply_op(op);
        self.check_running();
    }

    fn apply_op(&mut self, op: &Op) {
        match *op {
            Op::Execute { lag } => {
                self.command(lag, |st, _| st.status.can_start().then_some(Event::Started));
            }
            Op::Cancel { lag } => self.command(lag, |st, _| match st.status {
                s if s.is_active() && !st.cancel_requested => Some(Event::CancelRequested),
                WorkflowStatus::Pending | WorkflowStatus::Failed => Some(Event::Cancelled),
                _ => None,
            }),
            Op::Pause { lag } => self.command(lag, |st, _| {
                (st.status.is_active() && !st.paused).then_some(Event::Paused)
            }),
            Op::Resume { lag } => self.command(lag, |st, _| st.paused.then_some(Event::Resumed)),
            Op::Signal { lag, key } => {
                self.signals += 1;
                let n = self.signals;
                self.command(lag, |st, _| {
                    st.awaited_signals()
                        .contains(&SIGNAL)
                        .then(|| Event::SignalReceived {
                            signal: SIGNAL.into(),
                            payload: json!({"signal": n}),
                            key: key.map(|k| format!("k{k}")),
                        })
                });
            }
            Op::Act { w, outcome, pick } => self.act(w as usize, outcome, pick),
            Op::Call { w, pick } => self.call(w as usize, pick),
            Op::Catch { w, n } => {
                for _ in 0..n {
                    self.catch_one(w as usize);
                }
            }
            Op::Restart { w } => self.restart(w as usize, self.log.len()),
            Op::Redeliver { at } => {
                let at = at as usize % self.log.len();
                let r = self.log[at].clone();
                // Not a command into a later run than the one it was asked
                // in, nor one the fold refused when it first came (a signal
                // nothing waited for): the fold cannot tell either from a
                // new one (a known gap, see `a_cancel_request_delivered_
                // again_in_a_later_run_is_taken_for_a_new_one` in
                // histories.rs; the API writes neither).
                let run = |st: Option<WorkflowState>| st.map_or(0, |s| s.runs);
                if !r.event.is_chained() {
                    let first = self
                        .log
                        .iter()
                        .position(|x| x.event_id == r.event_id)
                        .unwrap_or(at);
                    if run(self.fold(at + 1)) != run(self.head.clone()) || !self.applied[first] {
                        return;
                    }
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
            inflight: vec![],
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
        if self.applied[i] {
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
            } else {
                let _ = apply(&mut wr.view, &rec);
            }
        }
        let wr = &self.writers[w];
        if wr.cursor == self.log.len() && wr.unconfirmed.is_empty() {
            self.views.push(View {
                upto: wr.cursor,
                writer: w as u8,
                state: wr.view.clone(),
            });
        }
    }

    /// Writer `w` decides and acts, as `WorkflowActor::drive` does (also on
    /// an unconfirmed state, as the actor did before issue 11.4: the log
    /// must fold safely either way): it appends the record `decide` asks
    /// for, or ends a call it has in flight, or makes one of the calls
    /// `decide` asks for and ends it at once.
    fn act(&mut self, w: usize, outcome: Outcome, pick: u8) {
        let Some(st) = self.writers[w].view.clone() else {
            return;
        };
        let n = self.writers[w].inflight.len();
        if n > 0 && pick.is_multiple_of(2) {
            let c = self.writers[w].inflight.remove(pick as usize / 2 % n);
            let Some(event) = self.end_call(w, c, outcome, pick) else {
                return;
            };
            // The result of a call made on an earlier state: the run may
            // have ended or another writer done the step meanwhile; then
            // the actor drops it.
            let mut view = Some(st.clone());
            if apply(&mut view, &self.record(&st, event.clone())).is_err() {
                return;
            }
            self.inflight_results += 1;
            return self.append(w, st, event, Default::default(), outcome);
        }
        match self.next(w, &st, pick) {
            None => {}
            Some(Next::Append(event, metadata)) => self.append(w, st, event, metadata, outcome),
            Some(Next::Call(c)) => {
                if let Some(event) = self.end_call(w, c, outcome, pick) {
                    self.append(w, st, event, Default::default(), outcome);
                }
            }
        }
    }

    /// Writer `w` makes one of the calls `decide` asks for (the `pick`th of
    /// those not in flight) and keeps it in flight.
    fn call(&mut self, w: usize, pick: u8) {
        let Some(st) = self.writers[w].view.clone() else {
            return;
        };
        if let Some(Next::Call(c)) = self.next(w, &st, pick) {
            self.writers[w].inflight.push(c);
        }
    }

    /// What writer `w` does next on `st`: append a record, or make a call
    /// (recorded in `made`).
    fn next(&mut self, w: usize, st: &WorkflowState, pick: u8) -> Option<Next> {
        let in_flight = self.in_flight(w);
        let ctx = Context {
            now: t(self.now),
            in_flight: &in_flight,
            default_cap: DEFAULT_CAP,
        };
        let actions = decide(st, ctx);
        if let Some(Action::Append { event, metadata }) = actions.first() {
            assert_eq!(actions.len(), 1, "an append comes alone: {actions:?}");
            return Some(Next::Append(event.clone(), metadata.clone()));
        }
        let calls: Vec<&Action> = actions
            .iter()
            .filter(|a| match a {
                Action::CallAgent {
                    step, iteration, ..
                } => !self.writers[w]
                    .inflight
                    .iter()
                    .any(|c| (&c.step, c.iteration) == (step, *iteration)),
                _ => false,
            })
            .collect();
        if calls.is_empty() {
            return None;
        }
        let Action::CallAgent {
            step,
            iteration,
            agent,
            input,
            idempotency_key,
            ..
        } = calls[pick as usize % calls.len()].clone()
        else {
            unreachable!()
        };
        assert_eq!(
            idempotency_key,
            format!("{}:{step}:{iteration}", self.id),
            "the call's key"
        );
        self.made.push(Call {
            step: step.clone(),
            iteration,
            input,
            confirmed: self.writers[w].unconfirmed.is_empty(),
        });
        Some(Next::Call(InFlight {
            step,
            iteration,
            agent,
            run: st.runs,
        }))
    }

    /// The record a call ends with (`None`: the process died first).
    fn end_call(&mut self, w: usize, c: InFlight, outcome: Outcome, v: u8) -> Option<Event> {
        self.calls += 1;
        Some(match outcome {
            Outcome::Answered | Outcome::Interrupted => Event::AgentExecuted {
                step: c.step,
                iteration: c.iteration,
                agent: c.agent,
                output: json!({"call": self.calls, "v": v}),
                attempts: 1,
                duration_ms: 1,
            },
            Outcome::Failed => Event::StepFailed {
                step: c.step,
                iteration: c.iteration,
                agent: Some(c.agent),
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
                return None;
            }
        })
    }

    /// Appends `event` and the records that follow from it without a call,
    /// each applied to the writer's own state (`st`), which each must fit.
    fn append(
        &mut self,
        w: usize,
        st: WorkflowState,
        event: Event,
        metadata: Map<String, Value>,
        outcome: Outcome,
    ) {
        let now = t(self.now);
        let mut view = Some(st);
        let (mut event, mut metadata) = (event, metadata);
        for _ in 0..6 {
            let mut r = self.record(view.as_ref().unwrap(), event);
            r.metadata = metadata;
            if let Err(e) = apply(&mut view, &r) {
                panic!(
                    "a writer's own record does not fit its state: {e}\n{r:?}\n{:#?}",
                    view
                );
            }
            self.writers[w].unconfirmed.push_back((r.seq, r.event_id));
            self.push(r);
            if let Outcome::Interrupted = outcome {
                self.restart(w, self.log.len());
                return;
            }
            let in_flight = self.in_flight(w);
            let ctx = Context {
                now,
                in_flight: &in_flight,
                default_cap: DEFAULT_CAP,
            };
            match decide(view.as_ref().unwrap(), ctx).first() {
                Some(Action::Append {
                    event: e,
                    metadata: m,
                }) => (event, metadata) = (e.clone(), m.clone()),
                _ => break,
            }
        }
        self.writers[w].view = view;
    }
}
