//! Runs N content-pipeline workflows (3 steps, chained outputs) with C in
//! flight at once through the REST API: create → execute → poll until
//! done. Prints completed workflows/s and create→completed p50/p99.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The JWT secret the server uses (a token is minted from it).
    #[arg(long, env = "AGENTFLOW_JWT_SECRET")]
    secret: String,
    /// Workflows to run.
    #[arg(short, long, default_value_t = 1000)]
    n: usize,
    /// Workflows in flight at once.
    #[arg(short, long, default_value_t = 32)]
    c: usize,
    /// 0: each client waits for its workflow with `GET /workflows/{id}?wait=finished`
    /// (a long poll: two reads per workflow, and the completion is seen at
    /// once). Otherwise: how often a client polls its workflow's status; the
    /// polling is load on the same machine and adds half a period to the
    /// measured latency.
    #[arg(long, default_value_t = 0)]
    poll_ms: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Memory mode: start all N workflows (C requests at a time) without
    /// waiting for each, then sample the server's resident memory (this
    /// pid) and the number running until all are done.
    #[arg(long)]
    hold_pid: Option<u32>,
    /// Park mode: start N workflows that sleep for an hour (C requests at
    /// a time), wait until all sleep, print how long that took, and exit.
    #[arg(long)]
    park: bool,
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn hold(args: &Args, http: &reqwest::Client, token: &str, pid: u32) {
    let admin =
        agentflow_api::Jwt::new(args.secret.as_bytes()).mint(0, true, Duration::from_secs(3600));
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Samples running workflows (the engine's gauge) and RSS throughout.
    let sampler = {
        let (http, base, done) = (http.clone(), args.url.clone(), done.clone());
        tokio::spawn(async move {
            let (mut peak_rss, mut peak_running) = (0.0f64, 0u64);
            while !done.load(Ordering::Relaxed) {
                let running = gauges(&http, &base, &["workflow_active_count"]).await[0] as u64;
                let rss = rss_mib(pid);
                if running > peak_running || rss > peak_rss + 16.0 {
                    println!(
                        "t={:.1}s running={running} rss={rss:.0} MiB",
                        started.elapsed().as_secs_f64()
                    );
                }
                peak_rss = peak_rss.max(rss);
                peak_running = peak_running.max(running);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (peak_running, peak_rss)
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = vec![];
    for _ in 0..args.c {
        let (http, token, next, base, n) = (
            http.clone(),
            token.to_owned(),
            next.clone(),
            args.url.clone(),
            args.n,
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = http
                    .post(format!("{base}/workflows/create"))
                    .bearer_auth(&token)
                    .json(&pipeline(i))
                    .send()
                    .await
                    .unwrap();
                let id = r.json::<Value>().await.unwrap()["workflow_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                http.post(format!("{base}/workflows/{id}/execute"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    println!(
        "started {} workflows in {:.1}s",
        args.n,
        started.elapsed().as_secs_f64()
    );
    loop {
        let count = |status: &'static str| {
            let (http, base, admin) = (http.clone(), args.url.clone(), admin.clone());
            async move {
                let v: Value = http
                    .get(format!("{base}/workflows/list?limit=1&status={status}"))
                    .bearer_auth(admin)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                v["count"].as_u64().unwrap_or(0)
            }
        };
        if count("running").await == 0 && count("pending").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    done.store(true, Ordering::Relaxed);
    let (peak_running, peak_rss) = sampler.await.unwrap();
    println!(
        "all done in {:.1}s; peak running {peak_running}, peak RSS {peak_rss:.0} MiB",
        started.elapsed().as_secs_f64()
    );
}

/// Starts N workflows that greet, then sleep an hour: they park (no actor,
/// a timer each) while the measured load runs beside them.
async fn park(args: &Args, http: &reqwest::Client, token: &str) {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = vec![];
    for _ in 0..args.c {
        let (http, token, next, base, n) = (
            http.clone(),
            token.to_owned(),
            next.clone(),
            args.url.clone(),
            args.n,
        );
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let body = json!({"name": "follow up", "steps": [
                    {"id": "hello", "agent": "mailer"},
                    {"id": "later", "after": ["hello"], "sleep_ms": 3_600_000},
                    {"id": "follow_up", "agent": "mailer", "after": ["later"]}
                ]});
                let r = http
                    .post(format!("{base}/workflows/create"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("create");
                let id = r.json::<Value>().await.expect("json")["workflow_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let r = http
                    .post(format!("{base}/workflows/{id}/execute"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("execute");
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    // Parked: each holds a timer on the engine instead of an actor.
    loop {
        let g = gauges(
            http,
            &args.url,
            &["agentflow_engine_timers", "workflow_active_count"],
        )
        .await;
        let (timers, active) = (g[0] as usize, g[1] as usize);
        if timers >= args.n && active == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not parked: timers {timers}, actors {active}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "parked {} sleeping workflows in {:.1}s",
        args.n,
        started.elapsed().as_secs_f64()
    );
}

/// The server's gauges `names` from `/metrics` (0 when absent or
/// unreachable).
async fn gauges(http: &reqwest::Client, base: &str, names: &[&str]) -> Vec<f64> {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    names
        .iter()
        .map(|name| {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .collect()
}

fn pipeline(i: usize) -> Value {
    json!({
        "name": "Content Marketing Pipeline",
        "tasks": [
            {"agent": "marketing_content_agent_1_101", "input": {"topic": format!("AI in healthcare #{i}"), "format": "blog_post"}},
            {"agent": "marketing_seo_agent_1_102", "input": {"content": "{{previous_output}}", "target_keywords": ["AI healthcare"]}},
            {"agent": "marketing_social_media_agent_1_103", "input": {"content": "{{previous_output}}", "platforms": ["twitter", "linkedin"]}}
        ]
    })
}

async fn one(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    i: usize,
    poll: Duration,
) -> Result<(Phases, bool), String> {
    let t0 = Instant::now();
    let r = http
        .post(format!("{base}/workflows/create"))
        .bearer_auth(token)
        .json(&pipeline(i))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("create: {}", r.status()));
    }
    let id = r.json::<Value>().await.map_err(|e| e.to_string())?["workflow_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let created = t0.elapsed();
    let r = http
        .post(format!("{base}/workflows/{id}/execute"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 202 {
        return Err(format!("execute: {}", r.status()));
    }
    let executed = t0.elapsed();
    // poll = 0: one long poll (`?wait=finished`) at a time instead.
    let url = if poll.is_zero() {
        format!("{base}/workflows/{id}?wait=finished&timeout_ms=30000")
    } else {
        format!("{base}/workflows/{id}")
    };
    loop {
        tokio::time::sleep(poll).await;
        let r = http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let w: Value = r.json().await.map_err(|e| e.to_string())?;
        let phases = || Phases {
            create: created,
            execute: executed - created,
            total: t0.elapsed(),
        };
        match w["status"].as_str() {
            Some("completed") => return Ok((phases(), true)),
            Some("failed") => return Ok((phases(), false)),
            _ => {}
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(format!("workflow {id} not done in 120 s"));
        }
    }
}

/// Where one workflow's time went, as the client saw it.
struct Phases {
    /// `POST /workflows/create` (append + read-your-writes wait).
    create: Duration,
    /// `POST /workflows/{id}/execute`.
    execute: Duration,
    /// Create → seen completed.
    total: Duration,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let token =
        agentflow_api::Jwt::new(args.secret.as_bytes()).mint(1, false, Duration::from_secs(3600));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.c)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    if let Some(pid) = args.hold_pid {
        hold(&args, &http, &token, pid).await;
        return;
    }
    if args.park {
        park(&args, &http, &token).await;
        return;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = vec![];
    for _ in 0..args.c {
        let (http, token, next, base) =
            (http.clone(), token.clone(), next.clone(), args.url.clone());
        let (n, poll) = (args.n, Duration::from_millis(args.poll_ms));
        workers.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut failed = 0;
            let mut errors = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match one(&http, &base, &token, i, poll).await {
                    Ok((d, true)) => lat.push(d),
                    Ok((_, false)) => failed += 1,
                    Err(e) => errors.push(e),
                }
            }
            (lat, failed, errors)
        }));
    }
    let mut lat = vec![];
    let (mut failed, mut errors) = (0, vec![]);
    for w in workers {
        let (l, f, e) = w.await.unwrap();
        lat.extend(l);
        failed += f;
        errors.extend(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = lat.len() as f64 / elapsed;
    let sorted = |f: fn(&Phases) -> Duration| {
        let mut v: Vec<Duration> = lat.iter().map(f).collect();
        v.sort();
        v
    };
    let (creates, executes, totals) = (
        sorted(|p| p.create),
        sorted(|p| p.execute),
        sorted(|p| p.total),
    );
    let (p50, p99) = (pct(&totals, 0.50), pct(&totals, 0.99));
    if args.json {
        println!(
            "{}",
            json!({"n": args.n, "c": args.c, "completed": lat.len(), "failed": failed, "errors": errors.len(),
            "seconds": elapsed, "workflows_per_second": rate, "p50_ms": p50, "p99_ms": p99})
        );
    } else {
        println!(
            "n={} c={} completed={} failed={} errors={} in {:.2}s",
            args.n,
            args.c,
            lat.len(),
            failed,
            errors.len(),
            elapsed
        );
        println!("throughput: {rate:.1} workflows/s");
        println!("create→completed: p50 {p50:.1} ms, p99 {p99:.1} ms");
        println!(
            "  of which: create p50 {:.1} ms, execute p50 {:.1} ms",
            pct(&creates, 0.50),
            pct(&executes, 0.50)
        );
        for e in errors.iter().take(5) {
            println!("error: {e}");
        }
    }
    if !errors.is_empty() || failed > 0 {
        std::process::exit(1);
    }
}
