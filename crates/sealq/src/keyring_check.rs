//! Failing closed: does this keyring open what the broker holds?
//!
//! A worker started with the wrong keyring must not read every waiting task
//! as tampered and archive the backlog. Before it leases anything it
//! samples the tasks waiting in its queues ([`check_keyring`]); if its
//! keyring holds none of the keys they name, it refuses to start and says
//! which keys the tasks need. Nothing is leased, changed or audited by the
//! check. (A task that names a key the keyring holds but does not open was
//! altered: the worker archives it as `integrity`, as it should; a broker
//! writer cannot stop a worker by tampering.)
//!
//! Envelopes sealed with a subject's data key are not sampled (opening them
//! needs the subject key store; the keyring's part there is the KEK, which
//! `SubjectKeys` checks when it unwraps).
//!
//! The broker also keeps check values of the keyring in use ([`stored`]),
//! so a wrong keyring is refused even when no task is waiting.

pub mod stored;

use std::collections::BTreeSet;

use crate::model::record::TaskRecord;
use crate::seal::envelope::{Aad, Purpose, parse_header};
use crate::seal::keyring::Keyring;
use crate::seal::opener::{KeyNeeded, key_needed};
use crate::store::broker::{Broker, BrokerResult};

/// Tasks sampled per queue ([`Broker::sample_waiting`]: by default 8 of
/// each waiting state).
const SAMPLE_PER_QUEUE: usize = 24;

/// What [`check_keyring`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyringCheck {
    /// Keyring-sealed tasks sampled (with a readable envelope header).
    pub sampled: usize,
    /// Of those, how many name a key this keyring holds.
    pub known_key: usize,
    /// Of those, how many this keyring opened.
    pub opened: usize,
    /// Key ids named by sampled tasks that this keyring does not hold.
    pub missing_key_ids: BTreeSet<String>,
}

impl KeyringCheck {
    /// `true` when tasks were sampled and the keyring holds none of the keys
    /// they name: the wrong keyring.
    pub fn is_wrong_keyring(&self) -> bool {
        self.sampled > 0 && self.known_key == 0
    }

    /// A message for an operator, when [`KeyringCheck::is_wrong_keyring`].
    pub fn refusal(&self, broker: &str, keyring: &Keyring) -> String {
        let named: Vec<&str> = self.missing_key_ids.iter().map(String::as_str).collect();
        let held: Vec<&str> = keyring.key_ids().collect();
        format!(
            "this keyring opens none of the {} waiting tasks sampled from {broker} (they name \
             key(s) {}; this keyring holds {}): start with the keyring that sealed them \
             (--keyring, SEALQ_KEYRING or SEALQ_KEYRING_TOML); nothing was leased or changed",
            self.sampled,
            named.join(", "),
            held.join(", "),
        )
    }
}

/// Sample up to a few waiting tasks (pending, scheduled, retry) of each of
/// `queues` (every queue the broker knows when `None`;
/// [`Broker::sample_waiting`]): which keys their keyring-sealed payloads
/// name, and whether `keyring` opens them.
pub async fn check_keyring(
    broker: &dyn Broker,
    keyring: &Keyring,
    queues: Option<&[String]>,
) -> BrokerResult<KeyringCheck> {
    let names: Vec<String> = match queues {
        Some(q) => q.to_vec(),
        None => broker.stats().await?.into_iter().map(|s| s.queue).collect(),
    };
    let mut check = KeyringCheck::default();
    for queue in names {
        for record in broker.sample_waiting(&queue, SAMPLE_PER_QUEUE).await? {
            sample(&mut check, keyring, &record);
        }
    }
    Ok(check)
}

fn sample(check: &mut KeyringCheck, keyring: &Keyring, record: &TaskRecord) {
    if key_needed(&record.envelope, record.meta.subject_tag.as_ref()) != Ok(KeyNeeded::Keyring) {
        return;
    }
    let Ok(header) = parse_header(&record.envelope) else {
        return;
    };
    check.sampled += 1;
    if !keyring.contains_key(header.key_id) {
        check.missing_key_ids.insert(header.key_id.to_owned());
        return;
    }
    check.known_key += 1;
    let aad = Aad::for_record(record, Purpose::Payload);
    if keyring.open(&aad, &record.envelope).is_ok() {
        check.opened += 1;
    }
}
