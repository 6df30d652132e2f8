//! [`Stores`]: everything one backend stores, handed out as one value.

use std::sync::Arc;

use crate::store::audit::AuditSink;
use crate::store::blob::BlobStore;
use crate::store::broker::Broker;
use crate::store::subject_keys::SubjectKeyStore;

/// The stores of one backend, bundled: the broker, and the subject-key,
/// blob and audit stores that live beside it (the way rustls bundles its
/// cryptography in one provider value). A backend builds it whole, so a
/// caller never wires the pieces by hand or guesses where the audit log of a
/// broker lives. A piece a backend does not have is `None`.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Sealed tasks.
    pub broker: Arc<dyn Broker>,
    /// Wrapped subject data keys (needed by tasks with a subject, erasure
    /// and key rotation).
    pub subject_keys: Option<Arc<dyn SubjectKeyStore>>,
    /// Offloaded sealed payloads.
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// The audit log.
    pub audit: Option<Arc<dyn AuditSink>>,
}

impl Stores {
    /// A bundle of `broker` alone; add the others with the `with_` methods.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Stores {
            broker,
            subject_keys: None,
            blobs: None,
            audit: None,
        }
    }

    /// With a subject-key store.
    pub fn with_subject_keys(mut self, store: Arc<dyn SubjectKeyStore>) -> Self {
        self.subject_keys = Some(store);
        self
    }

    /// With a blob store.
    pub fn with_blobs(mut self, store: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(store);
        self
    }

    /// With an audit sink.
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// A short, secret-free description of every store, for logs.
    pub fn describe(&self) -> String {
        let mut out = self.broker.describe();
        if self.subject_keys.is_some() {
            out.push_str("; subject keys");
        }
        if let Some(b) = &self.blobs {
            out.push_str(&format!("; blobs: {}", b.describe()));
        }
        if let Some(a) = &self.audit {
            out.push_str(&format!("; audit: {}", a.describe()));
        }
        out
    }
}
