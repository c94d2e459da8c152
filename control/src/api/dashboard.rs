//! The Control Panel's static files (`dashboard/`, built by Vite into `dashboard/dist`),
//! served by control at `/` from `[dashboard] dir` — `iron up` finds `dashboard/dist` by
//! itself. This is the router's fallback for `GET`/`HEAD` outside the API prefixes: a file
//! under the directory when one matches, else `index.html` for app routes (paths without a
//! file extension), so deep links work. The dashboard then talks to `/v1` on the same
//! origin with its session cookie.
//!
//! Paths are resolved strictly inside the directory (no `..`, symlinks checked after
//! canonicalisation). Every answer carries a restrictive Content-Security-Policy (scripts
//! and connections to this origin only) and anti-framing headers; hashed `assets/` files
//! are cached for a year, everything else is revalidated.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};

use crate::AppState;
use crate::error::ApiError;

/// Path prefixes that belong to the API: they never fall back to the dashboard.
const API_PREFIXES: &[&str] = &[
    "/v1",
    "/internal",
    "/openapi.json",
    "/health",
    "/ready",
    "/metrics",
];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; \
frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Shown at `/` when no built dashboard is configured.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Iron</title></head><body><h1>Iron control</h1><p>The Control Panel is not built. \
From the repository root run <code>npm --prefix dashboard ci &amp;&amp; npm --prefix dashboard \
run build</code>, then restart <code>iron up</code> (it serves <code>dashboard/dist</code>) or \
set <code>[dashboard] dir</code> / <code>IRON_DASHBOARD__DIR</code>.</p>\
<p>The REST API is at <a href=\"/openapi.json\">/openapi.json</a>.</p></body></html>";

fn is_api_path(path: &str) -> bool {
    API_PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The file a URL path names inside `root`, if it is a plain relative path.
fn relative(path: &str) -> Option<PathBuf> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.contains(['\\', '\0']) {
        return None;
    }
    let rel = Path::new(trimmed);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| rel.to_path_buf())
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn with_headers(mut resp: Response, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn html(status: StatusCode, body: &'static str) -> Response {
    let resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    with_headers(resp, "no-cache")
}

/// Reads `rel` under `root` when it is a regular file that stays inside `root`.
async fn read_inside(root: &Path, rel: &Path) -> Option<(PathBuf, Vec<u8>)> {
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let file = tokio::fs::canonicalize(root.join(rel)).await.ok()?;
    if !file.starts_with(&root) || !tokio::fs::metadata(&file).await.ok()?.is_file() {
        return None;
    }
    let bytes = tokio::fs::read(&file).await.ok()?;
    Some((file, bytes))
}

fn file_response(file: &Path, bytes: Vec<u8>, rel: &Path) -> Response {
    let cache = if rel.starts_with("assets") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type(file))],
        Body::from(bytes),
    )
        .into_response();
    with_headers(resp, cache)
}

/// The router's fallback: dashboard files for `GET`/`HEAD`, the JSON 404 for the rest.
pub async fn fallback(State(s): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    if !matches!(*req.method(), Method::GET | Method::HEAD) || is_api_path(path) {
        return ApiError::not_found("no such route").into_response();
    }
    let Some(rel) = relative(path) else {
        return ApiError::not_found("no such file").into_response();
    };
    let Some(root) = s.svc.dashboard_dir.as_deref() else {
        return html(StatusCode::NOT_FOUND, NOT_BUILT);
    };
    if !rel.as_os_str().is_empty()
        && let Some((file, bytes)) = read_inside(root, &rel).await
    {
        return file_response(&file, bytes, &rel);
    }
    // App routes (`/projects/prj_…`) get the app; missing files stay missing.
    if rel.extension().is_some() {
        return ApiError::not_found("no such file").into_response();
    }
    match read_inside(root, Path::new("index.html")).await {
        Some((file, bytes)) => file_response(&file, bytes, Path::new("index.html")),
        None => html(StatusCode::NOT_FOUND, NOT_BUILT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_never_fall_back() {
        for p in [
            "/v1",
            "/v1/projects",
            "/internal/v1/keys",
            "/openapi.json",
            "/metrics",
        ] {
            assert!(is_api_path(p), "{p}");
        }
        for p in ["/", "/projects", "/v1x", "/assets/index-abc.js", "/healthy"] {
            assert!(!is_api_path(p), "{p}");
        }
    }

    #[test]
    fn only_plain_relative_paths_resolve() {
        assert_eq!(relative("/"), Some(PathBuf::new()));
        assert_eq!(
            relative("/assets/app.js"),
            Some(PathBuf::from("assets/app.js"))
        );
        for bad in ["/../etc/passwd", "/assets/../../x", "/a\\b", "/./x", "/a\0"] {
            assert_eq!(relative(bad), None, "{bad}");
        }
    }
}
