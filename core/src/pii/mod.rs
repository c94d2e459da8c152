//! # PII engine (design §7)
//!
//! Where it sits: stage 5 of the request path (**redact request**) runs
//! [`redact_request_json`] on the parsed body before anything is sent upstream; stage 8
//! (**stream**) runs a [`StreamRedactor`] per answer text channel, or
//! [`restore_response_json`] on a non-stream answer. Both directions share one per-request
//! [`Vault`] (placeholder ↔ original) and report [`Detections`] for
//! `iron_proxy_pii_detections_total{type,direction,action}`. Values are never logged.
//!
//! - [`Detector`]: one multi-pattern `regex_automata` DFA (placeholders, secrets, e-mail,
//!   IBAN, card, SSN, IP, phone) behind a trigger-byte prefilter, then validators (Luhn,
//!   mod-97, SSN rules, IP parsing, token shapes, PEM/JWT structure).
//! - [`PiiPolicy`]: an [`Action`] per [`PiiType`] and [`Direction`]; reversible by default.
//! - [`redact_text`]: one text, one pass: request PII → `[EMAIL_1]` (or `[REDACTED:EMAIL]`);
//!   in answers, known placeholders → originals and new PII → `[REDACTED:EMAIL]`.
//! - [`StreamRedactor`]: the same, incrementally, with a bounded hold-back window (see
//!   [`stream`] for the bound: 640 bytes, 16 KiB inside a PEM key block, 8 KiB inside a JWT).
//! - [`Blocked`]: the `block` outcome; names the types, never the values.
//!
//! Known limits: placeholder numbers go up to 9,999,999 per type and request; a literal
//! `[EMAIL_1]` typed by the agent is indistinguishable from an issued placeholder in the answer;
//! a stream stops at the first blocked type (whole-text calls name all of them); detection is
//! ASCII-only (an e-mail with a non-ASCII local part is matched from its ASCII tail);
//! international numbers are recognised with a leading `+`, not with a `00` prefix (too
//! ambiguous next to digit groups such as IBANs).

mod detector;
mod json;
mod redact;
pub mod stream;
mod types;
mod validate;
mod vault;

pub use detector::{Detector, DetectorBuildError, MAX_HEAD_LEN, Match};
pub use json::{redact_request_json, restore_response_json};
pub use redact::{Blocked, Detections, redact_text, redact_text_with};
pub use stream::StreamRedactor;
pub use types::{Action, Direction, ParseNameError, PiiPolicy, PiiType, TypeActions};
pub use validate::{JWT_MAX, PEM_MAX};
pub use vault::Vault;
