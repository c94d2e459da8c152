//! HTTP control routes of the mock (`/__mock/…`), for tests that run the `iron-mock` binary
//! (the Python e2e suite) and cannot call [`MockUpstream`](super::MockUpstream) methods.
//! These requests are never recorded.
//!
//! | route | effect |
//! |---|---|
//! | `GET /__mock/requests` | JSON array of recorded requests: `method`, `path` (with query), `headers` (object, lowercase names, repeated headers joined by `", "`), `body` (UTF-8 string, or `null` when not UTF-8), `body_sha256` (hex), `body_len`, `received_ms` (since the mock started) |
//! | `DELETE /__mock/requests` | clear recorded requests and statistics |
//! | `GET /__mock/scenario` | the default [`Scenario`] as JSON |
//! | `PUT /__mock/scenario` | set the default [`Scenario`] (JSON body, missing fields = default) |
//! | `GET /__mock/stats` | `{"requests","streams_completed","streams_aborted","chunks_sent"}` |

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::body::{MockBody, full};
use super::scenario::Scenario;
use super::{RecordedRequest, Shared};

/// Prefix of every control route.
pub(crate) const PREFIX: &str = "/__mock";

fn reply(status: StatusCode, v: &Value) -> http::Response<MockBody> {
    let mut resp = http::Response::new(full(v.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// JSON form of one recorded request.
pub(crate) fn recorded_json(r: &RecordedRequest, since: std::time::Instant) -> Value {
    let mut headers = Map::new();
    for (k, v) in &r.headers {
        match headers.get_mut(k) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(v);
            }
            _ => {
                headers.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    let body = std::str::from_utf8(&r.body)
        .map(|s| Value::String(s.to_owned()))
        .unwrap_or(Value::Null);
    json!({
        "method": r.method,
        "path": r.path,
        "headers": headers,
        "body": body,
        "body_sha256": hex::encode(Sha256::digest(&r.body)),
        "body_len": r.body.len(),
        "received_ms": r.received_at.saturating_duration_since(since).as_millis() as u64,
    })
}

/// Answer a control request.
pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: &[u8],
) -> http::Response<MockBody> {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/__mock/requests") => {
            let list: Vec<Value> = shared
                .requests()
                .iter()
                .map(|r| recorded_json(r, shared.started))
                .collect();
            reply(StatusCode::OK, &Value::Array(list))
        }
        ("DELETE", "/__mock/requests") => {
            shared.clear();
            reply(StatusCode::OK, &json!({"cleared": true}))
        }
        ("GET", "/__mock/scenario") => {
            let s = shared.scenario();
            reply(
                StatusCode::OK,
                &serde_json::to_value(&s).unwrap_or(Value::Null),
            )
        }
        ("PUT", "/__mock/scenario") => match serde_json::from_slice::<Scenario>(body) {
            Ok(s) => {
                shared.set_scenario(s.clone());
                reply(
                    StatusCode::OK,
                    &serde_json::to_value(&s).unwrap_or(Value::Null),
                )
            }
            Err(e) => reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": {"message": format!("invalid scenario: {e}"), "type": "invalid_request_error"}}),
            ),
        },
        ("GET", "/__mock/stats") => reply(StatusCode::OK, &shared.stats_json()),
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!("unknown mock control route {method} {path}"), "type": "invalid_request_error"}}),
        ),
    }
}
