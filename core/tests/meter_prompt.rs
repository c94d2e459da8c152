//! `Meter::estimate_prompt` on each agent-facing body shape (OpenAI chat, completions,
//! embeddings, responses; Anthropic messages), and `estimate_prompt_fast` against it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use iron_core::meter::{
    ANTHROPIC_TOOL_SYSTEM_PROMPT, IMAGE_TOKENS, IMAGE_TOKENS_LOW, MESSAGE_OVERHEAD, Meter,
    REPLY_PRIMING, TOOL_OVERHEAD, fast_text_bound,
};
use serde_json::{Value, json};

fn m() -> &'static Meter {
    Meter::global()
}

fn t(s: &str) -> u64 {
    m().count_text(s)
}

const PROSE: &str = "Budgets are enforced by leasing a slice of the remaining money to each proxy. \
The proxy spends its lease locally, without a network round trip, and reports what it spent every second. \
When the lease runs low it asks for more; when the budget is exhausted the request is refused with 402. \
Streams are metered chunk by chunk, so a long answer stops when the money does, not after it. ";

#[test]
fn openai_chat_messages() {
    let body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    });
    let expected = REPLY_PRIMING
        + 2 * MESSAGE_OVERHEAD
        + t("You are a helpful assistant.")
        + t("What is the capital of France?");
    assert_eq!(m().estimate_prompt(&body), expected);
    // OpenAI reports 24 prompt tokens for this body; the estimate is at or just above.
    assert!((24..=26).contains(&expected), "{expected}");
}

#[test]
fn chat_parts_names_tool_calls_and_results() {
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "name": "alice", "content": [
                {"type": "text", "text": "Describe this picture."},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(500_000))}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "Sunny, 21 °C"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    });
    let est = m().estimate_prompt(&body);
    let text = t("alice")
        + 1
        + t("Describe this picture.")
        + t("get_weather")
        + 1
        + t("{\"city\":\"Paris\"}")
        + t("Sunny, 21 °C");
    let floor = REPLY_PRIMING
        + 3 * MESSAGE_OVERHEAD
        + text
        + IMAGE_TOKENS
        + IMAGE_TOKENS_LOW
        + TOOL_OVERHEAD;
    assert!(
        est > floor,
        "{est} > {floor}: the tool definition's text counts too"
    );
    assert!(
        est < floor + 40,
        "{est}: the tool schema is a few dozen tokens, the 500 KB image is not tokenized"
    );
    assert!(
        est < ANTHROPIC_TOOL_SYSTEM_PROMPT + floor,
        "OpenAI tools get no Anthropic tool prompt"
    );
}

#[test]
fn anthropic_messages() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Call the tool.", "signature": "EuYBCkQYAiJA".repeat(50)},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "Sunny"}]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/".repeat(100_000)}},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "Weather for a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    });
    let est = m().estimate_prompt(&body);
    let text = t("You are terse.")
        + t("Weather in Paris?")
        + t("Call the tool.")
        + t("get_weather")
        + 1
        + t("Sunny");
    let floor = REPLY_PRIMING
        + 3 * MESSAGE_OVERHEAD
        + text
        + IMAGE_TOKENS
        + ANTHROPIC_TOOL_SYSTEM_PROMPT
        + TOOL_OVERHEAD;
    assert!(est > floor, "{est} > {floor}");
    assert!(
        est < floor + 50,
        "{est}: signatures and image bytes are not tokenized"
    );
}

#[test]
fn completions_and_embeddings() {
    assert_eq!(
        m().estimate_prompt(
            &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"})
        ),
        t("Say this is a test")
    );
    assert_eq!(
        m().estimate_prompt(&json!({"prompt": ["one", "two three"]})),
        t("one") + t("two three")
    );
    // Token ids count one each; arrays of token ids count their length.
    assert_eq!(m().estimate_prompt(&json!({"prompt": [1, 2, 3, 4]})), 4);
    assert_eq!(
        m().estimate_prompt(&json!({"input": [[1, 2], [3, 4, 5]]})),
        5
    );
    let input = ["The food was delicious", "and the waiter was kind"];
    assert_eq!(
        m().estimate_prompt(&json!({"model": "text-embedding-3-small", "input": input})),
        t(input[0]) + t(input[1])
    );
    assert_eq!(
        m().estimate_prompt(&json!({"input": "hello world", "encoding_format": "float"})),
        t("hello world")
    );
}

#[test]
fn responses_api() {
    let body = json!({
        "model": "gpt-5",
        "instructions": "Answer in French.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]},
            {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":\"x\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "result text"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA".repeat(1000)},
        ],
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
    });
    let est = m().estimate_prompt(&body);
    let text = t("Answer in French.")
        + t("Hello there")
        + t("lookup")
        + 1
        + t("{\"q\":\"x\"}")
        + t("result text");
    let floor = 4 * MESSAGE_OVERHEAD + text;
    assert!(est >= floor && est < floor + 20, "{est} vs {floor}");
    assert_eq!(
        m().estimate_prompt(&json!({"model": "gpt-5", "input": "Tell me a joke"})),
        t("Tell me a joke")
    );
}

#[test]
fn non_prompt_fields_do_not_count() {
    let base = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let mut noisy = base.clone();
    noisy["metadata"] = json!({"trace": PROSE});
    noisy["user"] = json!(PROSE);
    noisy["stop"] = json!(["\n\n", "END"]);
    noisy["max_tokens"] = json!(100);
    noisy["tool_choice"] = json!("auto");
    assert_eq!(m().estimate_prompt(&noisy), m().estimate_prompt(&base));
    assert_eq!(m().estimate_prompt(&json!({"messages": []})), 0);
    assert_eq!(m().estimate_prompt(&json!({})), 0);
    assert_eq!(m().estimate_prompt(&json!(null)), 0);
}

#[test]
fn deep_nesting_is_bounded() {
    let mut v = json!("leaf text");
    for _ in 0..1_000 {
        v = json!([v]);
    }
    let body = json!({"messages": [{"role": "user", "content": v.clone()}], "tools": [v]});
    // Past the depth limit the walk stops; it must not overflow the stack.
    let _ = m().estimate_prompt(&body);
    let _ = Meter::estimate_prompt_fast(&body);
}

fn chat_body(content: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a careful analyst."},
        {"role": "user", "content": content},
    ]})
}

#[test]
fn fast_estimate_is_above_the_tokenizer_on_natural_text() {
    let rust = include_str!("../src/pricing.rs");
    let samples = [
        PROSE.repeat(50),
        rust.to_owned(),
        "日本語の文章を数えます。東京は日本の首都です。".repeat(100),
        "Привет! Это проверка подсчёта токенов для русского текста. ".repeat(50),
        "Ελληνικά: η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο. ".repeat(50),
        "हिन्दी में यह एक छोटा सा परीक्षण वाक्य है। ".repeat(50),
        "Emoji 😀🎉🚀 in a sentence ✨ with some text. ".repeat(50),
        "a b c d e f g 1 2 3 4 5 6 x = y + z; ".repeat(50),
        "if (x[i] != y[j]) { return -1; } // check\n\t\t".repeat(50),
        serde_json::to_string(&json!({"rows": (0..200).map(|i| json!({"id": i, "name": format!("item {i}")})).collect::<Vec<_>>()}))
            .unwrap(),
    ];
    for s in &samples {
        let exact = m().estimate_prompt(&chat_body(s));
        let fast = Meter::estimate_prompt_fast(&chat_body(s));
        let ratio = fast as f64 / exact as f64;
        println!(
            "fast/exact = {ratio:.2} ({fast} / {exact}) for {:?}…",
            &s.chars().take(24).collect::<String>()
        );
        assert!(fast >= exact, "fast {fast} < exact {exact}");
        assert!(ratio < 2.3, "fast bound too loose: {ratio}");
    }
    assert_eq!(fast_text_bound(""), 0);
    assert_eq!(fast_text_bound("abc"), 2);
    assert_eq!(fast_text_bound("I am a cat"), 6);
    assert_eq!(fast_text_bound("1234567"), 4);
    assert_eq!(fast_text_bound("é"), 1);
    assert_eq!(fast_text_bound("日"), 1);
    assert_eq!(fast_text_bound("😀"), 2);
    // Never below one token per piece-starting run on short-word text.
    assert!(fast_text_bound("a b c d e") >= m().count_text("a b c d e"));
}

#[test]
fn fast_estimate_on_opaque_strings() {
    // Base64 and hex are not natural text: report where the fast estimate lands.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b64: String = (0..8192)
        .map(|_| char::from(B64[(next() % 64) as usize]))
        .collect();
    let hex: String = (0..8192)
        .map(|_| char::from(b"0123456789abcdef"[(next() % 16) as usize]))
        .collect();
    for (name, s) in [("base64", b64), ("hex", hex)] {
        let exact = m().count_text(&s);
        let fast = fast_text_bound(&s);
        println!(
            "{name}: fast/exact = {:.2} ({fast} / {exact})",
            fast as f64 / exact as f64
        );
        assert!(fast as f64 >= exact as f64 * 0.65, "{name}");
    }
}

#[test]
fn large_bodies_are_linear() {
    let big = PROSE.repeat(256 * 1024 / PROSE.len());
    let body = chat_body(&big);
    let started = Instant::now();
    let exact = m().estimate_prompt(&body);
    let elapsed = started.elapsed();
    assert!(
        exact > big.len() as u64 / 6 && exact < big.len() as u64 / 3,
        "{exact}"
    );
    // Generous even for an unoptimised test build (release: ~1 ms).
    assert!(elapsed.as_millis() < 2_000, "{elapsed:?}");
    // A 16 MB base64 image is not tokenized.
    let image = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{}", "Q".repeat(16 << 20))}}]}]});
    let started = Instant::now();
    assert_eq!(
        m().estimate_prompt(&image),
        REPLY_PRIMING + MESSAGE_OVERHEAD + IMAGE_TOKENS
    );
    assert!(started.elapsed().as_millis() < 100);
}
