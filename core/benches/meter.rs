//! Metering and pricing benchmarks (design §6): token counting, prompt estimates of 1 KiB and
//! 256 KiB chat bodies, per-delta output counting, price lookup and cost. Run with
//! `cargo bench -p iron-core --bench meter`. Targets on the reference 2-core machine:
//! `DeltaMeter::push` ≤ 2 µs per 4–20-byte delta; the 1 KiB prompt estimate a small share of
//! the ~60 µs per-request budget. `tiktoken` is the reference tokenizer, for comparison.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iron_core::meter::{DeltaMeter, Meter};
use iron_core::pricing::{PriceTable, TokenUsage};
use serde_json::{Value, json};

/// Deterministic xorshift so the corpora are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "model",
    "request",
    "answer",
    "summary",
    "report",
    "customer",
    "meeting",
    "project",
    "quarterly",
    "analysis",
    "however",
    "therefore",
    "important",
    "consider",
    "following",
    "system",
    "data",
    "well-known",
    "long-term",
    "January",
    "Jupiter",
    "Alice",
    "Among",
    "Although",
    "Kubernetes",
    "Japan",
    "don't",
    "it's",
    "HTTP",
    "config.yaml",
    "fn",
    "main()",
    "{",
    "}",
    "x = 42;",
];

/// About `len` bytes of English prose with a little code and numbers.
fn prose(len: usize, seed: u64) -> String {
    let mut r = Rng(seed);
    let mut s = String::with_capacity(len + 64);
    while s.len() < len {
        let n = 8 + r.next() % 12;
        for i in 0..n {
            let w = r.pick(WORDS);
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    s.extend(f.to_uppercase());
                    s.push_str(c.as_str());
                }
            } else {
                s.push(' ');
                s.push_str(w);
            }
            if r.next().is_multiple_of(53) {
                s.push_str(" 2019");
            }
        }
        s.push_str(if r.next().is_multiple_of(5) {
            ".\n\n"
        } else {
            ". "
        });
    }
    s.truncate(len);
    s
}

/// An OpenAI chat body of about `len` bytes: system prompt, a few turns, the rest in the last
/// user message.
fn chat_body(len: usize) -> Value {
    let system = "You are a careful analyst. Answer concisely and cite the documents you use.";
    let mut messages = vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": prose(120, 1)}),
        json!({"role": "assistant", "content": prose(160, 2)}),
    ];
    let used: usize = 300 + system.len() + 280;
    messages.push(json!({"role": "user", "content": prose(len.saturating_sub(used), 3)}));
    json!({"model": "gpt-4o-mini", "temperature": 0.2, "messages": messages})
}

/// Typical streamed deltas: mostly one token (a word with its space), some punctuation,
/// some multi-token pieces, 4–20 bytes.
fn deltas() -> Vec<String> {
    let text = prose(64 * 1024, 7);
    let mut r = Rng(11);
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() && out.len() < 1024 {
        let mut end = (start + 4 + (r.next() % 17) as usize).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(text[start..end].to_owned());
        start = end;
    }
    out
}

fn meter(c: &mut Criterion) {
    let m = Meter::global();
    let one_k = prose(1024, 42);
    let code = include_str!("../src/pricing.rs");
    let code_1k = &code[..code
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= 1024)
        .unwrap_or(code.len())];
    let body_1k = chat_body(1024);
    let body_256k = chat_body(256 * 1024);
    let len_1k = serde_json::to_vec(&body_1k).unwrap().len() as u64;
    let len_256k = serde_json::to_vec(&body_256k).unwrap().len() as u64;

    let mut g = c.benchmark_group("Meter");
    g.throughput(Throughput::Bytes(one_k.len() as u64));
    g.bench_function("count_text/prose_1KiB", |b| {
        b.iter(|| m.count_text(black_box(&one_k)))
    });
    g.throughput(Throughput::Bytes(code_1k.len() as u64));
    g.bench_function("count_text/code_1KiB", |b| {
        b.iter(|| m.count_text(black_box(code_1k)))
    });
    g.throughput(Throughput::Bytes(len_1k));
    g.bench_function("estimate_prompt/chat_1KiB", |b| {
        b.iter(|| m.estimate_prompt(black_box(&body_1k)))
    });
    g.bench_function("estimate_prompt_fast/chat_1KiB", |b| {
        b.iter(|| Meter::estimate_prompt_fast(black_box(&body_1k)))
    });
    g.throughput(Throughput::Bytes(len_256k));
    g.bench_function("estimate_prompt/chat_256KiB", |b| {
        b.iter(|| m.estimate_prompt(black_box(&body_256k)))
    });
    g.bench_function("estimate_prompt_fast/chat_256KiB", |b| {
        b.iter(|| Meter::estimate_prompt_fast(black_box(&body_256k)))
    });
    g.finish();

    let mut g = c.benchmark_group("Meter::new");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("build", |b| b.iter(|| Meter::new().unwrap()));
    g.finish();

    // The reference implementation, for comparison.
    let bpe = tiktoken_rs::o200k_base_singleton();
    let text_256k = prose(256 * 1024, 3);
    let mut g = c.benchmark_group("tiktoken");
    g.throughput(Throughput::Bytes(one_k.len() as u64));
    g.bench_function("encode_ordinary/prose_1KiB", |b| {
        b.iter(|| bpe.encode_ordinary(black_box(&one_k)).len())
    });
    g.sample_size(20);
    g.throughput(Throughput::Bytes(text_256k.len() as u64));
    g.bench_function("encode_ordinary/prose_256KiB", |b| {
        b.iter(|| bpe.encode_ordinary(black_box(&text_256k)).len())
    });
    g.bench_function("Meter::count_text/prose_256KiB", |b| {
        b.iter(|| m.count_text(black_box(&text_256k)))
    });
    g.finish();
}

fn delta_meter(c: &mut Criterion) {
    let ds = deltas();
    let bytes: usize = ds.iter().map(String::len).sum();
    let mut g = c.benchmark_group("DeltaMeter");
    g.throughput(Throughput::Elements(ds.len() as u64));
    g.bench_function("push/4-20B_deltas", |b| {
        b.iter_batched_ref(
            DeltaMeter::new,
            |d| {
                for delta in &ds {
                    black_box(d.push(black_box(delta)));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("push/4-20B_deltas_bytes", |b| {
        b.iter_batched_ref(
            DeltaMeter::new,
            |d| {
                for delta in &ds {
                    black_box(d.push(black_box(delta)));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn pricing(c: &mut Criterion) {
    let table = PriceTable::builtin();
    let mut g = c.benchmark_group("PriceTable");
    g.throughput(Throughput::Elements(1));
    for model in [
        "gpt-4o-mini",
        "claude-sonnet-4-5-20250929",
        "gpt-4o-mini-2024-07-18",
        "unknown-model-x",
    ] {
        g.bench_function(format!("lookup/{model}"), |b| {
            b.iter(|| table.lookup(black_box(model)))
        });
    }
    g.bench_function("price_for/snapshot", |b| {
        b.iter(|| {
            table
                .price_for(black_box("claude-sonnet-4-5-20250929"), None)
                .is_ok()
        })
    });
    g.finish();

    let sonnet = *table.lookup("claude-sonnet-4-5").unwrap();
    let usage = TokenUsage::anthropic(472, 0, 1024, 89);
    let mut g = c.benchmark_group("ModelPrice");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cost", |b| {
        b.iter(|| black_box(&sonnet).cost(black_box(&usage)))
    });
    g.bench_function("output_cost", |b| {
        b.iter(|| black_box(&sonnet).output_cost(black_box(3)))
    });
    g.finish();
}

criterion_group!(benches, meter, delta_meter, pricing);
criterion_main!(benches);
