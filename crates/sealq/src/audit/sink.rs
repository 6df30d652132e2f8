//! Where audit records go: the [`AuditSink`] trait, [`JsonLinesSink`] and
//! [`MemorySink`]. `sealq_sqlite::SqliteAuditSink` is the SQLite one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::seal::audit_chain::{AuditRecord, Checkpoint};
use crate::store::audit::{AuditError, AuditSink, Loaded};

/// JSON text of a record as every sink stores it (one line, no newline).
pub fn record_line(r: &AuditRecord) -> String {
    let mut out = Vec::with_capacity(256);
    write_record_line(&mut out, r);
    // Invariant: both writers produce UTF-8 (JSON text of UTF-8 strings).
    String::from_utf8(out).unwrap_or_default()
}

/// Append [`record_line`]'s text of `r` to `out`, without a line of its own
/// in between (for sinks that batch many records into one buffer).
pub fn write_record_line(out: &mut Vec<u8>, r: &AuditRecord) {
    // The per-task events have a hand-written writer (same text).
    if crate::seal::audit_encode::record_json_into(
        out, &r.writer, r.seq, r.time_ms, &r.event, &r.mac,
    ) {
        return;
    }
    let start = out.len();
    // Invariant: records are plain strings, integers and maps; serde_json
    // cannot fail on them.
    // Invariant as in `record_line`; on a failure nothing partial is kept.
    if serde_json::to_writer(&mut *out, r).is_err() {
        out.truncate(start);
    }
}

/// JSON text of a checkpoint (one line, no newline).
pub fn checkpoint_line(c: &Checkpoint) -> String {
    serde_json::to_string(c).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// JSON lines
// ---------------------------------------------------------------------------

/// Two append-only JSON-lines files: records (`audit.jsonl`) and
/// checkpoints (`audit.checkpoints.jsonl`, beside it). One line per item.
///
/// Files are opened with `O_APPEND`, each batch is written with one `write`
/// and then `fsync`ed, so several processes may append to the same files.
/// On Unix they are created with mode 0600, whatever the umask.
/// The default sink for the embedded SQLite broker, as `<db>.audit.jsonl`
/// next to the database file.
#[derive(Debug, Clone)]
pub struct JsonLinesSink {
    inner: Arc<JsonInner>,
}

#[derive(Debug)]
struct JsonInner {
    records: PathBuf,
    checkpoints: PathBuf,
    files: Mutex<Option<(std::fs::File, std::fs::File)>>,
}

impl JsonLinesSink {
    /// Open (creating if needed) `records` and its checkpoint file
    /// ([`JsonLinesSink::checkpoints_path_for`]) for appending. Creating both
    /// at once means a missing checkpoint file later means a deleted one.
    pub fn open(records: impl AsRef<Path>) -> Result<Self, AuditError> {
        let records = records.as_ref().to_path_buf();
        let checkpoints = Self::checkpoints_path_for(&records);
        let sink = Self::at_paths(records, checkpoints);
        drop(sink.files()?);
        Ok(sink)
    }

    /// A sink over the two files without opening or creating anything (for
    /// reading; the first append creates them).
    pub fn at_paths(records: PathBuf, checkpoints: PathBuf) -> Self {
        JsonLinesSink {
            inner: Arc::new(JsonInner {
                records,
                checkpoints,
                files: Mutex::new(None),
            }),
        }
    }

    /// [`JsonLinesSink::at_paths`] with the default checkpoint path.
    pub fn at(records: impl AsRef<Path>) -> Self {
        let records = records.as_ref().to_path_buf();
        let checkpoints = Self::checkpoints_path_for(&records);
        Self::at_paths(records, checkpoints)
    }

    /// `x.jsonl` → `x.checkpoints.jsonl`; any other name gets
    /// `.checkpoints.jsonl` appended.
    pub fn checkpoints_path_for(records: &Path) -> PathBuf {
        let s = records.as_os_str().to_string_lossy();
        match s.strip_suffix(".jsonl") {
            Some(stem) => PathBuf::from(format!("{stem}.checkpoints.jsonl")),
            None => PathBuf::from(format!("{s}.checkpoints.jsonl")),
        }
    }

    fn files(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, Option<(std::fs::File, std::fs::File)>>, AuditError> {
        let mut guard = self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let open = |p: &Path| {
                let mut options = std::fs::OpenOptions::new();
                options.append(true).create(true);
                // The log names tasks, subjects' tags and operators: readable
                // by the owner only, whatever the umask (an existing file
                // keeps its mode).
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                options.open(p).map_err(|e| {
                    AuditError::new(format!("cannot open audit file {}", p.display()))
                        .with_source(e)
                })
            };
            *guard = Some((open(&self.inner.records)?, open(&self.inner.checkpoints)?));
        }
        Ok(guard)
    }

    fn append(&self, checkpoint_file: bool, text: &[u8]) -> Result<(), AuditError> {
        let mut guard = self.files()?;
        let Some((records, checkpoints)) = guard.as_mut() else {
            return Err(AuditError::new("audit files are not open"));
        };
        let (file, path) = if checkpoint_file {
            (checkpoints, &self.inner.checkpoints)
        } else {
            (records, &self.inner.records)
        };
        file.write_all(text)
            .and_then(|()| file.sync_data())
            .map_err(|e| {
                AuditError::new(format!("cannot append to audit file {}", path.display()))
                    .with_source(e)
            })
    }

    fn read_lines<T: serde::de::DeserializeOwned>(
        path: &Path,
    ) -> Result<Option<Vec<Loaded<T>>>, AuditError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(
                    AuditError::new(format!("cannot read audit file {}", path.display()))
                        .with_source(e),
                );
            }
        };
        let mut out = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(Loaded::parse(i as u64 + 1, line));
        }
        Ok(Some(out))
    }
}

#[async_trait]
impl AuditSink for JsonLinesSink {
    async fn append_records(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let mut text = Vec::with_capacity(records.len() * 320);
        for r in records {
            write_record_line(&mut text, r);
            text.push(b'\n');
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append(false, &text))
            .await
            .map_err(|e| AuditError::new(format!("audit writer task failed: {e}")))?
    }

    async fn append_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        let mut text = checkpoint_line(checkpoint);
        text.push('\n');
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append(true, text.as_bytes()))
            .await
            .map_err(|e| AuditError::new(format!("audit writer task failed: {e}")))?
    }

    async fn read_records(&self) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        let path = self.inner.records.clone();
        let read = tokio::task::spawn_blocking(move || Self::read_lines(&path))
            .await
            .map_err(|e| AuditError::new(format!("audit reader task failed: {e}")))??;
        read.ok_or_else(|| {
            AuditError::new(format!(
                "no audit log at {} (the file does not exist)",
                self.inner.records.display()
            ))
        })
    }

    async fn read_checkpoints(&self) -> Result<Option<Vec<Loaded<Checkpoint>>>, AuditError> {
        let path = self.inner.checkpoints.clone();
        tokio::task::spawn_blocking(move || Self::read_lines(&path))
            .await
            .map_err(|e| AuditError::new(format!("audit reader task failed: {e}")))?
    }

    fn describe(&self) -> String {
        format!(
            "{} (checkpoints {})",
            self.inner.records.display(),
            self.inner.checkpoints.display()
        )
    }
}

// ---------------------------------------------------------------------------
// memory
// ---------------------------------------------------------------------------

/// Records and checkpoints kept in memory as JSON lines, for tests. Cheap to
/// clone; clones share storage. The lines can be edited to simulate
/// tampering ([`MemorySink::edit_records`]).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    records: Vec<String>,
    checkpoints: Option<Vec<String>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the stored record lines (one JSON text per record).
    pub fn edit_records(&self, f: impl FnOnce(&mut Vec<String>)) {
        f(&mut self.lock().records);
    }

    /// Change the stored checkpoint lines; `None` simulates a deleted store.
    pub fn edit_checkpoints(&self, f: impl FnOnce(&mut Option<Vec<String>>)) {
        f(&mut self.lock().checkpoints);
    }

    /// How many record lines are stored.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl AuditSink for MemorySink {
    async fn append_records(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let mut g = self.lock();
        g.checkpoints.get_or_insert_with(Vec::new);
        g.records.extend(records.iter().map(record_line));
        Ok(())
    }

    async fn append_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        self.lock()
            .checkpoints
            .get_or_insert_with(Vec::new)
            .push(checkpoint_line(checkpoint));
        Ok(())
    }

    async fn read_records(&self) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        Ok(self
            .lock()
            .records
            .iter()
            .enumerate()
            .map(|(i, l)| Loaded::parse(i as u64 + 1, l.as_bytes()))
            .collect())
    }

    async fn read_checkpoints(&self) -> Result<Option<Vec<Loaded<Checkpoint>>>, AuditError> {
        Ok(self.lock().checkpoints.as_ref().map(|cps| {
            cps.iter()
                .enumerate()
                .map(|(i, l)| Loaded::parse(i as u64 + 1, l.as_bytes()))
                .collect()
        }))
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
