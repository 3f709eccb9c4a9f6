//! A watch on partition ownership. The broker's group coordinator decides
//! who owns which partition; every node also reports what it owns to
//! Postgres. If a partition has had no live owner for a while — a broker
//! that failed to rebalance after a node died (Tansu 0.6 keeps the
//! survivors' old assignment when a member's session expires) — this node
//! rejoins the group, which makes the broker assign every partition again.
//! On a broker that rebalances properly the watch never acts.

use std::time::Duration;

use agentflow_log::{LogConfig, RejoinHandle, partition_count};
use agentflow_store::Store;
use ractor::ActorRef;

use crate::supervisor::SupervisorMsg;

pub(crate) async fn watch(
    supervisor: ActorRef<SupervisorMsg>,
    rejoin: RejoinHandle,
    store: Store,
    log: LogConfig,
    node_id: String,
) {
    let every = (log.session_timeout / 3).max(Duration::from_millis(500));
    // A live owner reports every `every`; a dead one stops.
    let stale = log.session_timeout + every;
    let mut last_rejoin: Option<std::time::Instant> = None;
    let mut reported: Option<(Vec<i32>, std::time::Instant)> = None;
    let mut checked = std::time::Instant::now();
    loop {
        // Report a new assignment at once, and an unchanged one every `every`.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok((owned, since_change)) = ractor::call_t!(supervisor, SupervisorMsg::Owned, 2000)
        else {
            continue;
        };
        let due = reported
            .as_ref()
            .is_none_or(|(last, at)| *last != owned || at.elapsed() >= every);
        if due {
            if let Err(e) = store.report_owned(&log.topic, &node_id, &owned).await {
                tracing::debug!(error = %e, "cannot report owned partitions");
                continue;
            }
            reported = Some((owned, std::time::Instant::now()));
        }
        if checked.elapsed() < every {
            continue;
        }
        checked = std::time::Instant::now();
        // Give a new assignment (or our last rejoin) time to settle and its
        // owners to report.
        let settled = since_change.min(last_rejoin.map_or(since_change, |t| t.elapsed()));
        if settled < stale + every {
            continue;
        }
        let cfg = log.clone();
        let count = match tokio::task::spawn_blocking(move || {
            partition_count(&cfg, Duration::from_secs(5))
        })
        .await
        {
            Ok(Ok(n)) => n as i32,
            _ => continue,
        };
        match store.unowned_partitions(&log.topic, count, stale).await {
            Ok(orphans) if !orphans.is_empty() => {
                tracing::warn!(
                    ?orphans,
                    "partitions have no live owner (the broker did not rebalance after a node left); rejoining the group"
                );
                rejoin.rejoin();
                last_rejoin = Some(std::time::Instant::now());
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot check partition ownership"),
        }
    }
}
