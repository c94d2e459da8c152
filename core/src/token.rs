//! IC tokens (`design.md` §4): `ic_` + a JWT signed EdDSA (Ed25519).
//!
//! Control (and tests) mint tokens with a [`SigningKey`]; proxies verify them offline with a
//! [`TokenVerifier`] built from control's public keys, selected by `kid`. Verification is the
//! first stage of every request (auth), so the verifier is cheap to share (`Send + Sync`) and
//! never touches the network. Revocation is not part of the token: proxies check a revocation
//! set after verification.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Every IC token starts with this prefix.
pub const TOKEN_PREFIX: &str = "ic_";
/// The `iss` claim of every IC token.
pub const ISSUER: &str = "iron-control";

/// The claims of an IC token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcClaims {
    pub iss: String,
    /// Token id, `tok_<ulid>`.
    pub sub: String,
    /// Project id.
    pub prj: String,
    pub iat: u64,
    pub exp: u64,
    /// Signing key id (also in the JWT header).
    pub kid: String,
    /// The token's own requests-per-minute limit (absent = none; tokens minted before rate
    /// limits existed verify unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// The token's own tokens-per-minute limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

impl IcClaims {
    /// The token's own rate limits.
    pub fn rate_limits(&self) -> crate::ratelimit::RateLimits {
        crate::ratelimit::RateLimits {
            rpm: self.rpm,
            tpm: self.tpm,
        }
    }
}

/// Why a token was refused. Messages are safe to show: they never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing API key")]
    Missing,
    #[error("the API key is not an Iron token (expected the ic_ prefix)")]
    NotAnIcToken,
    #[error("malformed Iron token")]
    Malformed,
    #[error("Iron token signed by an unknown key")]
    UnknownKey,
    #[error("Iron token signature is invalid")]
    BadSignature,
    #[error("Iron token has expired")]
    Expired,
    #[error("invalid signing key material")]
    BadKey,
}

/// A new token id: `tok_` + ULID.
pub fn new_token_id() -> String {
    format!("tok_{}", ulid::Ulid::new())
}

/// An Ed25519 private key with its key id. Lives in control (and tests) only.
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key; `kid` is `k_<ulid>`.
    pub fn generate() -> Result<Self, TokenError> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_dalek(format!("k_{}", ulid::Ulid::new()), key)
    }

    /// Rebuilds a key from its 32-byte seed (as stored, encrypted, by control).
    pub fn from_seed(kid: impl Into<String>, seed: &[u8]) -> Result<Self, TokenError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| TokenError::BadKey)?;
        Self::from_dalek(kid.into(), ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    fn from_dalek(kid: String, key: ed25519_dalek::SigningKey) -> Result<Self, TokenError> {
        let der = key.to_pkcs8_der().map_err(|_| TokenError::BadKey)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        Ok(SigningKey { kid, key, encoding })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32-byte seed. Secret: callers must encrypt it before storing it.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
        }
    }

    /// Mints `ic_<jwt>` for `token_id` in `project_id`, valid from `iat` to `exp` (unix seconds).
    pub fn mint(
        &self,
        token_id: &str,
        project_id: &str,
        iat: u64,
        exp: u64,
    ) -> Result<String, TokenError> {
        self.mint_with_limits(
            token_id,
            project_id,
            iat,
            exp,
            crate::ratelimit::RateLimits::NONE,
        )
    }

    /// Like [`SigningKey::mint`], with the token's own rate limits as `rpm`/`tpm` claims.
    pub fn mint_with_limits(
        &self,
        token_id: &str,
        project_id: &str,
        iat: u64,
        exp: u64,
        limits: crate::ratelimit::RateLimits,
    ) -> Result<String, TokenError> {
        let claims = IcClaims {
            iss: ISSUER.into(),
            sub: token_id.into(),
            prj: project_id.into(),
            iat,
            exp,
            kid: self.kid.clone(),
            rpm: limits.rpm,
            tpm: limits.tpm,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let jwt = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|_| TokenError::BadKey)?;
        Ok(format!("{TOKEN_PREFIX}{jwt}"))
    }
}

/// A public verification key as served by control at `/internal/v1/keys` (JWK-like OKP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub kid: String,
    pub alg: String,
    /// Base64url (no padding) of the 32-byte Ed25519 public key.
    pub x: String,
}

/// Verifies IC tokens offline against a set of public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys())
            .finish()
    }
}

impl TokenVerifier {
    pub fn new(keys: &[PublicKey]) -> Result<Self, TokenError> {
        let mut map = HashMap::with_capacity(keys.len());
        for k in keys {
            let raw = URL_SAFE_NO_PAD
                .decode(&k.x)
                .map_err(|_| TokenError::BadKey)?;
            // jsonwebtoken slices the first 32 bytes without a length check: check here.
            if raw.len() != 32 || k.alg != "EdDSA" {
                return Err(TokenError::BadKey);
            }
            map.insert(k.kid.clone(), DecodingKey::from_ed_der(&raw));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        Ok(TokenVerifier {
            keys: map,
            validation,
        })
    }

    /// A verifier that knows no keys: every token is refused.
    pub fn empty() -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        TokenVerifier {
            keys: HashMap::new(),
            validation,
        }
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies signature, issuer and expiry of `token` (with or without the `ic_` prefix).
    pub fn verify(&self, token: &str) -> Result<IcClaims, TokenError> {
        let jwt = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::NotAnIcToken)?;
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<IcClaims>(jwt, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            }
        })?;
        if data.claims.kid != kid {
            return Err(TokenError::Malformed);
        }
        Ok(data.claims)
    }
}

/// Seconds since the unix epoch (token timestamps).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the unix epoch (usage events, rate-limit windows, reports).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate().unwrap()
    }

    #[test]
    fn mint_then_verify_round_trips() {
        let k = key();
        let v = TokenVerifier::new(&[k.public_key()]).unwrap();
        let now = unix_now();
        let t = k.mint("tok_1", "prj_1", now, now + 60).unwrap();
        assert!(t.starts_with("ic_"));
        let c = v.verify(&t).unwrap();
        assert_eq!(c.sub, "tok_1");
        assert_eq!(c.prj, "prj_1");
        assert_eq!(c.iss, ISSUER);
    }

    #[test]
    fn refuses_forged_expired_and_foreign_tokens() {
        let k = key();
        let other = key();
        let v = TokenVerifier::new(&[k.public_key()]).unwrap();
        let now = unix_now();
        assert_eq!(v.verify("sk-123"), Err(TokenError::NotAnIcToken));
        assert_eq!(v.verify("ic_garbage"), Err(TokenError::Malformed));
        let expired = k.mint("tok_1", "p", now - 100, now - 10).unwrap();
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        let foreign = other.mint("tok_1", "p", now, now + 60).unwrap();
        assert_eq!(v.verify(&foreign), Err(TokenError::UnknownKey));
        // Same kid, different key: signature check must fail.
        let impostor = SigningKey::from_seed(k.kid(), &other.seed()).unwrap();
        let forged = impostor.mint("tok_1", "p", now, now + 60).unwrap();
        assert_eq!(v.verify(&forged), Err(TokenError::BadSignature));
        // Tampered payload.
        let good = k.mint("tok_1", "p", now, now + 60).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let tampered_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"iss":ISSUER,"sub":"tok_2","prj":"p","iat":now,"exp":now+60,"kid":k.kid()})).unwrap(),
        );
        let tampered = format!("{}.{}.{}", parts[0], tampered_claims, parts[2]);
        assert_eq!(v.verify(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn rate_limit_claims_are_optional() {
        let k = key();
        let v = TokenVerifier::new(&[k.public_key()]).unwrap();
        let now = unix_now();
        let plain = v
            .verify(&k.mint("tok_1", "p", now, now + 60).unwrap())
            .unwrap();
        assert!(plain.rate_limits().is_none());
        let limited = crate::ratelimit::RateLimits {
            rpm: Some(60),
            tpm: None,
        };
        let t = k
            .mint_with_limits("tok_1", "p", now, now + 60, limited)
            .unwrap();
        assert_eq!(v.verify(&t).unwrap().rate_limits(), limited);
        // The payload of a token without limits has no rpm/tpm keys (old verifiers agree).
        let payload = t.split('.').nth(1).unwrap();
        let plain_token = k.mint("tok_1", "p", now, now + 60).unwrap();
        let plain_payload = plain_token.split('.').nth(1).unwrap();
        let decoded = URL_SAFE_NO_PAD.decode(plain_payload).unwrap();
        assert!(!String::from_utf8(decoded).unwrap().contains("rpm"));
        assert!(
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap())
                .unwrap()
                .contains("\"rpm\":60")
        );
    }

    #[test]
    fn seed_round_trip_keeps_public_key() {
        let k = key();
        let k2 = SigningKey::from_seed(k.kid(), &k.seed()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        assert!(
            TokenVerifier::new(&[PublicKey {
                kid: "x".into(),
                alg: "EdDSA".into(),
                x: "AAAA".into()
            }])
            .is_err()
        );
    }
}
