//! A mock of the platform's agents, as a real HTTP server.
//!
//! `POST /agents/{agent}/api/v1/execute` answers after the configured
//! latency with `{"agent", "input", "text", "idempotency_key", "workflow_id",
//! "traceparent"}` (the headers it got) — the input is
//! echoed, so chained `{{previous_output}}` can be checked field by field.
//! An input may steer the mock with a `_mock` object:
//! - `{"fail_status": 503, "fail_times": 2}`: answer 503 to the first two
//!   calls with this `Idempotency-Key` (`fail_times` omitted: always);
//! - `{"delay_ms": 500}`: answer after that long;
//! - `{"not_json": true}`: answer 200 with a body that is not JSON;
//! - `{"pad_bytes": N}`: add a `"pad"` string of N bytes to the answer (a
//!   large output from a small input), a failure's answer included;
//! - `{"noise_bytes": N}`: the same, but N pseudo-random hex digits that
//!   differ on every call (what compression cannot shrink, as a real
//!   document: for measuring what storing outputs costs);
//! - `{"hold_until_calls": 2}`: hold each call with this `Idempotency-Key`
//!   until the key has had that many calls, then answer them all (tests
//!   use it to make two writers race on one step);
//! - `{"hold": "NAME"}`: hold the call until the test calls
//!   [`Gates::release`] with that name (to act while a call is under way,
//!   with no timing window).
//!
//! `GET /calls` returns how many calls each `Idempotency-Key` got;
//! [`Calls::bodies`] what each of them got; [`MockAgent::in_flight`] tells
//! which are being answered right now.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct Calls(Arc<CallsInner>);

#[derive(Default)]
struct CallsInner {
    /// Per `Idempotency-Key`: the body of each call, in arrival order.
    bodies: Mutex<HashMap<String, Vec<Value>>>,
    /// Woken at every call (for `hold_until_calls`).
    arrived: tokio::sync::Notify,
}

impl Calls {
    pub fn get(&self, key: &str) -> u32 {
        self.0
            .bodies
            .lock()
            .expect("not poisoned")
            .get(key)
            .map_or(0, |b| b.len() as u32)
    }

    pub fn snapshot(&self) -> HashMap<String, u32> {
        self.0
            .bodies
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(k, b)| (k.clone(), b.len() as u32))
            .collect()
    }

    /// The body of every call with `key`, in the order they arrived.
    pub fn bodies(&self, key: &str) -> Vec<Value> {
        self.0
            .bodies
            .lock()
            .expect("not poisoned")
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    fn record(&self, key: &str, body: &[u8]) -> u32 {
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let mut m = self.0.bodies.lock().expect("not poisoned");
        let calls = m.entry(key.to_owned()).or_default();
        calls.push(body);
        self.0.arrived.notify_waiters();
        calls.len() as u32
    }

    /// Waits until `key` has had `n` calls.
    async fn until(&self, key: &str, n: u32) {
        loop {
            let arrived = self.0.arrived.notified();
            if self.get(key) >= n {
                return;
            }
            arrived.await;
        }
    }
}

/// The calls being answered right now, by `Idempotency-Key` (a call whose
/// client hung up counts as over).
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, u32>>>);

impl InFlight {
    /// The keys with a call under way.
    pub fn keys(&self) -> std::collections::HashSet<String> {
        self.0
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }

    fn open(&self, key: &str) -> OpenCall {
        *self
            .0
            .lock()
            .expect("not poisoned")
            .entry(key.to_owned())
            .or_insert(0) += 1;
        OpenCall(self.clone(), key.to_owned())
    }
}

struct OpenCall(InFlight, String);

impl Drop for OpenCall {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().expect("not poisoned");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

#[derive(Clone)]
struct AppState {
    latency: Duration,
    calls: Calls,
    in_flight: InFlight,
    gates: Gates,
}

/// Named gates that hold calls until released (`{"_mock": {"hold": NAME}}`).
#[derive(Clone, Default)]
pub struct Gates(
    Arc<(
        Mutex<std::collections::HashSet<String>>,
        tokio::sync::Notify,
    )>,
);

impl Gates {
    /// Lets every call held at `name`, now and later, go on.
    pub fn release(&self, name: &str) {
        self.0
            .0
            .lock()
            .expect("not poisoned")
            .insert(name.to_owned());
        self.0.1.notify_waiters();
    }

    async fn pass(&self, name: &str) {
        loop {
            let released = self.0.1.notified();
            if self.0.0.lock().expect("not poisoned").contains(name) {
                return;
            }
            released.await;
        }
    }
}

pub struct MockAgent {
    pub addr: SocketAddr,
    pub calls: Calls,
    pub in_flight: InFlight,
    pub gates: Gates,
    task: tokio::task::JoinHandle<()>,
}

impl MockAgent {
    /// Serves on `listener` until dropped.
    pub fn serve(listener: tokio::net::TcpListener, latency: Duration) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let calls = Calls::default();
        let in_flight = InFlight::default();
        let gates = Gates::default();
        let app = router_with(latency, calls.clone(), in_flight.clone(), gates.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            calls,
            in_flight,
            gates,
            task,
        })
    }

    /// The base URL template for `AGENTFLOW_AGENT_URL_TEMPLATE`.
    pub fn url_template(&self) -> String {
        format!("http://{}/agents/{{agent}}", self.addr)
    }
}

impl Drop for MockAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(latency: Duration, calls: Calls) -> Router {
    router_with(latency, calls, InFlight::default(), Gates::default())
}

fn router_with(latency: Duration, calls: Calls, in_flight: InFlight, gates: Gates) -> Router {
    Router::new()
        .route("/agents/{agent}/api/v1/execute", post(execute))
        .route("/calls", get(list_calls))
        .route("/healthz", get(|| async { "ok" }))
        // Agents that take documents take large inputs (a 10 MB previous
        // output): no 2 MB default limit here.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(AppState {
            latency,
            calls,
            in_flight,
            gates,
        })
}

async fn list_calls(State(s): State<AppState>) -> Response {
    axum::Json(json!(s.calls.snapshot())).into_response()
}

async fn execute(
    State(s): State<AppState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let _open = s.in_flight.open(&key);
    let n = s.calls.record(&key, &body);
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")).into_response();
        }
    };
    let ctl = input.get("_mock").cloned().unwrap_or(Value::Null);
    if let Some(n) = ctl.get("hold_until_calls").and_then(Value::as_u64) {
        s.calls.until(&key, n as u32).await;
    }
    if let Some(gate) = ctl.get("hold").and_then(Value::as_str) {
        s.gates.pass(gate).await;
    }
    let delay = ctl
        .get("delay_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or(s.latency);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = ctl.get("fail_status").and_then(Value::as_u64) {
        let times = ctl
            .get("fail_times")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        if u64::from(n) <= times {
            let code =
                StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut error = json!({"error": format!("mock failure {n}")});
            if let Some(n) = ctl.get("pad_bytes").and_then(Value::as_u64) {
                error["pad"] = Value::String("x".repeat(n as usize));
            }
            return (code, axum::Json(error)).into_response();
        }
    }
    if ctl.get("not_json").and_then(Value::as_bool) == Some(true) {
        return (StatusCode::OK, "this is not json").into_response();
    }
    let x_workflow = headers
        .get("x-workflow-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut answer = json!({
        "agent": agent,
        "input": input,
        "text": format!("{agent} done (call {n})"),
        "idempotency_key": key,
        "workflow_id": x_workflow,
        "traceparent": traceparent,
    });
    if let Some(n) = ctl.get("pad_bytes").and_then(Value::as_u64) {
        answer["pad"] = Value::String("x".repeat(n as usize));
    }
    if let Some(len) = ctl.get("noise_bytes").and_then(Value::as_u64) {
        answer["pad"] = Value::String(noise(len as usize, &key, n));
    }
    axum::Json(answer).into_response()
}

/// `len` hex digits of xorshift noise seeded by the call (the same call
/// answers the same; every other call differently).
fn noise(len: usize, key: &str, call: u32) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(call);
    for b in key.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
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
