//! `DeltaMeter`: per-delta counts of streamed output, against the whole-text count. Deltas cut
//! at token boundaries (what providers send) count exactly; arbitrary cuts over-count a little
//! and, on these corpora, never under-count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iron_core::meter::{DeltaMeter, Meter};

const PROSE: &str = "Budgets are enforced by leasing a slice of the remaining money to each proxy. \
The proxy spends its lease locally, without a network round trip, and reports what it spent every second. \
When the lease runs low it asks for more; when the budget is exhausted the request is refused with 402. \
Streams are metered chunk by chunk, so a long answer stops when the money does, not after it.\n\n";

fn corpora() -> Vec<(&'static str, String)> {
    vec![
        ("prose", PROSE.repeat(20)),
        ("code", include_str!("../src/pricing.rs").to_owned()),
        ("json args", r#"{"location": "San Francisco, CA", "unit": "celsius", "days": [1, 2, 3], "note": "it's fine"}"#.repeat(30)),
        ("japanese", "日本語の文章を数えます。東京は日本の首都です。".repeat(30)),
    ]
}

/// Cuts `text` into deltas of 4–20 bytes at char boundaries (deterministic).
fn random_deltas(text: &str, seed: u64) -> Vec<&str> {
    let mut x = seed | 1;
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut end = (start + 4 + (x % 17) as usize).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

/// Cuts `text` at o200k token boundaries (as OpenAI streams), merging tokens that are not
/// whole UTF-8 characters with their neighbours.
fn token_deltas(text: &str) -> Vec<String> {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let mut out = Vec::new();
    let mut pending: Vec<u32> = Vec::new();
    for tok in bpe.encode_ordinary(text) {
        pending.push(tok);
        if let Ok(s) = bpe.decode(&pending) {
            out.push(s);
            pending.clear();
        }
    }
    assert!(pending.is_empty());
    out
}

#[test]
fn fixture_deltas() {
    let mut d = DeltaMeter::new();
    // anthropic-messages-stream.sse text deltas, then the tool-use JSON pieces.
    assert_eq!(d.push("Hello"), 1);
    assert_eq!(d.push("!"), 1);
    assert_eq!(d.push(""), 0);
    let a = d.push("{\"location\": \"San Fra");
    let b = d.push("ncisco\"}");
    assert!(a >= 5 && b >= 2, "{a} {b}");
    assert_eq!(d.total(), 2 + a + b);
}

#[test]
fn token_aligned_deltas_are_exact() {
    let m = Meter::global();
    for (name, text) in corpora() {
        let whole = m.count_text(&text);
        let mut d = m.delta_meter();
        for delta in token_deltas(&text) {
            d.push(&delta);
        }
        println!(
            "{name}: token-aligned deltas {} vs whole {whole}",
            d.total()
        );
        // A token's text re-counted alone is that one token, except rare pieces the
        // pre-tokenizer splits differently without their neighbours.
        assert!(d.total() >= whole, "{name}: under-count");
        assert!(
            d.total() as f64 <= whole as f64 * 1.02,
            "{name}: {} vs {whole}",
            d.total()
        );
    }
}

#[test]
fn random_cuts_over_count_a_little_and_never_under() {
    let m = Meter::global();
    for (name, text) in corpora() {
        let whole = m.count_text(&text);
        let mut worst: f64 = 0.0;
        for seed in 1..=20u64 {
            let mut d = m.delta_meter();
            let mut sum = 0;
            for delta in random_deltas(&text, seed) {
                sum += d.push(delta);
            }
            assert_eq!(sum, d.total());
            assert!(sum >= whole, "{name}: {sum} < {whole}");
            worst = worst.max(sum as f64 / whole as f64);
        }
        println!(
            "{name}: 4–20-byte deltas over-count by at most {:.0} %",
            (worst - 1.0) * 100.0
        );
        assert!(worst < 1.6, "{name}: {worst}");
    }
}

#[test]
fn meter_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Meter>();
    assert_send_sync::<DeltaMeter<'static>>();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut d = DeltaMeter::new();
                d.push(&PROSE.repeat(i + 1));
                d.total()
            })
        })
        .collect();
    let totals: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(totals.windows(2).all(|w| w[0] < w[1]));
    assert!(format!("{:?}", Meter::global()).contains("exact: true"));
}
