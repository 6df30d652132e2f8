//! Key-encryption-key (KEK) epochs: the keyring's secrets that wrap subject
//! data keys, kept apart from the sealing keys so that they can be rotated
//! and dropped without re-sealing a single task.
//!
//! Erasing a subject destroys its wrapped data key in the subject key store.
//! A copy of that store taken earlier (a backup, a replica, a snapshot)
//! still holds the wrapped key; as long as the keyring can derive the KEK
//! that wrapped it, restoring the copy undoes the erasure. Finalising
//! erasures (`sealq erase --finalize`, [`Keyring::add_kek_epoch`] then
//! `SubjectKeys::rewrap_all` then [`Keyring::retire_kek_epochs`]) adds a new
//! epoch, re-wraps every stored key under it and drops every older epoch
//! from the keyring: from then on, no copy of the key store taken before the
//! finalisation opens anything with the current keyring.
//!
//! # Keyring TOML
//!
//! ```toml
//! [kek]
//! current = "kek-20261206-ab12"   # the epoch that wraps new keys
//! open_legacy = true              # optional: also open formats 1 and 2
//!
//! [kek.epochs.kek-20261206-ab12]
//! secret = "<base64 32 bytes>"
//! created = "2026-12-06T23:00:00Z"   # optional, RFC 3339
//! ```
//!
//! - A keyring without a `[kek]` table keeps the behaviour of earlier
//!   versions: subject keys are wrapped under KEKs derived from the sealing
//!   keys (wrapped-key format 2) and the `subject_tag_key` (format 1, open
//!   only).
//! - With a `[kek]` table, new keys are wrapped under the `current` epoch
//!   (format 3) and formats 1 and 2 open only while `open_legacy = true`
//!   (set by the first finalisation until the stored keys are re-wrapped;
//!   absent means `false`). Epoch ids follow the key id rules.
//! - The KEK of an epoch is `HKDF-SHA-256(salt = "sealq-subkey-v1", ikm =
//!   secret, info = "sealq-subject-kek-v3")`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::seal::envelope::is_valid_key_id;
use crate::seal::keyring::{KEY_LEN, Keyring};

/// HKDF info of a format-3 KEK, derived from an epoch secret.
const KEK_V3_LABEL: &str = "sealq-subject-kek-v3";
/// HKDF salt (the keyring's subkey salt).
const SALT: &[u8] = b"sealq-subkey-v1";

/// One KEK epoch: its secret and when it was made.
struct Epoch {
    secret: Zeroizing<[u8; KEY_LEN]>,
    created: Option<jiff::Timestamp>,
}

/// The keyring's KEK epochs (its `[kek]` table). `Debug` shows ids only.
pub(crate) struct KekEpochs {
    current: String,
    open_legacy: bool,
    epochs: BTreeMap<String, Epoch>,
}

impl std::fmt::Debug for KekEpochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KekEpochs")
            .field("current", &self.current)
            .field("open_legacy", &self.open_legacy)
            .field("epochs", &self.epochs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KekEpochs {
    /// One fresh random epoch, current; legacy formats open only if asked.
    pub(crate) fn fresh(open_legacy: bool, taken: impl Fn(&str) -> bool) -> Self {
        let now = now_seconds();
        let id = new_epoch_id(now, &taken);
        let mut epochs = BTreeMap::new();
        epochs.insert(id.clone(), Epoch::random(now));
        KekEpochs {
            current: id,
            open_legacy,
            epochs,
        }
    }

    /// The id of the epoch that wraps new keys.
    pub(crate) fn current(&self) -> &str {
        &self.current
    }

    /// Whether wrapped-key formats 1 and 2 (KEKs derived from the
    /// `subject_tag_key` and the sealing keys) still open.
    pub(crate) fn opens_legacy(&self) -> bool {
        self.open_legacy
    }

    /// Every epoch id, sorted.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &str> {
        self.epochs.keys().map(String::as_str)
    }

    /// The KEK of epoch `id`, if held.
    pub(crate) fn kek(&self, id: &str) -> Option<Zeroizing<[u8; 32]>> {
        let e = self.epochs.get(id)?;
        let hk = hkdf::Hkdf::<Sha256>::new(Some(SALT), &e.secret[..]);
        let mut okm = Zeroizing::new([0u8; 32]);
        hk.expand(KEK_V3_LABEL.as_bytes(), &mut okm[..])
            // Invariant: 32 bytes is far below HKDF-SHA-256's limit.
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        Some(okm)
    }

    /// Add a new random epoch and make it current; returns its id.
    fn add(&mut self) -> String {
        let now = now_seconds();
        let id = new_epoch_id(now, |id| self.epochs.contains_key(id));
        self.epochs.insert(id.clone(), Epoch::random(now));
        self.current.clone_from(&id);
        id
    }

    /// Drop every epoch but the current one and close the legacy formats;
    /// returns the dropped ids.
    fn retire(&mut self) -> Vec<String> {
        let current = self.current.clone();
        let gone: Vec<String> = self
            .epochs
            .keys()
            .filter(|id| **id != current)
            .cloned()
            .collect();
        self.epochs.retain(|id, _| *id == current);
        self.open_legacy = false;
        gone
    }

    /// Upper bound of [`KekEpochs::write_toml`]'s output, bytes.
    pub(crate) fn toml_len_hint(&self) -> usize {
        512 + self.epochs.len() * 256
    }

    /// Append the `[kek]` table to `out` (secrets included).
    pub(crate) fn write_toml(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "\n[kek]");
        let _ = writeln!(
            out,
            "current = \"{}\"   # KEK epoch wrapping subject keys; finalise erasures with `sealq erase --finalize`",
            self.current
        );
        if self.open_legacy {
            let _ = writeln!(out, "open_legacy = true");
        }
        for (id, e) in &self.epochs {
            out.push('\n');
            if id.contains('.') {
                let _ = writeln!(out, "[kek.epochs.\"{id}\"]");
            } else {
                let _ = writeln!(out, "[kek.epochs.{id}]");
            }
            let mut b64 = Zeroizing::new(String::with_capacity(44));
            BASE64.encode_string(&e.secret[..], &mut b64);
            let _ = writeln!(out, "secret = \"{}\"", b64.as_str());
            if let Some(c) = e.created {
                let _ = writeln!(out, "created = \"{c}\"");
            }
        }
    }

    /// From the parsed `[kek]` table; errors name the field.
    pub(crate) fn from_toml(raw: KekToml) -> Result<Self, Error> {
        let bad = |m: String| Error::Keyring(format!("[kek]: {m}"));
        let current = raw.current.ok_or_else(|| {
            bad("`current` is missing: name the epoch that wraps new subject keys".into())
        })?;
        let mut epochs = BTreeMap::new();
        for (id, e) in raw.epochs {
            if !is_valid_key_id(&id) {
                return Err(bad(format!(
                    "invalid epoch id {id:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
                )));
            }
            let secret = e.secret.ok_or_else(|| {
                bad(format!(
                    "epoch `{id}`: `secret` is missing (32 bytes, base64)"
                ))
            })?;
            let secret = decode(&secret.0, &id)?;
            let created = match e.created {
                None => None,
                Some(v) => {
                    let text = match &v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Datetime(d) => d.to_string(),
                        _ => String::new(),
                    };
                    Some(text.parse::<jiff::Timestamp>().map_err(|_| {
                        bad(format!(
                            "epoch `{id}`: `created` must be an RFC 3339 timestamp"
                        ))
                    })?)
                }
            };
            epochs.insert(id, Epoch { secret, created });
        }
        if !epochs.contains_key(&current) {
            return Err(bad(format!(
                "the current epoch {current:?} is not among [kek.epochs.*]"
            )));
        }
        Ok(KekEpochs {
            current,
            open_legacy: raw.open_legacy.unwrap_or(false),
            epochs,
        })
    }
}

/// The `[kek]` table as parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KekToml {
    current: Option<String>,
    open_legacy: Option<bool>,
    #[serde(default)]
    epochs: BTreeMap<String, EpochToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochToml {
    secret: Option<SecretText>,
    created: Option<toml::Value>,
}

/// A secret string from TOML, wiped on drop.
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

impl Epoch {
    fn random(now: jiff::Timestamp) -> Self {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        // Invariant: without a working OS RNG no key can be made safely.
        getrandom::fill(&mut secret[..])
            .expect("the operating system's random number generator failed");
        Epoch {
            secret,
            created: Some(now),
        }
    }
}

fn decode(b64: &str, id: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
    let bytes = Zeroizing::new(BASE64.decode(b64.trim().as_bytes()).map_err(|_| {
        Error::Keyring(format!(
            "[kek]: epoch `{id}`: not valid base64 (standard alphabet with `=` padding)"
        ))
    })?);
    if bytes.len() != KEY_LEN {
        return Err(Error::Keyring(format!(
            "[kek]: epoch `{id}`: must be {KEY_LEN} bytes, got {}",
            bytes.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// A fresh `kek-YYYYMMDD-xxxx` id not rejected by `taken`.
fn new_epoch_id(now: jiff::Timestamp, taken: impl Fn(&str) -> bool) -> String {
    let date = now.strftime("%Y%m%d");
    loop {
        let mut r = [0u8; 2];
        // Invariant: as in `Epoch::random`.
        getrandom::fill(&mut r).expect("the operating system's random number generator failed");
        let id = format!("kek-{date}-{}", hex::encode(r));
        if !taken(&id) {
            return id;
        }
    }
}

fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

impl Keyring {
    /// The id of the KEK epoch that wraps new subject keys, or `None` for
    /// a keyring without a `[kek]` table (keys are then wrapped under KEKs
    /// derived from the sealing keys, as in earlier versions).
    pub fn kek_epoch(&self) -> Option<&str> {
        self.kek_epochs().map(KekEpochs::current)
    }

    /// Every KEK epoch id the keyring holds, sorted (empty without `[kek]`).
    pub fn kek_epoch_ids(&self) -> Vec<String> {
        self.kek_epochs()
            .map(|k| k.ids().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Whether subject keys wrapped under the legacy KEKs (formats 1 and 2,
    /// derived from the `subject_tag_key` and the sealing keys) open: always
    /// without a `[kek]` table, else while its `open_legacy` is set.
    pub fn kek_opens_legacy(&self) -> bool {
        self.kek_epochs().is_none_or(KekEpochs::opens_legacy)
    }

    /// First step of finalising erasures: add a new random KEK epoch and
    /// make it the one that wraps subject keys; returns its id. Earlier
    /// epochs (and, for a keyring that had no `[kek]` table, the legacy
    /// formats 1 and 2) still open until [`Keyring::retire_kek_epochs`].
    /// Write the keyring file before wrapping anything under the new epoch:
    /// a key wrapped under an epoch whose secret was lost never opens.
    pub fn add_kek_epoch(&mut self) -> String {
        match self.kek_epochs_mut() {
            Some(k) => k.add(),
            None => {
                let fresh = KekEpochs::fresh(true, |_| false);
                let id = fresh.current().to_owned();
                self.set_kek_epochs(fresh);
                id
            }
        }
    }

    /// Last step of finalising erasures, once every stored subject key is
    /// re-wrapped under the current epoch: drop every other epoch and stop
    /// opening the legacy formats 1 and 2. Returns the dropped epoch ids.
    /// Without a `[kek]` table there is nothing to drop (an error: call
    /// [`Keyring::add_kek_epoch`] first).
    pub fn retire_kek_epochs(&mut self) -> Result<Vec<String>, Error> {
        match self.kek_epochs_mut() {
            Some(k) => Ok(k.retire()),
            None => Err(Error::Keyring(
                "the keyring has no [kek] table: add a KEK epoch first".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_round_trip_through_toml_and_retire_drops_the_old() {
        let mut k = Keyring::generate();
        assert_eq!(k.kek_epoch(), None);
        let first = k.add_kek_epoch();
        assert_eq!(k.retire_kek_epochs().unwrap(), Vec::<String>::new());
        let second = k.add_kek_epoch();
        assert_ne!(first, second);
        assert_eq!(k.kek_epoch(), Some(second.as_str()));
        let text = k.to_toml_secret();
        let back = Keyring::from_toml(&text).unwrap();
        assert_eq!(back.kek_epoch_ids(), k.kek_epoch_ids());
        assert_eq!(
            back.kek_epochs().unwrap().kek(&first).unwrap()[..],
            k.kek_epochs().unwrap().kek(&first).unwrap()[..]
        );
        let mut back = back;
        assert_eq!(back.retire_kek_epochs().unwrap(), vec![first.clone()]);
        assert_eq!(back.kek_epoch_ids(), vec![second.clone()]);
        let again = Keyring::from_toml(&back.to_toml_secret()).unwrap();
        assert!(again.kek_epochs().unwrap().kek(&first).is_none());
        assert!(!again.kek_epochs().unwrap().opens_legacy());
    }

    #[test]
    fn a_keyring_without_kek_gets_one_that_opens_legacy_until_retired() {
        let mut legacy = Keyring::generate();
        assert_eq!(legacy.kek_epoch(), None);
        assert!(legacy.retire_kek_epochs().is_err());
        let id = legacy.add_kek_epoch();
        assert!(legacy.kek_epochs().unwrap().opens_legacy());
        let parsed = Keyring::from_toml(&legacy.to_toml_secret()).unwrap();
        assert!(parsed.kek_epochs().unwrap().opens_legacy());
        assert_eq!(legacy.retire_kek_epochs().unwrap(), Vec::<String>::new());
        assert!(!legacy.kek_epochs().unwrap().opens_legacy());
        assert_eq!(legacy.kek_epoch(), Some(id.as_str()));
    }

    #[test]
    fn bad_kek_tables_are_refused_naming_the_field_without_the_secret() {
        let text = Keyring::generate().to_toml_secret();
        let base = text.as_str();
        let e = Keyring::from_toml(&format!("{base}\n[kek]\ncurrent = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("current epoch"), "{e}");
        let e = Keyring::from_toml(&format!(
            "{base}\n[kek]\ncurrent = \"x\"\n[kek.epochs.x]\nsecret = \"c2VjcmV0\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("epoch `x`") && !e.contains("c2VjcmV0"), "{e}");
        let e = Keyring::from_toml(&format!("{base}\n[kek]\ncurrent = \"x\"\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
