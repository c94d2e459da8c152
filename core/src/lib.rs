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
//! - [`pricing`]: model prices (embedded table + admin overrides) and request cost.
//! - [`meter`]: token counting (o200k) for prompt estimates and per-chunk metering.
//! - [`lease`]: the lease protocol between proxies and control (§6).
//! - [`net`]: which IP addresses and host names count as internal (SSRF guard, §2/§8).
//! - [`ratelimit`]: RPM/TPM limits, their wire types and the sliding-window maths.
//! - [`wire`], [`transit`]: routing data shared with proxies, and sealing of provider keys.

pub mod error;
pub mod lease;
pub mod meter;
pub mod money;
pub mod net;
pub mod pii;
pub mod pricing;
pub mod ratelimit;
pub mod sse;
pub mod token;
pub mod transit;
pub mod wire;

pub use error::{ErrorCode, WireShape};
pub use money::Money;
