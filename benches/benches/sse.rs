//! SSE codec per event (`iron_core::sse`), as stage 8 (*stream*) uses it: an OpenAI chat
//! stream of 64 content chunks (68 events, captured-fixture shape) decoded as the provider
//! sends it (one event per read), cut into 1460-byte TCP segments, and in one piece; and
//! events re-encoded with `encode_event`.
//!
//! `cargo bench -p iron-bench --bench sse`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iron_bench::fixtures::openai_stream;
use iron_core::sse::{SseDecoder, encode_event, encode_event_into};

const CONTENT_EVENTS: usize = 64;

fn decoder(c: &mut Criterion) {
    let stream = openai_stream(CONTENT_EVENTS);
    let events: Vec<&[u8]> = stream
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|lines| {
            let start = lines[0].as_ptr() as usize - stream.as_ptr() as usize;
            let len: usize = lines.iter().map(|l| l.len()).sum();
            &stream[start..start + len]
        })
        .collect();
    let n = events.len() as u64;
    let segments: Vec<&[u8]> = stream.chunks(1460).collect();

    let mut g = c.benchmark_group("SseDecoder");
    g.throughput(Throughput::ElementsAndBytes {
        elements: n,
        bytes: stream.len() as u64,
    });
    let drain = |d: &mut SseDecoder, count: &mut usize| {
        while let Ok(Some(ev)) = d.next_event() {
            black_box(&ev);
            *count += 1;
        }
    };
    g.bench_function("decode/event_per_read", |b| {
        b.iter_batched(
            SseDecoder::new,
            |mut d| {
                let mut count = 0;
                for e in &events {
                    d.push(e);
                    drain(&mut d, &mut count);
                }
                count
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode/tcp_segments_1460", |b| {
        b.iter_batched(
            SseDecoder::new,
            |mut d| {
                let mut count = 0;
                for s in &segments {
                    d.push(s);
                    drain(&mut d, &mut count);
                }
                count
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode/one_read", |b| {
        b.iter_batched(
            SseDecoder::new,
            |mut d| {
                let mut count = 0;
                d.push(&stream);
                drain(&mut d, &mut count);
                count
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn encoder(c: &mut Criterion) {
    let stream = openai_stream(CONTENT_EVENTS);
    let mut d = SseDecoder::new();
    d.push(&stream);
    let mut decoded = Vec::new();
    while let Ok(Some(ev)) = d.next_event() {
        decoded.push(ev);
    }
    let bytes: usize = decoded.iter().map(|e| e.raw.len()).sum();

    let mut g = c.benchmark_group("encode_event");
    g.throughput(Throughput::ElementsAndBytes {
        elements: decoded.len() as u64,
        bytes: bytes as u64,
    });
    g.bench_function("encode_event/stream", |b| {
        b.iter(|| {
            for ev in &decoded {
                black_box(encode_event(ev.event_name(), &ev.data));
            }
        })
    });
    g.bench_function("encode_event_into/stream", |b| {
        b.iter_batched(
            || BytesMut::with_capacity(bytes + 64),
            |mut out| {
                for ev in &decoded {
                    encode_event_into(&mut out, ev.event_name(), &ev.data);
                }
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decoder, encoder);
criterion_main!(benches);
