//! # iron-core
//!
//! The shared vocabulary of Iron. Every other crate (proxy, control, cli, sdk) depends on
//! it; it performs no I/O. See `design.md` §1.
//!
//! - [`money`]: integer micro-dollars.
//! - [`token`]: IC token claims, minting (control, tests) and offline verification (proxy).
//! - [`error`]: the agent-facing error codes of §11 and their OpenAI/Anthropic bodies.
//! - [`sse`]: the incremental server-sent-events codec used by the stream stage.
//! - [`pii`]: the PII detection and redaction engine (§7).

pub mod error;
pub mod lease;
pub mod meter;
pub mod money;
pub mod pii;
pub mod pricing;
pub mod sse;
pub mod token;
pub mod transit;
pub mod wire;

pub use error::{ErrorCode, WireShape};
pub use money::Money;
