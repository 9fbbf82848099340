//! Graph search: the greedy descent through the upper layers, and [`Searcher`], the one
//! best-first beam search. Its modes: a single pass over one layer (what inserts, the
//! build and vacuum repair run on each layer, with every node or only live ones
//! eligible), and the layer-0 search of index scans, resumable batch after batch
//! (iterative scans), optionally filtered (ACORN-1) and optionally seeded from tenant
//! groups instead of the entry point.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt::Debug;
use std::hash::Hash;

use super::store::GraphStore;
use super::visited::{IdHashSet, VisitedSet};
use super::{cand_cmp, clean, Candidate, Item};

/// Safety bound on greedy steps per layer (guards against stores whose
/// distances are not deterministic).
const GREEDY_STEP_LIMIT: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Greedy descent
// ---------------------------------------------------------------------------

/// Greedy (ef = 1) descent through layers `top` down to `bottom` inclusive;
/// returns the local minimum found on layer `bottom`. Used for the upper
/// layers of every search and insert. `nbrs` is a buffer; `count` counts distances.
pub(super) fn greedy_descend<S: GraphStore>(
    store: &mut S,
    query: &[f32],
    start: Candidate<S::Id>,
    top: u8,
    bottom: u8,
    nbrs: &mut Vec<S::Id>,
    count: &mut u64,
) -> Candidate<S::Id> {
    let mut cur = Candidate { id: start.id, distance: clean(start.distance) };
    if bottom > top {
        return cur;
    }
    // Each list is scored in one `score_batch` call (a page store then overlaps the
    // memory latencies of the whole list), and read in list order as before.
    let mut scores = Vec::new();
    for level in (bottom..=top).rev() {
        // Strictly decreasing distances guarantee termination for honest
        // stores; the step limit covers dishonest ones.
        for _ in 0..GREEDY_STEP_LIMIT {
            let mut changed = false;
            nbrs.clear();
            store.neighbors(cur.id, level, nbrs);
            store.score_batch(nbrs, query, &mut scores);
            for (&n, s) in nbrs.iter().zip(scores.iter()) {
                // Deleted nodes are traversed like live ones.
                if let Some((d, _)) = *s {
                    *count += 1;
                    let d = clean(d);
                    if d < cur.distance {
                        cur = Candidate { id: n, distance: d };
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }
    cur
}

// ---------------------------------------------------------------------------
// Searcher: the beam search
// ---------------------------------------------------------------------------

/// Which scored nodes a search may return (every scored node is expanded either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Eligible {
    /// Every node, deleted ones included: the layer searches of inserts and the build,
    /// which filter their results themselves.
    Any,
    /// Nodes not deleted: vacuum repair, which must link only live nodes.
    Live,
    /// Nodes not deleted that pass the store's filter: index scans.
    Passing,
}

/// Options of a [`Searcher`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SearchOptions {
    /// ACORN-1 traversal: nodes failing `passes()` (or deleted) are never
    /// scored; their neighbours are examined instead (2-hop).
    pub(crate) filtered: bool,
    /// In filtered mode, stop 2-hop expansion of a node once this many
    /// passing nodes were found around it (ACORN's truncation); 0 = the size
    /// of the node's own list.
    pub(crate) two_hop_limit: usize,
    /// Stop expanding once this many nodes were visited (pgvector's
    /// `hnsw.max_scan_tuples`); 0 = unlimited. Later batches then only drain
    /// the discarded pool.
    pub(crate) max_visited: usize,
    /// Only the first batch will be asked for (a plain scan without
    /// `hnsw.iterative_scan`): a node that cannot enter a full batch is
    /// dropped at once instead of being kept for later batches, as in the
    /// paper's search, which saves two heap pushes per such node.
    pub(crate) one_batch: bool,
}

/// Failing node waiting to be expanded, ordered by the distance of the
/// scored node it was reached from, then by hop count.
#[derive(Clone, Copy, Debug)]
struct Front<Id> {
    prio: f32,
    hops: u16,
    id: Id,
}

impl<Id: Ord> Ord for Front<Id> {
    // Nearest origin first, then fewer hops, then id for determinism.
    fn cmp(&self, o: &Self) -> Ordering {
        self.prio.total_cmp(&o.prio).then(self.hops.cmp(&o.hops)).then_with(|| self.id.cmp(&o.id))
    }
}
impl<Id: Ord> PartialOrd for Front<Id> {
    // Delegates to the total order.
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<Id: Ord> PartialEq for Front<Id> {
    // Consistent with `cmp`.
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<Id: Ord> Eq for Front<Id> {}

/// A resumable k-NN search (pgvector 0.8 iterative scan). The first
/// [`Searcher::next_batch`] returns the `ef` best nodes; later calls resume
/// from the unexpanded candidates and the pool of discarded ones and return
/// the next `ef` best not yet returned ("relaxed order": each batch sorted,
/// batches roughly increasing). Only passing, non-deleted nodes are returned;
/// an empty batch means the reachable graph is exhausted.
pub(crate) struct Searcher<Id, V = IdHashSet<Id>> {
    query: Vec<f32>,
    ef: usize,
    opts: SearchOptions,
    /// The layer searched (0 but for the single-layer passes of inserts and repairs).
    level: u8,
    returns: Eligible,
    /// Scored nodes and expanded failing nodes.
    visited: V,
    /// Nodes known to fail the filter (expanded or waiting in `frontier`).
    failing: V,
    /// Scored, not yet expanded nodes (all of them, so nothing is lost).
    cand: BinaryHeap<Reverse<Item<Id>>>,
    /// Eligible nodes pushed out of (or never admitted to) a batch.
    pool: BinaryHeap<Reverse<Item<Id>>>,
    /// Nodes that could not enter the full batch, kept unordered until a later
    /// batch needs them (`merge_spilled`): `later` belongs to `cand` (such a node
    /// is never expanded in this batch, whose worst distance only shrinks),
    /// `spill` to `pool`. Most scans ask for one batch and never pay for their
    /// heap order.
    later: Vec<Item<Id>>,
    spill: Vec<Item<Id>>,
    /// Filtered mode: failing nodes not expanded yet.
    frontier: BinaryHeap<Reverse<Front<Id>>>,
    /// Current batch (max-heap, size <= ef).
    w: BinaryHeap<Item<Id>>,
    /// Layer-0 starting points found by the descent, planted on first use.
    seeds: Vec<Candidate<Id>>,
    planted: bool,
    /// Whether the entry point was planted on layer 0 after the walk from the seeds ran
    /// out (`plant_entry`).
    entry_planted: bool,
    /// The entry point when its distance could not be computed: traversed,
    /// never returned.
    unscored: Option<Id>,
    stopped: bool,
    nbrs: Vec<Id>,
    nbrs2: Vec<Id>,
    failing_buf: Vec<Id>,
    pass_buf: Vec<Id>,
    scores: Vec<Option<(f32, bool)>>,
    dist_count: u64,
    filter_checks: u64,
    returned: u64,
}

impl<Id: Copy + Eq + Hash + Ord + Debug> Searcher<Id, IdHashSet<Id>> {
    #[cfg(test)]
    /// Unfiltered searcher with a hash visited set.
    pub(crate) fn new<S: GraphStore<Id = Id>>(store: &mut S, query: &[f32], ef: usize) -> Self {
        Self::with_options(store, query, ef, SearchOptions::default(), IdHashSet::default())
    }

    /// Every node the search has visited (scored, or looked through in filtered mode).
    pub(crate) fn visited_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.visited.iter().copied()
    }
}

impl<Id: Copy + Eq + Hash + Ord + Debug, V: VisitedSet<Id> + Default> Searcher<Id, V> {
    /// A searcher with no query yet.
    fn blank(ef: usize, opts: SearchOptions, visited: V) -> Self {
        Searcher {
            query: Vec::new(),
            ef: ef.max(1),
            opts,
            level: 0,
            returns: Eligible::Passing,
            visited,
            failing: V::default(),
            cand: BinaryHeap::new(),
            pool: BinaryHeap::new(),
            later: Vec::new(),
            spill: Vec::new(),
            frontier: BinaryHeap::new(),
            w: BinaryHeap::new(),
            seeds: Vec::new(),
            planted: true,
            entry_planted: false,
            unscored: None,
            stopped: false,
            nbrs: Vec::new(),
            nbrs2: Vec::new(),
            failing_buf: Vec::new(),
            pass_buf: Vec::new(),
            scores: Vec::new(),
            dist_count: 0,
            filter_checks: 0,
            returned: 0,
        }
    }

    /// General constructor; performs the upper-layer descent right away.
    pub(crate) fn with_options<S: GraphStore<Id = Id>>(
        store: &mut S,
        query: &[f32],
        ef: usize,
        opts: SearchOptions,
        visited: V,
    ) -> Self {
        let mut s = Self::blank(ef, opts, visited);
        s.reset(store, query);
        s
    }

    /// Like [`Searcher::with_options`], starting from explicit layer-0 seed groups
    /// ([`Searcher::reset_with_seeds`]).
    pub(crate) fn with_seeds<S: GraphStore<Id = Id>>(
        store: &mut S,
        query: &[f32],
        ef: usize,
        opts: SearchOptions,
        visited: V,
        seeds: &[Vec<Id>],
    ) -> Self {
        let mut s = Self::blank(ef, opts, visited);
        s.reset_with_seeds(store, query, seeds);
        s
    }

    /// Starts over with a new query, keeping every allocation (rescans and
    /// benchmarks reuse one searcher).
    pub(crate) fn reset<S: GraphStore<Id = Id>>(&mut self, store: &mut S, query: &[f32]) {
        self.clear_for(query);
        self.descend(store);
    }

    /// Starts over from explicit layer-0 seeds instead of the entry point: the tenant
    /// graphs of an authorized index are flat, one group of seeds (entry and pivots) per
    /// tenant group in the scan's `= ANY` list; each group starts from its seed nearest the
    /// query. With several groups, each is first searched on its own with a quarter of the
    /// beam and all it found seeds the joint search: one shared beam entered at each
    /// group's start would fill with the group whose start is nearest and never expand a
    /// group whose start lies far but whose members lie near (greedy walks to a local
    /// minimum were not enough: recall 0.875 for two 10% groups in the unit test).
    pub(crate) fn reset_with_seeds<S: GraphStore<Id = Id>>(
        &mut self,
        store: &mut S,
        query: &[f32],
        groups: &[Vec<Id>],
    ) {
        self.clear_for(query);
        let mut found = Vec::new();
        let live = groups.iter().filter(|g| !g.is_empty()).count();
        for group in groups {
            let mut best: Option<Candidate<Id>> = None;
            for &id in group {
                let Some(d) = store.distance(id, &self.query) else { continue };
                self.dist_count += 1;
                let c = Candidate { id, distance: clean(d) };
                if best.is_none_or(|b| cand_cmp(&c, &b) == Ordering::Less) {
                    best = Some(c);
                }
            }
            let Some(c) = best else { continue };
            if self.seeds.iter().any(|s| s.id == c.id) {
                continue;
            }
            if live == 1 {
                self.seeds.push(c);
                continue;
            }
            let local_ef = (self.ef / 4).max(MIN_SEED_EF);
            self.layer_pass(store, &[c], local_ef, 0, Eligible::Any, &mut found);
            self.seeds.append(&mut found);
        }
    }

    /// Empties every structure for a new query, keeping allocations.
    fn clear_for(&mut self, query: &[f32]) {
        self.query.clear();
        self.query.extend_from_slice(query);
        self.clear_state();
        self.seeds.clear();
        self.planted = false;
        self.entry_planted = false;
        self.unscored = None;
        self.dist_count = 0;
        self.filter_checks = 0;
        self.returned = 0;
    }

    /// Empties the traversal state (heaps, visited sets), keeping query, seeds and counters.
    fn clear_state(&mut self) {
        self.visited.clear();
        self.failing.clear();
        self.cand.clear();
        self.pool.clear();
        self.later.clear();
        self.spill.clear();
        self.frontier.clear();
        self.w.clear();
        self.stopped = false;
    }

    /// A searcher for single-layer passes ([`Searcher::search_layer`]) only.
    pub(super) fn for_layers(visited: V) -> Self {
        Self::blank(1, SearchOptions { one_batch: true, ..SearchOptions::default() }, visited)
    }

    /// One best-first pass over `level` for `query` from `entries` with beam `ef` (the
    /// paper's Algorithm 2): `out` gets the up to `ef` nearest nodes found that `returns`
    /// admits, nearest-first. Inserts, the build and vacuum repair run it on each layer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_layer<S: GraphStore<Id = Id>>(
        &mut self,
        store: &mut S,
        query: &[f32],
        entries: &[Candidate<Id>],
        ef: usize,
        level: u8,
        returns: Eligible,
        out: &mut Vec<Candidate<Id>>,
    ) {
        self.query.clear();
        self.query.extend_from_slice(query);
        self.layer_pass(store, entries, ef, level, returns, out);
    }

    /// [`Searcher::search_layer`] for the current query; the searcher's own settings and
    /// seeds are left as they were, its traversal state cleared.
    fn layer_pass<S: GraphStore<Id = Id>>(
        &mut self,
        store: &mut S,
        entries: &[Candidate<Id>],
        ef: usize,
        level: u8,
        returns: Eligible,
        out: &mut Vec<Candidate<Id>>,
    ) {
        let saved = (self.ef, self.opts, self.level, self.returns);
        self.clear_state();
        self.ef = ef.max(1);
        self.opts = SearchOptions { one_batch: true, ..SearchOptions::default() };
        self.level = level;
        self.returns = returns;
        for e in entries {
            if self.visited.insert(e.id) {
                let ok = self.eligible(store, e.id);
                self.push_scored(e.id, clean(e.distance), ok);
            }
        }
        self.run(store);
        out.clear();
        out.extend(self.w.drain().map(|it| Candidate { id: it.id, distance: it.d }));
        out.sort_unstable_by(cand_cmp);
        (self.ef, self.opts, self.level, self.returns) = saved;
        self.clear_state();
    }

    /// Descends the upper layers from the entry point to layer-0 seeds.
    fn descend<S: GraphStore<Id = Id>>(&mut self, store: &mut S) {
        if let Some((ep, top)) = store.entry_point() {
            let mut c = self.score_entry(store, ep);
            // Upper layers are descended without the filter: they only
            // navigate, nothing found there is returned.
            if self.opts.filtered && top >= 1 {
                // A filtered search starts layer 0 from the ef nearest nodes
                // of layer 1 rather than one: the passing nodes reachable
                // through 2-hop links form islands, and several starting
                // points (spread over the query's neighbourhood) let the
                // search reach the islands that matter.
                if top >= 2 {
                    c = greedy_descend(
                        store,
                        &self.query,
                        c,
                        top,
                        2,
                        &mut self.nbrs,
                        &mut self.dist_count,
                    );
                }
                let mut found = std::mem::take(&mut self.seeds);
                self.layer_pass(store, &[c], self.ef, 1, Eligible::Any, &mut found);
                self.seeds = found;
                if self.seeds.is_empty() {
                    self.seeds.push(c);
                }
            } else {
                if top >= 1 {
                    c = greedy_descend(
                        store,
                        &self.query,
                        c,
                        top,
                        1,
                        &mut self.nbrs,
                        &mut self.dist_count,
                    );
                }
                self.seeds.push(c);
            }
        }
    }

    #[cfg(test)]
    /// Changes the beam width for subsequent batches.
    pub(crate) fn set_ef(&mut self, ef: usize) {
        self.ef = ef.max(1);
    }

    /// Next batch of up to `ef` results, nearest-first; empty = exhausted.
    pub(crate) fn next_batch<S: GraphStore<Id = Id>>(
        &mut self,
        store: &mut S,
    ) -> Vec<Candidate<Id>> {
        let mut out = Vec::new();
        self.next_batch_into(store, &mut out);
        out
    }

    /// Allocation-free form of [`Searcher::next_batch`].
    pub(crate) fn next_batch_into<S: GraphStore<Id = Id>>(
        &mut self,
        store: &mut S,
        out: &mut Vec<Candidate<Id>>,
    ) {
        out.clear();
        self.w.clear();
        self.merge_spilled();
        while self.w.len() < self.ef {
            match self.pool.pop() {
                Some(Reverse(it)) => self.w.push(it),
                None => break,
            }
        }
        if !self.planted {
            self.planted = true;
            let seeds = std::mem::take(&mut self.seeds);
            for &seed in seeds.iter() {
                self.plant(store, seed);
            }
            self.seeds = seeds;
        }
        self.run(store);
        if self.w.is_empty() && self.plant_entry(store) {
            self.run(store);
        }
        out.extend(self.w.drain().map(|it| Candidate { id: it.id, distance: it.d }));
        out.sort_unstable_by(cand_cmp);
        self.returned += out.len() as u64;
    }

    /// A resumable search whose layer-0 walk from the descent's end ran out continues from
    /// the entry point, once: level 0 is a directed graph, and what build, insert and
    /// VACUUM keep (and `hnsw_check` verifies) is that every node is reachable from the
    /// entry point, not from wherever the descent ended. Without this an exhaustive
    /// iterative scan could miss a node whose only in-links come from the part of the
    /// graph the seeds do not reach. True when the entry was planted.
    fn plant_entry<S: GraphStore<Id = Id>>(&mut self, store: &mut S) -> bool {
        if self.entry_planted || self.opts.one_batch || self.stopped {
            return false;
        }
        self.entry_planted = true;
        let Some((ep, _)) = store.entry_point() else { return false };
        if self.visited.contains(ep) {
            return false;
        }
        let c = self.score_entry(store, ep);
        self.plant(store, c);
        true
    }

    /// The entry point as a candidate: its distance, or infinity (and remembered as
    /// `unscored`: traversed, never returned) when it cannot be computed.
    fn score_entry<S: GraphStore<Id = Id>>(&mut self, store: &mut S, ep: Id) -> Candidate<Id> {
        let d = store.distance(ep, &self.query).map(clean);
        self.dist_count += 1;
        if d.is_none() {
            self.unscored = Some(ep);
        }
        Candidate { id: ep, distance: d.unwrap_or(f32::INFINITY) }
    }

    /// Moves the nodes set aside by the last batch into their heaps (one
    /// rebuild each, not a push per node).
    fn merge_spilled(&mut self) {
        if !self.later.is_empty() {
            let mut v = std::mem::take(&mut self.cand).into_vec();
            v.extend(self.later.drain(..).map(Reverse));
            self.cand = BinaryHeap::from(v);
        }
        if !self.spill.is_empty() {
            let mut v = std::mem::take(&mut self.pool).into_vec();
            v.extend(self.spill.drain(..).map(Reverse));
            self.pool = BinaryHeap::from(v);
        }
    }

    /// Nodes visited so far (scored plus expanded failing nodes).
    pub(crate) fn visited_count(&self) -> usize {
        self.visited.len()
    }

    /// Distances computed so far, including the upper-layer descent.
    pub(crate) fn distance_computations(&self) -> u64 {
        self.dist_count
    }

    #[cfg(test)]
    /// `passes()`/`is_deleted()` evaluations so far.
    pub(crate) fn filter_checks(&self) -> u64 {
        self.filter_checks
    }

    #[cfg(test)]
    /// Whether no further batch can return anything.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.planted
            && self.pool.is_empty()
            && self.spill.is_empty()
            && (self.stopped
                || (self.cand.is_empty()
                    && self.later.is_empty()
                    && (!self.opts.filtered || self.frontier.is_empty())))
    }

    /// Eligible = may be returned, as `returns` says (for scans: passes the filter and is
    /// not deleted).
    fn eligible<S: GraphStore<Id = Id>>(&mut self, store: &mut S, id: Id) -> bool {
        match self.returns {
            Eligible::Any => true,
            Eligible::Live => !store.is_deleted(id),
            Eligible::Passing => {
                self.filter_checks += 1;
                // The filter first: stores answer it from cached keys, while the deleted
                // flag may need a page read, which only passing nodes should pay for.
                store.passes(id) && !store.is_deleted(id)
            }
        }
    }

    /// Seeds layer 0 with the node the descent ended on.
    fn plant<S: GraphStore<Id = Id>>(&mut self, store: &mut S, seed: Candidate<Id>) {
        if self.unscored == Some(seed.id) {
            if self.visited.insert(seed.id) {
                self.cand.push(Reverse(Item { d: f32::INFINITY, id: seed.id }));
            }
            return;
        }
        if self.opts.filtered {
            if !self.visited.insert(seed.id) {
                return;
            }
            // A failing seed still has a real distance: it joins the
            // candidates as a navigation-only node (expanded, never returned).
            let e = self.eligible(store, seed.id);
            if !e {
                self.failing.insert(seed.id);
            }
            self.push_scored(seed.id, seed.distance, e);
        } else if self.visited.insert(seed.id) {
            let e = self.eligible(store, seed.id);
            self.push_scored(seed.id, seed.distance, e);
        }
    }

    /// Records a scored node: always a future expansion candidate; if
    /// eligible, into the batch or, when it does not make the cut, the pool.
    fn push_scored(&mut self, id: Id, d: f32, eligible: bool) {
        let it = Item { d, id };
        let full = self.w.len() >= self.ef;
        if full && self.w.peek().is_some_and(|f| d > f.d) {
            // Farther than the whole full batch: not expanded in this batch (its
            // worst only shrinks) and not returned by it; set aside for a later
            // batch, or dropped when no later batch comes.
            if !self.opts.one_batch {
                self.later.push(it);
                if eligible {
                    self.spill.push(it);
                }
            }
            return;
        }
        self.cand.push(Reverse(it));
        if !eligible {
            return;
        }
        if !full {
            self.w.push(it);
        } else if self.w.peek().is_some_and(|f| it < *f) {
            self.w.push(it);
            if let Some(o) = self.w.pop() {
                if !self.opts.one_batch {
                    self.spill.push(o);
                }
            }
        } else if !self.opts.one_batch {
            self.spill.push(it);
        }
    }

    /// Computes the distance of a node the caller found eligible and records it;
    /// false when the node is unreadable.
    fn score_eligible<S: GraphStore<Id = Id>>(&mut self, store: &mut S, id: Id) -> bool {
        let Some(d) = store.distance(id, &self.query) else { return false };
        self.dist_count += 1;
        self.push_scored(id, clean(d), true);
        true
    }

    /// Best-first loop until the batch is full and no candidate can improve
    /// it; in filtered mode drains the frontier while the batch is short.
    fn run<S: GraphStore<Id = Id>>(&mut self, store: &mut S) {
        loop {
            if self.stopped
                || (self.opts.max_visited != 0 && self.visited.len() >= self.opts.max_visited)
            {
                self.stopped = true;
                break;
            }
            let full = self.w.len() >= self.ef;
            let bound =
                if full { self.w.peek().map_or(f32::INFINITY, |f| f.d) } else { f32::INFINITY };
            if let Some(&Reverse(c)) = self.cand.peek() {
                if !full || c.d <= bound {
                    self.cand.pop();
                    // Likely next expansion: start loading its list now.
                    if let Some(&Reverse(nx)) = self.cand.peek() {
                        store.prefetch_neighbors(nx.id, self.level);
                    }
                    self.expand(store, c);
                    continue;
                }
            }
            if self.opts.filtered && !full {
                if let Some(Reverse(f)) = self.frontier.pop() {
                    if self.visited.insert(f.id) {
                        self.bridge(store, f);
                    }
                    continue;
                }
            }
            break;
        }
    }

    /// Expands a scored node on layer 0.
    fn expand<S: GraphStore<Id = Id>>(&mut self, store: &mut S, c: Item<Id>) {
        let mut nbrs = std::mem::take(&mut self.nbrs);
        nbrs.clear();
        store.neighbors(c.id, self.level, &mut nbrs);
        if !self.opts.filtered {
            nbrs.retain(|&n| self.visited.insert(n));
            let mut scores = std::mem::take(&mut self.scores);
            store.score_batch(&nbrs, &self.query, &mut scores);
            for (&n, s) in nbrs.iter().zip(scores.iter()) {
                let Some((d, deleted)) = *s else { continue };
                self.dist_count += 1;
                // `eligible`, with the deleted flag the batch already read.
                let e = match self.returns {
                    Eligible::Any => true,
                    Eligible::Live => !deleted,
                    Eligible::Passing => {
                        self.filter_checks += 1;
                        !deleted && store.passes(n)
                    }
                };
                self.push_scored(n, clean(d), e);
            }
            self.scores = scores;
        } else {
            // ACORN-1: score passing neighbours, look through failing ones.
            let mut fb = std::mem::take(&mut self.failing_buf);
            fb.clear();
            let mut found = 0usize;
            // Passing neighbours are announced together first, so the store can score
            // them page by page as in the unfiltered path.
            let mut pass = std::mem::take(&mut self.pass_buf);
            pass.clear();
            for &n in nbrs.iter() {
                if self.visited.contains(n) {
                    continue;
                }
                if self.failing.contains(n) {
                    fb.push(n);
                    continue;
                }
                if self.eligible(store, n) {
                    self.visited.insert(n);
                    pass.push(n);
                } else {
                    self.failing.insert(n);
                    fb.push(n);
                }
            }
            let mut scores = std::mem::take(&mut self.scores);
            store.score_batch(&pass, &self.query, &mut scores);
            for (&n, s) in pass.iter().zip(scores.iter()) {
                let Some((d, _)) = *s else { continue };
                self.dist_count += 1;
                self.push_scored(n, clean(d), true);
                found += 1;
            }
            self.scores = scores;
            self.pass_buf = pass;
            let limit = if self.opts.two_hop_limit == 0 {
                nbrs.len().max(1)
            } else {
                self.opts.two_hop_limit
            };
            let mut n2s = std::mem::take(&mut self.nbrs2);
            for &f in fb.iter() {
                if found >= limit {
                    // Enough around this node; keep the rest reachable later.
                    self.frontier.push(Reverse(Front { prio: c.d, hops: 1, id: f }));
                    continue;
                }
                if !self.visited.insert(f) {
                    continue;
                }
                n2s.clear();
                store.neighbors(f, 0, &mut n2s);
                for &n2 in n2s.iter() {
                    if self.visited.contains(n2) || self.failing.contains(n2) {
                        continue;
                    }
                    if self.eligible(store, n2) {
                        self.visited.insert(n2);
                        found += self.score_eligible(store, n2) as usize;
                    } else {
                        self.failing.insert(n2);
                        self.frontier.push(Reverse(Front { prio: c.d, hops: 2, id: n2 }));
                    }
                }
            }
            self.nbrs2 = n2s;
            self.failing_buf = fb;
        }
        self.nbrs = nbrs;
    }

    /// Filtered mode: expands a failing node from the frontier (used only
    /// when the batch cannot be filled from scored nodes).
    fn bridge<S: GraphStore<Id = Id>>(&mut self, store: &mut S, f: Front<Id>) {
        let mut nbrs = std::mem::take(&mut self.nbrs);
        nbrs.clear();
        store.neighbors(f.id, 0, &mut nbrs);
        for &n in nbrs.iter() {
            if self.visited.contains(n) || self.failing.contains(n) {
                continue;
            }
            if self.eligible(store, n) {
                self.visited.insert(n);
                self.score_eligible(store, n);
            } else {
                self.failing.insert(n);
                self.frontier.push(Reverse(Front {
                    prio: f.prio,
                    hops: f.hops.saturating_add(1),
                    id: n,
                }));
            }
        }
        self.nbrs = nbrs;
    }
}

/// Pulls batches until `k` results (or exhaustion), then keeps the best k.
pub(super) fn collect_k<S: GraphStore, V: VisitedSet<S::Id> + Default>(
    s: &mut Searcher<S::Id, V>,
    store: &mut S,
    k: usize,
) -> Vec<Candidate<S::Id>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    while out.len() < k {
        s.next_batch_into(store, &mut batch);
        if batch.is_empty() {
            break;
        }
        out.extend_from_slice(&batch);
    }
    out.sort_unstable_by(cand_cmp);
    out.truncate(k);
    out
}

/// Full k-NN: descent, then layer-0 search with `max(ef, k)`. Deleted and
/// non-passing nodes may be traversed but are never returned.
pub(crate) fn knn<S: GraphStore>(
    store: &mut S,
    query: &[f32],
    k: usize,
    ef: usize,
) -> Vec<Candidate<S::Id>> {
    knn_with(store, query, k, ef, SearchOptions::default())
}

#[cfg(test)]
/// k-NN with ACORN-1 filtered traversal (see [`SearchOptions::filtered`]).
pub(crate) fn knn_filtered<S: GraphStore>(
    store: &mut S,
    query: &[f32],
    k: usize,
    ef: usize,
) -> Vec<Candidate<S::Id>> {
    knn_with(store, query, k, ef, SearchOptions { filtered: true, ..SearchOptions::default() })
}

/// k-NN with explicit options.
pub(crate) fn knn_with<S: GraphStore>(
    store: &mut S,
    query: &[f32],
    k: usize,
    ef: usize,
    opts: SearchOptions,
) -> Vec<Candidate<S::Id>> {
    if k == 0 {
        return Vec::new();
    }
    let mut s: Searcher<S::Id> =
        Searcher::with_options(store, query, ef.max(k), opts, IdHashSet::default());
    collect_k(&mut s, store, k)
}

/// Smallest beam of the per-group searches that seed a multi-group search.
const MIN_SEED_EF: usize = 8;
