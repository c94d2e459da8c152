//! The detector: all patterns of every type plus the `[TYPE_n]` placeholder form compiled
//! into one multi-pattern `regex_automata` DFA, and the validators of [`super::validate`].
//! Built once per process ([`Detector::global`], about 0.1 s and 8 MB) and shared by stage 5
//! (request redaction) and stage 8 (response restore / stream redaction).
//!
//! # Engine choice
//! The patterns are compiled ahead of time into two fully determinised `dfa::dense` automata
//! (leftmost-first for matching, match-all for the stream hold-back) instead of a
//! `meta::Regex`; both come from the same pattern table and regex-automata compiler. Dense
//! DFAs need no per-thread cache or pool (the detector is a plain `Sync` value), and an
//! anchored search per candidate measured fastest on this project's 2-core machine: about
//! 70–95 ns per PII-dense candidate with the hand-rolled walk below, against 100–140 ns for
//! `meta::Regex` and 100–115 ns for the lazy DFA. Minimising the DFAs would save 25 % of
//! their 8 MB but costs about 8 s of start-up, so they are not minimised. Unicode is off:
//! every class and word boundary is ASCII.
//!
//! # How a text is scanned
//! The result is defined position by position, left to right: at a position `s` the patterns
//! are tried anchored at `s` in priority order (placeholder, secrets, e-mail, IBAN, card, SSN,
//! IP, phone); the first whose regex matches *and* whose validator accepts wins, the scan
//! continues at its end; if none does, the scan moves to the next position. Every pattern
//! (except the placeholder) starts with `\b{start-half}` and all of them are bounded, so the
//! answer at `s` depends only on the byte before `s` and at most [`MAX_HEAD_LEN`] bytes after
//! it (plus the explicit PEM/JWT bounds). That locality is what the streaming redactor relies on.
//!
//! To be fast on clean text the scan does not run the regex everywhere: a vectorisable
//! byte-class scan finds *trigger* bytes (digits, `@`, `:`, `[`, `-`, `_`, `J`, `A`), and
//! every pattern contains one at a fixed small distance from its start (an e-mail's `@` within
//! 64 bytes). Each trigger proposes the few start positions it could belong to; only those get
//! an anchored DFA search. A property test compares this against trying every position.

use std::sync::LazyLock;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind, PatternID};

use super::types::PiiType;
use super::validate::{self, Verdict, is_word};
use super::vault::Vault;

/// Upper bound on the length of any pattern's regex part (the e-mail pattern is the longest:
/// 64 + 1 + 8 × 64 + 24 bytes). PEM blocks and JWTs continue past their regex head up to
/// [`validate::PEM_MAX`] / [`validate::JWT_MAX`].
pub const MAX_HEAD_LEN: usize = 640;

/// Size limit of each compiled DFA (they measure about 3.5 and 4.5 MB).
const DFA_SIZE_LIMIT: usize = 64 << 20;

/// The longest distance from a match start to its trigger byte (an e-mail's `@`).
const MAX_BACK: usize = 64;

const SH: &str = r"\b{start-half}";
const EH: &str = r"\b{end-half}";

/// How a pattern's candidate is confirmed. The order of [`PATTERNS`] is the priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Placeholder,
    Pem,
    Anthropic,
    OpenAi,
    Aws,
    GitHub,
    Slack,
    Jwt,
    Email,
    Iban,
    Card,
    Ssn,
    Ipv4,
    Ipv6,
    PhoneNanp,
    PhoneIntl,
    PhoneFr,
    PhoneNational,
}

impl Check {
    const fn kind(self) -> PiiType {
        match self {
            Check::Placeholder
            | Check::Pem
            | Check::Anthropic
            | Check::OpenAi
            | Check::Aws
            | Check::GitHub
            | Check::Slack
            | Check::Jwt => PiiType::Secret,
            Check::Email => PiiType::Email,
            Check::Iban => PiiType::Iban,
            Check::Card => PiiType::CreditCard,
            Check::Ssn => PiiType::UsSsn,
            Check::Ipv4 | Check::Ipv6 => PiiType::IpAddress,
            Check::PhoneNanp | Check::PhoneIntl | Check::PhoneFr | Check::PhoneNational => {
                PiiType::Phone
            }
        }
    }
}

/// The pattern table, in priority order. Compiled with Unicode off: every class is ASCII and
/// `\b{start-half}`/`\b{end-half}` are ASCII word-boundary halves.
fn patterns() -> Vec<(Check, String)> {
    let p = |c: Check, body: &str| (c, format!("{SH}{body}"));
    let pe = |c: Check, body: &str| (c, format!("{SH}{body}{EH}"));
    vec![
        (
            Check::Placeholder,
            r"\[(?:EMAIL|PHONE|CREDIT_CARD|US_SSN|IBAN|IP_ADDRESS|SECRET)_[1-9][0-9]{0,6}\]".into(),
        ),
        p(
            Check::Pem,
            r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY-----",
        ),
        p(Check::Anthropic, r"sk-ant-[A-Za-z0-9_-]{20,200}"),
        p(
            Check::OpenAi,
            r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}",
        ),
        pe(Check::Aws, r"(?:AKIA|ASIA)[A-Z0-9]{16}"),
        pe(
            Check::GitHub,
            r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,242})",
        ),
        p(Check::Slack, r"xox[abposre]-[A-Za-z0-9-]{10,250}"),
        p(Check::Jwt, r"eyJ[A-Za-z0-9_-]{4}"),
        pe(
            Check::Email,
            r"[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}",
        ),
        pe(Check::Iban, r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}"),
        pe(Check::Card, r"[0-9](?:[ -]?[0-9]){12,18}"),
        pe(
            Check::Ssn,
            r"(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4})",
        ),
        p(
            Check::Ipv4,
            &format!(r"(?:[0-9]{{1,3}}\.){{3}}[0-9]{{1,3}}(?:\.[0-9]|{EH})"),
        ),
        pe(
            Check::Ipv6,
            r"(?:[0-9A-Fa-f]{1,4}:|::)(?:[0-9A-Fa-f:]{0,32}[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f:]{1,38})",
        ),
        pe(
            Check::PhoneNanp,
            r"(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}",
        ),
        pe(
            Check::PhoneIntl,
            r"\+[1-9][0-9]{0,3}(?:[ .-]?\(0\))?(?:[ .-]?[0-9]{1,6}){1,7}",
        ),
        pe(Check::PhoneFr, r"0[1-9](?:[ .][0-9]{2}){4}"),
        pe(
            Check::PhoneNational,
            r"0[1-9][0-9]{1,4}[ -][0-9]{3,4}(?:[ -]?[0-9]{3,4})?",
        ),
    ]
}

/// Error building the detector (only possible if the pattern table itself is broken).
#[derive(Debug, thiserror::Error)]
pub enum DetectorBuildError {
    /// The multi-pattern DFA did not compile (or exceeded its size limit).
    #[error("PII automaton does not compile: {0}")]
    Dfa(Box<dense::BuildError>),
}

/// A validated detection: `text[start..end]` is PII of type `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    /// What was found.
    pub kind: PiiType,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

/// An internal hit: a PII match, or a placeholder the vault knows (`placeholder = Some(n)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub kind: PiiType,
    pub start: usize,
    pub end: usize,
    pub placeholder: Option<u32>,
}

pub(crate) enum Step {
    /// The next hit at or after `from` (and before `limit`).
    Hit(Hit),
    /// A pattern at this position needs more text to be decided (streaming only).
    Pending(usize),
    /// No hit starts in `from..limit`.
    Done,
}

enum Eval {
    Hit(Hit),
    Pending,
    None,
}

/// The compiled PII detector. Build cost (about 0.1 s in release builds) is paid once; it is
/// `Send + Sync` and shared by every request through [`Detector::global`].
pub struct Detector {
    checks: Vec<Check>,
    /// Per pattern: bytes a match can start with (fallback searches skip the others).
    first: Vec<[bool; 256]>,
    /// Union of `first`: bytes where a stream hold-back thread may start.
    starts: [bool; 256],
    /// Leftmost-first, anchored (also per pattern): "which pattern matches at `s`, to where".
    search: dense::DFA<Vec<u32>>,
    /// Match-all, anchored: "could any pattern still match at `s`" (stream hold-back).
    live: dense::DFA<Vec<u32>>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("patterns", &self.checks.len())
            .finish_non_exhaustive()
    }
}

static GLOBAL: LazyLock<Detector> = LazyLock::new(|| {
    #[allow(
        clippy::expect_used,
        reason = "the pattern table is a compile-time constant; `patterns_compile` tests it"
    )]
    Detector::new().expect("built-in PII patterns compile")
});

impl Detector {
    /// Compile the built-in patterns.
    pub fn new() -> Result<Self, DetectorBuildError> {
        let table = patterns();
        let checks: Vec<Check> = table.iter().map(|(c, _)| *c).collect();
        let pats: Vec<&str> = table.iter().map(|(_, p)| p.as_str()).collect();
        let syn = syntax::Config::new().unicode(false).utf8(true);
        let build = |kind: MatchKind, per_pattern: bool| {
            dense::Builder::new()
                .syntax(syn)
                .configure(
                    dense::Config::new()
                        .start_kind(StartKind::Anchored)
                        .starts_for_each_pattern(per_pattern)
                        .match_kind(kind)
                        .minimize(false)
                        .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                        .determinize_size_limit(Some(2 * DFA_SIZE_LIMIT)),
                )
                .build_many(&pats)
                .map_err(|e| DetectorBuildError::Dfa(Box::new(e)))
        };
        let search = build(MatchKind::LeftmostFirst, true)?;
        // `All`, not leftmost-first: a start stays live while *any* pattern could still
        // match there, because a validator may reject the preferred pattern and fall back
        // to a lower-priority one.
        let live = build(MatchKind::All, false)?;
        let first: Vec<[bool; 256]> = pats.iter().map(|p| first_bytes(p)).collect();
        let mut starts = [false; 256];
        for set in &first {
            for (u, &f) in starts.iter_mut().zip(set) {
                *u |= f;
            }
        }
        Ok(Detector {
            checks,
            first,
            starts,
            search,
            live,
        })
    }

    /// The process-wide detector, compiled on first use.
    pub fn global() -> &'static Detector {
        &GLOBAL
    }

    /// Validated PII matches in `text`, non-overlapping, left to right. Placeholders are not
    /// PII and are not reported.
    pub fn find_iter<'a>(&'a self, text: &'a str) -> impl Iterator<Item = Match> + 'a {
        let mut cands = Candidates::new(0);
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= text.len() {
                return None;
            }
            match self.next_hit(text.as_bytes(), &mut cands, pos, text.len(), true, None) {
                Step::Hit(h) => {
                    pos = h.end;
                    Some(Match {
                        kind: h.kind,
                        start: h.start,
                        end: h.end,
                    })
                }
                Step::Pending(_) | Step::Done => {
                    pos = text.len();
                    None
                }
            }
        })
    }

    /// Start a hold-back thread at a position whose previous byte is `prev`, fed its first
    /// byte `b`. `None` when no pattern can match there.
    pub(crate) fn live_start(&self, prev: Option<u8>, b: u8) -> Option<StateID> {
        // Cheap filter: a byte no pattern starts with, or (except `[`) no word boundary.
        if !self.starts[usize::from(b)] || (b != b'[' && prev.is_some_and(is_word)) {
            return None;
        }
        let cfg = start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(prev);
        let sid = self.live.start_state(&cfg).ok()?;
        self.live_step(sid, b)
    }

    /// Feed one more byte to a hold-back thread; `None` once no pattern can match any more.
    pub(crate) fn live_step(&self, sid: StateID, b: u8) -> Option<StateID> {
        let next = self.live.next_state(sid, b);
        (!self.live.is_dead_state(next)).then_some(next)
    }

    /// The next hit starting in `from..limit`. `hay[..from]` is context only (look-behind).
    /// `eof` says whether `hay` ends the text; if not, extensions may answer `Pending`.
    /// `vault`: restore mode — placeholders the vault knows are hits.
    pub(crate) fn next_hit(
        &self,
        hay: &[u8],
        cands: &mut Candidates,
        from: usize,
        limit: usize,
        eof: bool,
        vault: Option<&Vault>,
    ) -> Step {
        while let Some(s) = cands.next(hay, from) {
            if s >= limit {
                cands.unget(s);
                return Step::Done;
            }
            match self.eval_at(hay, s, eof, vault, true) {
                Eval::Hit(h) => return Step::Hit(h),
                Eval::Pending => return Step::Pending(s),
                Eval::None => {}
            }
        }
        Step::Done
    }

    /// Leftmost-first match anchored at `s`: `(pattern, end)`. A hand-rolled loop over the
    /// dense DFA (matches are reported one byte late, the last one before the dead state
    /// wins), equivalent to `try_search_fwd` but cheaper per call on short matches.
    #[inline]
    fn walk(&self, hay: &[u8], s: usize, anchored: Anchored) -> Option<(usize, usize)> {
        let dfa = &self.search;
        let prev = s.checked_sub(1).map(|i| hay[i]);
        let cfg = start::Config::new().anchored(anchored).look_behind(prev);
        let mut sid = dfa.start_state(&cfg).ok()?;
        let mut last = None;
        for (i, &b) in hay.iter().enumerate().skip(s) {
            sid = dfa.next_state(sid, b);
            if dfa.is_special_state(sid) {
                if dfa.is_dead_state(sid) {
                    return last;
                }
                if dfa.is_match_state(sid) {
                    last = Some((dfa.match_pattern(sid, 0).as_usize(), i));
                }
            }
        }
        sid = dfa.next_eoi_state(sid);
        if dfa.is_match_state(sid) {
            last = Some((dfa.match_pattern(sid, 0).as_usize(), hay.len()));
        }
        last
    }

    /// Try the patterns anchored at `s` in priority order. `filter`: skip fallback patterns
    /// that cannot start with `hay[s]` (always on, except in the test that checks it).
    fn eval_at(
        &self,
        hay: &[u8],
        s: usize,
        eof: bool,
        vault: Option<&Vault>,
        filter: bool,
    ) -> Eval {
        let Some((mut pid, mut end)) = self.walk(hay, s, Anchored::Yes) else {
            return Eval::None;
        };
        loop {
            let check = self.checks[pid];
            match self.check(check, hay, s, end, eof, vault) {
                (Verdict::Accept(e), placeholder) => {
                    let kind = match placeholder {
                        Some((kind, _)) => kind,
                        None => check.kind(),
                    };
                    return Eval::Hit(Hit {
                        kind,
                        start: s,
                        end: e,
                        placeholder: placeholder.map(|p| p.1),
                    });
                }
                (Verdict::NeedMore, _) => return Eval::Pending,
                (Verdict::Reject, _) => {}
            }
            let mut next = None;
            for p in pid + 1..self.checks.len() {
                if filter && !self.first[p][usize::from(hay[s])] {
                    continue;
                }
                let Ok(id) = PatternID::new(p) else { break };
                if let Some((_, e)) = self.walk(hay, s, Anchored::Pattern(id)) {
                    next = Some((p, e));
                    break;
                }
            }
            match next {
                Some((p, e)) => (pid, end) = (p, e),
                None => return Eval::None,
            }
        }
    }

    fn check(
        &self,
        check: Check,
        hay: &[u8],
        s: usize,
        e: usize,
        eof: bool,
        vault: Option<&Vault>,
    ) -> (Verdict, Option<(PiiType, u32)>) {
        let text = &hay[s..e];
        let prev = s.checked_sub(1).map(|i| hay[i]);
        let v = match check {
            Check::Placeholder => {
                return match vault.and_then(|v| {
                    parse_placeholder(text).filter(|&(k, n)| v.original(k, n).is_some())
                }) {
                    Some(p) => (Verdict::Accept(e), Some(p)),
                    None => (Verdict::Reject, None),
                };
            }
            Check::Pem => validate::pem(hay, s, e, eof),
            Check::Jwt => validate::jwt(hay, s, e, eof),
            Check::Anthropic => validate::mixed_token(&text[7..], e, false),
            Check::OpenAi => validate::mixed_token(&text[3..], e, true),
            Check::Slack => validate::mixed_token(&text[5..], e, false),
            Check::Aws | Check::GitHub => Verdict::Accept(e),
            Check::Email => validate::email(text, s),
            Check::Iban => validate::iban(text, s),
            Check::Card => validate::card(text, s),
            Check::Ssn => validate::ssn(text, s),
            Check::Ipv4 => validate::ipv4(text, s, prev),
            Check::Ipv6 => validate::ipv6(text, s, prev),
            Check::PhoneNanp => validate::phone(text, s, 10, 11),
            Check::PhoneIntl => validate::phone(text, s, 8, 15),
            Check::PhoneFr => validate::phone(text, s, 10, 10),
            Check::PhoneNational => validate::phone(text, s, 10, 11),
        };
        (v, None)
    }
}

/// Bytes a match of `pattern` can start with, from its literal prefixes; every byte when the
/// prefixes cannot be enumerated.
fn first_bytes(pattern: &str) -> [bool; 256] {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let all = [true; 256];
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(true)
        .build()
        .parse(pattern)
    else {
        return all;
    };
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix)
        .limit_class(256)
        .limit_literal_len(1)
        .limit_total(1024);
    let seq = ex.extract(&hir);
    let Some(lits) = seq.literals() else {
        return all;
    };
    let mut set = [false; 256];
    for lit in lits {
        match lit.as_bytes().first() {
            Some(&b) => set[usize::from(b)] = true,
            None => return all,
        }
    }
    set
}

/// `[EMAIL_12]` → (Email, 12).
pub(crate) fn parse_placeholder(text: &[u8]) -> Option<(PiiType, u32)> {
    let inner = text.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let us = inner.iter().rposition(|&b| b == b'_')?;
    let name = std::str::from_utf8(&inner[..us]).ok()?;
    let num = std::str::from_utf8(&inner[us + 1..])
        .ok()?
        .parse::<u32>()
        .ok()?;
    Some((name.parse().ok()?, num))
}

/// Bytes that may be (part of) a trigger: digits and `:` (0x30–0x3A), `@` and `A` (0x40–0x41),
/// `J`, `[`, `_`, `-`. Written branch-free so the chunk scan vectorises.
#[inline(always)]
const fn is_trigger(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 11)
        | (b.wrapping_sub(b'@') < 2)
        | (b == b'J')
        | (b == b'[')
        | (b == b'_')
        | (b == b'-')
}

/// Position of the next trigger byte at or after `from`.
#[inline]
pub(crate) fn next_trigger(hay: &[u8], from: usize) -> Option<usize> {
    const CHUNK: usize = 32;
    // Triggers often come in clusters: look at a few bytes one by one before going wide.
    let head = hay.get(from..)?;
    if let Some(p) = head.iter().take(8).position(|&b| is_trigger(b)) {
        return Some(from + p);
    }
    let mut i = from + head.len().min(8);
    while i + CHUNK <= hay.len() {
        let chunk = &hay[i..i + CHUNK];
        let mut any = 0u8;
        for &b in chunk {
            any |= u8::from(is_trigger(b));
        }
        if any != 0 {
            break;
        }
        i += CHUNK;
    }
    hay.get(i..)?
        .iter()
        .position(|&b| is_trigger(b))
        .map(|p| i + p)
}

/// True when no pattern can match anywhere in `text` (no trigger byte at all).
pub(crate) fn has_no_trigger(text: &[u8]) -> bool {
    next_trigger(text, 0).is_none()
}

const fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Candidate start positions in increasing order, derived from trigger bytes.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    /// Next byte to examine for triggers.
    scan: usize,
    /// First `@` at or after some earlier `scan` (valid while `>= scan`).
    next_at: Option<usize>,
    /// Sorted, deduplicated candidates not yet returned.
    pending: Pending,
}

/// A small sorted set of positions, inline up to [`PENDING_INLINE`] entries so that scanning
/// text without PII never allocates (live candidates span at most ~70 bytes, so the heap
/// fallback is a safety net). Live entries are `buf[lo..hi]`.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "the inline array is the point: no allocation while scanning clean text"
)]
enum Pending {
    Inline {
        buf: [usize; PENDING_INLINE],
        lo: usize,
        hi: usize,
    },
    Heap(std::collections::VecDeque<usize>),
}

const PENDING_INLINE: usize = 80;

impl Default for Pending {
    fn default() -> Self {
        Pending::Inline {
            buf: [0; PENDING_INLINE],
            lo: 0,
            hi: 0,
        }
    }
}

impl Pending {
    #[inline]
    fn first(&self) -> Option<usize> {
        match self {
            Pending::Inline { buf, lo, hi } => (lo < hi).then(|| buf[*lo]),
            Pending::Heap(v) => v.front().copied(),
        }
    }

    #[inline]
    fn pop_first(&mut self) {
        match self {
            Pending::Inline { lo, hi, .. } => {
                if *lo < *hi {
                    *lo += 1;
                }
                if *lo == *hi {
                    (*lo, *hi) = (0, 0);
                }
            }
            Pending::Heap(v) => {
                v.pop_front();
            }
        }
    }

    #[inline]
    fn insert(&mut self, s: usize) {
        match self {
            Pending::Inline { buf, lo, hi } => {
                if *hi == PENDING_INLINE && *lo > 0 {
                    buf.copy_within(*lo..*hi, 0);
                    (*lo, *hi) = (0, *hi - *lo);
                }
                // Common case: positions arrive in increasing order.
                if (*lo == *hi || buf[*hi - 1] < s) && *hi < PENDING_INLINE {
                    buf[*hi] = s;
                    *hi += 1;
                    return;
                }
                let Err(i) = buf[*lo..*hi].binary_search(&s) else {
                    return;
                };
                let i = *lo + i;
                if *hi == PENDING_INLINE {
                    let mut v: std::collections::VecDeque<usize> =
                        buf[*lo..*hi].iter().copied().collect();
                    v.insert(i - *lo, s);
                    *self = Pending::Heap(v);
                    return;
                }
                buf.copy_within(i..*hi, i + 1);
                buf[i] = s;
                *hi += 1;
            }
            Pending::Heap(v) => {
                if let Err(i) = v.binary_search(&s) {
                    v.insert(i, s);
                }
            }
        }
    }
}

/// Furthest a non-`@` trigger sits after its match start (`github_pat_`: 6).
const NEAR_BACK: usize = 6;

impl Candidates {
    pub(crate) fn new(scan_from: usize) -> Self {
        Candidates {
            scan: scan_from,
            next_at: None,
            pending: Pending::default(),
        }
    }

    fn unget(&mut self, s: usize) {
        self.pending.insert(s);
    }

    /// Every trigger that could propose a start `<= c` has been processed.
    fn settled(&mut self, hay: &[u8], c: usize) -> bool {
        if self.scan >= hay.len() {
            return true;
        }
        if self.scan <= c + NEAR_BACK {
            return false;
        }
        let at = match self.next_at {
            Some(a) if a >= self.scan => a,
            _ => {
                let a =
                    memchr::memchr(b'@', &hay[self.scan..]).map_or(usize::MAX, |p| self.scan + p);
                self.next_at = Some(a);
                a
            }
        };
        at > c + MAX_BACK
    }

    pub(crate) fn next(&mut self, hay: &[u8], from: usize) -> Option<usize> {
        // Triggers before `from` only propose starts before it.
        self.scan = self.scan.max(from);
        loop {
            if let Some(c) = self.pending.first() {
                if c < from {
                    self.pending.pop_first();
                    continue;
                }
                if self.settled(hay, c) {
                    self.pending.pop_first();
                    return Some(c);
                }
            } else {
                if self.scan >= hay.len() {
                    return None;
                }
            }
            match next_trigger(hay, self.scan) {
                None => self.scan = hay.len(),
                Some(t) => {
                    self.push_for(hay, t, from);
                    self.scan = t + 1;
                    if hay[t].is_ascii_digit() {
                        // The rest of a digit run proposes nothing new: each later digit's
                        // window is this one's shifted by one, and a start right after a
                        // digit is not at a word boundary.
                        while self.scan < hay.len() && hay[self.scan].is_ascii_digit() {
                            self.scan += 1;
                        }
                    }
                }
            }
        }
    }

    fn push(&mut self, s: usize) {
        self.pending.insert(s);
    }

    /// Push the start positions trigger `t` could belong to (a superset of where a pattern
    /// containing this trigger can start).
    fn push_for(&mut self, hay: &[u8], t: usize, from: usize) {
        let ws = |s: usize| s == 0 || !is_word(hay[s - 1]);
        let at = |s: usize, lit: &[u8]| hay.get(s..).is_some_and(|h| h.starts_with(lit));
        let b = hay[t];
        match b {
            // The first digit of a run. Digit patterns have their first digit at offset 0
            // (`4111…`), 1 (`+44…`, `(415)…`) or 2 (IBAN `DE89…`); after a digit, `t` is no
            // word start and the earlier offsets were proposed by the run's first digit.
            b'0'..=b'9' if t == 0 || !hay[t - 1].is_ascii_digit() => {
                if t >= 2
                    && t - 2 >= from
                    && hay[t - 2].is_ascii_uppercase()
                    && hay[t - 1].is_ascii_uppercase()
                    && hay.get(t + 1).is_some_and(u8::is_ascii_digit)
                    && ws(t - 2)
                {
                    self.push(t - 2);
                }
                if t > from && matches!(hay[t - 1], b'+' | b'(') && ws(t - 1) {
                    self.push(t - 1);
                }
                if t >= from && ws(t) {
                    self.push(t);
                }
            }
            b':' => {
                let lo = t.saturating_sub(4).max(from);
                for (s, &c) in hay.iter().enumerate().take(t + 1).skip(lo) {
                    if ws(s) && (c.is_ascii_hexdigit() || c == b':') {
                        self.push(s);
                    }
                }
            }
            b'@' => {
                let mut r = t;
                while r > 0 && t - r < MAX_BACK && is_local(hay[r - 1]) {
                    r -= 1;
                }
                for s in r.max(from)..t {
                    if ws(s) {
                        self.push(s);
                    }
                }
            }
            b'[' if t >= from => self.push(t),
            b'-' => {
                if t >= from && ws(t) && at(t, b"-----BEGIN") {
                    self.push(t);
                }
                if t >= 2 && t - 2 >= from && ws(t - 2) && &hay[t - 2..t] == b"sk" {
                    self.push(t - 2);
                }
                if t >= 4 && t - 4 >= from && ws(t - 4) && &hay[t - 4..t - 1] == b"xox" {
                    self.push(t - 4);
                }
            }
            b'_' => {
                if t >= 3 && t - 3 >= from && ws(t - 3) && &hay[t - 3..t - 1] == b"gh" {
                    self.push(t - 3);
                }
                if t >= 6 && t - 6 >= from && ws(t - 6) && &hay[t - 6..t] == b"github" {
                    self.push(t - 6);
                }
            }
            b'J' if t >= 2 && t - 2 >= from && ws(t - 2) && &hay[t - 2..t] == b"ey" => {
                self.push(t - 2)
            }
            b'A' if t >= from && ws(t) && (at(t, b"AKIA") || at(t, b"ASIA")) => self.push(t),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert!(Detector::new().is_ok());
    }

    #[test]
    fn patterns_are_bounded() {
        for (check, pat) in patterns() {
            let hir = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .build()
                .parse(&pat);
            let hir = hir.unwrap_or_else(|e| panic!("{check:?}: {e}"));
            let max = hir.properties().maximum_len();
            assert!(
                max.is_some_and(|m| m <= MAX_HEAD_LEN),
                "{check:?} unbounded or too long: {max:?}"
            );
        }
    }

    #[test]
    fn every_pattern_start_needs_a_trigger() {
        // The trigger set must cover every byte a pattern can contain at its trigger offset;
        // this only checks the table itself, the property test checks the whole scanner.
        for b in [b'0', b'9', b':', b'@', b'A', b'J', b'[', b'_', b'-'] {
            assert!(is_trigger(b));
        }
        for b in [b'a', b'z', b'B', b' ', b'.', b'\n', 0xC3] {
            assert!(!is_trigger(b));
        }
    }

    /// The definition the fast scanner must agree with: try every char boundary.
    fn naive(det: &Detector, text: &str, vault: Option<&Vault>) -> Vec<Hit> {
        let hay = text.as_bytes();
        let mut out = Vec::new();
        let mut s = 0;
        while s < hay.len() {
            if text.is_char_boundary(s)
                && let Eval::Hit(h) = det.eval_at(hay, s, true, vault, false)
            {
                out.push(h);
                s = h.end;
                continue;
            }
            s += 1;
        }
        out
    }

    fn fast(det: &Detector, text: &str, vault: Option<&Vault>) -> Vec<Hit> {
        let hay = text.as_bytes();
        let mut cands = Candidates::new(0);
        let mut out = Vec::new();
        let mut pos = 0;
        while let Step::Hit(h) = det.next_hit(hay, &mut cands, pos, hay.len(), true, vault) {
            out.push(h);
            pos = h.end;
        }
        out
    }

    fn fragment() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("a@example.com".to_owned()),
            Just("x.y_z+1@mail.example.co.uk".to_owned()),
            Just("+1 (415) 555-2671".to_owned()),
            Just("+44 20 7946 0958".to_owned()),
            Just("06 12 34 56 78".to_owned()),
            Just("4111 1111 1111 1111".to_owned()),
            Just("4111111111111112".to_owned()),
            Just("536-22-8145".to_owned()),
            Just("DE89 3704 0044 0532 0130 00".to_owned()),
            Just("192.168.1.20".to_owned()),
            Just("1.2.3.4.5".to_owned()),
            Just("2001:db8::8a2e:370:7334".to_owned()),
            Just("::ffff:10.0.0.1".to_owned()),
            Just("AKIAIOSFODNN7EXAMPLE".to_owned()),
            Just("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1w".to_owned()),
            Just("ghp_16C7e42F292c6912E7710c838347Ae178B4a".to_owned()),
            Just("xoxb-1234-5678-abcdefghij".to_owned()),
            Just("eyJhbGciOi.eyJzdWIi.c2ln".to_owned()),
            Just("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----".to_owned()),
            Just("[EMAIL_1]".to_owned()),
            Just("[PHONE_2]".to_owned()),
            Just("[EMAIL_9]".to_owned()),
            Just("café ñ 日本 ".to_owned()),
            "[ a-zA-Z0-9@.:_+()\\[\\]-]{0,12}",
            "[0-9 .-]{0,20}",
            "[A-Z0-9 ]{0,16}",
            "\\PC{0,6}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        #[test]
        fn trigger_scan_equals_every_position(parts in proptest::collection::vec(fragment(), 0..12)) {
            let det = Detector::global();
            let text: String = parts.concat();
            let mut vault = Vault::new();
            vault.number_for(PiiType::Email, "a@b.co");
            vault.number_for(PiiType::Phone, "1");
            vault.number_for(PiiType::Phone, "2");
            proptest::prop_assert_eq!(fast(det, &text, None), naive(det, &text, None));
            proptest::prop_assert_eq!(fast(det, &text, Some(&vault)), naive(det, &text, Some(&vault)));
        }
    }

    #[test]
    fn first_byte_sets_are_narrow() {
        let det = Detector::global();
        for (check, set) in det.checks.iter().zip(&det.first) {
            let n = set.iter().filter(|&&b| b).count();
            assert!((1..=70).contains(&n), "{check:?}: {n} first bytes");
        }
    }

    #[test]
    fn pending_spills_to_heap_and_stays_sorted() {
        let mut p = Pending::default();
        for s in (0..200).rev().step_by(2).chain((0..200).step_by(2)) {
            p.insert(s);
        }
        assert!(matches!(p, Pending::Heap(_)));
        let mut out = Vec::new();
        while let Some(s) = p.first() {
            out.push(s);
            p.pop_first();
        }
        assert_eq!(out, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn many_candidates_before_one_at_sign() {
        let local = "a.".repeat(31) + "b";
        let text = format!("x {local}@example.com y");
        let det = Detector::global();
        let found: Vec<_> = det.find_iter(&text).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(
            &text[found[0].start..found[0].end],
            format!("{local}@example.com")
        );
        assert_eq!(fast(det, &text, None), naive(det, &text, None));
    }

    #[test]
    fn placeholder_parse() {
        assert_eq!(parse_placeholder(b"[EMAIL_12]"), Some((PiiType::Email, 12)));
        assert_eq!(
            parse_placeholder(b"[IP_ADDRESS_3]"),
            Some((PiiType::IpAddress, 3))
        );
        assert_eq!(parse_placeholder(b"[FOO_3]"), None);
    }
}
