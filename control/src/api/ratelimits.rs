//! `POST /internal/v1/ratelimits` (proxy secret): rate-limit slices for proxies
//! (`docs/decisions/0003-rate-limits.md`). Body and answer are the wire types of
//! `iron_core::ratelimit`; the rule is in `service::ratelimits` and the store.
//!
//! Also the `rate_limits` input/output shapes of the `/v1` project and token routes.
//!
//! 400 = malformed batch (a clear `{"error":…}` naming the field), 401 = wrong secret.

use axum::Json;
use axum::extract::State;
use iron_core::ratelimit::{RateLimits, RateTakeRequest, RateTakeResponse};

use super::extract::{ApiBytes, parse_json};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

#[utoipa::path(post, path = "/internal/v1/ratelimits", tag = "internal",
    request_body(content = Object, description = "iron_core::ratelimit::RateTakeRequest `{takes:[{scope, kind, limit, want, min?, force?, project?}]}`"),
    security(("proxy_secret" = [])),
    responses((status = 200, description = "iron_core::ratelimit::RateTakeResponse `{grants:[{granted, remaining, retry_after_ms, reset_ms}]}`, one per take", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn take(
    State(s): State<AppState>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<RateTakeResponse>, ApiError> {
    let req: RateTakeRequest = parse_json(&body)?;
    Ok(Json(s.svc.take_rate_limits(req).await?))
}

/// Distinguishes an absent field from an explicit `null`.
fn nullable<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// `"rate_limits"` in `PATCH /v1/projects/{id}` and `POST /v1/projects/{id}/tokens`: a
/// missing key leaves that limit unchanged (unset at mint), `null` removes it. Limits are
/// whole numbers from 1 to 10^12 per minute.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsInput {
    /// Requests per minute; `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, example = 600)]
    pub rpm: Option<Option<u64>>,
    /// Tokens (input + output) per minute; `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, example = 100000)]
    pub tpm: Option<Option<u64>>,
}

impl RateLimitsInput {
    /// `current` with this input applied, validated (0 → 400 naming the field).
    pub fn apply(&self, current: RateLimits) -> Result<RateLimits, ApiError> {
        let limits = RateLimits {
            rpm: self.rpm.unwrap_or(current.rpm),
            tpm: self.tpm.unwrap_or(current.tpm),
        };
        limits
            .validate()
            .map_err(|m| ApiError::invalid(format!("rate_limits.{m}")))?;
        Ok(limits)
    }
}

/// Rate limits as the API shows them (`null` = unlimited).
#[derive(Clone, Copy, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RateLimitsView {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl From<RateLimits> for RateLimitsView {
    fn from(l: RateLimits) -> Self {
        RateLimitsView {
            rpm: l.rpm,
            tpm: l.tpm,
        }
    }
}
