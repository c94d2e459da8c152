//! Model prices and the cost of a request (`design.md` §6).
//!
//! Where it sits in the request flow (§3):
//! - **stage 4, budget admit**: [`PriceTable::price_for`] finds the body's model (or the project
//!   default, or refuses with `unknown_model_price`: an unknown model is never free); the
//!   proxy prices [`crate::meter::Meter::estimate_prompt`] plus its output reservation with
//!   [`ModelPrice::cost`] and reserves that.
//! - **stage 8, stream**: output tokens of each delta ([`crate::meter::DeltaMeter`]) are priced
//!   with the same [`ModelPrice`] (`cost` of a usage with only `output_tokens`).
//! - **stage 9, settle**: the provider's usage ([`TokenUsage::from_usage_json`],
//!   [`TokenUsage::openai`], [`TokenUsage::anthropic`]) priced by [`ModelPrice::cost`] is the
//!   recorded cost of the usage event.
//!
//! Prices are integer micro-dollars per million tokens. The defaults ship in
//! `core/data/pricing.toml` (versioned, dated, from the providers' public list prices); admins
//! override any model ([`PriceTable::with_overrides`]); overrides always win. Costs use
//! integer arithmetic only, round up once per request and saturate.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::money::Money;

/// The embedded default price list.
pub const EMBEDDED_PRICES: &str = include_str!("../data/pricing.toml");

/// The only unit the price file may declare.
pub const PRICE_UNIT: &str = "micro-dollars per million tokens";

/// Longest model name kept in an [`UnknownModelPrice`] error.
const MAX_MODEL_NAME_IN_ERROR: usize = 128;

/// Prices of one model, in micro-dollars per million tokens.
///
/// Deserializing fills the optional fields: `cached_input` defaults to `input` (never cheaper
/// than an uncached token) and `cache_write` to ⌈1.25 × `input`⌉ (Anthropic's 5-minute cache
/// write rate). Unknown fields are rejected so a typo cannot silently price a model at zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "RawModelPrice")]
pub struct ModelPrice {
    /// Uncached prompt tokens.
    pub input: u64,
    /// Prompt tokens read from the provider's cache (OpenAI cached input, Anthropic cache read).
    pub cached_input: u64,
    /// Prompt tokens written to the cache (Anthropic cache creation, 5-minute TTL).
    pub cache_write: u64,
    /// Completion tokens (reasoning tokens included).
    pub output: u64,
    /// Higher rates when the whole prompt exceeds a size (Anthropic long context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextPrice>,
}

/// Rates that replace the base rates of a [`ModelPrice`] for requests whose prompt
/// ([`TokenUsage::input_tokens`], cache reads and writes included) is above
/// `above_input_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "RawLongContextPrice")]
pub struct LongContextPrice {
    pub above_input_tokens: u64,
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelPrice {
    input: u64,
    #[serde(default, alias = "cache_read")]
    cached_input: Option<u64>,
    #[serde(default)]
    cache_write: Option<u64>,
    output: u64,
    #[serde(default)]
    long_context: Option<LongContextPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLongContextPrice {
    above_input_tokens: u64,
    input: u64,
    #[serde(default, alias = "cache_read")]
    cached_input: Option<u64>,
    #[serde(default)]
    cache_write: Option<u64>,
    output: u64,
}

/// Anthropic's 5-minute cache write rate: 1.25 × input, rounded up.
fn default_cache_write(input: u64) -> u64 {
    u64::try_from((u128::from(input) * 5).div_ceil(4)).unwrap_or(u64::MAX)
}

impl From<RawModelPrice> for ModelPrice {
    fn from(r: RawModelPrice) -> Self {
        ModelPrice {
            input: r.input,
            cached_input: r.cached_input.unwrap_or(r.input),
            cache_write: r
                .cache_write
                .unwrap_or_else(|| default_cache_write(r.input)),
            output: r.output,
            long_context: r.long_context,
        }
    }
}

impl From<RawLongContextPrice> for LongContextPrice {
    fn from(r: RawLongContextPrice) -> Self {
        LongContextPrice {
            above_input_tokens: r.above_input_tokens,
            input: r.input,
            cached_input: r.cached_input.unwrap_or(r.input),
            cache_write: r
                .cache_write
                .unwrap_or_else(|| default_cache_write(r.input)),
            output: r.output,
        }
    }
}

impl ModelPrice {
    /// A price with the same rate for every kind of token (e.g. a project default).
    pub const fn flat(input: u64, output: u64) -> Self {
        ModelPrice {
            input,
            cached_input: input,
            cache_write: input,
            output,
            long_context: None,
        }
    }

    /// Cost of `usage`, rounded up to the micro-dollar once, saturating at `u64::MAX`.
    ///
    /// `usage.input_tokens` is the whole prompt; its cached and cache-write parts are charged
    /// at their own rates and the rest at `input`. If the prompt exceeds the long-context
    /// threshold, every token of the request is charged at the long-context rates.
    pub fn cost(&self, usage: &TokenUsage) -> Money {
        let (input, cached, write, output) = match &self.long_context {
            Some(lc) if usage.input_tokens > lc.above_input_tokens => {
                (lc.input, lc.cached_input, lc.cache_write, lc.output)
            }
            _ => (self.input, self.cached_input, self.cache_write, self.output),
        };
        let uncached = usage.uncached_input_tokens();
        let term = |tokens: u64, rate: u64| u128::from(tokens) * u128::from(rate);
        let total = term(uncached, input)
            .saturating_add(term(usage.cached_input_tokens, cached))
            .saturating_add(term(usage.cache_write_tokens, write))
            .saturating_add(term(usage.output_tokens, output));
        Money(u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    /// Cost of `tokens` output tokens at the base rate (a streamed delta, stage 8).
    pub fn output_cost(&self, tokens: u64) -> Money {
        Money::for_tokens(tokens, self.output)
    }

    /// Cost of `tokens` uncached prompt tokens at the base rate (the stage 4 estimate).
    pub fn input_cost(&self, tokens: u64) -> Money {
        Money::for_tokens(tokens, self.input)
    }
}

/// Tokens of one request, in one convention for every provider: `input_tokens` is the whole
/// prompt, and `cached_input_tokens` and `cache_write_tokens` are parts of it.
///
/// That is OpenAI's convention (`prompt_tokens` includes `cached_tokens`). Anthropic reports
/// `input_tokens` *excluding* `cache_read_input_tokens` and `cache_creation_input_tokens`;
/// [`TokenUsage::anthropic`] adds them in. The same fields go into the usage event
/// ([`crate::lease::UsageEvent`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenUsage {
    /// All prompt tokens, cache reads and cache writes included.
    pub input_tokens: u64,
    /// Prompt tokens served from the provider's cache (part of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache (part of `input_tokens`).
    pub cache_write_tokens: u64,
    /// Completion tokens, reasoning tokens included.
    pub output_tokens: u64,
}

impl TokenUsage {
    /// From OpenAI usage: `prompt_tokens` (or Responses `input_tokens`), which include
    /// `prompt_tokens_details.cached_tokens`, and `completion_tokens` (or `output_tokens`).
    pub const fn openai(prompt_tokens: u64, cached_tokens: u64, completion_tokens: u64) -> Self {
        TokenUsage {
            input_tokens: prompt_tokens,
            cached_input_tokens: cached_tokens,
            cache_write_tokens: 0,
            output_tokens: completion_tokens,
        }
    }

    /// From Anthropic usage, whose `input_tokens` exclude cache reads and writes.
    pub const fn anthropic(
        input_tokens: u64,
        cache_creation_input_tokens: u64,
        cache_read_input_tokens: u64,
        output_tokens: u64,
    ) -> Self {
        TokenUsage {
            input_tokens: input_tokens
                .saturating_add(cache_creation_input_tokens)
                .saturating_add(cache_read_input_tokens),
            cached_input_tokens: cache_read_input_tokens,
            cache_write_tokens: cache_creation_input_tokens,
            output_tokens,
        }
    }

    /// Only output tokens (a streamed delta).
    pub const fn output(tokens: u64) -> Self {
        TokenUsage {
            input_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: tokens,
        }
    }

    /// Prompt tokens that were neither read from nor written to the cache.
    pub const fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_tokens)
    }

    /// Reads a provider `usage` object, telling the shapes apart by their fields:
    /// - `prompt_tokens` → OpenAI chat completions, completions, embeddings;
    /// - `input_tokens` with `input_tokens_details` or `total_tokens` → OpenAI Responses
    ///   (input includes cached);
    /// - `input_tokens` otherwise → Anthropic (input excludes `cache_read_input_tokens` and
    ///   `cache_creation_input_tokens`). An Anthropic `message_delta` carrying only
    ///   `output_tokens` reads as output only.
    ///
    /// Missing counts read as 0; `None` if the value has none of these fields.
    pub fn from_usage_json(usage: &Value) -> Option<Self> {
        let n = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
        if let Some(prompt) = usage.get("prompt_tokens").and_then(Value::as_u64) {
            let cached = usage
                .get("prompt_tokens_details")
                .map_or(0, |d| n(d, "cached_tokens"));
            return Some(TokenUsage::openai(
                prompt,
                cached,
                n(usage, "completion_tokens"),
            ));
        }
        let has = |key: &str| usage.get(key).is_some_and(|v| !v.is_null());
        if has("input_tokens_details") || (has("total_tokens") && has("input_tokens")) {
            let cached = usage
                .get("input_tokens_details")
                .map_or(0, |d| n(d, "cached_tokens"));
            return Some(TokenUsage::openai(
                n(usage, "input_tokens"),
                cached,
                n(usage, "output_tokens"),
            ));
        }
        if has("input_tokens")
            || has("output_tokens")
            || has("cache_creation_input_tokens")
            || has("cache_read_input_tokens")
        {
            return Some(TokenUsage::anthropic(
                n(usage, "input_tokens"),
                n(usage, "cache_creation_input_tokens"),
                n(usage, "cache_read_input_tokens"),
                n(usage, "output_tokens"),
            ));
        }
        None
    }
}

/// No price is known for a model and the project has no default price (→ 400
/// `unknown_model_price`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no price is configured for model `{model}`; an admin can set one (`iron pricing set`) or give the project a default price"
)]
pub struct UnknownModelPrice {
    /// The requested model name (cut to 128 bytes).
    pub model: String,
}

impl UnknownModelPrice {
    fn new(model: &str) -> Self {
        let mut end = model.len().min(MAX_MODEL_NAME_IN_ERROR);
        while !model.is_char_boundary(end) {
            end -= 1;
        }
        UnknownModelPrice {
            model: model[..end].to_owned(),
        }
    }

    /// The agent-facing error code.
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::UnknownModelPrice
    }
}

/// Why a price file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("price file is not valid: {0}")]
    Parse(String),
    #[error("price file unit must be \"{PRICE_UNIT}\", found \"{0}\"")]
    Unit(String),
    #[error("price file has an empty model name")]
    EmptyModel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    version: u32,
    updated: String,
    unit: String,
    models: HashMap<String, ModelPrice>,
}

/// Default prices plus admin overrides, resolved by model name.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    version: u32,
    updated: String,
    defaults: HashMap<String, ModelPrice>,
    overrides: HashMap<String, ModelPrice>,
}

static BUILTIN: LazyLock<PriceTable> = LazyLock::new(|| PriceTable::embedded().unwrap_or_default());

impl PriceTable {
    /// The embedded default table (`core/data/pricing.toml`).
    pub fn embedded() -> Result<Self, PricingError> {
        Self::from_toml(EMBEDDED_PRICES)
    }

    /// The embedded table, parsed once per process. (If it failed to parse, which the tests
    /// rule out, this would be empty: every model unknown, never free.)
    pub fn builtin() -> &'static PriceTable {
        &BUILTIN
    }

    /// Parses a price file in the format of `core/data/pricing.toml`.
    pub fn from_toml(text: &str) -> Result<Self, PricingError> {
        let file: PriceFile =
            toml::from_str(text).map_err(|e| PricingError::Parse(e.to_string()))?;
        if file.unit != PRICE_UNIT {
            return Err(PricingError::Unit(file.unit));
        }
        if file.models.keys().any(String::is_empty) {
            return Err(PricingError::EmptyModel);
        }
        Ok(PriceTable {
            version: file.version,
            updated: file.updated,
            defaults: file.models,
            overrides: HashMap::new(),
        })
    }

    /// This table with admin overrides (`iron pricing set`), replacing any earlier overrides.
    /// An override wins over every default: an override of a family (`gpt-4o`) also prices
    /// its snapshots (`gpt-4o-2024-08-06`, even `gpt-4o-2024-05-13`) unless the snapshot has
    /// its own override.
    pub fn with_overrides(mut self, overrides: HashMap<String, ModelPrice>) -> Self {
        self.overrides = overrides;
        self
    }

    /// Sets or replaces one override.
    pub fn set_override(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.overrides.insert(model.into(), price);
    }

    /// Version of the default price file.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Date (`YYYY-MM-DD`) the default prices were taken from the providers' lists.
    pub fn updated(&self) -> &str {
        &self.updated
    }

    /// The default entries (family or exact model → price).
    pub fn defaults(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.defaults.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The admin overrides.
    pub fn overrides(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.overrides.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The price of `model`: see [`PriceTable::resolve`].
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        self.resolve(model).map(|(_, price)| price)
    }

    /// The entry that prices `model`, and its key. Overrides first, then defaults; in each, the
    /// exact name first, then the family of a dated snapshot: the name less a `-YYYY-MM-DD`,
    /// `-YYYYMMDD`, `-MMDD` or `-latest` suffix. Nothing else is stripped, so a family never
    /// prices another family (`gpt-4o` does not price `gpt-4o-mini-…`, `claude-opus-4` does not
    /// price `claude-opus-4-6`).
    pub fn resolve(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        resolve_in(&self.overrides, model).or_else(|| resolve_in(&self.defaults, model))
    }

    /// The price for a request: the model's, else the project's default, else an error (an
    /// unknown model is never free).
    pub fn price_for<'a>(
        &'a self,
        model: &str,
        project_default: Option<&'a ModelPrice>,
    ) -> Result<&'a ModelPrice, UnknownModelPrice> {
        self.lookup(model)
            .or(project_default)
            .ok_or_else(|| UnknownModelPrice::new(model))
    }
}

fn resolve_in<'a>(
    map: &'a HashMap<String, ModelPrice>,
    model: &str,
) -> Option<(&'a str, &'a ModelPrice)> {
    if map.is_empty() {
        return None;
    }
    map.get_key_value(model)
        .or_else(|| snapshot_family(model).and_then(|family| map.get_key_value(family)))
        .map(|(k, v)| (k.as_str(), v))
}

/// `model` less its snapshot suffix, if it has one.
pub fn snapshot_family(model: &str) -> Option<&str> {
    if let Some(family) = model.strip_suffix("-latest") {
        return (!family.is_empty()).then_some(family);
    }
    let b = model.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let num = |range: std::ops::Range<usize>| {
        b.get(range).map_or(0, |d| {
            d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0'))
        })
    };
    let month_day = |at: usize, dash: bool| {
        let day_at = if dash { at + 3 } else { at + 2 };
        (1..=12).contains(&num(at..at + 2)) && (1..=31).contains(&num(day_at..day_at + 2))
    };
    let len = b.len();
    // -YYYY-MM-DD
    if len > 11
        && b[len - 11] == b'-'
        && digits(len - 10..len - 6)
        && b[len - 6] == b'-'
        && digits(len - 5..len - 3)
        && b[len - 3] == b'-'
        && digits(len - 2..len)
        && month_day(len - 5, true)
    {
        return Some(&model[..len - 11]);
    }
    // -YYYYMMDD
    if len > 9 && b[len - 9] == b'-' && digits(len - 8..len) && month_day(len - 4, false) {
        return Some(&model[..len - 9]);
    }
    // -MMDD (gpt-4-0613, gpt-3.5-turbo-0125)
    if len > 5 && b[len - 5] == b'-' && digits(len - 4..len) && month_day(len - 4, false) {
        return Some(&model[..len - 5]);
    }
    None
}
