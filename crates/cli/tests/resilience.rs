//! Faults production brings, injected for real: nodes killed or stopped,
//! Postgres stopped. Each test checks that every workflow ends right, counts
//! agent calls per Idempotency-Key (only steps in flight may repeat) and
//! compares the projection with the fold of the log.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{OwnPostgres, Stack, pipeline, sigterm};

const STEPS: [&str; 3] = ["draft", "optimise", "distribute"];

async fn start_workflows(s: &Stack, bases: &[&str], t: &str, n: usize) -> Vec<String> {
    let mut ids = vec![];
    for i in 0..n {
        let base = bases[i % bases.len()];
        let (st, b) = s
            .req_to(
                base,
                "POST",
                "/workflows/create",
                Some(t),
                Some(pipeline(&format!("wf{i}"), &STEPS)),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let id = b["workflow_id"].as_str().unwrap().to_owned();
        let (st, b) = s
            .req_to(
                base,
                "POST",
                &format!("/workflows/{id}/execute"),
                Some(t),
                None,
            )
            .await;
        assert_eq!(st, 202, "{b}");
        ids.push(id);
    }
    ids
}

/// Every workflow completed with its chain intact.
async fn assert_all_completed(s: &Stack, t: &str, ids: &[String], within: Duration) {
    for id in ids {
        let w = s.wait_done(t, id, within).await;
        assert_eq!(w["status"], "completed", "{w}");
        let results = w["results"].as_array().unwrap();
        assert_eq!(results.len(), STEPS.len(), "{w}");
        assert_eq!(
            results[1]["output"]["input"]["content"], results[0]["output"],
            "chain intact"
        );
    }
}

/// How many times each step was called, and the steps called more than once.
fn repeats(s: &Stack, ids: &[String]) -> Vec<String> {
    let calls = s.agent.calls.snapshot();
    let mut repeated = vec![];
    for id in ids {
        for step in 1..=STEPS.len() {
            let key = format!("{id}:step_{step}:1");
            let n = calls.get(&key).copied().unwrap_or(0);
            assert!(n >= 1, "{key} never called");
            assert!(n <= 2, "{key} called {n} times");
            if n == 2 {
                repeated.push(key);
            }
        }
    }
    repeated
}

/// A gauge of a node's `/metrics`; a gauge the node does not report fails
/// the test.
async fn gauge(s: &Stack, base: &str, name: &str) -> f64 {
    try_gauge(s, base, name)
        .await
        .unwrap_or_else(|| panic!("{base}/metrics has no {name}"))
}

/// A gauge of a node's `/metrics`, if the node reports it yet.
async fn try_gauge(s: &Stack, base: &str, name: &str) -> Option<f64> {
    let text = s
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the nodes at `bases` own all 4 partitions between them,
/// every one live, each node at least `min_each`.
async fn wait_partitions(s: &Stack, bases: &[&str], min_each: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut owned = vec![];
        let mut replaying = 0.0;
        for b in bases {
            // Not reported before the node's first assignment.
            owned.push(
                try_gauge(s, b, "agentflow_engine_partitions_owned")
                    .await
                    .unwrap_or(0.0),
            );
            replaying += try_gauge(s, b, "agentflow_engine_partitions_replaying")
                .await
                .unwrap_or(0.0);
        }
        if owned.iter().sum::<f64>() == 4.0
            && replaying == 0.0
            && owned.iter().all(|o| *o >= min_each)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions not shared out: {owned:?}, {replaying} replaying"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node ids that wrote agent.executed records, per workflow.
fn writers(s: &Stack) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (key, ty, v) in common::read_topic(&s.brokers, &s.topic) {
        if ty == "agent.executed" {
            let node = v["metadata"]["node_id"].as_str().unwrap_or("").to_owned();
            out.entry(key).or_default().push(node);
        }
    }
    out
}

// Several threads: the mock agent runs in this process and must keep
// answering while a test thread waits on a process or the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_steps_in_flight_and_a_restart_repeats_no_call() {
    let mut s = Stack::start_with(Duration::from_millis(700), "", &[]).await;
    let t = s.token(3);
    let base = s.base.clone();
    let ids = start_workflows(&s, &[&base], &t, 8).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let in_flight = s.agent.calls.snapshot().len();
    assert!(in_flight > 0, "steps under way");

    let took = sigterm(s.server.take().unwrap(), Duration::from_secs(20)).await;
    // It waited for the calls in flight (700 ms each), not for the whole run.
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    let at_stop = s.agent.calls.snapshot();
    let logged = writers(&s);
    for key in at_stop.keys() {
        let id = key.split(':').next().unwrap();
        assert!(
            logged.contains_key(id),
            "{key} was called but its result was not logged before exit"
        );
    }

    s.spawn_server().await;
    assert_all_completed(&s, &t, &ids, Duration::from_secs(60)).await;
    assert_eq!(repeats(&s, &ids), Vec::<String>::new(), "no call repeated");
    s.assert_projection_is_the_fold(&ids).await;
}

/// A stack with a second node (`node-b`), agents taking `latency`, the
/// partitions shared out.
async fn two_nodes(latency: Duration) -> (Stack, String, String, String) {
    let mut s = Stack::start_with(latency, "", &[]).await;
    let t = s.token(4);
    let a = s.base.clone();
    let b = s.spawn_node("node-b").await;
    wait_partitions(&s, &[&a, &b], 1.0, Duration::from_secs(60)).await;
    (s, t, a, b)
}

/// Waits until the agent is answering at least `n` calls.
async fn wait_in_flight(s: &Stack, n: usize) -> std::collections::HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = s.agent.in_flight.keys();
        if keys.len() >= n {
            return keys;
        }
        assert!(Instant::now() < deadline, "{} calls in flight", keys.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The workflows whose partition `node` writes: those it wrote a step of.
fn written_by(s: &Stack, node: &str) -> std::collections::HashSet<String> {
    writers(s)
        .into_iter()
        .filter(|(_, nodes)| nodes.iter().any(|n| n == node))
        .map(|(id, _)| id)
        .collect()
}

// The scenario, with the shipped defaults (10 s session timeout):
// 2 nodes, 40 content pipelines with 2-second agents, one node SIGKILLed
// 3 s in. Several threads: the mock agent runs in this process and must keep
// answering while a test thread waits on a process or the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_node_out_of_two_hands_all_its_workflows_to_the_survivor() {
    let (mut s, t, a, b) = two_nodes(Duration::from_secs(2)).await;

    // Any node's API takes any workflow; each runs where its partition is.
    let ids = start_workflows(&s, &[&a, &b], &t, 40).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut killed = s.take_node(&b);
    // In flight at the kill: under way just before it, or sent by node B in
    // the instant between that look and its death (it was running).
    let mut in_flight = s.agent.in_flight.keys();
    let called_before = s.agent.calls.snapshot();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let kill_at = Instant::now();
    in_flight.extend(
        s.agent
            .calls
            .snapshot()
            .into_iter()
            .filter(|(k, n)| called_before.get(k) != Some(n))
            .map(|(k, _)| k),
    );

    // Node A's API keeps answering for every workflow meanwhile.
    let (st, _) = s
        .req("GET", &format!("/workflows/{}", ids[1]), Some(&t), None)
        .await;
    assert_eq!(st, 200);
    wait_partitions(&s, &[&a], 4.0, Duration::from_secs(30)).await;
    let took_over = kill_at.elapsed();
    assert_all_completed(&s, &t, &ids, Duration::from_secs(90)).await;
    eprintln!(
        "take-over after SIGKILL: node A owns every partition, replayed, {took_over:?} after the kill; \
         every workflow done {:?} after it",
        kill_at.elapsed()
    );
    // The coordinator moves a dead member's partitions after its session
    // times out (10 s); then replay. A few seconds of slack for a loaded box.
    assert!(
        took_over < Duration::from_secs(10 + 6),
        "take-over took {took_over:?}"
    );

    let nodes: std::collections::HashSet<String> = writers(&s).into_values().flatten().collect();
    assert_eq!(nodes.len(), 2, "both nodes ran steps: {nodes:?}");
    // Only steps that were in flight on node B at the kill ran twice.
    for key in repeats(&s, &ids) {
        assert!(
            in_flight.contains(&key),
            "{key} repeated but was not in flight at the kill"
        );
    }
    s.assert_projection_is_the_fold(&ids).await;
}

// A killed node restarted with its node id is a static member coming back
// (KIP-345): the coordinator gives it its own partitions at once, without a
// rebalance, so it is ready in well under the session timeout and the other
// node is not interrupted. Several threads: the mock agent runs in this
// process and must keep answering while a test thread waits on a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarted_with_its_node_id_takes_its_own_partitions_back_at_once() {
    let (mut s, t, a, b) = two_nodes(Duration::from_millis(1500)).await;
    let owned_a = gauge(&s, &a, "agentflow_engine_partitions_owned").await;
    let owned_b = gauge(&s, &b, "agentflow_engine_partitions_owned").await;

    let ids = start_workflows(&s, &[&a, &b], &t, 16).await;
    let mut killed = s.take_node(&b);
    let in_flight = wait_in_flight(&s, 8).await;
    killed.kill().unwrap();
    killed.wait().unwrap();

    let began = Instant::now();
    let b = s.spawn_node("node-b").await;
    let ready = began.elapsed();
    eprintln!("restart with the same node id: ready (/readyz 200) {ready:?} after the spawn");
    // Well inside the 10 s session timeout: the dead member was not waited for.
    assert!(ready < Duration::from_secs(5), "ready after {ready:?}");
    assert_eq!(
        gauge(&s, &b, "agentflow_engine_partitions_owned").await,
        owned_b,
        "node B has its own partitions back"
    );
    assert_eq!(
        gauge(&s, &a, "agentflow_engine_partitions_owned").await,
        owned_a,
        "node A kept its own"
    );

    assert_all_completed(&s, &t, &ids, Duration::from_secs(60)).await;
    // Only node B's steps in flight at the kill ran again, by node B.
    let on_b = written_by(&s, "node-b");
    for key in repeats(&s, &ids) {
        assert!(
            in_flight.contains(&key),
            "{key} repeated but was not in flight"
        );
        let id = key.split(':').next().unwrap();
        assert!(on_b.contains(id), "{key} of node A's was repeated");
    }
    s.assert_projection_is_the_fold(&ids).await;
}

// Cooperative-sticky: a node joining takes partitions from the others
// without interrupting their steps (each hands a partition over once the
// step in flight there has reached the log). Several threads: the mock agent
// runs in this process and must keep answering while a test thread waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_interrupts_no_step_in_flight() {
    let mut s = Stack::start_with(Duration::from_millis(1500), "", &[]).await;
    let t = s.token(5);
    let a = s.base.clone();
    let ids = start_workflows(&s, &[&a], &t, 16).await;
    wait_in_flight(&s, 8).await;

    let b = s.spawn_node("node-b").await;
    wait_partitions(&s, &[&a, &b], 1.0, Duration::from_secs(60)).await;
    assert_all_completed(&s, &t, &ids, Duration::from_secs(60)).await;

    assert!(!written_by(&s, "node-b").is_empty(), "node B took work");
    assert_eq!(repeats(&s, &ids), Vec::<String>::new(), "no call repeated");
    s.assert_projection_is_the_fold(&ids).await;
}

// Several threads: the mock agent runs in this process and must keep
// answering while a test thread waits on a process or the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_with_sigterm_hands_over_without_repeating_a_call() {
    let (mut s, t, a, b) = two_nodes(Duration::from_millis(300)).await;

    let ids = start_workflows(&s, &[&a, &b], &t, 16).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let left_at = Instant::now();
    sigterm(s.take_node(&b), Duration::from_secs(20)).await;

    assert_all_completed(&s, &t, &ids, Duration::from_secs(60)).await;
    eprintln!(
        "hand-over after SIGTERM: every workflow done {:?} after the signal",
        left_at.elapsed()
    );
    assert_eq!(repeats(&s, &ids), Vec::<String>::new(), "no call repeated");
    s.assert_projection_is_the_fold(&ids).await;
}

// Several threads: the mock agent runs in this process and must keep
// answering while a test thread waits on a process or the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_keep_running_while_postgres_is_down_and_the_projection_catches_up() {
    let pg = OwnPostgres::start();
    let s = Stack::start_with(
        Duration::from_millis(400),
        "",
        &[("AGENTFLOW_TEST_ADMIN_URL", pg.admin_url.as_str())],
    )
    .await;
    let t = s.token(8);
    let base = s.base.clone();
    let ids = start_workflows(&s, &[&base], &t, 6).await;

    pg.stop();
    let down_at = Instant::now();
    // Reads answer 503 (bounded), readiness says why.
    let (st, b) = s
        .req("GET", &format!("/workflows/{}", ids[0]), Some(&t), None)
        .await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{b}"
    );
    assert!(
        down_at.elapsed() < Duration::from_secs(8),
        "503 in bounded time"
    );
    let (st, b) = s.req("GET", "/readyz", None, None).await;
    assert_eq!(st, 503, "{b}");
    assert_ne!(b["checks"]["database"], "ok", "{b}");

    // The log is the truth: all six finish while Postgres is still down.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = common::read_topic(&s.brokers, &s.topic)
            .iter()
            .filter(|(_, ty, _)| ty == "workflow.completed")
            .count();
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} completed during the outage",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep it down a while longer, then bring it back.
    let outage = Duration::from_secs(8);
    if let Some(left) = outage.checked_sub(down_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    pg.restart();

    assert_all_completed(&s, &t, &ids, Duration::from_secs(60)).await;
    assert_eq!(repeats(&s, &ids), Vec::<String>::new(), "no call repeated");
    s.assert_projection_is_the_fold(&ids).await;
    let (st, _) = s.req("GET", "/readyz", None, None).await;
    assert_eq!(st, 200);
}

/// Sends `signal` (e.g. "STOP", "CONT") to a process.
fn signal(child: &std::process::Child, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

// A node stopped (SIGSTOP) past its session loses its partitions; the
// survivor re-runs its steps in flight. Resumed (SIGCONT) right after the
// take-over, while the survivor's calls are still under way, it still holds
// the results of its own calls: none of what it writes from then on may
// count, and it rejoins the group cleanly. Several threads: the mock agent
// runs in this process and must keep answering while the node is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_session_writes_nothing_that_counts_and_rejoins() {
    let (mut s, t, a, b) = two_nodes(Duration::from_secs(2)).await;
    let ids = start_workflows(&s, &[&a, &b], &t, 16).await;
    let paused = s.take_node(&b);
    wait_in_flight(&s, 8).await;
    signal(&paused, "STOP");
    wait_partitions(&s, &[&a], 4.0, Duration::from_secs(40)).await;
    // The survivor is re-running node B's steps now; node B wakes up.
    signal(&paused, "CONT");
    s.nodes.push((b.clone(), paused));

    assert_all_completed(&s, &t, &ids, Duration::from_secs(90)).await;
    // It rejoined: the partitions are shared again, and it runs new work.
    wait_partitions(&s, &[&a, &b], 1.0, Duration::from_secs(60)).await;
    let more = start_workflows(&s, &[&b], &t, 8).await;
    assert_all_completed(&s, &t, &more, Duration::from_secs(60)).await;

    // Node B's results of the calls it had in flight when it stopped
    // never displaced node A's: every record node A wrote counts (node B's
    // late ones, if any, were the ones the fold ignored).
    let mut states: HashMap<String, Option<agentflow_core::WorkflowState>> = HashMap::new();
    let mut ignored_b = 0;
    for (key, _, v) in common::read_topic(&s.brokers, &s.topic) {
        let rec = agentflow_core::Record::from_bytes(v.to_string().as_bytes()).unwrap();
        let applied = agentflow_core::apply(states.entry(key.clone()).or_default(), &rec).is_ok();
        let by_b = v["metadata"]["node_id"] == "node-b";
        if !applied && by_b {
            ignored_b += 1;
        }
        assert!(
            applied || by_b || !rec.event.is_chained(),
            "node A's {} (seq {}) of {key} was displaced",
            rec.event_type(),
            rec.seq
        );
    }
    eprintln!("node B's records the fold ignored: {ignored_b}");
    s.assert_projection_is_the_fold(&ids).await;
}
