//! [`OtlpReceiver`]: an in-test OpenTelemetry collector for traces over OTLP/HTTP.
//!
//! Point a process at it with `OTEL_EXPORTER_OTLP_ENDPOINT=<endpoint()>` (and
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` to read the spans back as JSON). Every body
//! posted to `/v1/traces` is kept raw (for secret scans, whatever the encoding) and, when
//! it is JSON, parsed (for attribute checks). It listens on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

#[derive(Default)]
struct Received {
    raw: Vec<Bytes>,
    json: Vec<Value>,
}

/// A running receiver; the server stops when this is dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Binds an ephemeral loopback port and starts serving.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let store = store.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                if path == "/v1/traces" {
                                    let mut r =
                                        store.lock().unwrap_or_else(PoisonError::into_inner);
                                    if let Ok(v) = serde_json::from_slice(&body) {
                                        r.json.push(v);
                                    }
                                    r.raw.push(body);
                                }
                                let mut resp = hyper::Response::new(http_body_util::Full::new(
                                    Bytes::from_static(b"{}"),
                                ));
                                resp.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(OtlpReceiver {
            addr,
            received,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every JSON export request received so far.
    pub fn batches(&self) -> Vec<Value> {
        self.lock().json.clone()
    }

    /// Every raw export body received so far (JSON or protobuf), concatenated.
    pub fn raw(&self) -> Vec<u8> {
        self.lock()
            .raw
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect()
    }

    /// Every span of every JSON batch (`resourceSpans[].scopeSpans[].spans[]`).
    pub fn spans(&self) -> Vec<Value> {
        spans(&self.batches())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The spans of OTLP/JSON export requests.
pub fn spans(batches: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        for rs in b["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().cloned().unwrap_or_default());
            }
        }
    }
    out
}

/// The value object (`{"stringValue": …}`, `{"intValue": …}`) of attribute `key` of a span.
pub fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}
