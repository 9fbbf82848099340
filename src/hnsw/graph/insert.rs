//! Inserting into an existing graph (aminsert): a read-only plan, then an apply step.

use std::hash::Hash;

use super::search::{greedy_descend, Eligible, Searcher};
use super::select::heuristic_select;
use super::store::{GraphStore, GraphWrite};
use super::visited::{visited_for, IdHashMap, IdHashSet};
use super::{cand_cmp, clean, Candidate, Distance, Params, MAX_LEVEL};

// ---------------------------------------------------------------------------
// Insert into an existing graph (aminsert)
// ---------------------------------------------------------------------------

/// New lists for one existing node touched by an insert.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeUpdate<Id> {
    pub(crate) id: Id,
    /// (level, complete new neighbour list) pairs.
    pub(crate) lists: Vec<(u8, Vec<Id>)>,
}

/// Everything an insert changes, computed with reads only, so the glue can
/// take page locks and write each changed page once under WAL.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InsertPlan<Id> {
    pub(crate) id: Id,
    pub(crate) level: u8,
    /// The new node's neighbours, indexed by level (0..=level), nearest-first.
    pub(crate) neighbors: Vec<Vec<Id>>,
    /// Existing nodes whose lists change, grouped per node.
    pub(crate) updates: Vec<NodeUpdate<Id>>,
    /// Set when the new node becomes the entry point.
    pub(crate) new_entry: Option<(Id, u8)>,
    /// Distances computed while planning (search only).
    pub(crate) distance_computations: u64,
}

/// Vectors fetched through `vector_of`, each read once per operation.
pub(super) struct VecCache<Id> {
    map: IdHashMap<Id, Loc>,
    data: Vec<f32>,
}

/// Where a vector sits in a `VecCache` (offset, length); None: unreadable.
pub(super) type Loc = Option<(usize, usize)>;

impl<Id: Copy + Eq + Hash> VecCache<Id> {
    /// Empty cache.
    pub(super) fn new() -> Self {
        VecCache {
            map: IdHashMap::with_capacity_and_hasher(512, Default::default()),
            data: Vec::new(),
        }
    }

    /// Registers a vector the store cannot read yet (the node being inserted).
    pub(super) fn put(&mut self, id: Id, v: &[f32]) {
        let off = self.data.len();
        self.data.extend_from_slice(v);
        self.map.insert(id, Some((off, v.len())));
    }

    /// Location of `id`'s vector, fetching it (straight into the arena) on first use.
    pub(super) fn load<S: GraphWrite<Id = Id>>(&mut self, store: &mut S, id: Id) -> Loc {
        if let Some(e) = self.map.get(&id) {
            return *e;
        }
        let off = self.data.len();
        let r = if store.vector_of(id, &mut self.data) && self.data.len() > off {
            Some((off, self.data.len() - off))
        } else {
            self.data.truncate(off);
            None
        };
        self.map.insert(id, r);
        r
    }

    /// `load` memoised in a caller's slot: a candidate compared many times during a
    /// selection is looked up in the map once.
    pub(super) fn resolve<S: GraphWrite<Id = Id>>(
        &mut self,
        store: &mut S,
        id: Id,
        slot: &mut Option<Loc>,
    ) -> Loc {
        match *slot {
            Some(l) => l,
            None => {
                let l = self.load(store, id);
                *slot = Some(l);
                l
            }
        }
    }

    /// Slice for a loaded vector.
    pub(super) fn get(&self, r: (usize, usize)) -> &[f32] {
        self.data.get(r.0..r.0 + r.1).unwrap_or(&[])
    }

    /// Distance between two nodes, loading their vectors; +inf when either is unreadable.
    pub(super) fn pair<S: GraphWrite<Id = Id>>(
        &mut self,
        store: &mut S,
        a: Id,
        b: Id,
        dist: Distance,
    ) -> f32 {
        let x = self.load(store, a);
        let y = self.load(store, b);
        self.dist_at(x, y, dist)
    }

    /// Distance between two loaded vectors; +inf when either is unreadable or the
    /// lengths differ (never hand unequal slices to a SIMD kernel).
    pub(super) fn dist_at(&self, x: Loc, y: Loc, dist: Distance) -> f32 {
        match (x, y) {
            (Some(x), Some(y)) if x.1 == y.1 => clean(dist(self.get(x), self.get(y))),
            _ => f32::INFINITY,
        }
    }
}

/// Plans the insert of node `new_id` (already stored, not yet linked) with
/// `vector` at `level`: the new node's neighbour lists and every existing
/// list that changes. Deleted nodes are traversed but never linked to.
pub(crate) fn plan_insert<S: GraphWrite>(
    store: &mut S,
    new_id: S::Id,
    vector: &[f32],
    level: u8,
    params: Params,
    dist: Distance,
) -> InsertPlan<S::Id> {
    let level = level.min(MAX_LEVEL);
    let mut plan = InsertPlan {
        id: new_id,
        level,
        neighbors: vec![Vec::new(); level as usize + 1],
        updates: Vec::new(),
        new_entry: None,
        distance_computations: 0,
    };
    let Some((ep, top)) = store.entry_point() else {
        plan.new_entry = Some((new_id, level));
        return plan;
    };
    if ep == new_id {
        return plan;
    }
    let mut count = 1u64;
    let mut nbrs = Vec::new();
    let d0 = store.distance(ep, vector).map(clean).unwrap_or(f32::INFINITY);
    let mut entries = vec![Candidate { id: ep, distance: d0 }];
    if top > level {
        entries[0] =
            greedy_descend(store, vector, entries[0], top, level + 1, &mut nbrs, &mut count);
    }
    let mut search: Searcher<S::Id> = Searcher::for_layers(visited_for(params.ef_construction));
    let mut w = Vec::new();
    let mut cache = VecCache::new();
    cache.put(new_id, vector);
    let mut update_idx: IdHashMap<S::Id, usize> = IdHashMap::default();
    let mut cands: Vec<Candidate<S::Id>> = Vec::new();
    let (mut kept, mut pruned, mut sel, mut dists) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut locs: Vec<Option<Loc>> = Vec::new();
    let efc = params.ef_construction.max(1);
    for l in (0..=level.min(top)).rev() {
        search.search_layer(store, vector, &entries, efc, l, Eligible::Any, &mut w);
        cands.clear();
        for c in w.iter() {
            if c.id != new_id && !store.is_deleted(c.id) {
                cands.push(*c);
            }
        }
        let max = params.max_neighbors(l);
        dists.clear();
        dists.extend(cands.iter().map(|c| c.distance));
        locs.clear();
        locs.resize(cands.len(), None);
        heuristic_select(
            &dists,
            max,
            super::PRUNE_ALPHA,
            true,
            |i, j| {
                let x = cache.resolve(store, cands[i].id, &mut locs[i]);
                let y = cache.resolve(store, cands[j].id, &mut locs[j]);
                cache.dist_at(x, y, dist)
            },
            &mut kept,
            &mut pruned,
            &mut sel,
        );
        let chosen: Vec<Candidate<S::Id>> = sel.iter().map(|&(i, _)| cands[i]).collect();
        if let Some(slot) = plan.neighbors.get_mut(l as usize) {
            *slot = chosen.iter().map(|c| c.id).collect();
        }
        for c in &chosen {
            if let Some(list) = offered_list(
                store,
                c.id,
                l,
                new_id,
                c.distance,
                max,
                dist,
                &mut cache,
                Room::Heuristic,
                &mut nbrs,
            ) {
                let idx = *update_idx.entry(c.id).or_insert_with(|| {
                    plan.updates.push(NodeUpdate { id: c.id, lists: Vec::new() });
                    plan.updates.len() - 1
                });
                if let Some(u) = plan.updates.get_mut(idx) {
                    u.lists.push((l, list));
                }
            }
        }
        if !w.is_empty() {
            std::mem::swap(&mut entries, &mut w);
        }
    }
    if level > top {
        plan.new_entry = Some((new_id, level));
    }
    plan.distance_computations = count + search.distance_computations();
    plan
}

/// How a full neighbour list makes room for a newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Room {
    /// Re-select over list + newcomer with the heuristic (insert).
    Heuristic,
    /// Drop the list's deleted entries first, and only when it has none re-select
    /// (vacuum, where deleted entries are about to be unlinked anyway).
    DeletedFirst,
}

/// New list of neighbour `n` on `level` once `new_id` (at distance `d_new` from `n`) is
/// offered to it, or None when it stays unchanged (already there, or not kept). A list
/// with room gets the newcomer appended (no vector reads); a full one makes room as
/// `room` says. Insert and vacuum repair both link a node to its new neighbours this way.
#[allow(clippy::too_many_arguments)]
pub(super) fn offered_list<S: GraphWrite>(
    store: &mut S,
    n: S::Id,
    level: u8,
    new_id: S::Id,
    d_new: f32,
    max: usize,
    dist: Distance,
    cache: &mut VecCache<S::Id>,
    room: Room,
    buf: &mut Vec<S::Id>,
) -> Option<Vec<S::Id>> {
    buf.clear();
    store.neighbors(n, level, buf);
    if buf.contains(&new_id) || max == 0 {
        return None;
    }
    if buf.len() < max {
        let mut v = buf.clone();
        v.push(new_id);
        return Some(v);
    }
    if room == Room::DeletedFirst {
        let (dead, live): (Vec<S::Id>, Vec<S::Id>) =
            buf.iter().partition(|&&x| store.is_deleted(x));
        if !dead.is_empty() {
            let mut out = live;
            out.push(new_id);
            out.extend(dead.into_iter().take(max.saturating_sub(out.len())));
            return Some(out);
        }
    }
    let nv = cache.load(store, n)?;
    let mut seen = IdHashSet::with_capacity_and_hasher(buf.len(), Default::default());
    let mut cands = Vec::with_capacity(buf.len() + 1);
    for &c in buf.iter() {
        if c == n || !seen.insert(c) {
            continue;
        }
        // Unreadable neighbours get +inf and are the first to go.
        let cv = cache.load(store, c);
        cands.push((Candidate { id: c, distance: cache.dist_at(Some(nv), cv, dist) }, cv));
    }
    cands.push((Candidate { id: new_id, distance: clean(d_new) }, cache.load(store, new_id)));
    cands.sort_unstable_by(|a, b| cand_cmp(&a.0, &b.0));
    let dists: Vec<f32> = cands.iter().map(|c| c.0.distance).collect();
    let (mut kept, mut pruned, mut sel) = (Vec::new(), Vec::new(), Vec::new());
    // The plain rule (alpha 1, as pgvector) for a list that must give up an entry: the
    // relaxed one keeps nearly every old entry of a full list in high dimensions, so a
    // newcomer would rarely get in and could be left with no in-link at all.
    heuristic_select(
        &dists,
        max,
        1.0,
        true,
        |i, j| cache.dist_at(cands[i].1, cands[j].1, dist),
        &mut kept,
        &mut pruned,
        &mut sel,
    );
    let res: Vec<S::Id> = sel.iter().map(|&(i, _)| cands[i].0.id).collect();
    res.contains(&new_id).then_some(res)
}

/// The plan's list updates plus, when no updated list took the newcomer (the heuristic
/// kept it out of every full list), an in-link from its nearest neighbour on level 0 (on
/// the store's current view), replacing that list's last entry when it holds `max0`:
/// otherwise no search could ever reach the new node.
pub(crate) fn updates_with_in_link<S: GraphStore>(
    store: &mut S,
    plan: &InsertPlan<S::Id>,
    max0: usize,
) -> Vec<NodeUpdate<S::Id>> {
    let mut updates = plan.updates.clone();
    let linked = updates.iter().any(|u| u.lists.iter().any(|(_, l)| l.contains(&plan.id)));
    if !linked {
        if let Some(&nearest) = plan.neighbors.first().and_then(|l| l.first()) {
            let mut list = Vec::new();
            store.neighbors(nearest, 0, &mut list);
            if list.len() >= max0 {
                list.pop();
            }
            list.push(plan.id);
            updates.push(NodeUpdate { id: nearest, lists: vec![(0, list)] });
        }
    }
    updates
}

/// An existing element as the duplicate rule sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Element<'a> {
    pub(crate) deleted: bool,
    /// Heap rows it stands for.
    pub(crate) heap_tids: usize,
    pub(crate) vector: &'a [f32],
    /// Its encoded key columns (None: unreadable).
    pub(crate) keys: Option<&'a [u8]>,
}

/// Whether a new row with `vector` and `keys` joins `existing` (its nearest element, or
/// an equal one found by hash in a build) instead of becoming a node: the element is live,
/// can name one more heap row (fewer than `max_heap_tids`), and holds the same vector
/// (compared by bits: stored words may pack other types than f32) and the same key
/// columns, since an element's keys decide who may see all of its rows.
/// Duplicates then stay reachable: they are one node.
pub(crate) fn joins_element(
    existing: &Element,
    vector: &[f32],
    keys: &[u8],
    max_heap_tids: usize,
) -> bool {
    !existing.deleted
        && existing.heap_tids < max_heap_tids
        && existing.vector.len() == vector.len()
        && existing.vector.iter().zip(vector).all(|(a, b)| a.to_bits() == b.to_bits())
        && existing.keys == Some(keys)
}

#[cfg(test)]
/// Writes a plan through the store: the new node's lists, every update,
/// and the entry point if it moves.
pub(crate) fn apply_insert<S: GraphWrite>(store: &mut S, plan: &InsertPlan<S::Id>) {
    for (l, list) in plan.neighbors.iter().enumerate() {
        store.set_neighbors(plan.id, l as u8, list);
    }
    for u in &plan.updates {
        for (l, list) in &u.lists {
            store.set_neighbors(u.id, *l, list);
        }
    }
    if let Some(e) = plan.new_entry {
        store.set_entry_point(Some(e));
    }
}
