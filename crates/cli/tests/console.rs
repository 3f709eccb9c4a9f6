//! The web console in a real browser: headless Chromium driven by
//! playwright-core (crates/api/ui-tests/console.cjs) against a real stack
//! (Postgres, Kafka, `agentflow serve`, the mock agent). `scripts/stack.sh
//! install test` installs Chromium and the npm packages. Screenshots go to
//! `target/console-screenshots/` (or `$CONSOLE_SCREENSHOTS`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Stack, pipeline};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where `scripts/stack.sh install test` put playwright-core and axe-core.
fn node_modules() -> PathBuf {
    let cache = std::env::var("AGENTFLOW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"))
                .join("agentflow")
        });
    cache.join("console-npm/node_modules")
}

fn screenshots() -> PathBuf {
    std::env::var("CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| workspace().join("target"))
                .join("console-screenshots")
        })
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    // Agents that take a moment, so steps are seen running.
    let s = Stack::start_with(Duration::from_millis(500), "", &[]).await;
    let other = s.token(2);
    let other_id = s.create(&other, pipeline("someone else's", &["a"])).await;
    let modules = node_modules();
    assert!(
        modules.join("playwright-core").exists(),
        "{} has no playwright-core: run scripts/stack.sh install test",
        modules.display()
    );
    let out = tokio::process::Command::new("node")
        .arg(workspace().join("crates/api/ui-tests/console.cjs"))
        .env("NODE_PATH", &modules)
        .env("BASE", &s.base)
        .env("TOKEN_A", s.token(1))
        .env("TOKEN_B", &other)
        .env("OTHER_ID", &other_id)
        .env("SCREENSHOTS", screenshots())
        .output()
        .await
        .expect("node runs (scripts/stack.sh install test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
}
