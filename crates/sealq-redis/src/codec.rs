//! How sealq values are stored in Redis and read back from function replies.
//!
//! Ids are 32 lowercase hex digits (the UUID without dashes, so lexical order
//! is id order), states and archive reasons their snake_case names, times
//! decimal Unix ms, [`TaskMeta`] named MessagePack, lease tokens 16 hex digits.

use redis::Value;
use sealq::broker::TaskRecord;
use sealq::{ArchiveReason, SubjectTag, TaskId, TaskMeta, TaskState};

/// A task id as stored.
pub(crate) fn id_str(id: &TaskId) -> String {
    id.0.simple().to_string()
}

/// Parse a stored id.
pub(crate) fn parse_id(s: &[u8]) -> Option<TaskId> {
    uuid::Uuid::try_parse_ascii(s).ok().map(TaskId)
}

/// A lease token as stored.
pub(crate) fn token_str(token: u64) -> String {
    format!("{token:016x}")
}

/// The elements of an array reply.
pub(crate) fn array(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(format!("expected an array, got {}", kind(&other))),
    }
}

/// The bytes of a string reply (`None` for nil/false).
pub(crate) fn opt_bytes(v: Value) -> Result<Option<Vec<u8>>, String> {
    match v {
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.into_bytes())),
        Value::Int(i) => Ok(Some(i.to_string().into_bytes())),
        Value::Nil => Ok(None),
        other => Err(format!("expected a string, got {}", kind(&other))),
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(v: Value) -> Result<Vec<u8>, String> {
    opt_bytes(v)?.ok_or_else(|| "expected a string, got nil".to_owned())
}

/// An integer reply (or a decimal string).
pub(crate) fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => parse_i64(b).ok_or_else(|| "expected an integer".to_owned()),
        Value::SimpleString(s) => s.parse().map_err(|_| "expected an integer".to_owned()),
        other => Err(format!("expected an integer, got {}", kind(other))),
    }
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "status",
        _ => "another type",
    }
}

/// Layout version of a task's stored bytes (`PREFIX:{queue}:b:ID`).
const STORED_V1: u8 = 1;

/// A task's stored bytes: what the broker keeps of it apart from its state.
///
/// ```text
/// u8      layout version (1)
/// u16 BE  kind length, then the kind (UTF-8)
/// u32 BE  metadata length, then the metadata (named MessagePack)
/// ...     the sealed envelope, exactly as sealed
/// ```
///
/// The envelope is never re-encoded: the bytes the worker opens are the
/// bytes the producer sealed.
pub(crate) struct Stored {
    /// Task type name.
    pub(crate) kind: String,
    /// Clear metadata.
    pub(crate) meta: TaskMeta,
    /// The sealed envelope.
    pub(crate) envelope: Vec<u8>,
}

/// A task's stored bytes (see [`Stored`]) as a command argument: written
/// straight into the command's buffer, so the envelope is copied once on
/// its way to Redis rather than into a buffer of its own first.
pub(crate) struct StoredArg<'a> {
    kind: &'a str,
    /// The metadata, encoded.
    meta: Vec<u8>,
    envelope: &'a [u8],
}

impl<'a> StoredArg<'a> {
    /// Check and encode what goes before the envelope.
    pub(crate) fn new(kind: &'a str, meta: &TaskMeta, envelope: &'a [u8]) -> Result<Self, String> {
        let meta = rmp_serde::to_vec_named(meta)
            .map_err(|e| format!("cannot encode task metadata: {e}"))?;
        if u16::try_from(kind.len()).is_err() {
            return Err("task type name longer than 65535 bytes".to_owned());
        }
        if u32::try_from(meta.len()).is_err() {
            return Err("task metadata too large".to_owned());
        }
        Ok(StoredArg {
            kind,
            meta,
            envelope,
        })
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        7 + self.kind.len() + self.meta.len() + self.envelope.len()
    }

    /// Write it out (lengths were checked by [`StoredArg::new`]).
    fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let klen = u16::try_from(self.kind.len()).unwrap_or(u16::MAX);
        let mlen = u32::try_from(self.meta.len()).unwrap_or(u32::MAX);
        w.write_all(&[STORED_V1])?;
        w.write_all(&klen.to_be_bytes())?;
        w.write_all(self.kind.as_bytes())?;
        w.write_all(&mlen.to_be_bytes())?;
        w.write_all(&self.meta)?;
        w.write_all(self.envelope)
    }
}

impl redis::ToRedisArgs for StoredArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        // The command's buffer is memory: writing to it cannot fail.
        let _ = self.write_to(&mut out.writer_for_next_arg());
    }
}

/// Encode a task's stored bytes (see [`Stored`]).
#[cfg(test)]
pub(crate) fn encode_stored(
    kind: &str,
    meta: &TaskMeta,
    envelope: &[u8],
) -> Result<Vec<u8>, String> {
    let arg = StoredArg::new(kind, meta, envelope)?;
    let mut out = Vec::with_capacity(arg.len());
    arg.write_to(&mut out)
        .map_err(|e| format!("cannot encode task bytes: {e}"))?;
    Ok(out)
}

/// Decode a task's stored bytes, naming what is wrong (never the bytes).
pub(crate) fn decode_stored(mut b: Vec<u8>) -> Result<Stored, String> {
    let short = || format!("stored task bytes are truncated ({} bytes)", b.len());
    if b.first() != Some(&STORED_V1) {
        return Err(match b.first() {
            None => "stored task bytes are empty".to_owned(),
            Some(v) => format!("stored task bytes have unknown layout version {v}"),
        });
    }
    let klen = usize::from(u16::from_be_bytes(
        b.get(1..3)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    ));
    let kind = b.get(3..3 + klen).ok_or_else(short)?;
    let kind = std::str::from_utf8(kind)
        .map_err(|_| "stored task type is not UTF-8".to_owned())?
        .to_owned();
    let at = 3 + klen;
    let mlen = u32::from_be_bytes(
        b.get(at..at + 4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    ) as usize;
    let meta = b.get(at + 4..at + 4 + mlen).ok_or_else(short)?;
    let meta = rmp_serde::from_slice::<TaskMeta>(meta)
        .map_err(|e| format!("task meta does not decode: {e}"))?;
    let envelope = b.split_off(at + 4 + mlen);
    Ok(Stored {
        kind,
        meta,
        envelope,
    })
}

/// Build a record from a task hash (`HGETALL` field/value pairs), the
/// task's stored bytes and the queue whose key holds it.
pub(crate) fn record(
    id: TaskId,
    queue: &str,
    fields: Vec<Value>,
    stored: Option<Vec<u8>>,
) -> Result<TaskRecord, String> {
    let mut state = None;
    let mut attempts = 0i64;
    let mut run_at = None;
    let mut last_error = None;
    let mut result = None;
    let mut reason = None;
    let mut lease = None;
    let mut finished = None;
    let mut updated = None;
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = bytes(k)?;
        let v = bytes(v)?;
        let num = || {
            parse_i64(&v)
                .ok_or_else(|| format!("field `{}` is not a number", String::from_utf8_lossy(&k)))
        };
        match k.as_slice() {
            b"s" => {
                let s = std::str::from_utf8(&v).map_err(|_| "state is not UTF-8")?;
                state = Some(
                    s.parse::<TaskState>()
                        .map_err(|_| format!("unknown state `{s}`"))?,
                );
            }
            b"a" => attempts = num()?,
            b"r" => run_at = Some(num()?),
            b"le" => last_error = Some(v),
            b"res" => result = Some(v),
            b"ar" => reason = Some(ArchiveReason::parse(&String::from_utf8_lossy(&v))),
            b"lx" => lease = Some(num()?),
            b"fin" => finished = Some(num()?),
            b"upd" => updated = Some(num()?),
            _ => {}
        }
    }
    let missing = |f: &str| format!("task {id} has no `{f}` field");
    let state = state.ok_or_else(|| missing("s"))?;
    // (An erased task keeps its kind and metadata, not its envelope.)
    let stored = decode_stored(stored.ok_or_else(|| format!("task {id} has no stored bytes"))?)?;
    // Acks leave the lease fields behind (one command less per task): they
    // mean something only while the task is active.
    let lease = if state == TaskState::Active {
        lease
    } else {
        None
    };
    Ok(TaskRecord {
        id,
        queue: queue.to_owned(),
        kind: stored.kind,
        envelope: stored.envelope,
        meta: stored.meta,
        state,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        run_at_ms: run_at.ok_or_else(|| missing("r"))?,
        last_error,
        result,
        archive_reason: reason,
        lease_expires_at_ms: lease,
        finished_at_ms: finished,
        updated_at_ms: updated.ok_or_else(|| missing("upd"))?,
    })
}

/// A subject tag as stored (hex).
pub(crate) fn subject_str(s: &SubjectTag) -> String {
    s.to_hex()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sealq::Backoff;

    pub(crate) fn s(x: &str) -> Value {
        Value::BulkString(x.as_bytes().to_vec())
    }

    pub(crate) fn meta() -> TaskMeta {
        TaskMeta {
            producer: "p1".into(),
            created_at_ms: 1_700_000_000_000,
            not_after_ms: Some(1_700_000_600_000),
            deadline_ms: None,
            timeout_ms: Some(30_000),
            max_retries: 5,
            backoff: Backoff::Fixed { delay_ms: 250 },
            retention_ms: 86_400_000,
            subject_tag: None,
            not_before_ms: None,
        }
    }

    #[test]
    fn ids_and_tokens_keep_their_stored_form() {
        let id = TaskId(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        ));
        assert_eq!(id_str(&id), "0123456789abcdef0011223344556677");
        assert_eq!(parse_id(id_str(&id).as_bytes()), Some(id));
        // The dashed form parses too; junk does not.
        assert_eq!(parse_id(id.0.to_string().as_bytes()), Some(id));
        assert_eq!(parse_id(b"not-an-id"), None);
        assert_eq!(parse_id(b""), None);
        assert_eq!(token_str(0xab), "00000000000000ab");
        assert_eq!(token_str(u64::MAX), "ffffffffffffffff");
    }

    #[test]
    fn reply_values_read_by_type() {
        assert_eq!(array(Value::Nil).unwrap(), Vec::<Value>::new());
        assert_eq!(array(Value::Array(vec![Value::Int(1)])).unwrap().len(), 1);
        assert_eq!(array(Value::Set(vec![Value::Int(1)])).unwrap().len(), 1);
        assert_eq!(
            array(Value::Int(1)).unwrap_err(),
            "expected an array, got integer"
        );
        assert_eq!(opt_bytes(s("x")).unwrap(), Some(b"x".to_vec()));
        assert_eq!(
            opt_bytes(Value::SimpleString("OK".into())).unwrap(),
            Some(b"OK".to_vec())
        );
        assert_eq!(opt_bytes(Value::Int(-7)).unwrap(), Some(b"-7".to_vec()));
        assert_eq!(opt_bytes(Value::Nil).unwrap(), None);
        assert_eq!(
            opt_bytes(Value::Array(vec![])).unwrap_err(),
            "expected a string, got array"
        );
        assert_eq!(bytes(Value::Nil).unwrap_err(), "expected a string, got nil");
        assert_eq!(int(&Value::Int(42)).unwrap(), 42);
        assert_eq!(int(&s("-5")).unwrap(), -5);
        assert_eq!(int(&Value::SimpleString("9".into())).unwrap(), 9);
        assert_eq!(int(&s("4.5")).unwrap_err(), "expected an integer");
        assert_eq!(
            int(&Value::Nil).unwrap_err(),
            "expected an integer, got nil"
        );
    }

    #[test]
    fn stored_bytes_written_into_a_command_are_the_encoded_bytes() {
        let envelope: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        let arg = StoredArg::new("email.welcome", &meta(), &envelope).unwrap();
        let mut c = redis::Cmd::new();
        c.arg("SET").arg("key").arg(&arg).arg("NX");
        let args: Vec<Vec<u8>> = c
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => panic!("a plain argument expected"),
            })
            .collect();
        assert_eq!(args.len(), 4);
        assert_eq!(args[3], b"NX");
        assert_eq!(args[2].len(), arg.len());
        assert_eq!(
            args[2],
            encode_stored("email.welcome", &meta(), &envelope).unwrap()
        );
        let back = decode_stored(args[2].clone()).unwrap();
        assert_eq!(back.kind, "email.welcome");
        assert_eq!(back.envelope, envelope);
    }

    #[test]
    fn stored_bytes_round_trip_and_keep_the_layout() {
        let envelope = b"\x00sealed\xffbytes".to_vec();
        let b = encode_stored("email.welcome", &meta(), &envelope).unwrap();
        // Layout version, then the kind's length (u16 BE) and the kind.
        assert_eq!(&b[..3], &[1, 0, 13]);
        assert_eq!(&b[3..16], b"email.welcome");
        // The envelope is the tail, byte for byte.
        assert!(b.ends_with(&envelope));
        let s = decode_stored(b).unwrap();
        assert_eq!(s.kind, "email.welcome");
        assert_eq!(s.meta, meta());
        assert_eq!(s.envelope, envelope);
        // An empty envelope (an erased task) and an empty kind are fine.
        let s = decode_stored(encode_stored("", &meta(), &[]).unwrap()).unwrap();
        assert_eq!((s.kind.as_str(), s.envelope.len()), ("", 0));
    }

    #[test]
    fn damaged_stored_bytes_are_named_not_panicked_on() {
        let good = encode_stored("k", &meta(), b"env").unwrap();
        let err = |b: Vec<u8>| decode_stored(b).map(|_| ()).unwrap_err();
        assert_eq!(err(Vec::new()), "stored task bytes are empty");
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(err(v2), "stored task bytes have unknown layout version 2");
        // Every truncation inside the header or the metadata is refused.
        let meta_end = good.len() - 3;
        for cut in 1..meta_end {
            let e = err(good[..cut].to_vec());
            assert!(
                e.contains("truncated") || e.contains("does not decode"),
                "cut at {cut}: {e}"
            );
        }
        let mut bad_kind = good.clone();
        bad_kind[3] = 0xff;
        assert_eq!(err(bad_kind), "stored task type is not UTF-8");
        let mut bad_meta = good.clone();
        bad_meta[8] = 0xc1; // never used in MessagePack
        assert!(err(bad_meta).starts_with("task meta does not decode"));
        // A kind longer than the u16 length field holds is refused at encode.
        assert!(encode_stored(&"k".repeat(70_000), &meta(), b"").is_err());
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<Value> {
        pairs.iter().flat_map(|(k, v)| [s(k), s(v)]).collect()
    }

    #[test]
    fn record_reads_the_task_hash_and_stored_bytes() {
        let id = TaskId(uuid::Uuid::from_u128(7));
        let stored = encode_stored("k", &meta(), b"env").unwrap();
        let active = fields(&[
            ("s", "active"),
            ("a", "2"),
            ("r", "100"),
            ("lx", "500"),
            ("le", "boom"),
            ("upd", "400"),
            ("zz", "ignored"),
        ]);
        let r = record(id, "q", active, Some(stored.clone())).unwrap();
        assert_eq!(r.id, id);
        assert_eq!(r.queue, "q");
        assert_eq!(r.kind, "k");
        assert_eq!(r.envelope, b"env");
        assert_eq!(r.state, TaskState::Active);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.run_at_ms, 100);
        assert_eq!(r.lease_expires_at_ms, Some(500));
        assert_eq!(r.last_error.as_deref(), Some(&b"boom"[..]));
        assert_eq!(r.updated_at_ms, 400);
        // Lease fields left behind by an ack mean nothing once not active.
        let done = fields(&[
            ("s", "completed"),
            ("r", "100"),
            ("lx", "500"),
            ("fin", "450"),
            ("res", "ok"),
            ("upd", "450"),
        ]);
        let r = record(id, "q", done, Some(stored.clone())).unwrap();
        assert_eq!(r.lease_expires_at_ms, None);
        assert_eq!(r.finished_at_ms, Some(450));
        assert_eq!(r.result.as_deref(), Some(&b"ok"[..]));
        let archived = fields(&[
            ("s", "archived"),
            ("r", "1"),
            ("upd", "2"),
            ("ar", "integrity"),
        ]);
        let r = record(id, "q", archived, Some(stored)).unwrap();
        assert_eq!(r.archive_reason, Some(ArchiveReason::Integrity));
    }

    #[test]
    fn malformed_task_hash_is_an_error() {
        let id = TaskId(uuid::Uuid::from_u128(7));
        let stored = || Some(encode_stored("k", &meta(), b"env").unwrap());
        let e = |f: &[(&str, &str)], b: Option<Vec<u8>>| {
            record(id, "q", fields(f), b).map(|_| ()).unwrap_err()
        };
        assert!(e(&[("r", "1"), ("upd", "2")], stored()).ends_with("has no `s` field"));
        assert!(e(&[("s", "pending"), ("upd", "2")], stored()).ends_with("has no `r` field"));
        assert!(e(&[("s", "pending"), ("r", "1")], stored()).ends_with("has no `upd` field"));
        assert_eq!(
            e(&[("s", "sleeping"), ("r", "1"), ("upd", "2")], stored()),
            "unknown state `sleeping`"
        );
        assert_eq!(
            e(&[("s", "pending"), ("r", "soon"), ("upd", "2")], stored()),
            "field `r` is not a number"
        );
        assert!(
            e(&[("s", "pending"), ("r", "1"), ("upd", "2")], None).ends_with("has no stored bytes")
        );
        assert_eq!(
            e(
                &[("s", "pending"), ("r", "1"), ("upd", "2")],
                Some(Vec::new())
            ),
            "stored task bytes are empty"
        );
        // A field without a value, or a non-string field: errors, not panics.
        let odd = vec![s("s"), Value::Nil];
        assert!(record(id, "q", odd, stored()).is_err());
        let odd = vec![Value::Array(vec![]), s("x")];
        assert!(record(id, "q", odd, stored()).is_err());
    }
}
