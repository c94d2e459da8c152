//! Streaming redaction of an answer (stage 8): text deltas go in, text that can no longer
//! change comes out. Placeholders are restored and new PII follows the response policy in the
//! same pass as [`super::redact_text`], and for every split of a text into deltas the
//! concatenated output equals the whole-text output.
//!
//! # Hold-back window
//! A position is held back only while some pattern could still match there: each possible
//! start is followed byte by byte through a match-all DFA of the same patterns (anchored), and
//! the earliest start whose automaton is not yet dead is where output stops. Prose is held
//! back by about the current word; a number or an address until it is complete. Because every pattern is bounded, the window never exceeds
//! [`MAX_HEAD_LEN`] bytes (640), except while a PEM private-key block (up to
//! [`PEM_MAX`] = 16 KiB) or a JWT (up to [`JWT_MAX`] = 8 KiB) is still open: those are held
//! until their end is seen (or the bound is reached), so a key never leaks half-redacted.
//! Output is cut only at ASCII bytes, so UTF-8 is never split.
//!
//! A `block` action in the answer ends the stream at the first blocked value (`push` returns
//! [`Blocked`] naming that type; the whole-text functions name every blocked type).
//!
//! [`PEM_MAX`]: crate::pii::PEM_MAX
//! [`JWT_MAX`]: crate::pii::JWT_MAX
//! [`MAX_HEAD_LEN`]: crate::pii::MAX_HEAD_LEN

use std::sync::Arc;

use regex_automata::util::primitives::StateID;

use super::detector::{Candidates, Detector, Step};
use super::redact::{Blocked, Decision, Detections, Rewriter, VaultAccess};
use super::types::{Direction, PiiPolicy};
use super::vault::Vault;

/// A possible match start that is still undecided, with its match-all DFA state.
#[derive(Clone, Copy, Debug)]
struct Thread {
    pos: usize,
    state: StateID,
}

/// Redacts one stream of answer text (one text channel: e.g. one choice's `delta.content`).
#[derive(Debug)]
pub struct StreamRedactor {
    detector: &'static Detector,
    policy: Arc<PiiPolicy>,
    vault: Arc<Vault>,
    /// `buf[..ctx]` was emitted (kept as look-behind context, one char); `buf[ctx..]` is held.
    buf: String,
    ctx: usize,
    threads: Vec<Thread>,
    failed: Option<Blocked>,
}

impl StreamRedactor {
    /// A redactor for answer text, using the global detector. `vault` holds the placeholders
    /// issued for this request (it is only read).
    pub fn new(policy: Arc<PiiPolicy>, vault: Arc<Vault>) -> Self {
        StreamRedactor::with_detector(Detector::global(), policy, vault)
    }

    /// [`StreamRedactor::new`] with an explicit detector.
    pub fn with_detector(
        detector: &'static Detector,
        policy: Arc<PiiPolicy>,
        vault: Arc<Vault>,
    ) -> Self {
        StreamRedactor {
            detector,
            policy,
            vault,
            buf: String::new(),
            ctx: 0,
            threads: Vec::new(),
            failed: None,
        }
    }

    /// Feed one delta; append to `out` whatever is final. On `Err` the stream must be ended
    /// (the error repeats on later calls); output already appended stays valid.
    pub fn push(
        &mut self,
        delta: &str,
        out: &mut String,
        det: &mut Detections,
    ) -> Result<(), Blocked> {
        if let Some(b) = &self.failed {
            return Err(b.clone());
        }
        if delta.is_empty() {
            return Ok(());
        }
        let old = self.buf.len();
        self.buf.push_str(delta);
        self.advance(old);
        let hold = self
            .threads
            .iter()
            .map(|t| t.pos)
            .min()
            .unwrap_or(self.buf.len());
        let r = self.emit(hold, false, out, det);
        self.compact();
        r
    }

    /// End of stream: append everything still held (decided as whole-text would).
    pub fn finish(&mut self, out: &mut String, det: &mut Detections) -> Result<(), Blocked> {
        if let Some(b) = &self.failed {
            return Err(b.clone());
        }
        let r = self.emit(self.buf.len(), true, out, det);
        self.buf.clear();
        self.ctx = 0;
        self.threads.clear();
        r
    }

    /// Bytes received but not yet emitted.
    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.ctx
    }

    /// Step the live automata over `buf[old..]`, starting new ones where a pattern may begin.
    fn advance(&mut self, old: usize) {
        let det = self.detector;
        let bytes = self.buf.as_bytes();
        let threads = &mut self.threads;
        for (i, &b) in bytes.iter().enumerate().skip(old) {
            threads.retain_mut(|t| match det.live_step(t.state, b) {
                Some(n) => {
                    t.state = n;
                    true
                }
                None => false,
            });
            // Two starts in the same automaton state share their future: keep the earlier.
            if threads.len() > 1 {
                let mut k = 1;
                while k < threads.len() {
                    let s = threads[k].state;
                    if threads[..k].iter().any(|t| t.state == s) {
                        threads.remove(k);
                    } else {
                        k += 1;
                    }
                }
            }
            let prev = i.checked_sub(1).map(|p| bytes[p]);
            if let Some(state) = det.live_start(prev, b)
                && !threads.iter().any(|t| t.state == state)
            {
                threads.push(Thread { pos: i, state });
            }
        }
    }

    /// Emit `buf[ctx..hold]`, rewriting the hits that start before `hold`.
    fn emit(
        &mut self,
        hold: usize,
        eof: bool,
        out: &mut String,
        det: &mut Detections,
    ) -> Result<(), Blocked> {
        let rw = Rewriter {
            policy: &self.policy,
            dir: Direction::Response,
        };
        let mut vault = VaultAccess::Read(&self.vault);
        let hay = self.buf.as_bytes();
        let mut cands = Candidates::new(self.ctx);
        let mut pos = self.ctx;
        loop {
            match self
                .detector
                .next_hit(hay, &mut cands, pos, hold, eof, Some(&self.vault))
            {
                Step::Hit(h) => {
                    out.push_str(&self.buf[pos..h.start]);
                    let value = &self.buf[h.start..h.end];
                    match rw.decide(&h, det) {
                        Decision::Keep => out.push_str(value),
                        Decision::Replace => rw.write(&h, value, &mut vault, out),
                        Decision::Block(kind) => {
                            let mut b = Blocked::new(Direction::Response);
                            b.add(kind);
                            self.ctx = h.end;
                            self.failed = Some(b.clone());
                            return Err(b);
                        }
                    }
                    pos = h.end;
                }
                Step::Pending(s) => {
                    out.push_str(&self.buf[pos..s]);
                    pos = s;
                    break;
                }
                Step::Done => {
                    if pos < hold {
                        out.push_str(&self.buf[pos..hold]);
                        pos = hold;
                    }
                    break;
                }
            }
        }
        self.ctx = pos;
        Ok(())
    }

    /// Drop emitted text except one char of look-behind context.
    fn compact(&mut self) {
        let ctx = self.ctx;
        if self.threads.iter().any(|t| t.pos < ctx) {
            // A hit ended past a live start. Starts merged into that thread (same automaton
            // state) are lost with it, so rebuild the live set from the held text.
            self.threads.clear();
            self.advance(ctx);
        }
        if ctx == 0 {
            return;
        }
        let mut keep = ctx - 1;
        while !self.buf.is_char_boundary(keep) {
            keep -= 1;
        }
        if keep > 0 {
            self.buf.drain(..keep);
            self.ctx -= keep;
            for t in &mut self.threads {
                t.pos -= keep;
            }
        }
    }
}
