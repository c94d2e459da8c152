//! Test harness: a control instance on the embedded store in a temp dir, driven through
//! the real router with `oneshot`, plus helpers to make API keys and capture logs.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use iron_control::config::{Config, Secrets};
use iron_control::keys::{Secret, generate_api_key};
use iron_control::server::{Control, build_state};
use iron_core::transit::{MasterKey, MasterKeyring};
use serde_json::Value;
use tower::ServiceExt;

pub const PROXY_SECRET: &str = "test-proxy-secret-0123456789";

pub struct Harness {
    pub app: Router,
    pub control: Control,
    pub dir: tempfile::TempDir,
    pub admin: String,
    pub config: Config,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text())
    }
}

/// A test configuration: embedded store in `dir`, production URL policy unless `private`.
pub fn config(dir: &std::path::Path, admin: &str, private: bool) -> Config {
    let secrets = Secrets {
        master_keys: Arc::new(MasterKeyring::new(MasterKey::generate(), vec![])),
        proxy_secret: Secret::new(PROXY_SECRET),
        bootstrap_admin_key: Some(Secret::new(admin)),
    };
    let mut cfg = Config::local(
        dir.join("control.redb"),
        "127.0.0.1:0".parse().unwrap(),
        secrets,
    );
    cfg.security.allow_private_upstreams = private;
    // The auth matrices send hundreds of bad keys on purpose; brute-force limits have
    // their own test (`auth_security.rs`).
    cfg.security.auth_failure_limit = u32::MAX;
    cfg
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with_private(false).await
    }

    /// A harness whose lease protocol runs on `clock`; `tune` adjusts the configuration.
    pub async fn with_clock(
        clock: Arc<dyn iron_control::service::Clock>,
        tune: impl FnOnce(&mut Config),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let admin = generate_api_key().to_string();
        let mut config = config(dir.path(), &admin, false);
        tune(&mut config);
        let store = iron_control::server::open_store(&config).await.unwrap();
        let control = iron_control::server::build_with_clock(&config, store, clock)
            .await
            .unwrap();
        let app = iron_control::app(control.state.clone());
        Harness {
            app,
            control,
            dir,
            admin,
            config,
        }
    }

    pub async fn with_private(private: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let admin = generate_api_key().to_string();
        let config = config(dir.path(), &admin, private);
        let control = build_state(&config).await.unwrap();
        let app = iron_control::app(control.state.clone());
        Harness {
            app,
            control,
            dir,
            admin,
            config,
        }
    }

    pub async fn raw(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let streaming = headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        // An event stream never ends: keep its status and headers only.
        let body = if streaming {
            Vec::new()
        } else {
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec()
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let body = body.map(|b| b.to_string().into_bytes());
        self.call_bytes(method, path, key, body).await
    }

    pub async fn call_bytes(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    /// Admin call that must succeed (2xx); returns the JSON body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self
            .call(method, path, Some(&self.admin.clone()), body)
            .await;
        assert!(r.status.is_success(), "{method} {path}: {r:?}");
        r.json()
    }

    pub async fn key(&self, name: &str, role: &str) -> String {
        let v = self
            .admin(
                "POST",
                "/v1/api-keys",
                Some(serde_json::json!({"name": name, "role": role})),
            )
            .await;
        v["key"].as_str().unwrap().to_owned()
    }

    pub async fn audit_count(&self) -> usize {
        let v = self.admin("GET", "/v1/audit?limit=500", None).await;
        v["data"].as_array().unwrap().len()
    }
}

/// Captures everything logged through `tracing` in this test binary (a global
/// subscriber, installed once: thread-local subscribers miss callsites whose interest was
/// cached by other tests). Use it from a test binary with a single test.
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static CAPTURE: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

impl LogCapture {
    pub fn start() -> LogCapture {
        let buf = CAPTURE
            .get_or_init(|| {
                let buf = Arc::new(Mutex::new(Vec::new()));
                let w = Writer(buf.clone());
                let sub = tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::TRACE)
                    .with_writer(move || w.clone())
                    .with_ansi(false)
                    .finish();
                tracing::subscriber::set_global_default(sub).unwrap();
                buf
            })
            .clone();
        LogCapture { buf }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}
