use super::{l2, Gen};

use crate::hnsw::graph::select::{
    heuristic_select, insert_flagged, select_neighbors_heuristic, Nb,
};
use crate::hnsw::graph::{cand_cmp, Candidate};

// The O(M) flagged insert equals the full heuristic (the build relies on it).
#[test]
fn incremental_prune_matches_full_heuristic() {
    let dim = 4;
    for seed in 0..40u64 {
        let mut g = Gen::new(seed);
        let n = 300;
        let pts: Vec<f32> = (0..n * dim).map(|_| g.normal()).collect();
        let v = |i: u32| &pts[i as usize * dim..(i as usize + 1) * dim];
        let pair = |a: u32, b: u32| l2(v(a), v(b));
        let base = 0u32;
        let max = 2 + (seed as usize % 12);
        let mut list: Vec<Nb> = Vec::new();
        for x in 1..n as u32 {
            let d = pair(base, x);
            insert_flagged(&mut list, x, d, max, pair);
            // reference: full heuristic over old list + x
            let mut cands: Vec<Candidate<u32>> =
                list.iter().map(|e| Candidate { id: e.id, distance: e.d }).collect();
            cands.sort_by(cand_cmp);
            let dists: Vec<f32> = cands.iter().map(|c| c.distance).collect();
            let (mut k, mut p, mut s) = (vec![], vec![], vec![]);
            heuristic_select(
                &dists,
                max,
                crate::hnsw::graph::PRUNE_ALPHA,
                true,
                |i, j| pair(cands[i].id, cands[j].id),
                &mut k,
                &mut p,
                &mut s,
            );
            // the list must be a fixed point of the heuristic, flags included
            let want: Vec<(u32, bool)> = s.iter().map(|&(i, f)| (cands[i].id, f)).collect();
            let got: Vec<(u32, bool)> = list.iter().map(|e| (e.id, e.kept)).collect();
            assert_eq!(got, want, "seed {seed} after {x}");
        }
    }
    // And against the full heuristic over old + new (not just fixed point).
    let dim = 3;
    for seed in 100..140u64 {
        let mut g = Gen::new(seed);
        let n = 120;
        let pts: Vec<f32> = (0..n * dim).map(|_| g.normal()).collect();
        let v = |i: u32| &pts[i as usize * dim..(i as usize + 1) * dim];
        let pair = |a: u32, b: u32| l2(v(a), v(b));
        let max = 6;
        let mut list: Vec<Nb> = Vec::new();
        for x in 1..n as u32 {
            let mut cands: Vec<Candidate<u32>> =
                list.iter().map(|e| Candidate { id: e.id, distance: e.d }).collect();
            cands.push(Candidate { id: x, distance: pair(0, x) });
            let full = select_neighbors_heuristic(&cands, max, true, pair);
            insert_flagged(&mut list, x, pair(0, x), max, pair);
            let got: Vec<u32> = list.iter().map(|e| e.id).collect();
            let want: Vec<u32> = full.iter().map(|c| c.id).collect();
            assert_eq!(got, want, "seed {seed} x {x}");
        }
    }
}
