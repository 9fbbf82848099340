//! Tenant graphs: one flat HNSW per group of an authorized index, built with the global one.

use std::cmp::Reverse;

use super::build::MemGraph;
use super::repair::ensure_reachable;
use super::{Distance, Params};

// ---------------------------------------------------------------------------
// Tenant graphs: one flat graph per group of an authorized index
// ---------------------------------------------------------------------------

/// Layer-0 links of one small HNSW per group (a tenant), built alongside the
/// global graph. A search seeded at a group's entry and walking only these
/// lists never reads another group's node: its work and results cannot depend
/// on how many other tenants' vectors lie near the query.
#[derive(Debug, Default)]
pub(crate) struct TenantLinks {
    /// Per node (global id): its nearest same-group neighbours, nearest-first.
    pub(crate) lists: Vec<Vec<u32>>,
    /// Per group (in `groups` order): the node its traversal starts from.
    pub(crate) entries: Vec<u32>,
    /// Per group: more starting nodes for large groups (the top levels of the group's
    /// HNSW, which the flat tenant graph does not keep): a scan starts from whichever of
    /// entry and pivots lies nearest the query instead of walking there from one node.
    pub(crate) pivots: Vec<Vec<u32>>,
}

/// Groups smaller than this get no pivots (a walk across them is short).
pub(super) const PIVOT_GROUP_MIN: usize = 1_000;
/// Pivots per large group: the nodes of the group HNSW's highest levels holding at least
/// `MIN_PIVOTS` of them, at most `MAX_PIVOTS`.
const MIN_PIVOTS: usize = 16;
const MAX_PIVOTS: usize = 64;

/// The pivots of a group graph: nodes of its highest levels, entry excluded.
fn pivots_of(g: &MemGraph) -> Vec<u32> {
    if g.len() < PIVOT_GROUP_MIN {
        return Vec::new();
    }
    let entry = g.entry().map(|e| e.0);
    let mut by_level: Vec<u32> =
        (0..g.len() as u32).filter(|&i| Some(i) != entry && g.level(i) > 0).collect();
    by_level.sort_by_key(|&i| (Reverse(g.level(i)), i));
    let mut out = Vec::new();
    let mut i = 0;
    while i < by_level.len() && out.len() < MIN_PIVOTS {
        let l = g.level(by_level[i]);
        while i < by_level.len() && g.level(by_level[i]) == l {
            out.push(by_level[i]);
            i += 1;
        }
    }
    out.truncate(MAX_PIVOTS);
    out
}

/// Groups at least this large (and a quarter of all nodes) are built with all
/// threads one after another; smaller ones are built one per thread.
const BIG_GROUP: usize = 20_000;

/// Builds the tenant graphs for `groups` (disjoint lists of node ids into
/// `vectors`), each a full HNSW of its members whose layer 0 is kept.
pub(crate) fn build_tenant_links(
    dim: usize,
    vectors: &[f32],
    groups: &[Vec<u32>],
    params: Params,
    dist: Distance,
    seed: u64,
    threads: usize,
) -> TenantLinks {
    use rayon::prelude::*;
    let n = vectors.len().checked_div(dim).unwrap_or(0);
    let params = params.sanitized();
    type Built = (Vec<(u32, Vec<u32>)>, u32, Vec<u32>);
    let build_one = |gi: usize, threads: usize| -> Built {
        let members: Vec<u32> = groups[gi].iter().copied().filter(|&i| (i as usize) < n).collect();
        let Some(&first) = members.first() else { return (Vec::new(), u32::MAX, Vec::new()) };
        if members.len() == 1 {
            return (vec![(first, Vec::new())], first, Vec::new());
        }
        let mut v = Vec::with_capacity(members.len() * dim);
        for &i in &members {
            v.extend_from_slice(&vectors[i as usize * dim..(i as usize + 1) * dim]);
        }
        let mut g = MemGraph::build(
            dim,
            v,
            params,
            dist,
            seed ^ (gi as u64).wrapping_mul(0x9e37_79b9),
            threads,
            &|_| {},
        );
        let nodes: Vec<(u32, u8)> = (0..g.len() as u32).map(|i| (i, g.level(i))).collect();
        ensure_reachable(&mut g, &nodes, params);
        let lists = (0..g.len() as u32)
            .map(|i| {
                (
                    members[i as usize],
                    g.neighbors(i, 0).iter().map(|&j| members[j as usize]).collect(),
                )
            })
            .collect();
        let pivots = pivots_of(&g).into_iter().map(|p| members[p as usize]).collect();
        (lists, g.entry().map_or(first, |(e, _)| members[e as usize]), pivots)
    };
    let is_big = |gi: usize| groups[gi].len() >= BIG_GROUP && groups[gi].len() * 4 >= n;
    let mut results: Vec<Option<Built>> = (0..groups.len()).map(|_| None).collect();
    for (gi, r) in results.iter_mut().enumerate() {
        if is_big(gi) {
            *r = Some(build_one(gi, threads));
        }
    }
    let small: Vec<usize> = (0..groups.len()).filter(|&gi| !is_big(gi)).collect();
    let built: Vec<(usize, Built)> = match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(|| small.par_iter().map(|&gi| (gi, build_one(gi, 1))).collect()),
        Err(_) => small.iter().map(|&gi| (gi, build_one(gi, 1))).collect(),
    };
    for (gi, r) in built {
        results[gi] = Some(r);
    }
    let mut out = TenantLinks {
        lists: vec![Vec::new(); n],
        entries: Vec::with_capacity(groups.len()),
        pivots: Vec::new(),
    };
    for r in results {
        let (lists, entry, pivots) = r.unwrap_or((Vec::new(), u32::MAX, Vec::new()));
        for (i, l) in lists {
            out.lists[i as usize] = l;
        }
        out.entries.push(entry);
        out.pivots.push(pivots);
    }
    out
}
