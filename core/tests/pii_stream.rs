//! Streaming redactor: for every split of a text into deltas, streamed output == whole-text
//! output (restore + response policy), with bounded hold-back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use iron_core::pii::{
    Action, Blocked, Detections, Direction, MAX_HEAD_LEN, PEM_MAX, PiiPolicy, PiiType,
    StreamRedactor, TypeActions, Vault, redact_text,
};
use proptest::prelude::*;

/// A vault as stage 5 leaves it: `[EMAIL_1]`, `[EMAIL_2]`, `[PHONE_1]`, `[CREDIT_CARD_1]`.
fn request_vault() -> Vault {
    let mut vault = Vault::new();
    let mut det = Detections::new();
    let out = redact_text(
        "Mail alice@example.com or bob@example.org, call +1 (415) 555-2671, card 4111 1111 1111 1111.",
        &PiiPolicy::default(),
        Direction::Request,
        &mut vault,
        &mut det,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        out,
        "Mail [EMAIL_1] or [EMAIL_2], call [PHONE_1], card [CREDIT_CARD_1]."
    );
    vault
}

fn whole(text: &str, policy: &PiiPolicy, vault: &Vault) -> (Result<String, Blocked>, Detections) {
    let mut det = Detections::new();
    // Response direction never writes to the vault; a clone of the request vault is not
    // needed, but `redact_text` takes `&mut`, so rebuild one with the same content.
    let mut copy = request_vault();
    assert_eq!(copy.len(), vault.len());
    let r = redact_text(text, policy, Direction::Response, &mut copy, &mut det)
        .map(|o| o.unwrap_or_else(|| text.to_owned()));
    (r, det)
}

fn streamed(
    chunks: &[&str],
    policy: &PiiPolicy,
    vault: &Arc<Vault>,
) -> (Result<String, Blocked>, Detections, usize) {
    let mut s = StreamRedactor::new(Arc::new(policy.clone()), vault.clone());
    let mut out = String::new();
    let mut det = Detections::new();
    let mut max_pending = 0;
    for c in chunks {
        let before = out.len();
        if let Err(b) = s.push(c, &mut out, &mut det) {
            return (Err(b), det, max_pending);
        }
        assert!(out.is_char_boundary(before));
        max_pending = max_pending.max(s.pending_len());
    }
    match s.finish(&mut out, &mut det) {
        Ok(()) => (Ok(out), det, max_pending),
        Err(b) => (Err(b), det, max_pending),
    }
}

/// Split `text` at the given char-boundary-rounded cut points.
fn split<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut p = c % (text.len() + 1);
            while !text.is_char_boundary(p) {
                p -= 1;
            }
            p
        })
        .collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("alice@example.com".to_owned()),
        Just("new.person@corp.example.net".to_owned()),
        Just("+1 (415) 555-2671".to_owned()),
        Just("+44 20 7946 0958".to_owned()),
        Just("4111 1111 1111 1111".to_owned()),
        Just("4111 1111 1111 1112".to_owned()),
        Just("536-22-8145".to_owned()),
        Just("DE89 3704 0044 0532 0130 00".to_owned()),
        Just("10.0.0.7".to_owned()),
        Just("2001:db8::8a2e:370:7334".to_owned()),
        Just("AKIAIOSFODNN7EXAMPLE".to_owned()),
        Just("sk-ant-api03-Xy7abcDEF123456789ghiJKL".to_owned()),
        Just("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl".to_owned()),
        Just("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----".to_owned()),
        Just("-----BEGIN PRIVATE KEY-----\nMIIB".to_owned()),
        Just("[EMAIL_1]".to_owned()),
        Just("[EMAIL_2]".to_owned()),
        Just("[PHONE_1]".to_owned()),
        Just("[CREDIT_CARD_1]".to_owned()),
        Just("[EMAIL_7]".to_owned()),
        Just("[REDACTED:EMAIL]".to_owned()),
        Just(" the quick brown fox ".to_owned()),
        Just("naïve café — 日本語 😀 ".to_owned()),
        Just("\n".to_owned()),
        "[ a-zA-Z0-9@.:_+()\\[\\]-]{0,10}",
        "[0-9 .-]{0,16}",
        "\\PC{0,5}",
    ]
}

fn response_policy() -> impl Strategy<Value = PiiPolicy> {
    proptest::collection::vec(prop_oneof![Just(Action::Redact), Just(Action::Allow)], 7).prop_map(
        |acts| {
            let mut response = TypeActions::default();
            for (t, a) in PiiType::ALL.into_iter().zip(acts) {
                response.set(t, a);
            }
            PiiPolicy {
                response,
                ..PiiPolicy::default()
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn streamed_equals_whole(
        parts in proptest::collection::vec(fragment(), 0..14),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
        policy in response_policy(),
    ) {
        let text: String = parts.concat();
        let vault = Arc::new(request_vault());
        let (w, wdet) = whole(&text, &policy, &vault);
        let chunks = split(&text, &cuts);
        let (s, sdet, max_pending) = streamed(&chunks, &policy, &vault);
        prop_assert_eq!(&s, &w, "chunks {:?}", chunks);
        prop_assert_eq!(sdet, wdet);
        prop_assert!(max_pending <= PEM_MAX + MAX_HEAD_LEN);
    }

    #[test]
    fn byte_by_byte_equals_whole(parts in proptest::collection::vec(fragment(), 0..8)) {
        let text: String = parts.concat();
        let vault = Arc::new(request_vault());
        let policy = PiiPolicy::default();
        let (w, _) = whole(&text, &policy, &vault);
        let chunks: Vec<&str> = text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()]).collect();
        let (s, _, _) = streamed(&chunks, &policy, &vault);
        prop_assert_eq!(s, w);
    }
}

#[test]
fn placeholder_split_everywhere_is_restored() {
    let vault = Arc::new(request_vault());
    let policy = PiiPolicy::default();
    let text = "Sure, I wrote to [EMAIL_2] and [CREDIT_CARD_1]; [EMAIL_7] is unknown.";
    let expected =
        "Sure, I wrote to bob@example.org and 4111 1111 1111 1111; [EMAIL_7] is unknown.";
    for a in 0..=text.len() {
        for b in a..=text.len() {
            let chunks = [&text[..a], &text[a..b], &text[b..]];
            let (s, det, _) = streamed(&chunks, &policy, &vault);
            assert_eq!(s.unwrap(), expected, "split at {a}/{b}");
            assert_eq!(det.restored(PiiType::Email), 1);
            assert_eq!(det.restored(PiiType::CreditCard), 1);
            assert_eq!(det.total(), 0);
        }
    }
}

#[test]
fn new_pii_in_answer_follows_response_policy() {
    let vault = Arc::new(request_vault());
    let text = "Your contact [EMAIL_1]; also reach carol@example.net or 10.1.2.3.";
    let policy = PiiPolicy::default();
    let (s, det, _) = streamed(&[text], &policy, &vault);
    assert_eq!(
        s.unwrap(),
        "Your contact alice@example.com; also reach [REDACTED:EMAIL] or [REDACTED:IP_ADDRESS]."
    );
    assert_eq!(
        det.get(PiiType::Email, Direction::Response, Action::Redact),
        1
    );
    assert_eq!(det.restored(PiiType::Email), 1);

    let allow = PiiPolicy {
        response: TypeActions::uniform(Action::Allow),
        ..PiiPolicy::default()
    };
    let (s, det, _) = streamed(&[text], &allow, &vault);
    assert_eq!(
        s.unwrap(),
        "Your contact alice@example.com; also reach carol@example.net or 10.1.2.3."
    );
    assert_eq!(
        det.get(PiiType::IpAddress, Direction::Response, Action::Allow),
        1
    );
}

#[test]
fn block_in_response_stops_the_stream() {
    let vault = Arc::new(request_vault());
    let policy = PiiPolicy {
        response: TypeActions::default().with(PiiType::UsSsn, Action::Block),
        ..PiiPolicy::default()
    };
    let text = "Here it is: 536-22-8145 and more text";
    let (s, det, _) = streamed(
        &["Here it is: 536-", "22-8145 and more", " text"],
        &policy,
        &vault,
    );
    let err = s.unwrap_err();
    assert_eq!(err.types, vec![PiiType::UsSsn]);
    assert_eq!(
        err.to_string(),
        "response contains PII of blocked type(s): US_SSN"
    );
    assert!(!err.to_string().contains("8145"));
    assert_eq!(
        det.get(PiiType::UsSsn, Direction::Response, Action::Block),
        1
    );
    assert!(whole(text, &policy, &vault).0.is_err());
}

#[test]
fn prose_is_held_back_by_about_a_word() {
    let vault = Arc::new(Vault::new());
    let mut s = StreamRedactor::new(Arc::new(PiiPolicy::default()), vault);
    let mut out = String::new();
    let mut det = Detections::new();
    let text = "The quick brown fox jumps over the lazy dog and keeps running through the field. ";
    for word in text.split_inclusive(' ') {
        s.push(word, &mut out, &mut det).unwrap();
        assert!(
            s.pending_len() <= 8,
            "held {} bytes after {word:?}",
            s.pending_len()
        );
    }
    s.push("Numbers like 2024", &mut out, &mut det).unwrap();
    assert!(s.pending_len() <= 4);
    s.finish(&mut out, &mut det).unwrap();
    assert_eq!(out, format!("{text}Numbers like 2024"));
    assert_eq!(s.pending_len(), 0);
}

#[test]
fn open_pem_block_is_held_until_its_end() {
    let vault = Arc::new(Vault::new());
    let mut s = StreamRedactor::new(Arc::new(PiiPolicy::default()), vault);
    let mut out = String::new();
    let mut det = Detections::new();
    s.push("key: -----BEGIN RSA PRIVATE KEY-----\n", &mut out, &mut det)
        .unwrap();
    for _ in 0..40 {
        s.push(
            "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n",
            &mut out,
            &mut det,
        )
        .unwrap();
    }
    assert_eq!(out, "key: ");
    assert!(s.pending_len() > 2000);
    s.push("-----END RSA PRIVATE KEY-----\nDone.", &mut out, &mut det)
        .unwrap();
    s.finish(&mut out, &mut det).unwrap();
    assert_eq!(out, "key: [REDACTED:SECRET]\nDone.");
}
