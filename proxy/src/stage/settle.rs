//! Stage 9, *settle*: what the provider says the request used, and the request's record.
//!
//! Usage comes from the provider's own report — the `usage` object of a JSON answer, the
//! forced usage chunk of an OpenAI stream, `response.completed` of the Responses API, or
//! Anthropic's `message_start` + `message_delta`. Reconciliation against the budget lease
//! (§6) plugs in here; for now the usage is recorded on the context and in the log line.

use serde_json::Value;

/// Token counts reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Anthropic cache writes.
    pub cache_write_tokens: u64,
}

fn num(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

impl Usage {
    /// Reads a `usage` object of any supported shape.
    pub fn from_usage_object(u: &Value) -> Option<Usage> {
        let u = u.as_object()?;
        if u.contains_key("prompt_tokens") || u.contains_key("completion_tokens") {
            // OpenAI chat/completions/embeddings.
            return Some(Usage {
                input_tokens: num(u.get("prompt_tokens")),
                output_tokens: num(u.get("completion_tokens")),
                cached_input_tokens: num(u
                    .get("prompt_tokens_details")
                    .and_then(|d| d.get("cached_tokens"))),
                cache_write_tokens: 0,
            });
        }
        if u.contains_key("input_tokens") || u.contains_key("output_tokens") {
            // OpenAI Responses and Anthropic.
            let cached = num(u
                .get("input_tokens_details")
                .and_then(|d| d.get("cached_tokens")))
                + num(u.get("cache_read_input_tokens"));
            return Some(Usage {
                input_tokens: num(u.get("input_tokens")),
                output_tokens: num(u.get("output_tokens")),
                cached_input_tokens: cached,
                cache_write_tokens: num(u.get("cache_creation_input_tokens")),
            });
        }
        None
    }

    /// Usage of a whole JSON answer.
    pub fn from_response(body: &Value) -> Option<Usage> {
        body.get("usage").and_then(Usage::from_usage_object)
    }

    /// Folds the usage carried by one streamed event into `acc`.
    /// Anthropic reports input in `message_start` and the running output total in
    /// `message_delta`; OpenAI reports everything in one final chunk.
    pub fn accumulate_event(acc: &mut Option<Usage>, event: &Value) {
        let found = event
            .get("usage")
            .filter(|u| !u.is_null())
            .or_else(|| event.get("message").and_then(|m| m.get("usage")))
            .or_else(|| {
                event
                    .get("response")
                    .and_then(|r| r.get("usage"))
                    .filter(|u| !u.is_null())
            });
        let Some(u) = found.and_then(Usage::from_usage_object) else {
            return;
        };
        let is_delta = event.get("type").and_then(Value::as_str) == Some("message_delta");
        match (acc.as_mut(), is_delta) {
            (Some(a), true) => {
                a.output_tokens = u.output_tokens;
                if u.input_tokens > 0 {
                    a.input_tokens = u.input_tokens;
                }
            }
            _ => *acc = Some(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openai_and_anthropic_usage() {
        let chat = json!({"usage":{"prompt_tokens":24,"completion_tokens":8,"prompt_tokens_details":{"cached_tokens":4}}});
        assert_eq!(
            Usage::from_response(&chat),
            Some(Usage {
                input_tokens: 24,
                output_tokens: 8,
                cached_input_tokens: 4,
                cache_write_tokens: 0
            })
        );
        let mut acc = None;
        Usage::accumulate_event(
            &mut acc,
            &json!({"type":"message_start","message":{"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,"output_tokens":2}}}),
        );
        Usage::accumulate_event(
            &mut acc,
            &json!({"type":"message_delta","usage":{"output_tokens":89}}),
        );
        assert_eq!(
            acc,
            Some(Usage {
                input_tokens: 472,
                output_tokens: 89,
                cached_input_tokens: 1024,
                cache_write_tokens: 0
            })
        );
        let mut acc = None;
        Usage::accumulate_event(&mut acc, &json!({"choices":[],"usage":null}));
        assert_eq!(acc, None);
        Usage::accumulate_event(
            &mut acc,
            &json!({"type":"response.completed","response":{"usage":{"input_tokens":12,"output_tokens":3}}}),
        );
        assert_eq!(acc.map(|u| u.output_tokens), Some(3));
    }
}
