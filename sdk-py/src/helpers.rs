//! Stateless helpers over `iron_core`: PII redaction and detection, cost estimates, exact
//! parsing of dollar amounts and TTLs, and IC token minting with an in-process key. Python
//! wraps the results in friendlier types (`Decimal` money, `PiiMatch`, `IcToken`).

use std::time::Duration;

use iron_core::Money;
use iron_core::pii::{
    Action, Detections, Detector, Direction, PiiPolicy, PiiType, TypeActions, Vault, redact_text,
};
use iron_core::pricing::{PriceTable, TokenUsage};
use iron_core::ratelimit::RateLimits;
use iron_core::token::{self, unix_now};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::{SdkError, SdkResult};

/// Largest budget the control service accepts (USD).
const MAX_USD: u64 = 1_000_000_000;
/// Token lifetimes the control service accepts.
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);

fn type_names() -> String {
    PiiType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses PII type names (any letter case); `None` means every type.
pub fn parse_types(types: Option<&[String]>) -> SdkResult<Vec<PiiType>> {
    match types {
        None => Ok(PiiType::ALL.to_vec()),
        Some(names) => names
            .iter()
            .map(|n| {
                n.parse::<PiiType>().map_err(|_| {
                    SdkError::invalid(format!(
                        "unknown PII type `{n}` (expected one of {})",
                        type_names()
                    ))
                })
            })
            .collect(),
    }
}

fn redact_impl(text: &str, types: &[PiiType], reversible: bool) -> SdkResult<String> {
    let mut request = TypeActions::uniform(Action::Allow);
    for &t in types {
        request.set(t, Action::Redact);
    }
    let policy = PiiPolicy {
        request,
        response: TypeActions::default(),
        reversible,
    };
    let mut vault = Vault::new();
    let mut det = Detections::new();
    match redact_text(text, &policy, Direction::Request, &mut vault, &mut det) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Ok(text.to_owned()),
        // No type is set to `block`, so this cannot happen; say so if it ever does.
        Err(b) => Err(SdkError::invalid(b.to_string())),
    }
}

/// Redacts PII in `text` with the proxy's engine (design §7). `types` limits it to those
/// types (default: all). `reversible=False` writes `[REDACTED:EMAIL]`; `True` writes the
/// numbered placeholders the proxy sends upstream (`[EMAIL_1]`, same value → same number).
#[pyfunction]
#[pyo3(signature = (text, types=None, *, reversible=false))]
pub fn redact(
    py: Python<'_>,
    text: String,
    types: Option<Vec<String>>,
    reversible: bool,
) -> PyResult<String> {
    let types = parse_types(types.as_deref())?;
    Ok(py.detach(move || redact_impl(&text, &types, reversible))?)
}

/// PII found in `text`: `(type, start, end)` with `start`/`end` as Python string indices
/// (code points), left to right, not overlapping.
#[pyfunction]
#[pyo3(signature = (text, types=None))]
pub fn detect(
    py: Python<'_>,
    text: String,
    types: Option<Vec<String>>,
) -> PyResult<Vec<(&'static str, usize, usize)>> {
    let types = parse_types(types.as_deref())?;
    Ok(py.detach(move || {
        let mut out = Vec::new();
        // Byte offsets → code point offsets, walking the text once.
        let (mut byte, mut chars) = (0usize, 0usize);
        let mut advance = |to: usize| {
            chars += text.get(byte..to).map_or(0, |s| s.chars().count());
            byte = to;
            chars
        };
        for m in Detector::global().find_iter(&text) {
            let start = advance(m.start);
            let end = advance(m.end);
            if types.contains(&m.kind) {
                out.push((m.kind.as_str(), start, end));
            }
        }
        out
    }))
}

/// The PII type names the engine knows.
#[pyfunction]
pub fn pii_types() -> Vec<&'static str> {
    PiiType::ALL.iter().map(|t| t.as_str()).collect()
}

/// Cost of a request in micro-dollars, from the embedded price table (the proxy's).
/// `input_tokens` is the whole prompt, cached and cache-write tokens included.
#[pyfunction]
#[pyo3(signature = (model, input_tokens, output_tokens, cached_input_tokens=0, cache_write_tokens=0))]
pub fn estimate_cost_microdollars(
    model: &str,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
) -> PyResult<u64> {
    if cached_input_tokens.saturating_add(cache_write_tokens) > input_tokens {
        return Err(SdkError::invalid(
            "cached_input_tokens + cache_write_tokens must not exceed input_tokens (the whole prompt)",
        )
        .into());
    }
    let price = PriceTable::builtin()
        .price_for(model, None)
        .map_err(|e| SdkError::invalid_code("unknown_model_price", e.to_string()))?;
    let usage = TokenUsage {
        input_tokens,
        cached_input_tokens,
        cache_write_tokens,
        output_tokens,
    };
    Ok(price.cost(&usage).micros())
}

/// Parses an exact decimal dollar amount (`"12.50"`) into micro-dollars with the control
/// service's rules: not negative, at most 6 decimals, at most 1e9 USD.
pub fn parse_usd(s: &str) -> SdkResult<Money> {
    let t = s.trim();
    let bad = |why: &str| SdkError::invalid(format!("`{s}` is not a valid dollar amount: {why}"));
    if t.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    let m: Money = t.parse().map_err(|e| bad(&format!("{e}")))?;
    if m > Money::from_usd(MAX_USD) {
        return Err(bad("must be at most 1000000000 USD"));
    }
    Ok(m)
}

#[pyfunction]
pub fn parse_usd_microdollars(amount: &str) -> PyResult<u64> {
    Ok(parse_usd(amount)?.micros())
}

/// Parses a token lifetime (`"30m"`, `"12h"`, `"7d"`) with the control service's rules.
pub fn parse_ttl(s: &str) -> SdkResult<Duration> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        SdkError::invalid(format!(
            "ttl `{s}` is not a duration: use a number and a unit, such as 30m, 12h or 7d"
        ))
    })?;
    if d < MIN_TTL || d > MAX_TTL {
        return Err(SdkError::invalid(format!(
            "ttl `{s}` is out of range: it must be between 1m and 366d"
        )));
    }
    Ok(d)
}

#[pyfunction]
pub fn parse_ttl_seconds(ttl: &str) -> PyResult<u64> {
    Ok(parse_ttl(ttl)?.as_secs())
}

/// A new token id, `tok_<ulid>`.
#[pyfunction]
pub fn new_token_id() -> String {
    token::new_token_id()
}

/// An Ed25519 key that signs IC tokens in this process (the embedded proxy trusts it).
#[pyclass(frozen, module = "iron_sdk._iron_sdk")]
pub struct SigningKey {
    key: token::SigningKey,
}

impl SigningKey {
    pub fn generate() -> SdkResult<Self> {
        token::SigningKey::generate()
            .map(|key| SigningKey { key })
            .map_err(|e| SdkError::Proxy(format!("generating a signing key: {e}")))
    }

    pub fn inner(&self) -> &token::SigningKey {
        &self.key
    }

    /// Mints `(token_id, token, expires_at)` for `project`.
    pub fn mint_for(
        &self,
        project: &str,
        ttl: Duration,
        token_id: Option<String>,
    ) -> SdkResult<(String, String, u64)> {
        self.mint_limited(project, ttl, token_id, RateLimits::NONE)
    }

    /// Like [`SigningKey::mint_for`], with the token's own `rpm`/`tpm` claims (ADR 0003).
    pub fn mint_limited(
        &self,
        project: &str,
        ttl: Duration,
        token_id: Option<String>,
        limits: RateLimits,
    ) -> SdkResult<(String, String, u64)> {
        limits.validate().map_err(SdkError::invalid)?;
        let id = token_id.unwrap_or_else(token::new_token_id);
        let now = unix_now();
        let exp = now.saturating_add(ttl.as_secs());
        let t = self
            .key
            .mint_with_limits(&id, project, now, exp, limits)
            .map_err(|e| SdkError::Proxy(format!("minting a token: {e}")))?;
        Ok((id, t, exp))
    }
}

#[pymethods]
impl SigningKey {
    /// A fresh random key.
    #[new]
    fn py_new(py: Python<'_>) -> PyResult<Self> {
        Ok(py.detach(SigningKey::generate)?)
    }

    /// Key id (`k_<ulid>`), also the `kid` of every token it signs.
    #[getter]
    fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The public half as `{"kid", "alg", "x"}` (what `[auth] public_keys` takes).
    fn public_key<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pk = self.key.public_key();
        let d = PyDict::new(py);
        d.set_item("kid", pk.kid)?;
        d.set_item("alg", pk.alg)?;
        d.set_item("x", pk.x)?;
        Ok(d)
    }

    /// Mints an IC token for `project` valid for `ttl_seconds`, optionally with the token's
    /// own requests/tokens-per-minute limits (`rpm`/`tpm` claims); returns
    /// `(token_id, token, expires_at)` with `expires_at` in unix seconds.
    #[pyo3(signature = (project, ttl_seconds, token_id=None, rpm=None, tpm=None))]
    fn mint(
        &self,
        py: Python<'_>,
        project: String,
        ttl_seconds: u64,
        token_id: Option<String>,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> PyResult<(String, String, u64)> {
        if project.is_empty() {
            return Err(SdkError::invalid("project must not be empty").into());
        }
        let ttl = Duration::from_secs(ttl_seconds);
        let limits = RateLimits { rpm, tpm };
        Ok(py.detach(|| self.mint_limited(&project, ttl, token_id, limits))?)
    }

    fn __repr__(&self) -> String {
        format!("SigningKey(kid={:?})", self.key.kid())
    }
}
