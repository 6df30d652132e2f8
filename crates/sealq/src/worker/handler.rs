//! What a handler receives ([`TaskContext`], [`RawPayload`]) and returns
//! ([`TaskError`]), and how typed handlers are erased for the runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::model::id::TaskId;
use crate::model::state::ArchiveReason;
use crate::model::task::{Task, decode_payload};

/// The outcome a failing handler asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Retry with the task's backoff policy (the default for any error).
    Retry,
    /// Retry after exactly this delay.
    RetryIn(Duration),
    /// Do not retry: archive with reason `skip_retry`.
    SkipRetry,
    /// The task is no longer wanted: archive with reason `cancelled`.
    Cancel,
    /// Archive with a specific reason (e.g. `reference_missing`).
    Archive(ArchiveReason),
}

/// A handler's error: what to do next plus a message.
///
/// The message is stored **sealed** with the task (operators reveal it
/// explicitly) and is never written to logs, because handler errors often
/// quote the data they failed on.
///
/// Any error converts into a retrying `TaskError` with `?`: a
/// `std::error::Error`, a boxed error, an `anyhow::Error` (see the `From`
/// impl below).
pub struct TaskError {
    /// What the runtime should do.
    pub failure: Failure,
    message: String,
}

impl TaskError {
    /// Fail and retry with the task's backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError {
            failure: Failure::Retry,
            message: message.into(),
        }
    }

    /// Fail and retry after `delay`.
    pub fn retry_in(delay: Duration, message: impl Into<String>) -> Self {
        TaskError {
            failure: Failure::RetryIn(delay),
            message: message.into(),
        }
    }

    /// Fail without retrying.
    pub fn skip_retry(message: impl Into<String>) -> Self {
        TaskError {
            failure: Failure::SkipRetry,
            message: message.into(),
        }
    }

    /// Cancel the task.
    pub fn cancel(message: impl Into<String>) -> Self {
        TaskError {
            failure: Failure::Cancel,
            message: message.into(),
        }
    }

    /// Archive with `reason`.
    pub fn archive(reason: ArchiveReason, message: impl Into<String>) -> Self {
        TaskError {
            failure: Failure::Archive(reason),
            message: message.into(),
        }
    }

    /// The message (sealed before storage).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Debug for TaskError {
    /// The failure kind and message length only: messages may hold payload data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskError")
            .field("failure", &self.failure)
            .field("message_len", &self.message.len())
            .finish()
    }
}

/// `?` in a handler: any error converts into a retrying `TaskError` whose
/// message is the error's text, so a handler can use `?` on a
/// `std::error::Error` (sent or not), a `Box<dyn std::error::Error>` (with
/// or without `+ Send + Sync`), an `anyhow::Error` or an `eyre::Report`
/// (their context chain included: the message is formatted with `{:#}`), or
/// a plain `&str`/`String`, with no feature to turn on. The bound is
/// `Display + Debug` rather than `std::error::Error` because neither a
/// boxed error nor `anyhow::Error` implements that trait.
///
/// `TaskError` itself implements no `Display`: its message may quote
/// payload data, so it can only be read with [`TaskError::message`] (and
/// is sealed before it is stored), never by a stray `{}` in a log line.
///
/// ```
/// use sealq::{HandlerResult, TaskError};
///
/// fn parse(input: &str) -> HandlerResult {
///     let _n: u32 = input.parse()?; // std::num::ParseIntError
///     let boxed: Box<dyn std::error::Error + Send + Sync> = "boxed".into();
///     Err(boxed)?;
///     Ok(())
/// }
/// let e: TaskError = parse("x").unwrap_err();
/// assert_eq!(e.message(), "invalid digit found in string");
/// assert_eq!(e.failure, sealq::Failure::Retry);
/// assert_eq!(parse("1").unwrap_err().message(), "boxed");
/// ```
impl<E: std::fmt::Display + std::fmt::Debug> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::retry(format!("{e:#}"))
    }
}

/// What a handler returns.
pub type HandlerResult = Result<(), TaskError>;

/// An opened payload. Wiped from memory on drop; `Debug` shows the length only.
pub struct RawPayload(pub(crate) Zeroizing<Vec<u8>>);

impl RawPayload {
    /// The MessagePack bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decode as `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> crate::error::Result<T> {
        decode_payload(&self.0)
    }

    /// Decode as JSON (for tools that pass payloads to other programs).
    pub fn to_json(&self) -> crate::error::Result<serde_json::Value> {
        decode_payload(&self.0)
    }
}

impl std::fmt::Debug for RawPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawPayload({} bytes)", self.0.len())
    }
}

/// What a handler knows about the task it runs.
#[derive(Clone)]
pub struct TaskContext {
    pub(crate) id: TaskId,
    pub(crate) kind: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) max_retries: u32,
    pub(crate) created_at_ms: i64,
    pub(crate) run_at_ms: i64,
    pub(crate) started_at_ms: i64,
    pub(crate) deadline_ms: Option<i64>,
    pub(crate) cancel: CancellationToken,
    pub(crate) result: Arc<Mutex<Option<Vec<u8>>>>,
    /// The worker's resolvers (see [`TaskContext::resolve`]).
    pub(crate) resolvers: Arc<crate::reference::Resolvers>,
    /// The producer's trace context, from a version-3 envelope.
    pub(crate) trace_parent: Option<crate::model::trace_parent::TraceParent>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("queue", &self.queue)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// The task id: stable across retries, the idempotency key.
    pub fn id(&self) -> TaskId {
        self.id
    }
    /// The W3C trace context the producer enqueued the task with
    /// (`EnqueueOptions::trace_parent`), opened from the sealed envelope:
    /// make it the parent of the handler's spans (with OpenTelemetry, its
    /// propagator's `extract`) so they join the producer's trace. `None`
    /// when the producer gave none.
    pub fn trace_parent(&self) -> Option<&crate::model::trace_parent::TraceParent> {
        self.trace_parent.as_ref()
    }
    /// The task type.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }
    /// 1 on the first attempt, 2 on the first retry ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Retries allowed after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }
    /// When the task was enqueued, Unix ms.
    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }
    /// When the task became due, Unix ms (enqueue time, or its delay/backoff end).
    pub fn run_at_ms(&self) -> i64 {
        self.run_at_ms
    }
    /// When this attempt started, Unix ms.
    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }
    /// The deadline, if any, Unix ms.
    pub fn deadline_ms(&self) -> Option<i64> {
        self.deadline_ms
    }
    /// Cancelled when the worker shuts down hard or loses the lease; long
    /// handlers should watch it (`ctx.cancellation().cancelled().await`).
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Store a result with the completed task. It is sealed before it leaves
    /// the worker and kept for the task's retention.
    pub fn set_result<T: Serialize + ?Sized>(&self, value: &T) -> crate::error::Result<()> {
        let bytes = crate::model::task::encode_result(value)?;
        self.set_result_bytes(bytes);
        Ok(())
    }

    /// Store raw result bytes (sealed before storage).
    pub fn set_result_bytes(&self, bytes: Vec<u8>) {
        // A poisoned lock means another clone panicked mid-write; the value is
        // a plain Option, so overwriting it is still sound.
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(bytes);
    }

    /// The worker's resolvers ([`crate::WorkerBuilder::resolver`]); handlers
    /// usually call [`TaskContext::resolve`] instead.
    pub fn resolvers(&self) -> &crate::reference::Resolvers {
        &self.resolvers
    }

    pub(crate) fn take_result(&self) -> Option<Vec<u8>> {
        self.result.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A boxed handler future.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A handler with its payload type erased.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, payload: RawPayload, ctx: TaskContext) -> BoxFuture;
}

/// A handler of one task type `T` ([`crate::WorkerBuilder::handle`]): decodes
/// the payload, then calls `f`.
pub(crate) struct TypedHandler<T, F> {
    pub(crate) f: F,
    pub(crate) _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, F, Fut> ErasedHandler for TypedHandler<T, F>
where
    T: Task,
    F: Fn(T, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, payload: RawPayload, ctx: TaskContext) -> BoxFuture {
        match payload.decode::<T>() {
            Ok(value) => Box::pin((self.f)(value, ctx)),
            // The payload opened (it is authentic) but is not a `T`: a producer
            // and worker disagree on the type. Retrying cannot help.
            Err(e) => {
                Box::pin(
                    async move { Err(TaskError::archive(ArchiveReason::Decode, e.to_string())) },
                )
            }
        }
    }
}

/// A handler given the raw payload ([`crate::WorkerBuilder::handle_raw`],
/// [`crate::WorkerBuilder::handle_any`]).
pub(crate) struct RawHandler<F> {
    pub(crate) f: F,
}

impl<F, Fut> ErasedHandler for RawHandler<F>
where
    F: Fn(RawPayload, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, payload: RawPayload, ctx: TaskContext) -> BoxFuture {
        Box::pin((self.f)(payload, ctx))
    }
}
