//! The projection against real Postgres: exactly once, the fold's verdicts.

use agentflow_core::*;
use agentflow_store::{Positioned, ProjectionCache, Store, WriteRetry};
use chrono::Utc;
use serde_json::json;

async fn fresh_store() -> Store {
    let admin = std::env::var("AGENTFLOW_TEST_ADMIN_URL")
        .expect("AGENTFLOW_TEST_ADMIN_URL is not set: run the tests with scripts/test.sh");
    let name = format!("s_{}", uuid::Uuid::new_v4().simple());
    let admin_store = Store::connect(&admin, 1).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin_store.pool())
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let store = Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn records(n_steps: usize) -> Vec<Record> {
    let id = WorkflowId::new();
    let a = AgentName::parse("a").unwrap();
    let steps = (0..n_steps)
        .map(|i| {
            StepDef::of_task(
                i + 1,
                TaskDef {
                    agent: a.clone(),
                    input: json!({}),
                    timeout_ms: None,
                },
            )
        })
        .collect();
    let mut out: Vec<Record> = vec![Record::new(
        id,
        UserId(1),
        1,
        Utc::now(),
        Event::Created {
            name: "w".into(),
            steps,
            input: json!({}),
            timeout_ms: Some(60_000),
            max_concurrency: None,
        },
    )];
    let mut push = |ev| {
        let prev = out.last().unwrap();
        let r = Record::new(id, UserId(1), prev.seq + 1, Utc::now(), ev).after(prev.event_id);
        out.push(r);
    };
    push(Event::Started);
    for step in 1..=n_steps as u32 {
        push(Event::AgentExecuted {
            step: StepId::of_task(step as usize),
            iteration: 1,
            agent: a.clone(),
            output: json!({"step": step}),
            attempts: 1,
            duration_ms: 1,
        });
    }
    push(Event::Completed);
    out
}

fn at(partition: i32, first_offset: i64, recs: &[Record]) -> Vec<Positioned> {
    recs.iter()
        .enumerate()
        .map(|(i, r)| Positioned {
            partition,
            offset: first_offset + i as i64,
            record: r.clone(),
        })
        .collect()
}

/// The workflow of `recs` in Postgres is the fold of `recs`.
async fn assert_projected_as_folded(store: &Store, recs: &[Record]) {
    let st = store
        .reader()
        .get_workflow(recs[0].workflow_id)
        .await
        .unwrap()
        .unwrap();
    let mut folded = None;
    for r in recs {
        apply(&mut folded, r).unwrap();
    }
    assert_eq!(Some(st), folded, "the projection is the fold of the log");
}

#[tokio::test]
async fn a_batch_applies_once_however_often_it_is_delivered() {
    let store = fresh_store().await;
    let recs = records(2);
    let batch = at(3, 0, &recs);
    store.writer().claim_partitions("t", &[3]).await.unwrap();
    let mut cache = ProjectionCache::default();
    let first = store
        .writer()
        .project_once("t", &batch[..3], &mut cache)
        .await
        .unwrap();
    assert_eq!((first.applied, first.duplicates), (3, 0));
    // Redelivery after a restart overlaps what was written.
    let second = store
        .writer()
        .project_once("t", &batch, &mut ProjectionCache::default())
        .await
        .unwrap();
    assert_eq!((second.applied, second.duplicates), (2, 3));
    let again = store
        .writer()
        .project_once("t", &batch, &mut cache)
        .await
        .unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 5));
    assert_eq!(
        store.writer().claim_partitions("t", &[3]).await.unwrap(),
        vec![5]
    );

    assert_projected_as_folded(&store, &recs).await;
}

#[tokio::test]
async fn records_the_fold_rejects_are_not_projected() {
    let store = fresh_store().await;
    let recs = records(1);
    let mut batch = at(0, 0, &recs[..3]);
    // A stale writer's record for seq 3, after the real one.
    let zombie = Record::new(
        recs[0].workflow_id,
        UserId(1),
        3,
        Utc::now(),
        Event::AgentExecuted {
            step: StepId::of_task(1),
            iteration: 1,
            agent: AgentName::parse("a").unwrap(),
            output: json!("zombie"),
            attempts: 1,
            duration_ms: 1,
        },
    )
    .after(recs[1].event_id);
    batch.push(Positioned {
        partition: 0,
        offset: 3,
        record: zombie,
    });
    let out = store
        .writer()
        .project_once("t", &batch, &mut ProjectionCache::default())
        .await
        .unwrap();
    assert_eq!((out.applied, out.rejected), (3, 1));
    let st = store
        .reader()
        .get_workflow(recs[0].workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        st.step(&StepId::of_task(1)).unwrap().output,
        Some(json!({"step": 1}))
    );
    assert_eq!(
        out.next_offsets,
        vec![(0, 4)],
        "the rejected record's offset is consumed too"
    );
}

fn fold(recs: &[Record]) -> WorkflowState {
    let mut st = None;
    for r in recs {
        let _ = apply(&mut st, r);
    }
    st.unwrap()
}

/// The engine starts a partition from the projection: every workflow that
/// can still change, exactly as the fold has it, and the offset to go on from.
#[tokio::test]
async fn the_engine_snapshot_is_the_fold_of_the_log_up_to_its_offset() {
    let store = fresh_store().await;
    let done = records(2); // created, started, 2 × executed, completed
    let running = records(3);
    let mut running = running[..3].to_vec(); // created, started, step 1 done
    let ask = Record::new(
        running[0].workflow_id,
        UserId(1),
        running[2].seq,
        Utc::now(),
        Event::CancelRequested,
    )
    .after(running[2].event_id);
    running.push(ask);
    let pending = records(1)[..1].to_vec();
    let elsewhere = records(1)[..2].to_vec();

    store
        .writer()
        .claim_partitions("t", &[0, 1, 2])
        .await
        .unwrap();
    let mut p0 = at(0, 0, &done);
    p0.extend(at(0, done.len() as i64, &running));
    p0.extend(at(0, (done.len() + running.len()) as i64, &pending));
    store
        .writer()
        .project_once("t", &p0, &mut ProjectionCache::default())
        .await
        .unwrap();
    store
        .writer()
        .project_once("t", &at(1, 0, &elsewhere), &mut ProjectionCache::default())
        .await
        .unwrap();

    let snaps = store
        .checkpoints()
        .engine_snapshot("t", &[0, 2])
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1, "partition 2 was never projected: replay it");
    let snap = &snaps[0];
    assert_eq!((snap.partition, snap.next_offset), (0, p0.len() as i64));
    let mut got = snap.states.clone();
    got.sort_by_key(|s| s.seq);
    let want = vec![fold(&pending), fold(&running)];
    assert_eq!(
        got, want,
        "completed workflows are left out; the rest is the fold"
    );
    assert!(got[1].cancel_requested);
    assert_eq!(got[1].timeout_ms, Some(60_000));
}

#[tokio::test]
async fn a_projector_rereads_what_another_wrote_in_its_partition() {
    let store = fresh_store().await;
    let recs = records(2);
    let batch = at(0, 0, &recs);
    let (mut a, mut b) = (ProjectionCache::default(), ProjectionCache::default());
    // A projects the start and keeps the running workflow in its cache.
    store
        .writer()
        .project_once("t", &batch[..2], &mut a)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    // B (another node, after a rebalance) projects step 1.
    let out = store
        .writer()
        .project_once("t", &batch[2..3], &mut b)
        .await
        .unwrap();
    assert_eq!(out.applied, 1);
    // A gets the partition back: its cached state is behind, so it must read
    // B's, or step 2 (seq 4) would not follow its seq 2 and be rejected.
    let out = store
        .writer()
        .project_once("t", &batch[3..], &mut a)
        .await
        .unwrap();
    assert_eq!((out.applied, out.rejected), (2, 0));
    assert!(a.is_empty(), "a finished workflow leaves the cache");
    assert_projected_as_folded(&store, &recs).await;
}

// ---------- the projection equals the fold, for generated histories ----------

#[path = "../../core/tests/support/histories.rs"]
mod histories;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Several workflows' histories (see `histories.rs`: actors racing, stale
/// commands, redeliveries, crashes, deadlines), interleaved over two
/// partitions, cut into batches at random places and delivered with
/// rewinds (a projector resuming behind what it wrote, with its cache or
/// after a restart without it).
#[derive(Debug, Clone)]
struct Delivery {
    scripts: Vec<histories::Script>,
    /// Which workflow's next record goes into the log next.
    interleave: Vec<u8>,
    /// Where batches end (as fractions of the log, in 1/256).
    cuts: Vec<u8>,
    /// At a batch: go back this many batches, with or without the cache.
    rewinds: Vec<(u8, u8, bool)>,
}

fn arb_delivery() -> impl Strategy<Value = Delivery> {
    (
        prop::collection::vec(histories::arb_script(), 1..5),
        prop::collection::vec(any::<u8>(), 0..400),
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec((any::<u8>(), 1u8..4, any::<bool>()), 0..4),
    )
        .prop_map(|(scripts, interleave, cuts, rewinds)| Delivery {
            scripts,
            interleave,
            cuts,
            rewinds,
        })
}

#[test]
fn the_projection_is_the_fold_for_any_history_batching_and_redelivery() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(fresh_store());
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    runner
        .run(&arb_delivery(), |d| {
            // A topic per case: offsets and workflows of their own.
            let topic = format!("h{}", uuid::Uuid::new_v4().simple());
            rt.block_on(project_and_compare(&store, &topic, &d))
        })
        .unwrap();
}

async fn project_and_compare(
    store: &Store,
    topic: &str,
    d: &Delivery,
) -> Result<(), TestCaseError> {
    let logs: Vec<Vec<Record>> = d
        .scripts
        .iter()
        .map(|s| histories::run(WorkflowId::new(), UserId(3), s))
        .collect();
    // Interleave them, each workflow in its partition (i % 2) in order.
    let mut next = vec![0usize; logs.len()];
    let mut offsets = [0i64; 2];
    let mut log: Vec<Positioned> = vec![];
    let mut pick = d.interleave.iter().copied().cycle();
    while next.iter().zip(&logs).any(|(n, l)| *n < l.len()) {
        let mut i = pick.next().unwrap_or(0) as usize % logs.len();
        while next[i] >= logs[i].len() {
            i = (i + 1) % logs.len();
        }
        let partition = (i % 2) as i32;
        log.push(Positioned {
            partition,
            offset: offsets[i % 2],
            record: logs[i][next[i]].clone(),
        });
        offsets[i % 2] += 1;
        next[i] += 1;
    }
    let mut cuts: Vec<usize> = d
        .cuts
        .iter()
        .map(|c| *c as usize * log.len() / 256)
        .chain([log.len()])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut batches = vec![];
    let mut from = 0;
    for c in cuts {
        if c > from {
            batches.push(&log[from..c]);
            from = c;
        }
    }
    store
        .writer()
        .claim_partitions(topic, &[0, 1])
        .await
        .unwrap();
    let mut cache = ProjectionCache::default();
    let mut rewinds = d.rewinds.clone();
    let mut i = 0;
    while i < batches.len() {
        store
            .writer()
            .project_once(topic, batches[i], &mut cache)
            .await
            .unwrap();
        match rewinds
            .iter()
            .position(|(at, _, _)| *at as usize % batches.len() == i)
        {
            Some(k) => {
                let (_, back, keep_cache) = rewinds.remove(k);
                if !keep_cache {
                    cache = ProjectionCache::default();
                }
                i = (i + 1).saturating_sub(back as usize);
            }
            None => i += 1,
        }
    }
    for l in &logs {
        let projected = store.reader().get_workflow(l[0].workflow_id).await.unwrap();
        let want = Some(fold(l));
        prop_assert_eq!(projected, want, "{} records", l.len());
    }
    // The engine's checkpoint is the fold too, for what can still change.
    let snaps = store
        .checkpoints()
        .engine_snapshot(topic, &[0, 1])
        .await
        .unwrap();
    // (Other cases' workflows share the partition numbers: only ours.)
    let ours: Vec<WorkflowId> = logs.iter().map(|l| l[0].workflow_id).collect();
    let mut got: Vec<WorkflowState> = snaps
        .into_iter()
        .flat_map(|s| s.states)
        .filter(|s| ours.contains(&s.workflow_id))
        .collect();
    got.sort_by_key(|s| s.workflow_id.as_uuid());
    let mut want: Vec<WorkflowState> = logs
        .iter()
        .map(|l| fold(l))
        .filter(|s| !s.status.is_terminal())
        .collect();
    want.sort_by_key(|s| s.workflow_id.as_uuid());
    prop_assert_eq!(got, want);
    Ok(())
}

/// Issue 11.1: an agent's output is the agent's; U+0000 in it (or in its
/// error text) is stored reversibly and read back exactly as it was.
#[tokio::test]
async fn an_agent_output_with_nul_is_stored_and_read_back_unchanged() {
    let store = fresh_store().await;
    let mut recs = records(2);
    let nul = json!({"text": "a\u{0}b", "k\u{0}": ["\u{0}", "\\u0000"], "n": 1});
    let Event::AgentExecuted { output, .. } = &mut recs[2].event else {
        panic!("step 1's record")
    };
    *output = nul.clone();
    // Step 2 fails with an error text the agent wrote (a 4xx body snippet).
    let a = AgentName::parse("a").unwrap();
    let error = StepError {
        kind: StepErrorKind::Rejected,
        message: "agent answered 400: bad\u{0}input".into(),
        http_status: Some(400),
    };
    recs.truncate(3);
    for ev in [
        Event::StepFailed {
            step: StepId::of_task(2),
            iteration: 1,
            agent: Some(a.clone()),
            error: error.clone(),
            attempts: 1,
            duration_ms: 1,
        },
        Event::Failed {
            step: StepId::of_task(2),
            agent: Some(a),
            error,
        },
    ] {
        let prev = recs.last().unwrap();
        let r = Record::new(prev.workflow_id, UserId(1), prev.seq + 1, Utc::now(), ev)
            .after(prev.event_id);
        recs.push(r);
    }
    let out = store
        .writer()
        .project_once("t", &at(0, 0, &recs), &mut ProjectionCache::default())
        .await
        .unwrap();
    assert_eq!((out.applied, out.rejected), (recs.len(), 0));
    assert_projected_as_folded(&store, &recs).await;
    let st = store
        .reader()
        .get_workflow(recs[0].workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.step(&StepId::of_task(1)).unwrap().output, Some(nul));
    assert!(
        st.step(&StepId::of_task(2))
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .message
            .contains('\0')
    );
    let trail = store
        .reader()
        .workflow_events("t", recs[0].workflow_id)
        .await
        .unwrap();
    let back: Vec<Record> = trail.into_iter().map(|(_, r, _)| r).collect();
    assert_eq!(back, recs, "the audit trail holds the records as they were");
}

/// Issue 11.1: a record Postgres cannot hold (a NUL in a name, written by a
/// version that did not check) is quarantined; the rest of its batch, its
/// partition and every other partition go on.
#[tokio::test]
async fn a_record_postgres_refuses_is_quarantined_and_the_partitions_move_on() {
    let store = fresh_store().await;
    let good = records(1);
    let other = records(1);
    let mut bad = records(1);
    let Event::Created { name, .. } = &mut bad[0].event else {
        panic!("created")
    };
    *name = "bad\u{0}name".into();
    // Partition 0: good's first two, bad's create, good's rest, bad's start
    // (whose workflow Postgres never got). Partition 1: other.
    let mut batch = at(0, 0, &good[..2]);
    batch.extend(at(0, 2, &bad[..1]));
    batch.extend(at(0, 3, &good[2..]));
    batch.extend(at(0, 5, &bad[1..2]));
    batch.extend(at(1, 0, &other));
    store.writer().claim_partitions("t", &[0, 1]).await.unwrap();
    let out = store
        .writer()
        .project("t", &batch, &mut ProjectionCache::default())
        .await
        .unwrap();
    assert_eq!(out.quarantined.len(), 1, "{out:?}");
    let q = &out.quarantined[0];
    assert_eq!((q.partition, q.offset), (0, 2));
    assert_eq!(q.workflow_id, Some(bad[0].workflow_id));
    assert_eq!(q.event_type.as_deref(), Some("workflow.created"));
    assert!(!q.reason.is_empty());
    assert_eq!(out.next_offsets, vec![(0, 6), (1, 4)]);
    assert_eq!(
        store.writer().claim_partitions("t", &[0, 1]).await.unwrap(),
        vec![6, 4]
    );
    assert_projected_as_folded(&store, &good).await;
    assert_projected_as_folded(&store, &other).await;
    assert_eq!(
        store
            .reader()
            .get_workflow(bad[0].workflow_id)
            .await
            .unwrap(),
        None
    );

    // It is listed, by workflow and for the whole topic, with the record.
    let of_bad = store
        .reader()
        .quarantined_of("t", bad[0].workflow_id)
        .await
        .unwrap();
    assert_eq!(of_bad.len(), 1);
    let kept = Record::from_bytes(of_bad[0].record.as_deref().unwrap().as_bytes()).unwrap();
    assert_eq!(kept, bad[0], "the record is kept as it was");
    assert_eq!(store.reader().quarantined("t").await.unwrap(), of_bad);

    // Later batches go on as usual; the good workflow is untouched by it.
    let more = records(1);
    let out = store
        .writer()
        .project("t", &at(0, 6, &more), &mut ProjectionCache::default())
        .await
        .unwrap();
    assert_eq!((out.applied, out.quarantined.len()), (more.len(), 0));
    assert_projected_as_folded(&store, &more).await;

    // The engine must not start partition 0 from a checkpoint that skipped
    // the record: it replays from the quarantined offset at the latest.
    let snaps = store
        .checkpoints()
        .engine_snapshot("t", &[0, 1])
        .await
        .unwrap();
    let p0 = snaps.iter().find(|s| s.partition == 0).unwrap();
    assert!(p0.next_offset <= 2, "{p0:?}");
    let p1 = snaps.iter().find(|s| s.partition == 1).unwrap();
    assert_eq!(p1.next_offset, 4);
}

/// `len` hex digits of noise (what compression cannot shrink), seeded.
fn noise(len: usize, seed: u64) -> String {
    let mut x = 0x9E37_79B9_7F4A_7C15 ^ seed;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

/// A loop of `n` iterations that keeps each one's output (`bytes` of
/// noise): created, started, then per iteration its `agent.executed` and
/// its `until`, then completed.
fn loop_records(n: u32, bytes: usize) -> Vec<Record> {
    let id = WorkflowId::new();
    let def = WorkflowDefinition::parse(&json!({"name": "loop", "steps": [
        {"id": "draft", "agent": "a", "input": {"last": "{{steps.draft.output.n}}"},
         "repeat": {"until": "output.n >= 1000", "max_iterations": n}}
    ]}))
    .unwrap();
    let mut out = vec![Record::new(
        id,
        UserId(1),
        1,
        Utc::now(),
        Event::Created {
            name: "loop".into(),
            steps: def.steps,
            input: json!({}),
            timeout_ms: None,
            max_concurrency: None,
        },
    )];
    let mut push = |ev| {
        let prev = out.last().unwrap();
        let r = Record::new(id, UserId(1), prev.seq + 1, Utc::now(), ev).after(prev.event_id);
        out.push(r);
    };
    push(Event::Started);
    let draft = StepId::parse("draft").unwrap();
    for k in 1..=n {
        push(Event::AgentExecuted {
            step: draft.clone(),
            iteration: k,
            agent: AgentName::parse("a").unwrap(),
            output: json!({"n": k, "text": noise(bytes, u64::from(k))}),
            attempts: 1,
            duration_ms: 1,
        });
        push(Event::ConditionEvaluated {
            step: draft.clone(),
            condition: ConditionKind::Until,
            iteration: k,
            expression: "output.n >= 1000".into(),
            // (The last one holds, as if the agent said so.)
            result: k == n,
            error: None,
        });
    }
    push(Event::Completed);
    out
}

async fn wal_position(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Issue 17.3: a change costs what changed. A loop that keeps every
/// iteration's output wrote the whole state (every output so far, twice)
/// and all results on each change: O(n²). Now an iteration writes its
/// output once and small rows: what Postgres writes for a late iteration
/// is about one output, as for an early one.
#[tokio::test]
async fn a_loop_writes_each_output_once_however_many_came_before() {
    const N: u32 = 30;
    const BYTES: usize = 64 * 1024;
    let store = fresh_store().await;
    let recs = loop_records(N, BYTES);
    store.writer().claim_partitions("t", &[0]).await.unwrap();
    let mut cache = ProjectionCache::default();
    let all = at(0, 0, &recs);
    store
        .writer()
        .project_once("t", &all[..2], &mut cache)
        .await
        .unwrap();
    // One iteration (its output and its `until`) per batch, as a projector
    // keeping up with the loop writes them; the WAL each batch wrote.
    let mut written = vec![];
    for k in 0..N as usize {
        let before = wal_position(&store).await;
        let batch = &all[2 + 2 * k..4 + 2 * k];
        let out = store
            .writer()
            .project_once("t", batch, &mut cache)
            .await
            .unwrap();
        assert_eq!(out.applied, 2);
        written.push(wal_position(&store).await - before);
    }
    store
        .writer()
        .project_once("t", &all[all.len() - 1..], &mut cache)
        .await
        .unwrap();
    assert_projected_as_folded(&store, &recs).await;
    let st = store
        .reader()
        .get_workflow(recs[0].workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.steps[0].iterations.len(), N as usize);

    println!("WAL written per iteration: {written:?}");
    // The cluster's WAL is shared with other tests: the least of the last
    // iterations is what one of them cost at most.
    let late = written[N as usize - 10..].iter().min().unwrap();
    assert!(
        *late < 3 * BYTES as i64,
        "a late iteration wrote {late} B of WAL for a {BYTES} B output (all: {written:?})"
    );
    // Each output is stored once, and the audit trail refers to it.
    let (outputs, bodies): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(octet_length(body))::bigint FROM outputs")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(outputs, i64::from(N));
    assert!(bodies < i64::from(N) * (BYTES as i64 + 100));
    let trail: i64 =
        sqlx::query_scalar("SELECT sum(octet_length(record))::bigint FROM workflow_events")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(trail < i64::from(N) * 4096, "the trail holds {trail} B");
    let back: Vec<Record> = store
        .reader()
        .workflow_events("t", recs[0].workflow_id)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    assert_eq!(back, recs, "the audit trail gives the records as they were");
}

/// Issue 17.3: an error that is not about a record's data (classes 22/23)
/// used to be retried forever by the single projector task, stopping every
/// user's reads — a statement over a limit, say. Here a trigger raises a
/// custom SQLSTATE (P0001) for one workflow: the batch is tried a bounded
/// number of times, narrowed to the record at fault, which is quarantined,
/// and every other workflow is projected.
#[tokio::test]
async fn a_record_that_keeps_failing_with_any_error_is_quarantined_after_bounded_retries() {
    let store = fresh_store().await;
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.name = 'poison' THEN
                 RAISE EXCEPTION 'poisoned workflow' USING ERRCODE = 'P0001';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON workflows
             FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let good = records(1);
    let other = records(1);
    let mut bad = records(1);
    let Event::Created { name, .. } = &mut bad[0].event else {
        panic!("created")
    };
    *name = "poison".into();
    let mut batch = at(0, 0, &good[..2]);
    batch.extend(at(0, 2, &bad[..1]));
    batch.extend(at(0, 3, &good[2..]));
    batch.extend(at(0, 5, &bad[1..2]));
    batch.extend(at(1, 0, &other));
    store.writer().claim_partitions("t", &[0, 1]).await.unwrap();
    let retry = WriteRetry {
        attempts: 3,
        transient_attempts: 3,
        first_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(20),
    };
    let out = store
        .writer()
        .project_with("t", &batch, &mut ProjectionCache::default(), &retry)
        .await
        .expect("a record that keeps failing does not stop the projection");
    assert_eq!(out.quarantined.len(), 1, "{out:?}");
    let q = &out.quarantined[0];
    assert_eq!((q.partition, q.offset), (0, 2));
    assert_eq!(q.workflow_id, Some(bad[0].workflow_id));
    assert!(q.reason.contains("poisoned workflow"), "{}", q.reason);
    // Three tries of the batch, three of the record at fault.
    assert_eq!(out.write_failures, 6);
    assert_eq!(out.next_offsets, vec![(0, 6), (1, 4)]);
    assert_projected_as_folded(&store, &good).await;
    assert_projected_as_folded(&store, &other).await;
    assert_eq!(
        store
            .reader()
            .get_workflow(bad[0].workflow_id)
            .await
            .unwrap(),
        None
    );

    // Later records go on as usual.
    let more = records(1);
    let out = store
        .writer()
        .project_with(
            "t",
            &at(0, 6, &more),
            &mut ProjectionCache::default(),
            &retry,
        )
        .await
        .unwrap();
    assert_eq!(
        (out.applied, out.quarantined.len(), out.write_failures),
        (more.len(), 0, 0)
    );
    assert_projected_as_folded(&store, &more).await;
}

/// Postgres being away is no fault of the records: the write is returned
/// as unavailable (the projector waits for Postgres), nothing is
/// quarantined.
#[tokio::test]
async fn postgres_away_is_waited_for_not_quarantined() {
    let store = fresh_store().await;
    store.writer().claim_partitions("t", &[0]).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let admin = Store::connect(&std::env::var("AGENTFLOW_TEST_ADMIN_URL").unwrap(), 1)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(admin.pool())
    .await
    .unwrap();
    let retry = WriteRetry {
        attempts: 2,
        transient_attempts: 2,
        first_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(20),
    };
    let err = store
        .writer()
        .project_with(
            "t",
            &at(0, 0, &records(1)),
            &mut ProjectionCache::default(),
            &retry,
        )
        .await
        .expect_err("nothing can be written");
    assert!(err.is_unavailable(), "{err}");
}

/// A row written before the state was kept in rows (its whole state in a
/// JSON blob) is read as it was, and written in rows at its next change.
#[tokio::test]
async fn a_row_of_the_earlier_layout_is_read_and_rewritten_in_rows_at_its_next_change() {
    let store = fresh_store().await;
    let recs = loop_records(4, 10_000);
    let id = recs[0].workflow_id;
    store.writer().claim_partitions("t", &[0]).await.unwrap();
    let all = at(0, 0, &recs);
    // Up to the middle of iteration 2, then turned into a row as the
    // previous version wrote it.
    let half = 5;
    store
        .writer()
        .project_once("t", &all[..half], &mut ProjectionCache::default())
        .await
        .unwrap();
    let blob = serde_json::to_string(&fold(&recs[..half])).unwrap();
    sqlx::query(
        "UPDATE workflows SET in_rows = false, state = $2, definition = NULL, input = NULL
         WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(blob)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("DELETE FROM step_outputs WHERE workflow_id = $1")
        .bind(id.as_uuid())
        .execute(store.pool())
        .await
        .unwrap();
    assert_projected_as_folded(&store, &recs[..half]).await;

    store
        .writer()
        .project_once("t", &all[half..half + 1], &mut ProjectionCache::default())
        .await
        .unwrap();
    let (in_rows, blob): (bool, Option<String>) =
        sqlx::query_as("SELECT in_rows, state FROM workflows WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(in_rows && blob.is_none());
    store
        .writer()
        .project_once("t", &all[half + 1..], &mut ProjectionCache::default())
        .await
        .unwrap();
    assert_projected_as_folded(&store, &recs).await;
}
