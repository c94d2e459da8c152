//! JSON-aware scanning of provider bodies. Stage 5 calls [`redact_request_json`] on the parsed
//! request; stage 8 calls [`restore_response_json`] on a non-stream answer. Only the string
//! values that carry conversation text are scanned — message content (strings and text
//! parts), system prompts and instructions, tool-call arguments and tool results; keys,
//! numbers, ids, model names and the structure are never touched. Anthropic `thinking` blocks
//! are left alone (their signature covers the text).
//!
//! Shapes walked (any of them may appear in one body; unknown fields are ignored):
//! - OpenAI chat: `messages[].content` (string | parts with `text`), `messages[].tool_calls[]
//!   .function.arguments`, legacy `function_call.arguments`.
//! - OpenAI completions / embeddings: `prompt`, `input` (string | array of strings).
//! - OpenAI Responses: `instructions`, `input` (string | items: messages with `content`,
//!   `function_call.arguments`, `function_call_output.output`).
//! - Anthropic messages: `system` (string | text blocks), `messages[].content` (string |
//!   blocks: `text`, `tool_use.input` string leaves, `tool_result.content`).
//! - Answers: OpenAI `choices[].message` (`content`, `refusal`, tool-call arguments),
//!   `choices[].text`, Responses `output[]`; Anthropic `content[]` (`text`, `tool_use.input`).

use serde_json::Value;

use super::detector::Detector;
use super::redact::{Blocked, Detections, VaultAccess, rewrite};
use super::types::{Direction, PiiPolicy};
use super::vault::Vault;

/// Part/block/item `type` values the walk looks into.
const KNOWN_TYPES: [&str; 12] = [
    "text",
    "input_text",
    "output_text",
    "refusal",
    "tool_use",
    "server_tool_use",
    "tool_result",
    "function_call_output",
    "custom_tool_call_output",
    "function_call",
    "custom_tool_call",
    "message",
];

/// State of one body walk.
struct Walk<'a> {
    detector: &'a Detector,
    policy: &'a PiiPolicy,
    dir: Direction,
    vault: VaultMut<'a>,
    det: &'a mut Detections,
    blocked: Blocked,
    changed: bool,
}

enum VaultMut<'a> {
    Write(&'a mut Vault),
    Read(&'a Vault),
}

impl Walk<'_> {
    fn string(&mut self, v: &mut Value) {
        let Value::String(s) = v else { return };
        let access = match &mut self.vault {
            VaultMut::Write(v) => VaultAccess::Write(v),
            VaultMut::Read(v) => VaultAccess::Read(v),
        };
        match rewrite(self.detector, s, self.policy, self.dir, access, self.det) {
            Ok(Some(new)) => {
                *s = new;
                self.changed = true;
            }
            Ok(None) => {}
            Err(b) => self.blocked.merge(&b),
        }
    }

    fn field(&mut self, obj: &mut Value, key: &str) {
        if let Some(v) = obj.get_mut(key) {
            self.string(v);
        }
    }

    /// Every string leaf (object values, array items) — for tool inputs given as JSON objects.
    fn leaves(&mut self, v: &mut Value) {
        match v {
            Value::String(_) => self.string(v),
            Value::Array(items) => items.iter_mut().for_each(|i| self.leaves(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.leaves(i)),
            _ => {}
        }
    }

    /// A `content` value: a string, or an array of parts/blocks.
    fn content(&mut self, v: &mut Value) {
        match v {
            Value::String(_) => self.string(v),
            Value::Array(parts) => parts.iter_mut().for_each(|p| self.part(p)),
            _ => {}
        }
    }

    /// One content part (OpenAI) or block (Anthropic) or Responses item.
    fn part(&mut self, p: &mut Value) {
        if p.is_string() {
            return self.string(p);
        }
        let kind = match p.get("type") {
            None => "",
            Some(t) => KNOWN_TYPES
                .iter()
                .copied()
                .find(|k| Some(*k) == t.as_str())
                .unwrap_or("?"),
        };
        match kind {
            "text" | "input_text" | "output_text" => self.field(p, "text"),
            "refusal" => self.field(p, "refusal"),
            "tool_use" | "server_tool_use" => {
                if let Some(input) = p.get_mut("input") {
                    self.leaves(input);
                }
            }
            "tool_result" | "function_call_output" | "custom_tool_call_output" => {
                if let Some(c) = p.get_mut("content") {
                    self.content(c);
                }
                if let Some(o) = p.get_mut("output") {
                    self.content(o);
                }
            }
            "function_call" => self.field(p, "arguments"),
            "custom_tool_call" => self.field(p, "input"),
            "message" | "" => {
                // Responses message item or a role-keyed message without `type`.
                if let Some(c) = p.get_mut("content") {
                    self.content(c);
                }
                self.message_extras(p);
            }
            _ => {}
        }
    }

    /// Tool calls carried on a chat message (request history or answer).
    fn message_extras(&mut self, m: &mut Value) {
        if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
            for c in calls {
                if let Some(f) = c.get_mut("function") {
                    self.field(f, "arguments");
                }
            }
        }
        if let Some(f) = m.get_mut("function_call") {
            self.field(f, "arguments");
        }
        self.field(m, "refusal");
    }

    fn request(&mut self, body: &mut Value) {
        if let Some(Value::Array(msgs)) = body.get_mut("messages") {
            for m in msgs {
                if let Some(c) = m.get_mut("content") {
                    self.content(c);
                }
                self.message_extras(m);
            }
        }
        for key in ["system", "instructions", "prompt", "input"] {
            let Some(v) = body.get_mut(key) else { continue };
            match v {
                Value::String(_) => self.string(v),
                Value::Array(items) => items.iter_mut().for_each(|i| self.part(i)),
                _ => {}
            }
        }
    }

    fn response(&mut self, body: &mut Value) {
        if let Some(Value::Array(choices)) = body.get_mut("choices") {
            for c in choices {
                self.field(c, "text");
                if let Some(m) = c.get_mut("message") {
                    if let Some(content) = m.get_mut("content") {
                        self.content(content);
                    }
                    self.message_extras(m);
                }
            }
        }
        if let Some(Value::Array(items)) = body.get_mut("output") {
            items.iter_mut().for_each(|i| self.part(i));
        }
        self.field(body, "output_text");
        if let Some(Value::Array(blocks)) = body.get_mut("content") {
            blocks.iter_mut().for_each(|b| self.part(b));
        }
    }

    fn finish(self) -> Result<bool, Blocked> {
        if self.blocked.is_empty() {
            Ok(self.changed)
        } else {
            Err(self.blocked)
        }
    }
}

/// Redact the conversation text of a request body in place (OpenAI chat / completions /
/// embeddings / Responses, Anthropic messages). Returns whether anything changed, or
/// `Err(Blocked)` naming every blocked type found anywhere in the body.
pub fn redact_request_json(
    body: &mut Value,
    policy: &PiiPolicy,
    vault: &mut Vault,
    det: &mut Detections,
) -> Result<bool, Blocked> {
    let mut w = Walk {
        detector: Detector::global(),
        policy,
        dir: Direction::Request,
        vault: VaultMut::Write(vault),
        det,
        blocked: Blocked::new(Direction::Request),
        changed: false,
    };
    w.request(body);
    w.finish()
}

/// Restore placeholders and apply the response policy to a non-stream answer in place (OpenAI
/// chat / completions / Responses, Anthropic messages).
pub fn restore_response_json(
    body: &mut Value,
    policy: &PiiPolicy,
    vault: &Vault,
    det: &mut Detections,
) -> Result<bool, Blocked> {
    let mut w = Walk {
        detector: Detector::global(),
        policy,
        dir: Direction::Response,
        vault: VaultMut::Read(vault),
        det,
        blocked: Blocked::new(Direction::Response),
        changed: false,
    };
    w.response(body);
    w.finish()
}
