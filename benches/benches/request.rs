//! Request body work of stages 3 and 6 for a 1 KiB and a 256 KiB OpenAI chat request:
//! `iron_proxy::stage::read::parse` (JSON parse + field extraction), then
//! `stage::rewrite::force_include_usage` + `upstream_body` (a stream body gets
//! `stream_options.include_usage` spliced into its bytes; a non-stream body goes upstream as
//! received), and the
//! header rewrite (`stage::rewrite::rewrite`: credential swap, header hygiene).
//!
//! `cargo bench -p iron-bench --bench request`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iron_bench::fixtures::{
    BenchKeys, FeatureSet, PROVIDER_KEY, PROVIDER_KEY_ENV, ProxyToml, chat_body,
};
use iron_proxy::config::{ProxyConfig, Source};
use iron_proxy::stage::read::{RequestBody, parse};
use iron_proxy::stage::rewrite::{force_include_usage, rewrite, upstream_body};
use iron_proxy::stage::route::ApiRoute;
use iron_proxy::state::Routing;
use pingora_http::RequestHeader;

const ROUTE: ApiRoute = ApiRoute::ChatCompletions;
const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (256 * 1024, "256KiB")];

/// Parse + rewrite, as the proxy runs them per request.
fn parse_and_rewrite(raw: Bytes) -> Option<Bytes> {
    let mut body = parse(raw, ROUTE).ok()?;
    let edit = force_include_usage(ROUTE, &mut body);
    upstream_body(&body, edit).ok()
}

fn body_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("RequestBody");
    for (len, name) in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        for stream in [false, true] {
            let raw = chat_body(len, stream);
            let kind = if stream { "stream" } else { "nonstream" };
            g.bench_with_input(
                BenchmarkId::new(format!("parse/{kind}"), name),
                &raw,
                |b, raw| {
                    b.iter_batched(
                        || raw.clone(),
                        |raw| parse(raw, ROUTE).map(|b| b.stream),
                        BatchSize::SmallInput,
                    )
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("parse_and_rewrite/{kind}"), name),
                &raw,
                |b, raw| b.iter_batched(|| raw.clone(), parse_and_rewrite, BatchSize::SmallInput),
            );
        }
        // The rewrite alone on an already parsed stream body (forced include_usage →
        // `stream_options` spliced into the received bytes).
        let Ok(parsed) = parse(chat_body(len, true), ROUTE) else {
            eprintln!("request bench: the fixture body does not parse");
            return;
        };
        g.bench_with_input(
            BenchmarkId::new("force_include_usage+upstream_body/stream", name),
            &parsed,
            |b, parsed| {
                b.iter_batched(
                    || parsed.clone(),
                    |mut body: RequestBody| {
                        let edit = force_include_usage(ROUTE, &mut body);
                        (upstream_body(&body, edit).map(|b| b.len()), body)
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    g.finish();
}

fn header_bench(c: &mut Criterion) {
    let Some((req, routing)) = header_fixture() else {
        eprintln!("request bench: cannot build the header fixture");
        return;
    };
    let Some(dep) = routing.deployments.first() else {
        eprintln!("request bench: no deployment");
        return;
    };
    let mut g = c.benchmark_group("RequestHeader");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rewrite/openai", |b| {
        b.iter(|| black_box(rewrite(black_box(&req), ROUTE, dep, Some(1024)).is_ok()))
    });
    g.finish();
}

/// A request head like the OpenAI Python SDK sends, and a routing table with one deployment.
fn header_fixture() -> Option<(RequestHeader, Routing)> {
    let keys = BenchKeys::generate().ok()?;
    let pk = keys.key.public_key();
    let toml = ProxyToml {
        listen: "127.0.0.1:8080".parse().ok()?,
        admin_listen: "127.0.0.1:9090".parse().ok()?,
        threads: 1,
        features: Some(FeatureSet::ALL_ON),
        upstream: "http://127.0.0.1:1",
        public_key: &pk,
    }
    .render();
    let env: std::collections::BTreeMap<String, String> =
        [(PROVIDER_KEY_ENV.to_owned(), PROVIDER_KEY.to_owned())].into();
    let Source::Static(source) = ProxyConfig::from_toml(&toml, &env).ok()?.source else {
        return None;
    };
    let routing = Routing::from_static(&source).ok()?;
    let mut req = RequestHeader::build("POST", b"/v1/chat/completions", Some(16)).ok()?;
    let auth = format!("Bearer {}", keys.token);
    for (k, v) in [
        ("host", "127.0.0.1:8080"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.99.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "1.99.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.11.7"),
        ("x-stainless-retry-count", "0"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("content-length", "1024"),
        ("authorization", auth.as_str()),
    ] {
        req.insert_header(k, v).ok()?;
    }
    Some((req, routing))
}

criterion_group!(request, body_benches, header_bench);
criterion_main!(request);
