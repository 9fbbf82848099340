//! Neighbour selection: the heuristic (paper's Algorithm 4 with keepPrunedConnections,
//! relaxed by [`PRUNE_ALPHA`](super::PRUNE_ALPHA)) and its incremental form the build uses.

use std::cmp::Ordering;

#[cfg(test)]
use super::{cand_cmp, Candidate};
use super::{clean, relax, PRUNE_ALPHA};

// ---------------------------------------------------------------------------
// Neighbour selection heuristic
// ---------------------------------------------------------------------------

/// Core of the heuristic over candidates sorted nearest-first (`dists[i]` is
/// candidate i's distance to the base). `pair(i, j)` is the distance between
/// candidates. Writes the chosen indices, ascending (= nearest-first), each
/// with its "kept" flag (false = a pruned candidate used as filler). `alpha`
/// relaxes the pruning test: [`PRUNE_ALPHA`], or 1.0 for pgvector's plain rule.
#[allow(clippy::too_many_arguments)]
pub(super) fn heuristic_select(
    dists: &[f32],
    max: usize,
    alpha: f32,
    keep_pruned: bool,
    mut pair: impl FnMut(usize, usize) -> f32,
    kept: &mut Vec<usize>,
    pruned: &mut Vec<usize>,
    out: &mut Vec<(usize, bool)>,
) {
    kept.clear();
    pruned.clear();
    out.clear();
    if max == 0 {
        return;
    }
    for (i, &di) in dists.iter().enumerate() {
        if kept.len() >= max {
            break;
        }
        // Keep i only if it is closer to the base than to every kept one
        // (pgvector's CheckElementCloser: ties prune), relaxed by alpha.
        let good = kept.iter().all(|&r| relax(pair(i, r), alpha) > di);
        if good {
            kept.push(i);
        } else {
            pruned.push(i);
        }
    }
    let extra = if keep_pruned { (max - kept.len()).min(pruned.len()) } else { 0 };
    let (mut a, mut b) = (0, 0);
    while a < kept.len() || b < extra {
        let take_kept = b >= extra || (a < kept.len() && kept[a] < pruned[b]);
        if take_kept {
            out.push((kept[a], true));
            a += 1;
        } else {
            out.push((pruned[b], false));
            b += 1;
        }
    }
}

#[cfg(test)]
/// Public form of the heuristic (select_neighbors_heuristic with
/// keepPrunedConnections as an option): returns at most `max` candidates,
/// nearest-first. `pair(a, b)` gives the distance between two candidates.
pub(crate) fn select_neighbors_heuristic<Id: Copy + Ord>(
    candidates: &[Candidate<Id>],
    max: usize,
    keep_pruned: bool,
    mut pair: impl FnMut(Id, Id) -> f32,
) -> Vec<Candidate<Id>> {
    let mut c: Vec<Candidate<Id>> =
        candidates.iter().map(|x| Candidate { id: x.id, distance: clean(x.distance) }).collect();
    c.sort_unstable_by(cand_cmp);
    c.dedup_by(|a, b| a.id == b.id);
    let dists: Vec<f32> = c.iter().map(|x| x.distance).collect();
    let (mut kept, mut pruned, mut out) = (Vec::new(), Vec::new(), Vec::new());
    heuristic_select(
        &dists,
        max,
        PRUNE_ALPHA,
        keep_pruned,
        |i, j| clean(pair(c[i].id, c[j].id)),
        &mut kept,
        &mut pruned,
        &mut out,
    );
    out.iter().map(|&(i, _)| c[i]).collect()
}

/// One edge of the build-time graph: neighbour, its distance to the owner,
/// and whether the heuristic keeps it (false = filler from keepPruned).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Nb {
    pub(super) id: u32,
    pub(super) d: f32,
    pub(super) kept: bool,
}

/// Adds edge (`new_id`, `new_d`) to a flagged, nearest-first list and trims
/// it to `max`, giving exactly what the full heuristic with keepPruned would
/// give on old list + newcomer, in O(max) pair distances in the common case.
/// Returns whether the newcomer stayed in the list.
pub(super) fn insert_flagged(
    list: &mut Vec<Nb>,
    new_id: u32,
    new_d: f32,
    max: usize,
    mut pair: impl FnMut(u32, u32) -> f32,
) -> bool {
    if max == 0 || list.iter().any(|x| x.id == new_id) {
        return false;
    }
    let new_d = clean(new_d);
    let key = |x: &Nb| (x.d, x.id);
    let less =
        |a: (f32, u32), b: (f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)) == Ordering::Less;
    let p = list.partition_point(|x| less(key(x), (new_d, new_id)));
    // Fast path: list full, newcomer last and every old entry kept -> the
    // heuristic stops at `max` kept entries and never looks at it.
    if p == list.len() && list.len() >= max && list.iter().all(|x| x.kept) {
        return false;
    }
    // Status of the newcomer: only kept entries before it matter.
    let new_kept =
        list[..p].iter().filter(|x| x.kept).all(|x| relax(pair(new_id, x.id), PRUNE_ALPHA) > new_d);
    list.insert(p, Nb { id: new_id, d: new_d, kept: new_kept });
    if new_kept {
        // The kept set before each later entry grew by the newcomer (and by
        // entries that flip to kept below) and lost entries that flip to
        // pruned. A kept entry can only be pruned by an addition; a pruned
        // entry can only be revived by a removal, which needs a full recheck.
        let mut added: Vec<u32> = vec![new_id];
        let mut removed_any = false;
        for j in p + 1..list.len() {
            let e = list[j];
            if e.kept {
                if added.iter().any(|&a| {
                    relax(pair(e.id, a), PRUNE_ALPHA).partial_cmp(&e.d) != Some(Ordering::Greater)
                }) {
                    list[j].kept = false;
                    removed_any = true;
                }
            } else if removed_any {
                let ok = list[..j]
                    .iter()
                    .filter(|r| r.kept)
                    .all(|r| relax(pair(e.id, r.id), PRUNE_ALPHA) > e.d);
                if ok {
                    list[j].kept = true;
                    added.push(e.id);
                }
            }
        }
    }
    if list.len() > max {
        // keepPruned result = kept ∪ nearest pruned: drop the furthest
        // pruned entry, or the furthest entry when none is pruned.
        let idx = list.iter().rposition(|x| !x.kept).unwrap_or(list.len() - 1);
        list.remove(idx);
    }
    list.iter().any(|x| x.id == new_id)
}
