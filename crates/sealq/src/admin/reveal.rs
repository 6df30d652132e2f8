//! Revealing a task's payload, result and error to an operator: refused
//! without an audit log, because showing plaintext is the one act a sealed
//! queue must always be able to account for.

use zeroize::Zeroizing;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;
use crate::model::record::TaskRecord;
use crate::seal::envelope::{Aad, Purpose};
use crate::subject_keys::{RecordKey, RecordKeyError, record_key};

/// A task's opened contents, for an operator who asked to see them.
/// `Debug` shows sizes only.
pub struct Revealed {
    /// The stored record (ids, state, sizes).
    pub record: TaskRecord,
    /// The payload (MessagePack; see [`crate::task::decode_payload`]).
    pub payload: Zeroizing<Vec<u8>>,
    /// The result, if the task completed with one.
    pub result: Option<Zeroizing<Vec<u8>>>,
    /// The last error message, if any.
    pub error: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revealed")
            .field("record", &self.record)
            .field("payload_len", &self.payload.len())
            .field("result_len", &self.result.as_ref().map(|r| r.len()))
            .field("error_len", &self.error.as_ref().map(|e| e.len()))
            .finish()
    }
}

impl Client {
    /// Open a task's payload, result and error for `operator`. Requires an
    /// auditor. Everything is opened first, in memory; only once the
    /// keyring is known to open the task is the `payload_revealed` record
    /// written (and flushed), and only then is anything returned. A keyring
    /// that cannot open the task gets an error and writes no record.
    pub async fn reveal(&self, id: TaskId, operator: &str) -> Result<Revealed> {
        self.keyring()
            .require_sealing_keys("open a payload (reveal)")?;
        if self.auditor().is_none() {
            return Err(Error::Config(
                "revealing a payload is an audited act: configure an audit log (ClientBuilder::audit)"
                    .into(),
            ));
        }
        let record = self.broker().get(id).await?.ok_or(Error::NotFound(id))?;
        let key = match record_key(self.subject_keys().map(|k| &**k), &record).await {
            Ok(RecordKey::Keyring) => None,
            Ok(RecordKey::Subject(key)) => Some(key),
            Ok(RecordKey::Erased) => {
                return Err(Error::Config(
                    "this task's subject was erased: its data key is gone".into(),
                ));
            }
            Err(RecordKeyError::Integrity(e)) => return Err(Error::Integrity(e)),
            Err(RecordKeyError::Unavailable(e)) => return Err(e),
            Err(RecordKeyError::UnknownKek(k)) => {
                return Err(Error::Integrity(crate::error::IntegrityError::UnknownKey(
                    k,
                )));
            }
        };
        let open = |purpose: Purpose, bytes: &[u8]| -> Result<Zeroizing<Vec<u8>>> {
            let aad = Aad::for_record(&record, purpose);
            Ok(match &key {
                Some(k) => k.open(&aad, bytes)?,
                None => self.keyring().open(&aad, bytes)?,
            })
        };
        let mut payload = open(Purpose::Payload, &record.envelope)?;
        if let Some(full) = crate::blob::open_claimed(
            self.blob_store(),
            match &key {
                Some(k) => crate::seal::opener::SealingKey::Subject(k),
                None => crate::seal::opener::SealingKey::Keyring(self.keyring()),
            },
            &record,
            &payload,
        )
        .await
        .map_err(|e| match e {
            crate::blob::ClaimError::Integrity(i) => Error::Integrity(i),
            crate::blob::ClaimError::Store(b) => Error::Broker(b),
            crate::blob::ClaimError::NoStore => Error::Config(
                "the payload is in the claim-check store: configure ClientBuilder::blob_store"
                    .into(),
            ),
            crate::blob::ClaimError::Missing => {
                Error::Config("the payload's blob is not in the claim-check store".into())
            }
        })? {
            payload = full;
        }
        let result = record
            .result
            .as_deref()
            .map(|r| open(Purpose::Result, r))
            .transpose()?;
        let error = record
            .last_error
            .as_deref()
            .map(|e| open(Purpose::Error, e))
            .transpose()?;
        // Opened: now the act is recorded, before anything is shown.
        self.audit_now(AuditEvent::PayloadRevealed {
            task: id,
            operator: operator.to_owned(),
        })
        .await?;
        Ok(Revealed {
            record,
            payload,
            result,
            error,
        })
    }
}
