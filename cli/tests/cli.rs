//! The real `iron` binary against an in-test control service: exit codes (0 ok, 1 error,
//! 2 usage), JSON output, key masking, and no provider key, token or API key in output
//! other than the one place each is meant to be shown once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use iron_control::config::{Config, Secrets};
use iron_control::keys::{Secret, generate_api_key};
use iron_core::transit::{MasterKey, MasterKeyring};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const PROVIDER_KEY: &str = "sk-cli-SECRET-provider-key-abcdefxyz";

struct Control {
    addr: SocketAddr,
    admin: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
    cwd: tempfile::TempDir,
}

async fn control() -> Control {
    let dir = tempfile::tempdir().unwrap();
    let admin = generate_api_key().to_string();
    let secrets = Secrets {
        master_keys: Arc::new(MasterKeyring::new(MasterKey::generate(), vec![])),
        proxy_secret: Secret::new("cli-test-proxy-secret-0123"),
        bootstrap_admin_key: Some(Secret::new(admin.clone())),
    };
    let mut cfg = Config::local(
        dir.path().join("c.redb"),
        "127.0.0.1:0".parse().unwrap(),
        secrets,
    );
    cfg.security.allow_private_upstreams = false;
    let control = iron_control::server::build_state(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = control.state.clone();
    tokio::spawn(async move {
        let _keep = control;
        let _ = iron_control::server::serve(listener, state, async {
            let _ = stopped.await;
        })
        .await;
    });
    Control {
        addr,
        admin,
        _dir: dir,
        _stop: stop,
        cwd: tempfile::tempdir().unwrap(),
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `iron` with a clean environment: IRON_CONTROL_URL, IRON_API_KEY (admin unless
/// `key` says otherwise) and `env`.
async fn iron_with(
    c: &Control,
    key: Option<&str>,
    env: &[(&str, &str)],
    stdin: Option<&str>,
    args: &[&str],
) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iron"));
    cmd.env_clear()
        .current_dir(c.cwd.path())
        .env("IRON_CONTROL_URL", format!("http://{}", c.addr))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = key {
        cmd.env("IRON_API_KEY", k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input.as_bytes()).await.unwrap();
        drop(s);
    }
    let out = child.wait_with_output().await.unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn iron(c: &Control, args: &[&str]) -> Out {
    iron_with(c, Some(&c.admin.clone()), &[], None, args).await
}

fn ok(o: &Out) {
    assert_eq!(o.code, 0, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_projects_tokens_end_to_end() {
    let c = control().await;
    let mut transcript = String::new();

    // provider add: key from env, file and stdin; never echoed.
    let o = iron_with(
        &c,
        Some(&c.admin.clone()),
        &[("MY_KEY", PROVIDER_KEY)],
        None,
        &[
            "provider",
            "add",
            "openai",
            "--kind",
            "openai",
            "--base-url",
            "https://api.openai.com/v1",
            "--api-key-env",
            "MY_KEY",
            "--models",
            "gpt-4o*,o3*",
            "--priority",
            "5",
        ],
    )
    .await;
    ok(&o);
    assert!(o.stdout.contains("sk-…xyz"), "{o:?}");
    transcript.push_str(&o.all());
    let key_file = c.cwd.path().join("anthropic.key");
    std::fs::write(&key_file, format!("{PROVIDER_KEY}-2\n")).unwrap();
    let o = iron(
        &c,
        &[
            "provider",
            "add",
            "claude",
            "--kind",
            "anthropic",
            "--base-url",
            "https://api.anthropic.com",
            "--api-key-file",
            key_file.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    ok(&o);
    assert_eq!(o.json()["api_key_masked"], "sk-…z-2");
    transcript.push_str(&o.all());
    let o = iron_with(
        &c,
        Some(&c.admin.clone()),
        &[],
        Some(&format!("{PROVIDER_KEY}-3\n")),
        &[
            "provider",
            "add",
            "compat",
            "--kind",
            "openai-compatible",
            "--base-url",
            "https://llm.example.com",
            "--api-key-stdin",
        ],
    )
    .await;
    ok(&o);
    transcript.push_str(&o.all());

    let o = iron(&c, &["provider", "list", "--output", "json"]).await;
    ok(&o);
    let list = o.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let openai = list.iter().find(|p| p["name"] == "openai").unwrap();
    assert_eq!(openai["api_key_masked"], "sk-…xyz");
    assert_eq!(openai["base_url"], "https://api.openai.com");
    assert_eq!(openai["models"], serde_json::json!(["gpt-4o*", "o3*"]));
    assert_eq!(openai["priority"], 5);
    transcript.push_str(&o.all());
    let o = iron(&c, &["provider", "list"]).await;
    ok(&o);
    assert!(o.stdout.starts_with("NAME"), "{o:?}");
    assert!(o.stdout.contains("sk-…xyz"));
    transcript.push_str(&o.all());
    let o = iron_with(
        &c,
        Some(&c.admin.clone()),
        &[],
        Some("sk-rotated-SECRET-0123456789"),
        &["provider", "rotate-key", "openai", "--api-key-stdin"],
    )
    .await;
    ok(&o);
    assert!(o.stdout.contains("sk-…789"));
    transcript.push_str(&o.all());

    // projects
    let o = iron(
        &c,
        &[
            "project",
            "create",
            "alpha",
            "--budget-usd",
            "12.5",
            "--period",
            "monthly",
            "--providers",
            "openai,claude",
        ],
    )
    .await;
    ok(&o);
    transcript.push_str(&o.all());
    let o = iron(&c, &["project", "show", "alpha", "-o", "json"]).await;
    ok(&o);
    let p = o.json();
    assert_eq!(p["budget_usd"], "12.50");
    assert_eq!(p["period"], "monthly");
    assert_eq!(p["providers"].as_array().unwrap().len(), 2);
    assert_eq!(p["budget"]["remaining_usd"], "12.50");
    ok(&iron(&c, &["project", "set-budget", "alpha", "--usd", "20"]).await);
    // rate limits: set, change one, clear; 0 is refused by control (exit 1).
    let o = iron(
        &c,
        &[
            "project",
            "set-limits",
            "alpha",
            "--rpm",
            "600",
            "--tpm",
            "9000",
            "-o",
            "json",
        ],
    )
    .await;
    ok(&o);
    assert_eq!(
        o.json()["rate_limits"],
        serde_json::json!({"rpm": 600, "tpm": 9000})
    );
    let o = iron(
        &c,
        &[
            "project",
            "set-limits",
            "alpha",
            "--rpm",
            "60",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(
        o.json()["rate_limits"],
        serde_json::json!({"rpm": 60, "tpm": 9000})
    );
    let o = iron(&c, &["project", "set-limits", "alpha", "--rpm", "0"]).await;
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("rpm"), "{o:?}");
    let o = iron(
        &c,
        &["project", "set-limits", "alpha", "--clear", "-o", "json"],
    )
    .await;
    assert_eq!(
        o.json()["rate_limits"],
        serde_json::json!({"rpm": null, "tpm": null})
    );
    let o = iron(&c, &["project", "list", "-o", "json"]).await;
    assert_eq!(o.json()[0]["budget_usd"], "20.00");
    let o = iron(&c, &["project", "list"]).await;
    assert!(
        o.stdout.contains("alpha") && o.stdout.contains("20.00"),
        "{o:?}"
    );

    // tokens
    let o = iron(
        &c,
        &[
            "token",
            "mint",
            "--project",
            "alpha",
            "--name",
            "ci",
            "--ttl",
            "7d",
            "--output",
            "json",
        ],
    )
    .await;
    ok(&o);
    let t = o.json();
    for k in ["id", "token", "project", "expires_at"] {
        assert!(t[k].is_string(), "{k}: {t}");
    }
    let token = t["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ic_"));
    assert_eq!(t["project"], p["id"]);
    let o = iron(&c, &["token", "mint", "--project", "alpha"]).await;
    ok(&o);
    let printed: Vec<&str> = o.stdout.lines().filter(|l| l.starts_with("ic_")).collect();
    assert_eq!(
        printed.len(),
        1,
        "the token is printed once on its own line: {o:?}"
    );
    let o = iron(&c, &["token", "list", "--project", "alpha", "-o", "json"]).await;
    ok(&o);
    assert_eq!(o.json().as_array().unwrap().len(), 2);
    assert!(!o.stdout.contains(&token), "token list shows a token");
    let o = iron(&c, &["token", "list"]).await;
    assert!(!o.stdout.contains(&token));
    // A token with its own rate limit (shown on its record).
    let o = iron(
        &c,
        &[
            "token",
            "mint",
            "--project",
            "alpha",
            "--rpm",
            "5",
            "-o",
            "json",
        ],
    )
    .await;
    ok(&o);
    let o = iron(
        &c,
        &[
            "token",
            "show",
            o.json()["id"].as_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(
        o.json()["rate_limits"],
        serde_json::json!({"rpm": 5, "tpm": null})
    );
    let id = t["id"].as_str().unwrap();
    ok(&iron(&c, &["token", "revoke", id]).await);
    let o = iron(&c, &["token", "show", id, "-o", "json"]).await;
    assert_eq!(o.json()["status"], "revoked");

    // usage, pricing, audit
    ok(&iron(&c, &["usage", "--project", "alpha", "--since", "24h"]).await);
    let o = iron(&c, &["usage", "--csv"]).await;
    ok(&o);
    assert!(o.stdout.starts_with("time,project"));
    let o = iron(&c, &["pricing", "list", "-o", "json"]).await;
    ok(&o);
    assert!(
        o.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["model"] == "gpt-4o")
    );
    ok(&iron(
        &c,
        &[
            "pricing",
            "set",
            "my-model",
            "--input-per-mtok",
            "1.5",
            "--output-per-mtok",
            "3",
        ],
    )
    .await);
    let o = iron(&c, &["audit", "-o", "json"]).await;
    ok(&o);
    transcript.push_str(&o.all());

    // Nothing printed a provider key.
    for k in [PROVIDER_KEY, "sk-rotated-SECRET-0123456789"] {
        assert!(
            !transcript.contains(k),
            "CLI output contains a provider key"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_exit_codes_and_helpful_messages() {
    let c = control().await;
    // Usage errors: 2.
    for args in [
        vec![],
        vec!["project", "create"],
        vec![
            "provider",
            "add",
            "x",
            "--kind",
            "openai",
            "--base-url",
            "https://a.example.com",
        ],
        vec![
            "provider",
            "add",
            "x",
            "--kind",
            "gopher",
            "--base-url",
            "https://a.example.com",
            "--api-key-stdin",
        ],
        vec![
            "provider",
            "add",
            "x",
            "--kind",
            "openai",
            "--base-url",
            "u",
            "--api-key-stdin",
            "--api-key-env",
            "V",
        ],
        vec!["--output", "xml", "project", "list"],
        vec!["project", "set-budget", "alpha"],
        vec!["project", "set-limits", "alpha"],
        vec!["project", "set-limits", "alpha", "--rpm", "-1"],
        vec!["token", "mint"],
        vec!["frobnicate"],
    ] {
        let o = iron(&c, &args).await;
        assert_eq!(o.code, 2, "{args:?}: {o:?}");
    }
    ok(&iron(&c, &["--help"]).await);

    // Control refusals: 1 with the server's message.
    ok(&iron(&c, &["project", "create", "alpha"]).await);
    let o = iron(&c, &["project", "create", "alpha"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("already exists"), "{o:?}");
    let o = iron(&c, &["project", "create", "Bad Name"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("name"), "{o:?}");
    let o = iron(&c, &["project", "create", "neg", "--budget-usd", "-5"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("negative"), "{o:?}");
    let o = iron(&c, &["project", "show", "nope"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not found"), "{o:?}");
    let o = iron(
        &c,
        &["token", "mint", "--project", "alpha", "--ttl", "forever"],
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("ttl"), "{o:?}");
    let o = iron_with(
        &c,
        Some(&c.admin.clone()),
        &[],
        None,
        &[
            "provider",
            "add",
            "p",
            "--kind",
            "openai",
            "--base-url",
            "http://10.0.0.1",
            "--api-key-env",
            "UNSET_VAR",
        ],
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("UNSET_VAR is not set"), "{o:?}");
    let o = iron_with(
        &c,
        Some(&c.admin.clone()),
        &[("K", PROVIDER_KEY)],
        None,
        &[
            "provider",
            "add",
            "p",
            "--kind",
            "openai",
            "--base-url",
            "http://10.0.0.1",
            "--api-key-env",
            "K",
        ],
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("base_url"), "{o:?}");
    assert!(!o.all().contains(PROVIDER_KEY));

    // Auth problems.
    let o = iron_with(&c, None, &[], None, &["project", "list"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("IRON_API_KEY"), "{o:?}");
    let o = iron_with(
        &c,
        Some("iron_ak_wrong0000000000000000000000000000"),
        &[],
        None,
        &["project", "list"],
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("invalid API key") && o.stderr.contains("IRON_API_KEY"),
        "{o:?}"
    );
    let viewer = iron(
        &c,
        &["api-key", "create", "v", "--role", "viewer", "-o", "json"],
    )
    .await
    .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = iron_with(&c, Some(&viewer), &[], None, &["project", "create", "beta"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("read-only"), "{o:?}");
    ok(&iron_with(&c, Some(&viewer), &[], None, &["project", "list"]).await);

    // Fallback to ./.iron/admin.key.
    std::fs::create_dir_all(c.cwd.path().join(".iron")).unwrap();
    std::fs::write(
        c.cwd.path().join(".iron/admin.key"),
        format!("{}\n", c.admin),
    )
    .unwrap();
    ok(&iron_with(&c, None, &[], None, &["project", "list"]).await);

    // Unreachable control.
    let o = iron_with(
        &c,
        Some(&c.admin.clone()),
        &[("IRON_CONTROL_URL", "http://127.0.0.1:1")],
        None,
        &["project", "list"],
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("cannot reach Iron control"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_exports_to_stdout_as_json_or_csv() {
    let c = control().await;
    for name in ["alpha", "beta", "gamma"] {
        ok(&iron(&c, &["project", "create", name]).await);
    }
    ok(&iron(
        &c,
        &[
            "pricing",
            "set",
            "=cmd|calc",
            "--input-per-mtok",
            "1",
            "--output-per-mtok",
            "2",
        ],
    )
    .await);

    // JSON: every matching event, newest first, with before/after images.
    let o = iron(
        &c,
        &[
            "audit",
            "--since",
            "1h",
            "--action",
            "project.create",
            "--format",
            "json",
        ],
    )
    .await;
    ok(&o);
    let v = o.json();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["after"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gamma", "beta", "alpha"]);
    assert!(v[0]["before"].is_null());

    // CSV: header + one row per event; formula-like cells are defused.
    let o = iron(&c, &["audit", "--since", "7d", "--format", "csv"]).await;
    ok(&o);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "id,time,actor,action,target,project,request_id,source_ip,details,before,after"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(",project.create,"))
            .count(),
        3
    );
    let price = lines.iter().find(|l| l.contains(",pricing.set,")).unwrap();
    assert!(price.contains(",'=cmd|calc,"), "{price}");

    // --until before everything: an empty export; bad input: exit 1 or 2 with a message.
    let o = iron(
        &c,
        &[
            "audit",
            "--until",
            "2000-01-01T00:00:00Z",
            "--format",
            "json",
        ],
    )
    .await;
    ok(&o);
    assert_eq!(o.json(), serde_json::json!([]));
    let o = iron(&c, &["audit", "--since", "yesterday", "--format", "csv"]).await;
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("since"), "{o:?}");
    let o = iron(&c, &["audit", "--format", "xml"]).await;
    assert_eq!(o.code, 2, "{o:?}");
}

/// Issue 12 acceptance 4: a production-configured control (no `allow_private_upstreams`)
/// refuses provider URLs that point inside the network or are plain http, through the CLI.
/// (`iron up` allows loopback mocks: e2e `iron_up` adds one.)
#[tokio::test]
async fn provider_add_refuses_internal_and_plain_http_upstreams() {
    let c = control().await;
    let env = [("SSRF_KEY", "sk-ssrf-test-0123456789abcdef")];
    for (i, url) in [
        "http://169.254.169.254/latest/meta-data",
        "https://169.254.169.254",
        "https://127.0.0.1:8443",
        "https://10.1.2.3",
        "https://[::1]",
        "https://localhost",
        "http://api.example.com",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("ssrf{i}");
        let args = [
            "provider",
            "add",
            &name,
            "--kind",
            "openai",
            "--base-url",
            url,
            "--api-key-env",
            "SSRF_KEY",
        ];
        let o = iron_with(&c, Some(&c.admin.clone()), &env, None, &args).await;
        assert_ne!(o.code, 0, "{url} was accepted: {o:?}");
        assert!(o.all().contains("invalid_base_url"), "{url}: {o:?}");
        assert!(!o.all().contains("sk-ssrf-test"), "{o:?}");
    }
    let args = [
        "provider",
        "add",
        "public",
        "--kind",
        "openai",
        "--base-url",
        "https://api.openai.com",
        "--api-key-env",
        "SSRF_KEY",
    ];
    ok(&iron_with(&c, Some(&c.admin.clone()), &env, None, &args).await);
    let listed = iron(&c, &["provider", "list", "--output", "json"]).await;
    assert_eq!(
        listed.json().as_array().map(Vec::len),
        Some(1),
        "{listed:?}"
    );
}

/// Issue 6: `iron provider add/update --connect-timeout-ms --first-byte-timeout-ms
/// --idle-timeout-ms` set a deployment's own timeouts; `--clear-timeouts` removes them;
/// out-of-range values are a usage error (exit 2) naming the flag, sent nowhere.
#[tokio::test]
async fn provider_timeouts_are_set_updated_and_cleared() {
    let c = control().await;
    let env = [("T_KEY", "sk-timeouts-test-0123456789abcdef")];
    let add = [
        "provider",
        "add",
        "slow",
        "--kind",
        "openai",
        "--base-url",
        "https://api.openai.com",
        "--api-key-env",
        "T_KEY",
        "--first-byte-timeout-ms",
        "1500",
        "--idle-timeout-ms",
        "20000",
        "-o",
        "json",
    ];
    let o = iron_with(&c, Some(&c.admin.clone()), &env, None, &add).await;
    ok(&o);
    assert_eq!(
        o.json()["timeouts"],
        serde_json::json!({"connect_ms": null, "first_byte_ms": 1500, "idle_ms": 20000})
    );

    let o = iron(
        &c,
        &[
            "provider",
            "update",
            "slow",
            "--connect-timeout-ms",
            "800",
            "--first-byte-timeout-ms",
            "2500",
        ],
    )
    .await;
    ok(&o);
    assert!(o.stdout.contains("connect timeout (ms)     800"), "{o:?}");
    assert!(o.stdout.contains("first byte timeout (ms)  2500"), "{o:?}");
    assert!(o.stdout.contains("idle timeout (ms)        20000"), "{o:?}");
    let shown = iron(&c, &["provider", "show", "slow", "-o", "json"]).await;
    ok(&shown);
    assert_eq!(
        shown.json()["timeouts"],
        serde_json::json!({"connect_ms": 800, "first_byte_ms": 2500, "idle_ms": 20000})
    );

    for (flag, value) in [
        ("--first-byte-timeout-ms", "0"),
        ("--idle-timeout-ms", "600001"),
        ("--connect-timeout-ms", "-5"),
        ("--connect-timeout-ms", "soon"),
    ] {
        let o = iron(&c, &["provider", "update", "slow", flag, value]).await;
        assert_eq!(o.code, 2, "{flag} {value}: {o:?}");
        assert!(o.stderr.contains(flag), "{flag} {value}: {o:?}");
    }
    // No flag at all is a usage error too.
    assert_eq!(iron(&c, &["provider", "update", "slow"]).await.code, 2);
    let still = iron(&c, &["provider", "show", "slow", "-o", "json"]).await;
    assert_eq!(still.json()["timeouts"], shown.json()["timeouts"]);

    let o = iron(
        &c,
        &[
            "provider",
            "update",
            "slow",
            "--clear-timeouts",
            "-o",
            "json",
        ],
    )
    .await;
    ok(&o);
    assert_eq!(
        o.json()["timeouts"],
        serde_json::json!({"connect_ms": null, "first_byte_ms": null, "idle_ms": null})
    );
    let o = iron(&c, &["provider", "show", "slow"]).await;
    assert!(
        o.stdout.contains("first byte timeout (ms)  default"),
        "{o:?}"
    );
}
