//! `/internal/v1/leases`: the lease protocol (`design.md` §6) for proxies, authenticated
//! with the proxy secret. Bodies and answers are the wire types of `iron_core::lease`.
//!
//! - `POST /internal/v1/leases` `LeaseRequest` → `LeaseGrant` (a denial is a 200 with
//!   `denied` set: the proxy reads the body);
//! - `POST /internal/v1/leases/{id}/extend` `ExtendRequest` → `LeaseGrant`;
//! - `POST /internal/v1/leases/{id}/report` `LeaseReport` → `ReportAck` (idempotent by `seq`);
//! - `DELETE /internal/v1/leases/{id}` `LeaseReport` (the final report; empty body = none)
//!   → `ReportAck`, the unspent part returned to the budget; a replayed release is a 200.
//!
//! 404 = unknown lease (or, for extend, a released one); 400 = malformed body. These routes
//! accept bodies up to `leases.max_report_bytes` (reports carry usage events).

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use bytes::Bytes;
use http::StatusCode;
use iron_core::Money;
use iron_core::lease::{ExtendRequest, LeaseGrant, LeaseReport, LeaseRequest, ReportAck};

use super::extract::parse_json;
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// A lease-route body within `leases.max_report_bytes`.
#[derive(Debug)]
pub struct LeaseBody(pub Bytes);

impl FromRequest<AppState> for LeaseBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(LeaseBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(state.svc.max_report_bytes)
                } else {
                    ApiError::bad_request("invalid_body", "could not read the request body")
                }
            })
    }
}

#[utoipa::path(post, path = "/internal/v1/leases", tag = "internal",
    request_body(content = Object, description = "iron_core::lease::LeaseRequest `{proxy_id, token_id, requested}` (µ$)"),
    security(("proxy_secret" = [])),
    responses((status = 200, description = "iron_core::lease::LeaseGrant `{lease_id, granted, expires_at, budget_remaining, denied?}`; `denied` = budget_exceeded | token_revoked | unknown_token", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn grant(
    State(s): State<AppState>,
    LeaseBody(body): LeaseBody,
) -> Result<Json<LeaseGrant>, ApiError> {
    let req: LeaseRequest = parse_json(&body)?;
    Ok(Json(s.svc.grant_lease(req).await?))
}

#[utoipa::path(post, path = "/internal/v1/leases/{lease}/extend", tag = "internal",
    params(("lease" = String, Path, description = "Lease id (lse_…)")),
    request_body(content = Object, description = "iron_core::lease::ExtendRequest `{requested}` (µ$)"),
    security(("proxy_secret" = [])),
    responses((status = 200, description = "iron_core::lease::LeaseGrant (the amount added)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn extend(
    State(s): State<AppState>,
    Path(lease): Path<String>,
    LeaseBody(body): LeaseBody,
) -> Result<Json<LeaseGrant>, ApiError> {
    let req: ExtendRequest = parse_json(&body)?;
    Ok(Json(s.svc.extend_lease(&lease, req).await?))
}

#[utoipa::path(post, path = "/internal/v1/leases/{lease}/report", tag = "internal",
    params(("lease" = String, Path, description = "Lease id (lse_…)")),
    request_body(content = Object, description = "iron_core::lease::LeaseReport `{seq, spent, events}`: spent is cumulative for the lease"),
    security(("proxy_secret" = [])),
    responses((status = 200, description = "iron_core::lease::ReportAck `{lease_remaining, budget_remaining, revoked}`", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn report(
    State(s): State<AppState>,
    Path(lease): Path<String>,
    LeaseBody(body): LeaseBody,
) -> Result<Json<ReportAck>, ApiError> {
    let report: LeaseReport = parse_json(&body)?;
    Ok(Json(s.svc.report_lease(&lease, report).await?))
}

#[utoipa::path(delete, path = "/internal/v1/leases/{lease}", tag = "internal",
    params(("lease" = String, Path, description = "Lease id (lse_…)")),
    request_body(content = Object, description = "The final iron_core::lease::LeaseReport (optional)"),
    security(("proxy_secret" = [])),
    responses((status = 200, description = "iron_core::lease::ReportAck after the unspent part went back to the budget", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn release(
    State(s): State<AppState>,
    Path(lease): Path<String>,
    LeaseBody(body): LeaseBody,
) -> Result<Json<ReportAck>, ApiError> {
    let report: LeaseReport = if body.iter().all(u8::is_ascii_whitespace) {
        LeaseReport {
            seq: 0,
            spent: Money::ZERO,
            events: Vec::new(),
        }
    } else {
        parse_json(&body)?
    };
    Ok(Json(s.svc.release_lease(&lease, report).await?))
}
