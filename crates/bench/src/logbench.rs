//! The broker alone: C appenders each append one record at a time (as
//! workflow actors do), N records in all, optionally with K consumer groups
//! reading everything. Prints records/s and append p50/p99 — to tell how much
//! of a workflow's cost is the broker's.
//!
//!   agentflow-logbench --brokers 127.0.0.1:9092 -n 20000 -c 32 --groups 2

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentflow_core::{Event, Record, UserId, WorkflowId};
use agentflow_log::{
    Assigner, ConsumerEvent, LogConfig, Producer, StartAt, Subscription, ensure_topic,
};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "AGENTFLOW_KAFKA_BROKERS")]
    brokers: String,
    #[arg(short, long, default_value_t = 20000)]
    n: usize,
    #[arg(short, long, default_value_t = 32)]
    c: usize,
    /// Consumer groups reading the topic meanwhile.
    #[arg(long, default_value_t = 0)]
    groups: usize,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
}

struct FromStart;
impl Assigner for FromStart {
    fn start_positions(&self, partitions: &[i32]) -> Vec<StartAt> {
        vec![StartAt::Beginning; partitions.len()]
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let topic = format!("logbench-{}", WorkflowId::new());
    let mut cfg = LogConfig::new(&args.brokers, &topic);
    cfg.partitions = args.partitions;
    cfg.linger = Duration::from_millis(args.linger_ms);
    ensure_topic(&cfg).await.expect("topic");
    let consumed = Arc::new(AtomicUsize::new(0));
    let mut subs = vec![];
    for g in 0..args.groups {
        let (sub, mut rx) =
            Subscription::start(&cfg, &format!("g{g}"), Arc::new(FromStart), 8192).unwrap();
        let consumed = consumed.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let ConsumerEvent::Record(_) = ev {
                    consumed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        subs.push(sub);
    }
    let producer = Producer::new(&cfg).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..args.c {
        let (producer, next, n) = (producer.clone(), next.clone(), args.n);
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let id = WorkflowId::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let r = Record::new(id, UserId(1), 1, chrono::Utc::now(), Event::Started);
                let t = Instant::now();
                producer
                    .append(&r, Duration::from_secs(30))
                    .await
                    .expect("append");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let p =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "appended {} records in {secs:.2}s: {:.0} records/s, append p50 {:.1} ms p99 {:.1} ms; consumed {} by {} groups",
        lat.len(),
        lat.len() as f64 / secs,
        p(0.5),
        p(0.99),
        consumed.load(Ordering::Relaxed),
        args.groups
    );
    for s in subs {
        s.stop(Duration::from_secs(2)).await;
    }
}
