//! Proxy hardening (issue #12) against the real in-process proxy and the testkit mock:
//! the SSRF guard on upstream addresses (load time and connect time), HTTP hardening on the
//! agent listener (framing, header limits, slow clients, keep-alive idle, JSON depth) and the
//! per-IP limit on failed authentications. HTTP-level checks use raw sockets so the bytes on
//! the wire are exactly the ones under test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Harness, OPENAI_KEY, Options, PROJECT, chat_body, free_addr};
use iron_core::token::{SigningKey, new_token_id, unix_now};
use iron_proxy::config::ProxyConfig;
use iron_testkit::MockUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// Raw HTTP helpers
// ---------------------------------------------------------------------------------------

/// Reads one HTTP/1.1 response (head + Content-Length body) from `s`.
async fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("body in time")
            .expect("read");
        assert!(n > 0, "connection closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    (status, head, body)
}

/// Sends `raw` on a new connection and reads the response.
async fn raw_request(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_response(&mut s).await
}

/// Waits until the peer closes `s` (EOF or reset); returns how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn chat_request(token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: iron\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------
// SSRF guard
// ---------------------------------------------------------------------------------------

/// A static-mode proxy whose only OpenAI provider is `base_url`. The configuration is
/// loaded with `allow_private_upstreams = true` (so load-time validation passes) and then
/// run with `allow_at_runtime`: this is the situation of a proxy in control mode, whose
/// provider URLs come from control, so only the connect-time check stands in the way.
async fn proxy_for(
    base_url: &str,
    allow_at_runtime: bool,
) -> (iron_proxy::ProxyHandle, SocketAddr, SigningKey) {
    let key = SigningKey::generate().unwrap();
    let pk = key.public_key();
    let (addr, admin) = (free_addr(), free_addr());
    let toml = format!(
        r#"
[server]
listen = "{addr}"
admin_listen = "{admin}"
threads = 1
shutdown_grace_secs = 0

[upstream]
connect_timeout_ms = 1000
breaker_failures = 3

[security]
allow_private_upstreams = true

[auth]
public_keys = [{{ kid = "{kid}", alg = "EdDSA", x = "{x}" }}]

[[projects]]
id = "{PROJECT}"

[[providers]]
id = "target"
kind = "openai"
base_url = "{base_url}"
api_key_env = "K"
"#,
        kid = pk.kid,
        x = pk.x,
    );
    let env: BTreeMap<String, String> = [("K".to_owned(), OPENAI_KEY.to_owned())].into();
    let mut config = ProxyConfig::from_toml(&toml, &env).unwrap();
    config.security.allow_private_upstreams = allow_at_runtime;
    let proxy = tokio::task::spawn_blocking(move || iron_proxy::start(&config))
        .await
        .unwrap()
        .unwrap();
    (proxy, addr, key)
}

fn token(key: &SigningKey) -> String {
    let now = unix_now();
    key.mint(&new_token_id(), PROJECT, now, now + 3600).unwrap()
}

async fn chat(addr: SocketAddr, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_upstream_works_only_with_the_flag() {
    let mock = MockUpstream::start().await.unwrap();
    // Allowed: the normal development set-up.
    let (proxy, addr, key) = proxy_for(&format!("{}/v1", mock.base_url()), true).await;
    let resp = chat(addr, &token(&key)).await;
    assert_eq!(resp.status(), 200);
    proxy.shutdown();
    let before = mock.connections();

    // Refused: 127.0.0.1 over plain http, without the flag — every time: a policy refusal
    // is not a provider failure, so it never opens the breaker (3 failures would).
    let (proxy, addr, key) = proxy_for(&format!("{}/v1", mock.base_url()), false).await;
    for _ in 0..5 {
        let resp = chat(addr, &token(&key)).await;
        assert_eq!(resp.status(), 502, "a refusal must not trip the breaker");
    }
    let resp = chat(addr, &token(&key)).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-iron-error"], "upstream_error");
    let v: serde_json::Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("not allowed") && msg.contains("plain http"),
        "{msg}"
    );
    assert!(!msg.contains(OPENAI_KEY));
    // Pass-through paths are refused the same way (clear body, no connection).
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/v1/files"))
        .bearer_auth(token(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-iron-error"], "upstream_error");
    assert_eq!(
        mock.connections(),
        before,
        "no connection to a refused upstream"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_after_dns_at_connect_time() {
    let mock = MockUpstream::start().await.unwrap();
    let port = mock.addr().port();
    // https, so the address (not the scheme) is what gets refused. `localhost` is a host
    // name: only the connect-time check on its resolved address (127.0.0.1 / ::1) catches it.
    for base in [
        format!("https://localhost:{port}/v1"),
        format!("https://127.0.0.1:{port}/v1"),
        format!("https://[::ffff:127.0.0.1]:{port}/v1"),
        "https://169.254.169.254/v1".to_owned(),
        "https://10.0.0.1/v1".to_owned(),
    ] {
        let (proxy, addr, key) = proxy_for(&base, false).await;
        let started = Instant::now();
        let resp = chat(addr, &token(&key)).await;
        assert_eq!(resp.status(), 502, "{base}");
        let v: serde_json::Value = resp.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("internal"), "{base}: {msg}");
        // Refused before connecting: no connect timeout was waited out (10.0.0.1 would hang).
        assert!(started.elapsed() < Duration::from_millis(900), "{base}");
        proxy.shutdown();
    }
    // The cloud metadata endpoint over plain http.
    let (proxy, addr, key) = proxy_for("http://169.254.169.254/latest", false).await;
    let resp = chat(addr, &token(&key)).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-iron-error"], "upstream_error");
    proxy.shutdown();
    assert_eq!(mock.connections(), 0);
}

#[test]
fn static_config_refuses_internal_upstreams_at_load_time() {
    let key = SigningKey::generate().unwrap();
    let pk = key.public_key();
    let cfg = |base: &str, allow: bool| {
        format!(
            "[security]\nallow_private_upstreams = {allow}\n\n[auth]\npublic_keys = [{{ kid = \"{}\", alg = \"EdDSA\", x = \"{}\" }}]\n\n\
             [[providers]]\nid = \"p\"\nkind = \"openai\"\nbase_url = \"{base}\"\napi_key_env = \"K\"\n",
            pk.kid, pk.x
        )
    };
    let env: BTreeMap<String, String> = [("K".to_owned(), "sk-x".to_owned())].into();
    for base in [
        "http://127.0.0.1:8081",
        "http://api.example.com",
        "https://localhost:8443",
        "https://169.254.169.254",
        "http://169.254.169.254",
        "https://[fd00::1]",
        "https://100.64.1.1",
        "https://metadata.google.internal",
    ] {
        let err = ProxyConfig::from_toml(&cfg(base, false), &env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("providers[0].base_url"), "{base}: {text}");
        assert!(text.contains("allow_private_upstreams"), "{base}: {text}");
        assert!(
            ProxyConfig::from_toml(&cfg(base, true), &env).is_ok(),
            "{base}"
        );
    }
    assert!(ProxyConfig::from_toml(&cfg("https://api.openai.com/v1", false), &env).is_ok());
    // The env override works too.
    let env2: BTreeMap<String, String> = [
        ("K".to_owned(), "sk-x".to_owned()),
        (
            "IRON_SECURITY__ALLOW_PRIVATE_UPSTREAMS".to_owned(),
            "true".to_owned(),
        ),
    ]
    .into();
    assert!(ProxyConfig::from_toml(&cfg("http://127.0.0.1:1", false), &env2).is_ok());
}

// ---------------------------------------------------------------------------------------
// HTTP hardening
// ---------------------------------------------------------------------------------------

async fn hardened() -> Harness {
    Harness::start_opts(Options {
        server: "header_read_timeout_ms = 600\nbody_read_timeout_ms = 600\nkeepalive_timeout_secs = 1",
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_is_refused() {
    let h = hardened().await;
    let t = h.token();
    let body = serde_json::to_string(&chat_body(false)).unwrap();

    // Content-Length + Transfer-Encoding: request smuggling signature → 400.
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: iron\r\nAuthorization: Bearer {t}\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let (status, head, resp) = raw_request(h.addr, raw.as_bytes()).await;
    assert_eq!(status, 400, "{head}{resp}");
    assert!(
        resp.contains("Content-Length and Transfer-Encoding"),
        "{resp}"
    );

    // Two different Content-Length values → 400 (pingora refuses before any hook).
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: iron\r\nAuthorization: Bearer {t}\r\n\
         Content-Length: {}\r\nContent-Length: 5\r\n\r\n{body}",
        body.len()
    );
    let (status, _, _) = raw_request(h.addr, raw.as_bytes()).await;
    assert_eq!(status, 400);

    // The same body, framed correctly, goes through.
    let (status, _, _) = raw_request(h.addr, &chat_request(&t, &body)).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.mock.request_count(),
        1,
        "refused requests never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_count_and_size_limits_answer_431() {
    let h = hardened().await;
    let t = h.token();
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let with_headers = |extra: &str| {
        let mut r = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: iron\r\nAuthorization: Bearer {t}\r\n\
             Content-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        r.shrink_to_fit();
        r.into_bytes()
    };
    // 100 header fields in all is the default limit: 3 + 98 is refused. (80 extra fields
    // pass; near 100 the mock upstream itself, a hyper server, answers 431 to what Iron
    // forwards.)
    let many = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    let (status, _, resp) = raw_request(h.addr, &with_headers(&many(80))).await;
    assert_eq!(status, 200, "{resp}");
    let (status, head, resp) = raw_request(h.addr, &with_headers(&many(98))).await;
    assert_eq!(status, 431, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-iron-error: headers_too_large")
    );
    assert!(resp.contains("101 header fields"), "{resp}");

    // Total head size: 64 KiB by default.
    let big = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
    let (status, _, resp) = raw_request(h.addr, &with_headers(&big)).await;
    assert_eq!(status, 431);
    assert!(resp.contains("limit is 65536"), "{resp}");
    let ok = format!("x-big: {}\r\n", "a".repeat(60 * 1024));
    let (status, _, _) = raw_request(h.addr, &with_headers(&ok)).await;
    assert_eq!(status, 200);
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off() {
    let h = hardened().await;

    // Slowloris: the head arrives one byte every 100 ms, never completing in 600 ms.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let (mut rd, mut wr) = s.split();
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: iron\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let writer = async {
        for b in head.iter() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reader = async {
        let mut buf = [0u8; 64];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let closed_after = tokio::select! {
        t = reader => t,
        () = async { writer.await; tokio::time::sleep(Duration::from_secs(5)).await } => {
            panic!("a slow client was never cut off")
        }
    };
    assert!(
        closed_after >= Duration::from_millis(500) && closed_after < Duration::from_secs(3),
        "{closed_after:?}"
    );

    // A client that connects and sends nothing is closed as well.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let t = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(t < Duration::from_secs(3), "{t:?}");

    // A body trickled byte by byte: 408 once body_read_timeout (600 ms) has passed.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let tok = h.token();
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: iron\r\nAuthorization: Bearer {tok}\r\n\
             Content-Length: 200\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = s.split();
    let started = Instant::now();
    let writer = async {
        for _ in 0..100 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut got = Vec::new();
    let reader = async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::select! {
        () = reader => {},
        () = async { writer.await; tokio::time::sleep(Duration::from_secs(5)).await } => {}
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed() {
    let h = hardened().await;
    let t = h.token();
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    // Two requests on one connection: keep-alive works while the client is active.
    for _ in 0..2 {
        s.write_all(&chat_request(&t, &body)).await.unwrap();
        let (status, _, _) = read_response(&mut s).await;
        assert_eq!(status, 200);
    }
    // Then silence: closed after keepalive_timeout_secs = 1.
    let after = closed_within(&mut s, Duration::from_secs(6))
        .await
        .expect("idle connection closed");
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(3),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_json_is_refused_before_any_walker() {
    let h = Harness::start().await;
    let t = h.token();
    let nested = |depth: usize| {
        // {"model":…,"messages":[{"role":"user","content":"hi","x": [[[…]]]}]} — the body
        // itself is 3 levels deep before the array run.
        format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi","x":{}{}}}]}}"#,
            "[".repeat(depth - 3),
            "]".repeat(depth - 3)
        )
    };
    let (status, _, _) = raw_request(h.addr, &chat_request(&t, &nested(64))).await;
    assert_eq!(status, 200);
    let (status, head, resp) = raw_request(h.addr, &chat_request(&t, &nested(65))).await;
    assert_eq!(status, 400, "{head}{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deeper than 64 levels")
    );
    // Far deeper than serde_json's recursion limit, inside a string-heavy body: still a
    // clean 400, and the proxy keeps serving.
    let (status, _, _) = raw_request(h.addr, &chat_request(&t, &nested(500_000))).await;
    assert_eq!(status, 400);
    let (status, _, _) = raw_request(h.addr, &chat_request(&t, &nested(10))).await;
    assert_eq!(status, 200);
    assert_eq!(h.mock.request_count(), 2);
}

// ---------------------------------------------------------------------------------------
// Failed-authentication limit
// ---------------------------------------------------------------------------------------

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_block_the_source_address() {
    let h = Harness::start().await;
    let url = h.url("/v1/chat/completions");
    let body = chat_body(false);
    let from1 = client_from("127.0.0.1");
    let bad = [
        "ic_not-a-jwt".to_owned(),
        format!("{}x", h.token()),
        h.expired_token(),
        "sk-provider-key".to_owned(),
    ];
    let mut statuses = Vec::new();
    for i in 0..25 {
        let resp = from1
            .post(&url)
            .bearer_auth(&bad[i % bad.len()])
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if status == 429 {
            assert_eq!(resp.headers()["x-iron-error"], "rate_limited");
            let secs: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&secs), "{secs}");
        }
        statuses.push(status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");

    // Another source address is unaffected.
    let from2 = client_from("127.0.0.2");
    let resp = from2
        .post(&url)
        .bearer_auth(h.token())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The blocked address is refused even with a good token, until the window passes.
    let resp = from1
        .post(&url)
        .bearer_auth(h.token())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many failed authentications")
    );
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_ends_with_the_window_and_limit_can_be_disabled() {
    let h = Harness::start_opts(Options {
        security: "auth_failure_limit = 3\nauth_failure_window_secs = 1",
        ..Default::default()
    })
    .await;
    let url = h.url("/v1/models");
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let r = c.get(&url).bearer_auth("ic_bad").send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = c.get(&url).bearer_auth(h.token()).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(&url).bearer_auth(h.token()).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let h = Harness::start_opts(Options {
        security: "auth_failure_limit = 0",
        ..Default::default()
    })
    .await;
    let url = h.url("/v1/models");
    for _ in 0..40 {
        let r = c.get(&url).bearer_auth("ic_bad").send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connections_are_not_cut_by_the_head_watchdog() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let h = hardened().await;
    let t = h.token();
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let stream = TcpStream::connect(h.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Two requests on one HTTP/2 connection, the second after more than
    // header_read_timeout (600 ms) but less than the idle timeout (1 s).
    for _ in 0..2 {
        let req = http::Request::post(format!("http://{}/v1/chat/completions", h.addr))
            .header("authorization", format!("Bearer {t}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(h.mock.request_count(), 2);
}
