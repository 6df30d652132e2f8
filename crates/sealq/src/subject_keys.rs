//! Per-subject data keys: erasure by crypto-shredding.
//!
//! A task enqueued with a subject (`EnqueueOptions::subject("user-42")`) is
//! sealed with that subject's own random **data key**, not the keyring's
//! primary key. Its result and error messages are sealed with the same key.
//! Data keys are stored wrapped (XChaCha20-Poly1305) under a key-encryption
//! key (KEK), in a [`SubjectKeyStore`] that is **separate from the task
//! store**: the embedded broker keeps it in its own file beside the database.
//! The KEK is derived from the keyring's primary sealing key
//! (HKDF, label `sealq-subject-kek-v2`), so it rotates with the keyring:
//! after `keys rotate`, new data keys are wrapped under the new primary's
//! KEK, [`SubjectKeys::rewrap_all`] (run by `sealq keys reseal`) re-wraps the
//! stored ones, and `keys remove` refuses to drop a key that still wraps
//! any. Keys wrapped by earlier versions under the KEK derived from the
//! `subject_tag_key` (format 1) still open and are re-wrapped the same way.
//!
//! Erasing a subject deletes its tasks and destroys its wrapped key. Copies of
//! the task store made earlier (file copies, backups, replicas, AOF/RDB) then
//! hold ciphertext nobody can open: the key that opened it is gone. This only
//! holds if the key store itself is not copied into long-lived backups; see
//! `docs/compliance.md`.
//!
//! Envelopes sealed with a data key name the reserved key id
//! [`SUBJECT_KEY_ID`]; the subject tag in their associated data says which
//! subject's key opens them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::broker::BrokerResult;
use crate::envelope::{Aad, parse_header};
use crate::error::{Error, IntegrityError};
use crate::keyring::{Keyring, open_with_cipher, random_nonce, seal_with_cipher};
use crate::task::SubjectTag;

/// The key id in the header of envelopes sealed with a subject's data key.
pub const SUBJECT_KEY_ID: &str = "subject";

/// Label of the format-1 KEK, derived from the keyring's `subject_tag_key`
/// (which never rotates): read only.
const KEK_LABEL: &str = "sealq-subject-kek-v1";
/// Label of the format-2 KEKs, one derived from each sealing key.
const KEK_V2_LABEL: &str = "sealq-subject-kek-v2";
/// Domain of the format-1 wrapping's associated data.
const WRAP_DOMAIN: &[u8] = b"sealq-subject-key-v1";
/// Domain of the format-2 wrapping's associated data.
const WRAP_DOMAIN_V2: &[u8] = b"sealq-subject-key-v2";
/// Format 1: version byte 1, 24-byte nonce, 32-byte key, 16-byte tag.
const WRAPPED_LEN: usize = 1 + 24 + 32 + 16;
/// Format 2: version byte 2, key id length (1 byte), key id, then as format 1.
const WRAPPED_V2_FIXED: usize = 2 + 24 + 32 + 16;

/// What a stored wrapped subject key is wrapped under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WrappedUnder {
    /// Format 1: the KEK derived from the keyring's `subject_tag_key`
    /// (written before KEKs rotated with the sealing keys).
    TagKey,
    /// Format 2: the KEK derived from this sealing key id.
    Key(String),
}

impl std::fmt::Display for WrappedUnder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WrappedUnder::TagKey => f.write_str("subject_tag_key (format 1)"),
            WrappedUnder::Key(id) => write!(f, "{id}"),
        }
    }
}

impl WrappedUnder {
    /// The key a stored wrapped key names, from its bytes alone; `None` for
    /// bytes in no known format.
    pub fn of(wrapped: &[u8]) -> Option<WrappedUnder> {
        match wrapped.first()? {
            1 if wrapped.len() == WRAPPED_LEN => Some(WrappedUnder::TagKey),
            2 => {
                let n = usize::from(*wrapped.get(1)?);
                let id = wrapped.get(2..2 + n)?;
                (wrapped.len() == WRAPPED_V2_FIXED + n)
                    .then(|| {
                        std::str::from_utf8(id)
                            .ok()
                            .map(|s| WrappedUnder::Key(s.to_owned()))
                    })
                    .flatten()
            }
            _ => None,
        }
    }
}

/// What [`SubjectKeys::rewrap_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewrapReport {
    /// The key whose KEK wraps them now (the keyring's primary).
    pub to_key: String,
    /// Wrapped keys re-wrapped under it (or, with `dry_run`, that would be).
    pub rewrapped: u64,
    /// Already wrapped under it.
    pub current: u64,
    /// Changed or destroyed (an erasure) between reading and replacing:
    /// left as they are; run again.
    pub changed: u64,
    /// Wrapped keys that could not be unwrapped, by subject tag (hex) with
    /// the reason (a key this keyring lacks, or bytes that do not open).
    pub failed: Vec<(String, String)>,
    /// Wrapped keys left under another key after this run (failed, changed,
    /// or not selected), by the key that wraps them ([`WrappedUnder`]'s
    /// text; `unknown format` for bytes in none).
    pub remaining: std::collections::BTreeMap<String, u64>,
}

/// The wrapping's associated data: domain, subject tag and, for format 2,
/// the wrapping key id (length-prefixed).
fn wrap_ad(tag: &SubjectTag, key_id: Option<&str>) -> Vec<u8> {
    let mut ad = Vec::with_capacity(WRAP_DOMAIN_V2.len() + 33 + key_id.map_or(0, str::len));
    match key_id {
        None => ad.extend_from_slice(WRAP_DOMAIN),
        Some(_) => ad.extend_from_slice(WRAP_DOMAIN_V2),
    }
    ad.extend_from_slice(&tag.0);
    if let Some(id) = key_id {
        ad.push(id.len() as u8);
        ad.extend_from_slice(id.as_bytes());
    }
    ad
}

/// One subject's data key. Wiped from memory on drop; never printed.
pub struct DataKey {
    secret: Zeroizing<[u8; 32]>,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let cipher = XChaCha20Poly1305::new(<&Key>::from(&*secret));
        DataKey { secret, cipher }
    }

    fn generate() -> Result<Self, Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|e| {
            Error::Keyring(format!(
                "the operating system's random number generator failed: {e}"
            ))
        })?;
        Ok(Self::from_secret(secret))
    }

    /// Seal `plaintext` for `aad` with this key (header key id [`SUBJECT_KEY_ID`]).
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        seal_with_cipher(
            &self.cipher,
            SUBJECT_KEY_ID,
            aad,
            plaintext,
            random_nonce()?,
        )
    }

    /// Open an envelope sealed with [`DataKey::seal`].
    pub fn open(
        &self,
        aad: &Aad<'_>,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        open_with_cipher(&self.cipher, aad, envelope)
    }
}

/// `true` when `envelope`'s header names a subject data key.
pub fn is_subject_sealed(envelope: &[u8]) -> bool {
    parse_header(envelope).is_ok_and(|h| h.key_id == SUBJECT_KEY_ID)
}

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
        Err(crate::BrokerError::new(
            crate::BrokerErrorKind::Config,
            format!("{self:?} cannot list its subject keys (SubjectKeyStore::list)"),
        ))
    }
    /// Replace `tag`'s wrapped key with `new` only if it is still `old`
    /// (atomically: never resurrects a key destroyed meanwhile, never
    /// overwrites a newer one); `true` when replaced. The default says the
    /// store cannot.
    async fn replace(&self, tag: &SubjectTag, old: &[u8], new: Vec<u8>) -> BrokerResult<bool> {
        let _ = (tag, old, new);
        Err(crate::BrokerError::new(
            crate::BrokerErrorKind::Config,
            format!("{self:?} cannot replace its subject keys (SubjectKeyStore::replace)"),
        ))
    }
    /// The erasure epoch: bumped by every [`SubjectKeyStore::destroy`], so
    /// processes caching keys know to drop them.
    async fn epoch(&self) -> BrokerResult<u64>;
}

/// Data keys for sealing and opening, with a short in-process cache.
///
/// Cached keys are dropped when the store's erasure epoch changes (checked
/// at most once per `epoch_check` interval, and on every [`SubjectKeys::refresh`])
/// or after the cache TTL.
pub struct SubjectKeys {
    store: Arc<dyn SubjectKeyStore>,
    /// The format-1 KEK (from the `subject_tag_key`): opens only.
    legacy: XChaCha20Poly1305,
    /// The format-2 KEK of every keyring key, by key id.
    keks: HashMap<String, XChaCha20Poly1305>,
    /// The keyring's primary key id: its KEK wraps new keys.
    primary: String,
    cache: Mutex<HashMap<SubjectTag, (Arc<DataKey>, Instant)>>,
    ttl: Duration,
    epoch: AtomicU64,
    epoch_checked: Mutex<Instant>,
    epoch_check: Duration,
}

impl std::fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectKeys")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl SubjectKeys {
    /// Data keys from `store`, wrapped under KEKs derived from `keyring`'s
    /// keys (new ones under its primary key's).
    pub fn new(store: Arc<dyn SubjectKeyStore>, keyring: &Keyring) -> Self {
        let legacy = keyring.derive_subkey(KEK_LABEL);
        let keks = keyring
            .key_ids()
            .filter_map(|id| {
                let kek = keyring.derive_from_key(id, KEK_V2_LABEL)?;
                Some((id.to_owned(), XChaCha20Poly1305::new(<&Key>::from(&*kek))))
            })
            .collect();
        SubjectKeys {
            store,
            legacy: XChaCha20Poly1305::new(<&Key>::from(&*legacy)),
            keks,
            primary: keyring.primary_key_id().to_owned(),
            cache: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(30),
            epoch: AtomicU64::new(0),
            epoch_checked: Mutex::new(Instant::now() - Duration::from_secs(3600)),
            epoch_check: Duration::from_secs(1),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SubjectKeyStore> {
        &self.store
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<SubjectTag, (Arc<DataKey>, Instant)>> {
        // Plain map of immutable values: usable even after a panic elsewhere.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, tag: &SubjectTag) -> Option<Arc<DataKey>> {
        let cache = self.cache();
        cache
            .get(tag)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(k, _)| k.clone())
    }

    /// A key already fetched, whatever its age (to seal the result of a task
    /// opened with it). Erasure empties the cache, so an erased key is gone.
    pub(crate) fn cached_any_age(&self, tag: &SubjectTag) -> Option<Arc<DataKey>> {
        self.cache().get(tag).map(|(k, _)| k.clone())
    }

    /// Drop cached keys if the store's erasure epoch moved.
    pub async fn refresh(&self) -> Result<(), Error> {
        let epoch = self.store.epoch().await?;
        if self.epoch.swap(epoch, Ordering::SeqCst) != epoch {
            self.cache().clear();
        }
        *self.epoch_checked.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    async fn refresh_if_due(&self) -> Result<(), Error> {
        let due = self
            .epoch_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            >= self.epoch_check;
        if due { self.refresh().await } else { Ok(()) }
    }

    /// The key to seal a new task of `tag` with; created on first use.
    pub async fn for_seal(&self, tag: &SubjectTag) -> Result<Arc<DataKey>, Error> {
        self.refresh_if_due().await?;
        if let Some(k) = self.cached(tag) {
            return Ok(k);
        }
        let stored = match self.store.get(tag).await? {
            Some(w) => w,
            None => {
                let fresh = DataKey::generate()?;
                let wrapped = self.wrap(tag, &fresh)?;
                self.store.put_if_absent(tag, wrapped).await?
            }
        };
        let key = Arc::new(self.unwrap(tag, &stored)?);
        self.cache().insert(*tag, (key.clone(), Instant::now()));
        Ok(key)
    }

    /// The keys to seal new tasks of every subject in `tags`, created where
    /// missing: one store read and at most one store write for the lot.
    pub async fn for_seal_many(
        &self,
        tags: &[SubjectTag],
    ) -> Result<HashMap<SubjectTag, Arc<DataKey>>, Error> {
        self.refresh_if_due().await?;
        let mut out = HashMap::with_capacity(tags.len());
        let mut wanted: Vec<SubjectTag> = Vec::new();
        for tag in tags {
            if out.contains_key(tag) || wanted.contains(tag) {
                continue;
            }
            match self.cached(tag) {
                Some(k) => {
                    out.insert(*tag, k);
                }
                None => wanted.push(*tag),
            }
        }
        if wanted.is_empty() {
            return Ok(out);
        }
        let stored = self.store.get_many(&wanted).await?;
        let mut fresh = Vec::new();
        let mut found = Vec::new();
        for (tag, wrapped) in wanted.into_iter().zip(stored) {
            match wrapped {
                Some(w) => found.push((tag, w)),
                None => {
                    let key = DataKey::generate()?;
                    fresh.push((tag, self.wrap(&tag, &key)?));
                }
            }
        }
        if !fresh.is_empty() {
            let tags: Vec<SubjectTag> = fresh.iter().map(|(t, _)| *t).collect();
            // The store keeps the first key written per subject: use what it returns.
            let kept = self.store.put_many_if_absent(fresh).await?;
            found.extend(tags.into_iter().zip(kept));
        }
        let now = Instant::now();
        let mut cache = self.cache();
        for (tag, wrapped) in found {
            let key = Arc::new(self.unwrap(&tag, &wrapped)?);
            cache.insert(tag, (key.clone(), now));
            out.insert(tag, key);
        }
        Ok(out)
    }

    /// The key to open tasks of `tag`; `None` once the subject was erased.
    pub async fn for_open(&self, tag: &SubjectTag) -> Result<Option<Arc<DataKey>>, Error> {
        self.refresh_if_due().await?;
        if let Some(k) = self.cached(tag) {
            return Ok(Some(k));
        }
        let Some(stored) = self.store.get(tag).await? else {
            return Ok(None);
        };
        let key = Arc::new(self.unwrap(tag, &stored)?);
        self.cache().insert(*tag, (key.clone(), Instant::now()));
        Ok(Some(key))
    }

    /// Destroy `tag`'s key and forget it locally.
    pub async fn destroy(&self, tag: &SubjectTag) -> Result<bool, Error> {
        self.cache().remove(tag);
        Ok(self.store.destroy(tag).await?)
    }

    /// Re-wrap every stored key that is not wrapped under the primary key's
    /// KEK (after `keys rotate`; format-1 keys too), or with `from`, only
    /// those wrapped under key `from`. Each is a compare-and-swap, so a key
    /// destroyed or replaced meanwhile is left alone. With `dry_run`, count
    /// only. The data keys themselves do not change: nothing sealed with
    /// them needs re-sealing.
    pub async fn rewrap_all(
        &self,
        from: Option<&str>,
        dry_run: bool,
    ) -> Result<RewrapReport, Error> {
        let mut report = RewrapReport {
            to_key: self.primary.clone(),
            ..RewrapReport::default()
        };
        let primary = WrappedUnder::Key(self.primary.clone());
        for (tag, wrapped) in self.store.list().await? {
            let under = WrappedUnder::of(&wrapped);
            if under.as_ref() == Some(&primary) {
                report.current += 1;
                continue;
            }
            let label = under
                .as_ref()
                .map_or_else(|| "unknown format".to_owned(), ToString::to_string);
            let selected = match (from, &under) {
                (None, _) => true,
                (Some(f), Some(WrappedUnder::Key(id))) => f == id,
                (Some(_), _) => false,
            };
            if !selected {
                *report.remaining.entry(label).or_default() += 1;
                continue;
            }
            let key = match self.unwrap(&tag, &wrapped) {
                Ok(k) => k,
                Err(e) => {
                    report.failed.push((tag.to_hex(), e.to_string()));
                    *report.remaining.entry(label).or_default() += 1;
                    continue;
                }
            };
            if dry_run {
                report.rewrapped += 1;
                continue;
            }
            let fresh = self.wrap(&tag, &key)?;
            if self.store.replace(&tag, &wrapped, fresh).await? {
                report.rewrapped += 1;
            } else {
                report.changed += 1;
            }
        }
        Ok(report)
    }

    /// How many stored keys each KEK wraps (malformed ones under `None`).
    pub async fn count_by_wrapping_key(
        &self,
    ) -> Result<std::collections::BTreeMap<Option<WrappedUnder>, u64>, Error> {
        let mut out = std::collections::BTreeMap::new();
        for (_, wrapped) in self.store.list().await? {
            *out.entry(WrappedUnder::of(&wrapped)).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Wrap `key` (format 2) under the primary key's KEK.
    fn wrap(&self, tag: &SubjectTag, key: &DataKey) -> Result<Vec<u8>, Error> {
        let id = self.primary.as_str();
        let kek = self.keks.get(id).ok_or_else(|| {
            Error::Keyring(format!("the keyring's primary key `{id}` is missing"))
        })?;
        let nonce = random_nonce()?;
        let ad = wrap_ad(tag, Some(id));
        let mut out = Vec::with_capacity(WRAPPED_V2_FIXED + id.len());
        out.push(2);
        // Invariant: key ids are at most 64 bytes (Keyring validates them).
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        let at = out.len();
        out.extend_from_slice(key.secret.as_ref());
        let t = kek
            .encrypt_inout_detached(<&XNonce>::from(&nonce), &ad, (&mut out[at..]).into())
            .map_err(|_| Error::Keyring("wrapping a subject key failed".into()))?;
        out.extend_from_slice(&t);
        Ok(out)
    }

    /// Unwrap a stored key of either format.
    fn unwrap(&self, tag: &SubjectTag, wrapped: &[u8]) -> Result<DataKey, Error> {
        let bad = || Error::Integrity(IntegrityError::Tampered);
        let (kek, ad, body) = match WrappedUnder::of(wrapped).ok_or_else(bad)? {
            WrappedUnder::TagKey => (&self.legacy, wrap_ad(tag, None), &wrapped[1..]),
            WrappedUnder::Key(id) => {
                let kek = self.keks.get(&id).ok_or_else(|| {
                    Error::Keyring(format!(
                        "a subject key is wrapped under key `{id}`, which this keyring does not hold"
                    ))
                })?;
                (kek, wrap_ad(tag, Some(&id)), &wrapped[2 + id.len()..])
            }
        };
        // body: nonce (24), key (32), tag (16).
        let nonce: [u8; 24] = body[..24].try_into().map_err(|_| bad())?;
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&body[24..56]);
        let t = <&Tag>::try_from(&body[56..]).map_err(|_| bad())?;
        kek.decrypt_inout_detached(
            <&XNonce>::from(&nonce),
            &ad,
            secret.as_mut_slice().into(),
            t,
        )
        .map_err(|_| bad())?;
        Ok(DataKey::from_secret(secret))
    }
}

/// Counts of one subject's tasks removed by an erasure, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureCounts {
    /// Scheduled tasks deleted.
    pub scheduled: u64,
    /// Pending tasks deleted.
    pub pending: u64,
    /// Active tasks: archived with reason `erased`, their envelope wiped, lease revoked.
    pub active: u64,
    /// Tasks waiting to retry, deleted.
    pub retry: u64,
    /// Completed tasks (with their results) deleted.
    pub completed: u64,
    /// Archived tasks deleted.
    pub archived: u64,
}

impl ErasureCounts {
    /// All tasks touched.
    pub fn total(&self) -> u64 {
        self.scheduled + self.pending + self.active + self.retry + self.completed + self.archived
    }
}

/// What an erasure did; names no personal data (the subject appears only
/// as its keyed tag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureReceipt {
    /// Keyed hash of the subject id (hex).
    pub subject_tag: String,
    /// Tasks removed, by state.
    pub counts: ErasureCounts,
    /// Whether a data key existed and was destroyed.
    pub key_destroyed: bool,
    /// When, Unix ms.
    pub time_ms: i64,
    /// Who asked for it.
    pub operator: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Mem {
        keys: Mutex<HashMap<SubjectTag, Vec<u8>>>,
        epoch: AtomicU64,
    }

    #[async_trait]
    impl SubjectKeyStore for Mem {
        async fn get(&self, tag: &SubjectTag) -> BrokerResult<Option<Vec<u8>>> {
            Ok(self.keys.lock().unwrap().get(tag).cloned())
        }
        async fn put_if_absent(&self, tag: &SubjectTag, wrapped: Vec<u8>) -> BrokerResult<Vec<u8>> {
            Ok(self
                .keys
                .lock()
                .unwrap()
                .entry(*tag)
                .or_insert(wrapped)
                .clone())
        }
        async fn destroy(&self, tag: &SubjectTag) -> BrokerResult<bool> {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            Ok(self.keys.lock().unwrap().remove(tag).is_some())
        }
        async fn epoch(&self) -> BrokerResult<u64> {
            Ok(self.epoch.load(Ordering::SeqCst))
        }
        async fn list(&self) -> BrokerResult<Vec<(SubjectTag, Vec<u8>)>> {
            let keys = self.keys.lock().unwrap();
            Ok(keys.iter().map(|(t, w)| (*t, w.clone())).collect())
        }
        async fn replace(&self, tag: &SubjectTag, old: &[u8], new: Vec<u8>) -> BrokerResult<bool> {
            let mut keys = self.keys.lock().unwrap();
            match keys.get_mut(tag) {
                Some(w) if w.as_slice() == old => {
                    *w = new;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    /// A format-1 wrapped key (what earlier versions stored), for `key`.
    fn wrap_v1(keyring: &Keyring, tag: &SubjectTag, key: &DataKey) -> Vec<u8> {
        let kek = keyring.derive_subkey(KEK_LABEL);
        let kek = XChaCha20Poly1305::new(<&Key>::from(&*kek));
        let nonce = random_nonce().unwrap();
        let mut out = vec![1];
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key.secret.as_ref());
        let t = kek
            .encrypt_inout_detached(
                <&XNonce>::from(&nonce),
                &wrap_ad(tag, None),
                (&mut out[25..]).into(),
            )
            .unwrap();
        out.extend_from_slice(&t);
        out
    }

    #[tokio::test]
    async fn the_kek_rotates_with_the_keyring_and_rewrap_moves_every_key() {
        let mut keyring = Keyring::generate();
        let first = keyring.primary_key_id().to_owned();
        let store = Arc::new(Mem::default());
        let before = SubjectKeys::new(store.clone(), &keyring);
        let (t1, t2, t3) = (
            keyring.subject_tag("a"),
            keyring.subject_tag("b"),
            keyring.subject_tag("c"),
        );
        let (ad1, ad3) = (aad(t1), aad(t3));
        let sealed1 = before
            .for_seal(&t1)
            .await
            .unwrap()
            .seal(&ad1, b"one")
            .unwrap();
        let w1 = store.get(&t1).await.unwrap().unwrap();
        assert_eq!(
            WrappedUnder::of(&w1),
            Some(WrappedUnder::Key(first.clone()))
        );
        // A key stored by an earlier version (format 1) still opens.
        let legacy = DataKey::generate().unwrap();
        let sealed3 = legacy.seal(&ad3, b"three").unwrap();
        store
            .put_if_absent(&t3, wrap_v1(&keyring, &t3, &legacy))
            .await
            .unwrap();

        let second = keyring.rotate();
        let after = SubjectKeys::new(store.clone(), &keyring);
        after.for_seal(&t2).await.unwrap();
        let w2 = store.get(&t2).await.unwrap().unwrap();
        assert_eq!(
            WrappedUnder::of(&w2),
            Some(WrappedUnder::Key(second.clone()))
        );
        let counts = after.count_by_wrapping_key().await.unwrap();
        assert_eq!(counts[&Some(WrappedUnder::Key(first.clone()))], 1);
        assert_eq!(counts[&Some(WrappedUnder::Key(second.clone()))], 1);
        assert_eq!(counts[&Some(WrappedUnder::TagKey)], 1);

        let dry = after.rewrap_all(None, true).await.unwrap();
        assert_eq!((dry.rewrapped, dry.current, dry.changed), (2, 1, 0));
        assert_eq!(
            store.get(&t1).await.unwrap().unwrap(),
            w1,
            "a dry run changes nothing"
        );
        let only_first = after.rewrap_all(Some("no-such-key"), true).await.unwrap();
        assert_eq!(only_first.rewrapped, 0);
        assert_eq!(only_first.remaining.values().sum::<u64>(), 2);
        let report = after.rewrap_all(None, false).await.unwrap();
        assert_eq!(report.to_key, second);
        assert_eq!(
            (report.rewrapped, report.current, report.changed),
            (2, 1, 0)
        );
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let counts = after.count_by_wrapping_key().await.unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[&Some(WrappedUnder::Key(second.clone()))], 3);

        // The first key can go now: every data key still opens what it sealed.
        keyring.remove_key(&first).unwrap();
        let fresh = SubjectKeys::new(store.clone(), &keyring);
        let k1 = fresh.for_open(&t1).await.unwrap().unwrap();
        assert_eq!(&k1.open(&ad1, &sealed1).unwrap()[..], b"one");
        let k3 = fresh.for_open(&t3).await.unwrap().unwrap();
        assert_eq!(&k3.open(&ad3, &sealed3).unwrap()[..], b"three");
        // Without rewrapping, a removed key's wrapped keys would not open: say so.
        let mut other = Keyring::generate();
        let old = other.primary_key_id().to_owned();
        let s2 = Arc::new(Mem::default());
        SubjectKeys::new(s2.clone(), &other)
            .for_seal(&t1)
            .await
            .unwrap();
        other.rotate();
        other.remove_key(&old).unwrap();
        let err = SubjectKeys::new(s2, &other)
            .for_open(&t1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&old), "{err}");
    }

    #[tokio::test]
    async fn rewrap_never_resurrects_or_overwrites_a_key_that_changed() {
        let mut keyring = Keyring::generate();
        let store = Arc::new(Mem::default());
        let t = keyring.subject_tag("a");
        SubjectKeys::new(store.clone(), &keyring)
            .for_seal(&t)
            .await
            .unwrap();
        let old = store.get(&t).await.unwrap().unwrap();
        keyring.rotate();
        let keys = SubjectKeys::new(store.clone(), &keyring);
        // Erased, then a new key for the subject: the old bytes are not it.
        store.destroy(&t).await.unwrap();
        let newer = keys.for_seal(&t).await.unwrap();
        let stored = store.get(&t).await.unwrap().unwrap();
        assert!(!store.replace(&t, &old, b"x".to_vec()).await.unwrap());
        assert_eq!(store.get(&t).await.unwrap().unwrap(), stored);
        // And a destroyed key stays destroyed.
        store.destroy(&t).await.unwrap();
        assert!(!store.replace(&t, &stored, b"x".to_vec()).await.unwrap());
        assert!(store.get(&t).await.unwrap().is_none());
        drop(newer);
    }

    fn aad(tag: SubjectTag) -> Aad<'static> {
        Aad {
            purpose: crate::envelope::Purpose::Payload,
            task_id: crate::TaskId::new(),
            queue: "q",
            kind: "k",
            producer: "p",
            created_at_ms: 1,
            not_after_ms: None,
            subject_tag: Some(tag),
        }
    }

    #[tokio::test]
    async fn keys_are_per_subject_shared_and_shredded() {
        let keyring = Keyring::generate();
        let store: Arc<dyn SubjectKeyStore> = Arc::new(Mem::default());
        let a = SubjectKeys::new(store.clone(), &keyring);
        let b = SubjectKeys::new(store.clone(), &keyring);
        let t42 = keyring.subject_tag("user-42");
        let t7 = keyring.subject_tag("user-7");
        let ad = aad(t42);
        let sealed = a.for_seal(&t42).await.unwrap().seal(&ad, b"hello").unwrap();
        assert!(is_subject_sealed(&sealed));
        // Another process opens it with the stored key.
        let opened = b
            .for_open(&t42)
            .await
            .unwrap()
            .unwrap()
            .open(&ad, &sealed)
            .unwrap();
        assert_eq!(&opened[..], b"hello");
        // Another subject's key does not open it.
        let other = a.for_seal(&t7).await.unwrap();
        assert!(other.open(&ad, &sealed).is_err());
        // The keyring's own keys do not open it either.
        assert!(keyring.open(&ad, &sealed).is_err());

        assert!(a.destroy(&t42).await.unwrap());
        b.refresh().await.unwrap();
        assert!(
            b.for_open(&t42).await.unwrap().is_none(),
            "erased key still served"
        );
        // A later enqueue for the subject gets a new key, which cannot open old data.
        let fresh = a.for_seal(&t42).await.unwrap();
        assert!(fresh.open(&ad, &sealed).is_err());
        // Subject 7 is untouched.
        assert!(b.for_open(&t7).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn batch_fetch_creates_one_key_per_subject_and_agrees_with_single_fetch() {
        let keyring = Keyring::generate();
        let store: Arc<dyn SubjectKeyStore> = Arc::new(Mem::default());
        let a = SubjectKeys::new(store.clone(), &keyring);
        let (t1, t2) = (keyring.subject_tag("a"), keyring.subject_tag("b"));
        // An existing key for t2 must be reused, not replaced.
        let k2 = a.for_seal(&t2).await.unwrap();
        let b = SubjectKeys::new(store.clone(), &keyring);
        let keys = b.for_seal_many(&[t1, t2, t1]).await.unwrap();
        assert_eq!(keys.len(), 2);
        let ad = aad(t2);
        let sealed = k2.seal(&ad, b"x").unwrap();
        assert_eq!(&keys[&t2].open(&ad, &sealed).unwrap()[..], b"x");
        let ad1 = aad(t1);
        let sealed1 = keys[&t1].seal(&ad1, b"y").unwrap();
        let fresh = SubjectKeys::new(store, &keyring);
        let k1 = fresh.for_open(&t1).await.unwrap().expect("stored");
        assert_eq!(&k1.open(&ad1, &sealed1).unwrap()[..], b"y");
    }

    #[tokio::test]
    async fn a_wrapped_key_is_bound_to_its_subject_and_keyring() {
        let keyring = Keyring::generate();
        let store = Arc::new(Mem::default());
        let keys = SubjectKeys::new(store.clone(), &keyring);
        let t1 = keyring.subject_tag("a");
        let t2 = keyring.subject_tag("b");
        keys.for_seal(&t1).await.unwrap();
        let wrapped = store.get(&t1).await.unwrap().unwrap();
        // Moved to another subject: refused.
        store.keys.lock().unwrap().insert(t2, wrapped.clone());
        let fresh = SubjectKeys::new(store.clone(), &keyring);
        assert!(fresh.for_open(&t2).await.is_err());
        // Another keyring cannot unwrap it.
        let stranger = SubjectKeys::new(store.clone(), &Keyring::generate());
        assert!(stranger.for_open(&t1).await.is_err());
    }
}
