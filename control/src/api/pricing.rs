//! `/v1/pricing`: model prices (USD per million tokens): the versioned default table that
//! ships in core (`iron_core::pricing::PriceTable::builtin()`, `core/data/pricing.toml`)
//! with the admin overrides stored in control on top; `PUT /v1/pricing/{model}` sets an
//! override (it wins over the default, also for the model's dated snapshots).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use iron_core::Money;
use iron_core::pricing::{ModelPrice, PriceTable};
use iron_core::wire::ControlEvent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Admin, ApiJson, Caller};
use super::views::{List, usd};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{PriceOverride, now};
use crate::validate::UsdAmount;

#[derive(Serialize, ToSchema)]
pub struct PriceView {
    pub model: String,
    /// USD per million input tokens.
    pub input_per_mtok_usd: String,
    pub cached_input_per_mtok_usd: Option<String>,
    /// USD per million prompt tokens written to the provider's cache (Anthropic).
    pub cache_write_per_mtok_usd: Option<String>,
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

/// An override as a core price: cached input defaults to the input rate, cache writes to
/// 1.25 × input (as in the default table).
pub fn model_price(p: &PriceOverride) -> ModelPrice {
    let input = p.input.micros();
    ModelPrice {
        input,
        cached_input: p.cached_input.map_or(input, Money::micros),
        cache_write: u64::try_from((u128::from(input) * 5).div_ceil(4)).unwrap_or(u64::MAX),
        output: p.output.micros(),
        long_context: None,
    }
}

/// The effective price table: the built-in defaults with `overrides` on top.
pub fn price_table(overrides: &[PriceOverride]) -> PriceTable {
    let o: HashMap<String, ModelPrice> = overrides
        .iter()
        .map(|p| (p.model.clone(), model_price(p)))
        .collect();
    PriceTable::builtin().clone().with_overrides(o)
}

fn override_view(p: PriceOverride) -> PriceView {
    PriceView {
        model: p.model,
        input_per_mtok_usd: usd(p.input),
        cached_input_per_mtok_usd: p.cached_input.map(usd),
        cache_write_per_mtok_usd: None,
        output_per_mtok_usd: usd(p.output),
        source: "override".into(),
    }
}

fn default_view(model: &str, p: &ModelPrice) -> PriceView {
    PriceView {
        model: model.to_owned(),
        input_per_mtok_usd: usd(Money(p.input)),
        cached_input_per_mtok_usd: Some(usd(Money(p.cached_input))),
        cache_write_per_mtok_usd: Some(usd(Money(p.cache_write))),
        output_per_mtok_usd: usd(Money(p.output)),
        source: "default".into(),
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
    let table = price_table(&overrides);
    let mut out: Vec<PriceView> = table
        .defaults()
        .filter(|(m, _)| !overrides.iter().any(|o| o.model == *m))
        .map(|(m, p)| default_view(m, p))
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
    let before = s
        .svc
        .store
        .list_prices()
        .await?
        .into_iter()
        .find(|o| o.model == model);
    s.svc.store.put_price(&p).await?;
    s.svc.emit(ControlEvent::ConfigChanged).await?;
    s.svc
        .audit_change(
            &caller.actor(),
            "pricing.set",
            &model,
            None,
            serde_json::json!({"input_per_mtok_usd": usd(p.input), "output_per_mtok_usd": usd(p.output)}),
            crate::service::audit_image(&before),
            crate::service::audit_image(&p),
        )
        .await?;
    Ok(Json(override_view(p)))
}
