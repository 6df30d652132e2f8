//! Typed references: put identifiers in payloads, fetch the data in the handler.
//!
//! # Why
//!
//! A payload is sealed, but it is still opened by every worker of its queue,
//! kept in dead-letter queues and backups for as long as its key lives, and
//! revealed by operators while debugging. Data that does not travel cannot
//! leak there: a task should carry the *identifier* of a customer, not the
//! customer. sealq makes that the easy path:
//!
//! - [`Ref<T>`]: a typed reference. A payload field `customer: Ref<Customer>`
//!   serializes as the id alone (`"cus_42"`), so the payload stays small and
//!   holds no customer data, while the type says what the id points to.
//! - [`Resolver<T>`]: implemented once per referenced type (fetch by id from
//!   the database or an API) and registered on the worker with
//!   [`WorkerBuilder::resolver`](crate::WorkerBuilder::resolver).
//! - [`TaskContext::resolve`](crate::TaskContext::resolve): what a handler
//!   calls. It applies the per-type timeout, the optional cache with TTL and
//!   single-flight (concurrent tasks needing the same id fetch it once), and
//!   classifies failures so the handler does not have to:
//!
//! | resolver outcome | task outcome |
//! | --- | --- |
//! | [`ResolveError::NotFound`] | archived, reason `reference_missing` (no retry storm) |
//! | [`ResolveError::Transient`], timeout, panic in the resolver | retried with the task's backoff (archived `exhausted` when retries run out) |
//! | [`ResolveError::Forbidden`] | archived, reason `reference_forbidden`, warning logged |
//! | malformed id (empty, too long, control characters, or refused by [`Resolver::validate_id`]) | archived, reason `reference_malformed` |
//! | no resolver registered for the type | retried (a deployment with the resolver picks the task up), error logged |
//!
//! A malformed id gets its own reason rather than `reference_missing`: a
//! missing record is a data event (deleted customer), a malformed id is a
//! producer bug, and operators look for them in different places.
//!
//! - Metrics per referenced type (`metrics` crate, label `type`):
//!   `sealq_resolve_duration_seconds` (histogram, one sample per fetch),
//!   `sealq_resolve_errors_total{type,class}`,
//!   `sealq_resolve_cache_total{type,result=hit|miss}` (only for types with a
//!   cache), `sealq_resolve_coalesced_total{type}` (waiters that joined a
//!   fetch already running); the same figures in-process through
//!   [`Resolvers::stats`].
//! - [`report::payload_report`]: per queue and task type, the sizes of the
//!   stored payloads against the queue's budget, largest first, to find which
//!   payloads to turn into references (`sealq payloads report`).
//!
//! Logs never carry ids or resolver messages (an id can be personal data):
//! only the type name and the task id. The task's stored error message, which
//! is sealed, names the type and the id.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sealq::{Ref, Task};
//!
//! #[derive(Clone)]
//! struct Customer { name: String }
//!
//! #[derive(Serialize, Deserialize)]
//! struct RenderInvoice {
//!     invoice_id: String,
//!     customer: Ref<Customer>,
//! }
//! impl Task for RenderInvoice { const KIND: &'static str = "invoices.render"; }
//!
//! let task = RenderInvoice { invoice_id: "inv_1".into(), customer: Ref::new("cus_42") };
//! let json = serde_json::to_string(&task)?;
//! assert_eq!(json, r#"{"invoice_id":"inv_1","customer":"cus_42"}"#);
//! # Ok::<(), serde_json::Error>(())
//! ```

mod cache;
mod registry;
pub mod report;
mod resolver;
mod stats;

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The attribute macro for implementing [`Resolver`] (re-exported from the
/// `async-trait` crate, so users need no dependency of their own).
pub use async_trait::async_trait;
pub use registry::{ResolveFailure, Resolvers};
pub use report::{PayloadStats, payload_report};
pub use resolver::{CacheOptions, ResolveError, Resolver, ResolverOptions};
pub use stats::{ErrorClass, ResolverStats};

/// Archive reason of a task whose reference the resolver refused
/// ([`ResolveError::Forbidden`]), as stored in
/// [`ArchiveReason::Other`](crate::ArchiveReason::Other).
pub const REFERENCE_FORBIDDEN: &str = "reference_forbidden";

/// Archive reason of a task whose reference id is malformed (see
/// [`Ref::check_id`] and [`Resolver::validate_id`]), as stored in
/// [`ArchiveReason::Other`](crate::ArchiveReason::Other).
pub const REFERENCE_MALFORMED: &str = "reference_malformed";

/// Longest reference id accepted, in bytes.
pub const MAX_REF_ID_LEN: usize = 512;

/// A typed reference: the id of a `T` kept elsewhere (a database row, an
/// API object), to put in a payload instead of the `T` itself.
///
/// The id is a `String` whatever the store's key type: one representation
/// keeps [`Resolver`] object-safe and the wire form stable across languages.
/// Numeric keys are written as their decimal text (`Ref::new(42.to_string())`).
///
/// - **Wire form**: the id alone, as a string (`"cus_42"`). Deserializing
///   also accepts an integer (`42` becomes `"42"`), for producers written in
///   other languages. Nothing about `T` is stored, so renaming `T` does not
///   break queued tasks.
/// - **No validation when decoding**: a malformed id (empty, longer than
///   [`MAX_REF_ID_LEN`] bytes, with control characters) still decodes, so the
///   task reaches the handler and [`TaskContext::resolve`](crate::TaskContext::resolve)
///   archives it with reason `reference_malformed` instead of a generic decode
///   failure.
/// - **`Debug`** shows the referenced type's name and the id
///   (`Ref<Customer>("cus_42")`); ids are identifiers, not the data.
///
/// `T` needs no bounds: `Ref<T>` is `Clone`, `Eq`, `Hash`, `Ord`, `Send` and
/// `Sync` whatever `T` is.
///
/// ```
/// use sealq::Ref;
///
/// struct Customer;
/// let r: Ref<Customer> = Ref::new("cus_42");
/// assert_eq!(r.id(), "cus_42");
/// assert_eq!(format!("{r:?}"), r#"Ref<Customer>("cus_42")"#);
/// assert_eq!(serde_json::to_string(&r)?, r#""cus_42""#);
///
/// let from_number: Ref<Customer> = serde_json::from_str("42")?;
/// assert_eq!(from_number.id(), "42");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub struct Ref<T: ?Sized> {
    id: String,
    _t: PhantomData<fn() -> T>,
}

impl<T: ?Sized> Ref<T> {
    /// A reference to the `T` with this id.
    pub fn new(id: impl Into<String>) -> Self {
        Ref {
            id: id.into(),
            _t: PhantomData,
        }
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The built-in id check [`TaskContext::resolve`](crate::TaskContext::resolve)
    /// applies before asking the resolver: not empty, at most
    /// [`MAX_REF_ID_LEN`] bytes, no control characters. The error says which
    /// (never quoting the id).
    pub fn check_id(&self) -> Result<(), String> {
        check_id(&self.id)
    }
}

/// See [`Ref::check_id`].
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.len() > MAX_REF_ID_LEN {
        return Err(format!(
            "the id is {} bytes long (at most {MAX_REF_ID_LEN})",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("the id contains control characters".into());
    }
    Ok(())
}

/// The last path segment of `T`'s type name, generics kept
/// (`my_app::models::Customer` → `Customer`).
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    match base.rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}

impl<T: ?Sized> Clone for Ref<T> {
    fn clone(&self) -> Self {
        Ref::new(self.id.clone())
    }
}

impl<T: ?Sized> PartialEq for Ref<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T: ?Sized> Eq for Ref<T> {}

impl<T: ?Sized> PartialOrd for Ref<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: ?Sized> Ord for Ref<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.id.cmp(&other.id)
    }
}

impl<T: ?Sized> Hash for Ref<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl<T: ?Sized> fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ref<{}>({:?})", short_type_name::<T>(), self.id)
    }
}

impl<T: ?Sized> From<String> for Ref<T> {
    fn from(id: String) -> Self {
        Ref::new(id)
    }
}

impl<T: ?Sized> From<&str> for Ref<T> {
    fn from(id: &str) -> Self {
        Ref::new(id)
    }
}

impl<T: ?Sized> Serialize for Ref<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de, T: ?Sized> Deserialize<'de> for Ref<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reference id (string or integer)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<String, E> {
                // MessagePack `str` values that are not UTF-8 arrive as bytes:
                // keep them (lossily) so the resolver check reports them as a
                // malformed reference rather than a decode failure.
                Ok(String::from_utf8_lossy(v).into_owned())
            }
        }
        d.deserialize_any(IdVisitor).map(Ref::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Customer;

    #[test]
    fn wire_form_is_the_id() {
        let r: Ref<Customer> = Ref::new("cus_1");
        let mp = rmp_serde::to_vec_named(&r).unwrap();
        assert_eq!(mp, rmp_serde::to_vec_named("cus_1").unwrap());
        let back: Ref<Customer> = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(back, r);
        let n: Ref<Customer> = rmp_serde::from_slice(&rmp_serde::to_vec(&7u64).unwrap()).unwrap();
        assert_eq!(n.id(), "7");
        let neg: Ref<Customer> = serde_json::from_str("-3").unwrap();
        assert_eq!(neg.id(), "-3");
        assert!(serde_json::from_str::<Ref<Customer>>("{}").is_err());
    }

    #[test]
    fn debug_and_type_names() {
        let r: Ref<Customer> = Ref::new("a");
        assert_eq!(format!("{r:?}"), "Ref<Customer>(\"a\")");
        assert_eq!(short_type_name::<Vec<u8>>(), "Vec<u8>");
        assert_eq!(short_type_name::<u32>(), "u32");
    }

    #[test]
    fn id_checks() {
        assert!(check_id("cus_1").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"x".repeat(MAX_REF_ID_LEN + 1)).is_err());
        assert!(check_id(&"x".repeat(MAX_REF_ID_LEN)).is_ok());
    }
}
