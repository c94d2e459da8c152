//! What the mock upstream does for a request: the typed [`Scenario`], its [`Fault`]s, and the
//! one table of `x-mock-*` request headers and magic values that override it per request.
//!
//! A request's effective scenario is the server's default scenario (set with
//! [`MockUpstream::set_scenario`](super::MockUpstream::set_scenario), `PUT /__mock/scenario` or
//! `iron-mock --scenario-json`) with every `x-mock-*` header present on the request replacing
//! the matching field. Because the proxy forwards client headers, tests steer the mock through
//! the proxy with these headers.

use std::fmt;
use std::str::FromStr;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

/// Request headers that override the default scenario, field by field.
pub mod headers {
    /// `usize`: number of content chunks the answer text is split into (default 8).
    pub const CHUNKS: &str = "x-mock-chunks";
    /// `usize`: split the answer text (or tool arguments) into pieces of this many bytes (up to the
    /// next UTF-8 character boundary), ignoring words; takes precedence over [`CHUNKS`].
    pub const CHUNK_BYTES: &str = "x-mock-chunk-bytes";
    /// `usize`: answer is N pieces `"tok "`, one per SSE chunk; completion tokens = N.
    pub const TOKENS: &str = "x-mock-tokens";
    /// `u64` milliseconds between two SSE events.
    pub const DELAY_MS: &str = "x-mock-delay-ms";
    /// `u64` milliseconds before the response headers.
    pub const TTFB_MS: &str = "x-mock-ttfb-ms";
    /// A fault name from [`FAULT_NAMES`](super::FAULT_NAMES), or `none` to clear the default fault.
    pub const FAULT: &str = "x-mock-fault";
    /// `u64` seconds sent as `retry-after` with status faults.
    pub const RETRY_AFTER: &str = "x-mock-retry-after";
    /// Boolean ([`TRUE_VALUES`](super::TRUE_VALUES)): answer with the last user message.
    pub const ECHO: &str = "x-mock-echo";
    /// Explicit answer text (UTF-8 bytes allowed).
    pub const ANSWER: &str = "x-mock-answer";
    /// Boolean: stream a tool call instead of text.
    pub const TOOLS: &str = "x-mock-tools";
    /// `usize`: prompt tokens reported as served from the prompt cache.
    pub const CACHED_TOKENS: &str = "x-mock-cached-tokens";

    /// Every override header, for documentation and tests.
    pub const ALL: &[&str] = &[
        CHUNKS,
        CHUNK_BYTES,
        TOKENS,
        DELAY_MS,
        TTFB_MS,
        FAULT,
        RETRY_AFTER,
        ECHO,
        ANSWER,
        TOOLS,
        CACHED_TOKENS,
    ];
}

/// Header values read as `true` for boolean headers (case-insensitive); anything else is false.
pub const TRUE_VALUES: &[&str] = &["1", "true", "yes", "on"];

/// Value of [`headers::FAULT`] that clears a fault set in the default scenario.
pub const NO_FAULT: &str = "none";

/// Fault names as accepted in `x-mock-fault` and in scenario JSON (serde kebab-case names),
/// plus the bare status codes as aliases for the header.
pub const FAULT_NAMES: &[(&str, Fault)] = &[
    ("status500", Fault::Status500),
    ("status503", Fault::Status503),
    ("status429", Fault::Status429),
    ("status401", Fault::Status401),
    ("hang", Fault::Hang),
    ("reset", Fault::Reset),
    ("reset-mid-stream", Fault::ResetMidStream),
    ("malformed-sse", Fault::MalformedSse),
    ("error-event", Fault::ErrorEvent),
    ("500", Fault::Status500),
    ("503", Fault::Status503),
    ("429", Fault::Status429),
    ("401", Fault::Status401),
];

/// Default number of content chunks in a stream.
pub const DEFAULT_CHUNKS: usize = 8;

/// Default answer text when neither `tokens`, `answer` nor `echo` is set (10 words).
pub const DEFAULT_ANSWER: &str = "This is a deterministic answer from the Iron mock upstream.";

/// How the mock answers. Every field is optional; `Scenario::default()` is a normal, fast,
/// successful answer of [`DEFAULT_ANSWER`] in [`DEFAULT_CHUNKS`] chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Number of content chunks in a stream (default 8); the answer text is split into this
    /// many pieces (by words when it has enough words, else by characters).
    pub chunks: Option<usize>,
    /// Split the answer text (or tool-call arguments) into pieces of exactly this many bytes
    /// (the last may be shorter; a piece that would end inside a UTF-8 character runs on to
    /// the next character boundary), ignoring word boundaries, e.g. to cut an e-mail address
    /// in the middle. Takes precedence over `chunks`; ignored with `tokens`. `0` = unset.
    pub chunk_bytes: Option<usize>,
    /// Answer is N pieces `"tok "` -> completion_tokens = N, one piece per SSE chunk.
    pub tokens: Option<usize>,
    /// Delay between stream events, in milliseconds.
    pub delay_ms: Option<u64>,
    /// Delay before response headers, in milliseconds.
    pub ttfb_ms: Option<u64>,
    /// Fault to inject.
    pub fault: Option<Fault>,
    /// `retry-after` seconds for status 429/503 (and 500) faults.
    pub retry_after: Option<u64>,
    /// Answer = text of the last user message (so placeholders come back).
    pub echo: bool,
    /// Explicit answer text (for `tools`: the tool-call arguments when it is a JSON object).
    pub answer: Option<String>,
    /// Stream a tool call instead of text.
    pub tools: bool,
    /// Prompt tokens served from the provider's prompt cache: OpenAI
    /// `prompt_tokens_details.cached_tokens` (part of `prompt_tokens`), Anthropic
    /// `cache_read_input_tokens` (in addition to `input_tokens`). Default 0.
    pub cached_tokens: Option<usize>,
}

/// An injected failure.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// 500 with a provider-shaped error body.
    Status500,
    /// 503 with a provider-shaped error body (+ `retry-after` when set).
    Status503,
    /// 429 with a provider-shaped error body (+ `retry-after` when set).
    Status429,
    /// 401 with the provider's error body from the fixtures.
    Status401,
    /// Never answer; the request stays open until the client (or the mock) drops it.
    Hang,
    /// Close the connection without sending a byte.
    Reset,
    /// Send the headers and 2 events (JSON: half the body), then drop the connection.
    ResetMidStream,
    /// Garbage lines in the stream (JSON: a truncated, invalid body with status 200).
    MalformedSse,
    /// Anthropic mid-stream `error` event / OpenAI error chunk after a first piece of answer
    /// (non-streaming: 500, Anthropic 529 `overloaded_error`).
    ErrorEvent,
}

impl Fault {
    /// The canonical (serde / header) name.
    pub fn name(self) -> &'static str {
        FAULT_NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .unwrap_or("unknown")
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        FAULT_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = FAULT_NAMES.iter().map(|(n, _)| *n).collect();
                format!("unknown fault {s:?}; expected one of {names:?} or {NO_FAULT:?}")
            })
    }
}

impl Scenario {
    /// Number of content chunks, with the default applied.
    pub fn chunk_count(&self) -> usize {
        self.chunks.unwrap_or(DEFAULT_CHUNKS).max(1)
    }

    /// This scenario with every `x-mock-*` header of `headers` applied. An unparsable value is
    /// an error naming the header, so a typo fails the test instead of being ignored.
    pub fn with_overrides(&self, headers: &HeaderMap) -> Result<Scenario, String> {
        let mut s = self.clone();
        let get = |name: &str| -> Result<Option<String>, String> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => String::from_utf8(v.as_bytes().to_vec())
                    .map(Some)
                    .map_err(|_| format!("header {name} is not valid UTF-8")),
            }
        };
        fn num<T: FromStr>(name: &str, v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("header {name}: {v:?} is not a non-negative integer"))
        }
        let truthy = |v: &str| TRUE_VALUES.iter().any(|t| t.eq_ignore_ascii_case(v.trim()));

        if let Some(v) = get(headers::CHUNKS)? {
            s.chunks = Some(num(headers::CHUNKS, &v)?);
        }
        if let Some(v) = get(headers::CHUNK_BYTES)? {
            s.chunk_bytes = Some(num(headers::CHUNK_BYTES, &v)?);
        }
        if let Some(v) = get(headers::TOKENS)? {
            s.tokens = Some(num(headers::TOKENS, &v)?);
        }
        if let Some(v) = get(headers::DELAY_MS)? {
            s.delay_ms = Some(num(headers::DELAY_MS, &v)?);
        }
        if let Some(v) = get(headers::TTFB_MS)? {
            s.ttfb_ms = Some(num(headers::TTFB_MS, &v)?);
        }
        if let Some(v) = get(headers::RETRY_AFTER)? {
            s.retry_after = Some(num(headers::RETRY_AFTER, &v)?);
        }
        if let Some(v) = get(headers::CACHED_TOKENS)? {
            s.cached_tokens = Some(num(headers::CACHED_TOKENS, &v)?);
        }
        if let Some(v) = get(headers::FAULT)? {
            s.fault = if v.trim().eq_ignore_ascii_case(NO_FAULT) || v.trim().is_empty() {
                None
            } else {
                Some(v.parse()?)
            };
        }
        if let Some(v) = get(headers::ECHO)? {
            s.echo = truthy(&v);
        }
        if let Some(v) = get(headers::TOOLS)? {
            s.tools = truthy(&v);
        }
        if let Some(v) = get(headers::ANSWER)? {
            s.answer = Some(v);
        }
        Ok(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn fault_names_match_serde() {
        for (name, fault) in FAULT_NAMES {
            if name.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let json = serde_json::to_string(fault).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(fault.name(), *name);
            assert_eq!(name.parse::<Fault>().unwrap(), *fault);
        }
        assert_eq!("429".parse::<Fault>().unwrap(), Fault::Status429);
        assert!("bogus".parse::<Fault>().is_err());
    }

    #[test]
    fn headers_override_field_by_field() {
        let base = Scenario {
            chunks: Some(3),
            fault: Some(Fault::Hang),
            answer: Some("base".into()),
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert(headers::TOKENS, HeaderValue::from_static("12"));
        h.insert(headers::CHUNK_BYTES, HeaderValue::from_static("7"));
        h.insert(headers::FAULT, HeaderValue::from_static("none"));
        h.insert(headers::ECHO, HeaderValue::from_static("1"));
        h.insert(
            headers::ANSWER,
            HeaderValue::from_bytes("héllo".as_bytes()).unwrap(),
        );
        let s = base.with_overrides(&h).unwrap();
        assert_eq!(s.chunks, Some(3));
        assert_eq!(s.tokens, Some(12));
        assert_eq!(s.chunk_bytes, Some(7));
        assert_eq!(s.fault, None);
        assert!(s.echo);
        assert_eq!(s.answer.as_deref(), Some("héllo"));
    }

    #[test]
    fn bad_header_values_are_errors() {
        let mut h = HeaderMap::new();
        h.insert(headers::CHUNKS, HeaderValue::from_static("many"));
        assert!(Scenario::default().with_overrides(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(headers::FAULT, HeaderValue::from_static("explode"));
        assert!(Scenario::default().with_overrides(&h).is_err());
    }

    #[test]
    fn scenario_json_is_partial_and_strict() {
        let s: Scenario =
            serde_json::from_str(r#"{"chunks":3,"fault":"reset-mid-stream"}"#).unwrap();
        assert_eq!(s.chunks, Some(3));
        assert_eq!(s.fault, Some(Fault::ResetMidStream));
        assert!(serde_json::from_str::<Scenario>(r#"{"chunkz":3}"#).is_err());
    }
}
