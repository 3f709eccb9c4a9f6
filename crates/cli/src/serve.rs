//! `agentflow serve`: wires the log, the store, the projector, the engine
//! and the API, and runs them until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use agentflow_api::{ApiConfig, AppState, Jwt, LogEnd, ReadyCheck};
use agentflow_engine::{AgentClient, Engine, EngineOptions, Worker};
use agentflow_log::{
    ConsumerEvent, FailureWatch, GroupFailure, LogConfig, LogRecord, Producer, ensure_topic,
    partition_high_watermarks,
};
use agentflow_projector::{Progress, Projector};
use agentflow_store::Store;
use anyhow::Context;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::config::Config;
use crate::telemetry;

#[derive(clap::Args, Default)]
pub struct ServeArgs {
    /// Do not serve the HTTP API.
    #[arg(long)]
    no_api: bool,
    /// Do not run workflows (no engine consumer group membership).
    #[arg(long)]
    no_engine: bool,
    /// Do not keep the Postgres projections.
    #[arg(long)]
    no_projector: bool,
    /// Print the effective configuration (secrets hidden) and exit.
    #[arg(long)]
    dump_config: bool,
    /// Offer the console's one-click dev sign-in (set by `agentflow dev`
    /// only, never a flag).
    #[arg(skip)]
    pub dev_sign_in: bool,
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url, 2)
        .await
        .context("connecting to Postgres")?;
    store.migrate().await?;
    ensure_topic(&config.log())
        .await
        .context("creating the topic")?;
    tracing::info!("migrations applied and topic ready");
    Ok(())
}

pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    config.settle_node_id(!args.no_api);
    if args.dump_config {
        print!("{}", config.dump());
        return Ok(());
    }
    if config.jwt_secret.is_empty() {
        anyhow::bail!("AGENTFLOW_JWT_SECRET must be set to serve");
    }
    // The port first: a second process started by mistake on this port
    // (which would have this one's default node_id) stops here, before it
    // joins a group and fences this one out.
    let listener = if args.no_api {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&config.http_addr)
                .await
                .with_context(|| format!("binding {}", config.http_addr))?,
        )
    };
    let render = telemetry::init_metrics()?;
    let log = config.log();
    let store = Store::connect(&config.database_url, config.database_max_connections)
        .await
        .context("connecting to Postgres")?;
    store.migrate().await.context("migrating")?;
    ensure_topic(&log).await.context("creating the topic")?;
    check_log_lifetime(&config, &log).await?;
    let progress = Progress::default();
    let (producer, acked, engine_acked) = producer_with_acked(&log, &args)?;

    let (tap, projector) = start_projector(&args, &log, &store, &progress, acked)?;
    let engine = if args.no_engine {
        None
    } else {
        let options = EngineOptions {
            checkpoints: config.engine_checkpoints,
            tap,
            acked: engine_acked,
        };
        Some(Arc::new(
            start_engine(&config, &log, &store, &producer, options).await?,
        ))
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = match listener {
        Some(listener) => {
            let state = AppState {
                store: store.reader(),
                producer: producer.clone(),
                progress: progress.clone(),
                topic: config.topic.clone(),
                jwt: Arc::new(Jwt::new(config.jwt_secret.as_bytes())),
                node_id: config.node_id.clone(),
                append_timeout: Duration::from_millis(config.append_timeout_ms),
                projection_wait: Duration::from_millis(config.projection_wait_ms),
                log_end: log_end(&log),
                ready_checks: ready_checks(&store, &producer, engine.as_ref()),
                metrics: render,
                max_concurrent_steps: config.max_concurrent_steps,
            };
            Some(serve_http(listener, state, &config, &args, stop_rx).await?)
        }
        None => None,
    };

    let failure = until_stopped(engine.as_deref(), projector.as_ref()).await;
    let _ = stop_tx.send(true);
    let grace = match failure {
        None => Duration::from_millis(config.shutdown_grace_ms),
        // Shut out of the group, this node owns nothing: the new owner
        // re-runs the steps in flight, and nothing is to be waited for here.
        Some(_) => Duration::ZERO,
    };
    shut_down(http, engine, &producer, projector, grace).await;
    match failure {
        None => Ok(()),
        Some(f) => Err(f.into()),
    }
}

/// Stops accepting HTTP, lets the engine finish the steps in flight within
/// `grace`, flushes the producer and stops the projector; a second signal
/// meanwhile exits at once.
async fn shut_down(
    http: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    engine: Option<Arc<Engine>>,
    producer: &Producer,
    projector: Option<Projector>,
    grace: Duration,
) {
    let second = tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(130);
    });
    if let Some(h) = http {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    if let Some(e) = engine {
        e.stop(grace).await;
    }
    let _ = producer.flush(Duration::from_secs(10));
    if let Some(p) = projector {
        p.stop().await;
    }
    second.abort();
}

/// The producer, and what it appended once the broker acknowledged it for
/// the projector and for the engine (those that run here): they take it
/// straight from there (a read-your-writes wait, or the start of a workflow,
/// then skips a fetch round trip); the log's stream still brings everything.
#[allow(clippy::type_complexity)]
fn producer_with_acked(
    log: &LogConfig,
    args: &ServeArgs,
) -> anyhow::Result<(
    Producer,
    Option<UnboundedReceiver<LogRecord>>,
    Option<UnboundedReceiver<LogRecord>>,
)> {
    let mut acked_to = Vec::new();
    let mut acked_by = |wanted: bool| {
        wanted.then(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            acked_to.push(tx);
            rx
        })
    };
    let (acked, engine_acked) = (acked_by(!args.no_projector), acked_by(!args.no_engine));
    Ok((Producer::with_acked(log, acked_to)?, acked, engine_acked))
}

/// The projector, unless `--no-projector`. With the engine in this process
/// too it follows the engine's stream (the returned tap, for the engine to
/// feed): the broker then serves one fetch stream, not two (see README).
#[allow(clippy::type_complexity)]
fn start_projector(
    args: &ServeArgs,
    log: &LogConfig,
    store: &Store,
    progress: &Progress,
    acked: Option<UnboundedReceiver<LogRecord>>,
) -> anyhow::Result<(Option<UnboundedSender<ConsumerEvent>>, Option<Projector>)> {
    if args.no_projector {
        return Ok((None, None));
    }
    if args.no_engine {
        let projector = Projector::start(log, store.writer(), progress.clone(), acked)?;
        return Ok((None, Some(projector)));
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let projector = Projector::follow(rx, acked, store.writer(), &log.topic, progress.clone());
    Ok((Some(tx), Some(projector)))
}

async fn start_engine(
    config: &Config,
    log: &LogConfig,
    store: &Store,
    producer: &Producer,
    options: EngineOptions,
) -> anyhow::Result<Engine> {
    let agents = AgentClient::new(config.agent_defaults(), config.agent_registry()?);
    let worker = Worker {
        producer: producer.clone(),
        agents,
        node_id: config.node_id.clone(),
        max_concurrency: config.max_concurrent_steps,
    };
    Ok(Engine::start(log, worker, Some(store.checkpoints()), options).await?)
}

/// What `/readyz` asks: the database, the event log and the engine.
fn ready_checks(
    store: &Store,
    producer: &Producer,
    engine: Option<&Arc<Engine>>,
) -> Vec<(&'static str, ReadyCheck)> {
    let mut checks: Vec<(&'static str, ReadyCheck)> = Vec::new();
    let s = store.clone();
    checks.push((
        "database",
        Arc::new(move || {
            let s = s.clone();
            Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
        }),
    ));
    let p = producer.clone();
    checks.push((
        "event_log",
        Arc::new(move || {
            let p = p.clone();
            Box::pin(async move {
                p.check(Duration::from_secs(2))
                    .await
                    .map_err(|e| e.to_string())
            })
        }),
    ));
    if let Some(engine) = engine {
        let e = engine.clone();
        checks.push((
            "engine",
            Arc::new(move || {
                let e = e.clone();
                Box::pin(async move {
                    match e.status().await {
                        Some(s) if s.is_ready() => Ok(()),
                        Some(s) if !s.joined => Err("joining the engine group".into()),
                        Some(s) => Err(format!(
                            "replaying: {} of {} partitions live",
                            s.live_partitions, s.partitions
                        )),
                        None => Err("engine not answering".into()),
                    }
                })
            }),
        ));
    }
    checks
}

/// What the read API compares the projection with before it says "no such
/// workflow" (on a blocking thread: rdkafka blocks).
fn log_end(log: &LogConfig) -> Arc<LogEnd> {
    let end_of = log.clone();
    Arc::new(LogEnd::new(Arc::new(move || {
        let log = end_of.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                partition_high_watermarks(&log, Duration::from_secs(2))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
        })
    })))
}

/// Serves the API on `listener` until `stop` turns true.
async fn serve_http(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: &Config,
    args: &ServeArgs,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let app = agentflow_api::router(
        state,
        &ApiConfig {
            max_body_bytes: config.max_body_bytes,
            dev_sign_in: args.dev_sign_in,
        },
    );
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port.
    println!("agentflow listening on http://{addr}");
    tracing::info!(%addr, node_id = %config.node_id, static_member = config.static_member, "serving");
    Ok(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    }))
}

/// Until a signal (`None`), or until a consumer group shuts this process
/// out (two live processes with one node_id: the broker keeps the newer one).
async fn until_stopped(
    engine: Option<&Engine>,
    projector: Option<&Projector>,
) -> Option<GroupFailure> {
    let watch = |w: Option<FailureWatch>| w.unwrap_or_else(FailureWatch::never).failed();
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        f = watch(engine.map(|e| e.failure())) => Some(f),
        f = watch(projector.map(|p| p.failure())) => Some(f),
    };
    match &failure {
        None => tracing::info!("shutting down"),
        Some(f) => tracing::error!("shutting down: {f}"),
    }
    failure
}

/// The log is forever (DESIGN §5): a topic whose settings can expire or
/// compact records stops the node, unless `allow_log_expiry` accepts them
/// (then each is logged as an error at every start).
async fn check_log_lifetime(config: &Config, log: &LogConfig) -> anyhow::Result<()> {
    let report = agentflow_log::check_log_lifetime(log)
        .await
        .context("reading the topics' settings")?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if report.expiring.is_empty() {
        return Ok(());
    }
    if config.allow_log_expiry {
        for e in &report.expiring {
            tracing::error!(
                "allow_log_expiry = true: records of the event log WILL disappear: {e}"
            );
        }
        return Ok(());
    }
    anyhow::bail!(
        "the event log must be kept forever, and these settings make records disappear:\n  {}",
        report.expiring.join("\n  ")
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
