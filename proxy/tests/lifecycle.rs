//! Issue 6 acceptance 8: SIGTERM with 50 streams in flight → all complete, the process exits
//! within the grace (as soon as drained), with the real `iron-proxy` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use iron_core::token::{SigningKey, new_token_id, unix_now};
use iron_testkit::{ChildProcess, MockUpstream, wait_for_tcp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_streams_then_exits() {
    let mock = MockUpstream::start().await.unwrap();
    let key = SigningKey::generate().unwrap();
    let pk = key.public_key();
    let (addr, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\nthreads = 2\nshutdown_grace_secs = 10\n\n\
             [security]\nallow_private_upstreams = true\n\n\
             [auth]\npublic_keys = [{{ kid = \"{}\", alg = \"EdDSA\", x = \"{}\" }}]\n\n\
             [[projects]]\nid = \"{PROJECT}\"\n\n\
             [[providers]]\nid = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"K\"\n",
            pk.kid,
            pk.x,
            mock.base_url()
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    cmd.args(["--config", config.to_str().unwrap()])
        .env("K", OPENAI_KEY);
    let mut proxy = ChildProcess::spawn(cmd).await.unwrap();
    wait_for_tcp(addr, Duration::from_secs(20)).await.unwrap();

    let now = unix_now();
    let token = key.mint(&new_token_id(), PROJECT, now, now + 600).unwrap();
    let client = reqwest::Client::new();
    let streams: Vec<_> = (0..50)
        .map(|_| {
            let (client, token) = (client.clone(), token.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .bearer_auth(token)
                    .header("x-mock-chunks", "10")
                    .header("x-mock-delay-ms", "150")
                    .json(&chat_body(true))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.text().await.unwrap()
            })
        })
        .collect();
    // Let every stream get going, then ask the proxy to stop.
    mock.wait_for(Duration::from_secs(10), |m| m.request_count() >= 50)
        .await
        .unwrap();
    let signalled = Instant::now();
    proxy.signal("TERM").await.unwrap();
    for s in streams {
        let text = s.await.unwrap();
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "a stream was cut by the shutdown: {text}"
        );
    }
    let status = proxy.wait_exit(Duration::from_secs(12)).await.unwrap();
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        proxy.output()
    );
    assert!(
        took < Duration::from_secs(10),
        "exited after {took:?}, the grace is 10 s"
    );
    assert!(
        took >= Duration::from_millis(500),
        "exited before the streams could finish: {took:?}"
    );
    assert_eq!(mock.streams_completed(), 50);
}
