//! [`TaskContext::resolve`]: resolving inside a handler, failures classified.

use std::sync::Arc;

use super::handler::{TaskContext, TaskError};
use crate::model::state::ArchiveReason;
use crate::reference::{
    ErrorClass, REFERENCE_FORBIDDEN, REFERENCE_MALFORMED, Ref, ResolveFailure, short_type_name,
};

impl TaskContext {
    /// Fetch what `reference` points to through the resolver registered for
    /// `T` ([`WorkerBuilder::resolver`](crate::WorkerBuilder::resolver)),
    /// with its timeout, cache and single-flight.
    ///
    /// The error is already the right [`TaskError`] for the handler to return
    /// with `?`:
    ///
    /// - not found → archived, reason `reference_missing`;
    /// - malformed id → archived, reason `reference_malformed`;
    /// - forbidden → archived, reason `reference_forbidden` (logged as a warning);
    /// - transient, timeout, resolver panic, no resolver registered for `T`
    ///   → retried with the task's backoff.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use serde::{Deserialize, Serialize};
    /// # use sealq::{Ref, Task, TaskContext, HandlerResult};
    /// # struct Customer { email: String }
    /// # #[derive(Serialize, Deserialize)]
    /// # struct RenderInvoice { customer: Ref<Customer> }
    /// # impl Task for RenderInvoice { const KIND: &'static str = "invoices.render"; }
    /// async fn render(task: RenderInvoice, ctx: TaskContext) -> HandlerResult {
    ///     let customer: Arc<Customer> = ctx.resolve(&task.customer).await?;
    ///     let _ = &customer.email; // render and send
    ///     Ok(())
    /// }
    /// ```
    pub async fn resolve<T: Send + Sync + 'static>(
        &self,
        reference: &Ref<T>,
    ) -> Result<Arc<T>, TaskError> {
        self.resolvers()
            .resolve(reference)
            .await
            .map_err(|f| self.task_error::<T>(f))
    }

    fn task_error<T>(&self, failure: ResolveFailure) -> TaskError {
        let message = failure.message().to_owned();
        match failure.class {
            ErrorClass::NotFound => TaskError::archive(ArchiveReason::ReferenceMissing, message),
            ErrorClass::Malformed => TaskError::archive(
                ArchiveReason::Other(REFERENCE_MALFORMED.to_owned()),
                message,
            ),
            ErrorClass::Forbidden => {
                tracing::warn!(
                    task = %self.id(),
                    r#type = short_type_name::<T>(),
                    "resolver refused a reference; archiving the task (reference_forbidden)"
                );
                // AUDIT HOOK: a refused reference is a security event. When the
                // audit log lands, record it here (task id, kind, queue,
                // referenced type; never the id or the resolver's message).
                TaskError::archive(
                    ArchiveReason::Other(REFERENCE_FORBIDDEN.to_owned()),
                    message,
                )
            }
            ErrorClass::Unregistered => {
                tracing::error!(
                    task = %self.id(),
                    r#type = short_type_name::<T>(),
                    "no resolver registered for a referenced type; retrying the task \
                     (register one with WorkerBuilder::resolver)"
                );
                TaskError::retry(message)
            }
            ErrorClass::Transient | ErrorClass::Timeout | ErrorClass::Panic => {
                TaskError::retry(message)
            }
        }
    }
}
