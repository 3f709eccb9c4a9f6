//! Who a node is in its consumer groups, with the shipped defaults: a `serve`
//! on a fixed port is `{host}-{port}`, a static member that takes its
//! partitions straight back after a crash; two live processes that claim one
//! node_id are told so, and the older one stops.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Stack, pipeline};

const STEPS: [&str; 3] = ["draft", "optimise", "distribute"];

async fn start_workflows(s: &Stack, t: &str, n: usize) -> Vec<String> {
    let mut ids = vec![];
    for i in 0..n {
        let id = s.create(t, pipeline(&format!("wf{i}"), &STEPS)).await;
        let (st, b) = s.execute(t, &id).await;
        assert_eq!(st, 202, "{b}");
        ids.push(id);
    }
    ids
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// The peer crash test's set-up, shrunk: one node with the shipped defaults
// (no node_id) on a fixed port, SIGKILLed while calls are in flight and
// started again. With a 30 s session, a node that came back as a stranger
// would wait for its dead self to expire before it owned anything; a node
// that is the same static member again is given its partitions at once.
// Several threads: the mock agent runs in this process and must keep
// answering while a test thread waits on a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_with_the_defaults_takes_its_partitions_straight_back() {
    let session = Duration::from_secs(30);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut s = Stack::start_with(
        Duration::from_millis(300),
        "",
        &[
            ("AGENTFLOW_HTTP_ADDR", addr.as_str()),
            (
                "AGENTFLOW_KAFKA_SESSION_TIMEOUT_MS",
                &session.as_millis().to_string(),
            ),
        ],
    )
    .await;
    let t = s.token(3);
    let ids = start_workflows(&s, &t, 12).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.agent.in_flight.keys().len() < 6 {
        assert!(Instant::now() < deadline, "no calls in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    s.kill9();
    let killed_at = Instant::now();
    s.spawn_server().await;
    let ready = killed_at.elapsed();
    eprintln!(
        "SIGKILL + restart with the default node id: ready (/readyz 200) {ready:?} after the kill"
    );
    for id in &ids {
        let w = s.wait_done(&t, id, session).await;
        assert_eq!(w["status"], "completed", "{w}");
    }
    let done = killed_at.elapsed();
    eprintln!("every workflow completed {done:?} after the kill");
    assert!(
        done < session - Duration::from_secs(5),
        "took {done:?}: the restarted node waited out its dead self's {session:?} session"
    );
    s.assert_projection_is_the_fold(&ids).await;
}

// Two live processes with one node_id: the broker keeps the newer one and
// fences the older one out. The older one must not carry on silently (it
// owns nothing any more): it says which id collided and how to fix it, and
// exits non-zero; the newer one runs the workflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_live_processes_with_one_node_id_the_older_one_says_so_and_exits() {
    let mut s = Stack::prepare_with(&[]).await;
    let mut older = s
        .command(&["serve"])
        .env("AGENTFLOW_NODE_ID", "twin")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = older.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("agentflow listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let mut stderr = older.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let older_base = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.http.get(format!("{older_base}/readyz")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "older process not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let newer = s.spawn_node("twin").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = older.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = older.kill();
            panic!("the fenced process still runs 30 s after the other joined");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logs = logs.join().unwrap();
    assert!(!status.success(), "exited {status}");
    assert!(
        logs.contains("fenced") && logs.contains("node_id `twin`"),
        "says which id collided:\n{logs}"
    );
    assert!(
        logs.contains("AGENTFLOW_NODE_ID"),
        "says how to fix it:\n{logs}"
    );

    s.base = newer;
    let t = s.token(4);
    let ids = start_workflows(&s, &t, 3).await;
    for id in &ids {
        let w = s.wait_done(&t, id, Duration::from_secs(30)).await;
        assert_eq!(w["status"], "completed", "{w}");
    }
}

// A static member does not leave its group when it closes (KIP-345), so a
// node stopped for good would hold its partitions for the session timeout.
// Beside another node it leaves on SIGTERM: the other takes over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_default_id_stopped_with_sigterm_beside_another_hands_over_at_once() {
    let session = Duration::from_secs(30);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut s = Stack::start_with(
        Duration::from_millis(300),
        "",
        &[
            ("AGENTFLOW_HTTP_ADDR", addr.as_str()),
            (
                "AGENTFLOW_KAFKA_SESSION_TIMEOUT_MS",
                &session.as_millis().to_string(),
            ),
        ],
    )
    .await;
    let other = s
        .spawn_node_with("other", &[("AGENTFLOW_HTTP_ADDR", "127.0.0.1:0")])
        .await;
    let t = s.token(5);
    let ids = start_workflows(&s, &t, 12).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.agent.in_flight.keys().len() < 6 {
        assert!(Instant::now() < deadline, "no calls in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stopped_at = Instant::now();
    common::sigterm(s.server.take().unwrap(), Duration::from_secs(20)).await;
    s.base = other;
    for id in &ids {
        let w = s.wait_done(&t, id, session).await;
        assert_eq!(w["status"], "completed", "{w}");
    }
    let done = stopped_at.elapsed();
    eprintln!("every workflow completed {done:?} after the SIGTERM");
    assert!(
        done < session - Duration::from_secs(5),
        "took {done:?}: the other node waited out the stopped node's {session:?} session"
    );
    s.assert_projection_is_the_fold(&ids).await;
}
