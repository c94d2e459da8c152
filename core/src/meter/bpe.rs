//! The o200k byte-pair ranks and the merge that counts the tokens of one pre-token piece.
//!
//! The ranks are read once from tiktoken-rs (which embeds `o200k_base.tiktoken` in the crate:
//! nothing is downloaded) into a compact open-addressing table: one byte arena plus a slot
//! array, about 6 MB, with a cheap multiply-rotate hash. The key set is fixed (the vocabulary),
//! so attacker-chosen pieces can only probe it, never degrade it.
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
pub(crate) struct RankTable {
    arena: Vec<u8>,
    /// `(start, len, rank)` into `arena`.
    entries: Vec<(u32, u32, Rank)>,
    /// Open addressing, linear probing: 0 = empty, otherwise `entry index + 1`.
    slots: Vec<u32>,
    mask: usize,
}

#[inline]
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // Final avalanche so the low bits (the slot index) depend on every input bit.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

impl RankTable {
    /// Builds the table from `(bytes, rank)` pairs. Returns `None` if the vocabulary does not
    /// fit the compact layout (it always does for o200k: ~200k tokens, ~1.3 MB of bytes).
    pub(crate) fn build<'a>(tokens: impl Iterator<Item = (&'a [u8], Rank)>, count_hint: usize) -> Option<Self> {
        let capacity = (count_hint.max(16) * 2).next_power_of_two();
        let mut table = RankTable {
            arena: Vec::with_capacity(count_hint * 7),
            entries: Vec::with_capacity(count_hint),
            slots: vec![0; capacity],
            mask: capacity - 1,
        };
        for (bytes, rank) in tokens {
            if table.entries.len() * 2 >= table.slots.len() {
                return None;
            }
            let start = u32::try_from(table.arena.len()).ok()?;
            let len = u32::try_from(bytes.len()).ok()?;
            let index = u32::try_from(table.entries.len() + 1).ok()?;
            let mut slot = (hash(bytes) as usize) & table.mask;
            loop {
                match table.slots[slot] {
                    0 => break,
                    e => {
                        // A duplicate key keeps its first (lowest) rank.
                        if table.key(e) == bytes {
                            break;
                        }
                        slot = (slot + 1) & table.mask;
                    }
                }
            }
            if table.slots[slot] == 0 {
                table.arena.extend_from_slice(bytes);
                table.entries.push((start, len, rank));
                table.slots[slot] = index;
            }
        }
        Some(table)
    }

    #[inline]
    fn key(&self, slot_value: u32) -> &[u8] {
        let (start, len, _) = self.entries[slot_value as usize - 1];
        &self.arena[start as usize..(start + len) as usize]
    }

    /// Number of tokens in the table.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    pub(crate) fn get(&self, bytes: &[u8]) -> Option<Rank> {
        let mut slot = (hash(bytes) as usize) & self.mask;
        loop {
            let e = self.slots[slot];
            if e == 0 {
                return None;
            }
            let (start, len, rank) = self.entries[e as usize - 1];
            if len as usize == bytes.len() && &self.arena[start as usize..(start + len) as usize] == bytes {
                return Some(rank);
            }
            slot = (slot + 1) & self.mask;
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
            n if n < LARGE_PIECE => self.merge_small(piece),
            _ => self.merge_large(piece),
        }
    }

    /// tiktoken's `_byte_pair_merge`: parts are `(start, rank of the pair starting here)`.
    fn merge_small(&self, piece: &[u8]) -> u64 {
        let mut buf = [(0usize, NONE); LARGE_PIECE + 1];
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
            if i + 3 < n { self.rank(&piece[parts[i].0..parts[i + 3].0]) } else { NONE }
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
                other.rank.cmp(&self.rank).then_with(|| other.start.cmp(&self.start))
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
        state.push(State { prev: usize::MAX, end: 1, next_end: 2, next_rank: NONE });
        let mut heap = BinaryHeap::with_capacity(len);
        for i in 0..len - 1 {
            if let Some(rank) = self.get(&piece[i..i + 2]) {
                heap.push(Merge { start: i, rank });
                state[i].next_rank = rank;
            }
            state.push(State { prev: i, end: i + 2, next_end: i + 3, next_rank: NONE });
        }
        let potential = |state: &mut Vec<State>, heap: &mut BinaryHeap<Merge>, start: usize, next_end: usize| {
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
