//! The keyring: named sealing keys, one primary. Loaded from a TOML file or
//! environment variable, never from the broker.
//!
//! # Keyring TOML
//!
//! ```toml
//! # sealq keyring — keep secret
//! primary = "k-20261123-ab12"
//! subject_tag_key = "<base64 32 bytes>"   # HMAC key for subject tags; must stay stable across rotations
//! audit_signing_key = "<base64 32 bytes>" # optional: Ed25519 seed signing audit checkpoints
//!
//! [keys.k-20261123-ab12]
//! secret = "<base64 32 bytes>"
//! created = "2026-11-23T18:00:00Z"         # optional, RFC 3339
//!
//! [keys.old-key]
//! secret = "..."
//! ```
//!
//! - `primary` (required): the id of the key every new envelope is sealed
//!   with. It must be one of the `[keys.*]` tables.
//! - `subject_tag_key` (required): 32 bytes, standard base64 with padding. The
//!   HMAC key of [`Keyring::subject_tag`] and the master of
//!   [`Keyring::derive_stable_key`]. It is *not* rotated with the sealing keys:
//!   changing it makes every stored subject tag unfindable.
//! - `audit_signing_key` (optional): the 32-byte Ed25519 seed that signs
//!   audit checkpoints (see [`crate::audit`]), standard base64 with padding.
//!   [`Keyring::generate`] makes one; keyrings written before it existed still
//!   load, but an [`crate::audit::Auditor`] refuses to start without it.
//!   Verifying checkpoints needs only its public half,
//!   [`Keyring::audit_verifying_key`].
//! - `[keys.<id>]` (at least one): `secret` is 32 bytes in standard base64
//!   with padding; `created` is an optional RFC 3339 timestamp (string or TOML
//!   datetime). Key ids are 1 to 64 characters from `A-Z a-z 0-9 . _ -` (quote
//!   ids containing `.` in TOML: `[keys."k.1"]`).
//! - `[kek]` (optional): the key-encryption-key epochs that wrap subject
//!   data keys, rotated to finalise erasures; format in [`crate::seal::kek`].
//!   The first `sealq erase --finalize` adds it; keyrings without it work as
//!   before.
//! - Unknown fields are errors, so a misspelt `primary` is not silently ignored.
//!
//! Every key other than the primary is open-only: it opens envelopes that name
//! it, and never seals. Rotation ([`Keyring::rotate`]) adds a new random key and
//! makes it primary; the old key stays to open what it sealed. Retire a key
//! ([`Keyring::remove_key`]) only once no stored envelope names it.
//!
//! Error messages name the field or key id that is wrong; they never contain
//! a secret value.
//!
//! `role` (optional): `"full"` (the default, everything above) or
//! `"operator"`, a keyring with the audit keys only, which opens nothing
//! (format and rules in [`role`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, IntegrityError};
use crate::model::id::SubjectTag;
use crate::model::trace_parent::TraceParent;
use crate::seal::aead::XChaCha;
use crate::seal::envelope::{
    self, Aad, Algorithm, NONCE_LEN, TAG_LEN, is_valid_key_id, parse_header, write_header,
};
use crate::seal::kek::{KekEpochs, KekToml};
use crate::seal::trace_frame;

mod check_value;
pub mod role;

pub use check_value::KEY_CHECK_LABEL;
pub use role::KeyringRole;

/// Length of every secret in the keyring (sealing keys, subject tag key).
pub const KEY_LEN: usize = 32;

/// Environment variable naming the keyring file.
pub const ENV_KEYRING_PATH: &str = "SEALQ_KEYRING";

/// Environment variable holding the keyring TOML itself.
pub const ENV_KEYRING_TOML: &str = "SEALQ_KEYRING_TOML";

/// Domain prefix of the subject tag HMAC input.
const SUBJECT_DOMAIN: &[u8] = b"sealq-subject-v1";

/// HKDF salt of [`Keyring::derive_stable_key`] and
/// `Keyring::derive_from_sealing_key`.
const SUBKEY_SALT: &[u8] = b"sealq-subkey-v1";

/// One sealing key: the secret (kept for export) and its precomputed cipher.
struct KeyEntry {
    secret: Zeroizing<[u8; KEY_LEN]>,
    cipher: XChaCha,
    created: Option<jiff::Timestamp>,
}

impl KeyEntry {
    fn new(secret: Zeroizing<[u8; KEY_LEN]>, created: Option<jiff::Timestamp>) -> Self {
        let cipher = XChaCha::new(&secret);
        KeyEntry {
            secret,
            cipher,
            created,
        }
    }

    fn random(created: Option<jiff::Timestamp>) -> Self {
        Self::new(random_key(), created)
    }
}

/// Named keys; seals with the primary, opens with the key an envelope names.
///
/// Loaded with [`Keyring::from_file`], [`Keyring::from_env`] or
/// [`Keyring::from_toml`] (format in the [module docs](self)), or created with
/// [`Keyring::generate`]. Secrets are wiped from memory when the keyring is
/// dropped, and `Debug` prints key ids only.
pub struct Keyring {
    primary: String,
    keys: BTreeMap<String, KeyEntry>,
    subject_tag_key: Zeroizing<[u8; KEY_LEN]>,
    /// Ed25519 seed signing audit checkpoints (optional for older keyrings).
    audit_signing_key: Option<Zeroizing<[u8; KEY_LEN]>>,
    /// `Some` in an operator keyring ([`role`]): no sealing keys, and
    /// `subject_tag_key` is a random stand-in.
    operator: Option<role::OperatorPart>,
    /// KEK epochs wrapping subject keys (`[kek]`, see `crate::seal::kek`).
    kek: Option<KekEpochs>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("role", &self.role())
            .field("primary", &self.primary)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A fresh keyring with one random primary key (id `k-YYYYMMDD-xxxx`, UTC
    /// date and 4 random hex digits) and a random subject tag key.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails, which leaves
    /// no safe way to make a key.
    pub fn generate() -> Self {
        let now = now_seconds();
        let id = new_key_id(now, |_| false);
        let mut keys = BTreeMap::new();
        keys.insert(id.clone(), KeyEntry::random(Some(now)));
        Keyring {
            primary: id,
            keys,
            subject_tag_key: random_key(),
            audit_signing_key: Some(random_key()),
            operator: None,
            // Added by the first `sealq erase --finalize` (`add_kek_epoch`).
            kek: None,
        }
    }

    /// Parse keyring TOML (format in the [module docs](self)).
    ///
    /// Errors are [`Error::Keyring`] naming what is wrong; secrets are never
    /// echoed.
    pub fn from_toml(s: &str) -> Result<Self, Error> {
        let raw: KeyringToml = toml::from_str(s).map_err(|e| toml_error(s, &e))?;
        Self::from_raw(raw)
    }

    /// Load from a TOML file. Errors name the path.
    ///
    /// On Unix the file must not be readable or writable by group or others
    /// (mode 0600 or 0400, as `ssh` requires of a private key): a keyring
    /// others can read has leaked every key, and one others can write can
    /// be swapped for theirs. Such a file is refused with
    /// [`Error::Keyring`] saying to `chmod 600` it; nothing is read from it.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let cannot_read = |e: std::io::Error| {
            Error::Keyring(format!("cannot read keyring file {}: {e}", path.display()))
        };
        let mut file = std::fs::File::open(path).map_err(cannot_read)?;
        // The mode of the file opened, not of the path (which could be
        // swapped between a check and the read).
        let meta = file.metadata().map_err(cannot_read)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::Keyring(format!(
                    "keyring file {p} is accessible by group or others (mode {:04o}); it holds \
                     every sealing key, so it must be readable by its owner only: run \
                     `chmod 600 {p}`",
                    mode & 0o7777,
                    p = path.display()
                )));
            }
        }
        // Sized up front so the buffer holding secrets does not reallocate
        // (which would leave an unwiped copy behind).
        let size = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut text = Zeroizing::new(String::with_capacity(size));
        std::io::Read::read_to_string(&mut file, &mut text).map_err(cannot_read)?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Keyring(msg) => Error::Keyring(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Load from `SEALQ_KEYRING` (a path) or, if unset or empty,
    /// `SEALQ_KEYRING_TOML` (the TOML itself); neither gives
    /// [`Error::NoKeyring`].
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(|name| std::env::var_os(name))
    }

    /// [`Keyring::from_env`] reading variables through `var` instead of the
    /// process environment (for layered configuration and tests).
    pub fn from_env_with(var: impl Fn(&str) -> Option<OsString>) -> Result<Self, Error> {
        if let Some(path) = var(ENV_KEYRING_PATH).filter(|p| !p.is_empty()) {
            return Self::from_file(Path::new(&path));
        }
        if let Some(text) = var(ENV_KEYRING_TOML).filter(|t| !t.is_empty()) {
            let text =
                Zeroizing::new(text.into_string().map_err(|_| {
                    Error::Keyring(format!("{ENV_KEYRING_TOML} is not valid UTF-8"))
                })?);
            return Self::from_toml(&text)
                .map_err(|e| prefix_keyring_error(e, &format!("{ENV_KEYRING_TOML}: ")));
        }
        Err(Error::NoKeyring)
    }

    /// Export as TOML including secrets (explicit act: `sealq keys generate`).
    ///
    /// The output parses back with [`Keyring::from_toml`] to an identical keyring.
    pub fn to_toml_secret(&self) -> Zeroizing<String> {
        if let Some(op) = &self.operator {
            return role::operator_toml(self, op);
        }
        // Reserve up front so the buffer never reallocates (a reallocation
        // would leave an unwiped copy of the secrets behind).
        let per_key = 32 + 2 * envelope::MAX_KEY_ID_LEN + 64 + 64;
        let kek_len = self.kek.as_ref().map_or(0, KekEpochs::toml_len_hint);
        let mut out = Zeroizing::new(String::with_capacity(
            256 + per_key * self.keys.len() + kek_len,
        ));
        let b64 = |k: &[u8; KEY_LEN]| {
            let mut s = Zeroizing::new(String::with_capacity(44));
            BASE64.encode_string(k, &mut s);
            s
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# sealq keyring — keep secret");
        let _ = writeln!(out, "primary = \"{}\"", self.primary);
        let _ = writeln!(
            out,
            "subject_tag_key = \"{}\"   # HMAC key for subject tags; must stay stable across rotations",
            b64(&self.subject_tag_key).as_str()
        );
        if let Some(k) = &self.audit_signing_key {
            let _ = writeln!(
                out,
                "audit_signing_key = \"{}\" # Ed25519 seed signing audit checkpoints",
                b64(k).as_str()
            );
        }
        for (id, entry) in &self.keys {
            out.push('\n');
            if id.contains('.') {
                let _ = writeln!(out, "[keys.\"{id}\"]");
            } else {
                let _ = writeln!(out, "[keys.{id}]");
            }
            let _ = writeln!(out, "secret = \"{}\"", b64(&entry.secret).as_str());
            if let Some(created) = entry.created {
                let _ = writeln!(out, "created = \"{created}\"");
            }
        }
        if let Some(kek) = &self.kek {
            kek.write_toml(&mut out);
        }
        out
    }

    /// The KEK epochs (`[kek]`), if the keyring has them.
    pub(crate) fn kek_epochs(&self) -> Option<&KekEpochs> {
        self.kek.as_ref()
    }

    /// [`Keyring::kek_epochs`], to change them.
    pub(crate) fn kek_epochs_mut(&mut self) -> Option<&mut KekEpochs> {
        self.kek.as_mut()
    }

    /// Give the keyring a `[kek]` table.
    pub(crate) fn set_kek_epochs(&mut self, kek: KekEpochs) {
        self.kek = Some(kek);
    }

    /// Id of the primary key.
    pub fn primary_key_id(&self) -> &str {
        &self.primary
    }

    /// Ids of all keys (primary and open-only), sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether the keyring holds a key with this id.
    pub fn contains_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Add a new random open-only key named `id`.
    ///
    /// Fails if `id` is not a valid key id or already exists. Make it the
    /// sealing key with [`Keyring::set_primary`].
    pub fn add_key(&mut self, id: &str) -> Result<(), Error> {
        self.require_sealing_keys("add a key")?;
        check_key_id(id)?;
        if self.keys.contains_key(id) {
            return Err(Error::Keyring(format!("key `{id}` already exists")));
        }
        self.keys
            .insert(id.to_owned(), KeyEntry::random(Some(now_seconds())));
        Ok(())
    }

    /// Make the existing key `id` the primary (sealing) key.
    pub fn set_primary(&mut self, id: &str) -> Result<(), Error> {
        if !self.keys.contains_key(id) {
            return Err(Error::Keyring(format!(
                "cannot make `{id}` primary: no such key"
            )));
        }
        self.primary = id.to_owned();
        Ok(())
    }

    /// Rotate: add a new random key with a fresh `k-YYYYMMDD-xxxx` id and make
    /// it primary. Returns the new id. Earlier keys stay, open-only, so what
    /// they sealed still opens. The subject tag key does not change.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn rotate(&mut self) -> String {
        let now = now_seconds();
        let id = new_key_id(now, |id| self.keys.contains_key(id));
        self.keys.insert(id.clone(), KeyEntry::random(Some(now)));
        self.primary.clone_from(&id);
        id
    }

    /// Remove an open-only key. Envelopes that name it no longer open
    /// ([`IntegrityError::UnknownKey`]). The primary cannot be removed.
    pub fn remove_key(&mut self, id: &str) -> Result<(), Error> {
        if id == self.primary {
            return Err(Error::Keyring(format!(
                "cannot remove `{id}`: it is the primary key; rotate first"
            )));
        }
        match self.keys.remove(id) {
            Some(_) => Ok(()),
            None => Err(Error::Keyring(format!("cannot remove `{id}`: no such key"))),
        }
    }

    /// Keyed hash of a subject id:
    /// `HMAC-SHA-256(subject_tag_key, "sealq-subject-v1" || subject)`.
    ///
    /// The broker stores the tag, never the subject id.
    pub fn subject_tag(&self, subject: &str) -> SubjectTag {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.subject_tag_key[..])
            // Invariant: HMAC accepts keys of any length.
            .expect("HMAC accepts any key length");
        mac.update(SUBJECT_DOMAIN);
        mac.update(subject.as_bytes());
        SubjectTag(mac.finalize().into_bytes().into())
    }

    /// A 32-byte key for another purpose (for example `"audit-mac-v1"`) that
    /// stays the same across rotations: derived with HKDF-SHA-256 from the
    /// keyring's non-rotating master secret, the `subject_tag_key`:
    /// `HKDF(salt = "sealq-subkey-v1", ikm = subject_tag_key, info = label)`.
    ///
    /// Derived keys are independent of the sealing keys (rotation does not
    /// change them, removing a key does not lose them) and of each other
    /// (distinct labels give unrelated keys). Never use a label for two
    /// purposes. For a key that rotates with the sealing keys, see
    /// `Keyring::derive_from_sealing_key` (crate-private).
    ///
    /// An operator keyring ([`role`]) holds only the audit MAC key's; for
    /// any other label it answers with a key that matches nothing stored.
    pub fn derive_stable_key(&self, label: &str) -> Zeroizing<[u8; 32]> {
        if let Some(k) = self.operator_stable_key(label) {
            return k;
        }
        hkdf_32(&self.subject_tag_key, label)
    }

    /// Former name of [`Keyring::derive_stable_key`].
    #[deprecated(
        note = "renamed `derive_stable_key`: the key is derived from the non-rotating \
                `subject_tag_key`, not from a sealing key"
    )]
    #[doc(hidden)]
    pub fn derive_subkey(&self, label: &str) -> Zeroizing<[u8; 32]> {
        self.derive_stable_key(label)
    }

    /// A 32-byte key for `label` derived from sealing key `id` (HKDF-SHA-256,
    /// salt `"sealq-subkey-v1"`, ikm = that key's secret, info = `label`):
    /// unlike [`Keyring::derive_stable_key`], it changes with rotation, and
    /// it is gone once key `id` is removed. `None` when the keyring has no
    /// key `id`.
    pub(crate) fn derive_from_sealing_key(
        &self,
        id: &str,
        label: &str,
    ) -> Option<Zeroizing<[u8; 32]>> {
        let entry = self.keys.get(id)?;
        Some(hkdf_32(&entry.secret, label))
    }

    /// The Ed25519 seed that signs audit checkpoints, if the keyring has one.
    pub(crate) fn audit_signing_seed(&self) -> Option<&[u8; KEY_LEN]> {
        self.audit_signing_key.as_deref()
    }

    /// The Ed25519 public key that verifies audit checkpoints (the public
    /// half of `audit_signing_key`), or `None` for a keyring without one.
    /// Safe to publish: `sealq audit verify --public-key` needs only this.
    pub fn audit_verifying_key(&self) -> Option<[u8; 32]> {
        self.audit_signing_seed().map(|seed| {
            ed25519_dalek::SigningKey::from_bytes(seed)
                .verifying_key()
                .to_bytes()
        })
    }

    /// [`Keyring::audit_verifying_key`] in standard base64 with padding.
    pub fn audit_public_key_base64(&self) -> Option<String> {
        self.audit_verifying_key().map(|k| BASE64.encode(k))
    }

    /// Seal `plaintext` with the primary key and a fresh random nonce.
    ///
    /// Returns `version | alg | key_id_len | key_id | nonce | ciphertext | tag`
    /// (see `docs/envelope.md`). Fails only if the operating system's random
    /// number generator fails or an AAD field is longer than 4 GiB.
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        self.seal_with_nonce(aad, plaintext, random_nonce()?)
    }

    /// [`Keyring::seal`] of a payload with the producer's trace context
    /// sealed beside it: a version-3 envelope (`docs/envelope.md`), which
    /// [`Keyring::open_traced`] splits again and [`Keyring::open`] opens to
    /// the payload alone.
    pub fn seal_traced(
        &self,
        aad: &Aad<'_>,
        trace: &TraceParent,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        self.require_sealing_keys("seal a task")?;
        let key_id = self.primary.as_str();
        let entry = self.keys.get(key_id).ok_or_else(|| {
            Error::Keyring(format!(
                "primary key `{key_id}` is missing from the keyring"
            ))
        })?;
        let framed = trace_frame::frame(trace, plaintext);
        let nonce = random_nonce()?;
        seal_with_cipher_as(
            envelope::VERSION_V3,
            &entry.cipher,
            key_id,
            aad,
            &framed,
            nonce,
        )
    }

    /// **Test only**: [`Keyring::seal`] with a caller-chosen nonce, to produce
    /// deterministic test vectors. Reusing a nonce with the same key destroys
    /// confidentiality and authenticity; production code must call `seal`.
    #[doc(hidden)]
    pub fn seal_with_nonce(
        &self,
        aad: &Aad<'_>,
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, Error> {
        self.require_sealing_keys("seal a task")?;
        let key_id = self.primary.as_str();
        let entry = self.keys.get(key_id).ok_or_else(|| {
            Error::Keyring(format!(
                "primary key `{key_id}` is missing from the keyring"
            ))
        })?;
        seal_with_cipher(&entry.cipher, key_id, aad, plaintext, nonce)
    }

    /// **Test only**: [`Keyring::seal_with_nonce`] writing envelope `version`
    /// (`1` reproduces the version-1 test vectors). Production code never
    /// writes anything but the current [`envelope::VERSION`].
    #[doc(hidden)]
    pub fn seal_with_nonce_as_version(
        &self,
        version: u8,
        aad: &Aad<'_>,
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, Error> {
        self.require_sealing_keys("seal a task")?;
        let key_id = self.primary.as_str();
        let entry = self.keys.get(key_id).ok_or_else(|| {
            Error::Keyring(format!(
                "primary key `{key_id}` is missing from the keyring"
            ))
        })?;
        seal_with_cipher_as(version, &entry.cipher, key_id, aad, plaintext, nonce)
    }

    /// Open an envelope sealed for `aad`, with the key its header names.
    ///
    /// Errors: [`IntegrityError::Truncated`], [`IntegrityError::UnsupportedVersion`],
    /// [`IntegrityError::UnsupportedAlgorithm`] or [`IntegrityError::UnknownKey`]
    /// from the header; [`IntegrityError::Tampered`] if authentication fails
    /// (wrong key, edited bytes, or `aad` differs from what was sealed).
    /// Never panics, whatever the input.
    pub fn open(
        &self,
        aad: &Aad<'_>,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        let header = parse_header(envelope)?;
        if self.operator.is_some() {
            return Err(IntegrityError::UnknownKey(header.key_id.to_owned()));
        }
        let entry = self
            .keys
            .get(header.key_id)
            .ok_or_else(|| IntegrityError::UnknownKey(header.key_id.to_owned()))?;
        open_with_cipher(&entry.cipher, aad, envelope)
    }

    /// [`Keyring::open`], also returning the trace context a version-3
    /// envelope carries (`None` for any other).
    pub fn open_traced(
        &self,
        aad: &Aad<'_>,
        envelope: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Option<TraceParent>), IntegrityError> {
        let header = parse_header(envelope)?;
        if self.operator.is_some() {
            return Err(IntegrityError::UnknownKey(header.key_id.to_owned()));
        }
        let entry = self
            .keys
            .get(header.key_id)
            .ok_or_else(|| IntegrityError::UnknownKey(header.key_id.to_owned()))?;
        open_traced_with_cipher(&entry.cipher, aad, envelope)
    }

    fn from_raw(mut raw: KeyringToml) -> Result<Self, Error> {
        if let Some(operator) = role::operator_from_raw(&mut raw) {
            return operator;
        }
        let primary = raw.primary.ok_or_else(|| {
            Error::Keyring(
                "`primary` is missing: name the sealing key, e.g. primary = \"k-20261123-ab12\""
                    .into(),
            )
        })?;
        let subject_tag_key = raw.subject_tag_key.ok_or_else(|| {
            Error::Keyring(
                "`subject_tag_key` is missing (32 bytes, base64); it must be the same key that \
                 tagged the stored tasks"
                    .into(),
            )
        })?;
        let subject_tag_key = decode_key(&subject_tag_key.0, "`subject_tag_key`")?;
        let audit_signing_key = raw
            .audit_signing_key
            .map(|k| decode_key(&k.0, "`audit_signing_key`"))
            .transpose()?;
        if raw.keys.is_empty() {
            return Err(Error::Keyring(
                "no keys: add a [keys.<id>] table with secret = \"<base64 32 bytes>\"".into(),
            ));
        }
        let mut keys = BTreeMap::new();
        for (id, k) in raw.keys {
            check_key_id(&id)?;
            let what = format!("key `{id}`");
            let secret = k.secret.ok_or_else(|| {
                Error::Keyring(format!("{what}: `secret` is missing (32 bytes, base64)"))
            })?;
            let secret = decode_key(&secret.0, &what)?;
            let created = k.created.map(|v| parse_created(&v, &what)).transpose()?;
            keys.insert(id, KeyEntry::new(secret, created));
        }
        if !keys.contains_key(&primary) {
            let ids: Vec<&str> = keys.keys().map(String::as_str).collect();
            return Err(Error::Keyring(format!(
                "primary key {primary:?} is not among the keys ({})",
                ids.join(", ")
            )));
        }
        let kek = raw.kek.map(KekEpochs::from_toml).transpose()?;
        Ok(Keyring {
            primary,
            keys,
            subject_tag_key,
            audit_signing_key,
            operator: None,
            kek,
        })
    }
}

// ---------------------------------------------------------------------------
// TOML shapes (private)
// ---------------------------------------------------------------------------

/// A secret string from TOML, wiped on drop.
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringToml {
    /// `full` (default) or `operator` ([`role`]).
    role: Option<String>,
    /// Operator keyrings only ([`role`]).
    audit_mac_key: Option<SecretText>,
    primary: Option<String>,
    subject_tag_key: Option<SecretText>,
    audit_signing_key: Option<SecretText>,
    #[serde(default)]
    keys: BTreeMap<String, KeyToml>,
    kek: Option<KekToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyToml {
    secret: Option<SecretText>,
    created: Option<toml::Value>,
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// A TOML syntax/shape error, with line number, redacting quoted values
/// (the offending line may hold a secret).
fn toml_error(src: &str, e: &toml::de::Error) -> Error {
    let line = e
        .span()
        .map(|s| src.get(..s.start).map_or(0, |p| p.matches('\n').count()) + 1);
    let msg = redact_quoted(e.message().trim());
    match line {
        Some(l) => Error::Keyring(format!("TOML error at line {l}: {msg}")),
        None => Error::Keyring(format!("TOML error: {msg}")),
    }
}

/// Replace the contents of `"..."` in a message with `…` (serde messages quote
/// the offending value).
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push('…');
            }
            inside = !inside;
            out.push(c);
        } else if !inside {
            out.push(c);
        }
    }
    out
}

fn prefix_keyring_error(e: Error, prefix: &str) -> Error {
    match e {
        Error::Keyring(msg) => Error::Keyring(format!("{prefix}{msg}")),
        other => other,
    }
}

fn check_key_id(id: &str) -> Result<(), Error> {
    if id == crate::seal::data_key::SUBJECT_KEY_ID {
        return Err(Error::Keyring(format!(
            "key id `{id}` is reserved for envelopes sealed with a subject's data key; pick another name"
        )));
    }
    if is_valid_key_id(id) {
        Ok(())
    } else {
        Err(Error::Keyring(format!(
            "invalid key id {id:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
        )))
    }
}

fn decode_key(b64: &str, what: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
    let bytes = Zeroizing::new(BASE64.decode(b64.trim().as_bytes()).map_err(|_| {
        Error::Keyring(format!(
            "{what}: not valid base64 (standard alphabet with `=` padding)"
        ))
    })?);
    if bytes.len() != KEY_LEN {
        return Err(Error::Keyring(format!(
            "{what}: must be {KEY_LEN} bytes, got {} (generate one with `sealq keys generate`)",
            bytes.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn parse_created(v: &toml::Value, what: &str) -> Result<jiff::Timestamp, Error> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => String::new(),
    };
    text.parse::<jiff::Timestamp>().map_err(|_| {
        Error::Keyring(format!(
            "{what}: `created` must be an RFC 3339 timestamp like \"2026-11-23T18:00:00Z\""
        ))
    })
}

/// 32 random bytes from the operating system.
/// `HKDF-SHA-256(salt = SUBKEY_SALT, ikm, info = label)`, 32 bytes.
fn hkdf_32(ikm: &[u8; KEY_LEN], label: &str) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(SUBKEY_SALT), &ikm[..]);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(label.as_bytes(), &mut okm[..])
        // Invariant: 32 bytes is far below HKDF-SHA-256's 8160-byte limit.
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    okm
}

fn random_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(&mut k[..]);
    k
}

fn fill_random(buf: &mut [u8]) {
    // Invariant: without a working OS RNG no key can be made safely; there is
    // nothing sensible to fall back to, so fail loudly.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// A fresh `k-YYYYMMDD-xxxx` id not rejected by `taken`.
fn new_key_id(now: jiff::Timestamp, taken: impl Fn(&str) -> bool) -> String {
    let date = now.strftime("%Y%m%d");
    loop {
        let mut r = [0u8; 2];
        fill_random(&mut r);
        let id = format!("k-{date}-{}", hex::encode(r));
        if !taken(&id) {
            return id;
        }
    }
}

/// The current time truncated to whole seconds (for `created`).
fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Seal with `cipher` under the header key id `key_id` (shared by the
/// keyring and per-subject data keys).
pub(crate) fn seal_with_cipher(
    cipher: &XChaCha,
    key_id: &str,
    aad: &Aad<'_>,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, Error> {
    seal_with_cipher_as(envelope::VERSION, cipher, key_id, aad, plaintext, nonce)
}

/// [`seal_with_cipher`] writing envelope `version` (only the test vectors
/// write anything but [`envelope::VERSION`]).
pub(crate) fn seal_with_cipher_as(
    version: u8,
    cipher: &XChaCha,
    key_id: &str,
    aad: &Aad<'_>,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, Error> {
    let alg = Algorithm::XChaCha20Poly1305;
    let ad = envelope::associated_data_for(aad, version, alg, key_id).ok_or_else(|| {
        Error::InvalidArgument {
            what: "task identity",
            reason: "queue, task type or producer is longer than 4 GiB".into(),
        }
    })?;
    let header_len = envelope::header_len(key_id);
    let mut out = Vec::with_capacity(header_len + plaintext.len() + TAG_LEN);
    write_header(&mut out, version, alg, key_id, &nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .seal_in_place(&nonce, &ad, &mut out[header_len..])
        .map_err(|_| Error::InvalidArgument {
            what: "plaintext",
            reason: "too long for XChaCha20-Poly1305 (over 256 GiB)".into(),
        })?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Open `envelope` with `cipher` (the caller picked it from the header's key id).
pub(crate) fn open_with_cipher(
    cipher: &XChaCha,
    aad: &Aad<'_>,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
    open_traced_with_cipher(cipher, aad, envelope).map(|(plain, _)| plain)
}

/// [`open_with_cipher`], also returning a version-3 envelope's trace context.
pub(crate) fn open_traced_with_cipher(
    cipher: &XChaCha,
    aad: &Aad<'_>,
    envelope: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Option<TraceParent>), IntegrityError> {
    let plain = open_frame_with_cipher(cipher, aad, envelope)?;
    if envelope.first() == Some(&envelope::VERSION_V3) {
        let (payload, trace) = trace_frame::unframe(plain)?;
        return Ok((payload, Some(trace)));
    }
    Ok((plain, None))
}

/// Authenticate and decrypt: the plaintext as sealed (framed, for version 3).
fn open_frame_with_cipher(
    cipher: &XChaCha,
    aad: &Aad<'_>,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
    let header = parse_header(envelope)?;
    let ad = envelope::associated_data_for(aad, header.version, header.alg, header.key_id)
        .ok_or(IntegrityError::Tampered)?;
    let body = envelope
        .get(header.encoded_len()..)
        .ok_or(IntegrityError::Truncated {
            len: envelope.len(),
        })?;
    let ct_len = body
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(IntegrityError::Truncated {
            len: envelope.len(),
        })?;
    let (ciphertext, tag) = body.split_at(ct_len);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| IntegrityError::Tampered)?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(ct_len));
    plaintext.extend_from_slice(ciphertext);
    match header.alg {
        Algorithm::XChaCha20Poly1305 => cipher
            .open_in_place(&header.nonce, &ad, plaintext.as_mut_slice(), tag)
            .map_err(|_| IntegrityError::Tampered)?,
    }
    Ok(plaintext)
}

/// A fresh random 24-byte nonce, from the thread-local CSPRNG (ChaCha12,
/// seeded and periodically reseeded from the operating system): 192-bit
/// random nonces make collisions negligible for any number of messages per
/// key, and skipping a system call per seal saves a few hundred nanoseconds.
pub(crate) fn random_nonce() -> Result<[u8; NONCE_LEN], Error> {
    use rand::RngCore as _;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    Ok(nonce)
}
