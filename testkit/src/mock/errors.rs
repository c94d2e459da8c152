//! Provider-shaped error bodies of the mock: OpenAI `{"error":{message,type,param,code}}` and
//! Anthropic `{"type":"error","error":{type,message}}`, with the status each provider uses.
//! The 401 bodies are the captured fixtures, byte for byte.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::scenario::Fault;
use crate::fixtures;

/// Which provider's conventions a route follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Anthropic,
}

/// A complete error answer: status and JSON body bytes.
#[derive(Clone, Debug)]
pub(crate) struct ErrorReply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl ErrorReply {
    fn json(status: StatusCode, v: &Value) -> ErrorReply {
        ErrorReply {
            status,
            body: Bytes::from(v.to_string()),
        }
    }
}

/// OpenAI error object.
pub(crate) fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": Value::Null, "code": code}})
}

/// Anthropic error object.
pub(crate) fn anthropic_error(kind: &str, message: &str, request_id: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})
}

/// The answer for a status fault (`status500/503/429/401`), `None` for other faults.
pub(crate) fn status_fault(
    provider: Provider,
    fault: Fault,
    request_id: &str,
) -> Option<ErrorReply> {
    let reply = match (provider, fault) {
        (Provider::OpenAi, Fault::Status401) => ErrorReply {
            status: StatusCode::UNAUTHORIZED,
            body: Bytes::from_static(fixtures::OPENAI_ERROR_JSON.trim_end().as_bytes()),
        },
        (Provider::Anthropic, Fault::Status401) => ErrorReply {
            status: StatusCode::UNAUTHORIZED,
            body: Bytes::from_static(fixtures::ANTHROPIC_ERROR_JSON.trim_end().as_bytes()),
        },
        (Provider::OpenAi, Fault::Status500) => server_error(Provider::OpenAi, request_id),
        (Provider::Anthropic, Fault::Status500) => server_error(Provider::Anthropic, request_id),
        (Provider::OpenAi, Fault::Status503) => ErrorReply::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &openai_error(
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            ),
        ),
        (Provider::Anthropic, Fault::Status503) => ErrorReply::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &anthropic_error("overloaded_error", "Overloaded", request_id),
        ),
        (Provider::OpenAi, Fault::Status429) => ErrorReply::json(
            StatusCode::TOO_MANY_REQUESTS,
            &openai_error(
                "Rate limit reached for requests per min (RPM) in organization org-mock: \
                 Limit 500, Used 500, Requested 1. Please try again in 120ms.",
                "requests",
                Some("rate_limit_exceeded"),
            ),
        ),
        (Provider::Anthropic, Fault::Status429) => ErrorReply::json(
            StatusCode::TOO_MANY_REQUESTS,
            &anthropic_error(
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 \
                 requests per minute.",
                request_id,
            ),
        ),
        _ => return None,
    };
    Some(reply)
}

/// 500 server error.
pub(crate) fn server_error(provider: Provider, request_id: &str) -> ErrorReply {
    match provider {
        Provider::OpenAi => ErrorReply::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &openai_error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
        ),
        Provider::Anthropic => ErrorReply::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &anthropic_error("api_error", "Internal server error", request_id),
        ),
    }
}

/// The non-streaming form of the `error-event` fault: OpenAI 500, Anthropic 529 overloaded.
pub(crate) fn error_event_json(provider: Provider, request_id: &str) -> ErrorReply {
    match provider {
        Provider::OpenAi => server_error(provider, request_id),
        Provider::Anthropic => ErrorReply::json(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            &anthropic_error("overloaded_error", "Overloaded", request_id),
        ),
    }
}

/// 400 invalid request (malformed JSON, missing fields, bad `x-mock-*` header).
pub(crate) fn bad_request(provider: Provider, message: &str, request_id: &str) -> ErrorReply {
    match provider {
        Provider::OpenAi => ErrorReply::json(
            StatusCode::BAD_REQUEST,
            &openai_error(message, "invalid_request_error", None),
        ),
        Provider::Anthropic => ErrorReply::json(
            StatusCode::BAD_REQUEST,
            &anthropic_error("invalid_request_error", message, request_id),
        ),
    }
}

/// The message OpenAI sends for a body that is not JSON.
pub(crate) const OPENAI_INVALID_JSON: &str = "We could not parse the JSON body of your request. \
     (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API \
     expects a JSON payload, but what was sent was not valid JSON.)";

/// 401 for a request without credentials (Anthropic answers 401 `authentication_error`).
pub(crate) fn anthropic_missing_key(request_id: &str) -> ErrorReply {
    ErrorReply::json(
        StatusCode::UNAUTHORIZED,
        &anthropic_error(
            "authentication_error",
            "x-api-key header is required",
            request_id,
        ),
    )
}

/// 404 for an unknown route, OpenAI shape.
pub(crate) fn not_found(method: &str, path: &str) -> ErrorReply {
    ErrorReply::json(
        StatusCode::NOT_FOUND,
        &openai_error(
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
        ),
    )
}

/// 404 for `GET /v1/models/{id}` with an unknown id.
pub(crate) fn model_not_found(id: &str) -> ErrorReply {
    ErrorReply::json(
        StatusCode::NOT_FOUND,
        &openai_error(
            &format!("The model '{id}' does not exist"),
            "invalid_request_error",
            Some("model_not_found"),
        ),
    )
}

/// The mid-stream error event of each provider (`error-event` fault).
pub(crate) fn openai_stream_error() -> Value {
    openai_error(
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    )
}

/// Anthropic mid-stream `error` event data, as in the fixture.
pub(crate) fn anthropic_stream_error() -> Value {
    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
}
