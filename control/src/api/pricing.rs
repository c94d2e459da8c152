//! `/v1/pricing`: model prices (USD per million tokens). Lists a small built-in default
//! table (a stub until core ships the versioned pricing table) merged with admin overrides
//! stored in control; `PUT /v1/pricing/{model}` sets an override.

use axum::Json;
use axum::extract::{Path, State};
use iron_core::Money;
use iron_core::wire::ControlEvent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Admin, ApiJson, Caller};
use super::views::{List, usd};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{PriceOverride, now};
use crate::validate::UsdAmount;

/// Built-in defaults: (model, input, cached input, output) in micro-dollars per 1M tokens.
const DEFAULTS: &[(&str, u64, u64, u64)] = &[
    ("gpt-4o", 2_500_000, 1_250_000, 10_000_000),
    ("gpt-4o-mini", 150_000, 75_000, 600_000),
    ("gpt-4.1", 2_000_000, 500_000, 8_000_000),
    ("gpt-4.1-mini", 400_000, 100_000, 1_600_000),
    ("o3", 2_000_000, 500_000, 8_000_000),
    ("claude-sonnet-4", 3_000_000, 300_000, 15_000_000),
    ("claude-3-5-haiku", 800_000, 80_000, 4_000_000),
];

#[derive(Serialize, ToSchema)]
pub struct PriceView {
    pub model: String,
    /// USD per million input tokens.
    pub input_per_mtok_usd: String,
    pub cached_input_per_mtok_usd: Option<String>,
    pub output_per_mtok_usd: String,
    /// `default` or `override`.
    pub source: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPrice {
    #[schema(value_type = String, example = "2.50")]
    pub input_per_mtok_usd: UsdAmount,
    #[schema(value_type = Option<String>, example = "1.25")]
    pub cached_input_per_mtok_usd: Option<UsdAmount>,
    #[schema(value_type = String, example = "10")]
    pub output_per_mtok_usd: UsdAmount,
}

fn override_view(p: PriceOverride) -> PriceView {
    PriceView {
        model: p.model,
        input_per_mtok_usd: usd(p.input),
        cached_input_per_mtok_usd: p.cached_input.map(usd),
        output_per_mtok_usd: usd(p.output),
        source: "override".into(),
    }
}

#[utoipa::path(get, path = "/v1/pricing", tag = "pricing",
    security(("api_key" = [])),
    responses((status = 200, body = List<PriceView>), (status = 401, body = ErrorBody)))]
pub async fn list_pricing(
    State(s): State<AppState>,
    _caller: Caller,
) -> Result<Json<List<PriceView>>, ApiError> {
    let overrides = s.svc.store.list_prices().await?;
    let mut out: Vec<PriceView> = DEFAULTS
        .iter()
        .filter(|(m, ..)| !overrides.iter().any(|o| o.model == *m))
        .map(|&(m, i, c, o)| PriceView {
            model: m.into(),
            input_per_mtok_usd: usd(Money(i)),
            cached_input_per_mtok_usd: Some(usd(Money(c))),
            output_per_mtok_usd: usd(Money(o)),
            source: "default".into(),
        })
        .collect();
    out.extend(overrides.into_iter().map(override_view));
    out.sort_by(|a, b| a.model.cmp(&b.model));
    Ok(Json(List {
        data: out,
        next_cursor: None,
    }))
}

#[utoipa::path(put, path = "/v1/pricing/{model}", tag = "pricing", request_body = SetPrice,
    params(("model" = String, Path, description = "Exact model name")),
    security(("api_key" = [])),
    responses((status = 200, body = PriceView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_price(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(model): Path<String>,
    ApiJson(body): ApiJson<SetPrice>,
) -> Result<Json<PriceView>, ApiError> {
    if model.is_empty()
        || model.len() > 128
        || !model.bytes().all(|b| b.is_ascii_graphic())
        || model.contains('*')
    {
        return Err(ApiError::invalid(
            "model: 1 to 128 printable characters, no wildcards",
        ));
    }
    let p = PriceOverride {
        model: model.clone(),
        input: body.input_per_mtok_usd.0,
        cached_input: body.cached_input_per_mtok_usd.map(|u| u.0),
        output: body.output_per_mtok_usd.0,
        updated_at: now(),
    };
    s.svc.store.put_price(&p).await?;
    s.svc.emit(ControlEvent::ConfigChanged).await?;
    s.svc
        .audit(
            &caller.actor(),
            "pricing.set",
            &model,
            None,
            serde_json::json!({"input_per_mtok_usd": usd(p.input), "output_per_mtok_usd": usd(p.output)}),
        )
        .await?;
    Ok(Json(override_view(p)))
}
