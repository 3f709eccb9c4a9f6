//! Auth, isolation and bad input: clear 4xx errors, nothing written.

mod common;

use std::time::Duration;

use common::{SECRET, Stack};
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    // Unpadded base64url, enough to forge tokens by hand.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = v.to_string().into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let s = Stack::start().await;
    let exp = chrono::Utc::now().timestamp() + 3600;
    let none_alg = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "42", "exp": exp}))
    );
    let wrong_key =
        agentflow_api::Jwt::new(b"another secret").mint(42, false, Duration::from_secs(600));
    let expired = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(
            &Header::default(),
            &json!({"sub": "42", "exp": chrono::Utc::now().timestamp() - 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let no_exp = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(
            &Header::default(),
            &json!({"sub": "42"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let bad_sub = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(
            &Header::default(),
            &json!({"sub": "alice", "exp": exp}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    for (what, token) in [
        ("missing", None),
        ("malformed", Some("not.a.jwt".to_owned())),
        ("alg none", Some(none_alg)),
        ("wrong signature", Some(wrong_key)),
        ("expired", Some(expired)),
        ("no exp", Some(no_exp)),
        ("non-integer sub", Some(bad_sub)),
    ] {
        for (method, path) in [("GET", "/workflows/list"), ("POST", "/workflows/create")] {
            let (st, body) = s
                .req(
                    method,
                    path,
                    token.as_deref(),
                    Some(json!({"name": "x", "tasks": [{"agent": "a"}]})),
                )
                .await;
            assert_eq!(st, 401, "{what}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        }
    }
    // A numeric sub is accepted too.
    let numeric = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(
            &Header::default(),
            &json!({"sub": 42, "exp": exp}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(
        s.req("GET", "/workflows/list", Some(&numeric), None)
            .await
            .0,
        200
    );
    let (_, list) = s.req("GET", "/workflows/list", None, None).await;
    assert!(list["error"].is_object());
}

#[tokio::test]
async fn another_users_workflow_is_not_found_and_admins_see_all() {
    let s = Stack::start().await;
    let (alice, bob) = (s.token(1), s.token(2));
    let id = s
        .create(
            &alice,
            json!({"name": "alice's", "tasks": [{"agent": "a"}]}),
        )
        .await;
    let (st, body) = s
        .req("GET", &format!("/workflows/{id}"), Some(&bob), None)
        .await;
    assert_error(st, &body, 404, "not_found");
    let (st, body) = s.execute(&bob, &id).await;
    assert_error(st, &body, 404, "not_found");
    assert_eq!(
        s.get(&alice, &id).await["status"],
        "pending",
        "bob's execute changed nothing"
    );
    let (_, bobs) = s.req("GET", "/workflows/list", Some(&bob), None).await;
    assert_eq!(bobs["count"], 0);
    let admin = s.admin_token(99);
    assert_eq!(s.get(&admin, &id).await["user_id"], 1);
    assert_eq!(s.execute(&admin, &id).await.0, 202);
    let unknown = uuid::Uuid::new_v4();
    let (st, body) = s
        .req("GET", &format!("/workflows/{unknown}"), Some(&alice), None)
        .await;
    assert_error(st, &body, 404, "not_found");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let s = Stack::start_with(Duration::ZERO, "", &[("AGENTFLOW_MAX_BODY_BYTES", "2048")]).await;
    let t = s.token(8);
    let raw = |body: &'static str| s.create_raw(&t, Some("application/json"), body);
    let (st, b) = raw("{not json").await;
    assert_error(st, &b, 400, "malformed_json");
    let (st, b) = raw("").await;
    assert_error(st, &b, 400, "malformed_json");
    let cases = [
        json!([1, 2]),
        json!({"tasks": [{"agent": "a"}]}),
        json!({"name": "", "tasks": [{"agent": "a"}]}),
        json!({"name": "x"}),
        json!({"name": "x", "tasks": []}),
        json!({"name": "x", "tasks": "a"}),
        json!({"name": "x", "tasks": [{"input": {}}]}),
        json!({"name": "x", "tasks": [{"agent": "../../etc"}]}),
        json!({"name": "x", "tasks": [{"agent": "a b"}]}),
        json!({"name": "x", "tasks": [{"agent": 5}]}),
        json!({"name": "x", "tasks": [{"agent": "a", "input": "{{secret}}"}]}),
        json!({"name": "x", "tasks": [{"agent": "a", "input": "{{previous_output}}"}]}),
        json!({"name": "x".repeat(300), "tasks": [{"agent": "a"}]}),
    ];
    for body in cases {
        let (st, b) = s
            .req("POST", "/workflows/create", Some(&t), Some(body.clone()))
            .await;
        assert_error(st, &b, 422, "invalid_workflow");
    }
    let big =
        json!({"name": "big", "tasks": [{"agent": "a", "input": {"blob": "x".repeat(4096)}}]});
    let (st, b) = s
        .req("POST", "/workflows/create", Some(&t), Some(big))
        .await;
    assert_error(st, &b, 413, "body_too_large");
    for bad in ["not-a-uuid", "1234", "%20"] {
        let (st, b) = s
            .req("GET", &format!("/workflows/{bad}"), Some(&t), None)
            .await;
        assert_error(st, &b, 400, "invalid_id");
        let (st, b) = s
            .req("POST", &format!("/workflows/{bad}/execute"), Some(&t), None)
            .await;
        assert_error(st, &b, 400, "invalid_id");
    }
    for q in [
        "status=done",
        "limit=0",
        "limit=1000",
        "limit=x",
        "cursor=zzz",
    ] {
        let (st, b) = s
            .req("GET", &format!("/workflows/list?{q}"), Some(&t), None)
            .await;
        assert_eq!(st, 400, "{q}: {b}");
    }
    let (st, b) = s.req("GET", "/nope", Some(&t), None).await;
    assert_error(st, &b, 404, "not_found");
    // Nothing was written by any of it.
    let (_, list) = s
        .req("GET", "/workflows/list", Some(&s.admin_token(1)), None)
        .await;
    assert_eq!(list["count"], 0, "{list}");
}

/// Issue 11.1: U+0000 is valid JSON but no Postgres text can hold it. A user
/// who sends it gets a 422 naming the field, and nothing reaches the log, so
/// the projection (everyone's reads) keeps working.
#[tokio::test]
async fn a_nul_character_in_user_input_is_a_422_naming_the_field() {
    let s = Stack::start().await;
    let t = s.token(9);
    let raw = |body: &'static str| s.create_raw(&t, Some("application/json"), body);
    for (body, field) in [
        (
            r#"{"name": "a\u0000b", "tasks": [{"agent": "a"}]}"#,
            "`name`",
        ),
        (
            r#"{"name": "x", "tasks": [{"agent": "a"}, {"agent": "b", "input": {"body": "hi\u0000"}}]}"#,
            "`tasks[1].input.body`",
        ),
        (
            r#"{"name": "x", "tasks": [{"agent": "a", "input": {"k\u0000": 1}}]}"#,
            "`tasks[0].input[\"k\\u0000\"]`",
        ),
    ] {
        let (st, b) = raw(body).await;
        assert_error(st, &b, 422, "invalid_character");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{field} named in {b}");
    }
    // A lone surrogate is not a character at all: malformed JSON.
    let (st, b) = raw(r#"{"name": "a\ud800b", "tasks": [{"agent": "a"}]}"#).await;
    assert_error(st, &b, 400, "malformed_json");
    // Nothing written, and the read side still works for everyone.
    let (_, list) = s
        .req("GET", "/workflows/list", Some(&s.admin_token(1)), None)
        .await;
    assert_eq!(list["count"], 0, "{list}");
    let id = s
        .create(&t, json!({"name": "after", "tasks": [{"agent": "a"}]}))
        .await;
    assert_eq!(s.get(&t, &id).await["status"], "pending");
}
