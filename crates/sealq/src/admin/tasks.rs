//! Deleting and re-running tasks, audited per task.

use crate::client::Client;
use crate::error::Result;
use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;

impl Client {
    /// Delete tasks in any state (audited per task); returns how many existed.
    pub async fn delete_tasks(&self, ids: &[TaskId], operator: &str) -> Result<u64> {
        let n = self.broker().delete(ids).await?;
        for id in ids {
            self.audit_now(AuditEvent::Deleted {
                task: *id,
                operator: operator.to_owned(),
            })
            .await?;
        }
        Ok(n)
    }

    /// Move archived tasks back to pending (audited per task); returns how many moved.
    pub async fn rerun_tasks(&self, ids: &[TaskId], operator: &str) -> Result<u64> {
        let n = self.broker().rerun(ids).await?;
        for id in ids {
            self.audit_now(AuditEvent::Rerun {
                task: *id,
                operator: operator.to_owned(),
            })
            .await?;
        }
        Ok(n)
    }
}
