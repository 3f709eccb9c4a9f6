//! Calling agents: `POST {base}/api/v1/execute` with retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_core::{AgentName, StepError, StepErrorKind, WorkflowId};
use rand::Rng;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::metrics as m;

/// How to call one agent.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub base_url: String,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// At most this many calls in flight at once (0: unlimited).
    pub concurrency: usize,
}

/// Retry and timeout defaults for agents not configured one by one.
#[derive(Debug, Clone)]
pub struct AgentDefaults {
    /// `{agent}` is replaced by the agent's name.
    pub url_template: String,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The largest answer body taken from an agent: a larger one fails the
    /// step at once (`output_too_large`), read no further than this.
    pub max_output_bytes: usize,
}

/// What came of one step's call, after retries.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    pub result: Result<Value, StepError>,
    pub attempts: u32,
    pub duration: Duration,
}

struct Registered {
    settings: AgentSettings,
    limit: Option<Arc<Semaphore>>,
}

/// Calls agents. Cheap to clone.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    registry: Arc<HashMap<AgentName, Registered>>,
    defaults: Arc<AgentDefaults>,
}

impl AgentClient {
    pub fn new(defaults: AgentDefaults, registry: HashMap<AgentName, AgentSettings>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client builds");
        let registry = registry
            .into_iter()
            .map(|(name, settings)| {
                let limit = (settings.concurrency > 0)
                    .then(|| Arc::new(Semaphore::new(settings.concurrency)));
                (name, Registered { settings, limit })
            })
            .collect();
        Self {
            http,
            registry: Arc::new(registry),
            defaults: Arc::new(defaults),
        }
    }

    /// The metric label for an agent: its name when it is in the registry,
    /// else `unregistered` (agent names come from users: unbounded).
    pub fn label(&self, agent: &AgentName) -> String {
        if self.registry.contains_key(agent) {
            agent.as_str().to_owned()
        } else {
            "unregistered".to_owned()
        }
    }

    fn settings(&self, agent: &AgentName) -> (AgentSettings, Option<Arc<Semaphore>>) {
        match self.registry.get(agent) {
            Some(r) => (r.settings.clone(), r.limit.clone()),
            None => (
                AgentSettings {
                    base_url: self
                        .defaults
                        .url_template
                        .replace("{agent}", agent.as_str()),
                    timeout: self.defaults.timeout,
                    max_attempts: self.defaults.max_attempts,
                    concurrency: 0,
                },
                None,
            ),
        }
    }

    /// Calls the agent for one step; retries 5xx, timeouts and connection
    /// errors with exponential backoff and full jitter; a 4xx fails at once.
    /// `attempt_timeout` (the task's own) overrides the agent's. Before each
    /// retry it asks `give_up`: `None` means it gave up (the workflow is
    /// being cancelled) with no result.
    pub async fn call(
        &self,
        workflow_id: WorkflowId,
        agent: &AgentName,
        idempotency_key: &str,
        input: &Value,
        attempt_timeout: Option<Duration>,
        give_up: &(dyn Fn() -> bool + Send + Sync),
    ) -> Option<CallOutcome> {
        let (mut settings, limit) = self.settings(agent);
        if let Some(t) = attempt_timeout {
            settings.timeout = t;
        }
        let url = format!("{}/api/v1/execute", settings.base_url.trim_end_matches('/'));
        let label = self.label(agent);
        let started = Instant::now();
        let max_attempts = settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _permit = match &limit {
                Some(s) => Some(
                    s.clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore never closed"),
                ),
                None => None,
            };
            let result = self
                .attempt(&url, &settings, workflow_id, idempotency_key, input)
                .await;
            drop(_permit);
            let outcome = match &result {
                Ok(_) => "ok",
                Err((e, _)) => e.kind.as_str(),
            };
            metrics::counter!(m::AGENT_CALLS, "agent" => label.clone(), "outcome" => outcome)
                .increment(1);
            match result {
                Ok(v) => {
                    return Some(CallOutcome {
                        result: Ok(v),
                        attempts: attempt,
                        duration: started.elapsed(),
                    });
                }
                Err((e, retriable)) if !retriable || attempt >= max_attempts => {
                    return Some(CallOutcome {
                        result: Err(e),
                        attempts: attempt,
                        duration: started.elapsed(),
                    });
                }
                Err(_) if give_up() => {
                    tracing::info!(%workflow_id, agent = %agent, attempt, "cancelled: no more attempts");
                    return None;
                }
                Err((e, _)) => {
                    let delay = self.backoff(attempt);
                    tracing::debug!(%workflow_id, agent = %agent, attempt, error = %e.message,
                        delay_ms = delay.as_millis() as u64, "agent call failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .defaults
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.defaults.backoff_max);
        // Full jitter: spreads retries of many workflows hitting one agent.
        let ms = rand::rng().random_range(0..=exp.as_millis().max(1) as u64);
        Duration::from_millis(ms)
    }

    async fn attempt(
        &self,
        url: &str,
        settings: &AgentSettings,
        workflow_id: WorkflowId,
        idempotency_key: &str,
        input: &Value,
    ) -> Result<Value, (StepError, bool)> {
        let err = |kind, message: String, http_status| StepError {
            kind,
            message,
            http_status,
        };
        let resp = self
            .http
            .post(url)
            .timeout(settings.timeout)
            .header("Idempotency-Key", idempotency_key)
            .header("X-Workflow-Id", workflow_id.to_string())
            .header("traceparent", traceparent(workflow_id))
            .json(input)
            .send()
            .await;
        // Timeouts and connection trouble, while sending or while reading
        // the answer, are worth another attempt.
        let transport = |e: reqwest::Error, doing: &str| {
            let (kind, msg) = if e.is_timeout() {
                (
                    StepErrorKind::Timeout,
                    format!("no answer within {} ms", settings.timeout.as_millis()),
                )
            } else {
                (
                    StepErrorKind::Connection,
                    format!("{doing}: {}", root_cause(&e)),
                )
            };
            (err(kind, msg, None), true)
        };
        let mut resp = resp.map_err(|e| transport(e, "cannot reach agent"))?;
        let status = resp.status();
        let code = Some(status.as_u16());
        // Read at most the cap: an agent answering gigabytes must not take
        // the node's memory with it.
        let cap = self.defaults.max_output_bytes;
        let too_large = |n: String| {
            let msg = format!(
                "agent answered {status} with {n} bytes, more than max_output_bytes ({cap})"
            );
            (err(StepErrorKind::OutputTooLarge, msg, code), false)
        };
        if let Some(len) = resp.content_length()
            && len > cap as u64
        {
            return Err(too_large(len.to_string()));
        }
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport(e, "reading the answer failed"))?
        {
            if body.len() + chunk.len() > cap {
                return Err(too_large(format!("over {cap}")));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_server_error() {
            let msg = format!("agent answered {status}: {}", snippet(&body));
            return Err((err(StepErrorKind::ServerError, msg, code), true));
        }
        if !status.is_success() {
            let msg = format!("agent answered {status}: {}", snippet(&body));
            return Err((err(StepErrorKind::Rejected, msg, code), false));
        }
        serde_json::from_slice(&body).map_err(|e| {
            let msg = format!("agent answered {status} with a body that is not JSON: {e}");
            (err(StepErrorKind::InvalidResponse, msg, code), false)
        })
    }
}

/// A W3C `traceparent` for one call: the trace id is the workflow id (so an
/// agent's traces of one workflow join up), the parent id is fresh.
fn traceparent(workflow_id: WorkflowId) -> String {
    let span: u64 = rand::rng().random_range(1..=u64::MAX);
    format!("00-{}-{span:016x}-01", workflow_id.as_uuid().simple())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An agent that answers 200 with a chunked body that never ends.
    async fn endless_agent() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = conn.read(&mut buf).await;
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                transfer-encoding: chunked\r\n\r\n";
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                    while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        format!("http://{addr}/agents/{{agent}}")
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_cut_off_and_fails_the_step_at_once() {
        let client = AgentClient::new(
            AgentDefaults {
                url_template: endless_agent().await,
                timeout: Duration::from_secs(10),
                max_attempts: 3,
                backoff_base: Duration::from_millis(1),
                backoff_max: Duration::from_millis(1),
                max_output_bytes: 1024 * 1024,
            },
            HashMap::new(),
        );
        let outcome = client
            .call(
                WorkflowId::new(),
                &AgentName::parse("writer").unwrap(),
                "k",
                &serde_json::json!({}),
                None,
                &|| false,
            )
            .await
            .unwrap();
        let error = outcome.result.unwrap_err();
        assert_eq!(error.kind, StepErrorKind::OutputTooLarge, "{error:?}");
        assert_eq!(outcome.attempts, 1, "not retried");
    }
}
