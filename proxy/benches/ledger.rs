//! Budget hot paths (issue 4 performance targets): local lease reservation (≤ 100 ns/op
//! uncontended, scaling across threads) and per-chunk metering (≤ 2 µs per typical delta:
//! token count + price + charge).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iron_core::Money;
use iron_core::meter::DeltaMeter;
use iron_core::pricing::PriceTable;
use iron_proxy::ledger::{Ledger, LedgerConfig, LocalLeases};

/// A ledger whose slot for token "t" already holds a large lease (no refills in the loop).
fn ledger() -> Arc<Ledger> {
    let local = Arc::new(LocalLeases::new([(
        "p".to_owned(),
        Money::from_usd(1_000_000),
    )]));
    local.bind_token("t", "p");
    let cfg = LedgerConfig {
        lease_size: Money::from_usd(100_000),
        ..Default::default()
    };
    let ledger = Ledger::new(local, "bench".into(), cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let _ = ledger.reserve("t", "p", Money(1)).await;
    });
    ledger
}

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
    for threads in [2usize, 4] {
        g.bench_with_input(
            BenchmarkId::new("try_reserve+settle/threads", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let per = iters / threads as u64 + 1;
                    let start = std::time::Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let l = l.clone();
                            s.spawn(move || {
                                for _ in 0..per {
                                    if let Some(r) = l.try_reserve("t", "p", Money(300)) {
                                        r.settle(Money(120), None);
                                    }
                                }
                            });
                        }
                    });
                    // Wall time per op across all threads.
                    start.elapsed() / threads as u32
                })
            },
        );
    }
    g.finish();
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
