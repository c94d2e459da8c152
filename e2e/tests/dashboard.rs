//! Issue 9 acceptance 2–4: the Control Panel's production build served by a real `iron up`,
//! driven in Debian's headless Chromium by `dashboard/e2e/dashboard.e2e.mjs`
//! (playwright-core) while this test provides the mock provider, the keys and the proxy.
//! `./scripts/test` installs Node packages and Chromium and builds `dashboard/dist` first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use iron_e2e::*;
use iron_testkit::MockUpstream;

const PROVIDER_KEY: &str = "sk-e2e-DASHBOARD-provider-key-51c0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails with what to run when a prerequisite of the browser test is missing.
fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{} is missing ({what}); ./scripts/test prepares it",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_panel_in_a_real_browser() {
    let root = repo();
    let dist = root.join("dashboard/dist");
    require(
        &dist.join("index.html"),
        "npm --prefix dashboard ci && npm --prefix dashboard run build",
    );
    require(
        &root.join("dashboard/node_modules/playwright-core"),
        "npm --prefix dashboard ci",
    );
    let chromium =
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    require(Path::new(&chromium), "apt-get install chromium");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let artifacts = target.join("e2e-artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();

    let mock = MockUpstream::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let dist_arg = dist.display().to_string();
    let up = IronUp::start_with(data.path(), &["--dashboard-dir", &dist_arg])
        .await
        .unwrap();
    let out = up.add_mock_provider(&mock.base_url(), PROVIDER_KEY).await;
    assert_eq!(out.code, 0, "{out:?}");
    let admin = Admin::new(&up.control_url(), &up.admin_key);
    let (status, viewer) = admin
        .call(
            reqwest::Method::POST,
            "/v1/api-keys",
            Some(serde_json::json!({"name": "panel-viewer", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{viewer}");
    let viewer_key = viewer["key"].as_str().unwrap().to_owned();

    let run = tokio::process::Command::new("node")
        .arg(root.join("dashboard/e2e/dashboard.e2e.mjs"))
        .current_dir(root.join("dashboard"))
        .env("IRON_URL", up.control_url())
        .env("IRON_PROXY_URL", up.proxy_url())
        .env("IRON_ADMIN_KEY", &up.admin_key)
        .env("IRON_VIEWER_KEY", &viewer_key)
        .env("IRON_ARTIFACTS", &artifacts)
        .env("CHROMIUM_PATH", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser scenario did not finish within 240 s")
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser scenario failed:\n{log}\n(artifacts in {})",
        artifacts.display()
    );

    // What the browser did, checked from the outside: the audit log holds the UI's
    // mutations, made through the session (not the bootstrap key directly).
    let (_, audit) = admin
        .call(reqwest::Method::GET, "/v1/audit?limit=500", None)
        .await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["project.create", "token.mint", "token.revoke"] {
        assert!(actions.contains(&a), "audit lacks {a}: {actions:?}");
    }
    let shots = std::fs::read_dir(&artifacts)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(
        shots >= 6,
        "expected a screenshot per page, found {shots} in {}",
        artifacts.display()
    );
    // The provider key never reached the browser's pages or the harness output.
    assert!(!log.contains(PROVIDER_KEY));
}
