//! Visited sets for graph searches, the Fx hasher behind the hash sets, and prefetch hints.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// Largest id a [`StampVisited`] indexes directly; larger ids use a hash set.
const STAMP_LIMIT: usize = 1 << 27;

/// FxHash (rustc's hasher): ids are not attacker-chosen hash keys here, and
/// SipHash would cost more than the distance computations it guards.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    /// One mixing round per word.
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    // Byte slices are folded 8 bytes at a time.
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
    }
    // Fast paths for the integer ids we actually hash.
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64)
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
    // The rotation moves the well-mixed high bits down to where hashbrown
    // takes its bucket index (as rustc-hash 2 does).
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

/// Hash set used for generic ids (e.g. the glue's item pointers).
pub(crate) type IdHashSet<Id> = HashSet<Id, BuildHasherDefault<FxHasher>>;

/// A visited set sized for a search with beam `ef`, so it is not rehashed while the search
/// runs (on GloVe a search visits about 40 nodes per unit of ef; 48 leaves headroom).
pub(crate) fn visited_for<Id>(ef: usize) -> IdHashSet<Id> {
    IdHashSet::with_capacity_and_hasher((ef * 48).clamp(1024, 1 << 16), Default::default())
}
pub(super) type IdHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A set of visited nodes; searches are generic over it so MemGraph can use a
/// stamp array while on-disk ids use a hash set.
pub(crate) trait VisitedSet<Id> {
    /// Marks `id`; true when it was not marked before.
    fn insert(&mut self, id: Id) -> bool;
    /// Whether `id` is marked.
    fn contains(&self, id: Id) -> bool;
    /// Unmarks everything (cheap for stamp arrays).
    fn clear(&mut self);
    /// Number of marked ids.
    fn len(&self) -> usize;
    #[cfg(test)]
    /// Whether nothing is marked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<Id: Hash + Eq, B: BuildHasher> VisitedSet<Id> for HashSet<Id, B> {
    // Straight delegation to the std set.
    fn insert(&mut self, id: Id) -> bool {
        HashSet::insert(self, id)
    }
    fn contains(&self, id: Id) -> bool {
        HashSet::contains(self, &id)
    }
    fn clear(&mut self) {
        HashSet::clear(self)
    }
    fn len(&self) -> usize {
        HashSet::len(self)
    }
}

/// Visited set for dense u32 ids: one bit per node plus the list of words
/// touched since the last clear, so clearing costs O(visited) rather than
/// O(n) and the whole set stays small enough for L1/L2 (100k nodes = 12.5 KB;
/// a u32 stamp array would be 400 KB and miss the cache on every probe).
/// Ids beyond [`STAMP_LIMIT`] fall back to a hash set. (The name is kept from
/// an earlier generation-stamp design that the glue may already reference.)
#[derive(Clone, Debug, Default)]
pub(crate) struct StampVisited {
    words: Vec<u64>,
    touched: Vec<u32>,
    count: usize,
    overflow: IdHashSet<u32>,
}

impl StampVisited {
    /// Preallocates bits for ids `0..capacity` (grows on demand anyway).
    pub(crate) fn new(capacity: usize) -> Self {
        StampVisited {
            words: vec![0; capacity.min(STAMP_LIMIT).div_ceil(64)],
            ..Default::default()
        }
    }
}

impl VisitedSet<u32> for StampVisited {
    // Set the bit; remember the word the first time it becomes non-zero.
    #[inline]
    fn insert(&mut self, id: u32) -> bool {
        let i = id as usize;
        let w = i >> 6;
        if w >= self.words.len() {
            if i >= STAMP_LIMIT {
                let fresh = self.overflow.insert(id);
                self.count += fresh as usize;
                return fresh;
            }
            let new_len =
                (w + 1).max(self.words.len().saturating_mul(2)).min(STAMP_LIMIT.div_ceil(64));
            self.words.resize(new_len, 0);
        }
        let bit = 1u64 << (i & 63);
        match self.words.get_mut(w) {
            Some(word) if *word & bit != 0 => false,
            Some(word) => {
                if *word == 0 {
                    self.touched.push(w as u32);
                }
                *word |= bit;
                self.count += 1;
                true
            }
            None => false,
        }
    }
    // Bit test.
    #[inline]
    fn contains(&self, id: u32) -> bool {
        let i = id as usize;
        match self.words.get(i >> 6) {
            Some(&word) => word & (1u64 << (i & 63)) != 0,
            None => self.overflow.contains(&id),
        }
    }
    // Zero only the words that were touched.
    fn clear(&mut self) {
        for &w in &self.touched {
            if let Some(word) = self.words.get_mut(w as usize) {
                *word = 0;
            }
        }
        self.touched.clear();
        self.count = 0;
        self.overflow.clear();
    }
    fn len(&self) -> usize {
        self.count
    }
}

/// Asks the CPU to start loading the first cache lines of `v`. Search is
/// bound by memory latency (each distance touches a random vector), and
/// hnswlib-style prefetching overlaps those misses.
#[inline(always)]
pub(super) fn prefetch_slice(v: &[f32]) {
    let p = v.as_ptr() as *const i8;
    let bytes = std::mem::size_of_val(v);
    let mut off = 0;
    while off < bytes && off < 256 {
        prefetch_ptr(p.wrapping_add(off));
        off += 64;
    }
}

/// One prefetch instruction (no-op off x86_64).
#[inline(always)]
pub(super) fn prefetch_ptr(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetch is a hint that never faults and never reads
        // memory architecturally, whatever the address (callers pass
        // pointers into live slices anyway). SSE is part of the x86_64
        // baseline, so the instruction always exists.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
    }
}
