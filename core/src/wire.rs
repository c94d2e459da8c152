//! Wire types shared by control and the proxy (`design.md` §4, §5, §8).
//!
//! The proxy's static config and control's `/internal/v1/snapshot` both describe the same
//! things — providers (deployments), projects, public keys, revoked tokens — so they share
//! these types. Provider keys travel only inside [`SealedSecret`]s (AES-256-GCM under a key
//! derived from `IRON_PROXY_SECRET`, see `transit`), never in plaintext.

use serde::{Deserialize, Serialize};

use crate::token::PublicKey;

/// Provider kinds (`iron provider add --kind …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    OpenaiCompatible,
    AzureOpenai,
}

/// The API family a provider speaks; routes of one family go to providers of that family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFamily {
    OpenAi,
    Anthropic,
}

impl ProviderKind {
    pub const fn family(self) -> ApiFamily {
        match self {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai => {
                ApiFamily::OpenAi
            }
            ProviderKind::Anthropic => ApiFamily::Anthropic,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::AzureOpenai => "azure-openai",
        }
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(ProviderKind::Openai),
            "anthropic" => Ok(ProviderKind::Anthropic),
            "openai-compatible" => Ok(ProviderKind::OpenaiCompatible),
            "azure-openai" => Ok(ProviderKind::AzureOpenai),
            other => Err(format!(
                "unknown provider kind `{other}` (expected openai, anthropic, openai-compatible or azure-openai)"
            )),
        }
    }
}

/// A secret encrypted for transit or storage: base64 nonce and ciphertext (AES-256-GCM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// Id of the key that sealed it (rotation).
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
}

/// A provider deployment as the proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSpec {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL without the `/v1` suffix, e.g. `https://api.openai.com`.
    pub base_url: String,
    /// Glob patterns of model names served (`*` = all).
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    /// Higher wins among healthy deployments of a family.
    #[serde(default)]
    pub priority: i32,
    /// The provider key sealed for this proxy.
    pub api_key: SealedSecret,
    /// This deployment's own timeouts; absent (older controls) = the proxy's `[upstream]` ones.
    #[serde(default, skip_serializing_if = "DeploymentTimeouts::is_none")]
    pub timeouts: DeploymentTimeouts,
}

/// Most milliseconds a per-deployment timeout may be set to (10 minutes).
pub const MAX_DEPLOYMENT_TIMEOUT_MS: u64 = 600_000;

/// Per-deployment timeouts in milliseconds (`design.md` §8): connect, first response byte,
/// and idle gap between body chunks. `None` = the proxy's `[upstream]` value applies.
/// Control accepts 1..=[`MAX_DEPLOYMENT_TIMEOUT_MS`]; the proxy ignores a 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
}

impl DeploymentTimeouts {
    /// True when no timeout is overridden.
    pub fn is_none(&self) -> bool {
        self.connect_ms.is_none() && self.first_byte_ms.is_none() && self.idle_ms.is_none()
    }
}

fn default_models() -> Vec<String> {
    vec!["*".into()]
}

/// A project as the proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSpec {
    pub id: String,
    pub name: String,
    /// Provider ids this project may use; empty = all providers.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Glob patterns of allowed models; empty = all.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// PII policy; `None` = the default (redact every type both ways, reversibly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<crate::pii::PiiPolicy>,
    /// The project's RPM/TPM limits (absent = unlimited; older controls send none).
    #[serde(default, skip_serializing_if = "crate::ratelimit::RateLimits::is_none")]
    pub rate_limits: crate::ratelimit::RateLimits,
}

/// Everything a proxy needs from control, served at `GET /internal/v1/snapshot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonic version (the id of the last control event included).
    pub version: u64,
    pub keys: Vec<PublicKey>,
    pub projects: Vec<ProjectSpec>,
    pub providers: Vec<ProviderSpec>,
    /// Ids of revoked tokens that have not expired yet.
    pub revoked: Vec<String>,
    /// Admin price overrides (`iron pricing set`), applied over the embedded table.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, crate::pricing::ModelPrice>,
}

/// Change notifications on `GET /internal/v1/events` (SSE; `id:` = version, resumable with
/// `Last-Event-ID`). `event:` is the variant name in snake_case, `data:` the JSON body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlEvent {
    /// A token was revoked: proxies refuse it immediately.
    TokenRevoked { token_id: String },
    /// Projects, providers or keys changed: proxies re-fetch the snapshot.
    ConfigChanged,
}

/// A proxy's circuit breakers, `PUT /internal/v1/proxies/{proxy id}/breakers` (sent on
/// every change and every few seconds; control shows them in the provider listing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerReport {
    pub breakers: Vec<BreakerStatus>,
}

/// One deployment's breaker on one proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerStatus {
    /// Provider (deployment) id.
    pub deployment: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
}

/// Glob match for model patterns: `*` matches any run of characters; everything else is
/// literal. `gpt-4o*` matches `gpt-4o-mini`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("gpt-4o*", "gpt-4o-mini"));
        assert!(glob_match("gpt-4o*", "gpt-4o"));
        assert!(!glob_match("gpt-4o*", "gpt-4"));
        assert!(glob_match("*-mini", "gpt-4o-mini"));
        assert!(glob_match("o*3*", "o1-3x"));
        assert!(!glob_match("claude-*", "gpt-4o"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
    }

    #[test]
    fn provider_spec_timeouts_default_when_absent() {
        let old = r#"{"id":"prv_1","name":"a","kind":"openai","base_url":"https://x",
            "api_key":{"key_id":"k","nonce":"n","ciphertext":"c"}}"#;
        let spec: ProviderSpec = serde_json::from_str(old).unwrap_or_else(|e| panic!("{e}"));
        assert!(spec.timeouts.is_none());
        assert!(
            !serde_json::to_string(&spec)
                .unwrap_or_default()
                .contains("timeouts")
        );
        let with = DeploymentTimeouts {
            first_byte_ms: Some(1500),
            ..Default::default()
        };
        let spec = ProviderSpec {
            timeouts: with,
            ..spec
        };
        let json = serde_json::to_string(&spec).unwrap_or_default();
        assert!(
            json.contains(r#""timeouts":{"first_byte_ms":1500}"#),
            "{json}"
        );
        let back: ProviderSpec = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.timeouts, with);
    }

    #[test]
    fn provider_kind_serde_is_kebab() {
        let k: ProviderKind =
            serde_json::from_str("\"openai-compatible\"").unwrap_or(ProviderKind::Openai);
        assert_eq!(k, ProviderKind::OpenaiCompatible);
        assert_eq!(k.family(), ApiFamily::OpenAi);
    }
}
