//! Issue 5 ("no allocation when nothing matches"): the PII engine on clean text, as stage 5
//! (request redaction) and stage 8 (stream redaction) run it on every request, must not touch
//! the heap. `allocation-counter` installs a counting global allocator in this test binary
//! only (it is the only one that uses the crate) and counts what the current thread allocates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use iron_core::pii::{
    Detections, Detector, Direction, PiiPolicy, PiiType, StreamRedactor, Vault, redact_text,
};

/// Allocations (including reallocations) made by this thread while running `f`.
fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let mut r = None;
    let info = allocation_counter::measure(|| r = Some(f()));
    (info.count_total, r.unwrap())
}

/// Clean English prose with the near misses real text is full of: every trigger byte of the
/// detector (digits, `@`, `:`, `-`, `_`, `[`, `J`, `A`), years, dates, times, version
/// strings, order numbers, percentages, a UUID, a hex hash, short digit groups, handles.
const PROSE: &str = "The committee met on Tuesday, 2024-05-17, at 10:30 to review the proposal \
that had been circulated the week before. After a long and occasionally heated discussion, most \
members agreed that the plan was sound, although several raised concerns about the timeline and \
the cost of the second phase (about 12% over the estimate of March 3). A member who had worked on \
a similar project in 2019 pointed out that the estimates for phase 2 looked optimistic: in her \
experience, the hardest part was not the technical work but getting the long-term schedule agreed. \
James asked whether version 1.24.3 of the client [see note 4] would still be supported; Anna said \
release v2.0.1-rc.2 replaces it in June and the config key max_retry_count keeps its default of 3. \
Order 4417-2290 shipped on 17/05/2024 and order 88213 is due by Q3; ticket JIRA-5521 tracks both. \
The build id 3f2a9c1e-7b4d-4e8a-9c0f-1d2e3f4a5b6c and the commit 9fceb02d0ae598e95dc970b74767f19372d61af8 \
were attached. Room 101, floor 7, extension 4432 (cc @ops and docs@intranet). The vote was 7-2 with one abstention; the meeting \
ended at 11:45 and the minutes were sent the same afternoon. ";

/// About 64 KiB of [`PROSE`].
fn prose_64k() -> String {
    let mut s = String::with_capacity((64 << 10) + PROSE.len());
    while s.len() < 64 << 10 {
        s.push_str(PROSE);
    }
    s
}

/// `text` in consecutive deltas of about `n` bytes (cut at char boundaries).
fn deltas(text: &str, n: usize) -> Vec<&str> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let mut j = (i + n).min(text.len());
        while !text.is_char_boundary(j) {
            j += 1;
        }
        v.push(&text[i..j]);
        i = j;
    }
    v
}

#[test]
fn the_prose_is_clean_and_the_counter_counts() {
    let (n, s) = allocations(|| String::from("x"));
    assert_eq!(
        (n, s.as_str()),
        (1, "x"),
        "the counting allocator is installed"
    );
    let text = prose_64k();
    assert!(text.len() >= 64 << 10);
    assert_eq!(Detector::global().find_iter(&text).count(), 0);
}

#[test]
fn scanning_clean_prose_does_not_allocate() {
    let text = prose_64k();
    let detector = Detector::global();
    // Warm-up: builds the global detector (allocates once per process).
    assert_eq!(detector.find_iter(&text).count(), 0);

    let (n, found) = allocations(|| detector.find_iter(&text).count());
    assert_eq!(found, 0);
    assert_eq!(
        n, 0,
        "Detector::find_iter over 64 KiB of clean prose allocated"
    );

    // The whole-text entry point of stages 5 and 8, both directions.
    let policy = PiiPolicy::default();
    let mut vault = Vault::new();
    vault.number_for(PiiType::Email, "alice@example.com");
    let mut det = Detections::new();
    for dir in [Direction::Request, Direction::Response] {
        let (n, r) = allocations(|| redact_text(&text, &policy, dir, &mut vault, &mut det));
        assert_eq!(r, Ok(None), "{dir:?}: clean text is returned unchanged");
        assert_eq!(n, 0, "redact_text({dir:?}) over clean prose allocated");
    }
    assert!(det.is_empty());
}

#[test]
fn streaming_clean_deltas_does_not_allocate() {
    let text = prose_64k();
    let mut vault = Vault::new();
    vault.number_for(PiiType::Email, "alice@example.com");
    let vault = Arc::new(vault);
    let policy = Arc::new(PiiPolicy::default());
    for size in [1, 7, 20, 333] {
        let pieces = deltas(&text, size);
        let mut s = StreamRedactor::new(policy.clone(), vault.clone());
        let mut out = String::with_capacity(text.len() + 1024);
        let mut det = Detections::new();
        // Warm-up: one pass grows the redactor's hold-back buffer and thread list to their
        // working size (what a long-lived stream reaches after its first deltas).
        for d in &pieces {
            s.push(d, &mut out, &mut det).unwrap();
        }
        let held = text.len() - s.pending_len();
        out.clear();
        let (n, ()) = allocations(|| {
            for d in &pieces {
                s.push(d, &mut out, &mut det).unwrap();
            }
        });
        assert_eq!(
            n,
            0,
            "{} clean {size}-byte deltas through StreamRedactor::push allocated",
            pieces.len()
        );
        s.finish(&mut out, &mut det).unwrap();
        // The tail held back at the end of the warm-up pass comes out first.
        assert_eq!(
            out,
            format!("{}{text}", &text[held..]),
            "{size}-byte deltas: clean text passes unchanged"
        );
        assert!(det.is_empty());
    }
}
