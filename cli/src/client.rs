//! A small REST client for control's `/v1` API with errors a person can act on.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::CliError;

pub struct Client {
    base: String,
    key: zeroize::Zeroizing<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(base: &str, key: zeroize::Zeroizing<String>) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Other(format!("HTTP client: {e}")))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http,
        })
    }

    /// Sends a request; returns the body of a 2xx response (JSON or text).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Body, CliError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.key.as_str());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                CliError::Unreachable(self.base.clone())
            } else {
                CliError::Other(format!("request to control failed: {}", e.without_url()))
            }
        })?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Other(format!("reading the response: {}", e.without_url())))?;
        if status.is_success() {
            return Ok(if is_json {
                Body::Json(serde_json::from_str(&text).unwrap_or(Value::Null))
            } else {
                Body::Text(text)
            });
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = v["error"]["message"].as_str().unwrap_or("").to_owned();
        let code = v["error"]["code"].as_str().unwrap_or("").to_owned();
        Err(CliError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        match self.send(method, path, body).await? {
            Body::Json(v) => Ok(v),
            Body::Text(t) => Ok(Value::String(t)),
        }
    }

    /// Streams the body of a 2xx response to `out` as it arrives (exports).
    pub async fn download(
        &self,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> Result<(), CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Other(format!("HTTP client: {e}")))?;
        let mut resp = http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.key.as_str())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    CliError::Unreachable(self.base.clone())
                } else {
                    CliError::Other(format!("request to control failed: {}", e.without_url()))
                }
            })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(CliError::Api {
                status,
                code: v["error"]["code"].as_str().unwrap_or("").to_owned(),
                message: v["error"]["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        let write_err = |e: std::io::Error| CliError::Other(format!("writing the output: {e}"));
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CliError::Other(format!("the export was cut off: {}", e.without_url())))?
        {
            out.write_all(&chunk).map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.json(Method::GET, path, None).await
    }

    /// All pages of a list endpoint.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, CliError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={}", enc(c)),
                None => format!("{path}{sep}limit=500"),
            };
            let v = self.get(&url).await?;
            if let Some(items) = v["data"].as_array() {
                out.extend(items.iter().cloned());
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }
}

pub enum Body {
    Json(Value),
    Text(String),
}
