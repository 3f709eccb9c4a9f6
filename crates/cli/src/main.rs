//! `agentflow`: the one binary. Parse args → load config → init telemetry →
//! run the subcommand.

mod archive;
mod config;
mod dev;
mod serve;
mod telemetry;
mod tools;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;

// glibc's allocator was ~14% of the server's CPU under load (many small,
// short-lived allocations across threads); mimalloc does the same work for less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agentflow",
    version,
    about = "Event-sourced workflow engine for AI agents"
)]
struct Cli {
    /// A TOML file layered over the built-in defaults (config/agentflow.toml).
    #[arg(long, global = true, env = "AGENTFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the engine and the projector (each can be turned off).
    Serve(serve::ServeArgs),
    /// A whole local stack: Postgres, the broker, mock agents, serve.
    Dev(dev::DevArgs),
    /// Apply the database migrations and create the topic, then exit.
    Migrate,
    /// Rebuild the Postgres projections from the log, and from the archives
    /// that moved its start (--from-archive), (stop the projectors first, or
    /// point AGENTFLOW_DATABASE_URL at a new database), or with --verify
    /// compare them with the log.
    Replay(tools::ReplayArgs),
    /// A workflow's full history from the log and the state it folds to.
    Audit(tools::AuditArgs),
    /// Write every record of the workflows finished before a date to an
    /// archive directory (gzip JSONL per partition, manifest with
    /// checksums); with --truncate, then move the log's start past them.
    Archive(archive::ArchiveArgs),
    /// The log's records, for subscribers and debugging.
    Events {
        #[command(subcommand)]
        command: tools::EventsCommand,
    },
    /// Mint a development JWT.
    Token {
        /// The user id.
        #[arg(long)]
        sub: i64,
        /// Grant the admin role (sees every user's workflows).
        #[arg(long)]
        admin: bool,
        /// Lifetime: e.g. 3600, 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 1h, 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit `{unit}` (use s, m, h, d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    telemetry::init_logs(&config.log_format);
    match cli.command {
        Command::Serve(args) => serve::run(config, args).await,
        Command::Dev(args) => dev::run(config, args).await,
        Command::Migrate => serve::migrate(&config).await,
        Command::Replay(args) => tools::replay(&config, args).await,
        Command::Audit(args) => tools::audit_workflow(&config, args).await,
        Command::Archive(args) => archive::run(&config, args).await,
        Command::Events { command } => tools::events(&config, command).await,
        Command::Token { sub, admin, ttl } => {
            if config.jwt_secret.is_empty() {
                anyhow::bail!("set AGENTFLOW_JWT_SECRET to mint a token");
            }
            println!(
                "{}",
                agentflow_api::Jwt::new(config.jwt_secret.as_bytes()).mint(sub, admin, ttl)
            );
            Ok(())
        }
    }
}
