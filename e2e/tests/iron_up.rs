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

/// `iron up` bootstrap on a fresh data dir, at the binary level: the admin key is printed
/// once on stdout and saved 0600, the `export OPENAI_BASE_URL=…/v1` line is printed, the
/// `openai` provider comes from `OPENAI_API_KEY` (no `provider add`) and a freshly minted
/// token reaches the mock with that key; a restart prints no admin key, and the provider key
/// is in no captured output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_banner_and_env_providers() {
    const ENV_KEY: &str = "sk-test-ENV-openai-key-5b1e0d7c9a";
    let mock = MockUpstream::start().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("iron-data");
    let upstream = mock.base_url();
    let args = ["--upstream-base-url", upstream.as_str()];
    let env = [("OPENAI_API_KEY", ENV_KEY)];

    let stderr1 = root.path().join("first.stderr");
    let up = IronUp::start_stdout_only(&dir, &args, &env, &stderr1)
        .await
        .unwrap();
    let stdout1 = up.process.output();
    assert!(up.admin_key.starts_with("iron_ak_"), "{}", up.admin_key);
    assert_eq!(
        stdout1.matches(up.admin_key.as_str()).count(),
        1,
        "the admin key is shown exactly once:\n{stdout1}"
    );
    let export = format!("export OPENAI_BASE_URL=http://{}/v1", up.proxy);
    assert!(
        stdout1.lines().any(|l| l.trim() == export),
        "no `{export}` line:\n{stdout1}"
    );
    assert!(
        stdout1
            .lines()
            .any(|l| l.contains("provider openai") && l.contains("created from the environment")),
        "{stdout1}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("admin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "admin.key mode {mode:o}");
    }

    // No `provider add`: the provider from OPENAI_API_KEY serves a freshly minted token.
    let admin = Admin::new(&up.control_url(), &up.admin_key);
    let (status, providers) = admin
        .call(reqwest::Method::GET, "/v1/providers", None)
        .await;
    assert_eq!(status, 200, "{providers}");
    let names: Vec<&str> = providers["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{providers}"))
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["openai"], "{providers}");
    let project = admin.project("demo", None).await;
    let (_, token) = admin.mint(&project).await;
    // The proxy learns about the new project from control's event stream (a moment later).
    let minted_at = Instant::now();
    let (status, body) = loop {
        let (status, body) = chat(&up.proxy_url(), &token, false).await;
        if status != 401 || minted_at.elapsed() > Duration::from_secs(5) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200, "{body}\n{}", up.process.output());
    assert!(body.contains("\"content\""), "{body}");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {ENV_KEY}").as_str()),
        "the upstream got the key from OPENAI_API_KEY"
    );
    let mut captured = vec![stdout1, format!("{providers}"), body];
    let admin_key = up.admin_key.clone();
    drop(up);

    // Restart on the same dir: the admin key is not printed again; the provider is kept.
    let stderr2 = root.path().join("second.stderr");
    let up = IronUp::start_stdout_only(&dir, &args, &env, &stderr2)
        .await
        .unwrap();
    // The banner is printed only once the proxy serves: no "Iron is starting" 503 after it.
    let ready = reqwest::get(format!("http://{}/readyz", up.admin))
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "banner printed before the proxy was ready"
    );
    let stdout2 = up.process.output();
    assert_eq!(up.admin_key, admin_key);
    assert!(
        !stdout2.contains(&admin_key),
        "admin key printed again:\n{stdout2}"
    );
    assert!(
        stdout2
            .lines()
            .any(|l| l.contains("provider openai") && l.contains("unchanged from the environment")),
        "{stdout2}"
    );
    assert!(stdout2.contains(&format!("export OPENAI_BASE_URL=http://{}/v1", up.proxy)));
    let (status, body) = chat(&up.proxy_url(), &token, false).await;
    assert_eq!(status, 200, "the token survives the restart: {body}");
    captured.push(stdout2);
    captured.push(body);
    drop(up);

    captured.push(std::fs::read_to_string(&stderr1).unwrap());
    captured.push(std::fs::read_to_string(&stderr2).unwrap());
    for c in &captured {
        assert!(
            !c.contains(ENV_KEY),
            "provider key in captured output:\n{c}"
        );
    }
    let hits = scan_dir_for(&dir, ENV_KEY.as_bytes());
    assert!(hits.is_empty(), "provider key in plaintext in {hits:?}");
}
