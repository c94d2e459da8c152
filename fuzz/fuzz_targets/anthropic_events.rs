//! Fuzz target for the streamed-event handling of stage 8 (*stream*) and the usage fold of
//! stage 9 (*settle*), Anthropic and OpenAI shapes alike: upstream SSE bytes are decoded
//! (`iron_core::sse`), each JSON `data` is folded into the usage (`settle::accumulate_event`,
//! `TokenUsage::from_usage_json`), its text deltas are found (`deltas::find`), metered
//! (`DeltaMeter`, `ModelPrice::output_cost`) and rewritten (`deltas::set`), and the usage is
//! priced (`ModelPrice::cost`); upstream error bodies are scrubbed of the provider key
//! (`stream::scrub`). Invariants: no panic; the metered token total and the charged output cost
//! never decrease and each chunk's charge is the difference of running totals; a
//! `message_delta` without input counts keeps the input counts of `message_start`; the
//! settled cost is at least the output cost; a delta set by `deltas::set` reads back; a
//! scrubbed body no longer contains the key.
//! Input layout: byte 0 = price selector, then the upstream body (SSE bytes).
#![no_main]

use bytes::Bytes;
use iron_core::Money;
use iron_core::meter::DeltaMeter;
use iron_core::pricing::{ModelPrice, PriceTable, TokenUsage};
use iron_core::sse::SseDecoder;
use iron_proxy::deltas;
use iron_proxy::stage::{settle, stream};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KEY: &str = "sk-ant-api03-fuzzKEY0123456789";

fn price(sel: u8) -> ModelPrice {
    match sel % 4 {
        0 => PriceTable::builtin()
            .lookup("claude-sonnet-4-5")
            .cloned()
            .unwrap_or(ModelPrice::flat(3_000_000, 15_000_000)),
        1 => ModelPrice::flat(u64::MAX, u64::MAX),
        2 => ModelPrice::flat(0, 1),
        _ => ModelPrice::flat(u64::from(sel), u64::from(sel) * 7),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let price = price(sel);
    let flat = price.long_context.is_none();

    let scrubbed = stream::scrub(Bytes::copy_from_slice(body), KEY);
    assert!(
        memchr_find(&scrubbed, KEY.as_bytes()).is_none(),
        "key survived scrub"
    );

    let mut dec = SseDecoder::with_max_event_bytes(64 * 1024);
    dec.push(body);
    let mut meter = DeltaMeter::new();
    let mut charged = Money::ZERO;
    let mut usage: Option<TokenUsage> = None;
    let mut events = Vec::new();
    while let Ok(Some(ev)) = dec.next_event() {
        events.push(ev);
    }
    events.extend(dec.finish());

    for ev in events {
        let _ = ev.event_name();
        let Ok(mut json) = serde_json::from_slice::<Value>(&ev.data) else {
            continue;
        };
        // Stage 9 fold.
        let before = usage;
        settle::accumulate_event(&mut usage, &json);
        let is_delta = json.get("type").and_then(Value::as_str) == Some("message_delta");
        if let (Some(b), Some(a), true) = (before, usage, is_delta) {
            let reported = json
                .get("usage")
                .filter(|u| !u.is_null())
                .and_then(TokenUsage::from_usage_json);
            if reported.is_some_and(|r| r.input_tokens == 0) {
                assert_eq!(a.input_tokens, b.input_tokens, "message_delta lost input");
                assert_eq!(a.cached_input_tokens, b.cached_input_tokens);
                assert_eq!(a.cache_write_tokens, b.cache_write_tokens);
            }
        }
        if let Some(u) = usage {
            let cost = price.cost(&u);
            if flat {
                assert!(
                    cost >= price.output_cost(u.output_tokens),
                    "cost below output cost"
                );
            }
        }

        // Stage 8 metering: running totals, charged as differences.
        let found: Vec<(deltas::Delta, String)> = deltas::find(&json)
            .into_iter()
            .map(|(d, t)| (d, t.to_owned()))
            .collect();
        let mut text = String::new();
        for (_, t) in &found {
            text.push_str(t);
        }
        if !text.is_empty() {
            let total_before = meter.total();
            let n = meter.push(&text);
            assert!(meter.total() >= total_before, "metered total decreased");
            assert_eq!(meter.total(), total_before.saturating_add(n));
            let total = price.output_cost(meter.total());
            assert!(total >= charged, "charged output cost decreased");
            let cost = total.saturating_sub(charged);
            assert_eq!(charged.saturating_add(cost), total);
            charged = total;
        }

        // Stage 8 rewrite (redaction): what is set reads back at the same place.
        for (i, (delta, _)) in found.iter().enumerate() {
            let replacement = format!("[EMAIL_{i}]");
            deltas::set(&mut json, delta, replacement.clone());
            let again = deltas::find(&json);
            assert!(
                again
                    .iter()
                    .any(|(d, t)| d.channel == delta.channel && *t == replacement),
                "deltas::set did not write where deltas::find reads"
            );
        }
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
    }
});

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
