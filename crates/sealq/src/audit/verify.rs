//! Verification of stored records and checkpoints: [`verify`] and
//! [`VerifyReport`]. Never panics, whatever the input.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::auditor::DEFAULT_CHECKPOINT_EVERY;
use super::fault::{Fault, Store};
use super::head;
use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;
use crate::seal::audit_chain::{
    AuditKeys, AuditRecord, Checkpoint, GENESIS, chain_hash, decode_32, record_mac,
};
use crate::seal::audit_head::Anchor;
use crate::store::audit::{AuditError, AuditSink, Loaded};

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The writers' checkpoint window (records per checkpoint, default 1000):
    /// more uncheckpointed records than this at the end of a chain is a fault.
    pub checkpoint_every: u64,
    /// An anchor (`sealq audit anchor`) the log must extend; without one a
    /// cut of the newest tail (records and checkpoints written after the
    /// last writer started) or a replaced or emptied log is not detected.
    pub anchor: Option<Anchor>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            anchor: None,
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Records read (parsed).
    pub records: u64,
    /// Distinct writers among them.
    pub writers: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Whether record MACs were checked (a keyring was given).
    pub macs_checked: bool,
    /// Records whose MAC verified (with a keyring), or that a valid
    /// checkpoint covers (public key only).
    pub verified_records: u64,
    /// Records after each writer's last checkpoint: with the public key only
    /// they could not be verified; with a keyring their MACs were checked
    /// but a cut of them could not be detected. `(writer, count)`.
    pub uncovered: Vec<(String, u64)>,
    /// Everything wrong, in the order found.
    pub faults: Vec<Fault>,
    /// Task ids that succeeded more than once, across all writers, in id
    /// order (finding 2 of the security review). A warning, not a
    /// [`Fault`]: under at-least-once delivery a task whose lease expired
    /// while its handler ran can legitimately succeed twice (the attempts
    /// then differ); a replayed or restored task that ran again shows here
    /// too. [`VerifyReport::is_ok`] does not look at it.
    pub repeated_successes: Vec<RepeatedSuccess>,
    /// Writers whose first record is not a `writer_started` genesis (logs
    /// written before it): a warning, not a fault; they name no head, so
    /// the removal of a writer before them is not detected through them.
    pub without_genesis: Vec<String>,
    /// Genesis heads that matched the checkpoint store.
    pub heads_checked: u64,
    /// Whether an anchor was checked (see [`VerifyOptions::anchor`]).
    pub anchor_checked: bool,
    /// This keyring's audit key id (see [`Fault::UnknownKey`]).
    pub key_id: Option<String>,
}

/// A task id with more than one `succeeded` (or `succeeded_batch` entry)
/// record: see [`VerifyReport::repeated_successes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatedSuccess {
    /// The task.
    pub task: TaskId,
    /// Each success, in storage order.
    pub successes: Vec<SuccessAt>,
}

/// Where one success of a [`RepeatedSuccess`] was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuccessAt {
    /// The writer of the record.
    pub writer: String,
    /// The record's place in its writer's chain.
    pub seq: u64,
    /// The record's position in storage.
    pub position: u64,
    /// The attempt that succeeded (the same attempt twice is no lease
    /// re-delivery: look for a replay).
    pub attempt: u32,
}

impl RepeatedSuccess {
    /// One line for a human: the task and where it succeeded.
    pub fn describe(&self) -> String {
        let at: Vec<String> = self
            .successes
            .iter()
            .map(|s| format!("writer {} seq {} (attempt {})", s.writer, s.seq, s.attempt))
            .collect();
        format!(
            "task {} succeeded {} times: {}; expected under at-least-once delivery when a \
             lease expired while its handler ran (attempts differ), otherwise look for a \
             replayed or restored task",
            self.task,
            self.successes.len(),
            at.join(", ")
        )
    }
}

/// Every task id with more than one success among the parsed records.
fn repeated_successes(records: &[Loaded<AuditRecord>]) -> Vec<RepeatedSuccess> {
    let mut by_task: BTreeMap<TaskId, Vec<SuccessAt>> = BTreeMap::new();
    for l in records {
        let Ok(r) = &l.item else { continue };
        let at = |attempt| SuccessAt {
            writer: r.writer.clone(),
            seq: r.seq,
            position: l.position,
            attempt,
        };
        match &r.event {
            AuditEvent::Succeeded { task, attempt, .. } => {
                by_task.entry(*task).or_default().push(at(*attempt));
            }
            AuditEvent::SucceededBatch { tasks, .. } => {
                for e in tasks {
                    by_task.entry(e.task).or_default().push(at(e.attempt));
                }
            }
            _ => {}
        }
    }
    by_task
        .into_iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(task, successes)| RepeatedSuccess { task, successes })
        .collect()
}

impl VerifyReport {
    /// Whether everything verified (repeated successes are warnings: they
    /// do not count).
    pub fn is_ok(&self) -> bool {
        self.faults.is_empty()
    }

    /// Whether every fault is a writer with an unknown key (the rest of the
    /// log verified): the CLI exits 3 then, not 1.
    pub fn only_unknown_keys(&self) -> bool {
        !self.faults.is_empty()
            && self
                .faults
                .iter()
                .all(|f| matches!(f, Fault::UnknownKey { .. }))
    }
}

/// Verify every writer's chain and every checkpoint.
///
/// `checkpoints` is `None` when the checkpoint store is missing. Records are
/// taken in storage order; see [`Fault`] for what is reported.
pub fn verify(
    records: &[Loaded<AuditRecord>],
    checkpoints: Option<&[Loaded<Checkpoint>]>,
    keys: &AuditKeys,
    options: &VerifyOptions,
) -> VerifyReport {
    let mut report = VerifyReport {
        macs_checked: keys.mac.is_some(),
        ..VerifyReport::default()
    };

    // Parse failures, and records grouped by writer in storage order.
    let mut order: Vec<&str> = Vec::new();
    let mut by_writer: HashMap<&str, Vec<(u64, &AuditRecord)>> = HashMap::new();
    for l in records {
        match &l.item {
            Ok(r) => {
                report.records += 1;
                let list = by_writer.entry(r.writer.as_str()).or_insert_with(|| {
                    order.push(r.writer.as_str());
                    Vec::new()
                });
                list.push((l.position, r));
            }
            Err(reason) => report.faults.push(Fault::CorruptLine {
                store: Store::Records,
                position: l.position,
                reason: reason.clone(),
            }),
        }
    }
    report.writers = order.len() as u64;
    report.repeated_successes = repeated_successes(records);
    report.key_id = keys.mac_key_id();
    let our_public = keys.public_key_base64();
    let geneses = head::geneses(records);
    report.without_genesis = order
        .iter()
        .filter(|w| !geneses.contains_key(**w))
        .map(|w| (*w).to_owned())
        .collect();
    // A writer's checkpoints signed with the public key its genesis names,
    // when that is not ours: from an unknown key, not forged.
    let foreign_key = |writer: &str| -> Option<VerifyingKey> {
        let g = geneses.get(writer)?;
        if our_public.as_deref() == Some(g.public_key.as_str()) {
            return None;
        }
        let b = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &g.public_key)
            .ok()?;
        VerifyingKey::from_bytes(&<[u8; 32]>::try_from(b).ok()?).ok()
    };

    let mut cps_by_writer: HashMap<&str, Vec<(u64, &Checkpoint)>> = HashMap::new();
    let mut cp_order: Vec<&str> = Vec::new();
    let mut cp_total = 0u64;
    let mut cp_bad_sig = Vec::new();
    let mut cp_foreign = 0u64;
    if let Some(cps) = checkpoints {
        for l in cps {
            match &l.item {
                Ok(c) => {
                    cp_total += 1;
                    if let Some(vk) = &keys.verifying
                        && !c.signature_valid(vk)
                    {
                        if foreign_key(&c.writer).is_some_and(|k| c.signature_valid(&k)) {
                            cp_foreign += 1;
                            continue;
                        }
                        cp_bad_sig.push(Fault::CheckpointForged {
                            writer: c.writer.clone(),
                            seq: c.seq,
                            position: l.position,
                        });
                        continue;
                    }
                    cps_by_writer
                        .entry(c.writer.as_str())
                        .or_insert_with(|| {
                            cp_order.push(c.writer.as_str());
                            Vec::new()
                        })
                        .push((l.position, c));
                }
                Err(reason) => report.faults.push(Fault::CorruptLine {
                    store: Store::Checkpoints,
                    position: l.position,
                    reason: reason.clone(),
                }),
            }
        }
    } else if report.records > 0 {
        report.faults.push(Fault::CheckpointsMissing);
    }
    // No checkpoint verifies with the key given (those of writers naming
    // another key included): the wrong public key.
    if cp_total > 0 && cp_bad_sig.len() as u64 + cp_foreign == cp_total {
        report.faults.push(Fault::WrongPublicKey);
    } else {
        report.faults.append(&mut cp_bad_sig);
    }

    let mut mac_checked_total = 0u64;
    let mut mac_ok_total = 0u64;
    let mut unknown = std::collections::HashSet::new();
    for writer in &order {
        let list = by_writer.get(writer).map(Vec::as_slice).unwrap_or(&[]);
        let cps = cps_by_writer.get(writer).map(Vec::as_slice).unwrap_or(&[]);
        let w = verify_writer(writer, list, cps, keys, options, checkpoints.is_some());
        mac_checked_total += w.mac_checked;
        mac_ok_total += w.mac_ok;
        report.verified_records += w.verified;
        report.checkpoints += cps.len() as u64;
        if w.uncovered > 0 {
            report.uncovered.push(((*writer).to_owned(), w.uncovered));
        }
        let genesis = geneses.get(writer);
        // Another key: nothing of the writer verifies with ours and its
        // genesis names another key (or, without a genesis, at least two
        // records fail, so one edited record is not taken for a key).
        let is_unknown = match (&keys.mac, genesis) {
            (Some(_), Some(g)) => {
                w.mac_checked >= 1
                    && w.mac_ok == 0
                    && report.key_id.as_ref() != Some(&g.mac_key_id)
                    && !head::genesis_is_ours_relabelled(list, keys, our_public.as_deref())
            }
            (Some(_), None) => w.mac_checked >= 2 && w.mac_ok == 0,
            (None, Some(g)) => our_public.as_deref() != Some(g.public_key.as_str()),
            (None, None) => false,
        };
        if is_unknown {
            unknown.insert(*writer);
            report.faults.extend(w.faults.into_iter().filter(|f| {
                !matches!(
                    f,
                    Fault::Edited { .. }
                        | Fault::NotCheckpointed { .. }
                        | Fault::CheckpointMismatch { .. }
                        | Fault::ChangedSinceCheckpoint { .. }
                )
            }));
            report.faults.push(Fault::UnknownKey {
                writer: (*writer).to_owned(),
                key_id: genesis.map(|g| g.mac_key_id.clone()),
                records: list.len() as u64,
            });
        } else {
            report.faults.extend(w.faults);
        }
    }
    if keys.mac.is_some() && mac_checked_total > 0 && mac_ok_total == 0 {
        report.faults.push(Fault::WrongKey { writer: None });
    }
    // Checkpoints of writers without any record.
    for writer in cp_order {
        if !by_writer.contains_key(writer)
            && let Some((pos, _)) = cps_by_writer.get(writer).and_then(|v| v.first())
        {
            report.checkpoints += cps_by_writer.get(writer).map_or(0, |v| v.len() as u64);
            report.faults.push(Fault::UnknownWriter {
                writer: writer.to_owned(),
                checkpoint_position: *pos,
            });
        }
    }
    // The whole log's heads: each (verifiable) writer's genesis against the
    // checkpoint store, then the anchor.
    let trusted: HashMap<&str, head::Genesis> = geneses
        .iter()
        .filter(|(w, _)| !unknown.contains(**w))
        .map(|(w, g)| (*w, g.clone()))
        .collect();
    let (head_faults, heads_ok) = head::check_geneses(&trusted, checkpoints);
    report.heads_checked = heads_ok;
    report.faults.extend(head_faults);
    if let Some(anchor) = &options.anchor {
        report.anchor_checked = true;
        report
            .faults
            .extend(head::check_anchor(anchor, records, checkpoints, keys));
    }
    report
}

struct WriterResult {
    faults: Vec<Fault>,
    mac_checked: u64,
    mac_ok: u64,
    verified: u64,
    uncovered: u64,
}

/// One writer's chain against its (validly signed) checkpoints.
fn verify_writer(
    writer: &str,
    list: &[(u64, &AuditRecord)],
    cps: &[(u64, &Checkpoint)],
    keys: &AuditKeys,
    options: &VerifyOptions,
    have_checkpoint_store: bool,
) -> WriterResult {
    let mut out = WriterResult {
        faults: Vec::new(),
        mac_checked: 0,
        mac_ok: 0,
        verified: 0,
        uncovered: 0,
    };
    // Reordering: a record stored after a higher seq it should precede.
    let mut max_seen: Option<u64> = None;
    let mut seen = std::collections::HashSet::new();
    for (pos, r) in list {
        if let Some(m) = max_seen
            && r.seq < m
            && !seen.contains(&r.seq)
        {
            out.faults.push(Fault::Reordered {
                writer: writer.to_owned(),
                seq: r.seq,
                position: *pos,
                after_seq: m,
            });
        }
        seen.insert(r.seq);
        max_seen = Some(max_seen.map_or(r.seq, |m| m.max(r.seq)));
    }

    let mut by_seq: BTreeMap<u64, Vec<(u64, &AuditRecord)>> = BTreeMap::new();
    for (pos, r) in list {
        by_seq.entry(r.seq).or_default().push((*pos, r));
    }
    let Some(&last_seq) = by_seq.keys().next_back() else {
        return out;
    };

    // Valid checkpoints by seq (the first one stored for a seq); those
    // beyond the last record mean the tail was cut.
    let mut cp_at: BTreeMap<u64, (u64, &Checkpoint)> = BTreeMap::new();
    let mut truncated: Option<(u64, u64)> = None;
    for (pos, cp) in cps {
        if cp.seq > last_seq {
            if truncated.is_none_or(|(s, _)| cp.seq > s) {
                truncated = Some((cp.seq, *pos));
            }
        } else {
            cp_at.entry(cp.seq).or_insert((*pos, *cp));
        }
    }

    // Walk the chain in seq order. `prev_*` is None after a gap. The public
    // chain hash is re-anchored at every signed checkpoint, so a change is
    // reported between the two checkpoints around it.
    let mut prev_mac = Some(GENESIS);
    let mut prev_hash = Some(GENESIS);
    let mut expected = 0u64;
    let mut covered: Option<u64> = None;
    let mut segment = 0u64;
    let mut hash_verified = 0u64;
    for (&seq, candidates) in &by_seq {
        if seq > expected {
            out.faults.push(Fault::Deleted {
                writer: writer.to_owned(),
                from_seq: expected,
                to_seq: seq - 1,
                before_position: candidates.first().map_or(0, |c| c.0),
            });
            prev_mac = None;
            prev_hash = None;
        }
        expected = seq.saturating_add(1);

        let encoded: Vec<(u64, &AuditRecord, Option<Vec<u8>>)> = candidates
            .iter()
            .map(|(pos, r)| (*pos, *r, r.canonical_bytes().ok()))
            .collect();
        let fits = |(_, r, c): &(u64, &AuditRecord, Option<Vec<u8>>)| -> Option<bool> {
            let key = keys.mac.as_deref()?;
            let prev = prev_mac?;
            let c = c.as_ref()?;
            Some(r.mac_bytes() == Some(record_mac(key, &prev, c)))
        };
        let chosen = encoded
            .iter()
            .position(|e| fits(e) == Some(true))
            .unwrap_or(0);
        for (i, (pos, _, _)) in encoded.iter().enumerate() {
            if i != chosen {
                out.faults.push(Fault::Inserted {
                    writer: writer.to_owned(),
                    seq,
                    position: *pos,
                });
            }
        }
        let Some(entry) = encoded.get(chosen) else {
            continue;
        };
        let (pos, rec, canon) = entry;
        match fits(entry) {
            Some(true) => {
                out.mac_checked += 1;
                out.mac_ok += 1;
                out.verified += 1;
            }
            Some(false) => {
                out.mac_checked += 1;
                out.faults.push(Fault::Edited {
                    writer: writer.to_owned(),
                    seq,
                    position: *pos,
                });
            }
            None => {}
        }
        let mac = rec.mac_bytes();
        prev_mac = mac;
        prev_hash = match (prev_hash, mac, canon) {
            (Some(h), Some(m), Some(c)) => Some(chain_hash(&h, &m, c)),
            _ => None,
        };
        segment += 1;

        let Some((cp_pos, cp)) = cp_at.get(&seq) else {
            continue;
        };
        if keys.mac.is_some() {
            if !rec.mac.eq_ignore_ascii_case(&cp.head_mac) {
                out.faults.push(Fault::CheckpointMismatch {
                    writer: writer.to_owned(),
                    seq,
                    checkpoint_position: *cp_pos,
                });
            }
        } else if prev_hash.is_some_and(|h| decode_32(&cp.head_hash) == Some(h)) {
            hash_verified += segment;
        } else {
            out.faults.push(Fault::ChangedSinceCheckpoint {
                writer: writer.to_owned(),
                after_seq: covered,
                through_seq: seq,
                checkpoint_position: *cp_pos,
            });
        }
        // Re-anchor on the signed values.
        prev_hash = decode_32(&cp.head_hash);
        covered = Some(seq);
        segment = 0;
    }

    if let Some((checkpoint_seq, checkpoint_position)) = truncated {
        out.faults.push(Fault::Truncated {
            writer: writer.to_owned(),
            checkpoint_seq,
            last_seq,
            checkpoint_position,
        });
    } else {
        let from_seq = covered.map_or(0, |c| c.saturating_add(1));
        let count = last_seq.saturating_add(1).saturating_sub(from_seq);
        out.uncovered = count;
        if have_checkpoint_store && count > options.checkpoint_every {
            out.faults.push(Fault::NotCheckpointed {
                writer: writer.to_owned(),
                from_seq,
                count,
                window: options.checkpoint_every,
            });
        }
    }
    if keys.mac.is_none() {
        // Without the MAC key, what a valid checkpoint covers is verified.
        out.verified = hash_verified;
    }
    out
}

/// Read a sink and verify it.
pub async fn verify_sink(
    sink: &dyn AuditSink,
    keys: &AuditKeys,
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let records = sink.read_records().await?;
    let checkpoints = sink.read_checkpoints().await?;
    Ok(verify(&records, checkpoints.as_deref(), keys, options))
}

/// Whether `key` verifies at least one of the checkpoints (a quick test for
/// the right public key).
pub fn any_checkpoint_verifies(checkpoints: &[Loaded<Checkpoint>], key: &[u8; 32]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    checkpoints
        .iter()
        .filter_map(|l| l.item.as_ref().ok())
        .any(|c| c.signature_valid(&vk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit_event::SucceededEntry;

    fn loaded(position: u64, writer: &str, seq: u64, event: AuditEvent) -> Loaded<AuditRecord> {
        Loaded {
            position,
            item: Ok(AuditRecord {
                writer: writer.into(),
                seq,
                time_ms: 0,
                event,
                mac: String::new(),
            }),
        }
    }

    fn succeeded(task: TaskId, attempt: u32) -> AuditEvent {
        AuditEvent::Succeeded {
            task,
            worker: "w".into(),
            attempt,
            result_len: None,
        }
    }

    /// Finding 2: a task id succeeding twice (across writers, single and
    /// batch records alike) is reported, as a warning: verification of an
    /// otherwise sound log still passes.
    #[test]
    fn finding_2_a_task_succeeding_twice_is_reported_not_failed() {
        let (twice, once, thrice) = (TaskId::new(), TaskId::new(), TaskId::new());
        let batch = |tasks: &[(TaskId, u32)]| AuditEvent::SucceededBatch {
            worker: "w".into(),
            tasks: tasks
                .iter()
                .map(|&(task, attempt)| SucceededEntry {
                    task,
                    attempt,
                    result_len: None,
                })
                .collect(),
        };
        let records = vec![
            loaded(1, "a", 0, succeeded(twice, 1)),
            loaded(2, "a", 1, succeeded(once, 1)),
            loaded(3, "b", 0, batch(&[(twice, 2), (thrice, 1)])),
            loaded(4, "b", 1, succeeded(thrice, 1)),
            loaded(5, "a", 2, batch(&[(thrice, 1)])),
            Loaded {
                position: 6,
                item: Err("not JSON".into()),
            },
        ];
        let found = repeated_successes(&records);
        let mut want = vec![twice, thrice];
        want.sort();
        assert_eq!(found.iter().map(|r| r.task).collect::<Vec<_>>(), want);
        let t = found.iter().find(|r| r.task == twice).unwrap();
        assert_eq!(
            t.successes,
            vec![
                SuccessAt {
                    writer: "a".into(),
                    seq: 0,
                    position: 1,
                    attempt: 1
                },
                SuccessAt {
                    writer: "b".into(),
                    seq: 0,
                    position: 3,
                    attempt: 2
                },
            ]
        );
        assert_eq!(
            found
                .iter()
                .find(|r| r.task == thrice)
                .unwrap()
                .successes
                .len(),
            3
        );
        assert!(t.describe().contains(&twice.to_string()));
        assert!(t.describe().contains("succeeded 2 times"));

        // A warning, not a fault.
        let report = VerifyReport {
            repeated_successes: found,
            ..VerifyReport::default()
        };
        assert!(report.is_ok());
    }

    #[test]
    fn single_successes_are_not_reported() {
        let records = vec![
            loaded(1, "a", 0, succeeded(TaskId::new(), 1)),
            loaded(2, "a", 1, succeeded(TaskId::new(), 1)),
        ];
        assert!(repeated_successes(&records).is_empty());
    }
}
