//! Issue 3 acceptance 1, 2 and 5 with the real binaries: `iron up`, the `iron` CLI, the
//! official openai SDK through the proxy, revocation within 1 s, restart persistence, and
//! no provider key in any output or in the data dir.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use iron_e2e::*;
use iron_testkit::MockUpstream;

const PROVIDER_KEY: &str = "sk-e2e-PROVIDER-secret-key-7f3a9c";

async fn sdk_chat(up: &IronUp, token: &str) -> (i32, String) {
    let py = python();
    assert!(
        py.exists(),
        "{} missing: run ./scripts/test or set IRON_TEST_PYTHON",
        py.display()
    );
    let out = tokio::process::Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/sdk_chat.py"))
        .env("OPENAI_BASE_URL", format!("{}/v1", up.proxy_url()))
        .env("OPENAI_API_KEY", token)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn scan_dir_for(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            hits.extend(scan_dir_for(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iron_up_mint_call_revoke_restart() {
    let mock = MockUpstream::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let up = IronUp::start(data.path()).await.unwrap();
    let mut outputs = Vec::new();

    let out = up.add_mock_provider(&mock.base_url(), PROVIDER_KEY).await;
    assert_eq!(out.code, 0, "{out:?}");
    outputs.push(format!("{out:?}"));
    let out = up
        .iron(&["project", "create", "demo", "--budget-usd", "5"], &[])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = up
        .iron(
            &["token", "mint", "--project", "demo", "--output", "json"],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    outputs.push(format!("{out:?}"));
    let minted = out.json();
    let token = minted["token"].as_str().unwrap().to_owned();
    let token_id = minted["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ic_"));

    // The openai SDK through the proxy (control mode picks the new provider up by itself).
    let mut result = (0, String::new());
    for _ in 0..20 {
        result = sdk_chat(&up, &token).await;
        if result.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        result.0,
        0,
        "SDK call failed: {}\n{}",
        result.1,
        up.process.output()
    );
    assert!(result.1.contains("\"content\""), "{}", result.1);
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.header("authorization") == Some(&format!("Bearer {PROVIDER_KEY}")))
    );

    // An admin price override reaches the proxy: the next request is charged at it.
    let out = up
        .iron(
            &[
                "pricing",
                "set",
                "gpt-4o-mini",
                "--input-per-mtok",
                "1000",
                "--output-per-mtok",
                "2000",
            ],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let admin = Admin::new(&up.control_url(), &up.admin_key);
    let priced_at = Instant::now();
    loop {
        let before = admin.usage("demo").await.len();
        assert_eq!(chat(&up.proxy_url(), &token, false).await.0, 200);
        let mut events = Vec::new();
        for _ in 0..60 {
            events = admin.usage("demo").await;
            if events.len() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let e = events
            .iter()
            .max_by_key(|e| e["time"].as_str().map(str::to_owned))
            .unwrap()
            .clone();
        let (input, output) = (
            e["input_tokens"].as_u64().unwrap(),
            e["output_tokens"].as_u64().unwrap(),
        );
        // $1000 / $2000 per million tokens = 1000 / 2000 µ$ per token.
        if micros(&e["cost_usd"]) == input * 1000 + output * 2000 {
            break;
        }
        assert!(
            priced_at.elapsed() < Duration::from_secs(5),
            "price override not applied: {e}"
        );
    }

    // PII policy set with the CLI reaches the proxy: e-mails are now blocked in requests.
    let out = up
        .iron(
            &[
                "project",
                "set-pii",
                "demo",
                "--type",
                "EMAIL",
                "--action",
                "block",
                "--direction",
                "request",
            ],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let blocked_at = Instant::now();
    loop {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", up.proxy_url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"write to jane@example.com"}]}))
            .send()
            .await
            .unwrap();
        if resp.status() == 400 {
            assert_eq!(resp.headers()["x-iron-error"], "pii_blocked");
            break;
        }
        assert!(
            blocked_at.elapsed() < Duration::from_secs(3),
            "PII policy not applied: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bad = up
        .iron(
            &[
                "project", "set-pii", "demo", "--type", "NAME", "--action", "block",
            ],
            &[],
        )
        .await;
    assert_eq!(bad.code, 1, "unknown type is an error: {bad:?}");

    // Revoke → refused within 1 s.
    let out = up.iron(&["token", "revoke", &token_id], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let revoked_at = Instant::now();
    loop {
        let (status, body) = chat(&up.proxy_url(), &token, false).await;
        if status == 401 {
            assert!(body.contains("token_revoked"), "{body}");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "still accepted {:?} after revoke",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("revocation took effect after {:?}", revoked_at.elapsed());
    let (code, out) = sdk_chat(&up, &token).await;
    assert_eq!(code, 3, "the SDK sees an AuthenticationError: {out}");

    // A second token, to use after the restart.
    let out = up
        .iron(
            &["token", "mint", "--project", "demo", "--output", "json"],
            &[],
        )
        .await;
    let token2 = out.json()["token"].as_str().unwrap().to_owned();
    outputs.push(up.process.output());
    let admin_key = up.admin_key.clone();
    drop(up);

    // Restart on the same data dir: everything survives, the admin key still works.
    let up = IronUp::start(data.path()).await.unwrap();
    assert_eq!(up.admin_key, admin_key);
    let out = up.iron(&["project", "list", "--output", "json"], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("demo"));
    let out = up
        .iron(&["provider", "list", "--output", "json"], &[])
        .await;
    assert!(out.stdout.contains("\"mock\""), "{out:?}");
    outputs.push(format!("{out:?}"));
    let out = up
        .iron(
            &["token", "list", "--project", "demo", "--output", "json"],
            &[],
        )
        .await;
    assert!(out.stdout.contains(&token_id), "{out:?}");
    let mut ok = false;
    for _ in 0..50 {
        if chat(&up.proxy_url(), &token2, false).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "token minted before the restart still works: {}",
        up.process.output()
    );
    assert_eq!(
        chat(&up.proxy_url(), &token, false).await.0,
        401,
        "revoked stays revoked"
    );
    outputs.push(up.process.output());
    drop(up);

    // The provider key is nowhere in plaintext: data dir, CLI output, logs.
    let hits = scan_dir_for(data.path(), PROVIDER_KEY.as_bytes());
    assert!(hits.is_empty(), "provider key in plaintext in {hits:?}");
    for o in &outputs {
        assert!(!o.contains(PROVIDER_KEY), "provider key in output: {o}");
    }
}
