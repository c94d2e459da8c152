//! The o200k byte-pair ranks and the merge that counts the tokens of one pre-token piece.
//!
//! The ranks are read once from tiktoken-rs (which embeds `o200k_base.tiktoken` in the crate:
//! nothing is downloaded) into an open-addressing table of 16-byte slots (8 MB) with a cheap
//! multiply-rotate hash. The key set is fixed (the vocabulary), so attacker-chosen pieces can
//! only probe it, never degrade it.
//!
//! The merge is tiktoken's own algorithm, re-implemented over this table so the counts are
//! identical: the quadratic vector merge for short pieces, the heap merge (O(n log n)) from
//! 100 bytes on, so a megabyte of one repeated character stays cheap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A token id in o200k_base.
pub(crate) type Rank = u32;

const NONE: Rank = Rank::MAX;

/// Pieces at least this long use the heap merge (as tiktoken does).
const LARGE_PIECE: usize = 100;

/// Byte string → rank, for every ordinary token of the vocabulary.
///
/// Open addressing with linear probing over 16-byte slots that hold the first 8 bytes of the
/// key, its length, the rank and (for keys over 8 bytes) where the rest of the key sits in
/// `tails`. A hit on a short key touches one slot; most pieces are short.
pub(crate) struct RankTable {
    slots: Vec<Slot>,
    tails: Vec<u8>,
    mask: usize,
    len: usize,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// First 8 bytes of the key, little-endian, zero-padded.
    head: u64,
    rank: Rank,
    /// Key length (bits 0–9, 0 = empty slot) and offset of `key[8..]` in `tails` (bits 10–31).
    meta: u32,
}

const LEN_BITS: u32 = 10;
const MAX_KEY: usize = (1 << LEN_BITS) - 1;
const MAX_TAILS: usize = 1 << (32 - LEN_BITS);

/// The first (up to) 8 bytes of `b` as a little-endian u64, without a variable-length copy.
#[inline(always)]
fn head(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 8 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w)
    } else if n >= 4 {
        let mut lo = [0u8; 4];
        lo.copy_from_slice(&b[..4]);
        let mut hi = [0u8; 4];
        hi.copy_from_slice(&b[n - 4..n]);
        u64::from(u32::from_le_bytes(lo)) | (u64::from(u32::from_le_bytes(hi)) << ((n - 4) * 8))
    } else if n > 0 {
        u64::from(b[0])
            | (u64::from(b[n / 2]) << ((n / 2) * 8))
            | (u64::from(b[n - 1]) << ((n - 1) * 8))
    } else {
        0
    }
}

#[inline(always)]
fn hash(b: &[u8], head: u64) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (head ^ (b.len() as u64).rotate_left(58)).wrapping_mul(K);
    if b.len() > 8 {
        for c in b[8..].chunks(8) {
            h = (h.rotate_left(5) ^ self::head(c)).wrapping_mul(K);
        }
    }
    // Final avalanche so the low bits (the slot index) depend on every input bit.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

impl RankTable {
    /// Builds the table from `(bytes, rank)` pairs. Returns `None` if the vocabulary does not
    /// fit the compact layout (o200k does: ~200k tokens, none over 1023 bytes).
    pub(crate) fn build<'a>(
        tokens: impl Iterator<Item = (&'a [u8], Rank)>,
        count_hint: usize,
    ) -> Option<Self> {
        let capacity = (count_hint.max(16) * 2).next_power_of_two();
        let mut table = RankTable {
            slots: vec![Slot::default(); capacity],
            tails: Vec::new(),
            mask: capacity - 1,
            len: 0,
        };
        for (bytes, rank) in tokens {
            if bytes.is_empty() || bytes.len() > MAX_KEY || table.len * 2 >= table.slots.len() {
                return None;
            }
            if table.get(bytes).is_some() {
                // A duplicate key keeps its first (lowest) rank.
                continue;
            }
            let h = head(bytes);
            let mut i = (hash(bytes, h) as usize) & table.mask;
            while table.slots[i].meta != 0 {
                i = (i + 1) & table.mask;
            }
            let offset = table.tails.len();
            if bytes.len() > 8 {
                table.tails.extend_from_slice(&bytes[8..]);
            }
            if table.tails.len() > MAX_TAILS {
                return None;
            }
            let meta = bytes.len() as u32 | (u32::try_from(offset).ok()? << LEN_BITS);
            table.slots[i] = Slot {
                head: h,
                rank,
                meta,
            };
            table.len += 1;
        }
        Some(table)
    }

    /// Number of tokens in the table.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, bytes: &[u8]) -> Option<Rank> {
        let h = head(bytes);
        let len = bytes.len() as u32;
        let mut i = (hash(bytes, h) as usize) & self.mask;
        loop {
            let slot = self.slots[i];
            if slot.meta == 0 {
                return None;
            }
            if slot.head == h && slot.meta & MAX_KEY as u32 == len {
                if len <= 8 {
                    return Some(slot.rank);
                }
                let offset = (slot.meta >> LEN_BITS) as usize;
                let want = &bytes[8..];
                if let Some(tail) = self.tails.get(offset..offset + want.len()) {
                    let equal = if want.len() <= 8 {
                        head(tail) == head(want)
                    } else {
                        tail == want
                    };
                    if equal {
                        return Some(slot.rank);
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn rank(&self, bytes: &[u8]) -> Rank {
        self.get(bytes).unwrap_or(NONE)
    }

    /// Tokens in one pre-token piece.
    #[inline]
    pub(crate) fn count_piece(&self, piece: &[u8]) -> u64 {
        match piece.len() {
            0 => 0,
            1 => 1,
            _ if self.get(piece).is_some() => 1,
            n if n <= 16 => self.merge_small::<17>(piece),
            n if n < LARGE_PIECE => self.merge_small::<LARGE_PIECE>(piece),
            _ => self.merge_large(piece),
        }
    }

    /// tiktoken's `_byte_pair_merge`: parts are `(start, rank of the pair starting here)`.
    /// `N` ≥ `piece.len() + 1`.
    fn merge_small<const N: usize>(&self, piece: &[u8]) -> u64 {
        let mut buf = [(0usize, NONE); N];
        let mut n = 0;
        let mut min = (NONE, usize::MAX);
        for i in 0..piece.len() - 1 {
            let rank = self.rank(&piece[i..i + 2]);
            if rank < min.0 {
                min = (rank, i);
            }
            buf[n] = (i, rank);
            n += 1;
        }
        buf[n] = (piece.len() - 1, NONE);
        buf[n + 1] = (piece.len(), NONE);
        n += 2;
        let parts = &mut buf[..];
        let get_rank = |parts: &[(usize, Rank)], n: usize, i: usize| {
            if i + 3 < n {
                self.rank(&piece[parts[i].0..parts[i + 3].0])
            } else {
                NONE
            }
        };
        while min.0 != NONE {
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = get_rank(parts, n, i - 1);
            }
            parts[i].1 = get_rank(parts, n, i);
            parts.copy_within(i + 2..n, i + 1);
            n -= 1;
            min = (NONE, usize::MAX);
            for (j, &(_, rank)) in parts[..n - 1].iter().enumerate() {
                if rank < min.0 {
                    min = (rank, j);
                }
            }
        }
        (n - 1) as u64
    }

    /// tiktoken's `_byte_pair_merge_large` (heap of candidate merges, lazily invalidated).
    fn merge_large(&self, piece: &[u8]) -> u64 {
        #[derive(Clone, Copy, PartialEq, Eq)]
        struct Merge {
            start: usize,
            rank: Rank,
        }
        impl Ord for Merge {
            fn cmp(&self, other: &Self) -> Ordering {
                other
                    .rank
                    .cmp(&self.rank)
                    .then_with(|| other.start.cmp(&self.start))
            }
        }
        impl PartialOrd for Merge {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        struct State {
            prev: usize,
            end: usize,
            next_end: usize,
            next_rank: Rank,
        }

        let len = piece.len();
        let mut state = Vec::with_capacity(len);
        state.push(State {
            prev: usize::MAX,
            end: 1,
            next_end: 2,
            next_rank: NONE,
        });
        let mut heap = BinaryHeap::with_capacity(len);
        for i in 0..len - 1 {
            if let Some(rank) = self.get(&piece[i..i + 2]) {
                heap.push(Merge { start: i, rank });
                state[i].next_rank = rank;
            }
            state.push(State {
                prev: i,
                end: i + 2,
                next_end: i + 3,
                next_rank: NONE,
            });
        }
        let potential = |state: &mut Vec<State>,
                         heap: &mut BinaryHeap<Merge>,
                         start: usize,
                         next_end: usize| {
            state[start].next_end = next_end;
            state[start].next_rank = NONE;
            if next_end <= len
                && let Some(rank) = self.get(&piece[start..next_end])
            {
                heap.push(Merge { start, rank });
                state[start].next_rank = rank;
            }
        };
        while let Some(left) = heap.pop() {
            if left.rank == NONE {
                break;
            }
            if left.rank != state[left.start].next_rank {
                continue;
            }
            let left_start = left.start;
            let right_start = state[left_start].end;
            let right_end = state[left_start].next_end;
            let right_next_end = state[right_start].next_end;
            state[left_start].end = right_end;
            potential(&mut state, &mut heap, left_start, right_next_end);
            if right_end < state.len() {
                state[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = state[left_start].prev;
                potential(&mut state, &mut heap, prev_start, right_end);
            }
            state[right_start].next_rank = NONE;
        }
        let mut count = 0;
        let mut i = 0;
        while i < state.len() {
            count += 1;
            i = state[i].end;
        }
        count
    }
}
