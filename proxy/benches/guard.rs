//! Cost of the security guards on the request path (issue #12): the failed-authentication
//! check that runs before stage 1 on every request (`AuthLimiter::blocked`), recording a
//! failure, the JSON depth pre-scan of the read stage, and the SSRF address check.
//!
//! `cargo bench -p iron-proxy --bench guard`
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iron_proxy::guard::{AuthLimiter, pick_upstream_addr};
use iron_proxy::stage::read::depth_within;

fn limiter(c: &mut Criterion) {
    let l = AuthLimiter::new(20, Duration::from_secs(60), 16_384);
    // A full table: 16k addresses with failures on record, one of them blocked.
    for i in 0..16_384u32 {
        l.record_failure(IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i)));
    }
    let blocked = IpAddr::from(Ipv4Addr::new(10, 0, 0, 7));
    for _ in 0..20 {
        l.record_failure(blocked);
    }
    let clean = IpAddr::from(Ipv4Addr::new(192, 0, 2, 1));
    let mut g = c.benchmark_group("auth_limiter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_unknown_ip", |b| {
        b.iter(|| l.blocked(black_box(clean)))
    });
    g.bench_function("check_blocked_ip", |b| {
        b.iter(|| l.blocked(black_box(blocked)))
    });
    let mut i = 0u32;
    g.bench_function("record_failure_churn", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            l.record_failure(black_box(IpAddr::from(Ipv4Addr::from(0x0b00_0000 + i))))
        })
    });
    g.finish();
}

fn depth(c: &mut Criterion) {
    let mut g = c.benchmark_group("json_depth_scan");
    for (kind, unit) in [
        (
            "prose",
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ",
        ),
        ("escapes", "lorem ipsum \\\"dolor\\\" sit amet [x] {y} "),
    ] {
        for len in [4 * 1024usize, 256 * 1024] {
            let text = unit.repeat(len / unit.len());
            let body = format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{text}"}}]}}"#
            );
            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_with_input(BenchmarkId::new(kind, len), &body, |b, body| {
                b.iter(|| depth_within(black_box(body.as_bytes()), 64))
            });
        }
    }
    g.finish();
}

fn ssrf(c: &mut Criterion) {
    let addrs: Vec<SocketAddr> = vec!["104.18.6.192:443".parse().unwrap()];
    let mut g = c.benchmark_group("ssrf");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pick_upstream_addr", |b| {
        b.iter(|| pick_upstream_addr(true, black_box(&addrs), false))
    });
    g.finish();
}

criterion_group!(benches, limiter, depth, ssrf);
criterion_main!(benches);
