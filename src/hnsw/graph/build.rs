//! The parallel in-memory build and [`MemGraph`], the graph it produces (also the test
//! double of the on-disk graph).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::{Mutex, RwLock};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[cfg(test)]
use super::insert::{apply_insert, plan_insert};
#[cfg(test)]
use super::search::{collect_k, SearchOptions};
use super::search::{greedy_descend, Eligible, Searcher};
use super::select::{heuristic_select, insert_flagged, Nb};
use super::store::{GraphStore, GraphWrite};
use super::visited::{prefetch_ptr, prefetch_slice, StampVisited};
#[cfg(test)]
use super::MAX_LEVEL;
use super::{clean, random_level, Candidate, Distance, Params};

/// Nodes inserted on one thread before the parallel phase starts.
const SEQUENTIAL_HEAD: usize = 1_000;
/// How many inserts between two progress callbacks.
const PROGRESS_EVERY: usize = 1_024;

// ---------------------------------------------------------------------------
// In-memory parallel build
// ---------------------------------------------------------------------------

/// Where one neighbour list lives. Layer-0 lists sit at a fixed stride in
/// their own array (node i at i·(2m+1)), so reading one costs a single
/// cache-miss chain; upper lists (about one node in m) sit in a second array
/// found through a per-node offset. Word `base` holds the length, the ids
/// follow.
#[derive(Clone, Copy, Debug)]
struct Slot {
    upper: bool,
    base: usize,
    cap: usize,
}

/// Computes a node's slot on `level` (None: no such node or level).
#[inline]
fn slot_of(levels: &[u8], node_up: &[usize], params: &Params, id: u32, level: u8) -> Option<Slot> {
    let i = id as usize;
    let lv = *levels.get(i)?;
    if level > lv {
        return None;
    }
    if level == 0 {
        let cap = params.max_neighbors(0);
        Some(Slot { upper: false, base: i * (cap + 1), cap })
    } else {
        let cap = params.max_neighbors(1);
        let u = *node_up.get(i)? + (level as usize - 1);
        Some(Slot { upper: true, base: u * (cap + 1), cap })
    }
}

/// Packs an edge's distance and "kept" flag into one word for the build.
#[inline]
fn pack_meta(d: f32, kept: bool) -> u64 {
    ((d.to_bits() as u64) << 1) | kept as u64
}

/// Inverse of [`pack_meta`].
#[inline]
fn unpack_meta(w: u64) -> (f32, bool) {
    (f32::from_bits((w >> 1) as u32), w & 1 == 1)
}

/// Shared state of a parallel build. Lists live in flat arrays laid out
/// exactly like [`MemGraph`]'s (see [`Slot`]; freezing is a copy), plus a
/// parallel word per edge packing its distance and "kept" flag. Each word is an
/// atomic so readers need no lock: a search copies ids with relaxed loads and
/// may see a list mid-update, which is harmless (every id it can see is a
/// valid node; the visited set removes duplicates). Writers serialise on the
/// node's mutex, which guards the distances and flags.
struct Builder<'a> {
    dim: usize,
    vectors: &'a [f32],
    levels: &'a [u8],
    dist: Distance,
    params: Params,
    node_up: Vec<usize>,
    l0: Vec<AtomicU32>,
    l0_meta: Vec<AtomicU64>,
    up: Vec<AtomicU32>,
    up_meta: Vec<AtomicU64>,
    locks: Vec<Mutex<()>>,
    entry: RwLock<Option<(u32, u8)>>,
}

/// Per-thread buffers of the build, reused for every insert.
struct BuildScratch {
    search: Searcher<u32, StampVisited>,
    /// Distances computed by the descents (the layer searches count their own).
    descent_distances: u64,
    w: Vec<Candidate<u32>>,
    entries: Vec<Candidate<u32>>,
    dists: Vec<f32>,
    kept: Vec<usize>,
    pruned: Vec<usize>,
    sel: Vec<(usize, bool)>,
    nbrs: Vec<u32>,
    newl: Vec<Nb>,
    list: Vec<Nb>,
    old: Vec<Nb>,
}

impl BuildScratch {
    /// Scratch sized for a graph of `n` nodes.
    fn new(n: usize) -> Self {
        BuildScratch {
            search: Searcher::for_layers(StampVisited::new(n)),
            descent_distances: 0,
            w: Vec::new(),
            entries: Vec::new(),
            dists: Vec::new(),
            kept: Vec::new(),
            pruned: Vec::new(),
            sel: Vec::new(),
            nbrs: Vec::new(),
            newl: Vec::new(),
            list: Vec::new(),
            old: Vec::new(),
        }
    }
}

/// The build's [`GraphStore`]: lets inserts use the same [`Searcher`] as scans.
struct BuildView<'b, 'a> {
    b: &'b Builder<'a>,
}

impl GraphStore for BuildView<'_, '_> {
    type Id = u32;
    // Read under the entry lock.
    fn entry_point(&mut self) -> Option<(u32, u8)> {
        *self.b.entry.read()
    }
    // Vectors are immutable during the build: no lock needed.
    fn distance(&mut self, id: u32, query: &[f32]) -> Option<f32> {
        let v = self.b.vec(id);
        if v.is_empty() {
            None
        } else {
            Some((self.b.dist)(v, query))
        }
    }
    // Lock-free copy of the ids (see the struct comment).
    fn neighbors(&mut self, id: u32, level: u8, out: &mut Vec<u32>) {
        if let Some(s) = self.b.slot(id, level) {
            let (ids, _) = self.b.arrays(s);
            let len = ids
                .get(s.base)
                .map_or(0, |l| (l.load(AtomicOrdering::Acquire) as usize).min(s.cap));
            if let Some(ids) = ids.get(s.base + 1..s.base + 1 + len) {
                out.extend(ids.iter().map(|x| x.load(AtomicOrdering::Relaxed)));
            }
        }
    }
    // Warm the cache line of the vector we are about to compare against.
    fn prefetch(&mut self, id: u32) {
        prefetch_slice(self.b.vec(id));
    }
    // Warm the first line of a list (length word and first ids).
    fn prefetch_neighbors(&mut self, id: u32, level: u8) {
        if let Some(s) = self.b.slot(id, level) {
            let (ids, _) = self.b.arrays(s);
            if let Some(w) = ids.get(s.base..s.base + 1) {
                prefetch_ptr(w.as_ptr() as *const i8);
            }
        }
    }
}

impl<'a> Builder<'a> {
    /// Allocates every slot up front, in MemGraph's layout.
    fn new(
        dim: usize,
        vectors: &'a [f32],
        levels: &'a [u8],
        dist: Distance,
        params: Params,
    ) -> Self {
        let (m0, m) = (params.max_neighbors(0), params.max_neighbors(1));
        let n = levels.len();
        let mut node_up = Vec::with_capacity(n);
        let mut upper = 0usize;
        for &l in levels {
            node_up.push(upper);
            upper += l as usize;
        }
        let atomics32 = |k: usize| (0..k).map(|_| AtomicU32::new(0)).collect::<Vec<_>>();
        let atomics64 = |k: usize| (0..k).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Builder {
            dim,
            vectors,
            levels,
            dist,
            params,
            node_up,
            l0: atomics32(n * (m0 + 1)),
            l0_meta: atomics64(n * (m0 + 1)),
            up: atomics32(upper * (m + 1)),
            up_meta: atomics64(upper * (m + 1)),
            locks: (0..n).map(|_| Mutex::new(())).collect(),
            entry: RwLock::new(None),
        }
    }

    /// Slot of a node's list on `level`.
    #[inline]
    fn slot(&self, id: u32, level: u8) -> Option<Slot> {
        slot_of(self.levels, &self.node_up, &self.params, id, level)
    }

    /// The id and meta arrays a slot lives in.
    #[inline]
    fn arrays(&self, s: Slot) -> (&[AtomicU32], &[AtomicU64]) {
        if s.upper {
            (&self.up, &self.up_meta)
        } else {
            (&self.l0, &self.l0_meta)
        }
    }

    /// Copies a slot with distances and flags (caller holds the node lock).
    fn load_list(&self, s: Slot, out: &mut Vec<Nb>) {
        out.clear();
        let (ids, meta) = self.arrays(s);
        let len =
            ids.get(s.base).map_or(0, |l| (l.load(AtomicOrdering::Relaxed) as usize).min(s.cap));
        for k in s.base + 1..s.base + 1 + len {
            if let (Some(i), Some(m)) = (ids.get(k), meta.get(k)) {
                let (d, kept) = unpack_meta(m.load(AtomicOrdering::Relaxed));
                out.push(Nb { id: i.load(AtomicOrdering::Relaxed), d, kept });
            }
        }
    }

    /// Writes a slot back (caller holds the node lock): entries first, then
    /// the length with Release so a reader that sees it sees the entries.
    fn store_list(&self, s: Slot, list: &[Nb]) {
        let (ids, meta) = self.arrays(s);
        let len = list.len().min(s.cap);
        for (k, nb) in list.iter().take(len).enumerate() {
            if let (Some(i), Some(m)) = (ids.get(s.base + 1 + k), meta.get(s.base + 1 + k)) {
                i.store(nb.id, AtomicOrdering::Relaxed);
                m.store(pack_meta(nb.d, nb.kept), AtomicOrdering::Relaxed);
            }
        }
        if let Some(l) = ids.get(s.base) {
            l.store(len as u32, AtomicOrdering::Release);
        }
    }

    /// Vector of node `id` (empty slice if out of range).
    #[inline]
    fn vec(&self, id: u32) -> &'a [f32] {
        let s = id as usize * self.dim;
        self.vectors.get(s..s + self.dim).unwrap_or(&[])
    }

    /// Distance between two nodes.
    #[inline]
    fn pair(&self, a: u32, b: u32) -> f32 {
        clean((self.dist)(self.vec(a), self.vec(b)))
    }

    /// Inserts node `q` (Algorithm 1): descend, then per layer search with
    /// ef_construction, select by heuristic, link both ways.
    fn insert(&self, q: u32, s: &mut BuildScratch) {
        let Some(&lq) = self.levels.get(q as usize) else { return };
        let qv = self.vec(q);
        let (ep, top) = loop {
            if let Some(e) = *self.entry.read() {
                break e;
            }
            let mut w = self.entry.write();
            if w.is_none() {
                *w = Some((q, lq));
                return;
            }
        };
        if ep == q {
            return;
        }
        let BuildScratch {
            search,
            descent_distances,
            w,
            entries,
            dists,
            kept,
            pruned,
            sel,
            nbrs,
            newl,
            list,
            old,
        } = s;
        let mut view = BuildView { b: self };
        let mut cur = Candidate { id: ep, distance: self.pair(q, ep) };
        if top > lq {
            cur = greedy_descend(&mut view, qv, cur, top, lq + 1, nbrs, descent_distances);
        }
        entries.clear();
        entries.push(cur);
        let efc = self.params.ef_construction.max(1);
        for level in (0..=lq.min(top)).rev() {
            search.search_layer(&mut view, qv, entries, efc, level, Eligible::Any, w);
            w.retain(|c| c.id != q);
            let max = self.params.max_neighbors(level);
            dists.clear();
            dists.extend(w.iter().map(|c| c.distance));
            {
                let wr: &Vec<Candidate<u32>> = w;
                heuristic_select(
                    dists,
                    max,
                    super::PRUNE_ALPHA,
                    true,
                    |i, j| self.pair(wr[i].id, wr[j].id),
                    kept,
                    pruned,
                    sel,
                );
            }
            newl.clear();
            newl.extend(sel.iter().map(|&(i, k)| Nb { id: w[i].id, d: w[i].distance, kept: k }));
            // Our own list. Another thread may already have linked itself to
            // us on this layer (it found us through an upper layer): merge.
            if let (Some(slot), Some(lock)) = (self.slot(q, level), self.locks.get(q as usize)) {
                let _g = lock.lock();
                self.load_list(slot, old);
                list.clear();
                list.extend_from_slice(newl);
                for o in old.iter() {
                    insert_flagged(list, o.id, o.d, max, |a, b| self.pair(a, b));
                }
                self.store_list(slot, list);
            }
            // Reverse edges, one neighbour lock at a time.
            for nb in newl.iter() {
                if let (Some(slot), Some(lock)) =
                    (self.slot(nb.id, level), self.locks.get(nb.id as usize))
                {
                    let _g = lock.lock();
                    self.load_list(slot, list);
                    if insert_flagged(list, q, nb.d, max, |a, b| self.pair(a, b)) {
                        self.store_list(slot, list);
                    }
                }
            }
            if !w.is_empty() {
                std::mem::swap(entries, w);
            }
        }
        if lq > top {
            let mut e = self.entry.write();
            if e.is_none_or(|(_, t)| lq > t) {
                *e = Some((q, lq));
            }
        }
    }
}

/// An HNSW graph held in memory: what `CREATE INDEX` builds before the glue
/// writes it to pages, and a test double for the on-disk graph. Node ids are
/// dense u32 indexes; neighbour lists live in fixed-capacity slots of one flat
/// array, nearest-first.
pub(crate) struct MemGraph {
    dim: usize,
    params: Params,
    dist: Distance,
    pub(super) vectors: Vec<f32>,
    levels: Vec<u8>,
    /// Index of each node's level-1 list in `up` (see [`Slot`]).
    node_up: Vec<usize>,
    /// Layer-0 lists, fixed stride 2m+1: length word, then ids.
    l0: Vec<u32>,
    /// Upper-layer lists, stride m+1.
    up: Vec<u32>,
    deleted: Vec<bool>,
    entry: Option<(u32, u8)>,
    /// Level draws of `insert_one` (tests grow graphs one node at a time): the build's
    /// stream, continued.
    #[cfg(test)]
    rng: ChaCha8Rng,
}

impl Debug for MemGraph {
    // Summary only: the graph itself is far too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemGraph")
            .field("len", &self.len())
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("entry", &self.entry)
            .finish()
    }
}

/// Largest node count: ids must fit in u32 with room for sentinels.
const MAX_NODES: usize = (u32::MAX - 1) as usize;

impl MemGraph {
    #[cfg(test)]
    /// Empty graph, to be filled by [`MemGraph::insert_one`]; `seed` drives levels.
    pub(crate) fn new(dim: usize, params: Params, dist: Distance, seed: u64) -> MemGraph {
        MemGraph::empty(dim, params.sanitized(), dist, ChaCha8Rng::seed_from_u64(seed))
    }

    /// Empty graph with a given level RNG (shared by `new` and `build`).
    fn empty(dim: usize, params: Params, dist: Distance, rng: ChaCha8Rng) -> MemGraph {
        #[cfg(not(test))]
        let _ = rng;
        MemGraph {
            dim,
            params,
            dist,
            vectors: Vec::new(),
            levels: Vec::new(),
            node_up: Vec::new(),
            l0: Vec::new(),
            up: Vec::new(),
            deleted: Vec::new(),
            entry: None,
            #[cfg(test)]
            rng,
        }
    }

    /// Builds the graph over `vectors` (`dim` floats per node, a trailing
    /// partial vector is ignored) with `threads` rayon workers. Levels come
    /// from a ChaCha8 stream seeded with `seed`; with `threads == 1` the whole
    /// graph is deterministic. `progress(done)` is called every 1024 inserts,
    /// possibly from worker threads, and once at the end with the total.
    pub(crate) fn build(
        dim: usize,
        vectors: Vec<f32>,
        params: Params,
        dist: Distance,
        seed: u64,
        threads: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> MemGraph {
        let mut graph =
            MemGraph::build_unlinked(dim, vectors, params, dist, seed, threads, progress);
        graph.link_orphans();
        graph
    }

    /// [`MemGraph::build`] without the final orphan linking.
    pub(super) fn build_unlinked(
        dim: usize,
        mut vectors: Vec<f32>,
        params: Params,
        dist: Distance,
        seed: u64,
        threads: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> MemGraph {
        let params = params.sanitized();
        let n = vectors.len().checked_div(dim).unwrap_or(0).min(MAX_NODES);
        vectors.truncate(n * dim);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let levels: Vec<u8> = (0..n).map(|_| random_level(rng.next_u64(), params.m)).collect();
        let mut graph = MemGraph::empty(dim, params, dist, rng);
        if n == 0 {
            graph.vectors = vectors;
            progress(0);
            return graph;
        }
        let (node_up, l0, up, entry) = {
            let b = Builder::new(dim, &vectors, &levels, dist, params);
            let done = AtomicUsize::new(0);
            let tick = || {
                let d = done.fetch_add(1, AtomicOrdering::Relaxed) + 1;
                if d.is_multiple_of(PROGRESS_EVERY) {
                    progress(d);
                }
            };
            // Highest node first: the entry point then never moves.
            let top_level = levels.iter().copied().max().unwrap_or(0);
            let first = levels.iter().position(|&l| l == top_level).unwrap_or(0) as u32;
            let mut order: Vec<u32> = Vec::with_capacity(n);
            order.push(first);
            order.extend((0..n as u32).filter(|&i| i != first));
            let head = order.len().min(SEQUENTIAL_HEAD);
            let mut s = BuildScratch::new(n);
            for &i in &order[..head] {
                b.insert(i, &mut s);
                tick();
            }
            let rest = &order[head..];
            let threads = threads.max(1);
            let pool = if threads > 1 && rest.len() > 1 {
                rayon::ThreadPoolBuilder::new().num_threads(threads).build().ok()
            } else {
                None
            };
            match pool {
                Some(pool) => {
                    let next = AtomicUsize::new(0);
                    pool.scope(|sc| {
                        for _ in 0..threads {
                            sc.spawn(|_| {
                                let mut s = BuildScratch::new(n);
                                while let Some(&i) =
                                    rest.get(next.fetch_add(1, AtomicOrdering::Relaxed))
                                {
                                    b.insert(i, &mut s);
                                    tick();
                                }
                            });
                        }
                    });
                }
                None => {
                    for &i in rest {
                        b.insert(i, &mut s);
                        tick();
                    }
                }
            }
            let entry = *b.entry.read();
            // Freezing: the atomics become plain words, same layout.
            let l0: Vec<u32> = b.l0.into_iter().map(AtomicU32::into_inner).collect();
            let up: Vec<u32> = b.up.into_iter().map(AtomicU32::into_inner).collect();
            (b.node_up, l0, up, entry)
        };
        progress(n);
        graph.vectors = vectors;
        graph.levels = levels;
        graph.node_up = node_up;
        graph.l0 = l0;
        graph.up = up;
        graph.deleted = vec![false; n];
        graph.entry = entry;
        graph
    }

    /// Gives every layer-0 node (but the entry point) an incoming edge. Full
    /// lists with keepPruned can drop the last edge into a node; such a node
    /// is unreachable by any search. Each orphan is hosted by its nearest
    /// neighbour that can take it: one whose list has room, or one that has
    /// not yet given up an edge, which swaps its furthest entry reachable
    /// otherwise (in-degree >= 2) for the orphan. A full list gives up at most
    /// one edge this way; when all of an orphan's neighbours have, it hangs off
    /// the orphan last hosted for its nearest neighbour (a chain of orphans).
    ///
    /// The limit matters for inner product, which is not a metric: there most
    /// nodes can be orphans, all sharing the same few large-norm nodes as
    /// nearest neighbours, and giving each orphan one of those nodes' edges
    /// replaced nearly every list that searches go through (pgvector's TAP 012
    /// ip recall 0.91-0.96 against its 0.97). With metrics orphans are rare and
    /// nearly always find a host that has not given an edge yet.
    pub(super) fn link_orphans(&mut self) {
        let n = self.len();
        let mut indeg = vec![0u32; n];
        for i in 0..n as u32 {
            for &x in MemGraph::neighbors(self, i, 0) {
                if let Some(d) = indeg.get_mut(x as usize) {
                    *d += 1;
                }
            }
        }
        let entry = self.entry.map(|e| e.0);
        let cap = self.params.max_neighbors(0);
        let mut gave = vec![false; n];
        let mut chain: HashMap<u32, u32> = HashMap::new();
        for o in 0..n as u32 {
            if indeg.get(o as usize).is_none_or(|&d| d > 0) || Some(o) == entry {
                continue;
            }
            let cands: Vec<u32> = MemGraph::neighbors(self, o, 0).to_vec();
            let chained = cands.first().and_then(|f| chain.get(f)).copied();
            let hosts = cands.iter().map(|&nb| (nb, false)).chain(chained.map(|h| (h, true)));
            for (nb, via_chain) in hosts {
                let mut list: Vec<u32> = MemGraph::neighbors(self, nb, 0).to_vec();
                if list.contains(&o) || nb == o {
                    continue;
                }
                if list.len() >= cap {
                    if !via_chain && gave.get(nb as usize).is_none_or(|&g| g) {
                        continue;
                    }
                    let Some(pos) =
                        list.iter().rposition(|&x| indeg.get(x as usize).is_some_and(|&d| d >= 2))
                    else {
                        continue;
                    };
                    let x = list.remove(pos);
                    if let Some(d) = indeg.get_mut(x as usize) {
                        *d -= 1;
                    }
                    if let Some(g) = gave.get_mut(nb as usize) {
                        *g = true;
                    }
                }
                // Keep the list nearest-first.
                let nv = self.vector(nb);
                let d_o = clean((self.dist)(nv, self.vector(o)));
                let pos = list
                    .iter()
                    .position(|&x| clean((self.dist)(nv, self.vector(x))) > d_o)
                    .unwrap_or(list.len());
                list.insert(pos, o);
                if let Some(d) = indeg.get_mut(o as usize) {
                    *d += 1;
                }
                self.set_list(nb, 0, list.into_iter());
                if let Some(&f) = cands.first() {
                    chain.insert(f, o);
                }
                break;
            }
        }
    }

    #[cfg(test)]
    /// Appends empty slots for a new node of `level`.
    pub(super) fn push_slots(&mut self, level: u8) {
        let level = level.min(MAX_LEVEL);
        let (m0, m) = (self.params.max_neighbors(0), self.params.max_neighbors(1));
        let upper = self.up.len() / (m + 1);
        self.levels.push(level);
        self.node_up.push(upper);
        self.l0.resize(self.l0.len() + m0 + 1, 0);
        self.up.resize(self.up.len() + level as usize * (m + 1), 0);
        self.deleted.push(false);
    }

    /// Slot of a node's list on `level`.
    #[inline]
    fn slot(&self, id: u32, level: u8) -> Option<Slot> {
        slot_of(&self.levels, &self.node_up, &self.params, id, level)
    }

    /// Overwrites a slot with up to `cap` ids.
    fn set_list(&mut self, id: u32, level: u8, ids: impl Iterator<Item = u32>) {
        let Some(s) = self.slot(id, level) else { return };
        let arr = if s.upper { &mut self.up } else { &mut self.l0 };
        let Some(dst) = arr.get_mut(s.base..s.base + 1 + s.cap) else { return };
        let mut k = 0;
        for x in ids.take(s.cap) {
            dst[1 + k] = x;
            k += 1;
        }
        dst[0] = k as u32;
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.levels.len()
    }

    #[cfg(test)]
    /// Whether the graph has no node.
    pub(crate) fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Vector dimension.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    #[cfg(test)]
    /// Parameters in force (sanitized).
    pub(crate) fn params(&self) -> Params {
        self.params
    }

    /// Level of node `i` (0 for an unknown node).
    pub(crate) fn level(&self, i: u32) -> u8 {
        self.levels.get(i as usize).copied().unwrap_or(0)
    }

    /// Neighbours of `i` on `level`, nearest-first (empty when none/unknown).
    #[inline]
    pub(crate) fn neighbors(&self, i: u32, level: u8) -> &[u32] {
        match self.slot(i, level) {
            Some(s) => {
                let arr = if s.upper { &self.up } else { &self.l0 };
                let len = arr.get(s.base).map_or(0, |&l| (l as usize).min(s.cap));
                arr.get(s.base + 1..s.base + 1 + len).unwrap_or(&[])
            }
            None => &[],
        }
    }

    /// All vectors, node after node.
    pub(crate) fn vectors_flat(&self) -> &[f32] {
        &self.vectors
    }

    /// Vector of node `i` (empty for an unknown node).
    pub(crate) fn vector(&self, i: u32) -> &[f32] {
        let s = (i as usize).saturating_mul(self.dim);
        self.vectors.get(s..s.saturating_add(self.dim)).unwrap_or(&[])
    }

    /// Entry point and its level.
    pub(crate) fn entry(&self) -> Option<(u32, u8)> {
        self.entry
    }

    /// Order in which to lay nodes out on pages holding about `per_page` nodes each: runs
    /// of `per_page` nodes, each run a node followed by its level-0 neighbourhood
    /// (breadth-first, nearest lists first), runs started in breadth-first order from the
    /// entry point. A search scores a node's neighbours right after reaching it, so
    /// neighbourhoods sharing pages means fewer distinct pages (buffer pins, TLB and cache
    /// misses) per query than a plain breadth-first order, whose neighbours spread over
    /// whole BFS layers. Nodes BFS does not reach come last, clustered the same way.
    pub(crate) fn page_layout(&self, per_page: usize) -> Vec<u32> {
        let n = self.len();
        let per_page = per_page.max(1);
        let mut placed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        // seeds: BFS from the entry point, then everything else in id order
        let mut seeds = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        let mut queue = std::collections::VecDeque::new();
        if let Some((ep, _)) = self.entry() {
            seen[ep as usize] = true;
            queue.push_back(ep);
            while let Some(x) = queue.pop_front() {
                seeds.push(x);
                for &y in self.neighbors(x, 0) {
                    if !std::mem::replace(&mut seen[y as usize], true) {
                        queue.push_back(y);
                    }
                }
            }
        }
        seeds.extend((0..n as u32).filter(|&i| !seen[i as usize]));
        // in-edges, so a candidate's ties to the page count both ways
        let mut rev: Vec<Vec<u32>> = vec![Vec::new(); n];
        for i in 0..n as u32 {
            for &j in self.neighbors(i, 0) {
                rev[j as usize].push(i);
            }
        }
        // candidate -> links to the page being filled
        let mut score: HashMap<u32, u32> = HashMap::new();
        for seed in seeds {
            if placed[seed as usize] {
                continue;
            }
            score.clear();
            let mut next = Some(seed);
            let mut filled = 0;
            while let Some(x) = next {
                placed[x as usize] = true;
                order.push(x);
                filled += 1;
                score.remove(&x);
                if filled >= per_page {
                    break;
                }
                for &y in self.neighbors(x, 0).iter().chain(rev[x as usize].iter()) {
                    if !placed[y as usize] {
                        *score.entry(y).or_default() += 1;
                    }
                }
                // the unplaced node most linked to the page (lowest id among equals)
                next = score.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(&y, _)| y);
            }
        }
        order
    }

    #[cfg(test)]
    /// Heap bytes held (the glue compares this with maintenance_work_mem).
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.vectors.capacity() * 4
            + self.levels.capacity()
            + self.node_up.capacity() * 8
            + self.l0.capacity() * 4
            + self.up.capacity() * 4
            + self.deleted.capacity()
    }

    /// Rough peak memory of `build` for `n` vectors, so the glue can decide
    /// up front whether an in-memory build fits (build lists carry a distance
    /// and a flag per edge, and the frozen copy coexists briefly).
    pub(crate) fn estimated_memory_bytes(n: usize, dim: usize, params: Params) -> usize {
        let p = params.sanitized();
        let (m0, m) = (p.max_neighbors(0), p.max_neighbors(1));
        // vector + layer-0 ids (build atomics and frozen copy) + packed
        // distance/flag words + lock, level, offset, deleted flag; upper
        // layers hold about 1/(m-1) lists of m+1 words per node, same split.
        let layer0 = (m0 + 1) * (4 + 4 + 8);
        let upper = (m + 1) * 16 / (p.m - 1).max(1);
        let per_node = dim * 4 + layer0 + upper + 1 + 1 + 8 + 1;
        n.saturating_mul(per_node)
    }

    #[cfg(test)]
    /// Marks node `i` deleted: still traversable, never returned by scans.
    pub(crate) fn mark_deleted(&mut self, i: u32) {
        if let Some(d) = self.deleted.get_mut(i as usize) {
            *d = true;
        }
    }

    /// Whether node `i` is marked deleted.
    pub(crate) fn is_deleted(&self, i: u32) -> bool {
        self.deleted.get(i as usize).copied().unwrap_or(false)
    }

    #[cfg(test)]
    /// Inserts one vector through the same plan/apply path the glue uses for
    /// aminsert. Returns its id, or None for a wrong-dimension vector.
    pub(crate) fn insert_one(&mut self, vector: &[f32]) -> Option<u32> {
        let level = random_level(self.rng.next_u64(), self.params.m);
        self.insert_with_level(vector, level)
    }

    #[cfg(test)]
    /// [`MemGraph::insert_one`] with a caller-chosen level.
    pub(crate) fn insert_with_level(&mut self, vector: &[f32], level: u8) -> Option<u32> {
        if vector.len() != self.dim || self.dim == 0 || self.len() >= MAX_NODES {
            return None;
        }
        let id = self.len() as u32;
        self.vectors.extend_from_slice(vector);
        self.push_slots(level);
        let level = self.level(id);
        let (params, dist) = (self.params, self.dist);
        let plan = plan_insert(self, id, vector, level, params, dist);
        apply_insert(self, &plan);
        Some(id)
    }

    #[cfg(test)]
    /// Convenience k-NN over this graph with a stamp visited set.
    pub(crate) fn knn(&self, query: &[f32], k: usize, ef: usize) -> Vec<Candidate<u32>> {
        if k == 0 {
            return Vec::new();
        }
        let mut store = self;
        let mut s = Searcher::with_options(
            &mut store,
            query,
            ef.max(k),
            SearchOptions::default(),
            StampVisited::new(self.len()),
        );
        collect_k(&mut s, &mut store, k)
    }

    /// Distance used by the GraphStore impls: None on a dimension mismatch
    /// so a bad query never reaches a SIMD kernel with unequal lengths.
    #[inline]
    pub(super) fn store_distance(&self, id: u32, query: &[f32]) -> Option<f32> {
        if query.len() != self.dim {
            return None;
        }
        let v = self.vector(id);
        if v.is_empty() {
            None
        } else {
            Some((self.dist)(v, query))
        }
    }
}

/// One GraphStore implementation for the graph and for a shared view of it (`&MemGraph`,
/// so many threads can search one graph): both delegate to the inherent accessors.
macro_rules! mem_graph_store {
    ($t:ty) => {
        impl GraphStore for $t {
            type Id = u32;
            fn entry_point(&mut self) -> Option<(u32, u8)> {
                self.entry
            }
            fn distance(&mut self, id: u32, query: &[f32]) -> Option<f32> {
                self.store_distance(id, query)
            }
            fn neighbors(&mut self, id: u32, level: u8, out: &mut Vec<u32>) {
                out.extend_from_slice(MemGraph::neighbors(self, id, level));
            }
            fn is_deleted(&mut self, id: u32) -> bool {
                MemGraph::is_deleted(self, id)
            }
            fn prefetch(&mut self, id: u32) {
                prefetch_slice(self.vector(id));
            }
            fn prefetch_neighbors(&mut self, id: u32, level: u8) {
                if let Some(s) = self.slot(id, level) {
                    let arr = if s.upper { &self.up } else { &self.l0 };
                    if let Some(w) = arr.get(s.base..s.base + 1) {
                        prefetch_ptr(w.as_ptr() as *const i8);
                    }
                }
            }
        }
    };
}

mem_graph_store!(MemGraph);
mem_graph_store!(&MemGraph);

impl GraphWrite for MemGraph {
    // Writes into the fixed slot, truncating to its capacity.
    fn set_neighbors(&mut self, id: u32, level: u8, neighbors: &[u32]) {
        self.set_list(id, level, neighbors.iter().copied());
    }
    // Copies the stored vector.
    fn vector_of(&mut self, id: u32, out: &mut Vec<f32>) -> bool {
        let v = self.vector(id);
        out.extend_from_slice(v);
        !v.is_empty()
    }
    // The in-memory graph keeps its own entry point.
    #[cfg(test)]
    fn set_entry_point(&mut self, entry: Option<(u32, u8)>) {
        self.entry = entry;
    }
}
