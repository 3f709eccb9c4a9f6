//! Operators' tools against a real stack: audit (CLI and API agree), replay
//! into an empty database gives the same answers, --verify catches a
//! corrupted row, events tail filters by type.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{Stack, pipeline};
use serde_json::Value;

fn run(s: &Stack, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = s.command(args);
    cmd.stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run agentflow")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A stack with three finished workflows: completed, failed, cancelled.
async fn with_history() -> (Stack, String, Vec<String>) {
    let s = Stack::start().await;
    let t = s.token(21);
    let ok = s
        .create(
            &t,
            pipeline("Content Marketing Pipeline", &["draft", "seo", "social"]),
        )
        .await;
    s.execute(&t, &ok).await;
    let bad = s.create(&t, common::failing("broken", 400)).await;
    s.execute(&t, &bad).await;
    let gone = s.create(&t, pipeline("cancelled", &["a"])).await;
    let (st, _) = s
        .req("POST", &format!("/workflows/{gone}/cancel"), Some(&t), None)
        .await;
    assert_eq!(st, 202);
    for id in [&ok, &bad] {
        s.wait_done(&t, id, Duration::from_secs(20)).await;
    }
    (s, t, vec![ok, bad, gone])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_prints_the_history_and_the_api_serves_the_same_trail() {
    let (s, t, ids) = with_history().await;
    let id = &ids[0];

    let o = run(&s, &["audit", id, "--json"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let types: Vec<&str> = cli["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, common::THREE_STEP_EVENTS);
    let e = &cli["events"][3];
    assert_eq!(
        (e["step"].as_str(), e["agent"].as_str()),
        (Some("step_2"), Some("seo"))
    );
    assert_eq!(e["attempts"], 1);
    assert!(e["duration_ms"].is_u64());
    assert_eq!(cli["events"][0]["requested_by"], 21, "who asked");
    assert!(
        cli["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["applied"] == true)
    );
    assert_eq!(cli["state"]["status"], "completed");

    // Without Postgres (it only hints at the partition) the log says the same.
    let o = run(
        &s,
        &["audit", id, "--json"],
        &[(
            "AGENTFLOW_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none",
        )],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let alone: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(alone, cli);

    // The API's trail (from the projection) is the CLI's (from the log).
    let (st, api) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
        .await;
    assert_eq!(st, 200, "{api}");
    assert_eq!(api["events"], cli["events"]);
    assert_eq!(api["count"], 6);
    // Owner or admin only.
    let (st, _) = s
        .req(
            "GET",
            &format!("/workflows/{id}/events"),
            Some(&s.token(22)),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .req(
            "GET",
            &format!("/workflows/{id}/events"),
            Some(&s.admin_token(1)),
            None,
        )
        .await;
    assert_eq!(st, 200);

    // The table a person reads.
    let o = run(&s, &["audit", &ids[1]], &[]);
    let text = stdout(&o);
    assert!(
        text.contains("step.failed") && text.contains("rejected"),
        "{text}"
    );
    assert!(text.contains("state: failed"), "{text}");
    // A bad id is a clear error, not a panic.
    let o = run(&s, &["audit", "nope"], &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_an_empty_database_gives_the_same_answers_and_verify_catches_corruption() {
    let (mut s, t, ids) = with_history().await;
    let mut before = vec![];
    for id in &ids {
        before.push(s.get(&t, id).await);
    }
    let (_, list_before) = s.req("GET", "/workflows/list", Some(&t), None).await;

    // --verify agrees, then catches a corrupted row and names it.
    let o = run(&s, &["replay", "--verify"], &[]);
    assert!(
        o.status.success(),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let store = agentflow_store::Store::connect(&s.db_url, 1).await.unwrap();
    sqlx::query("UPDATE workflows SET status = 'running' WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&ids[0]).unwrap())
        .execute(store.pool())
        .await
        .unwrap();
    let o = run(&s, &["replay", "--verify"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains(&ids[0]) && text.contains("status"), "{text}");
    assert!(text.contains("1 difference"), "{text}");

    // Rebuilding under a running node's feet is refused.
    let o = run(&s, &["replay"], &[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("agentflow nodes are running"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A brand-new database, rebuilt from the log alone...
    let admin = std::env::var("AGENTFLOW_TEST_ADMIN_URL").unwrap();
    let (_, fresh) = common::new_database(&admin, "r").await;
    let o = run(
        &s,
        &["replay", "--json"],
        &[("AGENTFLOW_DATABASE_URL", &fresh)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(summary["records"].as_u64().unwrap() >= 12, "{summary}");

    // ...serves the same answers as before the corruption.
    s.kill9();
    s.db_url = fresh;
    s.spawn_server().await;
    for (id, want) in ids.iter().zip(&before) {
        assert_eq!(&s.get(&t, id).await, want);
    }
    let (_, list_after) = s.req("GET", "/workflows/list", Some(&t), None).await;
    assert_eq!(list_after, list_before);
    let o = run(&s, &["replay", "--verify"], &[]);
    assert!(o.status.success(), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_json_lines_filtered_by_type() {
    let (s, _t, ids) = with_history().await;
    let o = run(
        &s,
        &[
            "events",
            "tail",
            "--from-beginning",
            "--type",
            "workflow.failed",
            "--type",
            "workflow.cancelled",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(&str, &str)> = lines
        .iter()
        .map(|v| {
            (
                v["event_type"].as_str().unwrap(),
                v["workflow_id"].as_str().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        ("workflow.cancelled", ids[2].as_str()),
        ("workflow.failed", ids[1].as_str()),
    ];
    want.sort();
    assert_eq!(got, want);

    let all = run(&s, &["events", "tail", "--from-beginning"], &[]);
    assert!(stdout(&all).lines().count() >= 12);
    let bad = run(&s, &["events", "tail", "--type", "workflow.exploded"], &[]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown event type"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_kcat_line_reads_the_log() {
    let (s, _t, ids) = with_history().await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("kcat -b \"$BROKERS\""))
        .expect("README has the kcat line");
    let out = std::process::Command::new("bash")
        .args(["-c", &line.replace("workflow-events", &s.topic)])
        .env("BROKERS", &s.brokers)
        .output()
        .expect("kcat (scripts/stack.sh install)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("key={}", ids[0])), "{text}");
    assert!(text.contains("event_type=workflow.created"), "{text}");
    let records = text.lines().filter(|l| l.starts_with('{')).count();
    assert!(records >= 12, "{text}");
}
