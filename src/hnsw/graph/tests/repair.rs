use super::{clustered, exhaust, hits, l2, noprog, normal_data, truth, Gen};
use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use rand_chacha::ChaCha8Rng;

use crate::hnsw::graph::build::MemGraph;
use crate::hnsw::graph::repair::{ensure_reachable, plan_repair, replacement_entry};
use crate::hnsw::graph::store::GraphWrite;
use crate::hnsw::graph::Params;
use rand_chacha::rand_core::{RngCore, SeedableRng};

#[test]
fn ensure_reachable_relinks_cut_off_nodes() {
    let dim = 8;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let vectors: Vec<f32> =
        (0..2000 * dim).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
    let params = Params::new(8, 32);
    fn l2(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }
    let mut g = MemGraph::build(dim, vectors, params, l2, 3, 1, &|_| {});
    let nodes: Vec<(u32, u8)> = (0..g.len() as u32).map(|i| (i, g.level(i))).collect();
    // Cut node 7 off: remove it from every list that names it.
    let victim = if g.entry().map(|e| e.0) == Some(7) { 8 } else { 7 };
    for &(i, lvl) in &nodes {
        for l in 0..=lvl {
            let list: Vec<u32> =
                g.neighbors(i, l).iter().copied().filter(|&n| n != victim).collect();
            g.set_neighbors(i, l, &list);
        }
    }
    let reachable = |g: &mut MemGraph| {
        let (ep, _) = g.entry().unwrap();
        let mut seen = HashSet::from([ep]);
        let mut q = VecDeque::from([ep]);
        while let Some(x) = q.pop_front() {
            for &y in MemGraph::neighbors(g, x, 0) {
                if seen.insert(y) {
                    q.push_back(y);
                }
            }
        }
        seen.len()
    };
    assert!(reachable(&mut g) < g.len());
    assert!(ensure_reachable(&mut g, &nodes, params) >= 1);
    assert_eq!(reachable(&mut g), g.len());
    assert_eq!(ensure_reachable(&mut g, &nodes, params), 0, "idempotent");
}

// Vacuum: delete half, repair lists and entry point, recall on survivors.
#[test]
fn vacuum_half_deleted_then_repaired() {
    let (n, dim, k) = (10_000, 24, 10);
    let data = clustered(n, dim, 30, 41);
    let mut g = MemGraph::build(dim, data.clone(), Params::new(16, 64), l2, 12, 2, &noprog);
    let mut gen = Gen::new(5);
    let dead: Vec<bool> = (0..n).map(|_| gen.below(2) == 0).collect();
    for (i, _) in dead.iter().enumerate().filter(|x| *x.1) {
        g.mark_deleted(i as u32);
    }
    let t = Instant::now();
    let mut repaired = 0;
    let params = g.params();
    // As vacuum does: first the entry point, then every live node pointing at a deleted one.
    let live: Vec<(u32, u8)> =
        (0..n as u32).filter(|&i| !dead[i as usize]).map(|i| (i, g.level(i))).collect();
    if let Some(ne) = replacement_entry(g.entry(), |x| dead[x as usize], &live) {
        let ne = ne.unwrap();
        assert!(!dead[ne.0 as usize]);
        g.set_entry_point(Some(ne));
    }
    for &(i, level) in &live {
        if (0..=level).any(|l| g.neighbors(i, l).iter().any(|&x| dead[x as usize])) {
            for u in plan_repair(&mut g, i, level, params, l2) {
                for (l, list) in &u.lists {
                    g.set_neighbors(u.id, *l, list);
                }
            }
            repaired += 1;
        }
    }
    for &(i, level) in &live {
        for l in 0..=level {
            let list = g.neighbors(i, l);
            assert!(list.iter().all(|&x| !dead[x as usize] && x != i), "node {i} level {l}");
        }
    }
    let el = t.elapsed();
    let nq = 200;
    let mut h = 0;
    for j in 0..nq {
        let qi = (j * 47) % n;
        let q = &data[qi * dim..(qi + 1) * dim];
        let tr = truth(&data, dim, q, k, |x| !dead[x]);
        let r = g.knn(q, k, 64);
        assert!(r.iter().all(|c| !dead[c.id as usize]));
        h += hits(&r, &tr).0;
    }
    let rec = h as f64 / (nq * k) as f64;
    println!("vacuum: deleted {} of {n}, repaired {repaired} lists in {el:.2?}, recall@10 ef=64 = {rec:.4}",
        dead.iter().filter(|&&d| d).count());
    assert!(rec >= 0.9);
}

// Vacuum repair at pgvector's 014 settings (m 4, ef_construction 8, 3-d uniform):
// deleting 75% and repairing with `plan_repair` keeps recall@20 at ef 20 within 0.02
// of a fresh build on the survivors, with every list free of deleted nodes.
#[test]
fn plan_repair_keeps_recall_after_deleting_most() {
    let (n, dim, k, ef) = (10_000usize, 3usize, 20usize, 20usize);
    let mut gen = Gen::new(14);
    let data: Vec<f32> = (0..n * dim).map(|_| gen.unif() as f32).collect();
    let params = Params::new(4, 8);
    let mut g = MemGraph::build(dim, data.clone(), params, l2, 7, 1, &noprog);
    let alive = |i: usize| i < n / 4;
    for i in n / 4..n {
        g.mark_deleted(i as u32);
    }
    let live: Vec<(u32, u8)> = (0..(n / 4) as u32).map(|i| (i, g.level(i))).collect();
    if let Some(ne) = replacement_entry(g.entry(), |x| !alive(x as usize), &live) {
        g.set_entry_point(ne);
    }
    for i in 0..(n / 4) as u32 {
        let level = g.level(i);
        for u in plan_repair(&mut g, i, level, params, l2) {
            for (l, list) in &u.lists {
                g.set_neighbors(u.id, *l, list);
            }
        }
    }
    for i in 0..(n / 4) as u32 {
        for l in 0..=g.level(i) {
            assert!(g.neighbors(i, l).iter().all(|&x| alive(x as usize)), "node {i} level {l}");
        }
    }
    let fresh_data: Vec<f32> = data[..n / 4 * dim].to_vec();
    let fresh = MemGraph::build(dim, fresh_data.clone(), params, l2, 7, 1, &noprog);
    let (mut h_rep, mut h_fresh) = (0, 0);
    let nq = 200;
    for _ in 0..nq {
        let q: Vec<f32> = (0..dim).map(|_| gen.unif() as f32).collect();
        let t = truth(&data, dim, &q, k, alive);
        h_rep += hits(&g.knn(&q, k, ef), &t).0;
        h_fresh += hits(&fresh.knn(&q, k, ef), &t).0;
    }
    let (rep, fr) = (h_rep as f64 / (nq * k) as f64, h_fresh as f64 / (nq * k) as f64);
    println!(
        "repair after 75% deleted: recall@{k} ef {ef} = {rep:.4}, fresh build on survivors {fr:.4}"
    );
    assert!(rep >= fr - 0.02, "repaired {rep} vs fresh {fr}");
}

// Entry replacement: a live entry is kept, a deleted one (or none) is replaced by the
// live node of the highest level, lowest id first; nothing live -> None.
#[test]
fn replacement_entry_cases() {
    let live = [(4u32, 1u8), (9, 3), (2, 3), (7, 0)];
    assert_eq!(replacement_entry(Some((9, 3)), |_| false, &live), None, "live entry kept");
    assert_eq!(replacement_entry(Some((5, 4)), |x| x == 5, &live), Some(Some((2, 3))));
    assert_eq!(replacement_entry(None, |_| false, &live), Some(Some((2, 3))), "no entry yet");
    assert_eq!(replacement_entry(Some((5, 4)), |_| true, &[]), Some(None), "all deleted");
    assert_eq!(replacement_entry::<u32>(None, |_| false, &[]), None, "empty stays empty");
    // On a built graph: the chosen entry is live and its level is the highest live level.
    let data = normal_data(500, 4, 2);
    let mut g = MemGraph::build(4, data, Params::new(4, 16), l2, 1, 1, &noprog);
    let e = g.entry().unwrap();
    g.mark_deleted(e.0);
    let live: Vec<(u32, u8)> =
        (0..500).filter(|&i| !g.is_deleted(i)).map(|i| (i, g.level(i))).collect();
    let ne = replacement_entry(g.entry(), |x| g.is_deleted(x), &live).unwrap().unwrap();
    assert_ne!(ne.0, e.0);
    assert_eq!(g.level(ne.0), ne.1);
    assert_eq!(ne.1, live.iter().map(|x| x.1).max().unwrap());
}

// Relinking must not cut another node off. Every list is full; the cut-off node's only
// reachable neighbour `h` ends its list with `z`, which nobody else links to. The relink
// must drop one of h's other neighbours (each linked from elsewhere too), not `z`: one
// relink, and every node reachable after it.
#[test]
fn ensure_reachable_cuts_nobody_else_off() {
    let params = Params::new(2, 8); // 4 neighbours on level 0
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let vectors: Vec<f32> = (0..12 * 4).map(|_| (rng.next_u64() % 100) as f32).collect();
    let mut g = MemGraph::build(4, vectors, params, l2, 1, 1, &|_| {});
    let ep = g.entry().unwrap().0;
    let (x, z) = {
        let mut others = (0..12u32).filter(|&i| i != ep);
        (others.next().unwrap(), others.next().unwrap())
    };
    let core: Vec<u32> = (0..12u32).filter(|&i| i != x && i != z).collect();
    let h = core[0];
    for (p, &c) in core.iter().enumerate() {
        let list: Vec<u32> = (1..=4).map(|d| core[(p + d) % core.len()]).collect();
        g.set_neighbors(c, 0, &list);
    }
    g.set_neighbors(h, 0, &[core[1], core[2], core[3], z]);
    g.set_neighbors(z, 0, &core[5..9]);
    g.set_neighbors(x, 0, &[h, core[1], core[2], core[3]]);
    let before = reachable(&g);
    assert!(!before.contains(&x) && before.contains(&z) && before.len() == 11);
    let nodes: Vec<(u32, u8)> = (0..12u32).map(|i| (i, g.level(i))).collect();
    assert_eq!(ensure_reachable(&mut g, &nodes, params), 1, "one relink, no cascade");
    assert_eq!(reachable(&g).len(), 12);
    assert!(MemGraph::neighbors(&g, h, 0).contains(&z), "z keeps its only in-link");
}

// At m = 4 a two-thread build leaves dozens of 3,000 nodes cut off, some in pairs that only
// link each other. One ensure_reachable links them all (a host that gives up a neighbour
// for a cut-off node used to cut that neighbour off in turn: two nodes took turns, round
// after round, and stayed unreachable), and an exhaustive search then returns every node.
#[test]
fn ensure_reachable_at_low_m_reaches_everything() {
    use crate::hnsw::graph::search::{SearchOptions, Searcher};
    use crate::hnsw::graph::visited::IdHashSet;
    let (n, dim) = (3000usize, 32usize);
    let params = Params::new(4, 8);
    for seed in 0..4u64 {
        let mut g = MemGraph::build(dim, normal_data(n, dim, seed), params, l2, 5, 2, &noprog);
        let nodes: Vec<(u32, u8)> = (0..n as u32).map(|i| (i, g.level(i))).collect();
        ensure_reachable(&mut g, &nodes, params);
        assert_eq!(reachable(&g).len(), n, "seed {seed}: reachable from the entry");
        assert_eq!(ensure_reachable(&mut g, &nodes, params), 0, "seed {seed}: nothing left");
        let queries = normal_data(3, dim, 100 + seed);
        let mut store = &g;
        for qi in 0..3 {
            let query = &queries[qi * dim..(qi + 1) * dim];
            let opts = SearchOptions::default();
            let mut s = Searcher::with_options(&mut store, query, 40, opts, IdHashSet::default());
            let got: HashSet<u32> = exhaust(&mut s, &mut store).into_iter().collect();
            assert_eq!(got.len(), n, "seed {seed} query {qi}: an exhaustive search");
        }
    }
}

// Every node reachable on level 0 from the entry point.
fn reachable(g: &MemGraph) -> HashSet<u32> {
    let Some((ep, _)) = g.entry() else { return HashSet::new() };
    let mut seen = HashSet::from([ep]);
    let mut q = VecDeque::from([ep]);
    while let Some(a) = q.pop_front() {
        for &b in MemGraph::neighbors(g, a, 0) {
            if seen.insert(b) {
                q.push_back(b);
            }
        }
    }
    seen
}
