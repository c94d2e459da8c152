//! Process helpers, exercised against the `iron-mock` binary itself and a few shell commands:
//! wait_for_line, output capture, signals, exit, Drop kills, wait_for_tcp, cargo_bin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iron_testkit::{ChildProcess, cargo_bin, wait_for_tcp};
use serde_json::{Value, json};

const MOCK: &str = env!("CARGO_BIN_EXE_iron-mock");

fn sh(script: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(script);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn iron_mock_binary_lifecycle() {
    let mut cmd = tokio::process::Command::new(MOCK);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--scenario-json")
        .arg(r#"{"answer":"from the binary","chunks":2}"#);
    let mut child = ChildProcess::spawn(cmd).await.unwrap();
    assert!(child.pid() > 0);
    let line = child
        .wait_for_line("listening on", Duration::from_secs(20))
        .await
        .unwrap();
    let url = line
        .strip_prefix("iron-mock listening on ")
        .expect("exact line format")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    assert_ne!(addr.port(), 0);
    wait_for_tcp(addr, Duration::from_secs(5)).await.unwrap();

    let c = reqwest::Client::new();
    let v: Value = c
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from the binary");
    let stats: Value = c
        .get(format!("{url}/__mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests"], 1);

    assert!(child.output().contains("iron-mock listening on"));
    child.signal("TERM").await.unwrap();
    let status = child.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status:?}: {}", child.output());
    // Exactly one line on stdout.
    assert_eq!(child.output().lines().count(), 1, "{}", child.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn iron_mock_rejects_a_bad_scenario() {
    let mut cmd = tokio::process::Command::new(MOCK);
    cmd.arg("--scenario-json").arg("{\"fault\":\"bogus\"}");
    let mut child = ChildProcess::spawn(cmd).await.unwrap();
    let err = child
        .wait_for_line("listening on", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("scenario-json"), "{err:#}");
    let status = child.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(!status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_line_captures_stdout_and_stderr() {
    let child = ChildProcess::spawn(sh("echo out-line; echo err-line >&2; sleep 30"))
        .await
        .unwrap();
    assert_eq!(
        child
            .wait_for_line("err-", Duration::from_secs(5))
            .await
            .unwrap(),
        "err-line"
    );
    assert_eq!(
        child
            .wait_for_line("out", Duration::from_secs(5))
            .await
            .unwrap(),
        "out-line"
    );
    let out = child.output();
    assert!(
        out.contains("out-line") && out.contains("err-line"),
        "{out}"
    );

    // Timeout: error carries the output so far.
    let t = Instant::now();
    let err = child
        .wait_for_line("never printed", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(280));
    let msg = format!("{err:#}");
    assert!(
        msg.contains("timed out") && msg.contains("out-line"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_line_fails_fast_when_the_process_exits() {
    let mut child = ChildProcess::spawn(sh("echo bye; exit 3")).await.unwrap();
    let t = Instant::now();
    let err = child
        .wait_for_line("never", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "did not wait for the timeout"
    );
    assert!(format!("{err:#}").contains("bye"));
    let status = child.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(child.try_wait().unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_kills_and_reaps() {
    let child = ChildProcess::spawn(sh("exec sleep 60")).await.unwrap();
    let pid = child.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(child);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed and reaped on drop"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_exit_times_out_and_signal_errors_are_reported() {
    let mut child = ChildProcess::spawn(sh("exec sleep 60")).await.unwrap();
    assert!(child.wait_exit(Duration::from_millis(100)).await.is_err());
    assert!(child.signal("NOSUCHSIG").await.is_err());
    child.signal("SIGKILL").await.unwrap();
    let status = child.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(!status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_tcp_times_out_on_a_closed_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let t = Instant::now();
    assert!(
        wait_for_tcp(addr, Duration::from_millis(200))
            .await
            .is_err()
    );
    assert!(t.elapsed() >= Duration::from_millis(180));
}

#[test]
fn cargo_bin_finds_the_binary_next_to_the_test() {
    let found = cargo_bin("iron-mock");
    assert!(found.exists(), "{}", found.display());
    assert_eq!(
        std::fs::canonicalize(found).unwrap(),
        std::fs::canonicalize(MOCK).unwrap()
    );
}
