//! [`RedisAuditSink`]: the tamper-evident audit log in two Redis streams.
//!
//! - `PREFIX:audit:records`: one entry per appended batch of one writer,
//!   `XADD … MAXLEN ~ N`, fields `b` (the records' JSON texts, exactly what
//!   [`sealq::audit::JsonLinesSink`] writes as lines, joined by `\n`), `w`
//!   (writer), `s` (seq of the first record) and `n` (how many). One entry
//!   per batch rather than per record keeps the log's cost on Redis within
//!   a tenth of the queue's own work. Entries with a single record in field
//!   `r` (the earlier layout) are read too;
//! - `PREFIX:audit:checkpoints`: one entry per signed checkpoint, field `c`
//!   (its JSON text). Never trimmed. Created (empty) when the sink opens, so
//!   that a missing checkpoint stream later means a deleted one.
//!
//! Each batch of records is one command (one round trip), in chunks of at
//! most 256 records. Positions in verification reports are 1-based
//! record numbers in stream order.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;
use sealq::audit::{
    AuditError, AuditRecord, AuditSink, Checkpoint, DEFAULT_CHECKPOINT_EVERY, Loaded,
    checkpoint_line, write_record_line,
};

use crate::RedisBroker;
use crate::codec::{array, bytes};

/// Default cap of the records stream (`MAXLEN ~`): one million entries.
pub const DEFAULT_AUDIT_MAXLEN: u64 = 1_000_000;

/// Entries read per `XRANGE`.
const PAGE: usize = 500;

/// Most records in one stream entry.
const BATCH: usize = 256;

/// The audit log of a [`RedisBroker`] deployment, in two streams under its
/// key prefix. Cheap to clone.
///
/// The records stream is capped (`XADD … MAXLEN ~ max_len`, Redis trims
/// whole nodes, so a little more may be kept). The cap is never smaller
/// than the checkpoint window (records a writer may append between two
/// checkpoints): [`RedisAuditSink::with_limits`] refuses such a
/// configuration. Trimming drops the **oldest** records; `audit verify`
/// then reports their absence (records deleted at the start of a chain),
/// so size the cap to what you must keep, and export older records before
/// they are trimmed (see `docs/audit.md`).
#[derive(Clone)]
pub struct RedisAuditSink {
    inner: Arc<Inner>,
}

struct Inner {
    broker: RedisBroker,
    records: String,
    checkpoints: String,
    max_len: u64,
}

impl std::fmt::Debug for RedisAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAuditSink")
            .field("records", &self.inner.records)
            .field("checkpoints", &self.inner.checkpoints)
            .field("max_len", &self.inner.max_len)
            .finish()
    }
}

impl RedisAuditSink {
    /// The audit streams of `broker`'s prefix, cap [`DEFAULT_AUDIT_MAXLEN`],
    /// checkpoint window [`DEFAULT_CHECKPOINT_EVERY`]. Creates the
    /// (empty) checkpoint stream if it does not exist.
    pub async fn open(broker: &RedisBroker) -> Result<Self, AuditError> {
        Self::with_limits(broker, DEFAULT_AUDIT_MAXLEN, DEFAULT_CHECKPOINT_EVERY).await
    }

    /// [`RedisAuditSink::open`] with the records stream capped at
    /// `max_len` entries, for writers that checkpoint at least every
    /// `checkpoint_every` records (their `AuditorBuilder::checkpoint_every`).
    /// A cap smaller than the window is a configuration error.
    pub async fn with_limits(
        broker: &RedisBroker,
        max_len: u64,
        checkpoint_every: u64,
    ) -> Result<Self, AuditError> {
        if max_len < checkpoint_every.max(1) {
            return Err(AuditError::new(format!(
                "the Redis audit stream cap ({max_len} records) is smaller than the checkpoint \
                 window ({checkpoint_every} records): trimming would remove records no \
                 checkpoint covers yet; raise the cap or checkpoint more often"
            )));
        }
        let base = format!("{}:audit:", broker.prefix());
        let sink = RedisAuditSink {
            inner: Arc::new(Inner {
                broker: broker.clone(),
                records: format!("{base}records"),
                checkpoints: format!("{base}checkpoints"),
                max_len,
            }),
        };
        sink.create_checkpoint_stream().await?;
        Ok(sink)
    }

    /// A sink for reading only (verification): opens nothing, creates nothing.
    pub fn reader(broker: &RedisBroker) -> Self {
        let base = format!("{}:audit:", broker.prefix());
        RedisAuditSink {
            inner: Arc::new(Inner {
                broker: broker.clone(),
                records: format!("{base}records"),
                checkpoints: format!("{base}checkpoints"),
                max_len: DEFAULT_AUDIT_MAXLEN,
            }),
        }
    }

    /// The records stream's key.
    pub fn records_key(&self) -> &str {
        &self.inner.records
    }

    /// The checkpoints stream's key.
    pub fn checkpoints_key(&self) -> &str {
        &self.inner.checkpoints
    }

    /// The records stream's cap.
    pub fn max_len(&self) -> u64 {
        self.inner.max_len
    }

    fn err(&self, what: &str, e: redis::RedisError) -> AuditError {
        AuditError::new(format!(
            "audit log in {}: {what}",
            self.inner.broker.inner.target
        ))
        .with_source(e)
    }

    fn unexpected_reply(&self, what: &str, detail: impl std::fmt::Display) -> AuditError {
        AuditError::new(format!(
            "audit log in {}: {what}: unexpected reply: {detail}",
            self.inner.broker.inner.target
        ))
    }

    /// `XGROUP CREATE … MKSTREAM`: the only way to create an empty stream
    /// without a race (an existing stream and its entries are untouched).
    async fn create_checkpoint_stream(&self) -> Result<(), AuditError> {
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE")
            .arg(&self.inner.checkpoints)
            .arg("sealq-audit")
            .arg("$")
            .arg("MKSTREAM");
        match self.inner.broker.inner.conn.query::<Value>(&c).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.err("cannot create the checkpoint stream", e)),
        }
    }

    /// Every entry of `key` in order: (1-based position, fields).
    async fn read_stream(
        &self,
        key: &str,
    ) -> Result<Vec<(u64, Vec<(Vec<u8>, Vec<u8>)>)>, AuditError> {
        let what = "cannot read the audit log";
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let mut c = redis::cmd("XRANGE");
            c.arg(key).arg(&start).arg("+").arg("COUNT").arg(PAGE);
            let v: Value = self
                .inner
                .broker
                .inner
                .conn
                .query(&c)
                .await
                .map_err(|e| self.err(what, e))?;
            let entries = array(v).map_err(|e| self.unexpected_reply(what, e))?;
            let n = entries.len();
            let mut last = None;
            for entry in entries {
                let mut it = array(entry)
                    .map_err(|e| self.unexpected_reply(what, e))?
                    .into_iter();
                let id = bytes(it.next().unwrap_or(Value::Nil))
                    .map_err(|e| self.unexpected_reply(what, e))?;
                let flat = array(it.next().unwrap_or(Value::Nil))
                    .map_err(|e| self.unexpected_reply(what, e))?;
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut f = flat.into_iter();
                while let (Some(k), Some(v)) = (f.next(), f.next()) {
                    fields.push((
                        bytes(k).map_err(|e| self.unexpected_reply(what, e))?,
                        bytes(v).map_err(|e| self.unexpected_reply(what, e))?,
                    ));
                }
                out.push((out.len() as u64 + 1, fields));
                last = Some(id);
            }
            match last {
                Some(id) if n >= PAGE => {
                    start = format!("({}", String::from_utf8_lossy(&id));
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn exists(&self, key: &str) -> Result<bool, AuditError> {
        let mut c = redis::cmd("EXISTS");
        c.arg(key);
        let n: i64 = self
            .inner
            .broker
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err("cannot read the audit log", e))?;
        Ok(n > 0)
    }

    /// Stored records about one task (batch records included, as stored),
    /// in storage order (for `sealq audit show`).
    pub async fn records_for_task(
        &self,
        task: sealq::TaskId,
    ) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        Ok(self
            .read_records()
            .await?
            .into_iter()
            .filter(|l| l.item.as_ref().is_ok_and(|r| r.event.is_about(task)))
            .collect())
    }
}

/// The item in field `name` of an entry (a missing field is a corrupt entry).
fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &[u8]) -> Result<&'a [u8], String> {
    fields
        .iter()
        .find(|(k, _)| k.as_slice() == name)
        .map(|(_, v)| v.as_slice())
        .ok_or_else(|| {
            format!(
                "the stream entry has no `{}` field",
                String::from_utf8_lossy(name)
            )
        })
}

/// The records of one stream entry, numbered on from `*pos` (1-based).
fn parse_entry(pos: &mut u64, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<Loaded<AuditRecord>> {
    match field(fields, b"b") {
        Ok(batch) => batch
            .split(|b| *b == b'\n')
            .map(|line| {
                *pos += 1;
                Loaded::parse(*pos, line)
            })
            .collect(),
        Err(_) => {
            *pos += 1;
            vec![parse_record(*pos, fields)]
        }
    }
}

fn parse_record(position: u64, fields: &[(Vec<u8>, Vec<u8>)]) -> Loaded<AuditRecord> {
    match field(fields, b"r") {
        Ok(v) => Loaded::parse(position, v),
        Err(e) => Loaded {
            position,
            item: Err(e),
        },
    }
}

fn parse_checkpoint(position: u64, fields: &[(Vec<u8>, Vec<u8>)]) -> Loaded<Checkpoint> {
    match field(fields, b"c") {
        Ok(v) => Loaded::parse(position, v),
        Err(e) => Loaded {
            position,
            item: Err(e),
        },
    }
}

#[async_trait]
impl AuditSink for RedisAuditSink {
    async fn append_records(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        // One round trip. Not MULTI/EXEC: runtime ACL roles need not grant
        // it, and Redis runs the pipeline's XADDs in order anyway; a batch
        // cut by a lost connection leaves a prefix of it, which the
        // auditor's chain tolerates no worse than a crash mid-batch.
        let mut p = redis::pipe();
        for chunk in records.chunks(BATCH) {
            let mut lines = Vec::with_capacity(chunk.len() * 320);
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    lines.push(b'\n');
                }
                write_record_line(&mut lines, r);
            }
            p.cmd("XADD")
                .arg(&self.inner.records)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.inner.max_len)
                .arg("*")
                .arg("b")
                .arg(lines)
                .arg("w")
                .arg(&chunk[0].writer)
                .arg("s")
                .arg(chunk[0].seq)
                .arg("n")
                .arg(chunk.len())
                .ignore();
        }
        self.inner
            .broker
            .inner
            .conn
            .pipe::<Value>(&p)
            .await
            .map(drop)
            .map_err(|e| self.err("cannot append records", e))
    }

    async fn append_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        let mut c = redis::cmd("XADD");
        c.arg(&self.inner.checkpoints)
            .arg("*")
            .arg("c")
            .arg(checkpoint_line(checkpoint))
            .arg("w")
            .arg(&checkpoint.writer)
            .arg("s")
            .arg(checkpoint.seq);
        self.inner
            .broker
            .inner
            .conn
            .query::<Value>(&c)
            .await
            .map(drop)
            .map_err(|e| self.err("cannot append a checkpoint", e))
    }

    async fn read_records(&self) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        Ok(self
            .read_stream(&self.inner.records)
            .await?
            .into_iter()
            .map(|(_, fields)| fields)
            .scan(0u64, |pos, fields| Some(parse_entry(pos, &fields)))
            .flatten()
            .collect())
    }

    async fn read_checkpoints(&self) -> Result<Option<Vec<Loaded<Checkpoint>>>, AuditError> {
        if !self.exists(&self.inner.checkpoints).await? {
            return Ok(None);
        }
        Ok(Some(
            self.read_stream(&self.inner.checkpoints)
                .await?
                .into_iter()
                .map(|(pos, fields)| parse_checkpoint(pos, &fields))
                .collect(),
        ))
    }

    fn describe(&self) -> String {
        format!(
            "streams {} / {} in {}",
            self.inner.records, self.inner.checkpoints, self.inner.broker.inner.target
        )
    }
}
