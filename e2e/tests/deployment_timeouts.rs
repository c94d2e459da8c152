//! Per-deployment timeouts in control mode with the real binaries (issue 6, acceptance 4):
//! `iron-control` (embedded store) + `iron-proxy`, two providers in front of a mock that
//! never answers (`hang`), with first-byte timeouts of 1 s and 2 s set through the control
//! API while the proxy's own `[upstream]` default is 5 s. Each project's request must end in
//! 504 `upstream_timeout` after its provider's timeout, within +10%; a PATCH of the timeout
//! reaches the running proxy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use iron_e2e::*;
use iron_testkit::{Fault, MockUpstream, Scenario};
use serde_json::json;

const PROVIDER_KEY: &str = "sk-timeouts-PROVIDER-key-4321";

/// One non-streamed chat through the proxy: (status, body, elapsed).
async fn timed_chat(proxy_url: &str, token: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    let (status, body) = chat(proxy_url, token, false).await;
    (status, body, start.elapsed())
}

/// The request timed out after `ms` (not before, and within +10%).
fn assert_timed_out_after(what: &str, got: &(u16, String, Duration), ms: u64) {
    let (status, body, elapsed) = got;
    eprintln!("{what}: {status} after {elapsed:?}");
    assert_eq!(*status, 504, "{what}: {body}");
    assert!(body.contains("upstream_timeout"), "{what}: {body}");
    let want = Duration::from_millis(ms);
    assert!(
        *elapsed >= want,
        "{what}: answered after {elapsed:?}, before its {want:?} timeout"
    );
    assert!(
        *elapsed <= want + want / 10,
        "{what}: answered after {elapsed:?}, more than {want:?} + 10%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_deployment_times_out_after_its_own_first_byte_timeout() {
    let mock = MockUpstream::start_with(Scenario {
        fault: Some(Fault::Hang),
        ..Default::default()
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let control = Control::start_embedded(data.path(), "").await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);

    let mut tokens = Vec::new();
    for (name, first_byte_ms) in [("fast", 1000), ("slow", 2000)] {
        let (status, v) = admin
            .call(
                reqwest::Method::POST,
                "/v1/providers",
                Some(
                    json!({"name": name, "kind": "openai", "base_url": mock.base_url(),
                    "api_key": PROVIDER_KEY, "timeouts": {"first_byte_ms": first_byte_ms}}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["timeouts"]["first_byte_ms"], first_byte_ms);
        let project = format!("team-{name}");
        let (status, v) = admin
            .call(
                reqwest::Method::POST,
                "/v1/projects",
                Some(json!({"name": project, "providers": [name]})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        tokens.push(admin.mint(&project).await.1);
    }

    // The proxy's own default is 5 s: only the per-deployment values can answer sooner.
    let proxy = Proxy::start_in_with_env(
        &control.url(),
        tempfile::tempdir().unwrap(),
        &[("IRON_UPSTREAM__FIRST_BYTE_TIMEOUT_MS", "5000")],
    )
    .await
    .unwrap();
    proxy.ready().await.unwrap();

    let fast = timed_chat(&proxy.url(), &tokens[0]).await;
    assert_timed_out_after("fast (1000 ms)", &fast, 1000);
    let slow = timed_chat(&proxy.url(), &tokens[1]).await;
    assert_timed_out_after("slow (2000 ms)", &slow, 2000);
    // Both reached the (hanging) mock exactly once: nothing was refused early or retried.
    assert_eq!(mock.requests().len(), 2, "{:?}", mock.requests());

    // Changing the timeout through the API reaches the running proxy (config_changed →
    // new snapshot).
    let (status, v) = admin
        .call(
            reqwest::Method::PATCH,
            "/v1/providers/fast",
            Some(json!({"timeouts": {"first_byte_ms": 1500}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["timeouts"]["first_byte_ms"], 1500);
    let mut got = timed_chat(&proxy.url(), &tokens[0]).await;
    // The event may still be on its way: at most two more tries (the breaker trips at 5).
    for _ in 0..2 {
        if got.2 >= Duration::from_millis(1500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        got = timed_chat(&proxy.url(), &tokens[0]).await;
    }
    assert_timed_out_after("fast after PATCH (1500 ms)", &got, 1500);
}
