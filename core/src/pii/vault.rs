//! The per-request placeholder vault. Stage 5 fills it while redacting the request
//! (`alice@example.com` → `[EMAIL_1]`, the same value always getting the same placeholder);
//! stage 8 reads it to put the originals back into the answer. It lives in the request
//! context, is never logged (its `Debug` shows counts only) and wipes the values on drop.

use std::collections::HashMap;
use std::fmt;

use zeroize::Zeroize;

use super::types::PiiType;

/// Placeholder ↔ original map for one request. `Send + Sync`, so a stream can share it
/// through an `Arc` once the request has been redacted.
#[derive(Default)]
pub struct Vault {
    /// Originals per type; placeholder `[TYPE_n]` is `originals[type][n - 1]`.
    originals: [Vec<String>; 7],
    /// Original → number, per type.
    index: [HashMap<String, u32>; 7],
}

impl Vault {
    /// An empty vault.
    pub fn new() -> Self {
        Vault::default()
    }

    /// Number of distinct values stored.
    pub fn len(&self) -> usize {
        self.originals.iter().map(Vec::len).sum()
    }

    /// `true` when nothing was redacted reversibly.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The placeholder number for `value` (existing or new). Numbers start at 1 per type.
    pub fn number_for(&mut self, kind: PiiType, value: &str) -> u32 {
        let i = kind.index();
        if let Some(&n) = self.index[i].get(value) {
            return n;
        }
        let n = u32::try_from(self.originals[i].len() + 1).unwrap_or(u32::MAX);
        self.originals[i].push(value.to_owned());
        self.index[i].insert(value.to_owned(), n);
        n
    }

    /// The original behind `[TYPE_n]`, if this vault issued it.
    pub fn original(&self, kind: PiiType, n: u32) -> Option<&str> {
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        self.originals[kind.index()].get(idx).map(String::as_str)
    }

    /// Write the placeholder `[TYPE_n]` to `out`.
    pub fn write_placeholder(out: &mut String, kind: PiiType, n: u32) {
        out.push('[');
        out.push_str(kind.as_str());
        out.push('_');
        push_u32(out, n);
        out.push(']');
    }
}

fn push_u32(out: &mut String, n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Vault");
        for kind in PiiType::ALL {
            let n = self.originals[kind.index()].len();
            if n > 0 {
                d.field(kind.as_str(), &n);
            }
        }
        d.finish()
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        for v in &mut self.originals {
            for s in v.iter_mut() {
                s.zeroize();
            }
        }
        for map in &mut self.index {
            for (mut k, _) in map.drain() {
                k.zeroize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_number() {
        let mut v = Vault::new();
        assert_eq!(v.number_for(PiiType::Email, "a@b.co"), 1);
        assert_eq!(v.number_for(PiiType::Email, "c@d.co"), 2);
        assert_eq!(v.number_for(PiiType::Email, "a@b.co"), 1);
        assert_eq!(v.number_for(PiiType::Phone, "a@b.co"), 1);
        assert_eq!(v.original(PiiType::Email, 2), Some("c@d.co"));
        assert_eq!(v.original(PiiType::Email, 0), None);
        assert_eq!(v.original(PiiType::Email, 3), None);
        assert_eq!(v.len(), 3);
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("a@b.co"), "{dbg}");
        let mut s = String::new();
        Vault::write_placeholder(&mut s, PiiType::CreditCard, 1207);
        assert_eq!(s, "[CREDIT_CARD_1207]");
    }

    #[test]
    fn vault_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Vault>();
    }
}
