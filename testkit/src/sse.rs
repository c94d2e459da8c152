//! A small, strict-enough server-sent-events parser for tests.
//!
//! Tests use it to split what the mock (or the proxy) streamed into events and compare them with
//! the fixtures. It follows the WHATWG event-stream rules that matter for LLM streams: `event:`
//! and `data:` fields, multi-line data joined by `\n`, comments (`:`) ignored, one optional space
//! after the colon, `\n`, `\r\n` and `\r` line endings. Unlike a browser it also keeps lines that
//! are not `field: value` pairs, in [`SseEvent::garbage`], so tests can see malformed streams.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// Lines of this block that were not valid SSE fields (kept for malformed-stream tests).
    pub garbage: Vec<String>,
}

impl SseEvent {
    /// `data` parsed as JSON, `None` when it is not JSON (e.g. `[DONE]`).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// The event name, falling back to the JSON `type` field of the data, then to `"message"`.
    /// For OpenAI chat streams (no `event:` lines) this yields `"message"` except for `[DONE]`,
    /// which yields `"[DONE]"`.
    pub fn kind(&self) -> String {
        if let Some(e) = &self.event {
            return e.clone();
        }
        if self.data == "[DONE]" {
            return "[DONE]".to_owned();
        }
        self.json()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "message".to_owned())
    }
}

/// Parse a complete event stream. Blocks without any field or garbage are skipped; a final
/// block without a terminating blank line is still returned.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let mut cur = SseEvent::default();
    let mut data_lines: Vec<&str> = Vec::new();
    let mut has_field = false;

    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        if line.is_empty() {
            if has_field || !cur.garbage.is_empty() {
                cur.data = data_lines.join("\n");
                out.push(std::mem::take(&mut cur));
            }
            data_lines.clear();
            has_field = false;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                data_lines.push(value);
                has_field = true;
            }
            "event" => {
                cur.event = Some(value.to_owned());
                has_field = true;
            }
            "id" => {
                cur.id = Some(value.to_owned());
                has_field = true;
            }
            "retry" => has_field = true,
            _ => cur.garbage.push(line.to_owned()),
        }
    }
    if has_field || !cur.garbage.is_empty() {
        cur.data = data_lines.join("\n");
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_data_and_done() {
        let evs = parse_sse("event: a\ndata: {\"x\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event.as_deref(), Some("a"));
        assert_eq!(evs[0].data, "{\"x\":1}");
        assert_eq!(evs[1].kind(), "[DONE]");
    }

    #[test]
    fn joins_multiline_data_and_handles_crlf_and_comments() {
        let evs = parse_sse(": keepalive\r\ndata: a\r\ndata:b\r\n\r\n");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "a\nb");
    }

    #[test]
    fn keeps_garbage_lines() {
        let evs = parse_sse("not sse at all\n\ndata: {}\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].garbage, vec!["not sse at all".to_owned()]);
        assert_eq!(evs[1].data, "{}");
    }

    #[test]
    fn kind_falls_back_to_json_type() {
        let evs = parse_sse("data: {\"type\":\"ping\"}\n\n");
        assert_eq!(evs[0].kind(), "ping");
    }
}
