//! Fuzz target for the PII streaming redactor (design §7, stage 8): for any text and any split
//! into deltas, the streamed output equals the whole-text output, the hold-back stays bounded,
//! and nothing panics. Input layout: byte 0 = number of cut points (mod 16), then that many
//! cut bytes (positions scaled to the text), then the text (lossy UTF-8).
#![no_main]

use std::sync::Arc;

use iron_core::pii::{
    Detections, Direction, MAX_HEAD_LEN, PEM_MAX, PiiPolicy, StreamRedactor, Vault, redact_text,
};
use libfuzzer_sys::fuzz_target;

fn vault() -> Vault {
    let mut v = Vault::new();
    let mut det = Detections::new();
    let _ = redact_text(
        "a@example.com +1 (415) 555-2671 4111 1111 1111 1111 10.0.0.7",
        &PiiPolicy::default(),
        Direction::Request,
        &mut v,
        &mut det,
    );
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (cuts, body) = rest.split_at(n);
    let text = String::from_utf8_lossy(body);
    let policy = PiiPolicy::default();

    let mut v = vault();
    let mut det = Detections::new();
    let whole = redact_text(&text, &policy, Direction::Response, &mut v, &mut det)
        .map(|o| o.unwrap_or_else(|| text.to_string()));

    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut p = usize::from(c) * text.len() / 255;
            while !text.is_char_boundary(p) {
                p -= 1;
            }
            p
        })
        .collect();
    points.extend([0, text.len()]);
    points.sort_unstable();
    points.dedup();

    let mut s = StreamRedactor::new(Arc::new(policy), Arc::new(vault()));
    let mut out = String::new();
    let mut sdet = Detections::new();
    for w in points.windows(2) {
        s.push(&text[w[0]..w[1]], &mut out, &mut sdet)
            .unwrap_or_else(|e| panic!("push: {e}"));
        assert!(s.pending_len() <= PEM_MAX + MAX_HEAD_LEN);
    }
    s.finish(&mut out, &mut sdet)
        .unwrap_or_else(|e| panic!("finish: {e}"));
    assert_eq!(Ok(out), whole);
    assert_eq!(sdet, det);
});
