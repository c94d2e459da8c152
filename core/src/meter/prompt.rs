//! Prompt-token estimate of a request body, for the budget admit (proxy stage 4).
//!
//! One walk over the parsed JSON, O(size of the body), allocating nothing. It knows the
//! prompt-carrying fields of the agent-facing routes (§3):
//!
//! | body | fields |
//! |---|---|
//! | OpenAI chat completions | `messages[]` (string or `[{type:"text",text}]` content, `name`, `tool_calls[].function.{name,arguments}`, tool results), `tools`/`functions`, `response_format` |
//! | OpenAI completions | `prompt` (string, strings, token ids) |
//! | OpenAI embeddings | `input` (string, strings, token ids, arrays of token ids) |
//! | OpenAI responses | `instructions`, `input` (string or items: messages, `function_call`, `function_call_output`, …), `tools`, `text.format` |
//! | Anthropic messages | `system` (string or blocks), `messages[]` (text, `tool_use.input`, `tool_result`, `thinking`, documents), `tools` |
//!
//! Every other top-level field (`model`, sampling parameters, `metadata`, …) is not prompt.
//! Text is counted by the given counter (the tokenizer, or the fast bound); structure adds
//! small fixed overheads modelled on OpenAI's cookbook formula ([`MESSAGE_OVERHEAD`] per message,
//! [`REPLY_PRIMING`] once). Images cost a fixed [`IMAGE_TOKENS`] (85 with `detail: "low"`) and
//! binary parts (audio, PDF/file data) [`BLOB_TOKENS`] plus one token per 32 bytes of data: their
//! bytes are never tokenized, so a 20 MB image costs no CPU. The result is an estimate meant to
//! be at or a little above the provider's count; the provider's usage settles the real cost.

use serde_json::{Map, Value};

/// Tokens per message (role and delimiters; OpenAI cookbook: 3, plus 1 for the role).
pub const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens priming the assistant reply, once per chat body.
pub const REPLY_PRIMING: u64 = 3;
/// Tokens per tool definition beyond its text.
pub const TOOL_OVERHEAD: u64 = 8;
/// Anthropic's tool-use system prompt, added once when Anthropic-shaped tools are present.
pub const ANTHROPIC_TOOL_SYSTEM_PROMPT: u64 = 346;
/// One image (any size, detail `high`/`auto`): above OpenAI's tile cost for a 2048 px image
/// (1,445) and Anthropic's ~1,600 for a 1.15 MP image; patch-priced models can reach ~2,500.
pub const IMAGE_TOKENS: u64 = 2_500;
/// One image with `detail: "low"` (OpenAI).
pub const IMAGE_TOKENS_LOW: u64 = 85;
/// Base cost of an audio or file part, plus one token per 32 bytes of its (base64) data.
pub const BLOB_TOKENS: u64 = 1_600;
/// JSON nesting beyond which the walk stops (serde_json refuses > 128 when parsing).
const MAX_DEPTH: usize = 256;

pub(crate) struct Walker<F: Fn(&str) -> u64> {
    pub(crate) count: F,
}

impl<F: Fn(&str) -> u64> Walker<F> {
    pub(crate) fn body(&self, body: &Value) -> u64 {
        let Value::Object(top) = body else {
            // A bare string or array: count it as content.
            return self.content(body, 0);
        };
        let mut n: u64 = 0;
        for (key, value) in top {
            let add = match key.as_str() {
                "messages" => self.messages(value),
                "system" | "instructions" => self.content(value, 1),
                "prompt" | "input" => self.input(value),
                "tools" | "functions" => self.tools(value),
                "response_format" => self.json(value, 1),
                // Responses API: `text.format` may carry a JSON schema.
                "text" => value.get("format").map_or(0, |f| self.json(f, 2)),
                _ => 0,
            };
            n = n.saturating_add(add);
        }
        n
    }

    fn messages(&self, value: &Value) -> u64 {
        let Value::Array(messages) = value else {
            return self.content(value, 1);
        };
        if messages.is_empty() {
            return 0;
        }
        messages.iter().fold(REPLY_PRIMING, |n, m| {
            n.saturating_add(MESSAGE_OVERHEAD)
                .saturating_add(self.content(m, 2))
        })
    }

    /// `prompt` / `input`: text, texts, token ids, arrays of token ids, or Responses items.
    fn input(&self, value: &Value) -> u64 {
        match value {
            Value::Array(items) => items.iter().fold(0u64, |n, item| {
                let add = match item {
                    Value::Number(_) => 1,
                    Value::Array(ids) if ids.iter().all(Value::is_number) => ids.len() as u64,
                    Value::Object(_) => MESSAGE_OVERHEAD.saturating_add(self.content(item, 2)),
                    other => self.content(other, 2),
                };
                n.saturating_add(add)
            }),
            other => self.content(other, 1),
        }
    }

    fn tools(&self, value: &Value) -> u64 {
        let Value::Array(tools) = value else {
            return self.json(value, 1);
        };
        let anthropic = tools.iter().any(|t| t.get("input_schema").is_some());
        let base = if anthropic {
            ANTHROPIC_TOOL_SYSTEM_PROMPT
        } else {
            0
        };
        tools.iter().fold(base, |n, t| {
            n.saturating_add(TOOL_OVERHEAD)
                .saturating_add(self.json(t, 2))
        })
    }

    /// Message content: the text of strings, parts and blocks, not their structural keys.
    fn content(&self, value: &Value, depth: usize) -> u64 {
        if depth > MAX_DEPTH {
            return 0;
        }
        match value {
            Value::String(s) => self.text(s),
            Value::Array(items) => items
                .iter()
                .fold(0u64, |n, v| n.saturating_add(self.content(v, depth + 1))),
            Value::Object(o) => self.part(o, depth),
            Value::Number(_) | Value::Bool(_) | Value::Null => 0,
        }
    }

    /// A message, content part or block (an object inside content).
    fn part(&self, o: &Map<String, Value>, depth: usize) -> u64 {
        match o.get("type").and_then(Value::as_str) {
            Some("image_url" | "image" | "input_image") => return image(o),
            Some("input_audio" | "audio" | "file" | "input_file") => {
                return self.blob_part(o, depth);
            }
            Some("document") => return self.document(o, depth),
            _ => {}
        }
        let mut n: u64 = 0;
        for (key, v) in o {
            let add = match key.as_str() {
                // Structure, ids and metadata: not prompt text.
                "type" | "role" | "id" | "tool_call_id" | "tool_use_id" | "call_id"
                | "cache_control" | "status" | "signature" | "index" | "annotations"
                | "citations" | "encrypted_content" | "detail" => 0,
                "name" => self.content(v, depth + 1).saturating_add(1),
                // Anthropic `tool_use.input` is a JSON object the model wrote.
                "input" if v.is_object() => self.json(v, depth + 1),
                _ => self.content(v, depth + 1),
            };
            n = n.saturating_add(add);
        }
        n
    }

    /// Anthropic document block: text sources are counted, base64 (PDF) sources estimated.
    fn document(&self, o: &Map<String, Value>, depth: usize) -> u64 {
        let mut n = ["title", "context"]
            .iter()
            .filter_map(|k| o.get(*k))
            .fold(0u64, |n, v| n.saturating_add(self.content(v, depth + 1)));
        if let Some(source) = o.get("source") {
            let add = match source.get("type").and_then(Value::as_str) {
                Some("text") => source.get("data").map_or(0, |d| self.content(d, depth + 1)),
                Some("content") => source
                    .get("content")
                    .map_or(0, |c| self.content(c, depth + 1)),
                _ => blob(string_bytes(source, depth + 1)),
            };
            n = n.saturating_add(add);
        }
        n
    }

    fn blob_part(&self, o: &Map<String, Value>, depth: usize) -> u64 {
        blob(o.values().map(|v| string_bytes(v, depth + 1)).sum())
    }

    /// JSON the model reads as JSON (tool definitions, schemas, tool inputs): keys and values,
    /// plus one token per entry for punctuation.
    fn json(&self, value: &Value, depth: usize) -> u64 {
        if depth > MAX_DEPTH {
            return 0;
        }
        match value {
            Value::String(s) => self.text(s),
            Value::Number(_) | Value::Bool(_) | Value::Null => 1,
            Value::Array(items) => items.iter().fold(1u64, |n, v| {
                n.saturating_add(1).saturating_add(self.json(v, depth + 1))
            }),
            Value::Object(o) => o.iter().fold(1u64, |n, (k, v)| {
                n.saturating_add(1)
                    .saturating_add(self.text(k))
                    .saturating_add(self.json(v, depth + 1))
            }),
        }
    }

    #[inline]
    fn text(&self, s: &str) -> u64 {
        // A data URL is binary content (an image or file), never tokenized.
        if s.len() > 256 && s.starts_with("data:") {
            return if s.starts_with("data:image/") {
                IMAGE_TOKENS
            } else {
                blob(s.len() as u64)
            };
        }
        (self.count)(s)
    }
}

fn image(o: &Map<String, Value>) -> u64 {
    let low = o.get("detail").and_then(Value::as_str) == Some("low")
        || o.get("image_url")
            .and_then(|u| u.get("detail"))
            .and_then(Value::as_str)
            == Some("low");
    if low { IMAGE_TOKENS_LOW } else { IMAGE_TOKENS }
}

fn blob(data_bytes: u64) -> u64 {
    BLOB_TOKENS.saturating_add(data_bytes / 32)
}

/// Total bytes of the strings under `value`.
fn string_bytes(value: &Value, depth: usize) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    match value {
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(|v| string_bytes(v, depth + 1)).sum(),
        Value::Object(o) => o.values().map(|v| string_bytes(v, depth + 1)).sum(),
        _ => 0,
    }
}
