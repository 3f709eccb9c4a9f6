//! Configuration in layers: the defaults (`config/agentflow.toml`, built
//! in) → a `--config` file → `AGENTFLOW_*` environment variables. Unknown keys
//! are errors; secrets are never printed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentflow_core::AgentName;
use agentflow_engine::{AgentDefaults, AgentSettings};
use agentflow_log::LogConfig;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("../../../config/agentflow.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http_addr: String,
    pub max_body_bytes: usize,
    pub database_url: String,
    pub database_max_connections: u32,
    pub kafka_brokers: String,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Start even though a topic's settings can expire or compact records.
    pub allow_log_expiry: bool,
    pub group_prefix: String,
    pub kafka_session_timeout_ms: u64,
    pub kafka_linger_ms: u64,
    pub kafka_fetch_wait_ms: u64,
    pub append_timeout_ms: u64,
    pub projection_wait_ms: u64,
    pub shutdown_grace_ms: u64,
    pub max_concurrent_steps: usize,
    pub engine_checkpoints: bool,
    pub jwt_secret: String,
    pub agents_file: PathBuf,
    pub agent_url_template: String,
    pub agent_timeout_ms: u64,
    pub agent_max_attempts: u32,
    pub agent_backoff_base_ms: u64,
    pub agent_backoff_max_ms: u64,
    pub max_output_bytes: usize,
    pub inline_output_bytes: usize,
    pub node_id: String,
    /// Whether `node_id` names this process for good, across restarts: then
    /// it is its static member name in the consumer groups (see
    /// [`Config::settle_node_id`]).
    #[serde(skip)]
    pub static_member: bool,
    pub log_format: String,
}

impl Config {
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_from(file, std::env::vars())
    }

    fn load_from(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut table: toml::Table = DEFAULTS.parse().context("built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let over: toml::Table = text
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            for (k, v) in over {
                if !table.contains_key(&k) {
                    bail!("{}: unknown key `{k}`", path.display());
                }
                table.insert(k, v);
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("AGENTFLOW_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let Some(current) = table.get(&key) else {
                continue;
            };
            let parsed = match current {
                toml::Value::String(_) => toml::Value::String(value),
                _ => format!("v = {value}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .with_context(|| format!("{name}={value} is not a valid value"))?,
            };
            table.insert(key, parsed);
        }
        let mut cfg: Config = table.try_into().context("invalid configuration")?;
        cfg.validate()?;
        cfg.static_member = !cfg.node_id.is_empty();
        if cfg.node_id.is_empty() {
            // A name for this run only; `serve` settles a lasting one.
            cfg.node_id = format!("{}-{}", host_name(), std::process::id());
        }
        Ok(cfg)
    }

    /// The identity of a `serve` process that was given no `node_id`: one
    /// that survives a restart, so that the process is a static member of
    /// its consumer groups (KIP-345) and takes its partitions back at once
    /// after a crash instead of waiting out its dead self's session.
    ///
    /// With the API on a fixed port it is `{host}-{port}`: stable across
    /// restarts, and distinct for the processes of one host, since they
    /// cannot listen on one port. With no API (`--no-api`) or port 0 there
    /// is nothing stable to tell two processes of a host apart, so the
    /// process stays `{host}-{pid}`, a new (dynamic) member at every start.
    pub fn settle_node_id(&mut self, serves_api: bool) {
        if self.static_member {
            return;
        }
        let port = self
            .http_addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .filter(|p| *p != 0);
        match port {
            Some(port) if serves_api => {
                self.node_id = format!("{}-{port}", host_name());
                self.static_member = true;
            }
            _ => {
                tracing::info!(
                    node_id = %self.node_id,
                    "no node_id and no fixed API port: this process joins its group as a new member; \
                     set node_id for a restart that takes its partitions straight back"
                );
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.partitions < 1 {
            bail!("partitions must be at least 1");
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            bail!("replication_factor must be -1 (the broker's default) or at least 1");
        }
        if !self.agent_url_template.contains("{agent}") {
            bail!("agent_url_template must contain {{agent}}");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json");
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if self.inline_output_bytes < 1024 {
            bail!("inline_output_bytes must be at least 1024");
        }
        if self.max_concurrent_steps < 1 {
            bail!("max_concurrent_steps must be at least 1");
        }
        if self.max_output_bytes < 1024 {
            bail!("max_output_bytes must be at least 1024");
        }
        // It names the process in the consumer groups (group.instance.id),
        // which the broker restricts to these characters.
        if self.node_id.len() > 200
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            bail!(
                "node_id `{}` must be at most 200 letters, digits, '.', '_' or '-'",
                self.node_id
            );
        }
        Ok(())
    }

    /// The configuration as TOML with secrets hidden.
    pub fn dump(&self) -> String {
        let mut shown = self.clone();
        if !shown.jwt_secret.is_empty() {
            shown.jwt_secret = "<hidden>".into();
        }
        if let Some((scheme, rest)) = shown.database_url.split_once("://")
            && let Some((creds, host)) = rest.split_once('@')
            && let Some((user, _)) = creds.split_once(':')
        {
            shown.database_url = format!("{scheme}://{user}:<hidden>@{host}");
        }
        toml::to_string(&shown).expect("config serialises")
    }

    pub fn log(&self) -> LogConfig {
        let mut c = LogConfig::new(&self.kafka_brokers, &self.topic);
        c.partitions = self.partitions;
        c.replication_factor = self.replication_factor;
        c.group_prefix = self.group_prefix.clone();
        c.client_id = format!("agentflow-{}", self.node_id);
        c.session_timeout = Duration::from_millis(self.kafka_session_timeout_ms);
        c.group_instance_id = self.static_member.then(|| self.node_id.clone());
        c.revoke_grace = Duration::from_millis(self.shutdown_grace_ms);
        c.linger = Duration::from_millis(self.kafka_linger_ms);
        c.fetch_wait = Duration::from_millis(self.kafka_fetch_wait_ms);
        c.inline_output_bytes = self.inline_output_bytes;
        c
    }

    pub fn agent_defaults(&self) -> AgentDefaults {
        AgentDefaults {
            url_template: self.agent_url_template.clone(),
            timeout: Duration::from_millis(self.agent_timeout_ms),
            max_attempts: self.agent_max_attempts,
            backoff_base: Duration::from_millis(self.agent_backoff_base_ms),
            backoff_max: Duration::from_millis(self.agent_backoff_max_ms),
            max_output_bytes: self.max_output_bytes,
        }
    }

    /// Reads the agent registry; a missing file is an empty registry.
    pub fn agent_registry(&self) -> anyhow::Result<HashMap<AgentName, AgentSettings>> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            agents: HashMap<String, Entry>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            url: String,
            timeout_ms: Option<u64>,
            max_attempts: Option<u32>,
            #[serde(default)]
            concurrency: usize,
        }
        let text = match std::fs::read_to_string(&self.agents_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(file = %self.agents_file.display(), "no agent registry file; every agent uses agent_url_template");
                return Ok(HashMap::new());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", self.agents_file.display()));
            }
        };
        let file: File = toml::from_str(&text)
            .with_context(|| format!("parsing {}", self.agents_file.display()))?;
        file.agents
            .into_iter()
            .map(|(name, e)| {
                let agent = AgentName::parse(&name)
                    .with_context(|| format!("agent `{name}` in {}", self.agents_file.display()))?;
                Ok((
                    agent,
                    AgentSettings {
                        base_url: e.url,
                        timeout: Duration::from_millis(
                            e.timeout_ms.unwrap_or(self.agent_timeout_ms),
                        ),
                        max_attempts: e.max_attempts.unwrap_or(self.agent_max_attempts),
                        concurrency: e.concurrency,
                    },
                ))
            })
            .collect()
    }
}

/// This machine's name (its UTS name, as `hostname` prints it), kept to the
/// characters a node_id may hold.
fn host_name() -> String {
    let name = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(150)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn env_overrides_defaults_with_typed_values() {
        let c = Config::load_from(
            None,
            env(&[
                ("AGENTFLOW_HTTP_ADDR", "0.0.0.0:1"),
                ("AGENTFLOW_PARTITIONS", "3"),
                ("AGENTFLOW_TOPIC", "t"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http_addr, "0.0.0.0:1");
        assert_eq!(c.partitions, 3);
        assert_eq!(c.topic, "t");
        assert!(Config::load_from(None, env(&[("AGENTFLOW_PARTITIONS", "many")])).is_err());
        assert!(Config::load_from(None, env(&[("AGENTFLOW_PARTITIONS", "0")])).is_err());
    }

    #[test]
    fn output_limits_default_under_the_broker_limit_and_are_overridable() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.max_output_bytes, 16 * 1024 * 1024);
        assert_eq!(c.inline_output_bytes, 256 * 1024);
        assert_eq!(c.log().inline_output_bytes, 256 * 1024);
        assert_eq!(c.agent_defaults().max_output_bytes, 16 * 1024 * 1024);
        let c = Config::load_from(None, env(&[("AGENTFLOW_MAX_OUTPUT_BYTES", "2000000")])).unwrap();
        assert_eq!(c.agent_defaults().max_output_bytes, 2_000_000);
        assert!(Config::load_from(None, env(&[("AGENTFLOW_INLINE_OUTPUT_BYTES", "10")])).is_err());
    }

    #[test]
    fn a_serve_with_a_fixed_api_port_is_named_by_host_and_port_for_good() {
        let mut c =
            Config::load_from(None, env(&[("AGENTFLOW_HTTP_ADDR", "0.0.0.0:8181")])).unwrap();
        assert!(!c.static_member, "tools are named for the run only");
        assert!(c.log().group_instance_id.is_none());
        c.settle_node_id(true);
        assert_eq!(c.node_id, format!("{}-8181", host_name()));
        assert_eq!(
            c.log().group_instance_id.as_deref(),
            Some(c.node_id.as_str())
        );
        assert_eq!(c.log().client_id, format!("agentflow-{}", c.node_id));
    }

    #[test]
    fn a_serve_with_no_api_or_port_0_stays_a_new_member_at_every_start() {
        for (addr, api) in [("127.0.0.1:0", true), ("127.0.0.1:8080", false)] {
            let mut c = Config::load_from(None, env(&[("AGENTFLOW_HTTP_ADDR", addr)])).unwrap();
            c.settle_node_id(api);
            assert!(!c.static_member, "{addr} api={api}");
            assert_eq!(c.node_id, format!("{}-{}", host_name(), std::process::id()));
            assert!(c.log().group_instance_id.is_none());
        }
    }

    #[test]
    fn a_given_node_id_is_kept_and_must_suit_the_broker() {
        let mut c = Config::load_from(None, env(&[("AGENTFLOW_NODE_ID", "pod-2.eu_1")])).unwrap();
        c.settle_node_id(false);
        assert_eq!(c.node_id, "pod-2.eu_1");
        assert_eq!(c.log().group_instance_id.as_deref(), Some("pod-2.eu_1"));
        let e = Config::load_from(None, env(&[("AGENTFLOW_NODE_ID", "web:8080")])).unwrap_err();
        assert!(format!("{e:#}").contains("node_id `web:8080`"), "{e:#}");
    }

    #[test]
    fn dump_hides_secrets() {
        let c = Config::load_from(
            None,
            env(&[
                ("AGENTFLOW_JWT_SECRET", "s3cret"),
                ("AGENTFLOW_DATABASE_URL", "postgres://u:pw@h/db"),
            ]),
        )
        .unwrap();
        let d = c.dump();
        assert!(!d.contains("s3cret") && !d.contains("pw@"), "{d}");
    }
}
