//! Finalising erasures (`sealq erase --finalize`): after it, no copy of the
//! subject key store taken before opens anything with the keyring.
//!
//! Erasing a subject destroys its wrapped data key in the live key store.
//! A copy of the store taken earlier still holds it, wrapped under a KEK
//! the keyring can derive; restored, it would open the subject's tasks
//! again. Finalising makes every such copy useless at once, however many
//! subjects were erased since the last run (run it daily, say):
//!
//! 1. the caller adds a KEK epoch to the keyring ([`crate::Keyring::add_kek_epoch`])
//!    and **writes the keyring file** (a key wrapped under an epoch whose
//!    secret was never saved would be lost);
//! 2. [`Client::rewrap_subject_keys_for_finalise`], with that keyring,
//!    re-wraps every stored subject key under the new epoch;
//! 3. only when it reports [`FinaliseReport::is_complete`], the caller drops
//!    the older epochs ([`crate::Keyring::retire_kek_epochs`]) and writes
//!    the keyring file again;
//! 4. [`Client::record_erasure_finalised`] audits it.
//!
//! The keyring file does the work: copies of the *keyring* taken before
//! step 3 still hold the old epochs and must be destroyed with it.
//! Processes running with the keyring of before (workers, producers) must
//! be given the new file and restarted: a worker that cannot unwrap a key
//! holds the task (never archives it), a producer would keep wrapping new
//! keys under the old epoch.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::audit_event::AuditEvent;
use crate::seal::data_key::WrappedUnder;

/// Re-wrap passes before giving up on keys that keep changing meanwhile.
const PASSES: usize = 5;

/// What [`Client::rewrap_subject_keys_for_finalise`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FinaliseReport {
    /// The KEK epoch every key should be wrapped under now.
    pub kek_epoch: String,
    /// Keys re-wrapped under it, over every pass.
    pub rewrapped: u64,
    /// Keys already under it.
    pub current: u64,
    /// Keys that did not unwrap (tag hex, reason): wrapped under a KEK the
    /// keyring lacks, or bytes that do not open.
    pub failed: Vec<(String, String)>,
    /// Keys left under anything but the new epoch after the last pass, by
    /// what wraps them.
    pub remaining: BTreeMap<String, u64>,
    /// Whether the deployment has a subject key store at all.
    pub has_key_store: bool,
}

impl FinaliseReport {
    /// Every stored key is under the new epoch: the older epochs can go.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.remaining.values().all(|n| *n == 0)
    }
}

impl Client {
    /// Step 2 of finalising erasures ([module docs](self)): re-wrap every
    /// stored subject key under the keyring's current KEK epoch, pass after
    /// pass until no key changed meanwhile (at most a few passes), then
    /// count what is left under anything else. Audits nothing (step 4 does).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (`what`: `keyring`) when the keyring has
    /// no KEK epoch (add one and save the keyring first); store errors.
    pub async fn rewrap_subject_keys_for_finalise(&self) -> Result<FinaliseReport> {
        let Some(epoch) = self.keyring().kek_epoch() else {
            return Err(Error::InvalidArgument {
                what: "keyring",
                reason: "the keyring has no KEK epoch: add one (`Keyring::add_kek_epoch`) and \
                         save the keyring file first"
                    .into(),
            });
        };
        let mut report = FinaliseReport {
            kek_epoch: epoch.to_owned(),
            ..FinaliseReport::default()
        };
        let Some(keys) = self.subject_keys() else {
            return Ok(report);
        };
        report.has_key_store = true;
        for _ in 0..PASSES {
            let r = keys.rewrap_all(None, false).await?;
            report.rewrapped += r.rewrapped;
            report.current = r.current;
            report.failed = r.failed;
            if r.changed == 0 && r.rewrapped == 0 {
                break;
            }
        }
        let current = WrappedUnder::Epoch(epoch.to_owned());
        for (under, n) in keys.count_by_wrapping_key().await? {
            if under.as_ref() != Some(&current) {
                let label = under.map_or_else(|| "unknown format".to_owned(), |u| u.to_string());
                *report.remaining.entry(label).or_default() += n;
            }
        }
        Ok(report)
    }

    /// Step 4 of finalising erasures: audit it (`erasure_finalised`) and
    /// wait until the record is written. Does nothing without an auditor.
    pub async fn record_erasure_finalised(
        &self,
        report: &FinaliseReport,
        retired: &[String],
        legacy_closed: bool,
        operator: &str,
    ) -> Result<()> {
        self.audit_now(AuditEvent::ErasureFinalised {
            kek_epoch: report.kek_epoch.clone(),
            retired: retired.to_vec(),
            legacy_closed,
            rewrapped: report.rewrapped,
            operator: operator.to_owned(),
        })
        .await
    }
}
