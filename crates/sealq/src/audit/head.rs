//! The whole log's heads (finding 5): checking each writer's genesis head
//! against the checkpoint store, making an [`Anchor`] and checking a log
//! against one. The formats and hashes are in `seal::audit_head`.

use std::collections::{BTreeMap, HashMap};

use super::fault::Fault;
use crate::model::audit_event::AuditEvent;
use crate::model::clock::wall_clock_ms;
use crate::seal::audit_chain::{
    AuditKeys, AuditRecord, Checkpoint, GENESIS, chain_hash, record_mac,
};
use crate::seal::audit_head::{
    ANCHOR_VERSION, Anchor, AnchorWriter, checkpoints_root, writers_root,
};
use crate::store::audit::Loaded;

/// What a writer's genesis record (`writer_started`, seq 0) says.
#[derive(Debug, Clone)]
pub(crate) struct Genesis {
    pub(crate) mac_key_id: String,
    pub(crate) public_key: String,
    pub(crate) seen: Option<(u64, String)>,
}

/// Each writer's genesis, if its seq 0 is a `writer_started` record (the
/// first one stored, when an extra copy was inserted).
pub(crate) fn geneses(records: &[Loaded<AuditRecord>]) -> HashMap<&str, Genesis> {
    let mut out = HashMap::new();
    for l in records {
        let Ok(r) = &l.item else { continue };
        if r.seq != 0 || out.contains_key(r.writer.as_str()) {
            continue;
        }
        if let AuditEvent::WriterStarted {
            mac_key_id,
            public_key,
            checkpoints_seen,
            checkpoints_root,
            ..
        } = &r.event
        {
            out.insert(
                r.writer.as_str(),
                Genesis {
                    mac_key_id: mac_key_id.clone(),
                    public_key: public_key.clone(),
                    seen: checkpoints_seen.zip(checkpoints_root.clone()),
                },
            );
        }
    }
    out
}

/// Whether the writer's genesis (seq 0) verifies with our MAC key once our
/// key id and public key are put back: one of our writers whose genesis
/// was relabelled to pass for another key's, which is an edit, not an
/// unknown key.
pub(crate) fn genesis_is_ours_relabelled(
    list: &[(u64, &AuditRecord)],
    keys: &AuditKeys,
    our_public: Option<&str>,
) -> bool {
    let (Some(key), Some(id), Some(pk)) = (keys.mac.as_deref(), keys.mac_key_id(), our_public)
    else {
        return false;
    };
    list.iter().filter(|(_, r)| r.seq == 0).any(|(_, r)| {
        let AuditEvent::WriterStarted {
            format,
            checkpoints_seen,
            checkpoints_root,
            head_error,
            ..
        } = &r.event
        else {
            return false;
        };
        let ours = AuditRecord {
            event: AuditEvent::WriterStarted {
                format: *format,
                mac_key_id: id.clone(),
                public_key: pk.to_owned(),
                checkpoints_seen: *checkpoints_seen,
                checkpoints_root: checkpoints_root.clone(),
                head_error: head_error.clone(),
            },
            ..(*r).clone()
        };
        ours.canonical_bytes()
            .is_ok_and(|c| r.mac_bytes() == Some(record_mac(key, &GENESIS, &c)))
    })
}

/// The tree head over the first `n` checkpoint-store entries, or `None`
/// when fewer are stored.
fn prefix_root(checkpoints: &[Loaded<Checkpoint>], n: u64) -> Option<String> {
    let n = usize::try_from(n).ok()?;
    let prefix = checkpoints.get(..n)?;
    Some(checkpoints_root(prefix.iter().map(|l| l.item.as_ref())))
}

/// Check each genesis head against the checkpoint store: a head that does
/// not match means entries stored before that writer started were removed,
/// replaced or reordered (a whole writer removed, or a tail cut with its
/// last checkpoint). Returns the faults and how many heads matched.
pub(crate) fn check_geneses(
    geneses: &HashMap<&str, Genesis>,
    checkpoints: Option<&[Loaded<Checkpoint>]>,
) -> (Vec<Fault>, u64) {
    let stored = checkpoints.unwrap_or(&[]);
    let mut faults = Vec::new();
    let mut ok = 0u64;
    let mut names: Vec<&&str> = geneses.keys().collect();
    names.sort();
    for writer in names {
        let Some((seen, root)) = &geneses[*writer].seen else {
            continue;
        };
        if prefix_root(stored, *seen).as_deref() == Some(root.as_str()) {
            ok += 1;
        } else {
            faults.push(Fault::LogHeadMismatch {
                writer: (*writer).to_owned(),
                seen: *seen,
                stored: stored.len() as u64,
            });
        }
    }
    (faults, ok)
}

/// Each writer's records in seq order (the first stored for a seq).
fn chains(records: &[Loaded<AuditRecord>]) -> BTreeMap<&str, BTreeMap<u64, &AuditRecord>> {
    let mut out: BTreeMap<&str, BTreeMap<u64, &AuditRecord>> = BTreeMap::new();
    for l in records {
        if let Ok(r) = &l.item {
            out.entry(r.writer.as_str())
                .or_default()
                .entry(r.seq)
                .or_insert(r);
        }
    }
    out
}

/// The public chain hash through `through` (seqs from 0 without a gap), or
/// `None` when a record is missing or unencodable.
fn hash_through(chain: &BTreeMap<u64, &AuditRecord>, through: u64) -> Option<[u8; 32]> {
    let mut h = GENESIS;
    for seq in 0..=through {
        let r = chain.get(&seq)?;
        let c = r.canonical_bytes().ok()?;
        h = chain_hash(&h, &r.mac_bytes()?, &c);
    }
    Some(h)
}

/// A signed anchor of the log as read: every writer's last record and the
/// checkpoint store's head. Fails (with the reason) when the keys cannot
/// sign or a writer's chain has a gap (verify the log first).
pub fn make_anchor(
    records: &[Loaded<AuditRecord>],
    checkpoints: Option<&[Loaded<Checkpoint>]>,
    keys: &AuditKeys,
) -> Result<Anchor, String> {
    if keys.signing.is_none() {
        return Err(
            "the audit keys cannot sign (a keyring with `audit_signing_key` is needed)".into(),
        );
    }
    let mut writers = Vec::new();
    for (writer, chain) in chains(records) {
        let Some((&last, _)) = chain.iter().next_back() else {
            continue;
        };
        let hash = hash_through(&chain, last).ok_or_else(|| {
            format!(
                "writer {writer}: its chain has a gap before seq {last}; run `sealq audit verify`"
            )
        })?;
        writers.push(AnchorWriter {
            writer: writer.to_owned(),
            seq: last,
            hash: crate::model::hex::encode(hash),
        });
    }
    let cps = checkpoints.unwrap_or(&[]);
    let mut anchor = Anchor {
        version: ANCHOR_VERSION,
        time_ms: wall_clock_ms(),
        checkpoints: cps.len() as u64,
        checkpoints_root: checkpoints_root(cps.iter().map(|l| l.item.as_ref())),
        writers_root: writers_root(&writers),
        writers,
        public_key: keys.public_key_base64().unwrap_or_default(),
        signature: String::new(),
    };
    anchor.sign(keys);
    Ok(anchor)
}

/// Check that the log extends `anchor`: its signature verifies with the
/// keys' public key, every writer it names is still stored through its
/// seq with the same chain hash, and the checkpoint store still starts
/// with the entries it covers.
pub fn check_anchor(
    anchor: &Anchor,
    records: &[Loaded<AuditRecord>],
    checkpoints: Option<&[Loaded<Checkpoint>]>,
    keys: &AuditKeys,
) -> Vec<Fault> {
    let Some(vk) = &keys.verifying else {
        return vec![Fault::AnchorInvalid {
            reason: "no audit public key to check it with".into(),
        }];
    };
    if anchor.version != ANCHOR_VERSION {
        return vec![Fault::AnchorInvalid {
            reason: format!("unknown anchor version {}", anchor.version),
        }];
    }
    if !anchor.valid(vk) {
        return vec![Fault::AnchorInvalid {
            reason: "its signature does not verify with this audit public key (edited, or made \
                     with another keyring)"
                .into(),
        }];
    }
    let mut faults = Vec::new();
    let stored = checkpoints.unwrap_or(&[]);
    if (stored.len() as u64) < anchor.checkpoints {
        faults.push(Fault::AnchorCheckpointsMissing {
            anchored: anchor.checkpoints,
            stored: stored.len() as u64,
        });
    } else if prefix_root(stored, anchor.checkpoints).as_deref()
        != Some(anchor.checkpoints_root.as_str())
    {
        faults.push(Fault::AnchorCheckpointsChanged {
            anchored: anchor.checkpoints,
        });
    }
    let chains = chains(records);
    for w in &anchor.writers {
        let Some(chain) = chains.get(w.writer.as_str()) else {
            faults.push(Fault::AnchorWriterMissing {
                writer: w.writer.clone(),
                seq: w.seq,
            });
            continue;
        };
        let last = chain.keys().next_back().copied().unwrap_or(0);
        if last < w.seq {
            faults.push(Fault::AnchorTailCut {
                writer: w.writer.clone(),
                anchored_seq: w.seq,
                last_seq: last,
            });
            continue;
        }
        let hash = hash_through(chain, w.seq).map(crate::model::hex::encode);
        if hash.as_deref() != Some(w.hash.as_str()) {
            faults.push(Fault::AnchorMismatch {
                writer: w.writer.clone(),
                seq: w.seq,
            });
        }
    }
    faults
}

#[cfg(test)]
mod tests {
    use crate::audit::{VerifyOptions, verify};
    use crate::model::audit_event::AuditEvent;
    use crate::model::id::TaskId;
    use crate::seal::audit_chain::{
        AuditKeys, AuditRecord, Checkpoint, GENESIS, chain_hash, record_mac,
    };
    use crate::seal::keyring::Keyring;
    use crate::store::audit::Loaded;

    /// A log as sealq wrote it before genesis records: no `writer_started`.
    fn old_log(keys: &AuditKeys, writer: &str, n: u64) -> (Vec<Loaded<AuditRecord>>, Checkpoint) {
        let key = keys.mac.as_deref().unwrap();
        let (mut prev, mut hash) = (GENESIS, GENESIS);
        let mut records = Vec::new();
        for seq in 0..n {
            let mut r = AuditRecord {
                writer: writer.into(),
                seq,
                time_ms: 1,
                event: AuditEvent::Requeued {
                    task: TaskId::new(),
                    worker: "w".into(),
                    attempt: 1,
                },
                mac: String::new(),
            };
            let c = r.canonical_bytes().unwrap();
            prev = record_mac(key, &prev, &c);
            hash = chain_hash(&hash, &prev, &c);
            r.mac = hex::encode(prev);
            records.push(Loaded {
                position: seq + 1,
                item: Ok(r),
            });
        }
        let mut cp = Checkpoint {
            writer: writer.into(),
            seq: n - 1,
            head_mac: hex::encode(prev),
            head_hash: hex::encode(hash),
            time_ms: 2,
            signature: String::new(),
        };
        keys.sign(&mut cp);
        (records, cp)
    }

    #[test]
    fn finding_5_an_old_log_without_genesis_verifies_with_a_warning() {
        let k = Keyring::generate();
        let keys = AuditKeys::from_keyring(&k).unwrap();
        let (records, cp) = old_log(&keys, "old:1", 4);
        let cps = vec![Loaded {
            position: 1,
            item: Ok(cp),
        }];
        let r = verify(&records, Some(&cps), &keys, &VerifyOptions::default());
        assert!(r.is_ok(), "{:?}", r.faults);
        assert_eq!(r.without_genesis, vec!["old:1".to_owned()]);
        assert_eq!(r.heads_checked, 0);
        // An anchor still covers it.
        let anchor = super::make_anchor(&records, Some(&cps), &keys).unwrap();
        assert!(super::check_anchor(&anchor, &records, Some(&cps), &keys).is_empty());
        assert_eq!(
            super::check_anchor(&anchor, &records[..2], Some(&cps), &keys),
            vec![crate::audit::Fault::AnchorTailCut {
                writer: "old:1".into(),
                anchored_seq: 3,
                last_seq: 1
            }]
        );
    }
}
