//! The o200k pre-tokenizer, hand-written: splits text into the pieces that tiktoken's regex
//!
//! ```text
//! [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! |\p{N}{1,3}
//! | ?[^\s\p{L}\p{N}]+[\r\n/]*
//! |\s*[\r\n]+
//! |\s+(?!\S)
//! |\s+
//! ```
//!
//! finds (leftmost-first, with the backtracking a regex engine would do), without a regex
//! engine: one forward scan, ASCII through a constant table. Tested for identical token counts
//! against tiktoken-rs on random text over every character class (`tests/meter_tokenizer.rs`).

use super::classes::{ASCII, Classes, LETTER, LOWER, NL, NUM, UPPER, WS};

/// `[^\r\n\p{L}\p{N}]`: the optional leading character of a word.
#[inline]
fn is_prefix(f: u8) -> bool {
    f & (NL | LETTER | NUM) == 0
}

/// `[^\s\p{L}\p{N}]`: punctuation, symbols, marks, controls.
#[inline]
fn is_symbol(f: u8) -> bool {
    f & (WS | LETTER | NUM) == 0
}

pub(crate) struct Splitter<'a> {
    s: &'a str,
    b: &'a [u8],
    classes: &'a Classes,
}

impl<'a> Splitter<'a> {
    pub(crate) fn new(s: &'a str, classes: &'a Classes) -> Self {
        Splitter {
            s,
            b: s.as_bytes(),
            classes,
        }
    }

    /// Calls `f` with every piece, in order. The pieces tile the text exactly.
    #[inline]
    pub(crate) fn for_each(&self, mut f: impl FnMut(&'a [u8])) {
        let mut p = 0;
        while p < self.b.len() {
            let e = self.piece_end(p);
            f(&self.b[p..e]);
            p = e;
        }
    }

    /// Flags and byte length of the character at byte offset `p` (a char boundary).
    #[inline(always)]
    fn at(&self, p: usize) -> Option<(u8, usize, char)> {
        let byte = *self.b.get(p)?;
        if byte < 0x80 {
            return Some((ASCII[usize::from(byte)], 1, char::from(byte)));
        }
        self.at_non_ascii(p)
    }

    #[cold]
    #[inline(never)]
    fn at_non_ascii(&self, p: usize) -> Option<(u8, usize, char)> {
        let c = self.s.get(p..)?.chars().next()?;
        Some((self.classes.of(c), c.len_utf8(), c))
    }

    /// End of the run of characters whose flags satisfy `pred`, from `p`.
    #[inline(always)]
    fn run(&self, mut p: usize, pred: impl Fn(u8) -> bool) -> usize {
        while let Some((f, len, _)) = self.at(p) {
            if !pred(f) {
                break;
            }
            p += len;
        }
        p
    }

    /// End of the piece starting at `p` (`p` < len, a char boundary). Always > `p`.
    #[inline(always)]
    fn piece_end(&self, p: usize) -> usize {
        self.ascii_word(p)
            .unwrap_or_else(|| self.piece_end_general(p))
    }

    /// The common case on ASCII text, decided by ASCII bytes alone: an optional prefix
    /// character and a run of letters (alternatives 1 and 2), or digits (alternative 3).
    /// `None` whenever a non-ASCII character could change the answer; the general scan decides.
    #[inline(always)]
    fn ascii_word(&self, p: usize) -> Option<usize> {
        let b = self.b;
        let c0 = *b.get(p)?;
        if c0.is_ascii_digit() {
            let mut e = p + 1;
            while e < p + 3 && b.get(e).is_some_and(u8::is_ascii_digit) {
                e += 1;
            }
            // A non-ASCII digit could extend a run of one or two.
            return (e == p + 3 || b.get(e).is_none_or(u8::is_ascii)).then_some(e);
        }
        let q = if c0.is_ascii_alphabetic() {
            p
        } else if c0 < 0x80
            && is_prefix(ASCII[usize::from(c0)])
            && b.get(p + 1).is_some_and(u8::is_ascii_alphabetic)
        {
            p + 1
        } else {
            return None;
        };
        // ASCII upper and lower letters are disjoint classes, so no backtracking: alternative 1
        // (`X* Y+`) if a lowercase run follows the uppercase run, else alternative 2 (`X+`).
        let mut e = q;
        while b.get(e).is_some_and(u8::is_ascii_uppercase) {
            e += 1;
        }
        while b.get(e).is_some_and(u8::is_ascii_lowercase) {
            e += 1;
        }
        if b.get(e).is_some_and(|&c| c >= 0x80) {
            return None;
        }
        Some(self.contraction(e))
    }

    #[inline(never)]
    fn piece_end_general(&self, p: usize) -> usize {
        let Some((f0, l0, c0)) = self.at(p) else {
            return self.b.len();
        };
        // Alternatives 1 and 2: words.
        if let Some(e) = self.word(p, f0, l0) {
            return e;
        }
        // Alternative 3: up to three digits.
        if f0 & NUM != 0 {
            let mut q = p + l0;
            for _ in 0..2 {
                match self.at(q) {
                    Some((f, len, _)) if f & NUM != 0 => q += len,
                    _ => break,
                }
            }
            return q;
        }
        // Alternative 4: ` ?[^\s\p{L}\p{N}]+[\r\n/]*`.
        let symbols = if c0 == ' ' {
            match self.at(p + 1) {
                Some((f, _, _)) if is_symbol(f) => Some(p + 1),
                _ => None,
            }
        } else if is_symbol(f0) {
            Some(p)
        } else {
            None
        };
        if let Some(q) = symbols {
            let q = self.run(q, is_symbol);
            let mut e = q;
            while let Some(&byte) = self.b.get(e) {
                if !matches!(byte, b'\r' | b'\n' | b'/') {
                    break;
                }
                e += 1;
            }
            return e;
        }
        // Alternatives 5–7: whitespace.
        let mut e = p;
        let mut last_newline_end = None;
        let mut last_start = p;
        while let Some((f, len, _)) = self.at(e) {
            if f & WS == 0 {
                break;
            }
            if f & NL != 0 {
                last_newline_end = Some(e + len);
            }
            last_start = e;
            e += len;
        }
        if e == p {
            // Unreachable: every character is a letter, digit, symbol or space. Make progress.
            return p + l0;
        }
        if let Some(n) = last_newline_end {
            // `\s*[\r\n]+`: up to and including the last line break of the run.
            return n;
        }
        if e < self.b.len() && last_start > p {
            // `\s+(?!\S)`: leave the last space to the word that follows.
            return last_start;
        }
        e
    }

    /// Alternatives 1 and 2, with the optional prefix character backtracked as a regex would.
    #[inline]
    fn word(&self, p: usize, f0: u8, l0: usize) -> Option<usize> {
        let prefixed = is_prefix(f0);
        // 1: `P? X* Y+ C?`
        if prefixed && let Some(e) = self.upper_lower(p + l0) {
            return Some(self.contraction(e));
        }
        if let Some(e) = self.upper_lower(p) {
            return Some(self.contraction(e));
        }
        // 2: `P? X+ Y* C?`
        let start = if prefixed && matches!(self.at(p + l0), Some((f, _, _)) if f & UPPER != 0) {
            p + l0
        } else if f0 & UPPER != 0 {
            p
        } else {
            return None;
        };
        let a = self.run(start, |f| f & UPPER != 0);
        let b = self.run(a, |f| f & LOWER != 0);
        Some(self.contraction(b))
    }

    /// `X* Y+` from `q` (X upper-ish, Y lower-ish; the classes overlap on Lm, Lo and M).
    #[inline]
    fn upper_lower(&self, q: usize) -> Option<usize> {
        let mut a = q;
        let mut last_lower = None;
        while let Some((f, len, _)) = self.at(a) {
            if f & UPPER == 0 {
                break;
            }
            if f & LOWER != 0 {
                last_lower = Some(a);
            }
            a += len;
        }
        let j = match self.at(a) {
            Some((f, _, _)) if f & LOWER != 0 => a,
            // Backtrack `X*` to its last character that is also in Y.
            _ => last_lower?,
        };
        Some(self.run(j, |f| f & LOWER != 0))
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `e`.
    #[inline]
    fn contraction(&self, e: usize) -> usize {
        if self.b.get(e) != Some(&b'\'') {
            return e;
        }
        let next = |i: usize| self.b.get(e + i).map(u8::to_ascii_lowercase);
        match next(1) {
            Some(b's' | b't' | b'm' | b'd') => e + 2,
            Some(b'r' | b'v') if next(2) == Some(b'e') => e + 3,
            Some(b'l') if next(2) == Some(b'l') => e + 3,
            // U+017F LATIN SMALL LETTER LONG S case-folds to `s`.
            Some(0xC5) if self.b.get(e + 2) == Some(&0xBF) => e + 3,
            _ => e,
        }
    }
}
