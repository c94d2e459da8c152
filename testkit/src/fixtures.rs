//! Captured provider wire formats (`testkit/fixtures/<provider>/<scenario>.{json,sse}`).
//!
//! The mock upstream serves its canned error bodies straight from these files, and tests in any
//! crate compare their traffic with them. See `testkit/fixtures/README.md` for provenance.

use std::path::PathBuf;

/// OpenAI non-streaming chat completion with detailed usage.
pub const OPENAI_CHAT_JSON: &str = include_str!("../fixtures/openai/chat.json");
/// OpenAI chat stream with `stream_options.include_usage=true`.
pub const OPENAI_CHAT_STREAM_USAGE_SSE: &str =
    include_str!("../fixtures/openai/chat-stream-usage.sse");
/// OpenAI chat stream carrying a tool call whose arguments arrive in pieces.
pub const OPENAI_CHAT_STREAM_TOOLS_SSE: &str =
    include_str!("../fixtures/openai/chat-stream-tools.sse");
/// OpenAI error body (401 invalid key).
pub const OPENAI_ERROR_JSON: &str = include_str!("../fixtures/openai/error.json");
/// OpenAI Responses API stream.
pub const OPENAI_RESPONSES_STREAM_SSE: &str =
    include_str!("../fixtures/openai/responses-stream.sse");
/// Anthropic Messages stream with ping, cache tokens and usage.
pub const ANTHROPIC_MESSAGES_STREAM_SSE: &str =
    include_str!("../fixtures/anthropic/messages-stream.sse");
/// Anthropic Messages stream ending in a mid-stream `error` event.
pub const ANTHROPIC_MESSAGES_STREAM_ERROR_SSE: &str =
    include_str!("../fixtures/anthropic/messages-stream-error.sse");
/// Anthropic error body (401).
pub const ANTHROPIC_ERROR_JSON: &str = include_str!("../fixtures/anthropic/error.json");

/// Directory holding the fixture files (`testkit/fixtures`).
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Path of one fixture, e.g. `path("openai", "chat.json")`.
pub fn path(provider: &str, file: &str) -> PathBuf {
    dir().join(provider).join(file)
}
