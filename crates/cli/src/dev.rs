//! `agentflow dev`: a whole local stack with no manual set-up. Starts
//! Postgres and the broker (via `scripts/stack.sh`, data in `.dev/`), the
//! mock agents for the guide's example agents, and `serve` (with the web
//! console's one-click dev sign-in); prints the console's address, a dev
//! token and curl lines. Run it from a checkout (scripts/dev.sh builds and runs it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::serve::{self, ServeArgs};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where Postgres and the broker keep their data.
    #[arg(long, default_value = ".dev")]
    dir: PathBuf,
    /// Where the mock agents listen (config/agents.toml points at :9100).
    #[arg(long, default_value = "127.0.0.1:9100")]
    mock_addr: String,
    /// Latency of every mock agent call, in milliseconds.
    #[arg(long, default_value_t = 200)]
    mock_latency_ms: u64,
}

struct Stack(PathBuf);

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scripts/stack.sh")
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

fn read_env(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

pub async fn run(mut config: Config, args: DevArgs) -> anyhow::Result<()> {
    if !Path::new("scripts/stack.sh").exists() {
        bail!("run `agentflow dev` from the repository's top directory (it uses scripts/stack.sh)");
    }
    std::fs::create_dir_all(&args.dir)?;
    let status = std::process::Command::new("scripts/stack.sh")
        .arg("start")
        .arg(&args.dir)
        .status()?;
    if !status.success() {
        bail!("starting Postgres and the broker failed (try scripts/stack.sh install)");
    }
    let _stack = Stack(args.dir.clone());
    for (k, v) in read_env(&args.dir.join("env"))? {
        match k.as_str() {
            "AGENTFLOW_DATABASE_URL" => config.database_url = v,
            "AGENTFLOW_KAFKA_BROKERS" => config.kafka_brokers = v,
            _ => {}
        }
    }
    if config.jwt_secret.is_empty() {
        config.jwt_secret = "dev-secret-change-me".into();
    }
    let listener = tokio::net::TcpListener::bind(&args.mock_addr)
        .await
        .with_context(|| format!("binding the mock agents to {}", args.mock_addr))?;
    let _agents = agentflow_mock_agent::MockAgent::serve(
        listener,
        Duration::from_millis(args.mock_latency_ms),
    )?;
    let token = agentflow_api::Jwt::new(config.jwt_secret.as_bytes()).mint(
        agentflow_api::ui::DEV_USER,
        false,
        Duration::from_secs(7 * 86400),
    );
    let addr = &config.http_addr;
    println!(
        r#"
agentflow dev stack
  console      http://{addr}/ui   (press "Dev sign-in": user 42)
  API          http://{addr}
  mock agents  http://{mock}/agents/{{agent}}
  Postgres     {db}
  broker       {brokers} (topic {topic})

  export TOKEN={token}

  curl -s -X POST http://{addr}/workflows/create -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{
    "name": "Content Marketing Pipeline",
    "tasks": [
      {{"agent": "marketing_content_agent_1_101", "input": {{"topic": "AI in healthcare", "format": "blog_post"}}}},
      {{"agent": "marketing_seo_agent_1_102", "input": {{"content": "{{{{previous_output}}}}", "target_keywords": ["AI healthcare"]}}}},
      {{"agent": "marketing_social_media_agent_1_103", "input": {{"content": "{{{{previous_output}}}}", "platforms": ["twitter", "linkedin"]}}}}
    ]}}'
  # then, with the workflow_id it printed:
  curl -s -X POST http://{addr}/workflows/$ID/execute -H "Authorization: Bearer $TOKEN"
  curl -s http://{addr}/workflows/$ID -H "Authorization: Bearer $TOKEN"
  curl -s http://{addr}/workflows/list -H "Authorization: Bearer $TOKEN"
  # the event log, as a subscriber sees it:
  kcat -b {brokers} -t {topic} -C -o beginning -e -f '%p:%o key=%k %h\n%s\n'
"#,
        mock = args.mock_addr,
        db = config.database_url,
        brokers = config.kafka_brokers,
        topic = config.topic,
    );
    let mut args = ServeArgs::default();
    args.dev_sign_in = true;
    serve::run(config, args).await
}
