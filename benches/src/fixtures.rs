//! Stable benchmark inputs shared by the criterion suites and the `iron-bench` harness:
//! OpenAI chat request bodies of an exact size, an OpenAI SSE answer of N content events built
//! from the captured testkit fixture, the bench signing key and token, and the static proxy
//! configuration the harness hands to `iron-proxy`.
//!
//! Everything is deterministic (no clock, no randomness) except the signing key and token,
//! which are minted fresh per run like control would.

use bytes::Bytes;
use iron_core::token::{SigningKey, new_token_id, unix_now};

/// Project every bench token belongs to.
pub const PROJECT: &str = "prj_bench";
/// Model named in every bench request.
pub const MODEL: &str = "gpt-4o-mini";
/// Env var through which `iron-proxy` receives the (fake) provider key.
pub const PROVIDER_KEY_ENV: &str = "IRON_BENCH_PROVIDER_KEY";
/// The fake provider key the proxy swaps in.
pub const PROVIDER_KEY: &str = "sk-bench-provider-key-0123456789abcdef";

/// Words for the filler prose: ordinary English, no PII, no characters JSON must escape.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "model",
    "request",
    "answer",
    "summary",
    "report",
    "customer",
    "meeting",
    "project",
    "quarterly",
    "analysis",
    "however",
    "therefore",
    "important",
    "consider",
    "following",
    "system",
    "data",
    "long-term",
    "January",
    "Kubernetes",
];

/// Deterministic xorshift64 so the corpora are identical on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Exactly `len` bytes of ASCII English-like prose (sentences, capitals, a few numbers).
pub fn prose(len: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut s = String::with_capacity(len + 32);
    let mut start = true;
    while s.len() < len {
        let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        if !s.is_empty() {
            s.push(' ');
        }
        if start {
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                s.push(c.to_ascii_uppercase());
                s.push_str(cs.as_str());
            }
        } else {
            s.push_str(w);
        }
        start = false;
        match rng.next() % 29 {
            0 => {
                s.push('.');
                start = true;
            }
            1 => s.push(','),
            2 => s.push_str(" 2025"),
            _ => {}
        }
    }
    s.truncate(len);
    s
}

/// An OpenAI chat completion request body of exactly `len` bytes (for `len` ≥ ~200): a short
/// system message and one user message of prose.
pub fn chat_body(len: usize, stream: bool) -> Bytes {
    let build = |content: &str| {
        serde_json::json!({
            "model": MODEL,
            "stream": stream,
            "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": content},
            ],
        })
        .to_string()
    };
    let overhead = build("").len();
    let body = build(&prose(len.saturating_sub(overhead)));
    Bytes::from(body)
}

/// The captured OpenAI stream (with usage) split into events' `data` payloads.
fn fixture_datas() -> Vec<&'static str> {
    iron_testkit::fixtures::OPENAI_CHAT_STREAM_USAGE_SSE
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .collect()
}

/// An OpenAI chat stream as the provider sends it with `include_usage`: a role event,
/// `content_events` content events (`"tok "`), the finish event, the usage event and
/// `[DONE]` — `content_events + 4` events in all, in the captured fixture's exact shape.
pub fn openai_stream(content_events: usize) -> Vec<u8> {
    let datas = fixture_datas();
    let pick = |needle: &str| {
        datas
            .iter()
            .find(|d| d.contains(needle))
            .copied()
            .unwrap_or("{}")
    };
    let role = pick("\"role\":\"assistant\"");
    let content = pick("\"content\":\"Hello\"").replace("\"Hello\"", "\"tok \"");
    let finish = pick("\"finish_reason\":\"stop\"");
    let usage = pick("\"choices\":[]");
    let mut out = Vec::new();
    let mut push = |d: &str| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(d.as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    push(role);
    for _ in 0..content_events {
        push(&content);
    }
    push(finish);
    push(usage);
    push("[DONE]");
    out
}

/// The bench's signing key and an IC token minted with it (valid for a day).
#[derive(Debug)]
pub struct BenchKeys {
    pub key: SigningKey,
    pub token: String,
}

impl BenchKeys {
    pub fn generate() -> anyhow::Result<Self> {
        let key = SigningKey::generate().map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
        let now = unix_now();
        let token = key
            .mint(&new_token_id(), PROJECT, now, now + 86_400)
            .map_err(|e| anyhow::anyhow!("mint token: {e}"))?;
        Ok(BenchKeys { key, token })
    }
}

/// Which proxy stages are on (the proxy's `[features]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FeatureSet {
    pub budgets: bool,
    pub pii: bool,
    pub metering: bool,
}

impl FeatureSet {
    pub const ALL_ON: FeatureSet = FeatureSet {
        budgets: true,
        pii: true,
        metering: true,
    };
    pub const ALL_OFF: FeatureSet = FeatureSet {
        budgets: false,
        pii: false,
        metering: false,
    };
}

/// What goes into the generated static `proxy.toml`.
#[derive(Debug, Clone)]
pub struct ProxyToml<'a> {
    pub listen: std::net::SocketAddr,
    pub admin_listen: std::net::SocketAddr,
    /// pingora worker threads.
    pub threads: usize,
    /// `None` writes no `[features]` table (proxy defaults).
    pub features: Option<FeatureSet>,
    /// Mock upstream base URL (`http://127.0.0.1:PORT`, no `/v1`).
    pub upstream: &'a str,
    pub public_key: &'a iron_core::token::PublicKey,
}

impl ProxyToml<'_> {
    /// The static configuration text (`iron-proxy --config`); the provider key comes from
    /// [`PROVIDER_KEY_ENV`].
    pub fn render(&self) -> String {
        let features = match self.features {
            Some(f) => format!(
                "[features]\nbudgets = {}\npii = {}\nmetering = {}\n",
                f.budgets, f.pii, f.metering
            ),
            None => String::new(),
        };
        format!(
            r#"# Generated by iron-bench.
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = {threads}
shutdown_grace_secs = 0

# The mock upstream is on loopback.
[security]
allow_private_upstreams = true

{features}
[auth]
public_keys = [{{ kid = "{kid}", alg = "EdDSA", x = "{x}" }}]

[[projects]]
id = "{PROJECT}"
name = "bench"
# Large enough never to run out; the ledger still reserves and settles every request.
budget_usd = "1000000.00"

[[providers]]
id = "mock-openai"
kind = "openai"
base_url = "{upstream}/v1"
api_key_env = "{PROVIDER_KEY_ENV}"
"#,
            listen = self.listen,
            admin = self.admin_listen,
            threads = self.threads,
            kid = self.public_key.kid,
            x = self.public_key.x,
            upstream = self.upstream,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_exact_size_and_parse() {
        for len in [1024, 256 * 1024] {
            for stream in [false, true] {
                let b = chat_body(len, stream);
                assert_eq!(b.len(), len);
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                assert_eq!(v["stream"], stream);
            }
        }
    }

    #[test]
    fn stream_has_the_fixture_shape() {
        let s = openai_stream(64);
        let text = String::from_utf8(s).unwrap();
        assert_eq!(text.matches("\n\n").count(), 68);
        assert_eq!(text.matches("\"tok \"").count(), 64);
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains("\"prompt_tokens\""));
    }

    #[test]
    fn generated_config_is_accepted_by_the_proxy() {
        let keys = BenchKeys::generate().unwrap();
        let pk = keys.key.public_key();
        let env: std::collections::BTreeMap<String, String> =
            [(PROVIDER_KEY_ENV.to_owned(), PROVIDER_KEY.to_owned())].into();
        for features in [None, Some(FeatureSet::ALL_OFF), Some(FeatureSet::ALL_ON)] {
            let toml = ProxyToml {
                listen: "127.0.0.1:1".parse().unwrap(),
                admin_listen: "127.0.0.1:2".parse().unwrap(),
                threads: 1,
                features,
                upstream: "http://127.0.0.1:3",
                public_key: &pk,
            }
            .render();
            let cfg = iron_proxy::config::ProxyConfig::from_toml(&toml, &env);
            assert!(cfg.is_ok(), "{features:?}: {cfg:?}");
        }
    }
}
