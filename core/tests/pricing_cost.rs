//! `ModelPrice::cost` to the micro-dollar on the provider usages of the shared fixtures
//! (`shared/fixtures/*`, copied inline), cache reads and writes, long context, rounding and
//! saturation; `TokenUsage` reading each provider's usage shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iron_core::Money;
use iron_core::pricing::{LongContextPrice, ModelPrice, PriceTable, TokenUsage};
use proptest::prelude::*;
use serde_json::json;

fn price(model: &str) -> ModelPrice {
    *PriceTable::builtin().price_for(model, None).unwrap()
}

fn usage(v: serde_json::Value) -> TokenUsage {
    TokenUsage::from_usage_json(&v).unwrap()
}

#[test]
fn openai_chat_fixture() {
    // openai-chat.json: gpt-4o-mini-2024-07-18, 24 prompt + 8 completion tokens.
    let u = usage(
        json!({"prompt_tokens":24,"completion_tokens":8,"total_tokens":32,
        "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
        "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}),
    );
    assert_eq!(u, TokenUsage::openai(24, 0, 8));
    // 24 × $0.15/M + 8 × $0.60/M = 8.4 µ$ → 9 µ$ (rounded up).
    assert_eq!(price("gpt-4o-mini-2024-07-18").cost(&u), Money(9));
}

#[test]
fn openai_stream_usage_fixture() {
    // openai-chat-stream-usage.sse: final chunk usage, 19 + 2 tokens: 4.05 µ$ → 5.
    let u = usage(
        json!({"prompt_tokens":19,"completion_tokens":2,"total_tokens":21,
        "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0}}),
    );
    assert_eq!(price("gpt-4o-mini-2024-07-18").cost(&u), Money(5));
}

#[test]
fn openai_responses_fixture() {
    // openai-responses-stream.sse: response.completed usage, 12 + 3 tokens: 3.6 µ$ → 4.
    let u = usage(
        json!({"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":3,
        "output_tokens_details":{"reasoning_tokens":0},"total_tokens":15}),
    );
    assert_eq!(u, TokenUsage::openai(12, 0, 3));
    assert_eq!(price("gpt-4o-mini-2024-07-18").cost(&u), Money(4));
}

#[test]
fn anthropic_stream_fixture() {
    // anthropic-messages-stream.sse: message_start usage (input 472, cache read 1024), then
    // message_delta output_tokens 89 (cumulative; it replaces message_start's 2).
    let start = usage(
        json!({"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,
        "output_tokens":2,"service_tier":"standard"}),
    );
    let delta = usage(json!({"output_tokens":89}));
    assert_eq!(delta, TokenUsage::output(89));
    let u = TokenUsage {
        output_tokens: delta.output_tokens,
        ..start
    };
    assert_eq!(u, TokenUsage::anthropic(472, 0, 1024, 89));
    assert_eq!(u.input_tokens, 1496);
    assert_eq!(u.uncached_input_tokens(), 472);
    // 472 × $3 + 1024 × $0.30 + 89 × $15 (per M) = 3058.2 µ$ → 3059.
    assert_eq!(price("claude-sonnet-4-5-20250929").cost(&u), Money(3059));
}

#[test]
fn anthropic_error_stream_fixture() {
    // anthropic-messages-stream-error.sse: input 25, output 1 → 75 + 15 = 90 µ$ exactly.
    let u = usage(json!({"input_tokens":25,"output_tokens":1}));
    assert_eq!(price("claude-sonnet-4-5-20250929").cost(&u), Money(90));
}

#[test]
fn openai_cached_input() {
    // gpt-4o: 2000 prompt tokens of which 1536 cached, 300 completion.
    // 464 × 2.5 + 1536 × 1.25 + 300 × 10 = 1160 + 1920 + 3000 = 6080 µ$.
    let u = usage(
        json!({"prompt_tokens":2000,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1536}}),
    );
    assert_eq!(u.cached_input_tokens, 1536);
    assert_eq!(price("gpt-4o").cost(&u), Money(6080));
}

#[test]
fn anthropic_cache_write() {
    // haiku 4.5: 100 uncached, 2000 written, 50 out: 100 × 1 + 2000 × 1.25 + 50 × 5 = 2850 µ$.
    let u = usage(
        json!({"input_tokens":100,"cache_creation_input_tokens":2000,"cache_read_input_tokens":0,"output_tokens":50}),
    );
    assert_eq!(u, TokenUsage::anthropic(100, 2000, 0, 50));
    assert_eq!(u.input_tokens, 2100);
    assert_eq!(u.cache_write_tokens, 2000);
    assert_eq!(price("claude-haiku-4-5").cost(&u), Money(2850));
}

#[test]
fn anthropic_long_context() {
    let p = price("claude-sonnet-4-5");
    // 150k uncached + 60k cache read = 210k > 200k: every token at the long-context rates.
    // 150000 × 6 + 60000 × 0.6 + 1000 × 22.5 = 900000 + 36000 + 22500 µ$.
    let u = TokenUsage::anthropic(150_000, 0, 60_000, 1_000);
    assert_eq!(p.cost(&u), Money(958_500));
    // Exactly at the threshold: base rates. 200000 × 3 + 1000 × 15.
    let u = TokenUsage::anthropic(200_000, 0, 0, 1_000);
    assert_eq!(p.cost(&u), Money(615_000));
}

#[test]
fn embeddings() {
    let u = usage(json!({"prompt_tokens":8,"total_tokens":8}));
    assert_eq!(u, TokenUsage::openai(8, 0, 0));
    // 8 × $0.02/M = 0.16 µ$ → 1 µ$: never free.
    assert_eq!(price("text-embedding-3-small").cost(&u), Money(1));
    assert_eq!(
        price("text-embedding-3-large").cost(&TokenUsage::openai(1_000_000, 0, 0)),
        Money(130_000)
    );
}

#[test]
fn reasoning_model() {
    // o3: 1000 in, 5000 out (reasoning included): 1000 × 2 + 5000 × 8 = 42000 µ$.
    let u = usage(json!({"prompt_tokens":1000,"completion_tokens":5000,
        "completion_tokens_details":{"reasoning_tokens":4500}}));
    assert_eq!(price("o3-2025-04-16").cost(&u), Money(42_000));
}

#[test]
fn rounding_and_saturation() {
    let p = ModelPrice::flat(1, 1);
    assert_eq!(p.cost(&TokenUsage::default()), Money(0));
    assert_eq!(p.cost(&TokenUsage::openai(1, 0, 0)), Money(1));
    // Rounded once per request, not per kind of token: 0.5 + 0.5 µ$ = 1 µ$.
    let p = ModelPrice {
        input: 500_000,
        cached_input: 500_000,
        cache_write: 500_000,
        output: 500_000,
        long_context: None,
    };
    assert_eq!(p.cost(&TokenUsage::openai(1, 0, 1)), Money(1));
    // Saturates, never wraps.
    let max = ModelPrice::flat(u64::MAX, u64::MAX);
    let huge = TokenUsage {
        input_tokens: u64::MAX,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        output_tokens: u64::MAX,
    };
    assert_eq!(max.cost(&huge), Money(u64::MAX));
    // Inconsistent usage (more cached than input) charges the cached tokens, no underflow.
    let p = price("gpt-4o");
    let odd = TokenUsage {
        input_tokens: 10,
        cached_input_tokens: 20,
        cache_write_tokens: 0,
        output_tokens: 0,
    };
    assert_eq!(p.cost(&odd), Money(25));
    assert_eq!(p.output_cost(3), Money(30));
    assert_eq!(p.input_cost(1000), Money(2500));
}

#[test]
fn usage_shapes() {
    assert_eq!(TokenUsage::from_usage_json(&json!({"foo": 1})), None);
    assert_eq!(TokenUsage::from_usage_json(&json!(null)), None);
    // OpenAI `usage: null` on stream chunks is not usage.
    assert_eq!(TokenUsage::from_usage_json(&json!({"usage": null})), None);
    // Responses usage without details but with total_tokens is OpenAI-shaped.
    assert_eq!(
        usage(json!({"input_tokens":5,"output_tokens":1,"total_tokens":6})),
        TokenUsage::openai(5, 0, 1)
    );
}

fn long_context_price() -> ModelPrice {
    ModelPrice {
        input: 3_000_000,
        cached_input: 300_000,
        cache_write: 3_750_000,
        output: 15_000_000,
        long_context: Some(LongContextPrice {
            above_input_tokens: 200_000,
            input: 6_000_000,
            cached_input: 600_000,
            cache_write: 7_500_000,
            output: 22_500_000,
        }),
    }
}

proptest! {
    /// The single rounding is exact: cost × 10⁶ ≥ the exact price and less than one µ$ above.
    #[test]
    fn cost_is_exact_rounded_up(input in 0u64..10_000_000, cached in 0u64..10_000_000, write in 0u64..10_000_000,
                                output in 0u64..10_000_000) {
        let p = long_context_price();
        let u = TokenUsage::anthropic(input, write, cached, output);
        let rates = if u.input_tokens > 200_000 { (6_000_000u128, 600_000u128, 7_500_000u128, 22_500_000u128) }
                    else { (3_000_000, 300_000, 3_750_000, 15_000_000) };
        let exact = u128::from(input) * rates.0 + u128::from(cached) * rates.1 + u128::from(write) * rates.2
            + u128::from(output) * rates.3;
        let cost = u128::from(p.cost(&u).micros());
        prop_assert!(cost * 1_000_000 >= exact);
        prop_assert!(cost * 1_000_000 < exact + 1_000_000);
    }

    /// More tokens never cost less (below the long-context jump).
    #[test]
    fn cost_is_monotonic(a in 0u64..1_000_000, b in 0u64..1_000_000, extra in 0u64..1_000) {
        let p = price("gpt-4.1");
        let base = TokenUsage::openai(a, a / 2, b);
        prop_assert!(p.cost(&TokenUsage::openai(a + extra, a / 2, b)) >= p.cost(&base));
        prop_assert!(p.cost(&TokenUsage::openai(a, a / 2, b + extra)) >= p.cost(&base));
    }
}
