//! iron-testkit: the test tooling every Iron crate uses as a dev-dependency (design §13).
//!
//! - [`MockUpstream`] — an in-process mock LLM provider (OpenAI + Anthropic routes, JSON and
//!   SSE, faults, pacing) on an ephemeral port, with a record of every request it received.
//!   The same server runs standalone as the `iron-mock` binary for the Python e2e tests.
//! - [`RedisServer`] — a private `redis-server` on an ephemeral port, stoppable and restartable
//!   for outage tests.
//! - [`ChildProcess`], [`cargo_bin`], [`wait_for_tcp`] — start the real binaries and wait for
//!   their log lines.
//! - [`OtlpReceiver`] — an in-test OTLP/HTTP trace collector (spans as JSON, raw bodies for
//!   secret scans).
//! - [`fixtures`] and [`sse`] — the captured provider payloads and a small SSE parser, so tests
//!   can compare what they see with what the providers send.
//!
//! Nothing here binds a fixed port: every server listens on `127.0.0.1:0`.

pub mod fixtures;
pub mod mock;
pub mod otlp;
pub mod process;
pub mod redis;
pub mod sse;

pub use mock::{Fault, MockUpstream, RecordedRequest, Scenario};
pub use otlp::OtlpReceiver;
pub use process::{ChildProcess, cargo_bin, wait_for_tcp};
pub use redis::{RedisCluster, RedisServer};
pub use sse::{SseEvent, parse_sse};
