//! Which key opens a stored record: the one rule, decided here only.
//!
//! A task's payload, result and error are sealed with the keyring's primary
//! key, or, for a task with a subject, with that subject's data key (the
//! envelope header then names the reserved key id [`SUBJECT_KEY_ID`]).
//! [`key_needed`] reads which from the envelope and the record's subject
//! tag; the caller fetches a subject's key and seals or opens with the
//! resulting [`SealingKey`]. Its callers: `subject_keys::record_key` (the
//! worker's open step, reveal, and `SubjectKeys::key_for_record`, which the
//! CLI uses), the worker's seal step for results and errors, claim-check
//! offload (`blob::claim`), and re-sealing (`admin::reseal`, which leaves
//! subject-sealed parts alone). No other code picks a key from the
//! envelope's key id.

use zeroize::Zeroizing;

use crate::error::{Error, IntegrityError};
use crate::model::id::SubjectTag;
use crate::seal::data_key::{DataKey, SUBJECT_KEY_ID, is_subject_sealed};
use crate::seal::envelope::Aad;
use crate::seal::keyring::Keyring;

/// What a sealed envelope needs to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNeeded {
    /// A key of the keyring (the header names which).
    Keyring,
    /// The data key of this subject.
    Subject(SubjectTag),
}

/// The key `envelope` needs, given the subject tag of the record it belongs
/// to. An envelope that names the subject key id on a record with no subject
/// tag can never open: an integrity failure, not a missing key.
pub fn key_needed(
    envelope: &[u8],
    subject_tag: Option<&SubjectTag>,
) -> Result<KeyNeeded, IntegrityError> {
    if !is_subject_sealed(envelope) {
        return Ok(KeyNeeded::Keyring);
    }
    match subject_tag {
        Some(tag) => Ok(KeyNeeded::Subject(*tag)),
        None => Err(IntegrityError::UnknownKey(SUBJECT_KEY_ID.to_owned())),
    }
}

/// The key that seals and opens one task's sealed parts (payload, result,
/// error, claim and blob alike): the keyring (its primary seals, any of its
/// keys opens), or the data key of the task's subject, so erasing the
/// subject shreds every part.
#[derive(Debug, Clone, Copy)]
pub enum SealingKey<'a> {
    /// The keyring.
    Keyring(&'a Keyring),
    /// A subject's data key.
    Subject(&'a DataKey),
}

impl SealingKey<'_> {
    /// Seal `plain` for `aad`.
    pub fn seal(&self, aad: &Aad<'_>, plain: &[u8]) -> Result<Vec<u8>, Error> {
        match self {
            SealingKey::Keyring(k) => k.seal(aad, plain),
            SealingKey::Subject(k) => k.seal(aad, plain),
        }
    }

    /// Open `sealed` for `aad`.
    pub fn open(&self, aad: &Aad<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        match self {
            SealingKey::Keyring(k) => k.open(aad, sealed),
            SealingKey::Subject(k) => k.open(aad, sealed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::id::TaskId;
    use crate::seal::envelope::Purpose;

    fn aad(tag: Option<SubjectTag>) -> Aad<'static> {
        Aad {
            purpose: Purpose::Payload,
            task_id: TaskId::new(),
            queue: "q",
            kind: "k",
            producer: "p",
            created_at_ms: 1,
            not_after_ms: None,
            subject_tag: tag,
            policy: crate::model::task::TaskPolicy {
                not_before_ms: None,
                deadline_ms: None,
                timeout_ms: None,
                max_retries: 0,
                backoff: crate::model::backoff::Backoff::Fixed { delay_ms: 0 },
                retention_ms: 0,
            },
        }
    }

    #[test]
    fn the_envelope_header_decides_the_key_and_a_subject_key_needs_a_tag() {
        let keyring = Keyring::generate();
        let tag = keyring.subject_tag("user-1");
        let by_keyring = keyring.seal(&aad(None), b"x").unwrap();
        assert_eq!(key_needed(&by_keyring, Some(&tag)), Ok(KeyNeeded::Keyring));
        assert_eq!(key_needed(&by_keyring, None), Ok(KeyNeeded::Keyring));

        let data_key = DataKey::generate().unwrap();
        let a = aad(Some(tag));
        let by_subject = SealingKey::Subject(&data_key).seal(&a, b"y").unwrap();
        assert_eq!(
            key_needed(&by_subject, Some(&tag)),
            Ok(KeyNeeded::Subject(tag))
        );
        assert_eq!(
            key_needed(&by_subject, None),
            Err(IntegrityError::UnknownKey(SUBJECT_KEY_ID.to_owned()))
        );
        assert_eq!(
            &*SealingKey::Subject(&data_key)
                .open(&a, &by_subject)
                .unwrap(),
            b"y"
        );
        assert!(SealingKey::Keyring(&keyring).open(&a, &by_subject).is_err());
    }
}
