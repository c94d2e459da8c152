//! Budget hot paths (issue 4 performance targets), stage 4 (*admit*) and stage 8 (*stream*) of
//! the request flow: local lease reservation `Ledger::try_reserve` + `Reservation::settle`
//! (≤ 100 ns/op uncontended, scaling across threads) and per-chunk metering (≤ 2 µs per typical
//! delta: token count + price + charge against the lease).
//!
//! `cargo bench -p iron-proxy --bench ledger`. For N threads the reported time per op is the
//! wall time divided by the operations of all threads together (the inverse of the aggregate
//! throughput): with perfect scaling it is the 1-thread time ÷ N, as long as N ≤ cores.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iron_core::Money;
use iron_core::meter::DeltaMeter;
use iron_core::pricing::PriceTable;
use iron_proxy::ledger::{Ledger, LedgerConfig, LocalLeases};

/// A ledger whose slots for the [`TOKENS`] already hold leases so large (10^17 µ$) that no run
/// drains them (no refills, no refusals in the loop).
fn ledger() -> Arc<Ledger> {
    let local = Arc::new(LocalLeases::new([(
        "p".to_owned(),
        Money::from_usd(1_000_000_000_000),
    )]));
    let cfg = LedgerConfig {
        lease_size: Money::from_usd(100_000_000_000),
        ..Default::default()
    };
    for token in TOKENS {
        local.bind_token(token, "p");
    }
    let ledger = Ledger::new(local, "bench".into(), cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        for token in TOKENS {
            let _ = ledger.reserve(token, "p", Money(1)).await;
        }
    });
    ledger
}

/// Token ids: "t" for the one-slot runs, one per thread for the one-slot-per-thread runs.
const TOKENS: [&str; 5] = ["t", "t0", "t1", "t2", "t3"];

fn reservation(c: &mut Criterion) {
    let mut g = c.benchmark_group("Ledger");
    g.throughput(Throughput::Elements(1));
    let l = ledger();
    g.bench_function("try_reserve+settle/1 thread", |b| {
        b.iter(|| {
            let r = l
                .try_reserve("t", "p", Money(300))
                .unwrap_or_else(|| panic!("slot empty"));
            r.settle(Money(120), None);
        })
    });
    for threads in [1usize, 2, 4] {
        g.bench_with_input(
            BenchmarkId::new("try_reserve+settle/threads", threads),
            &threads,
            |b, &threads| b.iter_custom(|iters| contended(&l, threads, iters, false)),
        );
    }
    // The common case: concurrent requests of different tokens (one lease slot each).
    for threads in [2usize, 4] {
        g.bench_with_input(
            BenchmarkId::new("try_reserve+settle/threads, own token", threads),
            &threads,
            |b, &threads| b.iter_custom(|iters| contended(&l, threads, iters, true)),
        );
    }
    g.finish();
}

/// `iters` reserve + settle operations split over `threads` threads that all hit the same
/// token's slot (or, with `own_token`, each its own token's slot of the same project); returns the wall time from the moment every thread is ready until the last
/// one is done (thread start-up is not timed).
fn contended(l: &Arc<Ledger>, threads: usize, iters: u64, own_token: bool) -> Duration {
    let t = threads as u64;
    let barrier = Barrier::new(threads + 1);
    let (start, failed) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..t)
            .map(|i| {
                let ops = iters / t + u64::from(i < iters % t);
                let (l, barrier) = (l.clone(), &barrier);
                let token = if own_token {
                    TOKENS[1 + i as usize % 4]
                } else {
                    "t"
                };
                s.spawn(move || {
                    let mut failed = 0u64;
                    barrier.wait();
                    for _ in 0..ops {
                        match l.try_reserve(token, "p", Money(300)) {
                            Some(r) => r.settle(Money(120), None),
                            None => failed += 1,
                        }
                    }
                    failed
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let failed: u64 = workers.into_iter().map(|w| w.join().unwrap_or(1)).sum();
        (start, failed)
    });
    let elapsed = start.elapsed();
    assert_eq!(failed, 0, "the lease ran dry: the bench measured refusals");
    elapsed
}

fn metering(c: &mut Criterion) {
    let mut g = c.benchmark_group("ChunkMeter");
    let price = *PriceTable::builtin()
        .price_for("gpt-4o-mini", None)
        .unwrap_or_else(|e| panic!("{e}"));
    let l = ledger();
    let deltas = [
        " Hello",
        " world",
        ",",
        " this",
        " is",
        " a",
        " streamed",
        " answer",
        " from",
        " the",
        " model",
        ".",
    ];
    g.throughput(Throughput::Elements(deltas.len() as u64));
    g.bench_function("count+price+charge per delta", |b| {
        b.iter_batched(
            || {
                (
                    l.try_reserve("t", "p", Money(10_000))
                        .unwrap_or_else(|| panic!("slot empty")),
                    DeltaMeter::new(),
                )
            },
            |(mut r, mut m)| {
                let mut charged = Money::ZERO;
                for d in deltas {
                    m.push(d);
                    let total = price.output_cost(m.total());
                    let _ = r.try_charge(total.saturating_sub(charged));
                    charged = total;
                }
                r.settle(charged, None);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, reservation, metering);
criterion_main!(benches);
