//! Character classes of the o200k pre-tokenizer pattern, as bit flags per code point.
//!
//! The pattern (tiktoken's `O200K_BASE_PAT_STR`) uses `\p{L}`, `\p{N}`, `\s` and two letter
//! groupings, "upper-ish" `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` and "lower-ish"
//! `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`. The ranges come from `regex-syntax`, i.e. from the same Unicode
//! tables the `regex` engine behind tiktoken matches with. ASCII is a constant table, the rest
//! of the Basic Multilingual Plane a 64 KiB table, astral code points a binary search.

use regex_syntax::hir::{Class, HirKind};

/// `\s` (Unicode White_Space).
pub(crate) const WS: u8 = 1;
/// `\p{L}`.
pub(crate) const LETTER: u8 = 2;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`.
pub(crate) const UPPER: u8 = 4;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
pub(crate) const LOWER: u8 = 8;
/// `\p{N}`.
pub(crate) const NUM: u8 = 16;
/// `\r` or `\n`.
pub(crate) const NL: u8 = 32;

const fn ascii_table() -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = match c {
            b'\n' | b'\r' => WS | NL,
            b'\t' | 0x0B | 0x0C | b' ' => WS,
            b'A'..=b'Z' => LETTER | UPPER,
            b'a'..=b'z' => LETTER | LOWER,
            b'0'..=b'9' => NUM,
            _ => 0,
        };
        b += 1;
    }
    t
}

pub(crate) static ASCII: [u8; 128] = ascii_table();

/// Flags of every code point.
pub(crate) struct Classes {
    bmp: Vec<u8>,
    /// Sorted, disjoint `(start, end inclusive, flags)` ranges above U+FFFF.
    astral: Vec<(u32, u32, u8)>,
}

const PATTERNS: [(&str, u8); 5] = [
    (r"\s", WS),
    (r"\p{L}", LETTER),
    (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UPPER),
    (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LOWER),
    (r"\p{N}", NUM),
];

impl Classes {
    /// `None` only if `regex-syntax` was built without its Unicode tables.
    pub(crate) fn build() -> Option<Self> {
        let mut bmp = vec![0u8; 0x1_0000];
        let mut astral_points: Vec<(u32, u32, u8)> = Vec::new();
        for (pattern, flag) in PATTERNS {
            let hir = regex_syntax::ParserBuilder::new()
                .build()
                .parse(pattern)
                .ok()?;
            let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
                return None;
            };
            for r in class.ranges() {
                let (start, end) = (u32::from(r.start()), u32::from(r.end()));
                for cp in start..=end.min(0xFFFF) {
                    bmp[cp as usize] |= flag;
                }
                if end > 0xFFFF {
                    astral_points.push((start.max(0x1_0000), end, flag));
                }
            }
        }
        bmp[usize::from(b'\n')] |= NL;
        bmp[usize::from(b'\r')] |= NL;
        // The ASCII part must agree with the constant table used on the fast path.
        if bmp[..128] != ASCII[..] {
            return None;
        }
        Some(Classes {
            bmp,
            astral: merge_ranges(astral_points),
        })
    }

    #[inline]
    pub(crate) fn of(&self, c: char) -> u8 {
        let cp = u32::from(c);
        if cp < 0x1_0000 {
            return self.bmp[cp as usize];
        }
        match self.astral.binary_search_by(|&(s, e, _)| {
            if e < cp {
                std::cmp::Ordering::Less
            } else if s > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => self.astral[i].2,
            Err(_) => 0,
        }
    }
}

/// Overlapping flagged ranges → disjoint ranges with the union of flags.
fn merge_ranges(ranges: Vec<(u32, u32, u8)>) -> Vec<(u32, u32, u8)> {
    let mut bounds: Vec<u32> = Vec::with_capacity(ranges.len() * 2);
    for &(s, e, _) in &ranges {
        bounds.push(s);
        bounds.push(e.saturating_add(1));
    }
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(u32, u32, u8)> = Vec::new();
    for w in bounds.windows(2) {
        let (s, e) = (w[0], w[1] - 1);
        let flags = ranges
            .iter()
            .filter(|&&(rs, re, _)| rs <= s && e <= re)
            .fold(0, |acc, r| acc | r.2);
        if flags == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 + 1 == s && last.2 == flags => last.1 = e,
            _ => out.push((s, e, flags)),
        }
    }
    out
}
