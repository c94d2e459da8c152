//! Sealing secrets at rest and in transit (`design.md` §4).
//!
//! Provider keys (IP tokens) exist in plaintext only in memory. Control stores them sealed
//! under a [`MasterKey`] (`IRON_MASTER_KEY`, rotated by key id through a [`MasterKeyring`]) and
//! delivers them to proxies re-sealed under the [`TransitKey`] that both sides derive from
//! `IRON_PROXY_SECRET` with HKDF-SHA256 ([`transit_key`]). Both use AES-256-GCM with a random
//! 96-bit nonce per seal; the caller passes associated data (the provider id), so a sealed
//! secret copied onto another record fails to open. Opened plaintext comes back in
//! [`Zeroizing`] memory; key material is zeroized on drop and never printed by `Debug`.
//!
//! ```
//! use iron_core::transit::transit_key;
//! let key = transit_key(b"a proxy secret shared by control and proxies");
//! let sealed = key.seal(b"sk-provider-key", b"prv_1");
//! assert_eq!(&key.open(&sealed, b"prv_1").unwrap()[..], b"sk-provider-key");
//! assert!(key.open(&sealed, b"prv_2").is_err());
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::wire::SealedSecret;

pub use zeroize;

/// HKDF `info` for the transit key; bump the version to change the derivation.
const TRANSIT_INFO: &[u8] = b"iron transit key v1";
/// HKDF salt for the transit key (domain separation; the secret itself carries the entropy).
const TRANSIT_SALT: &[u8] = b"iron-proxy-secret";
const NONCE_LEN: usize = 12;
/// AES-256-GCM tag length.
const TAG_LEN: usize = 16;

/// Why a sealed secret could not be opened or a key could not be built. Messages never
/// contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed with key `{0}`, which is not available")]
    UnknownKey(String),
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret failed authentication (wrong key or associated data)")]
    Decrypt,
    #[error("key must be 32 bytes, base64-encoded")]
    BadKey,
}

/// A 256-bit AES-GCM key with a key id derived from it.
struct AeadKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl AeadKey {
    fn new(prefix: &str, key: Zeroizing<[u8; 32]>) -> Self {
        let mut h = Sha256::new();
        h.update(b"iron key id\0");
        h.update(prefix.as_bytes());
        h.update(key.as_slice());
        let digest = h.finalize();
        let mut id = String::with_capacity(prefix.len() + 16);
        id.push_str(prefix);
        for b in &digest[..8] {
            id.push_str(&format!("{b:02x}"));
        }
        AeadKey { id, key }
    }

    fn cipher(&self) -> Result<Aes256Gcm, SealError> {
        Aes256Gcm::new_from_slice(self.key.as_slice()).map_err(|_| SealError::BadKey)
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> SealedSecret {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption fails only for plaintexts beyond AES-GCM's 64 GiB limit; such a seal
        // carries an empty ciphertext, which never opens (fails closed).
        let ciphertext = self
            .cipher()
            .ok()
            .and_then(|c| {
                c.encrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: plaintext,
                        aad,
                    },
                )
                .ok()
            })
            .unwrap_or_default();
        SealedSecret {
            key_id: self.id.clone(),
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
        }
    }

    fn open(&self, sealed: &SealedSecret, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.key_id != self.id {
            return Err(SealError::UnknownKey(sealed.key_id.clone()));
        }
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| SealError::Malformed)?;
        let ciphertext = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| SealError::Malformed)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        if ciphertext.len() < TAG_LEN {
            return Err(SealError::Malformed);
        }
        self.cipher()?
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Decrypt)
    }
}

/// The key that seals provider keys between control and proxies, derived from
/// `IRON_PROXY_SECRET`. Its key id (`tk_…`) is a fingerprint: a proxy with a different
/// secret sees `UnknownKey` instead of a bare decryption failure.
pub struct TransitKey(AeadKey);

impl std::fmt::Debug for TransitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitKey")
            .field("key_id", &self.0.id)
            .finish_non_exhaustive()
    }
}

/// Derives the transit key from the proxy secret (HKDF-SHA256).
pub fn transit_key(proxy_secret: &[u8]) -> TransitKey {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(TRANSIT_SALT), proxy_secret);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit: expand cannot fail.
    let _ = hk.expand(TRANSIT_INFO, okm.as_mut_slice());
    TransitKey(AeadKey::new("tk_", okm))
}

impl TransitKey {
    pub fn key_id(&self) -> &str {
        &self.0.id
    }

    /// Seals `plaintext` bound to `aad` (the provider id).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> SealedSecret {
        self.0.seal(plaintext, aad)
    }

    /// Opens a secret sealed by [`TransitKey::seal`] with the same `aad`.
    pub fn open(&self, sealed: &SealedSecret, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.0.open(sealed, aad)
    }
}

/// A master key (`IRON_MASTER_KEY`: 32 random bytes, base64) that seals secrets at rest.
/// Its key id (`mk_…`) is a fingerprint of the key, stored next to every sealed record.
pub struct MasterKey(AeadKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("key_id", &self.0.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
        MasterKey(AeadKey::new("mk_", key))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        key.copy_from_slice(bytes);
        Ok(MasterKey(AeadKey::new("mk_", key)))
    }

    /// Parses standard base64 (surrounding whitespace ignored) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| SealError::BadKey)?,
        );
        Self::from_bytes(&bytes)
    }

    /// The key as base64, for writing a freshly generated key to a 0600 file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.key.as_slice()))
    }

    pub fn key_id(&self) -> &str {
        &self.0.id
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> SealedSecret {
        self.0.seal(plaintext, aad)
    }

    pub fn open(&self, sealed: &SealedSecret, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.0.open(sealed, aad)
    }
}

/// The current master key plus previous ones kept for opening during a rotation.
#[derive(Debug)]
pub struct MasterKeyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl MasterKeyring {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        MasterKeyring { current, previous }
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Seals under the current key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> SealedSecret {
        self.current.seal(plaintext, aad)
    }

    /// Opens with whichever key sealed it (selected by key id).
    pub fn open(&self, sealed: &SealedSecret, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.key_id() == sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?
            .open(sealed, aad)
    }

    /// True when `sealed` is not under the current key (a rotation should re-seal it).
    pub fn is_stale(&self, sealed: &SealedSecret) -> bool {
        sealed.key_id != self.current.key_id()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn transit_round_trip_binds_aad_and_secret() {
        let k = transit_key(b"secret-one");
        let s = k.seal(b"sk-abc", b"prv_1");
        assert_eq!(&k.open(&s, b"prv_1").unwrap()[..], b"sk-abc");
        assert_eq!(k.open(&s, b"prv_2"), Err(SealError::Decrypt));
        // Same secret on the other side derives the same key.
        assert_eq!(
            &transit_key(b"secret-one").open(&s, b"prv_1").unwrap()[..],
            b"sk-abc"
        );
        let other = transit_key(b"secret-two");
        assert!(matches!(
            other.open(&s, b"prv_1"),
            Err(SealError::UnknownKey(_))
        ));
        assert!(!s.ciphertext.contains("sk-abc"));
    }

    #[test]
    fn nonces_are_fresh_per_seal() {
        let k = transit_key(b"s");
        let a = k.seal(b"x", b"a");
        let b = k.seal(b"x", b"a");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampering_and_malformed_input_fail() {
        let k = transit_key(b"s");
        let mut s = k.seal(b"secret", b"a");
        let mut ct = STANDARD.decode(&s.ciphertext).unwrap();
        ct[0] ^= 1;
        s.ciphertext = STANDARD.encode(ct);
        assert_eq!(k.open(&s, b"a"), Err(SealError::Decrypt));
        s.nonce = "not base64!".into();
        assert_eq!(k.open(&s, b"a"), Err(SealError::Malformed));
        let short = SealedSecret {
            key_id: k.key_id().into(),
            nonce: STANDARD.encode([0u8; 12]),
            ciphertext: String::new(),
        };
        assert_eq!(k.open(&short, b"a"), Err(SealError::Malformed));
    }

    #[test]
    fn master_keyring_rotates_by_key_id() {
        let old = MasterKey::generate();
        let old_b64 = old.to_base64();
        let sealed_old = old.seal(b"sk-1", b"prv_1");
        let new = MasterKey::generate();
        let ring = MasterKeyring::new(new, vec![MasterKey::from_base64(&old_b64).unwrap()]);
        assert!(ring.is_stale(&sealed_old));
        assert_eq!(&ring.open(&sealed_old, b"prv_1").unwrap()[..], b"sk-1");
        let resealed = ring.seal(b"sk-1", b"prv_1");
        assert!(!ring.is_stale(&resealed));
        let only_new = MasterKeyring::new(
            MasterKey::from_base64(&ring.current().to_base64()).unwrap(),
            vec![],
        );
        assert!(matches!(
            only_new.open(&sealed_old, b"prv_1"),
            Err(SealError::UnknownKey(_))
        ));
        assert_eq!(&only_new.open(&resealed, b"prv_1").unwrap()[..], b"sk-1");
    }

    #[test]
    fn master_key_parsing_and_debug_hide_material() {
        assert_eq!(
            MasterKey::from_base64("AAAA").unwrap_err(),
            SealError::BadKey
        );
        assert_eq!(
            MasterKey::from_base64("%%%").unwrap_err(),
            SealError::BadKey
        );
        let k = MasterKey::generate();
        let b64 = k.to_base64();
        let dbg = format!("{k:?} {:?}", transit_key(b"x"));
        assert!(!dbg.contains(b64.as_str()));
        assert!(k.key_id().starts_with("mk_"));
        assert_eq!(
            MasterKey::from_base64(&format!(" {}\n", *b64))
                .unwrap()
                .key_id(),
            k.key_id()
        );
    }
}
