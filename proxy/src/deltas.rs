//! Where generated text lives in streamed events (used by stage 8, *stream*).
//!
//! Metering counts the tokens of each delta and the response redactor rewrites them, so
//! both need the same map of an event: OpenAI chat chunks (`choices[i].delta.content`,
//! `choices[i].delta.tool_calls[j].function.arguments`), legacy completions
//! (`choices[i].text`), Responses API events (`response.output_text.delta` /
//! `response.function_call_arguments.delta` → `delta`), and Anthropic
//! `content_block_delta` (`delta.text` / `delta.partial_json`). Each delta belongs to a
//! [`Channel`] — one continuous text (a choice's content, a tool call's arguments, a content
//! block) — so a redactor can carry state across events of the same channel.

use serde_json::Value;

/// One continuous stream of generated text inside a response.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// OpenAI chat `choices[choice].delta.content` / completions `choices[choice].text`.
    Content { choice: u64 },
    /// OpenAI chat `choices[choice].delta.tool_calls[call].function.arguments`.
    ToolArguments { choice: u64, call: u64 },
    /// Responses API `output_index`/`content_index` text or arguments.
    Output { output: u64, content: u64 },
    /// Anthropic content block `index`.
    Block { index: u64 },
}

/// Location of a delta string inside the event JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Loc {
    ChatContent(usize),
    ChatTool(usize, usize),
    CompletionText(usize),
    ResponsesDelta,
    AnthropicText,
    AnthropicJson,
}

/// A delta found in an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    pub channel: Channel,
    loc: Loc,
}

fn idx(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The deltas of one event, in order.
pub fn find(event: &Value) -> Vec<(Delta, &str)> {
    let mut out = Vec::new();
    if let Some(choices) = event.get("choices").and_then(Value::as_array) {
        for (ci, choice) in choices.iter().enumerate() {
            let c = idx(choice, "index");
            if let Some(delta) = choice.get("delta") {
                if let Some(t) = delta.get("content").and_then(Value::as_str) {
                    out.push((
                        Delta {
                            channel: Channel::Content { choice: c },
                            loc: Loc::ChatContent(ci),
                        },
                        t,
                    ));
                }
                if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                    for (ti, call) in calls.iter().enumerate() {
                        if let Some(a) = call
                            .get("function")
                            .and_then(|f| f.get("arguments"))
                            .and_then(Value::as_str)
                        {
                            let channel = Channel::ToolArguments {
                                choice: c,
                                call: idx(call, "index"),
                            };
                            out.push((
                                Delta {
                                    channel,
                                    loc: Loc::ChatTool(ci, ti),
                                },
                                a,
                            ));
                        }
                    }
                }
            } else if let Some(t) = choice.get("text").and_then(Value::as_str) {
                out.push((
                    Delta {
                        channel: Channel::Content { choice: c },
                        loc: Loc::CompletionText(ci),
                    },
                    t,
                ));
            }
        }
        return out;
    }
    match event.get("type").and_then(Value::as_str) {
        Some(
            "response.output_text.delta"
            | "response.function_call_arguments.delta"
            | "response.refusal.delta",
        ) => {
            if let Some(t) = event.get("delta").and_then(Value::as_str) {
                let channel = Channel::Output {
                    output: idx(event, "output_index"),
                    content: idx(event, "content_index"),
                };
                out.push((
                    Delta {
                        channel,
                        loc: Loc::ResponsesDelta,
                    },
                    t,
                ));
            }
        }
        Some("content_block_delta") => {
            let channel = Channel::Block {
                index: idx(event, "index"),
            };
            let d = event.get("delta");
            if let Some(t) = d.and_then(|d| d.get("text")).and_then(Value::as_str) {
                out.push((
                    Delta {
                        channel,
                        loc: Loc::AnthropicText,
                    },
                    t,
                ));
            } else if let Some(t) = d
                .and_then(|d| d.get("partial_json"))
                .and_then(Value::as_str)
            {
                out.push((
                    Delta {
                        channel,
                        loc: Loc::AnthropicJson,
                    },
                    t,
                ));
            }
        }
        _ => {}
    }
    out
}

/// Replaces the text of `delta` in `event`.
pub fn set(event: &mut Value, delta: &Delta, text: String) {
    let slot = match delta.loc {
        Loc::ChatContent(ci) => event.pointer_mut(&format!("/choices/{ci}/delta/content")),
        Loc::ChatTool(ci, ti) => event.pointer_mut(&format!(
            "/choices/{ci}/delta/tool_calls/{ti}/function/arguments"
        )),
        Loc::CompletionText(ci) => event.pointer_mut(&format!("/choices/{ci}/text")),
        Loc::ResponsesDelta => event.get_mut("delta"),
        Loc::AnthropicText => event.pointer_mut("/delta/text"),
        Loc::AnthropicJson => event.pointer_mut("/delta/partial_json"),
    };
    if let Some(v) = slot {
        *v = Value::String(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_and_sets_every_shape() {
        let mut chat = json!({"choices":[{"index":0,"delta":{"content":"Hel","tool_calls":[{"index":1,"function":{"arguments":"{\"a"}}]}}]});
        let found = find(&chat);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1, "Hel");
        assert_eq!(
            found[1].0.channel,
            Channel::ToolArguments { choice: 0, call: 1 }
        );
        let d = found[1].0.clone();
        set(&mut chat, &d, "X".into());
        assert_eq!(
            chat["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "X"
        );

        let ant = json!({"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Hi"}});
        assert_eq!(find(&ant)[0].0.channel, Channel::Block { index: 2 });
        let resp = json!({"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":" there"});
        assert_eq!(find(&resp)[0].1, " there");
        let legacy = json!({"choices":[{"index":0,"text":"abc"}]});
        assert_eq!(find(&legacy)[0].1, "abc");
        assert!(find(&json!({"type":"ping"})).is_empty());
        assert!(find(&json!({"choices":[],"usage":{"prompt_tokens":1}})).is_empty());
    }
}
