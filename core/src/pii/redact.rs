//! Applying a [`PiiPolicy`] to detections: the replacement text, the counts for metrics and
//! the `block` error. [`redact_text`] is the whole-text entry point used by stage 5 for every
//! scanned JSON string and by stage 8 for non-stream answers; the streaming redactor
//! ([`super::stream`]) calls the same [`Rewriter`] so both produce identical output.

use std::fmt;

use super::detector::{Candidates, Detector, Hit, Step, has_no_trigger};
use super::types::{Action, Direction, PiiPolicy, PiiType};
use super::vault::Vault;

/// Counts of detections by (type, direction, action), plus placeholders restored in answers.
/// Values are never recorded. Fixed-size: counting never allocates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detections {
    counts: [[[u64; 3]; 2]; 7],
    restored: [u64; 7],
}

impl Detections {
    /// No detections.
    pub fn new() -> Self {
        Detections::default()
    }

    /// Count one detection.
    pub fn record(&mut self, kind: PiiType, dir: Direction, action: Action) {
        self.counts[kind.index()][dir.index()][action.index()] += 1;
    }

    /// Count one placeholder restored to its original in an answer.
    pub fn record_restored(&mut self, kind: PiiType) {
        self.restored[kind.index()] += 1;
    }

    /// Detections of `kind` in `dir` handled with `action`.
    pub fn get(&self, kind: PiiType, dir: Direction, action: Action) -> u64 {
        self.counts[kind.index()][dir.index()][action.index()]
    }

    /// Placeholders of `kind` restored in answers.
    pub fn restored(&self, kind: PiiType) -> u64 {
        self.restored[kind.index()]
    }

    /// Total detections (restorations not included).
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().flatten().sum()
    }

    /// `true` when nothing was detected or restored.
    pub fn is_empty(&self) -> bool {
        self.total() == 0 && self.restored.iter().all(|&n| n == 0)
    }

    /// Non-zero counts as `(type, direction, action, count)`, for
    /// `iron_proxy_pii_detections_total{type,direction,action}`.
    pub fn iter(&self) -> impl Iterator<Item = (PiiType, Direction, Action, u64)> + '_ {
        PiiType::ALL.into_iter().flat_map(move |t| {
            Direction::ALL.into_iter().flat_map(move |d| {
                Action::ALL.into_iter().filter_map(move |a| {
                    let n = self.get(t, d, a);
                    (n > 0).then_some((t, d, a, n))
                })
            })
        })
    }

    /// Add `other`'s counts to these.
    pub fn merge(&mut self, other: &Detections) {
        for (a, b) in self
            .counts
            .iter_mut()
            .flatten()
            .flatten()
            .zip(other.counts.iter().flatten().flatten())
        {
            *a += *b;
        }
        for (a, b) in self.restored.iter_mut().zip(other.restored.iter()) {
            *a += *b;
        }
    }
}

/// The text contained PII of a type whose policy is `block`. Names the types, never the values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Blocked {
    /// The blocked types found, sorted, without duplicates.
    pub types: Vec<PiiType>,
    /// Where they were found.
    pub direction: Direction,
}

impl Blocked {
    pub(crate) fn new(direction: Direction) -> Self {
        Blocked {
            types: Vec::new(),
            direction,
        }
    }

    pub(crate) fn add(&mut self, kind: PiiType) {
        if let Err(i) = self.types.binary_search(&kind) {
            self.types.insert(i, kind);
        }
    }

    pub(crate) fn merge(&mut self, other: &Blocked) {
        for &t in &other.types {
            self.add(t);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} contains PII of blocked type(s): ", self.direction)?;
        for (i, t) in self.types.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.as_str())?;
        }
        Ok(())
    }
}

/// The vault as a redaction pass sees it: requests add to it, responses read it.
pub(crate) enum VaultAccess<'a> {
    Write(&'a mut Vault),
    Read(&'a Vault),
}

impl VaultAccess<'_> {
    fn read(&self) -> &Vault {
        match self {
            VaultAccess::Write(v) => v,
            VaultAccess::Read(v) => v,
        }
    }
}

/// Decides and writes the replacement of each hit for one direction.
pub(crate) struct Rewriter<'a> {
    pub policy: &'a PiiPolicy,
    pub dir: Direction,
}

/// What to do with one hit.
pub(crate) enum Decision {
    /// Keep the original text (allowed, counted).
    Keep,
    /// Replace it (write with [`Rewriter::write`]).
    Replace,
    /// Blocked type (counted).
    Block(PiiType),
}

impl Rewriter<'_> {
    /// The policy decision for `hit`, counted in `det`.
    pub(crate) fn decide(&self, hit: &Hit, det: &mut Detections) -> Decision {
        if hit.placeholder.is_some() {
            det.record_restored(hit.kind);
            return Decision::Replace;
        }
        let action = self.policy.action(self.dir, hit.kind);
        det.record(hit.kind, self.dir, action);
        match action {
            Action::Allow => Decision::Keep,
            Action::Redact => Decision::Replace,
            Action::Block => Decision::Block(hit.kind),
        }
    }

    /// Write the replacement for a `Replace` hit whose original is `value`.
    pub(crate) fn write(
        &self,
        hit: &Hit,
        value: &str,
        vault: &mut VaultAccess<'_>,
        out: &mut String,
    ) {
        if let Some(n) = hit.placeholder {
            match vault.read().original(hit.kind, n) {
                Some(orig) => out.push_str(orig),
                None => out.push_str(value),
            }
            return;
        }
        match vault {
            VaultAccess::Write(v) if self.dir == Direction::Request && self.policy.reversible => {
                let n = v.number_for(hit.kind, value);
                Vault::write_placeholder(out, hit.kind, n);
            }
            _ => {
                out.push_str("[REDACTED:");
                out.push_str(hit.kind.as_str());
                out.push(']');
            }
        }
    }
}

/// Redact (request) or restore-and-redact (response) one text with the default detector.
///
/// - `Direction::Request`: PII is replaced per `policy.request`: reversible placeholders
///   (`[EMAIL_1]`, recorded in `vault`) or `[REDACTED:EMAIL]`.
/// - `Direction::Response`: placeholders the vault issued are restored to their originals;
///   PII that first appears here follows `policy.response` (`[REDACTED:TYPE]` when redacted).
///
/// Returns `Ok(None)` when the text is unchanged (no allocation), `Err(Blocked)` naming every
/// blocked type found. Counts go to `det`.
pub fn redact_text(
    text: &str,
    policy: &PiiPolicy,
    dir: Direction,
    vault: &mut Vault,
    det: &mut Detections,
) -> Result<Option<String>, Blocked> {
    redact_text_with(Detector::global(), text, policy, dir, vault, det)
}

/// [`redact_text`] with an explicit detector.
pub fn redact_text_with(
    detector: &Detector,
    text: &str,
    policy: &PiiPolicy,
    dir: Direction,
    vault: &mut Vault,
    det: &mut Detections,
) -> Result<Option<String>, Blocked> {
    match dir {
        Direction::Request => rewrite(detector, text, policy, dir, VaultAccess::Write(vault), det),
        Direction::Response => rewrite(detector, text, policy, dir, VaultAccess::Read(vault), det),
    }
}

pub(crate) fn rewrite(
    detector: &Detector,
    text: &str,
    policy: &PiiPolicy,
    dir: Direction,
    mut vault: VaultAccess<'_>,
    det: &mut Detections,
) -> Result<Option<String>, Blocked> {
    let hay = text.as_bytes();
    if has_no_trigger(hay) {
        return Ok(None);
    }
    let rw = Rewriter { policy, dir };
    let mut cands = Candidates::new(0);
    let mut out: Option<String> = None;
    let mut blocked = Blocked::new(dir);
    let mut last = 0;
    let mut pos = 0;
    loop {
        let read_vault = (dir == Direction::Response).then(|| vault.read());
        let step = detector.next_hit(hay, &mut cands, pos, hay.len(), true, read_vault);
        let Step::Hit(hit) = step else { break };
        pos = hit.end;
        match rw.decide(&hit, det) {
            Decision::Keep => {}
            Decision::Block(kind) => blocked.add(kind),
            Decision::Replace => {
                if !blocked.is_empty() {
                    continue;
                }
                let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 32));
                o.push_str(&text[last..hit.start]);
                rw.write(&hit, &text[hit.start..hit.end], &mut vault, o);
                last = hit.end;
            }
        }
    }
    if !blocked.is_empty() {
        return Err(blocked);
    }
    Ok(out.map(|mut o| {
        o.push_str(&text[last..]);
        o
    }))
}
