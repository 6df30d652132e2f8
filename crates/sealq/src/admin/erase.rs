//! Erasing a data subject (right to erasure) by crypto-shredding.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::audit_event::AuditEvent;
use crate::model::counts::ErasureReceipt;
use crate::model::id::TaskId;

impl Client {
    /// Erase a data subject (right to erasure, crypto-shredding): delete the
    /// subject's tasks in every state (active ones end archived as `erased`),
    /// destroy its data key so every earlier copy of its envelopes, results
    /// and errors becomes unreadable, and write a receipt to the audit log.
    /// The receipt names the subject only by its keyed tag. Erasing an
    /// unknown subject succeeds with zero counts; erasing twice is harmless.
    pub async fn erase_subject(&self, subject: &str, operator: &str) -> Result<ErasureReceipt> {
        // An operator keyring cannot compute the subject's tag.
        self.keyring().require_sealing_keys("erase a subject")?;
        let tag = self.keyring().subject_tag(subject);
        let counts = self.broker().erase_subject(&tag).await?;
        let key_destroyed = match self.subject_keys() {
            Some(keys) => keys.destroy(&tag).await?,
            None => false,
        };
        let receipt = ErasureReceipt {
            subject_tag: tag.to_hex(),
            counts,
            key_destroyed,
            time_ms: self.now_ms(),
            operator: operator.to_owned(),
        };
        if let Some(a) = self.auditor() {
            let c = &receipt.counts;
            let counts = [
                ("scheduled", c.scheduled),
                ("pending", c.pending),
                ("active", c.active),
                ("retry", c.retry),
                ("completed", c.completed),
                ("archived", c.archived),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            a.record(AuditEvent::SubjectErased {
                receipt_id: TaskId::new().to_string(),
                subject_tag: receipt.subject_tag.clone(),
                counts,
                key_destroyed,
                operator: operator.to_owned(),
            });
            a.flush().await.map_err(|e| {
                Error::Audit(format!(
                    "the subject was erased but its receipt was not written: {e}"
                ))
            })?;
        }
        Ok(receipt)
    }
}
