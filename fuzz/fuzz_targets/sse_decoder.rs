//! Fuzz target for the incremental SSE decoder (`iron_core::sse`, design §3 stage 8: every
//! upstream stream chunk goes through it). For any bytes and any split into chunks: nothing
//! panics; decoding the chunks yields exactly the events of decoding the whole input (raw
//! bytes, `event`, `id`, `data`); the raw bytes of the events add up to the input; the
//! buffered tail never exceeds the per-event cap after a drain; and the cap errors agree.
//! Input layout: byte 0 = event cap selector (16 << (b % 11) bytes), byte 1 = number of cut
//! points (mod 16), then that many cut bytes (positions scaled to the body), then the body.
#![no_main]

use iron_core::sse::{SseDecoder, SseError, SseEvent};
use libfuzzer_sys::fuzz_target;

/// Decodes `body` split at `points` (sorted, deduplicated, including 0 and `body.len()`).
fn decode(body: &[u8], points: &[usize], max: usize) -> Result<Vec<SseEvent>, SseError> {
    let mut d = SseDecoder::with_max_event_bytes(max);
    let mut out = Vec::new();
    for w in points.windows(2) {
        d.push(&body[w[0]..w[1]]);
        while let Some(ev) = d.next_event()? {
            out.push(ev);
        }
        // Memory bound: once drained, what stays buffered is one partial event within the cap.
        assert!(d.buffered() <= max, "buffered {} > cap {max}", d.buffered());
    }
    out.extend(d.finish());
    assert_eq!(d.buffered(), 0);
    assert!(d.finish().is_none());
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let [sel, n, rest @ ..] = data else {
        return;
    };
    let max = 16usize << (sel % 11);
    let n = usize::from(n % 16).min(rest.len());
    let (cuts, body) = rest.split_at(n);

    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) * body.len() / 255)
        .collect();
    points.extend([0, body.len()]);
    points.sort_unstable();
    points.dedup();

    let whole = decode(body, &[0, body.len()], max);
    let split = decode(body, &points, max);
    match (&whole, &split) {
        (Ok(w), Ok(s)) => {
            assert_eq!(w, s, "split decoding differs from whole decoding");
            let raw: Vec<u8> = w.iter().flat_map(|e| e.raw.iter().copied()).collect();
            assert_eq!(raw, body, "event bytes do not add up to the input");
            for e in w {
                assert_eq!(e.has_data || !e.data.is_empty(), e.has_data);
            }
        }
        // The whole input's last partial event is over the cap: the split input reaches the
        // same state at its last chunk (if it did not fail earlier).
        (Err(_), Ok(_)) => panic!("whole input failed but split input did not"),
        // Split input can fail earlier, on a prefix of an event that is over the cap.
        (Ok(w), Err(_)) => assert!(
            w.iter().any(|e| e.raw.len() > max),
            "split input failed although no event exceeds the cap"
        ),
        (Err(_), Err(_)) => {}
    }
});
