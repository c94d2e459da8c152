//! Admin API keys and other control-side secrets (`design.md` §4).
//!
//! An API key is `iron_ak_` + 32 random bytes in base62. Control stores only its SHA-256
//! ([`hash_api_key`]); the auth middleware hashes the presented key, looks the hash up and
//! compares in constant time. [`Secret`] wraps every configured secret (master key, proxy
//! secret, bootstrap key, Redis URL) so it is zeroized and never printed.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Prefix of every admin API key.
pub const API_KEY_PREFIX: &str = "iron_ak_";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A secret string: zeroized on drop, `Debug` shows `***`, no `Serialize`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Base62 of a big-endian byte string (leading zero bytes kept as `0` digits).
pub fn base62(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 2);
    let mut num: Vec<u8> = bytes.to_vec();
    while num.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        digits.push(BASE62[rem as usize]);
    }
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    digits.extend(std::iter::repeat_n(b'0', zeros));
    num.iter_mut().for_each(|b| *b = 0);
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// A fresh API key (`iron_ak_…`, ~43 base62 characters after the prefix).
pub fn generate_api_key() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut_slice());
    Zeroizing::new(format!("{API_KEY_PREFIX}{}", base62(raw.as_slice())))
}

/// Lowercase hex SHA-256 of an API key, as stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Constant-time equality of two secrets of any length (compares their SHA-256 digests).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// A fresh random secret for `iron up` (proxy secret): 32 bytes, base62.
pub fn generate_secret() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut_slice());
    Zeroizing::new(base62(raw.as_slice()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base62_known_values() {
        assert_eq!(base62(&[]), "");
        assert_eq!(base62(&[0]), "0");
        assert_eq!(base62(&[61]), "z");
        assert_eq!(base62(&[62]), "10");
        assert_eq!(base62(&[1, 0]), "48"); // 256 = 4*62 + 8
        assert_eq!(base62(&[0, 1]), "01");
    }

    #[test]
    fn api_keys_are_prefixed_random_base62() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(*a, *b);
        assert!(a.starts_with(API_KEY_PREFIX));
        let body = &a[API_KEY_PREFIX.len()..];
        assert!((40..=44).contains(&body.len()), "{}", body.len());
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(hash_api_key(&a).len(), 64);
        assert_ne!(hash_api_key(&a), hash_api_key(&b));
    }

    #[test]
    fn secret_debug_hides_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(secrets_equal(b"x", b"x"));
        assert!(!secrets_equal(b"x", b"xy"));
    }
}
