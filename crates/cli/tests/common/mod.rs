//! A real stack per test: its own database and topic on the shared Postgres
//! and broker (started by scripts/test.sh), the mock agent as a real HTTP
//! server, and `agentflow serve` as a real process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentflow_mock_agent::MockAgent;
use serde_json::{Value, json};

pub const SECRET: &str = "test-secret-please-ignore";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts Postgres and the broker")
    })
}

pub struct Stack {
    pub db_url: String,
    pub brokers: String,
    pub topic: String,
    pub agent: MockAgent,
    pub agents_file: std::path::PathBuf,
    pub extra_env: Vec<(String, String)>,
    pub server: Option<Child>,
    /// Arguments after `serve` for the server process.
    pub serve_args: Vec<String>,
    /// Other `agentflow` processes of this stack (killed on drop).
    pub helpers: Vec<Child>,
    /// More `serve` nodes: (base URL, process), killed on drop.
    pub nodes: Vec<(String, Child)>,
    pub base: String,
    pub http: reqwest::Client,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Stack {
    /// A fresh database, topic and mock agent (with `latency`), and a
    /// running server.
    pub async fn start() -> Self {
        Self::start_with(Duration::ZERO, "", &[]).await
    }

    pub async fn start_with(
        latency: Duration,
        agents_toml: &str,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let mut s = Self::prepare(latency, agents_toml, extra_env).await;
        s.spawn_server().await;
        s
    }

    /// The database, topic and mock agent, with no server yet.
    async fn prepare(latency: Duration, agents_toml: &str, extra_env: &[(&str, &str)]) -> Self {
        let admin = extra_env
            .iter()
            .find(|(k, _)| *k == "AGENTFLOW_TEST_ADMIN_URL")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| env("AGENTFLOW_TEST_ADMIN_URL"));
        let brokers = extra_env
            .iter()
            .find(|(k, _)| *k == "AGENTFLOW_KAFKA_BROKERS")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| env("AGENTFLOW_KAFKA_BROKERS"));
        let (name, db_url) = new_database(&admin, "t").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = MockAgent::serve(listener, latency).unwrap();
        let dir = std::env::temp_dir().join(format!("agentflow-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let agents_file = dir.join("agents.toml");
        std::fs::write(
            &agents_file,
            agents_toml.replace("{mock}", &format!("http://{}", agent.addr)),
        )
        .unwrap();
        Self {
            db_url,
            brokers,
            topic: format!("t-{}", uuid::Uuid::new_v4().simple()),
            agent,
            agents_file,
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            server: None,
            serve_args: vec![],
            helpers: vec![],
            nodes: vec![],
            base: String::new(),
            http: reqwest::Client::new(),
            _dir: TempDir(dir),
        }
    }

    /// The database, topic and mock agent (no latency), with `extra_env`
    /// for every process, and no server yet.
    pub async fn prepare_with(extra_env: &[(&str, &str)]) -> Self {
        Self::prepare(Duration::ZERO, "", extra_env).await
    }

    /// A stack whose API+engine process runs `serve --no-projector` and whose
    /// projector is a process of its own (`serve --no-api --no-engine`).
    pub async fn start_split() -> Self {
        let mut s = Self::prepare(Duration::ZERO, "", &[]).await;
        s.serve_args = vec!["--no-projector".into()];
        s.spawn_helper(&["serve", "--no-api", "--no-engine"]);
        s.spawn_server().await;
        s
    }

    /// `agentflow ARGS` with this stack's configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentflow"));
        cmd.args(args)
            .env("AGENTFLOW_DATABASE_URL", &self.db_url)
            .env("AGENTFLOW_KAFKA_BROKERS", &self.brokers)
            .env("AGENTFLOW_TOPIC", &self.topic)
            .env("AGENTFLOW_PARTITIONS", "4")
            .env("AGENTFLOW_GROUP_PREFIX", format!("{}.", self.topic))
            .env("AGENTFLOW_HTTP_ADDR", "127.0.0.1:0")
            .env("AGENTFLOW_JWT_SECRET", SECRET)
            .env("AGENTFLOW_AGENTS_FILE", &self.agents_file)
            .env("AGENTFLOW_AGENT_URL_TEMPLATE", self.agent.url_template())
            .env("AGENTFLOW_AGENT_TIMEOUT_MS", "5000")
            .env("AGENTFLOW_AGENT_BACKOFF_BASE_MS", "10")
            .env("AGENTFLOW_AGENT_BACKOFF_MAX_MS", "50")
            .env("AGENTFLOW_DATABASE_MAX_CONNECTIONS", "8")
            .env("AGENTFLOW_LOG", "warn,agentflow=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.env("AGENTFLOW_KAFKA_BROKERS", &self.brokers);
        cmd
    }

    /// Starts another `agentflow` process of this stack.
    pub fn spawn_helper(&mut self, args: &[&str]) {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::null());
        self.helpers.push(cmd.spawn().expect("spawn agentflow"));
    }

    /// Starts `agentflow serve` and waits until it is ready.
    pub async fn spawn_server(&mut self) {
        let (child, base) = self.launch(&[]).await;
        self.base = base;
        self.server = Some(child);
    }

    /// Starts another `agentflow serve` node (its own node id and port) of
    /// this stack, and returns its base URL.
    pub async fn spawn_node(&mut self, node_id: &str) -> String {
        let (child, base) = self.launch(&[("AGENTFLOW_NODE_ID", node_id)]).await;
        self.nodes.push((base.clone(), child));
        base
    }

    /// Like [`Stack::spawn_node`], with more environment for that node
    /// (e.g. a consumer group of its own).
    pub async fn spawn_node_with(&mut self, node_id: &str, env: &[(&str, &str)]) -> String {
        let mut env = env.to_vec();
        env.push(("AGENTFLOW_NODE_ID", node_id));
        let (child, base) = self.launch(&env).await;
        self.nodes.push((base.clone(), child));
        base
    }

    async fn launch(&self, env: &[(&str, &str)]) -> (Child, String) {
        let mut args = vec!["serve"];
        args.extend(self.serve_args.iter().map(String::as_str));
        let mut cmd = self.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn agentflow serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("agentflow listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server printed its address");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.http.get(format!("{base}/readyz")).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "server not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (child, base)
    }

    /// The node started by [`Stack::spawn_node`] at `base`, taken out of the
    /// stack (to kill or stop it).
    pub fn take_node(&mut self, base: &str) -> Child {
        let i = self
            .nodes
            .iter()
            .position(|(b, _)| b == base)
            .expect("a node of this stack");
        self.nodes.remove(i).1
    }

    /// SIGKILL: no shutdown, no flush, no goodbye to the group.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.server.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn token(&self, sub: i64) -> String {
        agentflow_api::Jwt::new(SECRET.as_bytes()).mint(sub, false, Duration::from_secs(3600))
    }

    pub fn admin_token(&self, sub: i64) -> String {
        agentflow_api::Jwt::new(SECRET.as_bytes()).mint(sub, true, Duration::from_secs(3600))
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.req_to(&self.base, method, path, token, body).await
    }

    /// A request to the node at `base`.
    pub async fn req_to(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.request(base, method, path, token, &[], body).await
    }

    /// A request with more headers (e.g. `Idempotency-Key`).
    pub async fn req_with_headers(
        &self,
        method: &str,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> (u16, Value) {
        self.request(&self.base, method, path, Some(token), headers, Some(body))
            .await
    }

    async fn request(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /workflows/create` with these bytes as the body, as given
    /// (malformed JSON, another Content-Type, none): the status and the
    /// answer (JSON, or its text).
    pub async fn create_raw(
        &self,
        token: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}/workflows/create", self.base))
            .bearer_auth(token)
            .body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        let resp = r.send().await.unwrap();
        let st = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create(&self, token: &str, body: Value) -> String {
        let (st, b) = self
            .req("POST", "/workflows/create", Some(token), Some(body))
            .await;
        assert_eq!(st, 201, "{b}");
        b["workflow_id"].as_str().unwrap().to_owned()
    }

    pub async fn execute(&self, token: &str, id: &str) -> (u16, Value) {
        self.req(
            "POST",
            &format!("/workflows/{id}/execute"),
            Some(token),
            None,
        )
        .await
    }

    pub async fn get(&self, token: &str, id: &str) -> Value {
        let (st, b) = self
            .req("GET", &format!("/workflows/{id}"), Some(token), None)
            .await;
        assert_eq!(st, 200, "{b}");
        b
    }

    /// The workflow once finished, in one waiting GET (polling would fetch
    /// a large workflow again and again); fails if not finished in 60 s.
    pub async fn finished(&self, token: &str, id: &str) -> Value {
        let (st, w) = self
            .req(
                "GET",
                &format!("/workflows/{id}?wait=finished&timeout_ms=60000"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(st, 200, "{w}");
        assert!(
            matches!(
                w["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ),
            "{id} not finished in 60 s: {}",
            w["status"]
        );
        w
    }

    /// The sum of a counter's series in the server's `/metrics` (0 when it
    /// was never written).
    pub async fn counter(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls until the workflow is completed, failed or cancelled.
    pub async fn wait_done(&self, token: &str, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.get(token, id).await;
            if matches!(
                w["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "workflow {id} not done in {timeout:?}: {w}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// An Apache Kafka of a test's own (scripts/stack.sh, KRaft, data in a temp
/// dir): one node, or a cluster of three (replication factor 3,
/// `min.insync.replicas=2`), for tests that stop, kill or pause brokers.
pub struct OwnBroker {
    dir: std::path::PathBuf,
    brokers: String,
    pub nodes: usize,
}

impl OwnBroker {
    pub fn start() -> Self {
        Self::cluster(1)
    }

    /// `nodes` KRaft nodes, each broker and controller.
    pub fn cluster(nodes: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("kafka-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = stack_sh_output(&["kafka-start", dir.to_str().unwrap(), &nodes.to_string()]);
        Self {
            dir,
            brokers: out.trim().to_owned(),
            nodes,
        }
    }

    /// The bootstrap list, `host:port,...`.
    pub fn brokers(&self) -> String {
        self.brokers.clone()
    }

    /// Node `n`'s (1-based) address.
    pub fn node_addr(&self, n: usize) -> String {
        self.brokers.split(',').nth(n - 1).unwrap().to_owned()
    }

    /// SIGKILL node `n`: no shutdown, no goodbye to the controller.
    pub fn kill_node(&self, n: usize) {
        stack_sh(&[
            "kafka-node",
            self.dir.to_str().unwrap(),
            &n.to_string(),
            "kill",
        ]);
    }

    /// Starts node `n` again from its data, on its ports, and waits until it is up.
    pub fn start_node(&self, n: usize) {
        stack_sh(&[
            "kafka-node",
            self.dir.to_str().unwrap(),
            &n.to_string(),
            "start",
        ]);
    }

    /// Kills every node at once.
    pub fn kill9(&mut self) {
        stack_sh(&["kafka-stop", self.dir.to_str().unwrap()]);
    }

    /// Starts every node again from its data.
    pub fn restart(&mut self) {
        stack_sh_output(&[
            "kafka-start",
            self.dir.to_str().unwrap(),
            &self.nodes.to_string(),
        ]);
    }

    /// The node that leads `partition` of `topic`, from the cluster's metadata.
    pub fn leader(&self, topic: &str, partition: i32) -> usize {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let t = md.topics().iter().find(|t| t.name() == topic).unwrap();
        let p = t.partitions().iter().find(|p| p.id() == partition).unwrap();
        p.leader() as usize
    }
}

/// A Postgres cluster of a test's own (scripts/stack.sh), for tests that
/// stop and restart Postgres.
pub struct OwnPostgres {
    dir: std::path::PathBuf,
    pub admin_url: String,
}

const STACK_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/stack.sh");

fn stack_sh(args: &[&str]) {
    stack_sh_output(args);
}

/// Runs scripts/stack.sh and returns what it printed.
fn stack_sh_output(args: &[&str]) -> String {
    let out = Command::new(STACK_SH)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/stack.sh");
    assert!(out.status.success(), "scripts/stack.sh {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

impl OwnPostgres {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("pg-{}", uuid::Uuid::new_v4().simple()));
        stack_sh(&["pg-start", dir.to_str().unwrap()]);
        let port = std::fs::read_to_string(dir.join("pg.port")).unwrap();
        Self {
            admin_url: format!("postgres://postgres@127.0.0.1:{}/postgres", port.trim()),
            dir,
        }
    }

    pub fn stop(&self) {
        stack_sh(&["pg-stop", self.dir.to_str().unwrap()]);
    }

    pub fn restart(&self) {
        stack_sh(&["pg-start", self.dir.to_str().unwrap()]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(STACK_SH)
            .args(["kafka-stop", self.dir.to_str().unwrap()])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.kill9();
        for h in self
            .helpers
            .iter_mut()
            .chain(self.nodes.iter_mut().map(|(_, c)| c))
        {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// SIGTERM: the polite stop. Waits for the process to exit and returns how
/// long that took.
pub async fn sigterm(mut child: Child, limit: Duration) -> Duration {
    let began = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM");
    loop {
        if child.try_wait().unwrap().is_some() {
            return began.elapsed();
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            panic!("did not exit within {limit:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of the topic as JSON, with the event_type header, in log
/// order per partition (read with a plain Kafka consumer).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(String, String, Value)> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut by_partition = vec![];
    for p in md.topics()[0].partitions() {
        // The start is above 0 once an archive moved it.
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = low;
        while got < high && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                let header = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "event_type"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    .unwrap_or_default();
                by_partition.push((
                    key,
                    header,
                    serde_json::from_slice(m.payload().unwrap()).unwrap(),
                ));
                got = m.offset() + 1;
            }
        }
        assert!(got >= high, "partition {} not read to its end", p.id());
    }
    by_partition
}

/// The fold of the log, per workflow id: what every reader must agree with.
pub fn fold_log(
    brokers: &str,
    topic: &str,
) -> std::collections::HashMap<String, agentflow_core::WorkflowState> {
    let mut states = std::collections::HashMap::new();
    for (key, _, v) in read_topic(brokers, topic) {
        let rec = agentflow_core::Record::from_bytes(v.to_string().as_bytes()).unwrap();
        let slot = states.entry(key).or_insert(None);
        let _ = agentflow_core::apply(slot, &rec);
    }
    states
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

impl Stack {
    /// Asserts that the Postgres projection of each workflow is exactly the
    /// fold of its records in the log (waiting a little for the projector).
    pub async fn assert_projection_is_the_fold(&self, ids: &[String]) {
        let store = agentflow_store::Store::connect(&self.db_url, 2)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = fold_log(&self.brokers, &self.topic);
            let mut diff = vec![];
            for id in ids {
                let wid = agentflow_core::WorkflowId::parse(id).unwrap();
                let projected = store.reader().get_workflow(wid).await.unwrap();
                if projected.as_ref() != log.get(id) {
                    diff.push(format!(
                        "{id}: projected {projected:?}\n  log {:?}",
                        log.get(id)
                    ));
                }
            }
            if diff.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "projection differs from the log:\n{}",
                diff.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn pipeline(name: &str, agents: &[&str]) -> Value {
    let tasks: Vec<Value> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                json!({"agent": a, "input": {"topic": "AI in healthcare", "format": "blog_post"}})
            } else {
                json!({"agent": a, "input": {"content": "{{previous_output}}", "step": i + 1}})
            }
        })
        .collect();
    json!({"name": name, "tasks": tasks})
}

/// A one-step workflow whose agent answers `status` (4xx: fails at once).
pub fn failing(name: &str, status: u16) -> Value {
    json!({"name": name, "tasks": [{"agent": "a", "input": {"_mock": {"fail_status": status}}}]})
}

/// The records of a completed three-step workflow, in order.
pub const THREE_STEP_EVENTS: [&str; 6] = [
    "workflow.created",
    "workflow.started",
    "agent.executed",
    "agent.executed",
    "agent.executed",
    "workflow.completed",
];

/// Waits until the agent is answering a call with this `Idempotency-Key`.
pub async fn wait_for_call(s: &Stack, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.agent.in_flight.keys().contains(key) {
        assert!(Instant::now() < deadline, "no call {key} under way");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A new, empty database owned by `agentflow` on the Postgres at `admin`
/// (a superuser URL): its name (`{prefix}_{uuid}`) and agentflow's URL to it.
pub async fn new_database(admin: &str, prefix: &str) -> (String, String) {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER agentflow"
    )))
    .execute(&mut conn)
    .await
    .expect("create database");
    let server = admin
        .replace("postgres@", "agentflow@")
        .rsplit_once('/')
        .unwrap()
        .0
        .to_owned();
    let url = format!("{server}/{name}");
    (name, url)
}

/// The step `id` of a workflow's view.
pub fn step<'a>(w: &'a Value, id: &str) -> &'a Value {
    w["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {w}"))
}
