//! The keyring: named sealing keys, one primary. Loaded from a TOML file or
//! environment variable, never from the broker.
//!
//! STUB: API fixed, implementation pending (helper H1 fills this file).

use zeroize::Zeroizing;

use crate::envelope::Aad;
use crate::error::{Error, IntegrityError};
use crate::task::SubjectTag;

/// Named keys; seals with the primary, opens with the key an envelope names.
pub struct Keyring {
    primary: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A fresh keyring with one random primary key.
    pub fn generate() -> Self {
        Keyring {
            primary: String::new(),
        }
    }
    /// Parse keyring TOML.
    pub fn from_toml(_s: &str) -> Result<Self, Error> {
        Err(Error::Keyring("not implemented".into()))
    }
    /// Load from a TOML file.
    pub fn from_file(_path: &std::path::Path) -> Result<Self, Error> {
        Err(Error::Keyring("not implemented".into()))
    }
    /// Load from `SEALQ_KEYRING` (path) or `SEALQ_KEYRING_TOML` (the TOML itself).
    pub fn from_env() -> Result<Self, Error> {
        Err(Error::NoKeyring)
    }
    /// Export as TOML including secrets (explicit act: `sealq keys generate`).
    pub fn to_toml_secret(&self) -> Zeroizing<String> {
        Zeroizing::new(String::new())
    }
    /// Id of the primary key.
    pub fn primary_key_id(&self) -> &str {
        &self.primary
    }
    /// Keyed hash of a subject id.
    pub fn subject_tag(&self, _subject: &str) -> SubjectTag {
        SubjectTag([0; 32])
    }
    /// Seal `plaintext` with the primary key.
    pub fn seal(&self, _aad: &Aad<'_>, _plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::Keyring("not implemented".into()))
    }
    /// Open an envelope.
    pub fn open(
        &self,
        _aad: &Aad<'_>,
        _envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        Err(IntegrityError::Tampered)
    }
}
