//! The HTTPS mock (`MockUpstream::start_tls`): a client trusting its CA gets HTTP/2 through
//! ALPN (or HTTP/1.1 when it offers only that), every recorded request names its version, the
//! certificate is refused by a client that does not trust the CA, and keep-alive / h2
//! multiplexing shows up as one TCP connection for many requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::chat_body;
use iron_testkit::{MockUpstream, parse_sse};
use reqwest::Version;

fn trusting(mock: &MockUpstream) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(mock.ca_pem().unwrap().as_bytes()).unwrap();
    reqwest::Client::builder()
        .https_only(true)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_mock_serves_h2_by_alpn_and_records_the_version() {
    let mock = MockUpstream::start_tls().await.unwrap();
    assert!(mock.is_tls());
    assert!(mock.base_url().starts_with("https://127.0.0.1:"));
    let pem = std::fs::read_to_string(mock.ca_file().unwrap()).unwrap();
    assert_eq!(pem, mock.ca_pem().unwrap());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let h2 = trusting(&mock).build().unwrap();
    for _ in 0..5 {
        let resp = h2
            .post(mock.url("/v1/chat/completions"))
            .bearer_auth("sk-test")
            .json(&chat_body(false, None))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
    }
    // Streaming over h2 too.
    let text = h2
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("sk-test")
        .header("x-mock-chunks", "4")
        .json(&chat_body(true, None))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(parse_sse(&text).len() >= 4);
    assert_eq!(
        mock.connections(),
        1,
        "six requests multiplexed on one h2 connection"
    );

    let h1 = trusting(&mock).http1_only().build().unwrap();
    let resp = h1.get(mock.url("/v1/models")).send().await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    let versions: Vec<http::Version> = mock.requests().iter().map(|r| r.version).collect();
    assert_eq!(
        versions,
        [vec![http::Version::HTTP_2; 6], vec![http::Version::HTTP_11]].concat()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_mock_is_refused_without_its_ca_and_plain_mock_records_http1() {
    let mock = MockUpstream::start_tls().await.unwrap();
    let untrusting = reqwest::Client::builder().build().unwrap();
    let err = untrusting
        .get(mock.url("/v1/models"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(mock.request_count(), 0);

    // Another mock's CA does not help: each start makes its own.
    let other = MockUpstream::start_tls().await.unwrap();
    assert_ne!(other.ca_pem(), mock.ca_pem());
    let err = trusting(&other)
        .build()
        .unwrap()
        .get(mock.url("/v1/models"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    let plain = MockUpstream::start().await.unwrap();
    assert!(!plain.is_tls() && plain.ca_pem().is_none() && plain.ca_file().is_none());
    reqwest::get(plain.url("/v1/models")).await.unwrap();
    assert_eq!(plain.requests()[0].version, http::Version::HTTP_11);
}
