//! Deterministic answers and token counts: the one place that decides what the mock says and
//! how many tokens it reports, so JSON and stream answers of the same request always agree.
//!
//! Rules (tests across the workspace rely on them):
//! - **prompt / input tokens** = `ceil(bytes of all message text / 4)`, at least 1. "Message
//!   text" is every string content and every `text` part of the request's messages (plus
//!   `system` for Anthropic, `instructions` + `input` for Responses, `prompt` for completions,
//!   `input` for embeddings; pre-tokenized inputs count one token per element).
//! - **completion / output tokens** = number of whitespace-separated words of the answer
//!   (of the tool-call arguments with `tools`), or exactly `N` with `tokens: N`.
//! - **answer**: `tokens: N` → `"tok "` × N (one piece per chunk); else `answer`; else with
//!   `echo` the text of the last user message; else [`DEFAULT_ANSWER`].
//! - **stream pieces**: the answer is split into `chunks` (default 8) pieces, by words when it
//!   has at least that many words, else by characters (never inside a UTF-8 character).
//!   Tool-call arguments are always split by characters.
//! - **byte pieces**: with `chunk_bytes: N` (header `x-mock-chunk-bytes`) the answer text or
//!   the tool-call arguments are instead cut every N bytes, regardless of words, so a value
//!   such as an e-mail address arrives split across deltas; a cut that would fall inside a
//!   UTF-8 character moves forward to the next character boundary. `chunks` is then ignored.
//! - **cached tokens**: `cached_tokens` (default 0), reported as OpenAI
//!   `prompt_tokens_details.cached_tokens` and Anthropic `cache_read_input_tokens`.

use serde_json::Value;

use super::scenario::{DEFAULT_ANSWER, Scenario};

/// Default tool-call arguments, as in the OpenAI fixture.
pub(crate) const DEFAULT_TOOL_ARGUMENTS: &str = r#"{"location": "Paris"}"#;
/// Default tool name when the request declares no tools.
pub(crate) const DEFAULT_TOOL_NAME: &str = "get_weather";

/// What the mock answers for one request.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub output: Output,
}

#[derive(Clone, Debug)]
pub(crate) enum Output {
    Text {
        text: String,
        pieces: Vec<String>,
    },
    Tool {
        name: String,
        arguments: String,
        pieces: Vec<String>,
    },
}

impl Plan {
    /// Build the plan from the request's prompt text parts, last user message and tool name.
    pub(crate) fn new(
        scn: &Scenario,
        prompt_tokens: usize,
        last_user: Option<String>,
        tool_name: Option<String>,
    ) -> Plan {
        let cached_tokens = scn.cached_tokens.unwrap_or(0);
        if scn.tools {
            let arguments = match (&scn.answer, scn.echo) {
                (Some(a), _) if is_json_object(a) => a.clone(),
                (Some(a), _) => serde_json::json!({ "text": a }).to_string(),
                (None, true) => {
                    serde_json::json!({ "text": last_user.unwrap_or_default() }).to_string()
                }
                (None, false) => DEFAULT_TOOL_ARGUMENTS.to_owned(),
            };
            let completion_tokens = scn
                .tokens
                .unwrap_or_else(|| arguments.split_whitespace().count());
            let pieces = match scn.chunk_bytes.filter(|&n| n > 0) {
                Some(n) => split_bytes(&arguments, n),
                None => split_chars(&arguments, scn.chunk_count()),
            };
            return Plan {
                prompt_tokens,
                cached_tokens,
                completion_tokens,
                output: Output::Tool {
                    name: tool_name.unwrap_or_else(|| DEFAULT_TOOL_NAME.to_owned()),
                    arguments,
                    pieces,
                },
            };
        }
        let (text, pieces, completion_tokens) = if let Some(n) = scn.tokens {
            ("tok ".repeat(n), vec!["tok ".to_owned(); n], n)
        } else {
            let text = match (&scn.answer, scn.echo) {
                (Some(a), _) => a.clone(),
                (None, true) => last_user.unwrap_or_default(),
                (None, false) => DEFAULT_ANSWER.to_owned(),
            };
            let pieces = match scn.chunk_bytes.filter(|&n| n > 0) {
                Some(n) => split_bytes(&text, n),
                None => split_pieces(&text, scn.chunk_count()),
            };
            let words = text.split_whitespace().count();
            (text, pieces, words)
        };
        Plan {
            prompt_tokens,
            cached_tokens,
            completion_tokens,
            output: Output::Text { text, pieces },
        }
    }

    pub(crate) fn total_tokens(&self) -> usize {
        self.prompt_tokens + self.completion_tokens
    }

    /// The stream pieces (text deltas or argument deltas).
    pub(crate) fn pieces(&self) -> &[String] {
        match &self.output {
            Output::Text { pieces, .. } | Output::Tool { pieces, .. } => pieces,
        }
    }

    /// Prompt tokens counted as cached, never more than the prompt (OpenAI semantics).
    pub(crate) fn openai_cached(&self) -> usize {
        self.cached_tokens.min(self.prompt_tokens)
    }
}

fn is_json_object(s: &str) -> bool {
    matches!(serde_json::from_str::<Value>(s), Ok(Value::Object(_)))
}

/// `ceil(bytes / 4)`, at least 1.
pub(crate) fn tokens_for_bytes(bytes: usize) -> usize {
    bytes.div_ceil(4).max(1)
}

/// Accumulates the bytes of prompt text (and pre-tokenized inputs) of a request.
#[derive(Default, Debug)]
pub(crate) struct PromptCounter {
    bytes: usize,
    pretokenized: usize,
}

impl PromptCounter {
    pub(crate) fn text(&mut self, s: &str) {
        self.bytes += s.len();
    }

    /// Add every text in a message `content` (string, or array of parts with `text`, or
    /// nested `content` as in Anthropic `tool_result` blocks).
    pub(crate) fn content(&mut self, v: &Value) {
        for t in content_texts(v) {
            self.text(t);
        }
    }

    /// A prompt / input that is a string, an array of strings, an array of token ids, or an
    /// array of arrays of token ids.
    pub(crate) fn input(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text(s),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(s) => self.text(s),
                        Value::Number(_) => self.pretokenized += 1,
                        Value::Array(toks) => self.pretokenized += toks.len(),
                        other => self.content(other),
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn tokens(&self) -> usize {
        if self.bytes == 0 && self.pretokenized > 0 {
            self.pretokenized
        } else {
            tokens_for_bytes(self.bytes) + self.pretokenized
        }
    }
}

/// Every text string inside a message content value.
pub(crate) fn content_texts(v: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    collect_texts(v, &mut out);
    out
}

fn collect_texts<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => {
            for i in items {
                collect_texts(i, out);
            }
        }
        Value::Object(map) => {
            if let Some(Value::String(t)) = map.get("text") {
                out.push(t);
            }
            if let Some(c) = map.get("content") {
                collect_texts(c, out);
            }
        }
        _ => {}
    }
}

/// The text of a content value, parts joined by `\n`.
pub(crate) fn content_text(v: &Value) -> String {
    content_texts(v).join("\n")
}

/// The content text of the last message with `role == "user"` in `messages`.
pub(crate) fn last_user_text(messages: Option<&Value>) -> Option<String> {
    messages?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
}

/// Split `text` into `n` pieces: by words (each word keeps its trailing whitespace) when it
/// has at least `n` words, else by characters. Concatenating the pieces gives `text` back.
pub(crate) fn split_pieces(text: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    if text.is_empty() {
        return vec![String::new()];
    }
    let starts = word_starts(text);
    if starts.len() >= n {
        let len = starts.len();
        (0..n)
            .map(|i| {
                let from = starts[i * len / n];
                let to = if i + 1 == n {
                    text.len()
                } else {
                    starts[(i + 1) * len / n]
                };
                text[from..to].to_owned()
            })
            .collect()
    } else {
        split_chars(text, n)
    }
}

/// Byte offsets where each word unit starts (the first unit also holds leading whitespace).
fn word_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut prev_ws = true;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && prev_ws {
            starts.push(i);
        }
        prev_ws = ws;
    }
    match starts.first() {
        None => vec![0],
        Some(_) => {
            starts[0] = 0;
            starts
        }
    }
}

/// Split `text` into consecutive pieces of `n` bytes (at least 1); a piece that would end
/// inside a UTF-8 character runs on to the next character boundary, and the last piece holds
/// the rest. Concatenating the pieces gives `text` back.
pub(crate) fn split_bytes(text: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    if text.is_empty() {
        return vec![String::new()];
    }
    let mut pieces = Vec::with_capacity(text.len().div_ceil(n));
    let mut from = 0;
    while from < text.len() {
        let mut to = (from + n).min(text.len());
        while !text.is_char_boundary(to) {
            to += 1;
        }
        pieces.push(text[from..to].to_owned());
        from = to;
    }
    pieces
}

/// Split `text` into `min(n, chars)` pieces of nearly equal character counts.
pub(crate) fn split_chars(text: &str, n: usize) -> Vec<String> {
    let idx: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let chars = idx.len();
    if chars == 0 {
        return vec![String::new()];
    }
    let m = n.clamp(1, chars);
    (0..m)
        .map(|i| {
            let from = idx[i * chars / m];
            let to = if i + 1 == m {
                text.len()
            } else {
                idx[(i + 1) * chars / m]
            };
            text[from..to].to_owned()
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pieces_concatenate_back_and_have_requested_count() {
        for text in [
            DEFAULT_ANSWER,
            "a",
            "héllo wörld [EMAIL_1] ok",
            "  lead and trail  ",
        ] {
            for n in 1..20 {
                let p = split_pieces(text, n);
                assert_eq!(p.concat(), text, "text {text:?} n {n}");
                let chars = text.chars().count();
                assert_eq!(p.len(), n.min(chars), "text {text:?} n {n}");
            }
        }
        assert_eq!(split_pieces("", 5), vec![String::new()]);
    }

    #[test]
    fn byte_pieces_cut_inside_words_but_never_inside_a_char() {
        let text = "Mail bob@corp.example.org now";
        let p = split_bytes(text, 7);
        assert_eq!(
            p,
            ["Mail bo", "b@corp.", "example", ".org no", "w"].map(str::to_owned)
        );
        // "é" is 2 bytes at offsets 6..8: the cut at 7 would fall inside it, so the first
        // piece runs on to 8.
        let p = split_bytes("abcdefé1234567", 7);
        assert_eq!(p, ["abcdefé", "1234567"].map(str::to_owned));
        let p = split_bytes("abcdeféghijklmn", 7);
        assert_eq!(p, ["abcdefé", "ghijklm", "n"].map(str::to_owned));
        for text in [DEFAULT_ANSWER, "héllo wörld ✓✓✓ [EMAIL_1]", "a"] {
            for n in 1..12 {
                let p = split_bytes(text, n);
                assert_eq!(p.concat(), text);
                assert!(p.iter().all(|x| !x.is_empty() && x.len() < n + 4));
                assert!(p[..p.len() - 1].iter().all(|x| x.len() >= n));
            }
        }
        assert_eq!(split_bytes("", 7), vec![String::new()]);
    }

    #[test]
    fn chunk_bytes_takes_precedence_over_chunks() {
        let s = Scenario {
            answer: Some("one two three four five".into()),
            chunks: Some(2),
            chunk_bytes: Some(4),
            ..Default::default()
        };
        let p = Plan::new(&s, 1, None, None);
        assert_eq!(
            p.pieces(),
            ["one ", "two ", "thre", "e fo", "ur f", "ive"].map(str::to_owned)
        );
        assert_eq!(p.completion_tokens, 5);
        let tools = Scenario {
            tools: true,
            chunk_bytes: Some(5),
            ..s
        };
        let p = Plan::new(&tools, 1, None, None);
        assert!(p.pieces().iter().all(|x| x.len() <= 5));
        assert_eq!(
            p.pieces().len(),
            r#"{"text":"one two three four five"}"#.len().div_ceil(5)
        );
    }

    #[test]
    fn word_split_keeps_words_whole() {
        let p = split_pieces("one two three four", 2);
        assert_eq!(p, vec!["one two ".to_owned(), "three four".to_owned()]);
    }

    #[test]
    fn token_rules() {
        assert_eq!(tokens_for_bytes(0), 1);
        assert_eq!(tokens_for_bytes(4), 1);
        assert_eq!(tokens_for_bytes(5), 2);
        let s = Scenario {
            tokens: Some(5),
            ..Default::default()
        };
        let p = Plan::new(&s, 3, None, None);
        assert_eq!(p.completion_tokens, 5);
        assert_eq!(p.pieces().len(), 5);
        let p = Plan::new(&Scenario::default(), 3, None, None);
        assert_eq!(p.completion_tokens, 10);
        assert_eq!(p.pieces().len(), 8);
    }

    #[test]
    fn content_texts_walks_parts() {
        let v = json!([{"type":"text","text":"a"},{"type":"tool_result","content":[{"type":"text","text":"b"}]}]);
        assert_eq!(content_texts(&v), vec!["a", "b"]);
        let msgs = json!([{"role":"user","content":"x"},{"role":"assistant","content":"y"}]);
        assert_eq!(last_user_text(Some(&msgs)).unwrap(), "x");
    }

    #[test]
    fn tools_arguments() {
        let s = Scenario {
            tools: true,
            echo: true,
            ..Default::default()
        };
        let p = Plan::new(&s, 1, Some("hi [EMAIL_1]".into()), Some("lookup".into()));
        match p.output {
            Output::Tool {
                name, arguments, ..
            } => {
                assert_eq!(name, "lookup");
                assert_eq!(
                    serde_json::from_str::<Value>(&arguments).unwrap(),
                    json!({"text":"hi [EMAIL_1]"})
                );
            }
            Output::Text { .. } => unreachable!(),
        }
    }
}
