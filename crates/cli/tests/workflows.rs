//! The guide's sequential workflows, end to end through real HTTP, the real
//! broker, Postgres and the mock agent.

mod common;

use std::time::Duration;

use common::{Stack, pipeline};
use serde_json::{Value, json};

const CONTENT: [&str; 3] = [
    "marketing_content_agent_1_101",
    "marketing_seo_agent_1_102",
    "marketing_social_media_agent_1_103",
];

#[tokio::test]
async fn content_pipeline_chains_each_output_into_the_next_input() {
    let s = Stack::start().await;
    let t = s.token(42);
    let body = json!({
        "name": "Content Marketing Pipeline",
        "tasks": [
            {"agent": CONTENT[0], "input": {"topic": "AI in healthcare", "format": "blog_post"}},
            {"agent": CONTENT[1], "input": {"content": "{{previous_output}}", "target_keywords": ["AI healthcare"]}},
            {"agent": CONTENT[2], "input": {"content": "{{previous_output}}", "platforms": ["twitter", "linkedin"]}}
        ]
    });
    let (st, created) = s
        .req("POST", "/workflows/create", Some(&t), Some(body))
        .await;
    assert_eq!(st, 201);
    assert_eq!(created["name"], "Content Marketing Pipeline");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["task_count"], 3);
    let id = created["workflow_id"].as_str().unwrap().to_owned();

    // Read-your-writes: visible at once, pending.
    let w = s.get(&t, &id).await;
    assert_eq!(w["status"], "pending");
    assert_eq!(
        w["tasks"][0],
        json!({"step": 1, "id": "step_1", "after": [], "kind": "agent", "agent": CONTENT[0],
               "status": "pending", "attempts": 0, "duration_ms": 0, "iteration": 0,
               "input": {"topic": "AI in healthcare", "format": "blog_post"}})
    );

    let (st, ex) = s.execute(&t, &id).await;
    assert_eq!(st, 202, "{ex}");
    assert_eq!(
        ex,
        json!({"workflow_id": id, "status": "running", "message": "Workflow execution started"})
    );
    let w = s.get(&t, &id).await;
    assert_ne!(w["status"], "pending", "execute is visible at once");

    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    let results = w["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["step"], i + 1);
        assert_eq!(r["output"]["agent"], CONTENT[i]);
        assert_eq!(
            r["output"]["idempotency_key"],
            format!("{id}:step_{}:1", i + 1)
        );
        assert_eq!(r["output"]["workflow_id"], id.as_str());
        // W3C trace context: the workflow is the trace, each call a span.
        let tp = r["output"]["traceparent"].as_str().unwrap();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(
            (parts[0], parts[1], parts[2].len(), parts[3]),
            ("00", id.replace('-', "").as_str(), 16, "01")
        );
        assert_eq!(w["tasks"][i]["status"], "completed");
        assert_eq!(w["tasks"][i]["attempts"], 1);
    }
    assert_eq!(
        results[0]["output"]["input"],
        json!({"topic": "AI in healthcare", "format": "blog_post"})
    );
    // Step 2 received step 1's whole output as `content`, and its own fields.
    assert_eq!(
        results[1]["output"]["input"]["content"],
        results[0]["output"]
    );
    assert_eq!(
        results[1]["output"]["input"]["target_keywords"],
        json!(["AI healthcare"])
    );
    assert_eq!(
        results[2]["output"]["input"]["content"],
        results[1]["output"]
    );
    assert_eq!(
        results[2]["output"]["input"]["platforms"],
        json!(["twitter", "linkedin"])
    );
    assert!(w["started_at"].is_string() && w["finished_at"].is_string());
    // Exactly one call per step.
    for step in 1..=3 {
        assert_eq!(s.agent.calls.get(&format!("{id}:step_{step}:1")), 1);
    }
}

#[tokio::test]
async fn the_guides_three_example_workflows_complete() {
    let s = Stack::start().await;
    let t = s.token(7);
    let examples = [
        (
            "Sales Lead Processing",
            [
                "sales_lead_scoring_agent_1_201",
                "sales_crm_agent_1_202",
                "sales_proposal_agent_1_203",
                "marketing_email_agent_1_104",
            ],
        ),
        (
            "IT Incident Response",
            [
                "it_support_triage_agent_1_301",
                "it_monitoring_agent_1_302",
                "it_diagnosis_agent_1_303",
                "it_remediation_agent_1_304",
            ],
        ),
        (
            "Legal Contract Review",
            [
                "legal_contract_extraction_agent_1_401",
                "legal_risk_assessment_agent_1_402",
                "legal_compliance_agent_1_403",
                "legal_summary_agent_1_404",
            ],
        ),
    ];
    let mut ids = vec![];
    for (name, agents) in &examples {
        let id = s.create(&t, pipeline(name, agents)).await;
        assert_eq!(s.execute(&t, &id).await.0, 202);
        ids.push(id);
    }
    for (id, (name, agents)) in ids.iter().zip(&examples) {
        let w = s.wait_done(&t, id, Duration::from_secs(30)).await;
        assert_eq!(w["status"], "completed", "{name}: {w}");
        assert_eq!(w["name"], *name);
        let got: Vec<&str> = w["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["output"]["agent"].as_str().unwrap())
            .collect();
        assert_eq!(got, agents.to_vec());
    }
}

#[tokio::test]
async fn retries_server_errors_then_succeeds() {
    let s = Stack::start().await;
    let t = s.token(1);
    let id = s
        .create(
            &t,
            json!({"name": "flaky", "tasks": [
                {"agent": "flaky_agent", "input": {"_mock": {"fail_status": 503, "fail_times": 2}}},
                {"agent": "next_agent", "input": {"x": "{{previous_output}}"}}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["tasks"][0]["attempts"], 3);
    assert_eq!(
        s.agent.calls.get(&format!("{id}:step_1:1")),
        3,
        "same Idempotency-Key on every retry"
    );
}

#[tokio::test]
async fn a_4xx_fails_the_step_at_once_and_skips_the_rest() {
    let s = Stack::start().await;
    let t = s.token(1);
    let id = s
        .create(
            &t,
            json!({"name": "bad input", "tasks": [
                {"agent": "ok_agent", "input": {}},
                {"agent": "strict_agent", "input": {"_mock": {"fail_status": 422}}},
                {"agent": "never_agent", "input": {}}
            ]}),
        )
        .await;
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["tasks"][0]["status"], "completed");
    assert_eq!(w["tasks"][1]["status"], "failed");
    assert_eq!(w["tasks"][1]["attempts"], 1);
    assert_eq!(w["tasks"][1]["error"]["kind"], "rejected");
    assert_eq!(w["tasks"][1]["error"]["http_status"], 422);
    assert_eq!(w["tasks"][2]["status"], "skipped");
    assert_eq!(w["error"]["step"], 2);
    assert_eq!(
        w["results"].as_array().unwrap().len(),
        1,
        "the completed step's result is kept"
    );
    assert_eq!(
        s.agent.calls.get(&format!("{id}:step_2:1")),
        1,
        "4xx is not retried"
    );
    assert_eq!(s.agent.calls.get(&format!("{id}:step_3:1")), 0);
}

#[tokio::test]
async fn timeouts_use_the_per_agent_settings_and_fail_after_the_attempts() {
    let agents = "[agents.slow_agent]\nurl = \"{mock}/agents/slow_agent\"\ntimeout_ms = 150\nmax_attempts = 2\n";
    let s = Stack::start_with(Duration::ZERO, agents, &[]).await;
    let t = s.token(1);
    let id = s
        .create(&t, json!({"name": "slow", "tasks": [{"agent": "slow_agent", "input": {"_mock": {"delay_ms": 1000}}}]}))
        .await;
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(w["tasks"][0]["error"]["kind"], "timeout");
    assert_eq!(w["tasks"][0]["attempts"], 2);
    assert_eq!(s.agent.calls.get(&format!("{id}:step_1:1")), 2);
}

#[tokio::test]
async fn connection_errors_fail_the_step_after_retries() {
    // Nothing listens on port 9 here: every attempt is refused.
    let s = Stack::start_with(
        Duration::ZERO,
        "[agents.gone]\nurl = \"http://127.0.0.1:9/x\"\nmax_attempts = 2\n",
        &[],
    )
    .await;
    let t = s.token(1);
    let id = s
        .create(&t, json!({"name": "gone", "tasks": [{"agent": "gone"}]}))
        .await;
    s.execute(&t, &id).await;
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed");
    assert_eq!(w["tasks"][0]["error"]["kind"], "connection");
    assert_eq!(w["tasks"][0]["attempts"], 2);
}

#[tokio::test]
async fn execute_is_only_for_pending_or_failed_and_resumes_a_failed_workflow() {
    let s = Stack::start().await;
    let t = s.token(5);
    // Step 2 fails its first 3 calls: with 3 attempts the workflow fails;
    // the resumed run's call succeeds.
    let id = s
        .create(&t, json!({"name": "resume", "tasks": [
            {"agent": "a", "input": {"n": 1}},
            {"agent": "b", "input": {"_mock": {"fail_status": 500, "fail_times": 3}, "prev": "{{previous_output}}"}},
            {"agent": "c", "input": {"prev": "{{previous_output}}"}}
        ]}))
        .await;
    assert_eq!(s.execute(&t, &id).await.0, 202);
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "failed");
    let first_output = w["results"][0].clone();

    let (st, body) = s.execute(&t, &id).await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["message"], "Workflow execution resumed from step_2");
    let w = s.wait_done(&t, &id, Duration::from_secs(30)).await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(w["runs"], 2);
    assert_eq!(w["results"][0], first_output, "earlier results are kept");
    assert_eq!(
        s.agent.calls.get(&format!("{id}:step_1:1")),
        1,
        "step 1 is not run again"
    );
    assert_eq!(s.agent.calls.get(&format!("{id}:step_2:1")), 4);

    let (st, body) = s.execute(&t, &id).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");
}

#[tokio::test]
async fn list_is_newest_first_with_status_filter_and_cursor_pagination() {
    let s = Stack::start().await;
    let t = s.token(11);
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(
            s.create(
                &t,
                json!({"name": format!("wf{i}"), "tasks": [{"agent": "a"}]}),
            )
            .await,
        );
    }
    s.execute(&t, &ids[1]).await;
    s.wait_done(&t, &ids[1], Duration::from_secs(30)).await;
    // Someone else's workflow never shows.
    s.create(
        &s.token(12),
        json!({"name": "other", "tasks": [{"agent": "a"}]}),
    )
    .await;

    let (st, page1) = s
        .req("GET", "/workflows/list?limit=2", Some(&t), None)
        .await;
    assert_eq!(st, 200);
    let names = |p: &serde_json::Value| -> Vec<String> {
        p["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ["wf4", "wf3"]);
    let c1 = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = s
        .req(
            "GET",
            &format!("/workflows/list?limit=2&cursor={c1}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(names(&page2), ["wf2", "wf1"]);
    let c2 = page2["next_cursor"].as_str().unwrap();
    let (_, page3) = s
        .req(
            "GET",
            &format!("/workflows/list?limit=2&cursor={c2}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(names(&page3), ["wf0"]);
    assert!(page3["next_cursor"].is_null());

    let (_, done) = s
        .req("GET", "/workflows/list?status=completed", Some(&t), None)
        .await;
    assert_eq!(names(&done), ["wf1"]);
    let (_, pending) = s
        .req("GET", "/workflows/list?status=pending", Some(&t), None)
        .await;
    assert_eq!(pending["count"], 4);

    let (_, all) = s
        .req(
            "GET",
            "/workflows/list?limit=100",
            Some(&s.admin_token(1)),
            None,
        )
        .await;
    assert_eq!(all["count"], 6, "admins see everyone's");
}

#[tokio::test]
async fn metrics_expose_the_guides_four_metrics() {
    let s = Stack::start().await;
    let t = s.token(3);
    let id = s.create(&t, pipeline("m", &CONTENT)).await;
    s.execute(&t, &id).await;
    s.wait_done(&t, &id, Duration::from_secs(30)).await;
    let bad = s.create(&t, common::failing("bad", 400)).await;
    s.execute(&t, &bad).await;
    s.wait_done(&t, &bad, Duration::from_secs(30)).await;
    s.create(&t, pipeline("waiting", &CONTENT)).await;
    // The engine counts what it consumes from the log, which may be after
    // the projection (and so the API) shows it.
    let mut text = String::new();
    for _ in 0..100 {
        let (_, body) = s.req("GET", "/metrics", None, None).await;
        text = body.as_str().unwrap().to_owned();
        if text.contains("workflow_executions_total{status=\"completed\"} 1")
            && text.contains("workflow_pending_count 1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("workflow_executions_total{status=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("workflow_duration_seconds_bucket"), "{text}");
    assert!(
        text.contains("workflow_step_duration_seconds_bucket{agent=\"unregistered\""),
        "{text}"
    );
    assert!(text.contains("workflow_active_count 0"), "{text}");
    // What the dashboard and the alerts use beyond §9.1.
    for series in [
        "workflow_duration_seconds_count{workflow=\"m\"} 1",
        "workflow_executions_total{status=\"failed\"} 1",
        "workflow_step_failures_total{agent=\"unregistered\"} 1",
        "workflow_pending_count 1",
        "agentflow_agent_calls_total{agent=\"unregistered\",outcome=\"rejected\"} 1",
        "agentflow_log_append_seconds_bucket",
        "agentflow_projector_lag_seconds",
        "agentflow_engine_partitions_owned 4",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
}

#[tokio::test]
async fn roles_split_across_processes_still_read_their_writes() {
    // API + engine in one process, the projector alone in another (its own
    // consumer group): create and execute wait for the other process's
    // projection through Postgres.
    let s = Stack::start_split().await;
    let t = s.token(21);
    let id = s.create(&t, pipeline("split", &CONTENT)).await;
    assert_eq!(s.get(&t, &id).await["status"], "pending", "visible at once");
    assert_eq!(s.execute(&t, &id).await.0, 202);
    assert_ne!(s.get(&t, &id).await["status"], "pending");
    // The API process hears nothing from the projector process: waiting for
    // the end polls Postgres instead, and still answers when it is done.
    let (_, w) = s
        .req(
            "GET",
            &format!("/workflows/{id}?wait=finished&timeout_ms=30000"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(w["status"], "completed", "{w}");
    assert_eq!(
        w["results"][2]["output"]["input"]["content"],
        w["results"][1]["output"]
    );
}

#[tokio::test]
async fn create_with_an_idempotency_key_is_safe_to_retry() {
    let s = Stack::start().await;
    let t = s.token(31);
    let post = |key: &'static str, body: Value, token: String| {
        let http = s.http.clone();
        let url = format!("{}/workflows/create", s.base);
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let body = pipeline("once", &CONTENT);
    let (st, first) = post("order-7", body.clone(), t.clone()).await;
    assert_eq!(st, 201, "{first}");
    // The answer was "lost": the client retries, and gets the same workflow.
    let (st, again) = post("order-7", body.clone(), t.clone()).await;
    assert_eq!((st, &again), (201, &first));
    let (_, list) = s.req("GET", "/workflows/list", Some(&t), None).await;
    assert_eq!(list["count"], 1, "{list}");
    // Once it runs, a retry still names it (and says where it is).
    let id = first["workflow_id"].as_str().unwrap();
    s.execute(&t, id).await;
    s.wait_done(&t, id, Duration::from_secs(20)).await;
    let (st, later) = post("order-7", body.clone(), t.clone()).await;
    assert_eq!(
        (st, later["workflow_id"].as_str(), later["status"].as_str()),
        (201, Some(id), Some("completed"))
    );
    // The same key with another definition is a mistake, not a new workflow.
    let (st, err) = post("order-7", pipeline("other", &CONTENT), t.clone()).await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Keys are per user.
    let (st, theirs) = post("order-7", body.clone(), s.token(32)).await;
    assert_eq!(st, 201);
    assert_ne!(theirs["workflow_id"], first["workflow_id"]);
    // A key that is not visible ASCII is bad input.
    let r = s
        .http
        .post(format!("{}/workflows/create", s.base))
        .bearer_auth(&t)
        .header("Idempotency-Key", "has space")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn get_can_wait_until_the_workflow_is_finished() {
    let s = Stack::start().await;
    let t = s.token(33);
    let slow = |ms: u64| {
        json!({"name": "slow", "tasks": [
            {"agent": "a", "input": {"_mock": {"delay_ms": ms}}},
            {"agent": "b", "input": {"x": "{{previous_output}}"}}
        ]})
    };
    let id = s.create(&t, slow(600)).await;
    s.execute(&t, &id).await;
    let began = std::time::Instant::now();
    let (st, w) = s
        .req(
            "GET",
            &format!("/workflows/{id}?wait=finished&timeout_ms=20000"),
            Some(&t),
            None,
        )
        .await;
    let took = began.elapsed();
    assert_eq!((st, w["status"].as_str()), (200, Some("completed")), "{w}");
    assert!(took >= Duration::from_millis(400), "it waited: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "and answered at once: {took:?}"
    );

    // The timeout bounds the wait; the answer is the state at that moment.
    let long = s.create(&t, slow(5000)).await;
    s.execute(&t, &long).await;
    let began = std::time::Instant::now();
    let (st, w) = s
        .req(
            "GET",
            &format!("/workflows/{long}?wait=finished&timeout_ms=300"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!((st, w["status"].as_str()), (200, Some("running")), "{w}");
    assert!(began.elapsed() < Duration::from_secs(3));

    for bad in [
        "wait=soon",
        "wait=finished&timeout_ms=0",
        "wait=finished&timeout_ms=99999999",
        "wait=finished&timeout_ms=x",
    ] {
        let (st, b) = s
            .req("GET", &format!("/workflows/{id}?{bad}"), Some(&t), None)
            .await;
        assert_eq!(st, 400, "{bad}: {b}");
    }
    let (st, _) = s
        .req(
            "GET",
            &format!("/workflows/{id}?wait=finished"),
            Some(&s.token(34)),
            None,
        )
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn executes_at_the_same_time_run_the_workflow_once() {
    let s = Stack::start().await;
    let t = s.token(7);
    let id = s.create(&t, pipeline("raced", &CONTENT)).await;
    let answers = futures::future::join_all((0..8).map(|_| s.execute(&t, &id))).await;
    for (st, b) in &answers {
        assert!(*st == 202 || *st == 409, "{st} {b}");
    }
    assert!(answers.iter().any(|(st, _)| *st == 202), "{answers:?}");
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    assert_eq!(
        (w["status"].as_str(), w["runs"].as_u64()),
        (Some("completed"), Some(1)),
        "{w}"
    );
    let calls = s.agent.calls.snapshot();
    for step in 1..=3 {
        assert_eq!(
            calls.get(&format!("{id}:step_{step}:1")),
            Some(&1),
            "{calls:?}"
        );
    }
    assert_eq!(calls.len(), 3, "{calls:?}");
    s.assert_projection_is_the_fold(&[id]).await;
}
