//! The real `iron-control` binary: dashboard sessions (sign-in cookie, CSRF, sign-out
//! revocation, key deletion ends sessions, replicas sharing Redis accept and revoke each
//! other's sessions), brute-force limits per source IP and key prefix (issue #12
//! acceptance 3, with clients bound to other loopback addresses), trusted proxies, and the
//! audit export (JSON and CSV, every matching event, append-only).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use iron_control::keys::generate_api_key;
use iron_core::transit::MasterKey;
use iron_testkit::ChildProcess;
use reqwest::Method;
use serde_json::{Value, json};

const PROXY_SECRET: &str = "auth-test-proxy-secret-0123456789";

struct Server {
    _child: ChildProcess,
    addr: SocketAddr,
    admin: String,
}

fn write_config(dir: &Path, store: &str, security: &str) -> std::path::PathBuf {
    let path = dir.join(format!("control-{}.toml", rand_suffix()));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n{store}\n[security]\n{security}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn rand_suffix() -> String {
    generate_api_key()[8..16].to_owned()
}

fn embedded(dir: &Path) -> String {
    format!(
        "[store]\nkind = \"embedded\"\npath = {:?}",
        dir.join("control.redb")
    )
}

async fn start(config: &Path, master: &str, admin: &str) -> Server {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iron-control"));
    cmd.env_clear()
        .arg("--config")
        .arg(config)
        .env("IRON_MASTER_KEY", master)
        .env("IRON_PROXY_SECRET", PROXY_SECRET)
        .env("IRON_BOOTSTRAP_ADMIN_KEY", admin);
    let child = ChildProcess::spawn(cmd).await.unwrap();
    let line = child
        .wait_for_line("iron-control listening", Duration::from_secs(30))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    Server {
        _child: child,
        addr: v["fields"]["addr"].as_str().unwrap().parse().unwrap(),
        admin: admin.to_owned(),
    }
}

async fn start_embedded(dir: &Path, security: &str) -> Server {
    let config = write_config(dir, &embedded(dir), security);
    let master = MasterKey::generate().to_base64().to_string();
    start(&config, &master, generate_api_key().as_ref()).await
}

/// A client whose connections come from `local` (any 127/8 address reaches the server).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

async fn send(req: reqwest::RequestBuilder) -> Resp {
    let r = req.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = reqwest::Client::new()
            .request(method.clone(), self.url(path))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = send(req).await;
        assert!((200..300).contains(&r.status), "{method} {path}: {r:?}");
        r.json()
    }

    async fn sign_in(&self, key: &str) -> (Resp, String) {
        let r = send(
            reqwest::Client::new()
                .post(self.url("/v1/session"))
                .json(&json!({"api_key": key})),
        )
        .await;
        let cookie = r
            .header("set-cookie")
            .map(|c| c.split(';').next().unwrap().to_owned())
            .unwrap_or_default();
        (r, cookie)
    }

    /// A request carrying the session cookie (and `origin`, when given).
    async fn with_cookie(
        &self,
        method: Method,
        path: &str,
        cookie: &str,
        origin: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = reqwest::Client::new()
            .request(method, self.url(path))
            .header("cookie", cookie);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_sign_in_csrf_sign_out_and_key_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_embedded(dir.path(), "session_ttl_secs = 3600").await;

    // Bad keys and malformed bodies: no cookie.
    let (r, cookie) = s.sign_in("iron_ak_notarealkey000000000000000000000").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(cookie.is_empty());
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = send(
        reqwest::Client::new()
            .post(s.url("/v1/session"))
            .json(&json!({"key": "x"})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");

    // Sign in: identity + a hardened cookie.
    let (r, cookie) = s.sign_in(&s.admin).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"key_id": "ak_bootstrap", "role": "admin", "project": null})
    );
    let set = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    assert!(
        !set.contains("Secure"),
        "Secure only when configured: {set}"
    );
    assert!(cookie.starts_with("iron_session="));
    assert!(!r.text.contains(&s.admin), "the key is echoed");

    // The cookie authenticates reads.
    let r = s
        .with_cookie(Method::GET, "/v1/session", &cookie, None, None)
        .await;
    assert_eq!(r.json()["role"], "admin", "{r:?}");
    let r = s
        .with_cookie(Method::GET, "/v1/projects", &cookie, None, None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(reqwest::Client::new().get(s.url("/v1/session"))).await;
    assert_eq!(r.status, 401, "{r:?}");

    // CSRF: cookie mutations need a same-origin Origin (or Referer).
    let body = Some(json!({"name": "alpha"}));
    let r = s
        .with_cookie(Method::POST, "/v1/projects", &cookie, None, body.clone())
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = s
        .with_cookie(
            Method::POST,
            "/v1/projects",
            &cookie,
            Some("http://evil.example"),
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = send(
        reqwest::Client::new()
            .post(s.url("/v1/projects"))
            .header("cookie", &cookie)
            .header("referer", format!("{}/projects", s.origin()))
            .json(&json!({"name": "via-referer"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = s
        .with_cookie(
            Method::POST,
            "/v1/projects",
            &cookie,
            Some(&s.origin()),
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    // Bearer calls are unaffected by the Origin rule.
    s.admin(Method::POST, "/v1/projects", Some(json!({"name": "beta"})))
        .await;

    // Audit: the session is the actor, with the source address and before/after.
    let a = s
        .admin(Method::GET, "/v1/audit?action=project.create", None)
        .await;
    let alpha = a["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["details"]["name"] == "alpha")
        .unwrap()
        .clone();
    assert_eq!(alpha["actor"], "session:ak_bootstrap");
    assert_eq!(alpha["source_ip"], "127.0.0.1");
    assert_eq!(alpha["before"], Value::Null);
    assert_eq!(alpha["after"]["name"], "alpha");
    let signin = s
        .admin(Method::GET, "/v1/audit?action=session.create", None)
        .await;
    assert_eq!(signin["data"].as_array().unwrap().len(), 1, "{signin}");
    assert!(!signin.to_string().contains(&s.admin));
    assert!(
        !signin
            .to_string()
            .contains(cookie.trim_start_matches("iron_session="))
    );

    // Forged and tampered cookies are refused.
    let forged = {
        let claims = json!({"iss":"iron-control/session","sub":"ak_bootstrap","role":"admin",
            "iat": 1, "exp": 4_000_000_000u64, "jti":"ses_01FORGED"});
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"not the derived key"),
        )
        .unwrap();
        format!("iron_session={jwt}")
    };
    let mut tampered = cookie.clone();
    tampered.pop();
    tampered.push(if cookie.ends_with('A') { 'B' } else { 'A' });
    for bad in [forged.as_str(), tampered.as_str(), "iron_session=garbage"] {
        let r = s
            .with_cookie(Method::GET, "/v1/projects", bad, None, None)
            .await;
        assert_eq!(r.status, 401, "{bad}: {r:?}");
    }

    // Sign out: 204, cookie cleared, and the old cookie is refused from now on.
    let r = s
        .with_cookie(
            Method::DELETE,
            "/v1/session",
            &cookie,
            Some(&s.origin()),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = s
        .with_cookie(Method::GET, "/v1/projects", &cookie, None, None)
        .await;
    assert_eq!(r.status, 401, "revoked session still works: {r:?}");

    // Viewer and project sessions carry their role; deleting the key ends the session.
    let v = s
        .admin(
            Method::POST,
            "/v1/api-keys",
            Some(json!({"name":"v","role":"viewer"})),
        )
        .await;
    let (r, viewer_cookie) = s.sign_in(v["key"].as_str().unwrap()).await;
    assert_eq!(r.json()["role"], "viewer");
    let r = s
        .with_cookie(
            Method::POST,
            "/v1/projects",
            &viewer_cookie,
            Some(&s.origin()),
            Some(json!({"name":"gamma"})),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let p = s
        .admin(
            Method::POST,
            "/v1/api-keys",
            Some(json!({"name":"p","role":"project:alpha"})),
        )
        .await;
    let (r, _) = s.sign_in(p["key"].as_str().unwrap()).await;
    assert_eq!(r.json()["role"], "project");
    assert!(r.json()["project"].as_str().unwrap().starts_with("prj_"));
    s.admin(
        Method::DELETE,
        &format!("/v1/api-keys/{}", v["id"].as_str().unwrap()),
        None,
    )
    .await;
    let r = s
        .with_cookie(Method::GET, "/v1/session", &viewer_cookie, None, None)
        .await;
    assert_eq!(r.status, 401, "session outlived its key: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_accept_and_revoke_each_others_sessions() {
    let redis = iron_testkit::RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("[store]\nkind = \"redis\"\nurl = {:?}", redis.url());
    let master = MasterKey::generate().to_base64().to_string();
    let admin = generate_api_key().to_string();
    let a = start(&write_config(dir.path(), &store, ""), &master, &admin).await;
    let b = start(&write_config(dir.path(), &store, ""), &master, &admin).await;

    let (r, cookie) = a.sign_in(&admin).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = b
        .with_cookie(Method::GET, "/v1/session", &cookie, None, None)
        .await;
    assert_eq!(r.status, 200, "replica B refuses A's session: {r:?}");
    let r = b
        .with_cookie(
            Method::DELETE,
            "/v1/session",
            &cookie,
            Some(&b.origin()),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    for s in [&a, &b] {
        let r = s
            .with_cookie(Method::GET, "/v1/session", &cookie, None, None)
            .await;
        assert_eq!(
            r.status, 401,
            "revoked on B, still valid on {}: {r:?}",
            s.addr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_keys_are_limited_per_source_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_embedded(
        dir.path(),
        "auth_failure_limit = 10\nauth_failure_window_secs = 60\ntrusted_proxies = \"127.0.0.5\"",
    )
    .await;
    let attacker = client_from("127.0.0.1");
    let good = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let bad = generate_api_key().to_string();
        let r = send(attacker.get(s.url("/v1/projects")).bearer_auth(&bad)).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.json()["error"]["type"], "rate_limited", "{r:?}");
            assert_eq!(r.json()["error"]["code"], "rate_limited", "{r:?}");
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "retry-after {retry}");
        }
        // Meanwhile a good client elsewhere is served.
        let r = send(good.get(s.url("/v1/projects")).bearer_auth(&s.admin)).await;
        assert_eq!(r.status, 200, "good client refused: {r:?}");
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429; 5], "{statuses:?}");
    // Blocked before the key is checked: even a good key from the attacker's address.
    let r = send(attacker.get(s.url("/v1/projects")).bearer_auth(&s.admin)).await;
    assert_eq!(r.status, 429, "{r:?}");
    // Sign-in counts and is limited the same way.
    let r = send(
        attacker
            .post(s.url("/v1/session"))
            .json(&json!({"api_key": s.admin})),
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");

    // Per key prefix: many addresses guessing one prefix get that prefix blocked.
    let prefix = "iron_ak_ZZZZ";
    for i in 0..10 {
        let c = client_from(&format!("127.0.1.{}", i + 1));
        let r = send(
            c.get(s.url("/v1/projects"))
                .bearer_auth(format!("{prefix}{}", &generate_api_key()[12..])),
        )
        .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    let r = send(
        client_from("127.0.1.100")
            .get(s.url("/v1/projects"))
            .bearer_auth(format!("{prefix}{}", &generate_api_key()[12..])),
    )
    .await;
    assert_eq!(r.status, 429, "prefix not limited: {r:?}");

    // X-Forwarded-For counts only from a trusted proxy (127.0.0.5).
    let proxy = client_from("127.0.0.5");
    for _ in 0..10 {
        let r = send(
            proxy
                .get(s.url("/v1/projects"))
                .header("x-forwarded-for", "10.9.9.9")
                .bearer_auth(generate_api_key().to_string()),
        )
        .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    let r = send(
        proxy
            .get(s.url("/v1/projects"))
            .header("x-forwarded-for", "10.9.9.9")
            .bearer_auth(&s.admin),
    )
    .await;
    assert_eq!(r.status, 429, "forwarded client not limited: {r:?}");
    // Another client behind the same proxy is fine, and is the audited source.
    let r = send(
        proxy
            .post(s.url("/v1/projects"))
            .header("x-forwarded-for", "203.0.113.7, 10.9.9.8")
            .bearer_auth(&s.admin)
            .json(&json!({"name":"via-proxy"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let a = send(
        good.get(s.url("/v1/audit?action=project.create&limit=1"))
            .bearer_auth(&s.admin),
    )
    .await
    .json();
    assert_eq!(a["data"][0]["source_ip"], "10.9.9.8", "{a}");
    // An untrusted peer cannot pick its address with the header.
    let r = send(
        client_from("127.0.0.6")
            .get(s.url("/v1/projects"))
            .header("x-forwarded-for", "10.9.9.9")
            .bearer_auth(&s.admin),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_exports_every_event_as_json_or_csv_and_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_embedded(dir.path(), "").await;
    // More events than one store page (500).
    let n = 520;
    for i in 0..n {
        s.admin(
            Method::PUT,
            &format!("/v1/pricing/model-{i:03}"),
            Some(json!({"input_per_mtok_usd":"1","output_per_mtok_usd":"2"})),
        )
        .await;
    }
    s.admin(Method::POST, "/v1/projects", Some(json!({"name":"alpha"})))
        .await;

    let c = reqwest::Client::new();
    let r = send(
        c.get(s.url("/v1/audit?format=json&action=pricing.set&since=1h"))
            .bearer_auth(&s.admin),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let all = r.json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), n, "JSON export is not every matching event");
    assert_eq!(
        all[0]["target"],
        format!("model-{:03}", n - 1),
        "newest first"
    );
    assert_eq!(all[0]["before"], Value::Null);
    assert_eq!(all[0]["after"]["model"], format!("model-{:03}", n - 1));
    assert_eq!(all[0]["source_ip"], "127.0.0.1");
    let ids: std::collections::BTreeSet<&str> =
        all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n, "duplicates in the export");

    let r = send(
        c.get(s.url("/v1/audit?format=csv&since=1h"))
            .bearer_auth(&s.admin),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(
        lines[0],
        "id,time,actor,action,target,project,request_id,source_ip,details,before,after"
    );
    // Bootstrap key registration + n prices + one project.
    let total = s.admin(Method::GET, "/v1/audit?format=json", None).await;
    assert_eq!(lines.len() - 1, total.as_array().unwrap().len());
    assert!(lines[1].contains(",project.create,"), "{}", lines[1]);
    assert!(lines.iter().filter(|l| l.contains(",pricing.set,")).count() == n);

    // Filters, caps and bad input.
    let r = send(
        c.get(s.url("/v1/audit?format=json&limit=7"))
            .bearer_auth(&s.admin),
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 7);
    let r = send(
        c.get(s.url("/v1/audit?format=json&until=2000-01-01T00:00:00Z"))
            .bearer_auth(&s.admin),
    )
    .await;
    assert_eq!(r.json(), json!([]));
    for q in [
        "format=xml",
        "format=json&limit=0",
        "format=csv&since=yesterday",
    ] {
        let r = send(
            c.get(s.url(&format!("/v1/audit?{q}")))
                .bearer_auth(&s.admin),
        )
        .await;
        assert_eq!(r.status, 400, "{q}: {r:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_query");
    }

    // Append-only: no method changes the log.
    let before = total.as_array().unwrap().len();
    for m in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        let r = send(
            c.request(m.clone(), s.url("/v1/audit"))
                .bearer_auth(&s.admin)
                .json(&json!({})),
        )
        .await;
        assert_eq!(r.status, 405, "{m} /v1/audit: {r:?}");
    }
    let after = s.admin(Method::GET, "/v1/audit?format=json", None).await;
    assert_eq!(after.as_array().unwrap().len(), before);
}
