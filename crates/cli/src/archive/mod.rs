//! `agentflow archive`: writes every record of the workflows that finished
//! before a date to files, and with `--truncate` then moves each
//! partition's start (DeleteRecords) up to the first record of its oldest
//! workflow that is not archived, never further.
//!
//! Which workflows finished is decided from the fold of the log itself
//! (`agentflow_core::apply`), never from Postgres, which may be gone: a
//! workflow is archived when it is completed or cancelled (final states)
//! with `finished_at` before the date. A `failed` workflow can be resumed,
//! so it is live; so is one with a record this code cannot read. Records
//! whose workflow has no `workflow.created` left in the log (the tail of a
//! workflow an earlier archive took) are archived too: nothing can run them.
//!
//! The log is read twice, up to the ends it had at the start: once to fold
//! and choose, once to write. Files are written in a temporary directory
//! next to the target and renamed into place at the end, so an interrupted
//! run leaves nothing that looks like an archive.

pub mod format;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agentflow_core::{Record, WorkflowId, WorkflowState, apply};
use agentflow_log::{RawRecord, Reader, delete_records_before, partition_watermarks};
use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

pub use format::{Archive, check_coverage};
use format::{Manifest, PartitionEntry, PartitionWriter};

use crate::config::Config;

#[derive(clap::Args)]
pub struct ArchiveArgs {
    /// Archive the workflows completed or cancelled before this time: a
    /// date (2026-01-31, midnight UTC) or an RFC 3339 time. Failed, running,
    /// waiting, paused and pending workflows are never archived.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    finished_before: DateTime<Utc>,
    /// The directory to write: it must not exist, or be empty.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Then move each partition's start (Kafka DeleteRecords) up to the
    /// first record of its oldest workflow not archived. Records before it
    /// are then only in the archive: keep it (`replay --from-archive`,
    /// `audit --from-archive` read it back). The payload topic is never
    /// touched.
    #[arg(long)]
    truncate: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_date(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| {
            format!("`{s}` is not a date (2026-01-31) or an RFC 3339 time (2026-01-31T12:00:00Z)")
        })
}

/// What the first pass knows of one workflow.
struct Seen {
    partition: i32,
    first_offset: i64,
    records: u64,
    /// The fold so far, dropped once it finished.
    state: Option<WorkflowState>,
    /// Completed or cancelled (it can never change again) at this time.
    finished: Option<DateTime<Utc>>,
    /// One of its records could not be read: it is kept in the log.
    unreadable: bool,
}

/// Which workflow a record is of: its key (agentflow keys every record by
/// workflow id), else the id in the record.
fn owner(r: &RawRecord, parsed: Option<&Record>) -> Option<WorkflowId> {
    r.key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| WorkflowId::parse(k).ok())
        .or_else(|| parsed.map(|p| p.workflow_id))
}

/// The first pass's answer.
struct Plan {
    /// The archived workflows.
    archived: HashMap<WorkflowId, i32>,
    /// Partition → records of archived workflows.
    expected: HashMap<i32, (u64, u64)>,
    /// Partition → where its start may move.
    truncate_to: HashMap<i32, i64>,
}

fn plan(config: &Config, ends: &HashMap<i32, i64>, cutoff: DateTime<Utc>) -> anyhow::Result<Plan> {
    let mut reader = Reader::open_until(&config.log(), ends)?;
    let mut seen: HashMap<WorkflowId, Seen> = HashMap::new();
    // Partition → the first record no workflow can be named for.
    let mut floor: HashMap<i32, i64> = HashMap::new();
    while let Some(r) = reader.next_raw() {
        let r = r?;
        // Outputs are not needed to tell whether and when it finished.
        let parsed = Record::from_bytes_with(&r.payload, &mut |_| Ok(Value::Null)).ok();
        let Some(id) = owner(&r, parsed.as_ref()) else {
            floor.entry(r.partition).or_insert(r.offset);
            continue;
        };
        let s = seen.entry(id).or_insert(Seen {
            partition: r.partition,
            first_offset: r.offset,
            records: 0,
            state: None,
            finished: None,
            unreadable: false,
        });
        s.records += 1;
        match parsed {
            None => s.unreadable = true,
            Some(_) if s.finished.is_some() => {}
            Some(rec) => {
                let _ = apply(&mut s.state, &rec);
                if let Some(st) = &s.state
                    && st.status.is_terminal()
                {
                    s.finished = Some(st.finished_at.unwrap_or(rec.timestamp));
                    s.state = None;
                }
            }
        }
    }
    let mut truncate_to: HashMap<i32, i64> = ends.clone();
    for (p, o) in floor {
        truncate_to.entry(p).and_modify(|t| *t = (*t).min(o));
    }
    let mut archived = HashMap::new();
    let mut expected: HashMap<i32, (u64, u64)> = HashMap::new();
    for (id, s) in &seen {
        // No state at all: its `workflow.created` is not in the log (an
        // earlier archive took it; these are the records it left after its
        // cut), so nothing can ever run it. Archived with the others, so
        // that it does not hold the log's start back forever.
        let orphan = s.finished.is_none() && s.state.is_none();
        let done = !s.unreadable && (orphan || s.finished.is_some_and(|at| at < cutoff));
        if done {
            archived.insert(*id, s.partition);
            let e = expected.entry(s.partition).or_default();
            e.0 += s.records;
            e.1 += 1;
        } else {
            truncate_to
                .entry(s.partition)
                .and_modify(|t| *t = (*t).min(s.first_offset));
        }
    }
    Ok(Plan {
        archived,
        expected,
        truncate_to,
    })
}

/// Checks that `dir` can become the archive, and makes the temporary
/// directory next to it that will be renamed to it.
fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty: archive into a new (or empty) directory",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if dir.exists() && !dir.is_dir() => {
            bail!("{} exists and is not a directory ({e})", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    let name = dir
        .file_name()
        .with_context(|| format!("{} names no directory", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!("{}: no such directory", parent.display());
    }
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(tmp)
}

/// The second pass: writes the archived workflows' records.
fn write(
    config: &Config,
    tmp: &Path,
    starts: &HashMap<i32, i64>,
    ends: &HashMap<i32, i64>,
    cutoff: DateTime<Utc>,
    plan: &Plan,
) -> anyhow::Result<Manifest> {
    let mut reader = Reader::open_until(&config.log(), ends)?;
    if reader.starts() != starts {
        bail!("the log's start moved while archiving (another archive running?); nothing written");
    }
    let mut partitions: Vec<i32> = ends.keys().copied().collect();
    partitions.sort();
    let mut writers: HashMap<i32, PartitionWriter> = HashMap::new();
    for p in &partitions {
        writers.insert(*p, PartitionWriter::create(tmp, *p, starts[p], ends[p])?);
    }
    while let Some(r) = reader.next_raw() {
        let r = r?;
        let parsed = if r.key.is_none() {
            Record::from_bytes_with(&r.payload, &mut |_| Ok(Value::Null)).ok()
        } else {
            None
        };
        let take = owner(&r, parsed.as_ref()).is_some_and(|id| plan.archived.contains_key(&id));
        if take {
            writers
                .get_mut(&r.partition)
                .expect("a writer per partition")
                .write(&r)?;
        } else if r.offset < plan.truncate_to[&r.partition] {
            bail!(
                "record {}:{} is below the planned start {} but not archived: the log changed while archiving; nothing written",
                r.partition,
                r.offset,
                plan.truncate_to[&r.partition]
            );
        }
    }
    let mut manifest = Manifest::new(&config.topic, &config.log().payload_topic(), cutoff);
    for p in partitions {
        let (file, records, sha256, bytes) = writers.remove(&p).expect("written").finish()?;
        let (want, workflows) = plan.expected.get(&p).copied().unwrap_or_default();
        if records != want {
            bail!(
                "partition {p}: read {records} records of archived workflows the second time, {want} the first: the log changed while archiving; nothing written"
            );
        }
        manifest.records += records;
        manifest.workflows += workflows;
        manifest.partitions.push(PartitionEntry {
            partition: p,
            file,
            from_offset: starts[&p],
            truncate_to: plan.truncate_to[&p],
            end_offset: ends[&p],
            records,
            workflows,
            sha256,
            bytes,
        });
    }
    format::write_manifest(tmp, &manifest)?;
    Ok(manifest)
}

pub async fn run(config: &Config, args: ArchiveArgs) -> anyhow::Result<()> {
    let tmp = prepare_dir(&args.to)?;
    let result = archive(config, &args, &tmp).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let manifest = result?;
    // Into place: onto a missing or empty directory, atomically.
    std::fs::rename(&tmp, &args.to).with_context(|| {
        let _ = std::fs::remove_dir_all(&tmp);
        format!("moving the archive to {}", args.to.display())
    })?;
    if let Some(parent) = args.to.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    }
    let mut moved: Vec<(i32, i64)> = vec![];
    if args.truncate {
        // Read back what is on disk before deleting anything from the log.
        let back = Archive::open(&args.to)?;
        let starts: Vec<(i32, i64)> = back
            .manifest
            .partitions
            .iter()
            .filter(|e| e.truncate_to > e.from_offset)
            .map(|e| (e.partition, e.truncate_to))
            .collect();
        moved = delete_records_before(&config.log(), &starts)
            .await
            .context("moving the log's start")?;
    }
    let summary = json!({
        "archive": args.to,
        "finished_before": manifest.finished_before,
        "workflows": manifest.workflows,
        "records": manifest.records,
        "partitions": manifest.partitions.iter().map(|e| json!({
            "partition": e.partition, "records": e.records, "workflows": e.workflows,
            "from_offset": e.from_offset, "truncate_to": e.truncate_to,
            "log_start": moved.iter().find(|(p, _)| *p == e.partition).map_or(e.from_offset, |(_, o)| *o),
        })).collect::<Vec<_>>(),
        "truncated": args.truncate,
    });
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    println!(
        "archived {} workflows ({} records) finished before {} to {}",
        manifest.workflows,
        manifest.records,
        manifest.finished_before.to_rfc3339(),
        args.to.display()
    );
    for e in &manifest.partitions {
        match moved.iter().find(|(p, _)| *p == e.partition) {
            Some((_, o)) => println!(
                "partition {}: {} records; log start moved {} -> {o}",
                e.partition, e.records, e.from_offset
            ),
            None if args.truncate => println!(
                "partition {}: {} records; log start stays at {} (the next record is of a workflow not archived)",
                e.partition, e.records, e.from_offset
            ),
            None => println!(
                "partition {}: {} records; --truncate would move its start {} -> {}",
                e.partition, e.records, e.from_offset, e.truncate_to
            ),
        }
    }
    Ok(())
}

async fn archive(config: &Config, args: &ArchiveArgs, tmp: &Path) -> anyhow::Result<Manifest> {
    let log = config.log();
    let marks = tokio::task::spawn_blocking(move || {
        partition_watermarks(&log, std::time::Duration::from_secs(10))
    })
    .await??;
    if marks.is_empty() {
        bail!("no topic {} on {}", config.topic, config.kafka_brokers);
    }
    let starts: HashMap<i32, i64> = (0..).zip(marks.iter().map(|m| m.0)).collect();
    let ends: HashMap<i32, i64> = (0..).zip(marks.iter().map(|m| m.1)).collect();
    let (config, tmp, cutoff) = (config.clone(), tmp.to_owned(), args.finished_before);
    tokio::task::spawn_blocking(move || {
        let plan = plan(&config, &ends, cutoff)?;
        write(&config, &tmp, &starts, &ends, cutoff, &plan)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_at_midnight_utc_or_rfc3339_times() {
        assert_eq!(
            parse_date("2026-01-31").unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_date("2026-01-31T12:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-31T10:00:00+00:00"
        );
        for bad in ["", "yesterday", "2026-13-01", "31/01/2026"] {
            assert!(
                parse_date(bad).unwrap_err().contains("is not a date"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_busy_directory_is_refused_and_a_missing_one_prepared_next_to_it() {
        let base = std::env::temp_dir().join(format!("af-dir-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(base.join("busy")).unwrap();
        std::fs::write(base.join("busy/x"), "x").unwrap();
        let e = prepare_dir(&base.join("busy")).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        std::fs::write(base.join("file"), "x").unwrap();
        assert!(prepare_dir(&base.join("file")).is_err());
        assert!(prepare_dir(&base.join("no/such/parent")).is_err());
        let tmp = prepare_dir(&base.join("new")).unwrap();
        assert_eq!(tmp.parent(), Some(base.as_path()));
        assert!(tmp.is_dir() && !base.join("new").exists());
        std::fs::remove_dir_all(base).unwrap();
    }
}
