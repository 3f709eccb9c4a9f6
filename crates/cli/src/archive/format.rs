//! The archive on disk: a directory with one gzip JSONL file per partition
//! and a `manifest.json` saying what each file covers, with its SHA-256.
//!
//! Each line is one record exactly as it is in the log (its JSON text, byte
//! for byte, under `record`; a record that is not JSON goes hex-encoded under
//! `bytes_hex`), with its `partition`, `offset`, `key` and broker
//! `timestamp_ms`. Lines are in offset order.
//!
//! What a partition's file holds: every record of the archived workflows
//! up to `end_offset` (the partition's end when it was archived), and
//! therefore every record in `[from_offset, truncate_to)`: the archive
//! chose `truncate_to` as the first record of a workflow it did not take.
//! A reader of archive + log takes the archive's records below the log's
//! start and the log from there on.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use agentflow_log::RawRecord;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "agentflow-archive";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `agentflow-archive`.
    pub format: String,
    pub version: u32,
    pub topic: String,
    /// Where outputs kept out of records are (`data.output_ref`): the
    /// archive does not copy them, and truncation never touches that topic.
    pub payload_topic: String,
    /// Workflows completed or cancelled before this time are archived.
    pub finished_before: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub workflows: u64,
    pub records: u64,
    pub partitions: Vec<PartitionEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEntry {
    pub partition: i32,
    /// The file, relative to the archive's directory.
    pub file: String,
    /// The partition's start when archived.
    pub from_offset: i64,
    /// Every record in `[from_offset, truncate_to)` is in the file; the
    /// log's start may move up to here and no further.
    pub truncate_to: i64,
    /// The partition's end when archived.
    pub end_offset: i64,
    pub records: u64,
    pub workflows: u64,
    /// Of the file's bytes (gzip), lower-case hex.
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    partition: i32,
    offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    record: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes_hex: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one partition's file.
pub struct PartitionWriter {
    file: String,
    out: GzEncoder<Hashing<BufWriter<File>>>,
    records: u64,
    last_offset: i64,
}

impl PartitionWriter {
    pub fn create(dir: &Path, partition: i32, from: i64, end: i64) -> anyhow::Result<Self> {
        let file = format!("partition-{partition:05}-{from}-{end}.jsonl.gz");
        let f = File::create_new(dir.join(&file))
            .with_context(|| format!("creating {}", dir.join(&file).display()))?;
        Ok(Self {
            file,
            out: GzEncoder::new(
                Hashing {
                    inner: BufWriter::new(f),
                    hash: Sha256::new(),
                    bytes: 0,
                },
                Compression::default(),
            ),
            records: 0,
            last_offset: -1,
        })
    }

    pub fn write(&mut self, r: &RawRecord) -> anyhow::Result<()> {
        debug_assert!(r.offset > self.last_offset, "records in offset order");
        // The record's own text when it is JSON on one line (every record
        // agentflow writes); otherwise its bytes, hex-encoded.
        let raw = serde_json::from_slice::<&RawValue>(&r.payload)
            .ok()
            .filter(|v| v.get().as_bytes() == r.payload && !r.payload.contains(&b'\n'));
        let line = Line {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            record: raw,
            bytes_hex: raw.is_none().then(|| hex(&r.payload)),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.records += 1;
        self.last_offset = r.offset;
        Ok(())
    }

    /// Closes the file (synced to disk): (file name, records, sha256, bytes).
    pub fn finish(self) -> anyhow::Result<(String, u64, String, u64)> {
        let hashing = self.out.finish()?;
        let Hashing {
            inner, hash, bytes, ..
        } = hashing;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.file, self.records, hex(&hash.finalize()), bytes))
    }
}

pub fn write_manifest(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let mut f = File::create_new(dir.join(MANIFEST))?;
    serde_json::to_writer_pretty(&mut f, manifest)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

impl Manifest {
    pub fn new(topic: &str, payload_topic: &str, finished_before: DateTime<Utc>) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            topic: topic.into(),
            payload_topic: payload_topic.into(),
            finished_before,
            created_at: Utc::now(),
            workflows: 0,
            records: 0,
            partitions: vec![],
        }
    }
}

/// An archive read back, its files' checksums verified.
#[derive(Debug, Clone)]
pub struct Archive {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Archive {
    /// Reads the manifest and checks every file against it: a file missing,
    /// changed or cut short is refused.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("archive {}: no such directory", dir.display());
        }
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "archive {}: cannot read {MANIFEST} (not an archive written by `agentflow archive`, or an incomplete copy of one)",
                dir.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("archive {}: {MANIFEST} is not valid", dir.display()))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            bail!(
                "archive {}: format {} version {} (this agentflow reads {FORMAT} version {VERSION})",
                dir.display(),
                manifest.format,
                manifest.version
            );
        }
        for e in &manifest.partitions {
            if e.file.contains('/') || e.file.starts_with('.') {
                bail!("archive {}: bad file name {:?}", dir.display(), e.file);
            }
            let path = dir.join(&e.file);
            let mut f = File::open(&path).with_context(|| {
                format!(
                    "archive {}: partition {} file missing",
                    dir.display(),
                    e.partition
                )
            })?;
            let mut hash = Sha256::new();
            let mut bytes = 0u64;
            let mut buf = vec![0; 1 << 16];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                bytes += n as u64;
            }
            let sha = hex(&hash.finalize());
            if sha != e.sha256 || bytes != e.bytes {
                bail!(
                    "archive {}: {} does not match its checksum in {MANIFEST} (sha256 {sha}, {bytes} bytes; \
                     expected {}, {} bytes): the archive was changed or damaged; refusing to read it",
                    dir.display(),
                    e.file,
                    e.sha256,
                    e.bytes
                );
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
        })
    }

    pub fn entry(&self, partition: i32) -> Option<&PartitionEntry> {
        self.manifest
            .partitions
            .iter()
            .find(|e| e.partition == partition)
    }

    /// The records of one partition's file, in offset order.
    pub fn records(
        &self,
        entry: &PartitionEntry,
    ) -> anyhow::Result<impl Iterator<Item = anyhow::Result<RawRecord>> + use<>> {
        let path = self.dir.join(&entry.file);
        let mut lines = BufReader::new(GzDecoder::new(BufReader::new(File::open(&path)?))).lines();
        let (want, partition, mut last) = (entry.records, entry.partition, -1i64);
        let mut seen = 0u64;
        let mut done = false;
        let name = path.display().to_string();
        Ok(std::iter::from_fn(move || {
            if done {
                return None;
            }
            let Some(line) = lines.next() else {
                done = true;
                return (seen != want).then(|| {
                    Err(anyhow::anyhow!(
                        "{name}: {seen} records, the manifest says {want}"
                    ))
                });
            };
            let parsed = line.map_err(anyhow::Error::from).and_then(|l| {
                let line: Line = serde_json::from_str(&l)?;
                let payload = match (line.record, &line.bytes_hex) {
                    (Some(r), None) => r.get().as_bytes().to_vec(),
                    (None, Some(h)) => unhex(h).context("bad bytes_hex")?,
                    _ => bail!("a line needs one of record and bytes_hex"),
                };
                if line.partition != partition || line.offset <= last {
                    bail!(
                        "record {}:{} out of place after offset {last}",
                        line.partition,
                        line.offset
                    );
                }
                Ok(RawRecord {
                    partition: line.partition,
                    offset: line.offset,
                    key: line.key.map(String::into_bytes),
                    payload,
                    timestamp_ms: line.timestamp_ms,
                })
            });
            match parsed {
                Ok(r) => {
                    seen += 1;
                    last = r.offset;
                    Some(Ok(r))
                }
                Err(e) => {
                    done = true;
                    Some(Err(e.context(format!("{name}, line {}", seen + 1))))
                }
            }
        }))
    }
}

/// Checks that `archives` (all of `topic`) hold every record that the log,
/// whose partitions start at `starts`, no longer has.
pub fn check_coverage(
    archives: &[Archive],
    topic: &str,
    starts: &std::collections::HashMap<i32, i64>,
) -> anyhow::Result<()> {
    for a in archives {
        if a.manifest.topic != topic {
            bail!(
                "archive {} is of topic {}, not {topic}",
                a.dir.display(),
                a.manifest.topic
            );
        }
    }
    let mut parts: Vec<(&i32, &i64)> = starts.iter().collect();
    parts.sort();
    for (p, start) in parts {
        let mut ranges: Vec<(i64, i64)> = archives
            .iter()
            .filter_map(|a| a.entry(*p))
            .map(|e| (e.from_offset, e.truncate_to))
            .collect();
        ranges.sort();
        let mut covered = 0;
        for (from, to) in ranges {
            if from > covered {
                break;
            }
            covered = covered.max(to);
        }
        if covered < *start {
            if archives.is_empty() {
                bail!(
                    "partition {p} of topic {topic} starts at offset {start}: the records before it were \
                     archived (`agentflow archive --truncate`); pass the archive(s) with --from-archive DIR"
                );
            }
            bail!(
                "partition {p} of topic {topic} starts at offset {start}, and the archives given hold its \
                 records only up to offset {covered}: records {covered}..{start} are in none of them \
                 (pass every archive that moved the log's start, with --from-archive DIR once per archive)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(offset: i64, payload: &[u8]) -> RawRecord {
        RawRecord {
            partition: 2,
            offset,
            key: Some(b"k".to_vec()),
            payload: payload.to_vec(),
            timestamp_ms: Some(1),
        }
    }

    fn archive_of(dir: &Path, records: &[RawRecord], from: i64, to: i64) -> Archive {
        let mut w = PartitionWriter::create(dir, 2, from, 100).unwrap();
        for r in records {
            w.write(r).unwrap();
        }
        let (file, n, sha256, bytes) = w.finish().unwrap();
        let mut m = Manifest::new("t", "t-payloads", Utc::now());
        m.records = n;
        m.partitions.push(PartitionEntry {
            partition: 2,
            file,
            from_offset: from,
            truncate_to: to,
            end_offset: 100,
            records: n,
            workflows: 1,
            sha256,
            bytes,
        });
        write_manifest(dir, &m).unwrap();
        Archive::open(dir).unwrap()
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("af-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn records_read_back_byte_for_byte_json_or_not() {
        let dir = temp("roundtrip");
        let records = [
            raw(3, br#"{"b":1,"a":[1.0,"x\ny"]}"#),
            raw(5, b"\x00\xffnot json"),
            raw(9, b"{ \"spaced\" : true }"),
        ];
        let a = archive_of(&dir, &records, 0, 10);
        let back: Vec<RawRecord> = a
            .records(a.entry(2).unwrap())
            .unwrap()
            .collect::<anyhow::Result<_>>()
            .unwrap();
        assert_eq!(back.len(), 3);
        for (got, want) in back.iter().zip(&records) {
            assert_eq!(
                (got.offset, &got.payload, &got.key),
                (want.offset, &want.payload, &want.key)
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn coverage_must_reach_the_logs_start_without_gaps() {
        let (d1, d2) = (temp("c1"), temp("c2"));
        let first = archive_of(&d1, &[raw(0, b"{}")], 0, 10);
        let second = archive_of(&d2, &[raw(12, b"{}")], 10, 20);
        let starts = |s: i64| [(2, s), (0, 0)].into_iter().collect();
        check_coverage(&[], "t", &starts(0)).unwrap();
        let e = check_coverage(&[], "t", &starts(10))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--from-archive"), "{e}");
        check_coverage(std::slice::from_ref(&first), "t", &starts(10)).unwrap();
        let e = check_coverage(std::slice::from_ref(&first), "t", &starts(20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("records 10..20"), "{e}");
        let e = check_coverage(std::slice::from_ref(&second), "t", &starts(20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("records 0..20"), "{e}");
        check_coverage(&[second.clone(), first.clone()], "t", &starts(20)).unwrap();
        let e = check_coverage(&[first], "other", &starts(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not other"), "{e}");
        for d in [d1, d2] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
