//! A benchmark, not a test (ignored; run it by name): what the projection
//! writes to Postgres while a loop keeps every iteration's output (issue
//! 17.3). A 100-iteration `repeat` loop whose agent answers ~1 MB of
//! incompressible text each time; Postgres' WAL position is sampled with the
//! loop's iteration count, and the bytes written per iteration are printed
//! for the first and the last iterations, with the wall time.
//!
//! ```text
//! source /tmp/stack/env
//! cargo nextest run -p agentflow --test projection_cost --run-ignored only --no-capture
//! ```
//! `COST_ITERATIONS` (default 100), `COST_OUTPUT_BYTES` (default 1000000)
//! and `COST_DELAY_MS` (the agent's time per answer, default 500: a fast
//! agent for a megabyte) change the loop. An agent that answers at once lets
//! the loop run ahead of the projector, which then writes many iterations
//! in one batch: that hides what a change costs.

mod common;

use std::time::{Duration, Instant};

use common::Stack;
use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn wal_and_iteration(pool: &sqlx::PgPool, id: uuid::Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint,
                COALESCE((SELECT max(iteration)::bigint FROM workflow_steps
                          WHERE workflow_id = $1), 0)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name"]
async fn bytes_written_per_iteration_of_a_loop_with_large_outputs() {
    let iterations = env_or("COST_ITERATIONS", 100);
    let bytes = env_or("COST_OUTPUT_BYTES", 1_000_000);
    let delay = env_or("COST_DELAY_MS", 500);
    let s = Stack::start().await;
    let t = s.token(5);
    let pool = sqlx::PgPool::connect(&s.db_url).await.unwrap();
    let id = s
        .create(
            &t,
            json!({"name": "loop cost", "steps": [
                {"id": "draft", "agent": "writer",
                 "input": {"_mock": {"noise_bytes": bytes, "delay_ms": delay}},
                 "repeat": {"until": format!("iteration >= {iterations}"),
                            "max_iterations": iterations}}
            ]}),
        )
        .await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    let started = Instant::now();
    let (wal0, _) = wal_and_iteration(&pool, uuid).await;
    s.execute(&t, &id).await;
    // (iteration projected, WAL position) as the loop goes.
    let mut samples = vec![(0i64, wal0)];
    loop {
        let (wal, it) = wal_and_iteration(&pool, uuid).await;
        if it > samples.last().unwrap().0 {
            samples.push((it, wal));
        }
        let (status,): (String,) = sqlx::query_as("SELECT status FROM workflows WHERE id = $1")
            .bind(uuid)
            .fetch_one(&pool)
            .await
            .unwrap();
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            assert_eq!(status, "completed");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "too slow");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let (wal_end, it_end) = wal_and_iteration(&pool, uuid).await;
    assert_eq!(it_end as u64, iterations);
    // Bytes per iteration between the first samples at or after two
    // iterations.
    let at = |n: i64| {
        samples
            .iter()
            .find(|(it, _)| *it >= n)
            .copied()
            .unwrap_or((it_end, wal_end))
    };
    let per = |from: i64, to: i64| {
        let (a, wa) = at(from);
        let (b, wb) = at(to);
        if b > a { (wb - wa) / (b - a) } else { 0 }
    };
    let n = iterations as i64;
    let tenth = (n / 10).max(1);
    let total = wal_end - wal0;
    println!(
        "loop of {iterations} iterations x {bytes} B outputs, agent {delay} ms: \
         {total} B of WAL in {:.1} s; {} B/iteration overall; by tenths of the loop: {:?}",
        wall.as_secs_f64(),
        total / n,
        (0..10)
            .map(|k| per(k * tenth, (k + 1) * tenth))
            .collect::<Vec<_>>(),
    );
    println!("{} samples (iteration, WAL bytes so far):", samples.len());
    for (it, wal) in &samples {
        print!("({it}, {}) ", wal - wal0);
    }
    println!();
    // One GET of the whole thing, as a user reads it.
    let got = Instant::now();
    let w = s.get(&t, &id).await;
    let draft = &w["tasks"][0];
    assert_eq!(
        draft["iterations"].as_array().unwrap().len() as u64,
        iterations
    );
    println!(
        "GET /workflows/{{id}}: {:.2} s",
        got.elapsed().as_secs_f64()
    );
}
