//! Fuzz target for proxy configuration loading (`iron_proxy::config`, read once at start-up
//! before any request): `ProxyConfig::from_toml(text, &env)` with an empty environment never
//! panics or overflows the stack on any text, and every refusal is a typed `ConfigError` with
//! a message; an accepted static configuration builds its routing table
//! (`state::Routing::from_static`) without panicking; no error message shows a secret from the
//! environment.
//! Inputs that name a `*_file` key are skipped: those read files (a secret or key file), and a
//! fuzzer must not read the machine's files (`/dev/zero`, …).
//! Each input is loaded twice: with an empty environment, and with one that holds the
//! secrets the seed configurations name (so accepted configurations are reached too).
//! Input layout: the TOML text (lossy UTF-8).
#![no_main]

use std::collections::BTreeMap;

use iron_proxy::config::{ConfigError, ProxyConfig, Source};
use iron_proxy::state::Routing;
use libfuzzer_sys::fuzz_target;

/// True if any table key (at any depth) ends in `_file`.
fn names_a_file(v: &toml::Value) -> bool {
    match v {
        toml::Value::Table(t) => t
            .iter()
            .any(|(k, v)| k.ends_with("_file") || names_a_file(v)),
        toml::Value::Array(a) => a.iter().any(names_a_file),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = toml::from_str::<toml::Table>(&text)
        && names_a_file(&toml::Value::Table(t))
    {
        return;
    }
    // As specified (empty env), then with the secrets the sample configs name, so that
    // accepted configurations (and the routing table) are reached too.
    check(&text, &BTreeMap::new());
    let env: BTreeMap<String, String> = [
        ("OPENAI_API_KEY", "sk-fuzz-openai"),
        ("ANTHROPIC_API_KEY", "sk-ant-fuzz"),
        ("IRON_PROXY_SECRET", "fuzz-proxy-secret-0123456789abcdef"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    check(&text, &env);
});

fn check(text: &str, env: &BTreeMap<String, String>) {
    match ProxyConfig::from_toml(text, env) {
        Ok(config) => {
            if let Source::Static(s) = &config.source {
                let _ = Routing::from_static(s);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            // Messages name the path, never a secret value.
            for (_, secret) in env.iter() {
                assert!(
                    text.contains(secret.as_str()) || !msg.contains(secret.as_str()),
                    "a secret appeared in a config error: {msg}"
                );
            }
            match &e {
                ConfigError::Invalid { message, .. } => assert!(!message.is_empty()),
                ConfigError::Read { .. } => panic!("from_toml read a file: {e}"),
                _ => {}
            }
        }
    }
}
