//! Input validation for the REST API: names, dollar amounts, TTLs, model patterns,
//! provider base URLs and per-deployment timeouts.
//!
//! Request bodies deserialize straight into these validated newtypes, so a bad value fails
//! while parsing (with the JSON path of the field, `api::json`) and nothing reaches the
//! service or the store. Error messages describe the rule and never echo the value (a value
//! may be huge or a secret).

use std::net::IpAddr;
use std::time::Duration;

use iron_core::Money;
use serde::{Deserialize, Deserializer};

/// Largest accepted budget: one billion dollars.
pub const MAX_BUDGET: Money = Money::from_usd(1_000_000_000);
/// Longest accepted token lifetime.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Shortest accepted token lifetime.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest model pattern and most patterns per list.
const MAX_PATTERN_LEN: usize = 128;
const MAX_PATTERNS: usize = 64;

/// A project, provider or API-key name: 1–64 characters `[a-z0-9][a-z0-9-_]*`, not
/// starting with an id prefix (`prj_`, `prv_`, `tok_`, `ak_`), so ids and names never clash.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Name, String> {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        let b = s.as_bytes();
        let ok_first = b[0].is_ascii_lowercase() || b[0].is_ascii_digit();
        let ok_rest = b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_');
        if !ok_first || !ok_rest {
            return Err(
                "must start with a lowercase letter or digit and contain only a-z, 0-9, '-' and '_'"
                    .into(),
            );
        }
        if ["prj_", "prv_", "tok_", "ak_"]
            .iter()
            .any(|p| s.starts_with(p))
        {
            return Err("must not start with an id prefix (prj_, prv_, tok_, ak_)".into());
        }
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A dollar amount from JSON: a decimal string (`"12.50"`) or a number (`12.5`), converted
/// exactly to micro-dollars; negative, non-finite, more than 6 decimals or above
/// [`MAX_BUDGET`] are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsdAmount(pub Money);

/// Parses a user-facing dollar amount (CLI flags and JSON strings).
pub fn parse_usd(s: &str) -> Result<Money, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err("must not be negative".into());
    }
    let m: Money = t
        .parse()
        .map_err(|e: iron_core::money::MoneyParseError| e.to_string())?;
    if m > MAX_BUDGET {
        return Err("must be at most 1000000000 USD".into());
    }
    Ok(m)
}

impl<'de> Deserialize<'de> for UsdAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = UsdAmount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a dollar amount as a decimal string (\"12.50\") or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UsdAmount, E> {
                parse_usd(v).map(UsdAmount).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UsdAmount, E> {
                parse_usd(&v.to_string()).map(UsdAmount).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<UsdAmount, E> {
                if v < 0 {
                    return Err(E::custom("must not be negative"));
                }
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<UsdAmount, E> {
                if !v.is_finite() {
                    return Err(E::custom("must be a finite number"));
                }
                if v < 0.0 {
                    return Err(E::custom("must not be negative"));
                }
                if v > 1e9 {
                    return Err(E::custom("must be at most 1000000000 USD"));
                }
                // Rust prints the shortest decimal that round-trips, without exponent.
                parse_usd(&format!("{v}")).map(UsdAmount).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A token lifetime such as `"7d"`, `"12h"`, `"30m"` (humantime syntax), 1 minute to 366 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl(pub Duration);

pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| "must be a duration such as 30m, 12h or 7d".to_string())?;
    if d < MIN_TTL || d > MAX_TTL {
        return Err("must be between 1m and 366d".into());
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_ttl(&s).map(Ttl).map_err(serde::de::Error::custom)
    }
}

/// Model glob patterns (`gpt-4o*`): each 1–128 printable ASCII characters, at most 64.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelPatterns(pub Vec<String>);

impl<'de> Deserialize<'de> for ModelPatterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        check_patterns(&v).map_err(serde::de::Error::custom)?;
        Ok(ModelPatterns(v))
    }
}

pub fn check_patterns(v: &[String]) -> Result<(), String> {
    if v.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} patterns"));
    }
    for p in v {
        if p.is_empty() || p.len() > MAX_PATTERN_LEN || !p.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "each pattern must be 1 to {MAX_PATTERN_LEN} printable ASCII characters"
            ));
        }
    }
    Ok(())
}

/// A per-deployment timeout in milliseconds from JSON: a whole number from 1 to
/// [`MAX_DEPLOYMENT_TIMEOUT_MS`] (10 minutes). Zero, negative, fractional, too large or
/// non-numeric values are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutMs(pub u64);

pub use iron_core::wire::MAX_DEPLOYMENT_TIMEOUT_MS;

/// Checks a timeout in milliseconds (also used by the CLI's flags through the API).
pub fn check_timeout_ms(ms: u64) -> Result<u64, String> {
    if ms == 0 || ms > MAX_DEPLOYMENT_TIMEOUT_MS {
        return Err(format!(
            "must be a whole number of milliseconds from 1 to {MAX_DEPLOYMENT_TIMEOUT_MS}"
        ));
    }
    Ok(ms)
}

impl<'de> Deserialize<'de> for TimeoutMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TimeoutMs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "a whole number of milliseconds from 1 to {MAX_DEPLOYMENT_TIMEOUT_MS}"
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TimeoutMs, E> {
                check_timeout_ms(v).map(TimeoutMs).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TimeoutMs, E> {
                if v < 0 {
                    return Err(E::custom("must not be negative"));
                }
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_u64(V)
    }
}

/// A provider API key as received: non-empty, at most 4 KiB, no whitespace or control
/// characters. Zeroized on drop; `Debug` never shows it.
pub struct ProviderKeyInput(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for ProviderKeyInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderKeyInput(***)")
    }
}

impl ProviderKeyInput {
    pub fn parse(s: String) -> Result<Self, String> {
        let s = zeroize::Zeroizing::new(s);
        if s.is_empty() || s.len() > 4096 {
            return Err("must be 1 to 4096 characters".into());
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must not contain whitespace or control characters".into());
        }
        Ok(ProviderKeyInput(s))
    }
}

impl<'de> Deserialize<'de> for ProviderKeyInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProviderKeyInput::parse(s).map_err(serde::de::Error::custom)
    }
}

/// The masked form of a provider key: first 3 and last 3 characters when the key has at
/// least 12 characters (`sk-…abc`), otherwise just `…`.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() >= 12 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 3..].iter().collect();
        format!("{head}…{tail}")
    } else {
        "…".into()
    }
}

/// Checks and normalizes a provider base URL: `http(s)` only, no credentials, query or
/// fragment; trailing `/` and `/v1` removed. Unless `allow_private`, the scheme must be
/// https and the host must not be loopback, private, link-local or otherwise internal.
pub fn check_upstream_url(raw: &str, allow_private: bool) -> Result<String, String> {
    let url =
        url::Url::parse(raw.trim()).map_err(|_| "must be an absolute http(s) URL".to_string())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return Err("must use https (plain http is allowed only with \
                        security.allow_private_upstreams)"
                .into());
        }
        _ => return Err("must be an absolute http(s) URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not contain a query or fragment".into());
    }
    let host = url.host().ok_or_else(|| "must have a host".to_string())?;
    if !allow_private {
        let internal = match &host {
            url::Host::Domain(d) => iron_core::net::is_internal_hostname(d),
            url::Host::Ipv4(ip) => iron_core::net::is_internal_v4(*ip),
            url::Host::Ipv6(ip) => iron_core::net::is_internal_v6(*ip),
        };
        if internal {
            return Err(
                "points to a loopback, private or link-local address (allowed only \
                        with security.allow_private_upstreams)"
                    .into(),
            );
        }
    }
    let mut s = url.to_string();
    while s.ends_with('/') {
        s.pop();
    }
    if let Some(stripped) = s.strip_suffix("/v1") {
        s = stripped.to_owned();
    }
    Ok(s)
}

/// True when `ip` would be refused as an upstream without `allow_private_upstreams`. The
/// ranges live in `iron_core::net`, shared with the proxy's connect-time check.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    iron_core::net::is_internal_ip(ip)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(Name::parse("team-a_1").is_ok());
        assert!(Name::parse("9lives").is_ok());
        for bad in ["", "-a", "_a", "A", "a b", "a.b", "prj_x", "prv_1", "ünï"] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
        assert!(Name::parse(&"a".repeat(64)).is_ok());
        assert!(Name::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn usd_amounts() {
        let p = |j: &str| serde_json::from_str::<UsdAmount>(j).map(|u| u.0.0);
        assert_eq!(p("\"12.50\"").unwrap(), 12_500_000);
        assert_eq!(p("12.5").unwrap(), 12_500_000);
        assert_eq!(p("0.1").unwrap(), 100_000);
        assert_eq!(p("3").unwrap(), 3_000_000);
        assert_eq!(p("1000000000").unwrap(), 1_000_000_000_000_000);
        for bad in [
            "-1",
            "-0.5",
            "\"-1\"",
            "1e10",
            "1000000000.01",
            "\"abc\"",
            "0.0000001",
            "true",
            "null",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let msg = p("-5").unwrap_err().to_string();
        assert!(msg.contains("negative"), "{msg}");
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_ttl("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        for bad in ["", "10s", "400d", "soon", "-1d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_ms() {
        let p = |j: &str| serde_json::from_str::<TimeoutMs>(j).map(|t| t.0);
        assert_eq!(p("1").unwrap(), 1);
        assert_eq!(p("600000").unwrap(), 600_000);
        for bad in [
            "0", "-1", "600001", "1.5", "\"100\"", "true", "null", "1e20",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(p("-5").unwrap_err().to_string().contains("negative"));
        assert!(p("0").unwrap_err().to_string().contains("from 1 to 600000"));
    }

    #[test]
    fn masking() {
        assert_eq!(mask_key("sk-proj-abcdefghijklmnop"), "sk-…nop");
        assert_eq!(mask_key("sk-short"), "…");
        assert_eq!(mask_key("123456789012"), "123…012");
    }

    #[test]
    fn upstream_urls() {
        let ok = |u: &str| check_upstream_url(u, false);
        assert_eq!(
            ok("https://api.openai.com/v1/").unwrap(),
            "https://api.openai.com"
        );
        assert_eq!(
            ok("https://api.anthropic.com").unwrap(),
            "https://api.anthropic.com"
        );
        assert_eq!(
            ok("https://x.openai.azure.com/openai").unwrap(),
            "https://x.openai.azure.com/openai"
        );
        for bad in [
            "http://api.openai.com",
            "https://localhost:8080",
            "https://127.0.0.1",
            "https://10.1.2.3",
            "https://192.168.0.1",
            "https://169.254.169.254",
            "https://[::1]",
            "https://[fd00::1]",
            "https://[::ffff:10.0.0.1]",
            "https://100.64.1.1",
            "https://metadata",
            "https://user:pw@api.openai.com",
            "https://api.openai.com/?x=1",
            "ftp://api.openai.com",
            "not a url",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_upstream_url("http://127.0.0.1:9999/v1", true).unwrap(),
            "http://127.0.0.1:9999"
        );
        assert!(check_upstream_url("ftp://x", true).is_err());
    }
}
