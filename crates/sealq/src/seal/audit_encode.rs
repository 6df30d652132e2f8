//! Hand-written encoders for the records a worker and a producer write per
//! task (enqueued, leased, started, succeeded, failed, retried, requeued):
//! the canonical MessagePack their MACs cover and the JSON line sinks
//! store, byte for byte what `rmp_serde::to_vec_named` and `serde_json`
//! write for them, without serde's machinery or an allocation per record.
//!
//! Serde stays the definition: every other event goes through it, readers
//! and the verifier parse with it, and the tests below compare these
//! encoders with it over generated records. With the audit log on, serde
//! encoding was about 13 % of a Redis worker's CPU (`docs/benchmarks.md`).

use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;

/// One field value of the events handled here.
#[derive(Clone, Copy)]
enum V<'a> {
    Id(&'a TaskId),
    Str(&'a str),
    U(u64),
    I(i64),
    OptU(Option<u64>),
}

/// At most this many fields per handled event (enqueued has 7).
const MAX_FIELDS: usize = 7;

/// An event's `type` tag and its fields in declaration order (the order
/// serde's derive writes them), or `None` for events left to serde.
struct Fields<'a> {
    name: &'static str,
    list: [(&'static str, V<'a>); MAX_FIELDS],
    len: usize,
}

impl<'a> Fields<'a> {
    fn put(&mut self, k: &'static str, v: V<'a>) {
        self.list[self.len] = (k, v);
        self.len += 1;
    }

    /// The fields every per-attempt worker event starts with.
    fn attempt(&mut self, task: &'a TaskId, worker: &'a str, attempt: u32) {
        self.put("task", V::Id(task));
        self.put("worker", V::Str(worker));
        self.put("attempt", V::U(u64::from(attempt)));
    }

    fn of(event: &'a AuditEvent) -> Option<Fields<'a>> {
        use AuditEvent as E;
        let mut f = Fields {
            name: event.name(),
            list: [("", V::U(0)); MAX_FIELDS],
            len: 0,
        };
        match event {
            E::Enqueued {
                task,
                queue,
                kind,
                producer,
                key_id,
                ciphertext_sha256,
                ciphertext_len,
            } => {
                f.put("task", V::Id(task));
                f.put("queue", V::Str(queue));
                f.put("kind", V::Str(kind));
                f.put("producer", V::Str(producer));
                f.put("key_id", V::Str(key_id));
                f.put("ciphertext_sha256", V::Str(ciphertext_sha256));
                f.put("ciphertext_len", V::U(*ciphertext_len));
            }
            E::Leased {
                task,
                queue,
                worker,
                attempt,
                lease_expires_at_ms,
            } => {
                f.put("task", V::Id(task));
                f.put("queue", V::Str(queue));
                f.put("worker", V::Str(worker));
                f.put("attempt", V::U(u64::from(*attempt)));
                f.put("lease_expires_at_ms", V::I(*lease_expires_at_ms));
            }
            E::Started {
                task,
                worker,
                attempt,
            }
            | E::Requeued {
                task,
                worker,
                attempt,
            } => f.attempt(task, worker, *attempt),
            E::Succeeded {
                task,
                worker,
                attempt,
                result_len,
            } => {
                f.attempt(task, worker, *attempt);
                f.put("result_len", V::OptU(*result_len));
            }
            E::Failed {
                task,
                worker,
                attempt,
                error_len,
            } => {
                f.attempt(task, worker, *attempt);
                f.put("error_len", V::U(*error_len));
            }
            E::Retried {
                task,
                worker,
                attempt,
                next_run_at_ms,
            } => {
                f.attempt(task, worker, *attempt);
                f.put("next_run_at_ms", V::I(*next_run_at_ms));
            }
            _ => return None,
        }
        Some(f)
    }

    fn iter(&self) -> impl Iterator<Item = &(&'static str, V<'a>)> {
        self.list[..self.len].iter()
    }
}

// ---------------------------------------------------------------------------
// Canonical MessagePack
// ---------------------------------------------------------------------------

/// MessagePack's compact forms, as `rmp::encode` chooses them (which
/// `rmp_serde` uses): a string's length prefix by size.
fn mp_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n < 65_536 {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// An unsigned integer in the fewest bytes.
fn mp_uint(out: &mut Vec<u8>, n: u64) {
    if n < 128 {
        out.push(n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0xcc, n as u8]);
    } else if n < 65_536 {
        out.push(0xcd);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n < 1 << 32 {
        out.push(0xce);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A signed integer in the fewest bytes: non-negative ones as unsigned.
fn mp_sint(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        mp_uint(out, n as u64);
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32_768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -(1 << 31) {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A map header for at most 15 entries (every map here).
fn mp_map(out: &mut Vec<u8>, n: usize) {
    debug_assert!(n < 16);
    out.push(0x80 | n as u8);
}

/// Append the canonical bytes of `{writer, seq, time_ms, event}` to `out`
/// as `rmp_serde::to_vec_named` writes them. Returns false, with `out`
/// untouched, for an event left to serde.
pub(crate) fn canonical_into(
    out: &mut Vec<u8>,
    writer: &str,
    seq: u64,
    time_ms: i64,
    event: &AuditEvent,
) -> bool {
    let Some(fields) = Fields::of(event) else {
        return false;
    };
    mp_map(out, 4);
    mp_str(out, "writer");
    mp_str(out, writer);
    mp_str(out, "seq");
    mp_uint(out, seq);
    mp_str(out, "time_ms");
    mp_sint(out, time_ms);
    mp_str(out, "event");
    // An internally tagged enum: one map, the tag first.
    mp_map(out, 1 + fields.len);
    mp_str(out, "type");
    mp_str(out, fields.name);
    for (k, v) in fields.iter() {
        mp_str(out, k);
        match *v {
            // Uuid in a binary (not human-readable) format: bin 8 of its 16 bytes.
            V::Id(id) => {
                out.extend_from_slice(&[0xc4, 16]);
                out.extend_from_slice(id.0.as_bytes());
            }
            V::Str(s) => mp_str(out, s),
            V::U(n) | V::OptU(Some(n)) => mp_uint(out, n),
            V::I(n) => mp_sint(out, n),
            V::OptU(None) => out.push(0xc0),
        }
    }
    true
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `s` as a JSON string, escaped exactly as serde_json escapes it: `"`,
/// `\` and the control characters below 0x20 (short forms for \b \t \n \f
/// \r, `\u00xx` for the rest); everything else as is.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Almost every string here (ids, names, hex) needs no escape: one
    // branch-free scan, then a copy.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn json_key(out: &mut Vec<u8>, k: &str) {
    // Keys here are fixed ASCII identifiers: nothing to escape.
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn json_uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn json_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Append the JSON of a record (`{"writer":…,"seq":…,"time_ms":…,
/// "event":{"type":…,…},"mac":…}`) to `out` as `serde_json::to_writer`
/// writes it. Returns false, with `out` untouched, for an event left to
/// serde.
pub(crate) fn record_json_into(
    out: &mut Vec<u8>,
    writer: &str,
    seq: u64,
    time_ms: i64,
    event: &AuditEvent,
    mac: &str,
) -> bool {
    let Some(fields) = Fields::of(event) else {
        return false;
    };
    out.push(b'{');
    json_key(out, "writer");
    json_str(out, writer);
    out.push(b',');
    json_key(out, "seq");
    json_uint(out, seq);
    out.push(b',');
    json_key(out, "time_ms");
    json_int(out, time_ms);
    out.extend_from_slice(b",\"event\":{\"type\":");
    json_str(out, fields.name);
    for (k, v) in fields.iter() {
        out.push(b',');
        json_key(out, k);
        match *v {
            V::Id(id) => {
                // Hyphenated lower-case hex: nothing to escape.
                out.push(b'"');
                let mut buf = uuid::Uuid::encode_buffer();
                out.extend_from_slice(id.0.hyphenated().encode_lower(&mut buf).as_bytes());
                out.push(b'"');
            }
            V::Str(s) => json_str(out, s),
            V::U(n) | V::OptU(Some(n)) => json_uint(out, n),
            V::I(n) => json_int(out, n),
            V::OptU(None) => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"},");
    json_key(out, "mac");
    json_str(out, mac);
    out.push(b'}');
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::audit_chain::{AuditRecord, Canonical};
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = TaskId> {
        any::<u128>().prop_map(|n| TaskId(uuid::Uuid::from_u128(n)))
    }

    /// Strings with the characters JSON escaping and MessagePack length
    /// prefixes care about: quotes, backslashes, control characters,
    /// DEL, multi-byte text, and lengths across the 31/255 byte forms.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9:._-]{0,40}",
            "[\"\\\\\\x00-\\x1f\\x7f a-zé€😀]{0,40}",
            "[a-z]{250,300}",
        ]
    }

    fn hot_event() -> impl Strategy<Value = AuditEvent> {
        prop_oneof![
            (id(), text(), text(), text(), text(), text(), any::<u64>()).prop_map(
                |(task, queue, kind, producer, key_id, ciphertext_sha256, ciphertext_len)| {
                    AuditEvent::Enqueued {
                        task,
                        queue,
                        kind,
                        producer,
                        key_id,
                        ciphertext_sha256,
                        ciphertext_len,
                    }
                }
            ),
            (id(), text(), text(), any::<u32>(), int()).prop_map(
                |(task, queue, worker, attempt, lease_expires_at_ms)| AuditEvent::Leased {
                    task,
                    queue,
                    worker,
                    attempt,
                    lease_expires_at_ms,
                }
            ),
            (id(), text(), any::<u32>()).prop_map(|(task, worker, attempt)| {
                AuditEvent::Started {
                    task,
                    worker,
                    attempt,
                }
            }),
            (id(), text(), any::<u32>()).prop_map(|(task, worker, attempt)| {
                AuditEvent::Requeued {
                    task,
                    worker,
                    attempt,
                }
            }),
            (id(), text(), any::<u32>(), any::<Option<u64>>()).prop_map(
                |(task, worker, attempt, result_len)| AuditEvent::Succeeded {
                    task,
                    worker,
                    attempt,
                    result_len,
                }
            ),
            (id(), text(), any::<u32>(), any::<u64>()).prop_map(
                |(task, worker, attempt, error_len)| AuditEvent::Failed {
                    task,
                    worker,
                    attempt,
                    error_len,
                }
            ),
            (id(), text(), any::<u32>(), int()).prop_map(
                |(task, worker, attempt, next_run_at_ms)| AuditEvent::Retried {
                    task,
                    worker,
                    attempt,
                    next_run_at_ms,
                }
            ),
        ]
    }

    /// Integers at and around every MessagePack size boundary, and any.
    fn int() -> impl Strategy<Value = i64> {
        let edges: Vec<i64> = [
            0i64,
            31,
            32,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            1 << 31,
            1 << 32,
        ]
        .iter()
        .flat_map(|&e| [e - 1, e, e + 1, -e - 1, -e, -e + 1])
        .chain([i64::MIN, i64::MAX])
        .collect();
        prop_oneof![prop::sample::select(edges), any::<i64>()]
    }

    fn record() -> impl Strategy<Value = AuditRecord> {
        (
            text(),
            int().prop_map(|n| n as u64),
            int(),
            hot_event(),
            text(),
        )
            .prop_map(|(writer, seq, time_ms, event, mac)| AuditRecord {
                writer,
                seq,
                time_ms,
                event,
                mac,
            })
    }

    proptest! {
        #[test]
        fn canonical_bytes_are_rmp_serde_s(r in record()) {
            let want = rmp_serde::to_vec_named(&Canonical {
                writer: &r.writer,
                seq: r.seq,
                time_ms: r.time_ms,
                event: &r.event,
            })
            .unwrap();
            let mut got = b"kept".to_vec();
            prop_assert!(canonical_into(&mut got, &r.writer, r.seq, r.time_ms, &r.event));
            prop_assert_eq!(&got[..4], b"kept");
            prop_assert_eq!(&got[4..], &want[..]);
        }

        #[test]
        fn json_is_serde_json_s(r in record()) {
            let want = serde_json::to_vec(&r).unwrap();
            let mut got = Vec::new();
            prop_assert!(record_json_into(&mut got, &r.writer, r.seq, r.time_ms, &r.event, &r.mac));
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            let back: AuditRecord = serde_json::from_slice(&got).unwrap();
            prop_assert_eq!(back, r);
        }
    }

    #[test]
    fn long_strings_get_the_same_length_prefixes() {
        for n in [65_535, 65_536, 65_537] {
            let worker = "w".repeat(n);
            let event = AuditEvent::Started {
                task: TaskId::new(),
                worker: worker.clone(),
                attempt: 1,
            };
            let want = rmp_serde::to_vec_named(&Canonical {
                writer: &worker,
                seq: 1,
                time_ms: 2,
                event: &event,
            })
            .unwrap();
            let mut got = Vec::new();
            assert!(canonical_into(&mut got, &worker, 1, 2, &event));
            assert!(got == want, "length {n}");
        }
    }

    #[test]
    fn other_events_are_left_to_serde() {
        let e = AuditEvent::Deleted {
            task: TaskId::new(),
            operator: "op".into(),
        };
        let mut out = Vec::new();
        assert!(!canonical_into(&mut out, "w", 0, 0, &e));
        assert!(!record_json_into(&mut out, "w", 0, 0, &e, "00"));
        assert!(out.is_empty());
    }
}
