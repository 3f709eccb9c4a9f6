//! The log is forever (DESIGN §5): topics are created with no retention
//! limit, a node refuses a topic that can expire or compact records, and
//! only `agentflow archive --truncate` moves the log's start — after the
//! records before it are in an archive that `replay` and `audit` read back.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Stack, pipeline};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::{Value, json};

fn run(s: &Stack, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = s.command(args);
    cmd.stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run agentflow")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// A topic's settings as the broker applies them.
async fn topic_settings(brokers: &str, topic: &str) -> std::collections::HashMap<String, String> {
    let r = admin(brokers)
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let res = r.into_iter().next().unwrap().unwrap();
    res.entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// (low, high) of every partition of the topic.
fn watermarks(brokers: &str, topic: &str) -> Vec<(i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    (0..n)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect()
}

async fn wait_status(s: &Stack, t: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = s.get(t, id).await;
        if w["status"] == status {
            return w;
        }
        assert!(Instant::now() < deadline, "{id} not {status}: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_topics_are_kept_forever() {
    let s = Stack::start().await;
    let main = topic_settings(&s.brokers, &s.topic).await;
    assert_eq!(main["retention.ms"], "-1");
    assert_eq!(main["retention.bytes"], "-1");
    assert_eq!(main["cleanup.policy"], "delete");
    let payloads = topic_settings(&s.brokers, &format!("{}-payloads", s.topic)).await;
    assert_eq!(payloads["cleanup.policy"], "compact");
    assert_eq!(payloads["retention.ms"], "-1");
    assert_eq!(payloads["retention.bytes"], "-1");
}

/// `serve` on a topic created elsewhere with these settings: its exit
/// status and output, or None if it kept running (then it is killed).
async fn serve_on(s: &Stack, env: &[(&str, &str)]) -> Option<(bool, String)> {
    let mut cmd = s.command(&["serve"]);
    cmd.stderr(Stdio::piped()).stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            return Some((o.status.success(), text(&o)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_topic_that_expires_or_compacts_records_unless_the_operator_accepts_it() {
    let mut s = Stack::prepare_with(&[]).await;
    // Created by hand with Kafka's default retention (7 days), spelled out.
    let week =
        NewTopic::new(&s.topic, 4, TopicReplication::Fixed(1)).set("retention.ms", "604800000");
    let compacted_name = format!("{}-c", s.topic);
    let compacted = NewTopic::new(&compacted_name, 4, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1");
    for r in admin(&s.brokers)
        .create_topics([&week, &compacted], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }

    let (ok, out) = serve_on(&s, &[]).await.expect("serve stops");
    assert!(!ok);
    assert!(
        out.contains(&format!("topic {}: retention.ms=604800000", s.topic))
            && out.contains("retention.ms=-1")
            && out.contains("allow_log_expiry"),
        "{out}"
    );
    let (ok, out) = serve_on(&s, &[("AGENTFLOW_TOPIC", &compacted_name)])
        .await
        .expect("serve stops");
    assert!(!ok);
    assert!(
        out.contains("cleanup.policy=compact") && out.contains("cleanup.policy=delete"),
        "{out}"
    );

    // The operator accepts it: the node starts, and says so loudly.
    s.extra_env
        .push(("AGENTFLOW_ALLOW_LOG_EXPIRY".into(), "true".into()));
    s.spawn_server().await;
    let t = s.token(1);
    let id = s.create(&t, pipeline("accepted", &["a"])).await;
    s.execute(&t, &id).await;
    s.wait_done(&t, &id, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_truncate_rebuild_from_archive_and_log_verifies_clean_and_live_workflows_carry_on()
{
    // Outputs over 2 KiB go to the payload topic: archived records carry
    // references that must still resolve after truncation.
    let mut s = Stack::start_with(
        Duration::ZERO,
        "",
        &[("AGENTFLOW_INLINE_OUTPUT_BYTES", "2048")],
    )
    .await;
    let t = s.token(5);
    let mut old = vec![];
    for i in 0..6 {
        let body = if i == 0 {
            json!({"name": "big", "tasks": [{"agent": "writer", "input": {"_mock": {"pad_bytes": 20000}}}]})
        } else {
            pipeline(&format!("old-{i}"), &["a", "b"])
        };
        let id = s.create(&t, body).await;
        s.execute(&t, &id).await;
        s.wait_done(&t, &id, Duration::from_secs(30)).await;
        old.push(id);
    }
    let cancelled = s.create(&t, pipeline("cancelled", &["a"])).await;
    let (st, _) = s
        .req(
            "POST",
            &format!("/workflows/{cancelled}/cancel"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(st, 202);
    wait_status(&s, &t, &cancelled, "cancelled").await;
    old.push(cancelled);
    // Created before the live workflow below, in its partition, finished
    // after it started: archived, but its tail stays in the log (the start
    // cannot pass the live one), until a later archive takes the tail.
    let store = agentflow_store::Store::connect(&s.db_url, 1).await.unwrap();
    let partition = async |id: &str| {
        let id = agentflow_core::WorkflowId::parse(id).unwrap();
        store
            .reader()
            .workflow_partition(id)
            .await
            .unwrap()
            .unwrap()
    };
    let mut early = vec![];
    for i in 0..8 {
        let id = s.create(&t, pipeline(&format!("early-{i}"), &["a"])).await;
        early.push((partition(&id).await, id));
    }
    // Live: waiting for a person, and failed (it can be resumed).
    let waiting = loop {
        let id = s
            .create(
                &t,
                json!({"name": "approval", "steps": [
                    {"id": "draft", "agent": "writer"},
                    {"id": "approval", "after": ["draft"], "wait": {"signal": "approved"}},
                    {"id": "send", "agent": "mailer", "after": ["approval"]}
                ]}),
            )
            .await;
        let p = partition(&id).await;
        if early.iter().any(|(q, _)| *q == p) {
            break id;
        }
        let (st, _) = s
            .req("POST", &format!("/workflows/{id}/cancel"), Some(&t), None)
            .await;
        assert_eq!(st, 202);
        old.push(id);
    };
    s.execute(&t, &waiting).await;
    wait_status(&s, &t, &waiting, "waiting").await;
    let p = partition(&waiting).await;
    let tail = early.iter().find(|(q, _)| *q == p).unwrap().1.clone();
    for (_, id) in &early {
        s.execute(&t, id).await;
        s.wait_done(&t, id, Duration::from_secs(30)).await;
        old.push(id.clone());
    }
    let failed = s.create(&t, common::failing("broken", 400)).await;
    s.execute(&t, &failed).await;
    wait_status(&s, &t, &failed, "failed").await;
    // Finished after the cutoff: stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let recent = s.create(&t, pipeline("recent", &["a"])).await;
    s.execute(&t, &recent).await;
    s.wait_done(&t, &recent, Duration::from_secs(30)).await;

    let mut before = vec![];
    for id in old.iter().chain([&waiting, &failed, &recent]) {
        before.push((id.clone(), s.get(&t, id).await));
    }
    let marks_before = watermarks(&s.brokers, &s.topic);
    assert!(marks_before.iter().all(|(low, _)| *low == 0));

    let work = std::env::temp_dir().join(format!("archive-{}", s.topic));
    std::fs::create_dir_all(&work).unwrap();
    let dir = work.join("2026-q1");
    let dir_s = dir.to_str().unwrap();

    // Bad input: a clear error, nothing written.
    let o = run(
        &s,
        &[
            "archive",
            "--finished-before",
            "last tuesday",
            "--to",
            dir_s,
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("is not a date"), "{}", text(&o));
    let busy = work.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("x"), "x").unwrap();
    let o = run(
        &s,
        &[
            "archive",
            "--finished-before",
            &cutoff,
            "--to",
            busy.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("is not empty"), "{}", text(&o));
    assert!(!dir.exists());

    // Archive and truncate.
    let o = run(
        &s,
        &[
            "archive",
            "--finished-before",
            &cutoff,
            "--to",
            dir_s,
            "--truncate",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["workflows"], old.len(), "{summary}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["topic"], s.topic.as_str());
    assert_eq!(manifest["partitions"].as_array().unwrap().len(), 4);
    for p in manifest["partitions"].as_array().unwrap() {
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    }
    assert!(
        std::fs::read_dir(&work).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial")),
        "no temporary directory left"
    );
    let marks = watermarks(&s.brokers, &s.topic);
    assert!(
        marks.iter().any(|(low, _)| *low > 0),
        "some partition's start moved: {marks:?}"
    );
    // Never past a live workflow: the live ones' whole histories are in the
    // log, and the recent one's.
    for id in [&waiting, &failed, &recent] {
        let o = run(&s, &["audit", id, "--json"], &[]);
        assert!(o.status.success(), "{}", text(&o));
        let a: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(a["events"][0]["event_type"], "workflow.created");
    }
    let o = run(&s, &["audit", &tail, "--json"], &[]);
    assert!(
        o.status.success(),
        "its tail is still in the log: {}",
        text(&o)
    );
    // An archived workflow: gone from the log, read back with its archive,
    // its large output (on the untouched payload topic) whole.
    let o = run(&s, &["audit", &old[0], "--json"], &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--from-archive"), "{}", text(&o));
    let o = run(
        &s,
        &["audit", &old[0], "--json", "--from-archive", dir_s],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let a: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["state"]["status"], "completed");
    let output = a["state"]["steps"][0]["output"].to_string();
    assert!(
        output.len() > 20000,
        "large output resolved: {}",
        output.len()
    );

    // The log alone no longer rebuilds or verifies everything: said clearly.
    let o = run(&s, &["replay", "--verify"], &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--from-archive"), "{}", text(&o));

    // Postgres lost: a new database, rebuilt from the archive and the log.
    let admin_url = std::env::var("AGENTFLOW_TEST_ADMIN_URL").unwrap();
    let (_, fresh) = common::new_database(&admin_url, "a").await;
    let o = run(
        &s,
        &["replay", "--json"],
        &[("AGENTFLOW_DATABASE_URL", &fresh)],
    );
    assert!(!o.status.success(), "refused without the archive");
    assert!(text(&o).contains("--from-archive"), "{}", text(&o));
    let o = run(
        &s,
        &["replay", "--json", "--from-archive", dir_s],
        &[("AGENTFLOW_DATABASE_URL", &fresh)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let replayed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(replayed["quarantined"], 0, "{replayed}");

    // And a checkpoint older than the log's start (a projector that lagged
    // behind the archive): the engine replays those partitions from their
    // start instead, the projector resumes from there (no OffsetOutOfRange).
    let store = agentflow_store::Store::connect(&fresh, 1).await.unwrap();
    let moved: Vec<i32> = (0..)
        .zip(&marks)
        .filter(|(_, (low, _))| *low > 1)
        .map(|(p, _)| p)
        .collect();
    let stale = sqlx::query(
        "UPDATE projector_offsets SET next_offset = 1 WHERE topic = $1 AND partition = ANY($2)",
    )
    .bind(&s.topic)
    .bind(&moved)
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(stale.rows_affected(), moved.len() as u64);
    s.kill9();
    s.db_url = fresh;
    s.spawn_server().await;
    for (id, want) in &before {
        assert_eq!(&s.get(&t, id).await, want, "{id}");
    }
    let o = run(&s, &["replay", "--verify", "--from-archive", dir_s], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 difference(s)"), "{}", text(&o));

    // The live workflow carries on: it gets its signal and completes; new
    // ones run.
    let (st, b) = s
        .req(
            "POST",
            &format!("/workflows/{waiting}/signals/approved"),
            Some(&t),
            Some(json!({"ok": true})),
        )
        .await;
    assert!(st == 202 || st == 200, "{st} {b}");
    let w = s.wait_done(&t, &waiting, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    let new = s.create(&t, pipeline("after", &["a"])).await;
    s.execute(&t, &new).await;
    s.wait_done(&t, &new, Duration::from_secs(30)).await;
    s.assert_projection_is_the_fold(&[waiting.clone(), new.clone(), failed.clone()])
        .await;
    let o = run(&s, &["replay", "--verify", "--from-archive", dir_s], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // A second archive, later: it takes what finished since, and the tails
    // the first one left in the log; both together rebuild everything.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let dir2 = work.join("2026-q2");
    let dir2_s = dir2.to_str().unwrap();
    let o = run(
        &s,
        &[
            "archive",
            "--finished-before",
            &later,
            "--to",
            dir2_s,
            "--truncate",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let marks2 = watermarks(&s.brokers, &s.topic);
    let start = |m: &[(i64, i64)]| m.iter().map(|w| w.0).sum::<i64>();
    assert!(start(&marks2) > start(&marks), "{marks:?} -> {marks2:?}");
    let o = run(&s, &["audit", &failed, "--json"], &[]);
    assert!(
        o.status.success(),
        "the failed workflow stays whole in the log: {}",
        text(&o)
    );
    let o = run(&s, &["audit", &tail, "--json"], &[]);
    assert!(!o.status.success(), "the tail went with the second archive");
    let o = run(
        &s,
        &[
            "audit",
            &tail,
            "--json",
            "--from-archive",
            dir_s,
            "--from-archive",
            dir2_s,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let a: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["state"]["status"], "completed");
    let (_, fresh2) = common::new_database(&admin_url, "a").await;
    let o = run(
        &s,
        &["replay", "--from-archive", dir2_s],
        &[("AGENTFLOW_DATABASE_URL", &fresh2)],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("are in none of them"), "{}", text(&o));
    for args in [
        vec!["replay", "--from-archive", dir2_s, "--from-archive", dir_s],
        vec![
            "replay",
            "--verify",
            "--from-archive",
            dir_s,
            "--from-archive",
            dir2_s,
        ],
    ] {
        let o = run(&s, &args, &[("AGENTFLOW_DATABASE_URL", &fresh2)]);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let o = run(
        &s,
        &["audit", &waiting, "--json", "--from-archive", dir2_s],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let a: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["state"]["status"], "completed");

    // A damaged or incomplete archive is refused, naming what is wrong.
    let bad = work.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let file = manifest["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["records"].as_u64().unwrap() > 0)
        .unwrap()["file"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bytes = std::fs::read(bad.join(&file)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(bad.join(&file), bytes).unwrap();
    let o = run(
        &s,
        &[
            "replay",
            "--verify",
            "--from-archive",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&file) && text(&o).contains("checksum"),
        "{}",
        text(&o)
    );
    std::fs::remove_file(bad.join("manifest.json")).unwrap();
    let o = run(
        &s,
        &["audit", &old[1], "--from-archive", bad.to_str().unwrap()],
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("manifest.json"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&work);
}
