#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::hint::black_box;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn text(n: usize) -> String {
    let base = "The quick brown fox jumps over the lazy dog. However, the important analysis of quarterly data shows 2019 results; customers consider the following report well-known.\n";
    let mut s = String::new();
    while s.len() < n { s.push_str(base); }
    s.truncate(n);
    s
}

fn raw(c: &mut Criterion) {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let t1 = text(1024);
    let t256 = text(256 * 1024);
    let _ = bpe.encode_ordinary("warm");
    let mut g = c.benchmark_group("raw");
    g.throughput(Throughput::Bytes(1024));
    g.bench_function("1k", |b| b.iter(|| bpe.encode_ordinary(black_box(&t1)).len()));
    g.throughput(Throughput::Bytes(t256.len() as u64));
    g.sample_size(10);
    g.bench_function("256k", |b| b.iter(|| bpe.encode_ordinary(black_box(&t256)).len()));
    g.throughput(Throughput::Bytes(9));
    g.sample_size(50);
    g.bench_function("delta", |b| b.iter(|| bpe.encode_ordinary(black_box(" analysis")).len()));
    g.finish();
}
criterion_group!(benches, raw);
criterion_main!(benches);
