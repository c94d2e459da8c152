//! The real `iron-control` binary on an embedded store (acceptance 2): data survives a
//! restart, API keys keep working, no secret is on disk in plaintext; plus the master-key
//! check, `rotate-master-key` and `--check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use iron_control::keys::generate_api_key;
use iron_core::transit::{MasterKey, transit_key};
use iron_core::wire::Snapshot;
use iron_testkit::ChildProcess;
use serde_json::{Value, json};

const PROXY_SECRET: &str = "restart-proxy-secret-0123456789";
const PROVIDER_KEY: &str = "sk-restart-PLAINTEXT-provider-0123456789";

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("control.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n[store]\nkind = \"embedded\"\npath = {:?}\n",
        dir.join("data").join("control.redb")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn command(config: &Path, env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iron-control"));
    cmd.env_clear().arg("--config").arg(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn start(config: &Path, env: &[(&str, &str)]) -> (ChildProcess, SocketAddr) {
    let child = ChildProcess::spawn(command(config, env, &[]))
        .await
        .unwrap();
    let line = child
        .wait_for_line("iron-control listening", Duration::from_secs(30))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    (
        child,
        v["fields"]["addr"].as_str().unwrap().parse().unwrap(),
    )
}

async fn run_to_end(config: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut child = ChildProcess::spawn(command(config, env, args))
        .await
        .unwrap();
    let status = child.wait_exit(Duration::from_secs(30)).await.unwrap();
    (status.success(), child.output())
}

async fn call(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every byte of every file under `dir`.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_restart_and_no_secret_is_stored_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let master = MasterKey::generate().to_base64().to_string();
    let bootstrap = generate_api_key().to_string();
    let base = [
        ("IRON_MASTER_KEY", master.as_str()),
        ("IRON_PROXY_SECRET", PROXY_SECRET),
    ];
    let mut first_env = base.to_vec();
    first_env.push(("IRON_BOOTSTRAP_ADMIN_KEY", bootstrap.as_str()));

    let (mut child, addr) = start(&config, &first_env).await;
    let post = reqwest::Method::POST;
    let (s, provider) = call(addr, post.clone(), "/v1/providers", &bootstrap,
        Some(json!({"name":"openai","kind":"openai","base_url":"https://api.openai.com","api_key":PROVIDER_KEY}))).await;
    assert_eq!(s, 201, "{provider}");
    let (s, _) = call(
        addr,
        post.clone(),
        "/v1/projects",
        &bootstrap,
        Some(json!({"name":"alpha","budget_usd":"7.25","providers":["openai"]})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, t1) = call(
        addr,
        post.clone(),
        "/v1/projects/alpha/tokens",
        &bootstrap,
        Some(json!({"name":"keep"})),
    )
    .await;
    let (_, t2) = call(
        addr,
        post.clone(),
        "/v1/projects/alpha/tokens",
        &bootstrap,
        Some(json!({"name":"gone"})),
    )
    .await;
    let (s, _) = call(
        addr,
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{}", t2["id"].as_str().unwrap()),
        &bootstrap,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, admin2) = call(
        addr,
        post.clone(),
        "/v1/api-keys",
        &bootstrap,
        Some(json!({"name":"ops","role":"admin"})),
    )
    .await;
    let admin2 = admin2["key"].as_str().unwrap().to_owned();
    child.signal("TERM").await.unwrap();
    let status = child.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "graceful stop failed: {}", child.output());
    assert!(
        !child.output().contains(PROVIDER_KEY),
        "the log contains the provider key"
    );

    // Nothing secret on disk in plaintext.
    let secrets = [
        PROVIDER_KEY,
        t1["token"].as_str().unwrap(),
        t2["token"].as_str().unwrap(),
        admin2.as_str(),
        bootstrap.as_str(),
        master.as_str(),
    ];
    let all = files(dir.path());
    assert!(all.iter().any(|(p, _)| p.ends_with("control.redb")));
    for (path, bytes) in &all {
        for s in secrets {
            assert!(
                !contains(bytes, s.as_bytes()),
                "{} contains a secret in plaintext",
                path.display()
            );
        }
        // Not even the recognizable middle of the provider key.
        assert!(
            !contains(bytes, b"PLAINTEXT-provider"),
            "{}",
            path.display()
        );
    }

    // Restart without the bootstrap key: everything is still there, both admin keys work.
    let (_child, addr) = start(&config, &base).await;
    for key in [admin2.as_str(), bootstrap.as_str()] {
        let (s, p) = call(addr, reqwest::Method::GET, "/v1/projects/alpha", key, None).await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["budget_usd"], "7.25");
        assert_eq!(p["providers"], json!([provider["id"]]));
    }
    let (_, providers) = call(addr, reqwest::Method::GET, "/v1/providers", &admin2, None).await;
    assert_eq!(providers["data"][0]["api_key_masked"], "sk-…789");
    let (_, tokens) = call(
        addr,
        reqwest::Method::GET,
        "/v1/projects/alpha/tokens",
        &admin2,
        None,
    )
    .await;
    let status = |id: &Value| {
        tokens["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == *id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status(&t1["id"]), "active");
    assert_eq!(status(&t2["id"]), "revoked");
    // Tokens minted before the restart still verify against the published keys.
    let (_, keys) = call(
        addr,
        reqwest::Method::GET,
        "/internal/v1/keys",
        PROXY_SECRET,
        None,
    )
    .await;
    let keys: Vec<iron_core::token::PublicKey> =
        serde_json::from_value(keys["keys"].clone()).unwrap();
    iron_core::token::TokenVerifier::new(&keys)
        .unwrap()
        .verify(t1["token"].as_str().unwrap())
        .unwrap();
    // The proxy snapshot still delivers the key (sealed for transit) and the revocation.
    let (_, snap) = call(
        addr,
        reqwest::Method::GET,
        "/internal/v1/snapshot",
        PROXY_SECRET,
        None,
    )
    .await;
    let snap: Snapshot = serde_json::from_value(snap).unwrap();
    let p = &snap.providers[0];
    assert_eq!(
        &transit_key(PROXY_SECRET.as_bytes())
            .open(&p.api_key, p.id.as_bytes())
            .unwrap()[..],
        PROVIDER_KEY.as_bytes()
    );
    assert_eq!(snap.revoked, vec![t2["id"].as_str().unwrap().to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_master_key_is_refused_and_rotation_reseals() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let old = MasterKey::generate().to_base64().to_string();
    let new = MasterKey::generate().to_base64().to_string();
    let admin = generate_api_key().to_string();
    let env_old = [
        ("IRON_MASTER_KEY", old.as_str()),
        ("IRON_PROXY_SECRET", PROXY_SECRET),
        ("IRON_BOOTSTRAP_ADMIN_KEY", admin.as_str()),
    ];
    let (mut child, addr) = start(&config, &env_old).await;
    let (s, _) = call(addr, reqwest::Method::POST, "/v1/providers", &admin,
        Some(json!({"name":"openai","kind":"openai","base_url":"https://api.openai.com","api_key":PROVIDER_KEY}))).await;
    assert_eq!(s, 201);
    child.signal("TERM").await.unwrap();
    assert!(
        child
            .wait_exit(Duration::from_secs(20))
            .await
            .unwrap()
            .success()
    );

    // The new key alone does not open the old data.
    let env_new = [
        ("IRON_MASTER_KEY", new.as_str()),
        ("IRON_PROXY_SECRET", PROXY_SECRET),
    ];
    let (ok, out) = run_to_end(&config, &env_new, &[]).await;
    assert!(!ok);
    assert!(out.contains("IRON_MASTER_KEY does not match"), "{out}");
    assert!(
        !out.contains(&new) && !out.contains(&old),
        "a master key was printed"
    );

    // Rotation with the old key as previous.
    let env_rotate = [
        ("IRON_MASTER_KEY", new.as_str()),
        ("IRON_MASTER_KEY_PREVIOUS", old.as_str()),
        ("IRON_PROXY_SECRET", PROXY_SECRET),
    ];
    let (ok, out) = run_to_end(&config, &env_rotate, &["rotate-master-key"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("re-sealed 1 provider key(s) and 1 signing key(s)"),
        "{out}"
    );

    // Now the new key alone works and still opens the provider key.
    let (_child, addr) = start(&config, &env_new).await;
    let (s, snap) = call(
        addr,
        reqwest::Method::GET,
        "/internal/v1/snapshot",
        PROXY_SECRET,
        None,
    )
    .await;
    assert_eq!(s, 200, "{snap}");
    let snap: Snapshot = serde_json::from_value(snap).unwrap();
    let p = &snap.providers[0];
    assert_eq!(
        &transit_key(PROXY_SECRET.as_bytes())
            .open(&p.api_key, p.id.as_bytes())
            .unwrap()[..],
        PROVIDER_KEY.as_bytes()
    );
}

#[tokio::test]
async fn check_config_validates_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let master = MasterKey::generate().to_base64().to_string();
    let env = [
        ("IRON_MASTER_KEY", master.as_str()),
        ("IRON_PROXY_SECRET", PROXY_SECRET),
    ];
    let (ok, out) = run_to_end(&config, &env, &["--check-config"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK"));
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nlisten_backlog = 5\n",
    )
    .unwrap();
    let (ok, out) = run_to_end(&config, &env, &["--check-config"]).await;
    assert!(!ok);
    assert!(out.contains("listen_backlog"), "{out}");
    std::fs::write(&config, "[server]\n").unwrap();
    let (ok, out) = run_to_end(
        &config,
        &[("IRON_MASTER_KEY", master.as_str())],
        &["--check-config"],
    )
    .await;
    assert!(!ok);
    assert!(out.contains("IRON_PROXY_SECRET is not set"), "{out}");
    let (ok, out) = run_to_end(
        &config,
        &[
            ("IRON_STORE__KINDD", "redis"),
            ("IRON_MASTER_KEY", master.as_str()),
            ("IRON_PROXY_SECRET", PROXY_SECRET),
        ],
        &["--check-config"],
    )
    .await;
    assert!(!ok);
    assert!(out.contains("IRON_STORE__KINDD"), "{out}");
}
