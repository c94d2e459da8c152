//! The embedded price table: it parses, covers the models it promises, resolves snapshots to
//! their family and never to another family, lets overrides win and refuses unknown models.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use iron_core::ErrorCode;
use iron_core::pricing::{ModelPrice, PriceTable, PricingError, snapshot_family};

fn table() -> PriceTable {
    PriceTable::embedded().expect("embedded price file parses")
}

fn key_of(t: &PriceTable, model: &str) -> Option<String> {
    t.resolve(model).map(|(k, _)| k.to_owned())
}

#[test]
fn embedded_file_parses_with_version_and_date() {
    let t = table();
    assert!(t.version() >= 1);
    let d = t.updated();
    assert_eq!(d.len(), 10, "updated is YYYY-MM-DD: {d}");
    assert!(d.starts_with("20") && d.as_bytes()[4] == b'-' && d.as_bytes()[7] == b'-');
    assert!(t.defaults().count() >= 50);
    // builtin() is the same table, not the empty fallback.
    assert_eq!(
        PriceTable::builtin().defaults().count(),
        t.defaults().count()
    );
}

#[test]
fn every_entry_is_sane() {
    for (model, p) in table().defaults() {
        assert!(!model.is_empty());
        assert!(p.input > 0, "{model}: input price");
        // Cached reads are never dearer than uncached input; writes never cheaper.
        assert!(p.cached_input <= p.input, "{model}: cached_input");
        assert!(p.cache_write >= p.input, "{model}: cache_write");
        let embedding = model.starts_with("text-embedding");
        assert_eq!(
            p.output == 0,
            embedding,
            "{model}: only embeddings have no output price"
        );
        assert!(
            p.output == 0 || p.output >= p.input,
            "{model}: output >= input"
        );
        if let Some(lc) = p.long_context {
            assert!(
                lc.input > p.input && lc.output > p.output && lc.above_input_tokens > 0,
                "{model}"
            );
        }
        // Nothing above $1000 per million tokens: catches a misplaced digit.
        assert!(
            p.output <= 1_000_000_000 && p.input <= 1_000_000_000,
            "{model}"
        );
        // Family keys must not themselves look like snapshots (they would be unreachable by
        // family resolution only if misnamed); exact snapshot entries are allowed.
        let _ = snapshot_family(model);
    }
}

#[test]
fn covers_current_models() {
    let t = table();
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5.1",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "gpt-3.5-turbo-instruct",
        "claude-opus-4-5",
        "claude-opus-4-1",
        "claude-opus-4-0",
        "claude-sonnet-4-5",
        "claude-sonnet-4-0",
        "claude-3-7-sonnet-latest",
        "claude-3-5-sonnet-latest",
        "claude-haiku-4-5",
        "claude-3-5-haiku-latest",
        "claude-3-haiku-20240307",
    ] {
        assert!(t.lookup(model).is_some(), "{model} has a price");
    }
}

#[test]
fn known_list_prices() {
    let t = table();
    let p = |m: &str| *t.lookup(m).unwrap();
    // OpenAI: $2.50 / $1.25 / $10 per 1M.
    let g = p("gpt-4o");
    assert_eq!(
        (g.input, g.cached_input, g.output),
        (2_500_000, 1_250_000, 10_000_000)
    );
    let g = p("gpt-4o-mini");
    assert_eq!(
        (g.input, g.cached_input, g.output),
        (150_000, 75_000, 600_000)
    );
    let g = p("gpt-5");
    assert_eq!(
        (g.input, g.cached_input, g.output),
        (1_250_000, 125_000, 10_000_000)
    );
    // Omitted cached_input defaults to input (never cheaper).
    let g = p("gpt-5-pro");
    assert_eq!(g.cached_input, g.input);
    assert_eq!(p("text-embedding-3-small").input, 20_000);
    // Anthropic: input / 5-min cache write / cache read / output.
    let c = p("claude-sonnet-4-5");
    assert_eq!(
        (c.input, c.cache_write, c.cached_input, c.output),
        (3_000_000, 3_750_000, 300_000, 15_000_000)
    );
    let c = p("claude-opus-4-5");
    assert_eq!(
        (c.input, c.cache_write, c.cached_input, c.output),
        (5_000_000, 6_250_000, 500_000, 25_000_000)
    );
    let c = p("claude-haiku-4-5");
    assert_eq!(
        (c.input, c.cache_write, c.cached_input, c.output),
        (1_000_000, 1_250_000, 100_000, 5_000_000)
    );
    assert_eq!(p("claude-opus-4-1").output, 75_000_000);
    // Aliases carry the same price as their family.
    assert_eq!(p("claude-sonnet-4-0"), p("claude-sonnet-4"));
    assert_eq!(p("claude-opus-4-0"), p("claude-opus-4"));
}

#[test]
fn snapshots_resolve_to_their_family() {
    let t = table();
    for (model, family) in [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-2025-04-16", "o3"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("o1-2024-12-17", "o1"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-opus-latest", "claude-3-opus"),
    ] {
        assert_eq!(key_of(&t, model).as_deref(), Some(family), "{model}");
    }
}

#[test]
fn exact_entries_win_over_families() {
    let t = table();
    assert_eq!(
        key_of(&t, "gpt-4o-2024-05-13").as_deref(),
        Some("gpt-4o-2024-05-13")
    );
    assert_eq!(t.lookup("gpt-4o-2024-05-13").unwrap().input, 5_000_000);
    assert_eq!(
        key_of(&t, "gpt-3.5-turbo-1106").as_deref(),
        Some("gpt-3.5-turbo-1106")
    );
    assert_eq!(
        key_of(&t, "chatgpt-4o-latest").as_deref(),
        Some("chatgpt-4o-latest")
    );
    assert_eq!(
        key_of(&t, "gpt-5-chat-latest").as_deref(),
        Some("gpt-5-chat-latest")
    );
}

#[test]
fn never_a_wrong_family() {
    let t = table();
    // gpt-4o must not price gpt-4o-mini's snapshots (they resolve to gpt-4o-mini), and
    // families must not price unknown siblings or variants.
    assert_eq!(
        key_of(&t, "gpt-4o-mini-2024-07-18").as_deref(),
        Some("gpt-4o-mini")
    );
    for unknown in [
        "gpt-4o-audio-preview",
        "gpt-4o-mini-realtime-preview-2024-12-17",
        "gpt-4o-search-preview",
        "gpt-4o-transcribe",
        "gpt-5-6",
        "gpt-4.1-micro",
        "o3-mini-high",
        "claude-opus-4-6",
        "claude-opus-4-6-20260101",
        "claude-sonnet-4-7-20260101",
        "claude-sonnet-5",
        "claude-3-5-sonnet-v2",
        "gpt-4-4096",
        "gpt-4o-2024-13-01",
        "gpt-4o-",
        "-latest",
        "",
        "GPT-4O",
        "openai/gpt-4o",
        "my-finetune",
    ] {
        assert_eq!(key_of(&t, unknown), None, "{unknown} must be unknown");
    }
}

#[test]
fn snapshot_suffixes() {
    assert_eq!(snapshot_family("gpt-4o-2024-08-06"), Some("gpt-4o"));
    assert_eq!(
        snapshot_family("claude-3-haiku-20240307"),
        Some("claude-3-haiku")
    );
    assert_eq!(snapshot_family("gpt-4-0613"), Some("gpt-4"));
    assert_eq!(snapshot_family("x-latest"), Some("x"));
    assert_eq!(snapshot_family("gpt-4o"), None);
    assert_eq!(snapshot_family("claude-sonnet-4-5"), None);
    assert_eq!(snapshot_family("gpt-4-32k"), None);
    assert_eq!(snapshot_family("model-2024-00-10"), None);
    assert_eq!(snapshot_family("model-9999"), None);
    assert_eq!(snapshot_family("-20240101"), None);
}

#[test]
fn overrides_win() {
    let cheap = ModelPrice::flat(1, 2);
    let t = table().with_overrides(HashMap::from([
        ("gpt-4o".to_owned(), cheap),
        ("my-finetune".to_owned(), ModelPrice::flat(7, 8)),
    ]));
    assert_eq!(t.lookup("gpt-4o"), Some(&cheap));
    // A family override also prices its snapshots, even one with its own default entry.
    assert_eq!(t.lookup("gpt-4o-2024-08-06"), Some(&cheap));
    assert_eq!(t.lookup("gpt-4o-2024-05-13"), Some(&cheap));
    // ...but not other families.
    assert_eq!(t.lookup("gpt-4o-mini").unwrap().input, 150_000);
    assert_eq!(t.lookup("my-finetune").unwrap().output, 8);
    let mut t = t;
    t.set_override("gpt-4o-2024-05-13", ModelPrice::flat(3, 4));
    assert_eq!(t.lookup("gpt-4o-2024-05-13").unwrap().input, 3);
    assert_eq!(t.overrides().count(), 3);
}

#[test]
fn unknown_model_is_never_free() {
    let t = table();
    let err = t.price_for("mystery-model-9", None).unwrap_err();
    assert_eq!(err.model, "mystery-model-9");
    assert_eq!(err.code(), ErrorCode::UnknownModelPrice);
    assert!(err.to_string().contains("mystery-model-9"));
    // A project default prices unknown models, and only unknown ones.
    let default = ModelPrice::flat(10_000_000, 30_000_000);
    assert_eq!(t.price_for("mystery-model-9", Some(&default)), Ok(&default));
    assert_eq!(
        t.price_for("gpt-4o", Some(&default)).unwrap().input,
        2_500_000
    );
    // Long names are cut in the error.
    let long = "m".repeat(10_000);
    assert_eq!(t.price_for(&long, None).unwrap_err().model.len(), 128);
    // An empty table knows nothing.
    assert!(PriceTable::default().price_for("gpt-4o", None).is_err());
}

#[test]
fn model_price_serde() {
    // Admin input: optional fields default safely, `cache_read` is accepted for cached_input.
    let p: ModelPrice = serde_json::from_str(r#"{"input":3000000,"output":15000000}"#).unwrap();
    assert_eq!(p.cached_input, 3_000_000);
    assert_eq!(p.cache_write, 3_750_000);
    assert_eq!(p.long_context, None);
    let p: ModelPrice =
        serde_json::from_str(r#"{"input":1,"cache_read":0,"cache_write":2,"output":3}"#).unwrap();
    assert_eq!(
        (p.input, p.cached_input, p.cache_write, p.output),
        (1, 0, 2, 3)
    );
    // Odd input rounds the default cache write up.
    let p: ModelPrice = serde_json::from_str(r#"{"input":3,"output":3}"#).unwrap();
    assert_eq!(p.cache_write, 4);
    // Typos and missing required fields are errors, never a zero price.
    assert!(serde_json::from_str::<ModelPrice>(r#"{"input":1,"ouptut":2}"#).is_err());
    assert!(serde_json::from_str::<ModelPrice>(r#"{"input":1}"#).is_err());
    assert!(serde_json::from_str::<ModelPrice>(r#"{"input":-1,"output":2}"#).is_err());
    // Round trip, long context included.
    let t = table();
    let sonnet = t.lookup("claude-sonnet-4-5").unwrap();
    let json = serde_json::to_string(sonnet).unwrap();
    assert_eq!(&serde_json::from_str::<ModelPrice>(&json).unwrap(), sonnet);
    let plain = serde_json::to_value(t.lookup("gpt-4o").unwrap()).unwrap();
    assert_eq!(
        plain,
        serde_json::json!({"input":2_500_000,"cached_input":1_250_000,"cache_write":3_125_000,"output":10_000_000})
    );
}

#[test]
fn bad_price_files_are_rejected() {
    let ok = "version = 2\nupdated = \"2026-01-01\"\nunit = \"micro-dollars per million tokens\"\n[models]\n\"m\" = { input = 1, output = 2 }\n";
    let t = PriceTable::from_toml(ok).unwrap();
    assert_eq!(t.version(), 2);
    assert_eq!(t.lookup("m").unwrap().output, 2);
    let bad_unit = ok.replace("micro-dollars", "dollars");
    assert!(matches!(
        PriceTable::from_toml(&bad_unit),
        Err(PricingError::Unit(_))
    ));
    let typo = ok.replace("output", "outptu");
    assert!(matches!(
        PriceTable::from_toml(&typo),
        Err(PricingError::Parse(_))
    ));
    let no_version = ok.replace("version = 2\n", "");
    assert!(PriceTable::from_toml(&no_version).is_err());
    let empty_name = ok.replace("\"m\"", "\"\"");
    assert_eq!(
        PriceTable::from_toml(&empty_name).unwrap_err(),
        PricingError::EmptyModel
    );
}
