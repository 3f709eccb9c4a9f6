//! Operators' tools over the log: `replay` (rebuild the projections),
//! `replay --verify` (compare them with the fold of the log), `audit` (one
//! workflow's history), `events tail` (records as JSON lines).
//!
//! The log is read outside any consumer group ([`Reader`]), on a blocking
//! thread, and handed over in batches; with `--from-archive`, each
//! partition's archived records below the log's start come first.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_core::{AuditEntry, Event, Record, WorkflowId, WorkflowState, apply, audit};
use agentflow_log::{LogRecord, ReadFrom, Reader};
use agentflow_store::{Positioned, ProjectionReader, Store};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::archive::{Archive, check_coverage};
use crate::config::Config;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Do not write: fold the log and compare with Postgres, print every
    /// difference, exit 1 if there is any.
    #[arg(long)]
    verify: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Rebuild even though engine nodes are running against this database
    /// (their projector would write alongside the rebuild).
    #[arg(long)]
    force: bool,
    /// An archive written by `agentflow archive`: its records come first,
    /// then the log from its (moved) start. Repeat for several archives.
    /// Required once an archive moved the log's start.
    #[arg(long, value_name = "DIR")]
    from_archive: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The workflow's id.
    workflow_id: String,
    /// Print `{workflow_id, events, state}` as JSON.
    #[arg(long)]
    json: bool,
    /// Also read this archive (`agentflow archive`), for a workflow whose
    /// records were archived. Repeatable.
    #[arg(long, value_name = "DIR")]
    from_archive: Vec<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum EventsCommand {
    /// Print records as JSON lines.
    Tail(TailArgs),
}

#[derive(clap::Args)]
pub struct TailArgs {
    /// Only these event types (repeatable).
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    types: Vec<String>,
    /// Start at the beginning of the log instead of its end.
    #[arg(long)]
    from_beginning: bool,
    /// Keep printing new records as they come.
    #[arg(long)]
    follow: bool,
}

const BATCH: usize = 1000;

/// Reads the log on a blocking thread and sends it in batches; the count
/// of records to read comes first.
fn read_log(config: &Config, from: ReadFrom, follow: bool) -> mpsc::Receiver<ReadMsg> {
    read_partitions(config, None, from, follow)
}

fn read_partitions(
    config: &Config,
    partitions: Option<Vec<i32>>,
    from: ReadFrom,
    follow: bool,
) -> mpsc::Receiver<ReadMsg> {
    read_history(config, partitions, from, follow, None)
}

/// What the log once held and what it holds: the archives' records below
/// the start of each partition of the log, then the log.
struct History {
    archives: Arc<Vec<Archive>>,
    /// Refuse to read a log whose start moved past what the archives hold.
    complete: bool,
}

/// Opens the archives (their checksums are verified).
fn open_archives(dirs: &[PathBuf]) -> anyhow::Result<Arc<Vec<Archive>>> {
    Ok(Arc::new(
        dirs.iter()
            .map(|d| Archive::open(d))
            .collect::<anyhow::Result<_>>()?,
    ))
}

/// The whole history from its beginning, archives then log, refusing a log
/// whose start moved past what the archives hold.
fn read_whole(config: &Config, archives: Arc<Vec<Archive>>) -> mpsc::Receiver<ReadMsg> {
    let history = History {
        archives,
        complete: true,
    };
    read_history(config, None, ReadFrom::Beginning, false, Some(history))
}

fn read_history(
    config: &Config,
    partitions: Option<Vec<i32>>,
    from: ReadFrom,
    follow: bool,
    history: Option<History>,
) -> mpsc::Receiver<ReadMsg> {
    let (tx, rx) = mpsc::channel(8);
    let log = config.log();
    tokio::task::spawn_blocking(move || {
        let mut reader = match Reader::open_partitions(&log, partitions.as_deref(), from, follow) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(ReadMsg::Failed(e.to_string()));
                return;
            }
        };
        let mut archived = 0;
        if let Some(h) = &history {
            let starts = reader.starts().clone();
            if h.complete
                && let Err(e) = check_coverage(&h.archives, &log.topic, &starts)
            {
                let _ = tx.blocking_send(ReadMsg::Failed(format!("{e:#}")));
                return;
            }
            archived = h.archives.iter().map(|a| a.manifest.records as i64).sum();
        }
        if tx
            .blocking_send(ReadMsg::Total(reader.total() + archived))
            .is_err()
        {
            return;
        }
        let mut batch = Vec::with_capacity(BATCH);
        if let Some(h) = &history
            && let Err(e) = read_archives(&h.archives, &mut reader, &tx, &mut batch)
        {
            let _ = tx.blocking_send(ReadMsg::Failed(format!("{e:#}")));
            return;
        }
        while let Some(r) = reader.next_record() {
            match r {
                Ok(r) => batch.push(r),
                Err(e) => {
                    let _ = tx.blocking_send(ReadMsg::Failed(e.to_string()));
                    return;
                }
            }
            if batch.len() >= BATCH || (follow && !batch.is_empty()) {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.blocking_send(ReadMsg::Batch(full)).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(ReadMsg::Batch(batch));
        }
    });
    rx
}

/// Sends the archives' records that the log (as `reader` opened it) no
/// longer has, partition by partition in offset order: each offset once,
/// however many archives hold it.
fn read_archives(
    archives: &[Archive],
    reader: &mut Reader,
    tx: &mpsc::Sender<ReadMsg>,
    batch: &mut Vec<LogRecord>,
) -> anyhow::Result<()> {
    let mut starts: Vec<(i32, i64)> = reader.starts().iter().map(|(p, o)| (*p, *o)).collect();
    starts.sort();
    for (partition, start) in starts {
        let mut entries: Vec<(&Archive, &crate::archive::format::PartitionEntry)> = archives
            .iter()
            .filter_map(|a| a.entry(partition).map(|e| (a, e)))
            .collect();
        entries.sort_by_key(|(_, e)| e.from_offset);
        let mut next = 0;
        for (archive, entry) in entries {
            for raw in archive.records(entry)? {
                let raw = raw?;
                if raw.offset < next || raw.offset >= start {
                    continue;
                }
                next = raw.offset + 1;
                let payloads = reader.payloads();
                batch.push(LogRecord {
                    partition: raw.partition,
                    offset: raw.offset,
                    record: Record::from_bytes_with(&raw.payload, &mut |r| payloads.resolve(r)),
                });
                if batch.len() >= BATCH {
                    let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
                    if tx.blocking_send(ReadMsg::Batch(full)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

enum ReadMsg {
    Total(i64),
    Batch(Vec<LogRecord>),
    Failed(String),
}

fn progress(total: i64, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records  {per_sec}  eta {eta}  {msg}")
            .expect("valid template"),
    );
    bar
}

pub async fn replay(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url, 4)
        .await
        .context("connecting to Postgres")?;
    store.migrate().await.context("migrating")?;
    let archives = open_archives(&args.from_archive)?;
    if args.verify {
        return verify(config, &store.reader(), args.json, archives).await;
    }
    if !args.force && store.admin().has_projection(&config.topic).await? {
        // This database is a projection of the topic: nodes that follow the
        // topic (the group coordinator knows them) may be writing into it
        // while it is rebuilt.
        let log = config.log();
        let live = tokio::task::spawn_blocking(move || {
            let mut live = vec![];
            for group in [
                agentflow_engine::CONSUMER_GROUP,
                agentflow_projector::CONSUMER_GROUP,
            ] {
                live.extend(agentflow_log::group_members(
                    &log,
                    group,
                    Duration::from_secs(10),
                )?);
            }
            Ok::<_, agentflow_log::LogError>(live)
        })
        .await??;
        if !live.is_empty() {
            anyhow::bail!(
                "agentflow nodes are running on this topic ({}) and this database holds its projection: stop them first, \
                 replay into a new database (AGENTFLOW_DATABASE_URL), or pass --force (a node stopped alone in its group \
                 is listed until kafka_session_timeout_ms has passed: it keeps its place for a restart)",
                live.join(", ")
            );
        }
    }
    // Before anything is reset: the archives must hold what the log lost.
    let log = config.log();
    let starts = tokio::task::spawn_blocking(move || {
        agentflow_log::partition_watermarks(&log, Duration::from_secs(10))
    })
    .await??;
    check_coverage(
        &archives,
        &config.topic,
        &(0..).zip(starts.iter().map(|w| w.0)).collect(),
    )?;
    store.admin().reset_projections(&config.topic).await?;
    let started = Instant::now();
    let mut rx = read_whole(config, archives);
    let (mut read, mut applied, mut rejected, mut quarantined) = (0u64, 0u64, 0u64, 0u64);
    let mut cache = agentflow_store::ProjectionCache::default();
    let mut bar = ProgressBar::hidden();
    while let Some(msg) = rx.recv().await {
        match msg {
            ReadMsg::Total(n) => bar = progress(n, args.json),
            ReadMsg::Failed(e) => anyhow::bail!("reading the log: {e}"),
            ReadMsg::Batch(records) => {
                let mut unreadable = Vec::new();
                let batch: Vec<Positioned> = records
                    .into_iter()
                    .filter_map(|r| {
                        read += 1;
                        match r.record {
                            Ok(record) => Some(Positioned {
                                partition: r.partition,
                                offset: r.offset,
                                record,
                            }),
                            Err(e) => {
                                unreadable.push((r.partition, r.offset, e.to_string()));
                                None
                            }
                        }
                    })
                    .collect();
                // Like the projector: a record Postgres refuses is
                // quarantined, and the rebuild goes on.
                let out = store
                    .writer()
                    .project(&config.topic, &batch, &mut cache)
                    .await?;
                applied += out.applied as u64;
                rejected += out.rejected as u64;
                quarantined += out.quarantined.len() as u64;
                for q in &out.quarantined {
                    bar.println(format!(
                        "quarantined record at {}:{} ({} of workflow {}): {}",
                        q.partition,
                        q.offset,
                        q.event_type.as_deref().unwrap_or("?"),
                        q.workflow_id.map(|w| w.to_string()).unwrap_or_default(),
                        q.reason
                    ));
                }
                for (p, o, why) in unreadable {
                    let why = format!("unreadable record: {why}");
                    store
                        .writer()
                        .quarantine(&config.topic, p, o, Err(&why), &why)
                        .await?;
                    quarantined += 1;
                    bar.println(format!("quarantined record at {p}:{o}: {why}"));
                }
                bar.set_position(read);
            }
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let summary = json!({
        "records": read,
        "applied": applied,
        "rejected": rejected,
        "quarantined": quarantined,
        "seconds": secs,
        "records_per_second": read as f64 / secs.max(1e-9),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "replayed {read} records into Postgres in {secs:.1} s ({:.0} records/s): {applied} applied, {rejected} ignored by the fold, {quarantined} quarantined",
            read as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

/// Folds the whole log and compares every workflow with its projection.
async fn verify(
    config: &Config,
    store: &ProjectionReader,
    json_out: bool,
    archives: Arc<Vec<Archive>>,
) -> anyhow::Result<()> {
    let mut rx = read_whole(config, archives);
    let mut folded: HashMap<WorkflowId, Option<WorkflowState>> = HashMap::new();
    let mut bar = ProgressBar::hidden();
    let mut read = 0u64;
    while let Some(msg) = rx.recv().await {
        match msg {
            ReadMsg::Total(n) => bar = progress(n, json_out),
            ReadMsg::Failed(e) => anyhow::bail!("reading the log: {e}"),
            ReadMsg::Batch(records) => {
                for r in records {
                    read += 1;
                    if let Ok(rec) = r.record {
                        let _ = apply(folded.entry(rec.workflow_id).or_insert(None), &rec);
                    }
                }
                bar.set_position(read);
            }
        }
    }
    bar.finish_and_clear();
    let log: HashMap<WorkflowId, WorkflowState> = folded
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let mut differences: Vec<Value> = Vec::new();
    let ids: Vec<WorkflowId> = log.keys().copied().collect();
    for chunk in ids.chunks(BATCH) {
        let projected = store.get_workflows(chunk).await?;
        for id in chunk {
            let want = &log[id];
            match projected.get(id) {
                None => differences.push(json!({"workflow_id": id, "field": "(row)",
                    "log": "exists", "postgres": "missing"})),
                Some(got) if got != want => {
                    differences.extend(field_differences(*id, want, got));
                }
                Some(_) => {}
            }
        }
    }
    for id in store.workflow_ids().await? {
        if !log.contains_key(&id) {
            differences.push(json!({"workflow_id": id, "field": "(row)",
                "log": "missing", "postgres": "exists"}));
        }
    }
    // Records the projector kept aside: their workflows' rows stop before
    // them (the differences above say where), and an operator decides.
    let quarantined: Vec<Value> = store
        .quarantined(&config.topic)
        .await?
        .iter()
        .map(quarantined_json)
        .collect();
    if json_out {
        println!(
            "{}",
            json!({"records": read, "workflows": log.len(), "differences": differences,
                "quarantined": quarantined})
        );
    } else {
        for q in &quarantined {
            println!(
                "quarantined record at {}:{} (workflow {}, {} seq {}): {}",
                q["partition"],
                q["offset"],
                q["workflow_id"].as_str().unwrap_or("unknown"),
                q["event_type"].as_str().unwrap_or("unreadable"),
                q["seq"],
                q["reason"].as_str().unwrap_or_default()
            );
        }
        for d in &differences {
            println!(
                "workflow {} {}: log {} / postgres {}",
                d["workflow_id"].as_str().unwrap_or_default(),
                d["field"].as_str().unwrap_or_default(),
                d["log"],
                d["postgres"]
            );
        }
        println!(
            "verified {} workflows ({read} records): {} difference(s), {} quarantined record(s)",
            log.len(),
            differences.len(),
            quarantined.len()
        );
    }
    if !differences.is_empty() || !quarantined.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn quarantined_json(q: &agentflow_store::QuarantinedRecord) -> Value {
    json!({"partition": q.partition, "offset": q.offset, "workflow_id": q.workflow_id,
        "event_type": q.event_type, "seq": q.seq, "reason": q.reason,
        "quarantined_at": q.quarantined_at})
}

/// The top-level fields where the projection differs from the fold.
fn field_differences(id: WorkflowId, log: &WorkflowState, pg: &WorkflowState) -> Vec<Value> {
    let (Value::Object(a), Value::Object(b)) = (
        serde_json::to_value(log).expect("serialisable"),
        serde_json::to_value(pg).expect("serialisable"),
    ) else {
        return vec![];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            json!({"workflow_id": id, "field": k,
                "log": a.get(k).cloned().unwrap_or(Value::Null),
                "postgres": b.get(k).cloned().unwrap_or(Value::Null)})
        })
        .collect()
}

pub async fn audit_workflow(config: &Config, args: AuditArgs) -> anyhow::Result<()> {
    let id = WorkflowId::parse(&args.workflow_id)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", args.workflow_id))?;
    // The projection knows which partition holds the workflow, and which
    // of its records it quarantined; without it (Postgres down, or not
    // projected yet) every partition is read, and nothing is marked.
    let hint = async {
        let store = Store::connect(&config.database_url, 1).await.ok()?.reader();
        let partition = store.workflow_partition(id).await.ok().flatten();
        let quarantined = store
            .quarantined_of(&config.topic, id)
            .await
            .unwrap_or_default();
        Some((partition, quarantined))
    };
    let (partition, quarantined) = tokio::time::timeout(std::time::Duration::from_secs(1), hint)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let partition = partition.or_else(|| quarantined.first().map(|q| q.partition));
    let archives = open_archives(&args.from_archive)?;
    let mut rx = read_history(
        config,
        partition.map(|p| vec![p]),
        ReadFrom::Beginning,
        false,
        Some(History {
            archives: archives.clone(),
            complete: false,
        }),
    );
    let mut records: Vec<Record> = Vec::new();
    let mut positions: Vec<(i32, i64)> = Vec::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            ReadMsg::Total(_) => {}
            ReadMsg::Failed(e) => anyhow::bail!("reading the log: {e}"),
            ReadMsg::Batch(batch) => {
                for r in batch {
                    if let Ok(rec) = r.record
                        && rec.workflow_id == id
                    {
                        records.push(rec);
                        positions.push((r.partition, r.offset));
                    }
                }
            }
        }
    }
    if records.is_empty() {
        anyhow::bail!(
            "no records of workflow {id} in topic {}{}",
            config.topic,
            if archives.is_empty() {
                " (if it was archived, pass its archive with --from-archive DIR)"
            } else {
                " nor in the archives given"
            }
        );
    }
    let (entries, state) = audit(&records);
    let entries: Vec<AuditEntry> = entries
        .into_iter()
        .zip(&positions)
        .map(|(e, (p, o))| {
            match quarantined
                .iter()
                .find(|q| q.partition == *p && q.offset == *o)
            {
                Some(q) => e.quarantined(q.reason.clone()),
                None => e,
            }
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({"workflow_id": id, "events": entries, "state": state})
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<27} {:<26} {:>4} {:<20} {:<28} {:>8} {:>9}  {:<10} node",
        "time", "event", "seq", "step#iteration", "agent", "attempts", "duration", "asked by"
    )?;
    for e in &entries {
        print_entry(&mut out, e)?;
    }
    if let Some(st) = state {
        writeln!(out)?;
        writeln!(
            out,
            "state: {} (seq {}, {} run(s)); steps: {}",
            st.status.as_str(),
            st.seq,
            st.runs,
            st.steps
                .iter()
                .map(|s| format!("{}={}", s.id, s.status.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(out, "results: {}", st.results())?;
    }
    Ok(())
}

fn print_entry(out: &mut impl Write, e: &AuditEntry) -> std::io::Result<()> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let plain = |v: &Option<Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "-".into(),
    };
    writeln!(
        out,
        "{:<27} {:<26} {:>4} {:<20} {:<28} {:>8} {:>9}  {:<10} {}{}",
        e.timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        e.event_type,
        e.seq,
        opt(e.step.as_ref().map(|s| match e.iteration {
            Some(n) => format!("{s}#{n}"),
            None => s.clone(),
        })),
        opt(e.agent.clone()),
        opt(e.attempts.map(|a| a.to_string())),
        opt(e.duration_ms.map(|d| format!("{d} ms"))),
        plain(&e.requested_by),
        plain(&e.node_id),
        if e.applied {
            ""
        } else {
            "  (ignored by the fold)"
        }
    )?;
    if let Some(c) = &e.condition {
        writeln!(
            out,
            "{:>31} {} `{}` -> {}{}",
            "",
            plain(&c.get("kind").cloned()),
            plain(&c.get("expression").cloned()),
            plain(&c.get("result").cloned()),
            c.get("error")
                .filter(|x| !x.is_null())
                .map(|x| format!(" (error: {})", plain(&Some(x.clone()))))
                .unwrap_or_default()
        )?;
    }
    if let Some(w) = &e.wait {
        writeln!(out, "{:>31} {}", "", w)?;
    }
    if let Some(why) = &e.quarantined {
        writeln!(
            out,
            "{:>31} QUARANTINED: the projection could not hold it ({why}); the projected workflow stops before it",
            ""
        )?;
    }
    if let Some(err) = &e.error {
        writeln!(out, "{:>31} error: {err}", "")?;
    }
    Ok(())
}

pub async fn events(config: &Config, cmd: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Tail(args) = cmd;
    let from = if args.from_beginning {
        ReadFrom::Beginning
    } else {
        ReadFrom::End
    };
    if let Some(t) = args
        .types
        .iter()
        .find(|t| !Event::TYPES.contains(&t.as_str()))
    {
        anyhow::bail!(
            "unknown event type `{t}`; known: {}",
            Event::TYPES.join(", ")
        );
    }
    let mut rx = read_log(config, from, args.follow);
    let mut out = std::io::stdout().lock();
    while let Some(msg) = rx.recv().await {
        match msg {
            ReadMsg::Total(_) => {}
            ReadMsg::Failed(e) => anyhow::bail!("reading the log: {e}"),
            ReadMsg::Batch(batch) => {
                for r in batch {
                    match r.record {
                        Ok(rec) => {
                            if args.types.is_empty()
                                || args.types.iter().any(|t| t == rec.event_type())
                            {
                                writeln!(out, "{}", rec.to_json())?;
                            }
                        }
                        Err(e) => {
                            eprintln!("unreadable record at {}:{}: {e}", r.partition, r.offset)
                        }
                    }
                }
                out.flush()?;
            }
        }
    }
    Ok(())
}
