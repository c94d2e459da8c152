//! Fuzz target for the request-body handling of proxy stages 3–6 (design §3): stage 3 parses
//! the body (`stage::read::parse`), stage 4 estimates its prompt tokens
//! (`Meter::estimate_prompt`, `estimate_prompt_fast`), stage 5 redacts PII in it
//! (`pii::redact_request_json`), stage 6 forces `stream_options.include_usage`
//! (`stage::rewrite::force_include_usage`), builds the upstream head (`stage::rewrite::rewrite`)
//! and body (`stage::rewrite::upstream_body`). Invariants: no panic and no stack overflow
//! (deep nesting is refused at parse time: an accepted body nests at most
//! `read::DEFAULT_MAX_JSON_DEPTH` levels); whenever the body was accepted, the upstream body
//! is valid JSON that stage 3 accepts again as exactly the edited JSON (same `model` and
//! `stream`, whether spliced or re-serialised), carries
//! `include_usage: true` when it was forced, and is the received bytes when nothing changed;
//! the upstream head never carries the agent's credentials or hop-by-hop headers and has the
//! deployment's key, `Host` and `Content-Length`.
//! Input layout: byte 0 = route (bits 0–2), provider kind (bits 3–4), redact (bit 5), deep
//! nesting mode (bit 6); byte 1 = length of a header/query segment (mod 64); the segment;
//! then the body. In deep nesting mode the body is replaced by `[`/`{"a":` nested to a depth
//! taken from the next two bytes (×4, up to 262 140).
#![no_main]

use bytes::Bytes;
use iron_core::meter::Meter;
use iron_core::pii::{Detections, PiiPolicy, Vault, redact_request_json};
use iron_core::wire::ProviderKind;
use iron_proxy::stage::read;
use iron_proxy::stage::rewrite;
use iron_proxy::stage::route::ApiRoute;
use iron_proxy::state::Deployment;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;
use serde_json::Value;
use zeroize::Zeroizing;

const AGENT_TOKEN: &str = "ic_agent.token.FUZZ";
const PROVIDER_KEY: &str = "sk-provider-FUZZKEY";

const ROUTES: [(ApiRoute, &str); 6] = [
    (ApiRoute::ChatCompletions, "/v1/chat/completions"),
    (ApiRoute::Completions, "/v1/completions"),
    (ApiRoute::Embeddings, "/v1/embeddings"),
    (ApiRoute::Responses, "/v1/responses"),
    (ApiRoute::Messages, "/v1/messages"),
    (ApiRoute::CountTokens, "/v1/messages/count_tokens"),
];

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Nesting depth of objects/arrays (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn nested(depth: usize, object: bool) -> Vec<u8> {
    let (open, close): (&[u8], &[u8]) = if object {
        (b"{\"a\":", b"}")
    } else {
        (b"[", b"]")
    };
    let mut v = b"{\"model\":\"m\",\"messages\":".to_vec();
    for _ in 0..depth {
        v.extend_from_slice(open);
    }
    v.extend_from_slice(b"1");
    for _ in 0..depth {
        v.extend_from_slice(close);
    }
    v.push(b'}');
    v
}

fuzz_target!(|data: &[u8]| {
    let [ctl, seg_len, rest @ ..] = data else {
        return;
    };
    let (route, path) = ROUTES[usize::from(ctl & 7) % ROUTES.len()];
    let kind = match (ctl >> 3) & 3 {
        0 => ProviderKind::Openai,
        1 => ProviderKind::Anthropic,
        2 => ProviderKind::OpenaiCompatible,
        _ => ProviderKind::AzureOpenai,
    };
    let do_redact = ctl & 0x20 != 0;
    let n = usize::from(seg_len % 64).min(rest.len());
    let (segment, body) = rest.split_at(n);
    let body: Vec<u8> = if ctl & 0x40 != 0 {
        let d = body
            .iter()
            .take(2)
            .fold(0usize, |a, &b| a << 8 | usize::from(b))
            * 4;
        nested(d, ctl & 0x80 != 0)
    } else {
        body.to_vec()
    };
    let raw = Bytes::from(body);

    // Stage 3.
    let Ok(mut parsed) = read::parse(raw.clone(), route) else {
        return;
    };
    let Some(json) = parsed.json.as_ref() else {
        panic!("an inspected route was accepted without JSON");
    };
    assert!(json.is_object());
    let depth = depth(json);
    assert!(
        depth <= read::DEFAULT_MAX_JSON_DEPTH,
        "accepted a body nested {depth} deep"
    );

    // Stage 4.
    let _ = Meter::global().estimate_prompt(json);
    let _ = Meter::estimate_prompt_fast(json);

    // Stage 5.
    let mut changed = false;
    if do_redact {
        let mut vault = Vault::new();
        let mut det = Detections::new();
        let Some(json) = parsed.json.as_mut() else {
            return;
        };
        match redact_request_json(json, &PiiPolicy::default(), &mut vault, &mut det) {
            Ok(c) => changed |= c,
            Err(_) => return,
        }
    }

    // Stage 6.
    let forced = rewrite::force_include_usage(route, &mut parsed);
    let edit = forced.with_redaction(changed);
    let up_body = match rewrite::upstream_body(&parsed, edit) {
        Ok(b) => b,
        Err(e) => panic!("accepted body could not be serialised: {e:?}"),
    };
    if edit == rewrite::BodyEdit::Unchanged {
        assert_eq!(up_body, raw, "unchanged body was not forwarded as received");
    }
    let again = match read::parse(up_body.clone(), route) {
        Ok(a) => a,
        Err(e) => panic!("upstream body is refused by stage 3: {e:?}"),
    };
    assert_eq!(again.model, parsed.model);
    assert_eq!(again.stream, parsed.stream);
    // Spliced or re-serialised, upstream sees exactly the JSON the stages produced.
    assert_eq!(again.json, parsed.json, "upstream body differs from the edited JSON");
    if forced != rewrite::BodyEdit::Unchanged {
        assert!(
            again.include_usage,
            "include_usage was forced but is not in the body"
        );
    }

    let Ok(dep) = Deployment::new(
        "p1".into(),
        "fuzz".into(),
        kind,
        "https://api.example.test:8443/prefix",
        vec!["*".into()],
        0,
        Zeroizing::new(PROVIDER_KEY.into()),
    ) else {
        panic!("fixed deployment must build");
    };
    let mut full_path = path.as_bytes().to_vec();
    full_path.push(b'?');
    full_path.extend_from_slice(segment);
    let mut req = match RequestHeader::build("POST", &full_path, None) {
        Ok(r) => r,
        Err(_) => match RequestHeader::build("POST", path.as_bytes(), None) {
            Ok(r) => r,
            Err(e) => panic!("fixed path refused: {e}"),
        },
    };
    let _ = req.append_header("authorization", format!("Bearer {AGENT_TOKEN}"));
    let _ = req.append_header("x-api-key", AGENT_TOKEN);
    let _ = req.append_header("connection", segment);
    let _ = req.append_header("keep-alive", "timeout=5");
    let _ = req.append_header("x-custom", segment);
    let _ = req.append_header("transfer-encoding", "chunked");
    let up = match rewrite::rewrite(&req, route, &dep, Some(up_body.len())) {
        Ok(u) => u,
        Err(e) => panic!("rewrite failed: {e:?}"),
    };
    for (name, value) in up.headers.iter() {
        assert!(
            !HOP_BY_HOP.contains(&name.as_str()),
            "hop-by-hop {name} forwarded"
        );
        let v = value.as_bytes();
        assert!(
            !v.windows(AGENT_TOKEN.len())
                .any(|w| w == AGENT_TOKEN.as_bytes())
                || name.as_str() == "x-custom",
            "agent token forwarded in {name}"
        );
    }
    let header = |n: &str| up.headers.get(n).map(|v| v.as_bytes().to_vec());
    assert_eq!(
        header("content-length"),
        Some(up_body.len().to_string().into_bytes())
    );
    assert_eq!(
        header("host"),
        Some(dep.endpoint.authority.clone().into_bytes())
    );
    assert_eq!(header("accept-encoding"), Some(b"identity".to_vec()));
    match kind {
        ProviderKind::Anthropic => {
            assert_eq!(header("x-api-key"), Some(PROVIDER_KEY.as_bytes().to_vec()));
            assert!(header("authorization").is_none());
        }
        _ => {
            assert_eq!(
                header("authorization"),
                Some(format!("Bearer {PROVIDER_KEY}").into_bytes())
            );
            assert!(header("x-api-key").is_none());
        }
    }
});
