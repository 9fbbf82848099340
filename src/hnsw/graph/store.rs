//! The two traits through which the algorithm reads ([`GraphStore`]) and changes
//! ([`GraphWrite`]) a graph: the in-memory graph and the on-disk graph both implement them.

use std::fmt::Debug;
use std::hash::Hash;

// ---------------------------------------------------------------------------
// Store traits
// ---------------------------------------------------------------------------

/// Read access to a graph: the index scan's view of the on-disk graph, the
/// build's view of the in-memory one. Methods take `&mut self` so the glue can
/// pin buffers and cache pages.
pub(crate) trait GraphStore {
    /// Node identifier (a dense u32 in memory, an item pointer on disk).
    type Id: Copy + Eq + Hash + Ord + Debug;
    /// Entry point and its level; None for an empty graph.
    fn entry_point(&mut self) -> Option<(Self::Id, u8)>;
    /// Distance from `query` to node `id` (the store reads the node's vector);
    /// None = node vanished / unreadable: skip it.
    fn distance(&mut self, id: Self::Id, query: &[f32]) -> Option<f32>;
    /// Appends the neighbour ids of `id` on `level` (nearest-first as stored)
    /// to `out`, which the caller passes in empty.
    fn neighbors(&mut self, id: Self::Id, level: u8, out: &mut Vec<Self::Id>);
    /// Whether the node passes the scan's filter (authorization keys).
    fn passes(&mut self, _id: Self::Id) -> bool {
        true
    }
    /// Whether the node is deleted (still traversable, never returned).
    fn is_deleted(&mut self, _id: Self::Id) -> bool {
        false
    }
    /// Hint that `distance(id, ..)` follows shortly; in-memory stores start
    /// loading the vector so the memory latency overlaps other work.
    fn prefetch(&mut self, _id: Self::Id) {}
    /// Hint that `neighbors(id, level, ..)` follows shortly (same purpose).
    fn prefetch_neighbors(&mut self, _id: Self::Id, _level: u8) {}
    /// Scores a whole neighbour list: `out[i]` is `Some((distance, deleted))` for
    /// `ids[i]`, None when that node is unreadable. The default announces every id
    /// (`prefetch`) before the first `distance`, so the memory latencies overlap; a
    /// page store overrides it to score page by page under one lock each.
    fn score_batch(&mut self, ids: &[Self::Id], query: &[f32], out: &mut Vec<Option<(f32, bool)>>) {
        out.clear();
        for &id in ids {
            self.prefetch(id);
        }
        for &id in ids {
            let s = self.distance(id, query).map(|d| (d, self.is_deleted(id)));
            out.push(s);
        }
    }
}

/// Write access for aminsert and vacuum.
pub(crate) trait GraphWrite: GraphStore {
    /// Replaces the neighbour list of `id` on `level`.
    fn set_neighbors(&mut self, id: Self::Id, level: u8, neighbors: &[Self::Id]);
    /// Appends the vector of `id` to `out` (passed in empty); false when the
    /// node is unreadable.
    fn vector_of(&mut self, id: Self::Id, out: &mut Vec<f32>) -> bool;
    #[cfg(test)]
    /// Moves the entry point (called by [`apply_insert`] when the new node is
    /// higher than the old entry). Default: ignore, for stores that keep the
    /// entry point in a metapage written by the glue itself.
    fn set_entry_point(&mut self, _entry: Option<(Self::Id, u8)>) {}
}
