//! The [`SubjectKeyStore`] trait: where wrapped subject data keys live.

use async_trait::async_trait;

use crate::model::id::SubjectTag;
use crate::store::broker::BrokerResult;

/// Where wrapped subject keys live. Keep it apart from the task store and
/// out of long-lived backups: destroying a key must destroy every copy.
#[async_trait]
pub trait SubjectKeyStore: Send + Sync + std::fmt::Debug + 'static {
    /// The wrapped key of `tag`, if any.
    async fn get(&self, tag: &SubjectTag) -> BrokerResult<Option<Vec<u8>>>;
    /// Store `wrapped` unless a key exists already; return the stored key
    /// (so concurrent producers agree on one key per subject).
    async fn put_if_absent(&self, tag: &SubjectTag, wrapped: Vec<u8>) -> BrokerResult<Vec<u8>>;
    /// [`SubjectKeyStore::get`] for many subjects (one round trip where the
    /// backend allows; the default asks one by one).
    async fn get_many(&self, tags: &[SubjectTag]) -> BrokerResult<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            out.push(self.get(tag).await?);
        }
        Ok(out)
    }
    /// [`SubjectKeyStore::put_if_absent`] for many subjects (one round trip /
    /// one durable write where the backend allows; the default goes one by one).
    async fn put_many_if_absent(
        &self,
        items: Vec<(SubjectTag, Vec<u8>)>,
    ) -> BrokerResult<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(items.len());
        for (tag, wrapped) in items {
            out.push(self.put_if_absent(&tag, wrapped).await?);
        }
        Ok(out)
    }
    /// Destroy the key of `tag` and bump the erasure epoch; `true` if a key existed.
    async fn destroy(&self, tag: &SubjectTag) -> BrokerResult<bool>;
    /// Every stored wrapped key, with its subject tag (for re-wrapping after
    /// a key rotation). The default says the store cannot list.
    async fn list(&self) -> BrokerResult<Vec<(SubjectTag, Vec<u8>)>> {
        Err(crate::error::BrokerError::new(
            crate::error::BrokerErrorKind::Config,
            format!("{self:?} cannot list its subject keys (SubjectKeyStore::list)"),
        ))
    }
    /// Replace `tag`'s wrapped key with `new` only if it is still `old`
    /// (atomically: never resurrects a key destroyed meanwhile, never
    /// overwrites a newer one); `true` when replaced. The default says the
    /// store cannot.
    async fn replace(&self, tag: &SubjectTag, old: &[u8], new: Vec<u8>) -> BrokerResult<bool> {
        let _ = (tag, old, new);
        Err(crate::error::BrokerError::new(
            crate::error::BrokerErrorKind::Config,
            format!("{self:?} cannot replace its subject keys (SubjectKeyStore::replace)"),
        ))
    }
    /// The erasure epoch: bumped by every [`SubjectKeyStore::destroy`], so
    /// processes caching keys know to drop them.
    async fn epoch(&self) -> BrokerResult<u64>;
}
