//! The lease sizing rule shared by the embedded store (the Redis store runs the same rule in
//! Lua: `LEASE_LIB_V1` in `redis.rs`; the conformance suite holds both to it).
//!
//! For each limited budget (the project's, and the token's own when it has one):
//! `remaining = limit − spent − outstanding` (saturating) and
//! `share = max(min_lease, ⌊remaining / (2 × other_open_leases + 1)⌋)`; the grant is
//! `min(requested, share, remaining)` over those budgets. The share shrinks as the budget
//! empties and as more leases compete, so the last cents are handed out in slices instead of
//! to whoever asks first. Unlimited budgets take no part.

/// One budget as seen by a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Headroom {
    /// `None` = unlimited.
    pub remaining: Option<u64>,
    /// Open leases on this budget other than the one asking.
    pub others_open: u64,
}

/// The adaptive slice of `remaining` with `others_open` competing leases.
pub(crate) fn share(remaining: u64, others_open: u64, min_lease: u64) -> u64 {
    let parts = others_open.saturating_mul(2).saturating_add(1);
    (remaining / parts).max(min_lease)
}

/// How much to grant for `requested` against `budgets`.
pub(crate) fn grant_amount(requested: u64, budgets: &[Headroom], min_lease: u64) -> u64 {
    budgets.iter().fold(requested, |g, b| match b.remaining {
        None => g,
        Some(r) => g.min(share(r, b.others_open, min_lease)).min(r),
    })
}

/// The smaller remaining of two budgets (`None` = both unlimited).
pub(crate) fn min_remaining(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(remaining: Option<u64>, others_open: u64) -> Headroom {
        Headroom {
            remaining,
            others_open,
        }
    }

    #[test]
    fn unlimited_grants_what_is_asked() {
        assert_eq!(grant_amount(500, &[h(None, 7), h(None, 0)], 100), 500);
        assert_eq!(grant_amount(500, &[], 100), 500);
    }

    #[test]
    fn shares_shrink_with_competition_and_exhaustion() {
        // Alone: the whole remaining (capped by the request).
        assert_eq!(grant_amount(10_000, &[h(Some(50_000), 0)], 100), 10_000);
        assert_eq!(grant_amount(60_000, &[h(Some(50_000), 0)], 100), 50_000);
        // Two others: a fifth.
        assert_eq!(grant_amount(10_000, &[h(Some(5_000), 2)], 100), 1_000);
        // Near zero: the minimum slice, never more than what is left.
        assert_eq!(grant_amount(10_000, &[h(Some(300), 2)], 100), 100);
        assert_eq!(grant_amount(10_000, &[h(Some(40), 2)], 100), 40);
        assert_eq!(grant_amount(10_000, &[h(Some(0), 0)], 100), 0);
    }

    #[test]
    fn both_budgets_bound_the_grant() {
        // Token budget tighter than the project's.
        assert_eq!(
            grant_amount(10_000, &[h(Some(1_000_000), 0), h(Some(700), 0)], 100),
            700
        );
        assert_eq!(grant_amount(10_000, &[h(Some(0), 0), h(None, 0)], 100), 0);
        assert_eq!(min_remaining(Some(3), None), Some(3));
        assert_eq!(min_remaining(None, None), None);
        assert_eq!(min_remaining(Some(3), Some(2)), Some(2));
    }
}
