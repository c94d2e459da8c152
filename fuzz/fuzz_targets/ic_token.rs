//! Fuzz target for IC token verification (`iron_core::token`, design §4), the first thing
//! proxy stage 1 (*auth*) does with every request's API key. With one fixed verifier key:
//! - mode 0: any string (with and without the `ic_` prefix) never panics and never verifies;
//! - mode 1: a valid token with up to 8 byte mutations never verifies unless the mutations
//!   were no-ops (the result equals the original);
//! - mode 2: a token assembled from arbitrary header/payload JSON and an arbitrary signature
//!   never verifies;
//! - mode 3: a token over arbitrary header/payload JSON *correctly signed* with the key
//!   verifies only if it is an IC token: `alg` EdDSA, `kid` of the key in header and claims,
//!   `iss` = `iron-control`, not expired.
//!
//! Input layout: byte 0 = mode (mod 4); mode 1: pairs of (position u16 big-endian, byte);
//! modes 2/3: byte 1 = header length, byte 2 = payload length, header, payload, signature.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use iron_core::token::{ISSUER, SigningKey, TokenVerifier, unix_now};
use libfuzzer_sys::fuzz_target;

const KID: &str = "k1";
const SEED: [u8; 32] = [7; 32];

struct Fixture {
    verifier: TokenVerifier,
    token: String,
    dalek: ed25519_dalek::SigningKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = SigningKey::from_seed(KID, &SEED).unwrap_or_else(|e| panic!("key: {e}"));
        let verifier =
            TokenVerifier::new(&[key.public_key()]).unwrap_or_else(|e| panic!("verifier: {e}"));
        let token = key
            .mint("tok_01FUZZ", "prj_fuzz", 1_700_000_000, 4_000_000_000)
            .unwrap_or_else(|e| panic!("mint: {e}"));
        assert!(
            verifier.verify(&token).is_ok(),
            "the fixture token must verify"
        );
        Fixture {
            verifier,
            token,
            dalek: ed25519_dalek::SigningKey::from_bytes(&SEED),
        }
    })
}

fn parts(rest: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let [h, p, rest @ ..] = rest else {
        return None;
    };
    let h = usize::from(*h).min(rest.len());
    let (header, rest) = rest.split_at(h);
    let p = usize::from(*p).min(rest.len());
    let (payload, sig) = rest.split_at(p);
    Some((header, payload, sig))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 4 {
        0 => {
            let s = String::from_utf8_lossy(rest);
            assert!(
                f.verifier.verify(&s).is_err(),
                "an arbitrary string verified"
            );
            let prefixed = format!("ic_{s}");
            assert!(
                f.verifier.verify(&prefixed).is_err(),
                "an arbitrary string verified"
            );
        }
        1 => {
            let mut bytes = f.token.clone().into_bytes();
            for m in rest.chunks_exact(3).take(8) {
                let pos = usize::from(u16::from_be_bytes([m[0], m[1]])) % bytes.len();
                bytes[pos] = m[2];
            }
            let Ok(s) = std::str::from_utf8(&bytes) else {
                return;
            };
            if s != f.token {
                assert!(
                    f.verifier.verify(s).is_err(),
                    "a mutated token verified: {s}"
                );
            }
        }
        m => {
            let Some((header, payload, sig)) = parts(rest) else {
                return;
            };
            let signing_input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            if m == 2 {
                let token = format!("ic_{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
                assert!(
                    f.verifier.verify(&token).is_err(),
                    "a forged token verified"
                );
                return;
            }
            let sig = f.dalek.sign(signing_input.as_bytes());
            let token = format!(
                "ic_{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(sig.to_bytes())
            );
            if let Ok(claims) = f.verifier.verify(&token) {
                let h: serde_json::Value = serde_json::from_slice(header)
                    .unwrap_or_else(|e| panic!("verified with a non-JSON header: {e}"));
                assert_eq!(h.get("alg").and_then(|a| a.as_str()), Some("EdDSA"));
                assert_eq!(h.get("kid").and_then(|a| a.as_str()), Some(KID));
                assert_eq!(claims.kid, KID);
                assert_eq!(claims.iss, ISSUER);
                assert!(claims.exp > unix_now(), "an expired token verified");
            }
        }
    }
});
