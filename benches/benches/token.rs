//! IC token verification (stage 1, *auth*): the Ed25519 JWT check of
//! `iron_core::token::TokenVerifier::verify`, and the proxy's path through its routing table,
//! `iron_proxy::state::Routing::authenticate` — cold (first sight of a token: verify + cache
//! insert) and cached (every later request with the same token).
//!
//! `cargo bench -p iron-bench --bench token`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iron_bench::fixtures::{
    BenchKeys, FeatureSet, PROJECT, PROVIDER_KEY, PROVIDER_KEY_ENV, ProxyToml,
};
use iron_core::token::{TokenVerifier, unix_now};
use iron_proxy::config::{ProxyConfig, Source, StaticSource};
use iron_proxy::state::Routing;

fn static_source(keys: &BenchKeys) -> anyhow::Result<StaticSource> {
    let pk = keys.key.public_key();
    let toml = ProxyToml {
        listen: "127.0.0.1:8080".parse()?,
        admin_listen: "127.0.0.1:9090".parse()?,
        threads: 1,
        features: Some(FeatureSet::ALL_ON),
        upstream: "http://127.0.0.1:1",
        public_key: &pk,
    }
    .render();
    let env: std::collections::BTreeMap<String, String> =
        [(PROVIDER_KEY_ENV.to_owned(), PROVIDER_KEY.to_owned())].into();
    match ProxyConfig::from_toml(&toml, &env)?.source {
        Source::Static(s) => Ok(s),
        Source::Control(_) => anyhow::bail!("expected a static config"),
    }
}

fn benches(c: &mut Criterion) {
    let Ok(keys) = BenchKeys::generate() else {
        eprintln!("token bench: cannot mint a token");
        return;
    };
    let Ok(verifier) = TokenVerifier::new(&[keys.key.public_key()]) else {
        eprintln!("token bench: cannot build the verifier");
        return;
    };
    let Ok(source) = static_source(&keys) else {
        eprintln!("token bench: cannot build the static config");
        return;
    };
    let token = keys.token.as_str();
    let now = unix_now();

    let mut g = c.benchmark_group("TokenVerifier");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify", |b| {
        b.iter(|| black_box(verifier.verify(black_box(token))))
    });
    g.finish();

    let mut g = c.benchmark_group("Routing");
    g.throughput(Throughput::Elements(1));
    let Ok(routing) = Routing::from_static(&source) else {
        eprintln!("token bench: cannot build the routing table");
        return;
    };
    let warm = routing.authenticate(token, now).map(|(c, _)| c.prj.clone());
    assert_eq!(
        warm.as_deref().ok(),
        Some(PROJECT),
        "the bench token must authenticate"
    );
    g.bench_function("authenticate/cached", |b| {
        b.iter(|| black_box(routing.authenticate(black_box(token), now).is_ok()))
    });
    g.bench_function("authenticate/cold", |b| {
        b.iter_batched(
            || Routing::from_static(&source).ok(),
            // The table is returned so it is dropped outside the timed part.
            |r| {
                let ok = r.as_ref().map(|r| r.authenticate(token, now).is_ok());
                (r, ok)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(token, benches);
criterion_main!(token);
