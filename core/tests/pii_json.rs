//! JSON walks: only conversation text is rewritten; keys, numbers, ids and structure are not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iron_core::pii::{
    Action, Detections, Direction, PiiPolicy, PiiType, TypeActions, Vault, redact_request_json,
    restore_response_json,
};
use serde_json::{Value, json};

const EMAIL: &str = "alice@example.com";

fn redact(mut body: Value) -> (Value, Vault, Detections, bool) {
    let mut vault = Vault::new();
    let mut det = Detections::new();
    let changed =
        redact_request_json(&mut body, &PiiPolicy::default(), &mut vault, &mut det).unwrap();
    (body, vault, det, changed)
}

#[test]
fn openai_chat_string_parts_and_tool_calls() {
    let body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 4111111111111111u64,
        "user": "alice@example.com",
        "messages": [
            {"role": "system", "content": "You help alice@example.com."},
            {"role": "user", "content": [
                {"type": "text", "text": "Card 4111 1111 1111 1111, mail alice@example.com"},
                {"type": "image_url", "image_url": {"url": "https://x.test/alice@example.com.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {
                    "name": "send_mail",
                    "arguments": "{\"to\":\"bob@example.org\",\"cc\":\"alice@example.com\"}"
                }}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sent to bob@example.org"}
        ],
        "metadata": {"alice@example.com": "key untouched"}
    });
    let (out, vault, det, changed) = redact(body.clone());
    assert!(changed);
    let expected = json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 4111111111111111u64,
        "user": "alice@example.com",
        "messages": [
            {"role": "system", "content": "You help [EMAIL_1]."},
            {"role": "user", "content": [
                {"type": "text", "text": "Card [CREDIT_CARD_1], mail [EMAIL_1]"},
                {"type": "image_url", "image_url": {"url": "https://x.test/alice@example.com.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {
                    "name": "send_mail",
                    "arguments": "{\"to\":\"[EMAIL_2]\",\"cc\":\"[EMAIL_1]\"}"
                }}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sent to [EMAIL_2]"}
        ],
        "metadata": {"alice@example.com": "key untouched"}
    });
    assert_eq!(out, expected);
    // Tool arguments stay valid JSON.
    let args = out["messages"][2]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert!(serde_json::from_str::<Value>(args).is_ok());
    assert_eq!(vault.original(PiiType::Email, 1), Some(EMAIL));
    assert_eq!(
        det.get(PiiType::Email, Direction::Request, Action::Redact),
        5
    );
}

#[test]
fn unchanged_body_reports_false() {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there, 2 + 2?"}]});
    let (out, vault, det, changed) = redact(body.clone());
    assert!(!changed);
    assert_eq!(out, body);
    assert!(vault.is_empty() && det.is_empty());
}

#[test]
fn openai_responses_and_completions_and_embeddings() {
    let body = json!({
        "model": "gpt-4.1",
        "instructions": "Reply to alice@example.com",
        "input": [
            {"role": "user", "content": "my ip is 10.0.0.7"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ssn 536-22-8145"}]},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{\"ip\":\"10.0.0.7\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "owner alice@example.com"}
        ]
    });
    let (out, _, _, changed) = redact(body);
    assert!(changed);
    assert_eq!(out["instructions"], "Reply to [EMAIL_1]");
    assert_eq!(out["input"][0]["content"], "my ip is [IP_ADDRESS_1]");
    assert_eq!(out["input"][1]["content"][0]["text"], "ssn [US_SSN_1]");
    assert_eq!(out["input"][2]["arguments"], "{\"ip\":\"[IP_ADDRESS_1]\"}");
    assert_eq!(out["input"][2]["call_id"], "c1");
    assert_eq!(out["input"][3]["output"], "owner [EMAIL_1]");

    let (out, _, _, _) = redact(json!({"model": "m", "input": "mail alice@example.com"}));
    assert_eq!(out["input"], "mail [EMAIL_1]");
    let (out, _, _, _) =
        redact(json!({"model": "m", "input": ["a alice@example.com", "b"], "dimensions": 256}));
    assert_eq!(
        out,
        json!({"model": "m", "input": ["a [EMAIL_1]", "b"], "dimensions": 256})
    );
    let (out, _, _, _) = redact(json!({"model": "m", "input": [[1, 2, 3]]}));
    assert_eq!(out, json!({"model": "m", "input": [[1, 2, 3]]}));
    let (out, _, _, _) = redact(json!({"model": "m", "prompt": ["x alice@example.com"], "n": 2}));
    assert_eq!(
        out,
        json!({"model": "m", "prompt": ["x [EMAIL_1]"], "n": 2})
    );
}

#[test]
fn anthropic_messages() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Operator alice@example.com", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Call +44 20 7946 0958"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "alice@example.com", "signature": "sig"},
                {"type": "text", "text": "Looking up alice@example.com"},
                {"type": "tool_use", "id": "toolu_1", "name": "crm", "input": {
                    "email": "alice@example.com", "limit": 5, "tags": ["x", "bob@example.org"],
                    "nested": {"phone": "+44 20 7946 0958"}
                }}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found bob@example.org"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "ip 10.0.0.7"}
            ]}
        ]
    });
    let (out, _, _, changed) = redact(body);
    assert!(changed);
    assert_eq!(out["system"][0]["text"], "Operator [EMAIL_1]");
    assert_eq!(out["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(out["messages"][0]["content"], "Call [PHONE_1]");
    assert_eq!(
        out["messages"][1]["content"][0]["thinking"],
        "alice@example.com"
    );
    assert_eq!(
        out["messages"][1]["content"][1]["text"],
        "Looking up [EMAIL_1]"
    );
    let input = &out["messages"][1]["content"][2]["input"];
    assert_eq!(
        input,
        &json!({"email": "[EMAIL_1]", "limit": 5, "tags": ["x", "[EMAIL_2]"], "nested": {"phone": "[PHONE_1]"}})
    );
    assert_eq!(out["messages"][1]["content"][2]["id"], "toolu_1");
    assert_eq!(
        out["messages"][2]["content"][0]["content"][0]["text"],
        "found [EMAIL_2]"
    );
    assert_eq!(
        out["messages"][2]["content"][1]["content"],
        "ip [IP_ADDRESS_1]"
    );
    assert_eq!(out["max_tokens"], 1024);

    let (out, _, _, _) = redact(json!({"system": "You serve alice@example.com", "messages": []}));
    assert_eq!(out["system"], "You serve [EMAIL_1]");
}

#[test]
fn block_in_json_names_types() {
    let mut body = json!({"messages": [
        {"role": "user", "content": "ssn 536-22-8145"},
        {"role": "user", "content": [{"type": "text", "text": "key AKIAIOSFODNN7EXAMPLE"}]}
    ]});
    let policy = PiiPolicy {
        request: TypeActions::uniform(Action::Block),
        ..PiiPolicy::default()
    };
    let mut vault = Vault::new();
    let mut det = Detections::new();
    let err = redact_request_json(&mut body, &policy, &mut vault, &mut det).unwrap_err();
    assert_eq!(err.types, vec![PiiType::UsSsn, PiiType::Secret]);
    assert_eq!(
        err.to_string(),
        "request contains PII of blocked type(s): US_SSN, SECRET"
    );
}

#[test]
fn responses_are_restored() {
    let mut vault = Vault::new();
    let mut det = Detections::new();
    let mut req = json!({"messages": [{"role": "user", "content": "mail alice@example.com about 4111 1111 1111 1111"}]});
    redact_request_json(&mut req, &PiiPolicy::default(), &mut vault, &mut det).unwrap();
    let policy = PiiPolicy::default();

    let mut chat = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1761830520,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant",
            "content": "I emailed [EMAIL_1]; also try carol@example.net.",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"card\":\"[CREDIT_CARD_1]\"}"}}]
        }}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 8}
    });
    assert!(restore_response_json(&mut chat, &policy, &vault, &mut det).unwrap());
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "I emailed alice@example.com; also try [REDACTED:EMAIL]."
    );
    assert_eq!(
        chat["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"card\":\"4111 1111 1111 1111\"}"
    );
    assert_eq!(chat["usage"]["prompt_tokens"], 24);

    let mut completion = json!({"choices": [{"text": "to [EMAIL_1]", "index": 0}]});
    assert!(restore_response_json(&mut completion, &policy, &vault, &mut det).unwrap());
    assert_eq!(completion["choices"][0]["text"], "to alice@example.com");

    let mut responses = json!({"output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi [EMAIL_1]", "annotations": []}]},
        {"type": "function_call", "name": "f", "arguments": "{\"to\":\"[EMAIL_1]\"}"}
    ]});
    assert!(restore_response_json(&mut responses, &policy, &vault, &mut det).unwrap());
    assert_eq!(
        responses["output"][1]["content"][0]["text"],
        "hi alice@example.com"
    );
    assert_eq!(
        responses["output"][2]["arguments"],
        "{\"to\":\"alice@example.com\"}"
    );

    let mut anthropic = json!({"type": "message", "role": "assistant", "content": [
        {"type": "text", "text": "Sent to [EMAIL_1]."},
        {"type": "tool_use", "id": "t", "name": "pay", "input": {"card": "[CREDIT_CARD_1]", "amount": 5}}
    ], "usage": {"input_tokens": 10, "output_tokens": 3}});
    assert!(restore_response_json(&mut anthropic, &policy, &vault, &mut det).unwrap());
    assert_eq!(
        anthropic["content"][0]["text"],
        "Sent to alice@example.com."
    );
    assert_eq!(
        anthropic["content"][1]["input"],
        json!({"card": "4111 1111 1111 1111", "amount": 5})
    );

    let block = PiiPolicy {
        response: TypeActions::default().with(PiiType::Email, Action::Block),
        ..PiiPolicy::default()
    };
    let mut bad = json!({"content": [{"type": "text", "text": "new dave@example.com"}]});
    let err = restore_response_json(&mut bad, &block, &vault, &mut det).unwrap_err();
    assert_eq!(
        err.to_string(),
        "response contains PII of blocked type(s): EMAIL"
    );
    assert_eq!(err.direction, Direction::Response);
}
