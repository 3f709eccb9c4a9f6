//! Seeds the log with N finished workflows (created → started →
//! agent.executed → completed, properly chained), C workflows at a time, as
//! history for the recovery benchmark (`scripts/bench-recovery.sh`).
//!
//!   agentflow-seed --brokers 127.0.0.1:9092 --topic workflow-events -n 100000

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentflow_core::{AgentName, Event, Record, StepDef, StepId, TaskDef, UserId, WorkflowId};
use agentflow_log::{LogConfig, Producer, ensure_topic};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "AGENTFLOW_KAFKA_BROKERS")]
    brokers: String,
    #[arg(long, env = "AGENTFLOW_TOPIC", default_value = "workflow-events")]
    topic: String,
    #[arg(long, env = "AGENTFLOW_PARTITIONS", default_value_t = 8)]
    partitions: i32,
    #[arg(short, long, default_value_t = 100_000)]
    n: usize,
    #[arg(short, long, default_value_t = 256)]
    c: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut cfg = LogConfig::new(&args.brokers, &args.topic);
    cfg.partitions = args.partitions;
    cfg.linger = Duration::from_millis(5);
    ensure_topic(&cfg).await.expect("topic");
    let producer = Producer::new(&cfg).expect("producer");
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..args.c {
        let (producer, next, done, n) = (producer.clone(), next.clone(), done.clone(), args.n);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                for r in finished_workflow() {
                    producer
                        .append(&r, Duration::from_secs(60))
                        .await
                        .expect("append");
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d % 10_000 == 0 {
                    eprintln!("{d} workflows seeded");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} finished workflows ({} records) in {secs:.1}s",
        args.n,
        args.n * 4
    );
}

fn finished_workflow() -> Vec<Record> {
    let id = WorkflowId::new();
    let user = UserId(1);
    let agent = AgentName::parse("marketing_content_agent_1_101").expect("valid");
    let now = chrono::Utc::now();
    let created = Record::new(
        id,
        user,
        1,
        now,
        Event::Created {
            name: "history".into(),
            steps: vec![StepDef::of_task(
                1,
                TaskDef {
                    agent: agent.clone(),
                    input: json!({"topic": "AI"}),
                    timeout_ms: None,
                },
            )],
            input: json!({}),
            timeout_ms: None,
            max_concurrency: None,
        },
    );
    let started = Record::new(id, user, 2, now, Event::Started).after(created.event_id);
    let executed = Record::new(
        id,
        user,
        3,
        now,
        Event::AgentExecuted {
            step: StepId::of_task(1),
            iteration: 1,
            agent,
            output: json!({"text": "done"}),
            attempts: 1,
            duration_ms: 1,
        },
    )
    .after(started.event_id);
    let completed = Record::new(id, user, 4, now, Event::Completed).after(executed.event_id);
    vec![created, started, executed, completed]
}
