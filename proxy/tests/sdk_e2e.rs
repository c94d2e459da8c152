//! Issue 2 acceptance 1: the official openai and anthropic Python SDKs through the real
//! `iron-proxy` binary against the testkit mock. The SDK calls live in
//! `tests/e2e/sdk_roundtrip.py`; the Python interpreter is `$IRON_TEST_PYTHON` or the
//! workspace's `.venv/bin/python` (created by `./scripts/test`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use iron_core::token::{SigningKey, new_token_id, unix_now};
use iron_testkit::{ChildProcess, MockUpstream, wait_for_tcp};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn python() -> PathBuf {
    std::env::var_os("IRON_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_through_the_proxy_binary() {
    let py = python();
    assert!(
        py.exists(),
        "{} not found: run ./scripts/test (it creates .venv with the openai and anthropic SDKs) or set IRON_TEST_PYTHON",
        py.display()
    );
    let mock = MockUpstream::start().await.unwrap();
    let key = SigningKey::generate().unwrap();
    let pk = key.public_key();
    let (addr, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "{addr}"
admin_listen = "{admin}"
threads = 2
log_format = "json"

[security]
allow_private_upstreams = true

[auth]
public_keys = [{{ kid = "{kid}", alg = "EdDSA", x = "{x}" }}]

[[projects]]
id = "{PROJECT}"

[[providers]]
id = "openai"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_OPENAI_KEY"

[[providers]]
id = "anthropic"
kind = "anthropic"
base_url = "{base}"
api_key_file = "{keyfile}"
"#,
            kid = pk.kid,
            x = pk.x,
            base = mock.base_url(),
            keyfile = dir.path().join("anthropic.key").display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("anthropic.key"),
        format!("{ANTHROPIC_KEY}\n"),
    )
    .unwrap();

    let mut check = tokio::process::Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    check
        .args(["--config", config.to_str().unwrap(), "--check-config"])
        .env("TEST_OPENAI_KEY", OPENAI_KEY);
    let out = check.output().await.unwrap();
    assert!(
        out.status.success(),
        "--check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    cmd.args(["--config", config.to_str().unwrap()])
        .env("TEST_OPENAI_KEY", OPENAI_KEY);
    let proxy = ChildProcess::spawn(cmd).await.unwrap();
    wait_for_tcp(addr, Duration::from_secs(20)).await.unwrap();

    let now = unix_now();
    let token = key.mint(&new_token_id(), PROJECT, now, now + 600).unwrap();
    let out = tokio::process::Command::new(&py)
        .arg(workspace().join("tests/e2e/sdk_roundtrip.py"))
        .env("IRON_BASE_URL", format!("http://{addr}"))
        .env("IRON_TOKEN", &token)
        .env("MOCK_URL", mock.base_url())
        .env("OPENAI_KEY", OPENAI_KEY)
        .env("ANTHROPIC_KEY", ANTHROPIC_KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "sdk_roundtrip.py failed:\n{stdout}\n{}\nproxy output:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.output()
    );
    // Through the proxy, the mock only ever saw provider keys, and never the PII values: the
    // two PII requests of the script (JSON and stream) carried placeholders for all six.
    let with_placeholders = mock
        .requests()
        .iter()
        .filter(|r| {
            let body = r.body_text();
            [
                "[EMAIL_1]",
                "[PHONE_1]",
                "[CREDIT_CARD_1]",
                "[US_SSN_1]",
                "[IBAN_1]",
                "[SECRET_1]",
            ]
            .iter()
            .all(|p| body.contains(p))
        })
        .count();
    assert_eq!(
        with_placeholders, 2,
        "PII requests (json + stream) upstream"
    );
    for r in mock.requests() {
        let seen = format!("{:?}", r.headers);
        assert!(!seen.contains(&token));
        for value in [
            "jane.doe@example.com",
            "+1 415 555 0132",
            "4111 1111 1111 1111",
            "536-22-8751",
            "DE89 3704 0044 0532 0130 00",
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        ] {
            assert!(
                !r.body_text().contains(value),
                "PII reached the provider on {}",
                r.path
            );
        }
        assert!(
            seen.contains(OPENAI_KEY) || seen.contains(ANTHROPIC_KEY),
            "{}: {seen}",
            r.path
        );
    }
    // One JSON log line per request, and no secret in the logs.
    let logs = proxy.output();
    assert!(logs.contains("\"route\":\"chat_completions\""), "{logs}");
    for secret in [OPENAI_KEY, ANTHROPIC_KEY, token.as_str()] {
        assert!(
            !logs.contains(secret),
            "a secret leaked into the proxy logs"
        );
    }
}
