//! Vacuum repair: re-selecting lists that point at deleted nodes, and relinking nodes
//! no search can reach.

use std::collections::{HashMap, HashSet, VecDeque};

use super::insert::{offered_list, NodeUpdate, Room, VecCache};
use super::search::{knn, Eligible, Searcher};
use super::select::heuristic_select;
use super::store::GraphWrite;
use super::visited::IdHashSet;
use super::{cand_cmp, Candidate, Distance, Params, MAX_LEVEL};

// ---------------------------------------------------------------------------
// Vacuum
// ---------------------------------------------------------------------------

/// The entry point after vacuum: the current one while it is live, else the live node of
/// the highest level (lowest id among equals, so the choice is deterministic); None when
/// no node is live. `live` lists every live node with its level. Returns None when the
/// entry point stays as it is.
pub(crate) fn replacement_entry<Id: Copy + Ord>(
    current: Option<(Id, u8)>,
    is_deleted: impl Fn(Id) -> bool,
    live: &[(Id, u8)],
) -> Option<Option<(Id, u8)>> {
    let dead = current.is_some_and(|(ep, _)| is_deleted(ep));
    if !dead && (current.is_some() || live.is_empty()) {
        return None;
    }
    Some(live.iter().copied().max_by_key(|&(id, l)| (l, std::cmp::Reverse(id))))
}

/// The repair candidates of `id` on `level` from its current list `cur`: its live
/// neighbours and the live neighbours of its deleted ones (two hops), each once, with
/// its distance to `id`; unreadable nodes are left out.
fn local_candidates<S: GraphWrite>(
    store: &mut S,
    cache: &mut VecCache<S::Id>,
    id: S::Id,
    level: u8,
    cur: &[S::Id],
    seen: &mut IdHashSet<S::Id>,
    dist: Distance,
) -> Vec<Candidate<S::Id>> {
    let mut cands = Vec::new();
    let mut tmp = Vec::new();
    seen.insert(id);
    for &c in cur {
        if store.is_deleted(c) {
            if !seen.insert(c) {
                continue;
            }
            tmp.clear();
            store.neighbors(c, level, &mut tmp);
            for &c2 in tmp.iter() {
                consider(store, cache, seen, &mut cands, id, c2, dist);
            }
        } else {
            consider(store, cache, seen, &mut cands, id, c, dist);
        }
    }
    cands
}

/// Adds `x` as a repair candidate for `base` if new, live and readable.
fn consider<S: GraphWrite>(
    store: &mut S,
    cache: &mut VecCache<S::Id>,
    seen: &mut IdHashSet<S::Id>,
    cands: &mut Vec<Candidate<S::Id>>,
    base: S::Id,
    x: S::Id,
    dist: Distance,
) {
    if !seen.insert(x) || store.is_deleted(x) {
        return;
    }
    let d = cache.pair(store, base, x, dist);
    if d.is_finite() {
        cands.push(Candidate { id: x, distance: d });
    }
}
/// Plans the repair of live node `id` (of level `level`) whose lists point at deleted
/// nodes, as pgvector's vacuum does: each affected level is re-selected like an insert's
/// with ef_construction, over the live neighbours it keeps, the live neighbours of its
/// deleted ones, and a live-only search (`Eligible::Live`) started at the node itself;
/// then the node is offered to each new neighbour's list (appended when there is room,
/// else kept only if the heuristic keeps it), so it keeps in-links. The first update is
/// the node's own (only the levels that change); the rest are its neighbours'. A
/// neighbour's deleted entries are dropped only to make room, so a neighbour that still
/// has some is repaired by its own turn with the same two-hop candidates. Unaffected
/// levels are left alone; an unreadable node yields its lists without the deleted entries.
pub(crate) fn plan_repair<S: GraphWrite>(
    store: &mut S,
    id: S::Id,
    level: u8,
    params: Params,
    dist: Distance,
) -> Vec<NodeUpdate<S::Id>> {
    let mut own = NodeUpdate { id, lists: Vec::new() };
    let mut others: Vec<NodeUpdate<S::Id>> = Vec::new();
    let mut cache = VecCache::new();
    let base = cache.load(store, id);
    let (mut cur, mut tmp, mut found) = (Vec::new(), Vec::new(), Vec::new());
    let mut search: Searcher<S::Id> = Searcher::for_layers(IdHashSet::default());
    for l in 0..=level.min(MAX_LEVEL) {
        cur.clear();
        store.neighbors(id, l, &mut cur);
        if !cur.iter().any(|&c| store.is_deleted(c)) {
            continue;
        }
        let Some(bv) = base else {
            cur.retain(|&c| !store.is_deleted(c));
            own.lists.push((l, cur.clone()));
            continue;
        };
        let max = params.max_neighbors(l);
        let mut seen: IdHashSet<S::Id> = IdHashSet::default();
        let mut cands = local_candidates(store, &mut cache, id, l, &cur, &mut seen, dist);
        let q: Vec<f32> = cache.get(bv).to_vec();
        let ef = params.ef_construction.max(max);
        // Deleted nodes are walked through (they still bridge the graph until every list
        // is repaired) but never returned, so the `ef` results are all live however many
        // of the nodes around the node were deleted.
        let seed = Candidate { id, distance: 0.0 };
        search.search_layer(store, &q, &[seed], ef, l, Eligible::Live, &mut found);
        for &c in found.iter() {
            if c.id != id && c.distance.is_finite() && seen.insert(c.id) {
                cands.push(c);
            }
        }
        cands.sort_unstable_by(cand_cmp);
        let dists: Vec<f32> = cands.iter().map(|c| c.distance).collect();
        let (mut kept, mut pruned, mut sel) = (Vec::new(), Vec::new(), Vec::new());
        heuristic_select(
            &dists,
            max,
            super::PRUNE_ALPHA,
            true,
            |i, j| cache.pair(store, cands[i].id, cands[j].id, dist),
            &mut kept,
            &mut pruned,
            &mut sel,
        );
        let chosen: Vec<Candidate<S::Id>> = sel.iter().map(|&(i, _)| cands[i]).collect();
        own.lists.push((l, chosen.iter().map(|c| c.id).collect()));
        for c in &chosen {
            let Some(list) = offered_list(
                store,
                c.id,
                l,
                id,
                c.distance,
                max,
                dist,
                &mut cache,
                Room::DeletedFirst,
                &mut tmp,
            ) else {
                continue;
            };
            match others.iter_mut().find(|u| u.id == c.id) {
                Some(u) => u.lists.push((l, list)),
                None => others.push(NodeUpdate { id: c.id, lists: vec![(l, list)] }),
            }
        }
    }
    let mut out = vec![own];
    out.extend(others);
    out
}

// ---------------------------------------------------------------------------
// Reachability
// ---------------------------------------------------------------------------

/// Makes every live node in `nodes` reachable from the entry point on level 0, where
/// every search ends (a node reachable only through upper levels is missed by a scan that
/// resumes on level 0). A cut-off node gets an in-link on level 0 from a nearby reachable
/// host: one of its own neighbours when possible, else a result of a search from the entry
/// point. A host with room takes the link; a full host gives up its furthest neighbour that
/// another reachable node also links to, so the relink cuts nobody else off; only when no
/// candidate host has room or such a neighbour does the nearest one give up its last
/// neighbour, and the next round relinks that one. The nodes the cut-off node reaches
/// become reachable with it. HNSW alone does not guarantee reachability (a parallel build,
/// the heuristic or a crash between an insert's records can leave a node without
/// in-links), and a node nobody links to is a row no index scan returns. Returns how many
/// nodes were re-linked.
pub(crate) fn ensure_reachable<S: GraphWrite>(
    store: &mut S,
    nodes: &[(S::Id, u8)],
    params: Params,
) -> usize {
    // Breadth-first from `from` over level 0, counting each reached node's in-links from
    // reached nodes in `indeg`.
    let spread = |store: &mut S,
                  from: S::Id,
                  reached: &mut HashSet<S::Id>,
                  indeg: &mut HashMap<S::Id, u32>,
                  buf: &mut Vec<S::Id>| {
        let mut queue = VecDeque::new();
        if reached.insert(from) {
            queue.push_back(from);
        }
        while let Some(x) = queue.pop_front() {
            buf.clear();
            store.neighbors(x, 0, buf);
            for &y in buf.iter() {
                *indeg.entry(y).or_default() += 1;
                if reached.insert(y) {
                    queue.push_back(y);
                }
            }
        }
    };
    let max = params.max_neighbors(0);
    let mut total = 0;
    let mut buf = Vec::new();
    let mut vector = Vec::new();
    // A relink that had to cut a neighbour off is repaired by the next round (a handful
    // of rounds always suffices in practice; each round only shrinks the set).
    for _round in 0..8 {
        let Some((ep, _)) = store.entry_point() else { return total };
        let mut reached: HashSet<S::Id> = HashSet::new();
        let mut indeg: HashMap<S::Id, u32> = HashMap::new();
        spread(store, ep, &mut reached, &mut indeg, &mut buf);
        let mut relinked = 0;
        for &(x, _) in nodes {
            if reached.contains(&x) || store.is_deleted(x) {
                continue;
            }
            // Hosts: x's own reachable neighbours first; search results only when none
            // of them can take the link without cutting another node off.
            buf.clear();
            store.neighbors(x, 0, &mut buf);
            let mut hosts: Vec<S::Id> = buf
                .iter()
                .copied()
                .filter(|y| reached.contains(y) && !store.is_deleted(*y))
                .collect();
            let mut chosen = pick_host(store, &hosts, &indeg, max, &mut buf);
            if chosen.is_none() {
                vector.clear();
                if store.vector_of(x, &mut vector) {
                    let ef = params.ef_construction.max(HOST_CANDIDATES);
                    let seen = hosts.len();
                    for c in knn(store, &vector, HOST_CANDIDATES, ef) {
                        if c.id != x && reached.contains(&c.id) && !hosts.contains(&c.id) {
                            hosts.push(c.id);
                        }
                    }
                    chosen = pick_host(store, &hosts[seen..], &indeg, max, &mut buf);
                }
            }
            // No host can: the nearest gives up its last neighbour.
            let Host { id: h, mut list, drop } = match chosen {
                Some(c) => c,
                None => {
                    let Some(&h) = hosts.first() else { continue };
                    buf.clear();
                    store.neighbors(h, 0, &mut buf);
                    Host { id: h, list: buf.clone(), drop: buf.len().checked_sub(1) }
                }
            };
            // The neighbour a host gives up is linked from x instead (x's furthest
            // neighbour makes room when x's list is full, which cuts nobody off: x was not
            // reached). Another in-link of that neighbour may come only from nodes it
            // reaches itself, so without this two cut-off nodes could take turns. So
            // everything reached before stays reached, through x, and every relink
            // reaches x: the rounds end.
            if let Some(i) = drop {
                let gone = list.remove(i);
                if gone != x && max > 0 {
                    buf.clear();
                    store.neighbors(x, 0, &mut buf);
                    let mut own: Vec<S::Id> = buf.iter().copied().filter(|&z| z != gone).collect();
                    own.truncate(max - 1);
                    own.push(gone);
                    store.set_neighbors(x, 0, &own);
                }
            }
            list.push(x);
            store.set_neighbors(h, 0, &list);
            *indeg.entry(x).or_default() += 1;
            relinked += 1;
            spread(store, x, &mut reached, &mut indeg, &mut buf);
        }
        total += relinked;
        if relinked == 0 {
            break;
        }
    }
    total
}

/// Nearest reachable nodes `ensure_reachable` considers as hosts for a cut-off node when
/// none of its own neighbours can take the link.
const HOST_CANDIDATES: usize = 64;

/// A node that takes an in-link for a cut-off node: its level-0 list and the index of the
/// neighbour it gives up for it (None: it has room).
struct Host<Id> {
    id: Id,
    list: Vec<Id>,
    drop: Option<usize>,
}

/// The first of `hosts` that can take one more level-0 link without cutting a node off:
/// one with room (no neighbour to drop), or one whose furthest neighbour with another
/// in-link from a reachable node can go (its index in the list). `indeg` counts in-links
/// from reachable nodes.
fn pick_host<S: GraphWrite>(
    store: &mut S,
    hosts: &[S::Id],
    indeg: &HashMap<S::Id, u32>,
    max: usize,
    buf: &mut Vec<S::Id>,
) -> Option<Host<S::Id>> {
    for &h in hosts {
        buf.clear();
        store.neighbors(h, 0, buf);
        if buf.len() < max {
            return Some(Host { id: h, list: buf.clone(), drop: None });
        }
        if let Some(i) = buf.iter().rposition(|y| indeg.get(y).is_some_and(|&d| d >= 2)) {
            return Some(Host { id: h, list: buf.clone(), drop: Some(i) });
        }
    }
    None
}
