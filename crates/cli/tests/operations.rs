//! What operators deploy beside the binary stays true to it: the alert rules
//! and the dashboard query only metrics the service exports, the dashboard
//! has the guide's §9.2 panels, docker-compose.yml runs every service the
//! README names. (promtool and `docker-compose config` themselves run in
//! scripts/test.sh.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Stack, pipeline};
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The metric families a PromQL expression refers to (ours are all named
/// `workflow_*` or `agentflow_*`; histogram series map to their family).
fn metric_families(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("workflow_") || t.starts_with("agentflow_"))
        .map(|t| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| t.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                .unwrap_or(t)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn alerts_and_dashboard_query_only_metrics_the_service_exports() {
    let s = Stack::start().await;
    let t = s.token(3);
    let ok = s.create(&t, pipeline("ok", &["a", "b"])).await;
    s.execute(&t, &ok).await;
    let bad = s.create(&t, common::failing("bad", 400)).await;
    s.execute(&t, &bad).await;
    for id in [&ok, &bad] {
        s.wait_done(&t, id, Duration::from_secs(20)).await;
    }
    let (_, body) = s.req("GET", "/metrics", None, None).await;
    let exported: BTreeSet<String> = body
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();

    let mut used = BTreeSet::new();
    for line in repo_file("config/prometheus/alerts.yml").lines() {
        if !line.trim_start().starts_with('#') {
            used.extend(metric_families(line));
        }
    }
    let dashboard: Value =
        serde_json::from_str(&repo_file("config/grafana/dashboards/agentflow.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    for p in panels {
        for target in p["targets"].as_array().unwrap() {
            used.extend(metric_families(target["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\nexported: {exported:?}"
    );

    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Workflow throughput",
        "Success / failure rate",
        "Average workflow duration by workflow name",
        "Top failing agents (last hour)",
    ] {
        assert!(titles.contains(&wanted), "{wanted} not in {titles:?}");
    }
}

#[test]
fn docker_compose_runs_every_service_the_readme_names() {
    let out = std::process::Command::new("docker-compose")
        .args(["-f", "../../docker-compose.yml", "config", "--services"])
        .env("AGENTFLOW_JWT_SECRET", "test")
        .output()
        .expect("docker-compose (scripts/stack.sh install)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let readme = repo_file("README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("Services in `docker-compose.yml`:"))
        .expect("README lists the compose services");
    let named: BTreeSet<String> = line
        .split('`')
        .skip(3)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(named.len() >= 6, "{named:?}");
    let missing: Vec<&String> = named.difference(&services).collect();
    assert!(
        missing.is_empty(),
        "named in README, not in compose: {missing:?}"
    );
}

#[tokio::test]
async fn logs_are_json_lines_when_asked() {
    let s = Stack::start().await;
    let out = s
        .command(&["migrate"])
        .env("AGENTFLOW_LOG_FORMAT", "json")
        .env("AGENTFLOW_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"].is_string()),
        "{text}"
    );
}
