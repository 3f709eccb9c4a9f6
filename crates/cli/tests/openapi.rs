//! `GET /openapi.json` covers every route, its auth and its error shapes,
//! and cannot drift from the router: every documented operation is served,
//! no undocumented method is, and real answers validate against the
//! documented schemas.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Stack, pipeline};
use serde_json::{Value, json};

const OPERATIONS: [(&str, &str); 15] = [
    ("post", "/workflows/create"),
    ("get", "/workflows/list"),
    ("get", "/workflows/{id}"),
    ("post", "/workflows/{id}/execute"),
    ("post", "/workflows/{id}/cancel"),
    ("post", "/workflows/{id}/pause"),
    ("post", "/workflows/{id}/resume"),
    ("post", "/workflows/{id}/signals/{name}"),
    ("get", "/workflows/{id}/events"),
    ("get", "/workflows/{id}/stream"),
    ("get", "/workflows/stream"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// Validates `body` against the documented schema of `method path status`.
/// Asserts the answer had the status the test means, then checks it
/// against the document.
fn expect(doc: &Value, method: &str, path: &str, want: u16, got: u16, body: &Value) {
    assert_eq!(got, want, "{method} {path}: {body}");
    check(doc, method, path, got, body);
}

fn check(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {path} does not document {status}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} {status} has no JSON schema"
    );
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let v = jsonschema::validator_for(&root).expect("schema compiles");
    let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\n{body:#}"
    );
}

#[tokio::test]
async fn the_document_covers_every_route_and_real_answers_match_it() {
    let s = Stack::start().await;
    let (st, doc) = s.req("GET", "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // Exactly these operations, each with its auth and error shapes.
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in OPERATIONS
        .iter()
        .filter(|(_, p)| p.starts_with("/workflows"))
    {
        let op = &doc["paths"][path][method];
        assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
        for status in ["400", "401", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
        }
    }

    // Every documented operation is served (never the router's fallback),
    // and no other method is on those paths.
    let t = s.token(8);
    let some_id = uuid::Uuid::now_v7().to_string();
    for (method, path) in OPERATIONS {
        let path = path.replace("{id}", &some_id);
        if path == "/workflows/stream" {
            // An event stream that does not end: its head is enough.
            let resp = s
                .http
                .get(format!("{}{path}", s.base))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
        } else {
            let (st, body) = s.req(&method.to_uppercase(), &path, Some(&t), None).await;
            assert_ne!(
                body["error"]["message"], "no such route",
                "{method} {path}: {st}"
            );
        }
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if other.to_lowercase() != method
                && !OPERATIONS.contains(&(other.to_lowercase().as_str(), path.as_str()))
            {
                let (st, _) = s.req(other, &path, Some(&t), None).await;
                assert_eq!(st, 405, "{other} {path} is served but not documented");
            }
        }
    }

    // Real answers have the documented shapes.
    let (st, created) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(pipeline("doc", &["a", "b"])),
        )
        .await;
    expect(&doc, "post", "/workflows/create", 201, st, &created);
    let id = created["workflow_id"].as_str().unwrap().to_owned();
    // The check is not vacuous: a wrong shape fails it.
    let wrong = std::panic::catch_unwind(|| {
        check(
            &doc,
            "post",
            "/workflows/create",
            201,
            &json!({"workflow_id": 5}),
        )
    });
    assert!(wrong.is_err(), "a wrong body passed the schema");
    let (st, body) = s.execute(&t, &id).await;
    expect(&doc, "post", "/workflows/{id}/execute", 202, st, &body);
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    check(&doc, "get", "/workflows/{id}", 200, &w);
    // The steering operations, on a graph that waits.
    let (st, g) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(json!({"name": "doc graph", "input": {"k": 1}, "steps": [
                {"id": "a", "agent": "a", "input": {"_mock": {"hold": "doc"}}},
                {"id": "ok", "after": ["a"], "wait": {"signal": "ok"}},
                {"id": "b", "agent": "b", "after": ["ok"], "when": "steps.ok.output.go == true"}
            ]})),
        )
        .await;
    expect(&doc, "post", "/workflows/create", 201, st, &g);
    let g = g["workflow_id"].as_str().unwrap().to_owned();
    s.execute(&t, &g).await;
    common::wait_for_call(&s, &format!("{g}:a:1")).await;
    for op in ["pause", "resume"] {
        let path = format!("/workflows/{g}/{op}");
        let (st, body) = s.req("POST", &path, Some(&t), None).await;
        expect(
            &doc,
            "post",
            &format!("/workflows/{{id}}/{op}"),
            202,
            st,
            &body,
        );
    }
    let (st, body) = s
        .req(
            "POST",
            &format!("/workflows/{g}/signals/ok"),
            Some(&t),
            Some(json!({})),
        )
        .await;
    expect(
        &doc,
        "post",
        "/workflows/{id}/signals/{name}",
        409,
        st,
        &body,
    );
    s.agent.gates.release("doc");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let w = s.get(&t, &g).await;
        if w["status"] == "waiting" {
            check(&doc, "get", "/workflows/{id}", 200, &w);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, body) = s
        .req(
            "POST",
            &format!("/workflows/{g}/signals/ok"),
            Some(&t),
            Some(json!({"go": true})),
        )
        .await;
    expect(
        &doc,
        "post",
        "/workflows/{id}/signals/{name}",
        202,
        st,
        &body,
    );
    let w = s.wait_done(&t, &g, Duration::from_secs(20)).await;
    check(&doc, "get", "/workflows/{id}", 200, &w);
    let (st, body) = s
        .req("GET", &format!("/workflows/{g}/events"), Some(&t), None)
        .await;
    expect(&doc, "get", "/workflows/{id}/events", 200, st, &body);
    let (st, body) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
        .await;
    expect(&doc, "get", "/workflows/{id}/events", 200, st, &body);
    let (st, body) = s
        .req("GET", "/workflows/list?limit=1", Some(&t), None)
        .await;
    expect(&doc, "get", "/workflows/list", 200, st, &body);
    let other = s.create(&t, pipeline("to cancel", &["a"])).await;
    let (st, body) = s
        .req(
            "POST",
            &format!("/workflows/{other}/cancel"),
            Some(&t),
            None,
        )
        .await;
    expect(&doc, "post", "/workflows/{id}/cancel", 202, st, &body);
    let (st, body) = s.req("GET", "/readyz", None, None).await;
    expect(&doc, "get", "/readyz", 200, st, &body);
    // Errors too.
    let (st, body) = s.execute(&t, &id).await;
    expect(&doc, "post", "/workflows/{id}/execute", 409, st, &body);
    let (st, body) = s.req("GET", "/workflows/list", None, None).await;
    expect(&doc, "get", "/workflows/list", 401, st, &body);
    let (st, body) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(json!({"name": ""})),
        )
        .await;
    expect(&doc, "post", "/workflows/create", 422, st, &body);
    let (st, body) = s.req("GET", "/workflows/nope", Some(&t), None).await;
    expect(&doc, "get", "/workflows/{id}", 400, st, &body);
    let (st, body) = s
        .req("GET", &format!("/workflows/{some_id}"), Some(&t), None)
        .await;
    expect(&doc, "get", "/workflows/{id}", 404, st, &body);
}

/// A raw `POST /workflows/create`: any bytes, any Content-Type.
/// What fuzzing at the edges (scripts/fuzz.sh) found, and the adversarial
/// bodies it feeds, through real HTTP: the document states what the server
/// enforces, and every answer is a documented 2xx/4xx, never a 5xx.
#[tokio::test]
async fn the_document_states_the_limits_and_adversarial_input_gets_documented_4xx() {
    let s = Stack::start().await;
    let (_, doc) = s.req("GET", "/openapi.json", None, None).await;
    let t = s.token(9);

    // The limits the server enforces are in the document (schemathesis:
    // 6 operations answered 4xx to requests the document allowed).
    for (method, path) in OPERATIONS.iter().filter(|(_, p)| p.contains("{id}")) {
        let id = &doc["paths"][path][method]["parameters"][0];
        assert_eq!(id["name"], "id");
        assert_eq!(id["schema"]["format"], "uuid", "{method} {path}");
        assert!(
            !doc["paths"][path][method]["responses"]["404"].is_null(),
            "{method} {path} 404"
        );
    }
    let schemas = &doc["components"]["schemas"];
    // The object, and exactly one of `tasks` and `steps`.
    let create = &schemas["CreateWorkflow"]["allOf"][0];
    assert_eq!(create["additionalProperties"], false);
    assert_eq!(
        schemas["CreateWorkflow"]["allOf"][1]["oneOf"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        schemas["StepInput"]["allOf"][0]["additionalProperties"],
        false
    );
    assert_eq!(create["properties"]["name"]["maxLength"], 255);
    assert_eq!(create["properties"]["tasks"]["minItems"], 1);
    assert_eq!(create["properties"]["tasks"]["maxItems"], 100);
    assert_eq!(create["properties"]["timeout_ms"]["maximum"], 86_400_000);
    assert_eq!(schemas["TaskInput"]["additionalProperties"], false);
    assert_eq!(
        schemas["TaskInput"]["properties"]["agent"]["pattern"],
        "^[A-Za-z0-9_.-]{1,128}$"
    );
    let responses = &doc["paths"]["/workflows/create"]["post"]["responses"];
    for status in ["201", "400", "401", "413", "415", "422", "503"] {
        assert!(
            !responses[status].is_null(),
            "create does not document {status}"
        );
    }
    for (method, path) in [
        ("post", "/workflows/{id}/execute"),
        ("post", "/workflows/{id}/cancel"),
        ("post", "/workflows/{id}/pause"),
        ("post", "/workflows/{id}/resume"),
        ("post", "/workflows/{id}/signals/{name}"),
    ] {
        assert!(!doc["paths"][path][method]["responses"]["409"].is_null());
    }
    let list = &doc["paths"]["/workflows/list"]["get"]["parameters"];
    assert_eq!(
        list[0]["schema"]["enum"],
        json!([
            "pending",
            "running",
            "waiting",
            "paused",
            "completed",
            "failed",
            "cancelled"
        ])
    );
    assert_eq!(list[1]["schema"]["minimum"], 1);
    assert_eq!(list[1]["schema"]["maximum"], 100);

    // schemathesis: a wrong Content-Type was read as JSON; now 415.
    let body = pipeline("ct", &["a"]).to_string();
    let (st, b) = s.create_raw(&t, Some("text/plain"), body.clone()).await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (415, &json!("unsupported_media_type")),
        "{b}"
    );
    check(&doc, "post", "/workflows/create", st, &b);
    let (st, _) = s
        .create_raw(&t, Some("application/x-www-form-urlencoded"), body.clone())
        .await;
    assert_eq!(st, 415);
    let (st, b) = s
        .create_raw(&t, Some("application/json; charset=utf-8"), body.clone())
        .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = s.create_raw(&t, None, body).await;
    assert_eq!(st, 201, "no Content-Type is still read as JSON: {b}");

    // schemathesis: `55260.0` is an integer to the document, and was a 422.
    let (st, b) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(json!({"name": "f", "tasks": [{"agent": "a", "timeout_ms": 55260.0}], "timeout_ms": 1000.0})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let id = b["workflow_id"].as_str().unwrap().to_owned();
    let w = s.get(&t, &id).await;
    assert_eq!(w["timeout_ms"], 1000);

    // schemathesis: an out-of-range `timeout_ms` without `wait` was ignored.
    for q in [
        "timeout_ms=-7458",
        "timeout_ms=0",
        "timeout_ms=60001",
        "wait=finished&timeout_ms=x",
    ] {
        let (st, b) = s
            .req("GET", &format!("/workflows/{id}?{q}"), Some(&t), None)
            .await;
        assert_eq!(
            (st, &b["error"]["code"]),
            (400, &json!("invalid_timeout")),
            "{q}: {b}"
        );
        check(&doc, "get", "/workflows/{id}", st, &b);
    }

    // The adversarial bodies: each a documented 4xx, nothing written.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_input = format!(r#"{{"name":"d","tasks":[{{"agent":"a","input":{deep}}}]}}"#);
    let many = |n: usize| json!({"name": "n", "tasks": vec![json!({"agent": "a"}); n]}).to_string();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (deep.clone().into_bytes(), 400),
        (deep_input.into_bytes(), 400),
        (
            br#"{"name":"\ud800","tasks":[{"agent":"a"}]}"#.to_vec(),
            400,
        ),
        (
            b"{\"name\":\"\xed\xa0\x80\",\"tasks\":[{\"agent\":\"a\"}]}".to_vec(),
            400,
        ),
        (
            b"{\"name\":\"\xff\xfe\",\"tasks\":[{\"agent\":\"a\"}]}".to_vec(),
            400,
        ),
        (
            format!(
                r#"{{"name":"{}","tasks":[{{"agent":"a"}}]}}"#,
                "x".repeat(1 << 20)
            )
            .into_bytes(),
            413,
        ),
        (many(101).into_bytes(), 422),
    ];
    for (body, want) in cases {
        let head = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (st, b) = s.create_raw(&t, Some("application/json"), body).await;
        assert_eq!(st, want, "{head}: {b}");
        check(&doc, "post", "/workflows/create", st, &b);
    }
    // Every JSON type in every field: a 4xx (or a 201 where the type fits).
    let values = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1.5),
        json!("x"),
        json!([]),
        json!({}),
        json!([1]),
        json!({"a": 1}),
    ];
    for v in &values {
        let bodies = [
            v.clone(),
            json!({"name": v, "tasks": [{"agent": "a"}]}),
            json!({"name": "t", "tasks": v}),
            json!({"name": "t", "tasks": [v]}),
            json!({"name": "t", "tasks": [{"agent": v}]}),
            json!({"name": "t", "tasks": [{"agent": "a", "input": v}]}),
            json!({"name": "t", "tasks": [{"agent": "a", "timeout_ms": v}]}),
            json!({"name": "t", "tasks": [{"agent": "a"}], "timeout_ms": v}),
        ];
        for body in bodies {
            let (st, b) = s
                .req("POST", "/workflows/create", Some(&t), Some(body.clone()))
                .await;
            assert!(st == 201 || st == 400 || st == 422, "{body}: {st} {b}");
            check(&doc, "post", "/workflows/create", st, &b);
        }
    }
    // schemathesis: a retry with the same Idempotency-Key and the same body
    // was a 422 `idempotency_key_reused` when a number's spelling changed in
    // Postgres jsonb (3.372039349979969e+16 comes back as 33720393499799690).
    let body = json!({"name": "n", "tasks": [
        {"agent": "a", "input": {"n": 3.372039349979969e16, "m": [1.0, 1e2, -0.0]}},
        {"agent": "b", "input": 33720393499799690u64, "timeout_ms": 631.0}
    ]});
    let mut first = None;
    for _ in 0..2 {
        let r = s
            .http
            .post(format!("{}/workflows/create", s.base))
            .bearer_auth(&t)
            .header("idempotency-key", "retry-with-floats")
            .json(&body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        assert_eq!(st, 201, "{b}");
        let id = b["workflow_id"].clone();
        assert_eq!(*first.get_or_insert(id.clone()), id);
    }

    // 100 tasks is the limit, not over it; duplicate keys: the last wins.
    let (st, b) = s.create_raw(&t, Some("application/json"), many(100)).await;
    assert_eq!((st, &b["task_count"]), (201, &json!(100)), "{b}");
    let dup = r#"{"name":"first","name":"last","tasks":[{"agent":"a","agent":"b"}]}"#;
    let (st, b) = s.create_raw(&t, Some("application/json"), dup).await;
    assert_eq!((st, &b["name"]), (201, &json!("last")), "{b}");
    let w = s.get(&t, b["workflow_id"].as_str().unwrap()).await;
    assert_eq!(w["tasks"][0]["agent"], "b");
}
