//! Token counting for budgets (`design.md` §6): how many tokens a request will cost before the
//! provider says so.
//!
//! Where it sits in the request flow (§3):
//! - **stage 4, budget admit**: [`Meter::estimate_prompt`] counts the prompt tokens of the
//!   parsed body; the proxy prices them with [`crate::pricing`] (plus its minimum output
//!   reservation) and reserves that from the lease.
//! - **stage 8, stream**: one [`DeltaMeter`] per response stream; [`DeltaMeter::push`] returns the
//!   output tokens of each delta (text, tool-call arguments, Anthropic `text_delta` /
//!   `input_json_delta`), charged from the reservation before the chunk is forwarded.
//! - **stage 9, settle**: not here: the provider's reported usage replaces these estimates
//!   ([`crate::pricing::TokenUsage`], [`crate::pricing::ModelPrice::cost`]).
//!
//! The tokenizer is OpenAI's `o200k_base` (GPT-4o, GPT-4.1, o-series, GPT-5). It counts exactly
//! what tiktoken counts, but runs a hand-written pre-tokenizer and an arena rank table instead
//! of tiktoken's backtracking regex (about 10× faster; see `benches/meter.rs`). The rank data
//! comes from tiktoken-rs, which embeds `o200k_base.tiktoken` in the crate: nothing is read
//! or downloaded at run time. Anthropic models use their own tokenizer, which is not public;
//! o200k counts are used for them too (Claude's tokenizer yields somewhat more tokens for the
//! same text, so Anthropic estimates are low by roughly 10–30 %; settle corrects them).
//!
//! Building a [`Meter`] takes ~0.3 s and ~10 MB (once per process, [`Meter::global`]); call
//! it at start-up so the first request does not pay for it. If it cannot be built (it always
//! can; the tests prove it) the meter degrades to a byte count, which is an upper bound of
//! any token count, so budgets stay safe.

mod bpe;
mod classes;
mod prompt;
mod split;

use std::sync::LazyLock;

use serde_json::Value;

pub use prompt::{
    ANTHROPIC_TOOL_SYSTEM_PROMPT, BLOB_TOKENS, IMAGE_TOKENS, IMAGE_TOKENS_LOW, MESSAGE_OVERHEAD, REPLY_PRIMING,
    TOOL_OVERHEAD,
};

use bpe::{Rank, RankTable};
use classes::Classes;
use prompt::Walker;
use split::Splitter;

/// Why the tokenizer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error("the embedded o200k_base vocabulary could not be loaded: {0}")]
    Vocabulary(String),
    #[error("the Unicode character classes of the o200k pattern could not be built")]
    Classes,
}

struct Tokenizer {
    classes: Classes,
    ranks: RankTable,
}

/// The token counter. Build once ([`Meter::global`]); `Send + Sync`, shared by every request.
pub struct Meter {
    tokenizer: Option<Tokenizer>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("exact", &self.is_exact())
            .field("vocabulary", &self.tokenizer.as_ref().map_or(0, |t| t.ranks.len()))
            .finish()
    }
}

static GLOBAL: LazyLock<Meter> = LazyLock::new(|| Meter::new().unwrap_or(Meter { tokenizer: None }));

/// Highest ordinary rank of o200k_base is 199,997; specials follow. Scan a little past them.
const MAX_RANK_SCAN: Rank = 201_100;

impl Meter {
    /// Builds the o200k_base tokenizer from the vocabulary embedded in tiktoken-rs.
    pub fn new() -> Result<Self, MeterError> {
        let bpe = tiktoken_rs::o200k_base().map_err(|e| MeterError::Vocabulary(e.to_string()))?;
        let specials = bpe.special_tokens();
        let mut tokens: Vec<(Vec<u8>, Rank)> = Vec::with_capacity(200_000);
        for rank in 0..MAX_RANK_SCAN {
            let Ok(bytes) = bpe.decode_bytes(&[rank]) else {
                continue;
            };
            if std::str::from_utf8(&bytes).is_ok_and(|s| specials.contains(s)) {
                continue;
            }
            tokens.push((bytes, rank));
        }
        drop(specials);
        drop(bpe);
        if tokens.len() < 199_000 {
            return Err(MeterError::Vocabulary(format!("only {} tokens", tokens.len())));
        }
        let ranks = RankTable::build(tokens.iter().map(|(b, r)| (b.as_slice(), *r)), tokens.len())
            .ok_or_else(|| MeterError::Vocabulary("rank table overflow".to_owned()))?;
        let classes = Classes::build().ok_or(MeterError::Classes)?;
        Ok(Meter { tokenizer: Some(Tokenizer { classes, ranks }) })
    }

    /// The process-wide meter, built on first use.
    pub fn global() -> &'static Meter {
        &GLOBAL
    }

    /// True when counts are o200k_base tokens; false in the degraded byte-count mode.
    pub fn is_exact(&self) -> bool {
        self.tokenizer.is_some()
    }

    /// o200k_base tokens of `text` (as tiktoken's `encode_ordinary(text).len()`: special-token
    /// markers such as `<|endoftext|>` count as the plain text they are). O(n), no allocation
    /// except for pieces of 100+ bytes that are not one token.
    #[inline]
    pub fn count_text(&self, text: &str) -> u64 {
        let Some(t) = &self.tokenizer else {
            return text.len() as u64;
        };
        let mut n: u64 = 0;
        Splitter::new(text, &t.classes).for_each(|piece| n += t.ranks.count_piece(piece));
        n
    }

    /// Prompt tokens of an OpenAI (chat completions, completions, responses, embeddings) or
    /// Anthropic (messages) request body: the tokenizer over every prompt string, plus per-
    /// message and per-tool overheads, fixed costs for images and files. See [`prompt`] for
    /// the fields read. O(body), allocation-free; ≈ 10 µs for a 1 KiB chat body.
    pub fn estimate_prompt(&self, body: &Value) -> u64 {
        Walker { count: |s: &str| self.count_text(s) }.body(body)
    }

    /// Like [`Meter::estimate_prompt`] without the tokenizer: each string counts
    /// [`fast_text_bound`] (a run-length model of the pre-tokenizer, no vocabulary).
    /// Several times cheaper, and above the o200k count for natural language and code in the
    /// tests (1.3–1.6× on English and code, 1.3–2.2× on other scripts), but not a hard
    /// bound: text crafted to be token-dense (single letters between spaces) reaches 1 token
    /// per 2 bytes. For very large bodies, where exactness is worth less than CPU.
    pub fn estimate_prompt_fast(body: &Value) -> u64 {
        Walker { count: fast_text_bound }.body(body)
    }

    #[doc(hidden)]
    pub fn split_only_tmp(&self, text: &str) -> u64 {
        let Some(t) = &self.tokenizer else { return 0 };
        let mut n: u64 = 0;
        Splitter::new(text, &t.classes).for_each(|piece| n += piece.len() as u64 & 1);
        n
    }

    #[doc(hidden)]
    pub fn lookup_only_tmp(&self, pieces: &[&[u8]]) -> u64 {
        let Some(t) = &self.tokenizer else { return 0 };
        pieces.iter().map(|p| u64::from(t.ranks.get(p).is_some())).sum()
    }

    /// A per-stream output counter using this meter.
    pub fn delta_meter(&self) -> DeltaMeter<'_> {
        DeltaMeter { meter: self, tokens: 0 }
    }
}

/// The tokenizer-free estimate of one string used by [`Meter::estimate_prompt_fast`]: one pass
/// over the bytes, modelling o200k's pieces by runs. ASCII: a run of letters costs 1 token plus
/// 1 per further 6 letters and 1 per lower→upper case change; digits 1 per 3 (exactly as the pattern groups them), plus 1 for a
/// space before them; a run of punctuation 1 per 2 characters; a run of line breaks 1; a run of
/// spaces or tabs 0 when single (it joins the next word), else 1 per 16. Other scripts, per
/// character: ⅔ for 2-byte characters (accented Latin, Greek, Cyrillic, Arabic, Hebrew), ½ for
/// U+0800–U+2FFF (Indic, Thai, punctuation), 1 from U+3000 (CJK, kana, Hangul), 2 above U+FFFF
/// (emoji).
pub fn fast_text_bound(s: &str) -> u64 {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Run {
        None,
        Letter,
        Digit,
        Space,
        Newline,
        Punct,
        Other,
    }
    let mut tokens: u64 = 0;
    let (mut two, mut three_low, mut three_high, mut four) = (0u64, 0u64, 0u64, 0u64);
    let mut run = Run::None;
    let mut len: u64 = 0;
    let mut prev_space = false;
    let mut lower = false;
    for &b in s.as_bytes() {
        let class = match b {
            b'a'..=b'z' | b'A'..=b'Z' => Run::Letter,
            b'0'..=b'9' => Run::Digit,
            b' ' | b'\t' => Run::Space,
            b'\n' | b'\r' => Run::Newline,
            0x00..=0x7F => Run::Punct,
            0xC0..=0xDF => {
                two += 1;
                Run::Other
            }
            0xE0..=0xE2 => {
                three_low += 1;
                Run::Other
            }
            0xE3..=0xEF => {
                three_high += 1;
                Run::Other
            }
            0xF0..=0xFF => {
                four += 1;
                Run::Other
            }
            // UTF-8 continuation byte: part of the current character.
            _ => continue,
        };
        // Lower → upper starts a new piece (`camelCase` is `camel`, `Case`).
        let case_break = lower && b.is_ascii_uppercase();
        lower = b.is_ascii_lowercase();
        if class == run && !case_break {
            len += 1;
        } else {
            len = 0;
            prev_space = run == Run::Space;
        }
        run = class;
        tokens += match class {
            Run::Letter => u64::from(len % 6 == 0),
            Run::Digit if len == 0 => 1 + u64::from(prev_space),
            Run::Digit => u64::from(len % 3 == 0),
            Run::Punct => u64::from(len % 2 == 0),
            Run::Newline => u64::from(len == 0),
            Run::Space => u64::from(len % 16 == 1),
            Run::Other | Run::None => 0,
        };
    }
    tokens + (two * 2).div_ceil(3) + three_low.div_ceil(2) + three_high + 2 * four
}

/// Output-token counter of one streamed response (proxy stage 8).
///
/// [`DeltaMeter::push`] counts each delta on its own. A word split across two deltas
/// (`" Hel"`, `"lo"`) counts 2 where the whole text counts 1, so the sum runs a little above
/// the provider's count; OpenAI and Anthropic send deltas at token boundaries, where the two
/// agree. Measured on English prose cut into random 4–20-byte deltas: +28 % over the whole-text
/// count; on token-aligned deltas: exact (`tests/meter_delta.rs`). At stream end the provider's
/// usage replaces the running total. Cost: one [`Meter::count_text`] of the delta, ≈ 50–150 ns.
#[derive(Debug, Clone)]
pub struct DeltaMeter<'m> {
    meter: &'m Meter,
    tokens: u64,
}

impl DeltaMeter<'static> {
    /// A counter using [`Meter::global`].
    pub fn new() -> Self {
        Meter::global().delta_meter()
    }
}

impl Default for DeltaMeter<'static> {
    fn default() -> Self {
        Self::new()
    }
}

impl DeltaMeter<'_> {
    /// Tokens to charge for `delta`; adds them to the running total.
    #[inline]
    pub fn push(&mut self, delta: &str) -> u64 {
        let n = self.meter.count_text(delta);
        self.tokens = self.tokens.saturating_add(n);
        n
    }

    /// Tokens counted so far on this stream.
    pub fn total(&self) -> u64 {
        self.tokens
    }
}
