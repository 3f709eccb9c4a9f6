//! `GET /openapi.json` covers every route, its auth and its error shapes,
//! and cannot drift from the router: every documented operation is served,
//! no undocumented method is, and real answers validate against the
//! documented schemas.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Stack, pipeline};
use serde_json::{Value, json};

const OPERATIONS: [(&str, &str); 10] = [
    ("post", "/workflows/create"),
    ("get", "/workflows/list"),
    ("get", "/workflows/{id}"),
    ("post", "/workflows/{id}/execute"),
    ("post", "/workflows/{id}/cancel"),
    ("get", "/workflows/{id}/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// Validates `body` against the documented schema of `method path status`.
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
        let (st, body) = s.req(&method.to_uppercase(), &path, Some(&t), None).await;
        assert_ne!(
            body["error"]["message"], "no such route",
            "{method} {path}: {st}"
        );
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
    check(&doc, "post", "/workflows/create", st, &created);
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
    check(&doc, "post", "/workflows/{id}/execute", st, &body);
    let w = s.wait_done(&t, &id, Duration::from_secs(20)).await;
    check(&doc, "get", "/workflows/{id}", 200, &w);
    let (st, body) = s
        .req("GET", &format!("/workflows/{id}/events"), Some(&t), None)
        .await;
    check(&doc, "get", "/workflows/{id}/events", st, &body);
    let (st, body) = s
        .req("GET", "/workflows/list?limit=1", Some(&t), None)
        .await;
    check(&doc, "get", "/workflows/list", st, &body);
    let other = s.create(&t, pipeline("to cancel", &["a"])).await;
    let (st, body) = s
        .req(
            "POST",
            &format!("/workflows/{other}/cancel"),
            Some(&t),
            None,
        )
        .await;
    check(&doc, "post", "/workflows/{id}/cancel", st, &body);
    let (st, body) = s.req("GET", "/readyz", None, None).await;
    check(&doc, "get", "/readyz", st, &body);
    // Errors too.
    let (st, body) = s.execute(&t, &id).await;
    check(&doc, "post", "/workflows/{id}/execute", st, &body); // 409
    let (st, body) = s.req("GET", "/workflows/list", None, None).await;
    check(&doc, "get", "/workflows/list", st, &body); // 401
    let (st, body) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(json!({"name": ""})),
        )
        .await;
    check(&doc, "post", "/workflows/create", st, &body); // 422
    let (st, body) = s.req("GET", "/workflows/nope", Some(&t), None).await;
    check(&doc, "get", "/workflows/{id}", st, &body); // 400
    let (st, body) = s
        .req("GET", &format!("/workflows/{some_id}"), Some(&t), None)
        .await;
    check(&doc, "get", "/workflows/{id}", st, &body); // 404
}
