use super::{clustered, clustered_q, cosine, exhaust, hits, l2, noprog, normal_data, truth, Gen};
use crate::hnsw::graph::build::MemGraph;
use crate::hnsw::graph::search::{collect_k, knn, knn_filtered, knn_with, SearchOptions, Searcher};
use crate::hnsw::graph::select::select_neighbors_heuristic;
use crate::hnsw::graph::store::GraphStore;
use crate::hnsw::graph::visited::{IdHashSet, StampVisited, VisitedSet};
use crate::hnsw::graph::{Candidate, Params};

// A one-batch search drops what cannot enter the batch; its batch must be the same
// as the first batch of a resumable search, with no more distances computed.
#[test]
fn one_batch_search_equals_first_batch() {
    let (n, dim, nq) = (5000, 16, 200);
    let data = clustered(n, dim, 20, 3);
    let queries = normal_data(nq, dim, 9);
    let g = MemGraph::build(dim, data, Params::new(8, 32), l2, 5, 1, &noprog);
    let mut store = &g;
    for ef in [1usize, 10, 40, 100] {
        for i in 0..nq {
            let q = &queries[i * dim..(i + 1) * dim];
            let mut full = Searcher::with_options(
                &mut store,
                q,
                ef,
                SearchOptions::default(),
                IdHashSet::default(),
            );
            let one_opts = SearchOptions { one_batch: true, ..SearchOptions::default() };
            let mut one = Searcher::with_options(&mut store, q, ef, one_opts, IdHashSet::default());
            let a = full.next_batch(&mut store);
            let b = one.next_batch(&mut store);
            assert_eq!(
                a.iter().map(|c| c.id).collect::<Vec<_>>(),
                b.iter().map(|c| c.id).collect::<Vec<_>>(),
                "ef {ef} query {i}"
            );
            assert_eq!(a.len(), ef.min(n));
            assert_eq!(full.distance_computations(), one.distance_computations());
        }
    }
}

// A filtered view: node passes when its label equals `want`.
struct Labeled<'a> {
    g: &'a MemGraph,
    labels: &'a [u32],
    want: u32,
}

impl GraphStore for Labeled<'_> {
    type Id = u32;
    // Delegations to the graph; `passes` reads the label.
    fn entry_point(&mut self) -> Option<(u32, u8)> {
        self.g.entry()
    }
    fn distance(&mut self, id: u32, q: &[f32]) -> Option<f32> {
        self.g.store_distance(id, q)
    }
    fn neighbors(&mut self, id: u32, level: u8, out: &mut Vec<u32>) {
        out.extend_from_slice(self.g.neighbors(id, level));
    }
    fn passes(&mut self, id: u32) -> bool {
        self.labels.get(id as usize) == Some(&self.want)
    }
    fn is_deleted(&mut self, id: u32) -> bool {
        self.g.is_deleted(id)
    }
}

// ACORN-1 filtered search at 1% and 10% selectivity returns exactly k with recall >= 0.9.
#[test]
fn filtered_acorn_low_selectivity() {
    let (n, dim, nq, k) = (20_000, 32, 100, 10);
    let data = clustered(n, dim, 40, 21);
    let g = MemGraph::build(dim, data.clone(), Params::new(16, 64), l2, 5, 2, &noprog);
    let queries = clustered_q(nq, dim, 40, 21, 1000);
    for (sel_pct, ef) in [(1u64, 40usize), (10, 40), (1, 64), (10, 64)] {
        let mut g2 = Gen::new(77 + sel_pct);
        let labels: Vec<u32> = (0..n).map(|_| g2.below(100 / sel_pct) as u32).collect();
        let want = 0u32;
        let passing = labels.iter().filter(|&&l| l == want).count();
        let mut store = Labeled { g: &g, labels: &labels, want };
        let (mut h, mut tot, mut dc, mut vis, mut fc, mut fdc) = (0, 0, 0u64, 0usize, 0u64, 0u64);
        let mut plain_hits = 0;
        for i in 0..nq {
            let q = &queries[i * dim..(i + 1) * dim];
            let t = truth(&data, dim, q, k, |j| labels[j] == want);
            let opts = SearchOptions { filtered: true, ..Default::default() };
            let mut s = Searcher::with_options(&mut store, q, ef, opts, StampVisited::new(n));
            let r = collect_k(&mut s, &mut store, k);
            assert_eq!(r.len(), k, "filtered search must return exactly k");
            assert!(r.iter().all(|c| labels[c.id as usize] == want));
            dc += s.distance_computations();
            vis += s.visited_count();
            fc += s.filter_checks();
            let (a, b) = hits(&r, &t);
            h += a;
            tot += b;
            // comparison: unfiltered traversal with post-filter (hnswlib style)
            let mut s2 = Searcher::with_options(
                &mut store,
                q,
                ef,
                SearchOptions::default(),
                StampVisited::new(n),
            );
            let r2 = collect_k(&mut s2, &mut store, k);
            fdc += s2.distance_computations();
            plain_hits += hits(&r2, &t).0;
        }
        let rec = h as f64 / tot as f64;
        println!(
            "filtered {sel_pct:2}% ({passing} pass) ef={ef}: recall@10={rec:.4} dist/query={:.0} visited/query={:.0} filter_checks/query={:.0} | unfiltered-traversal: recall={:.4} dist/query={:.0}",
            dc as f64 / nq as f64,
            vis as f64 / nq as f64,
            fc as f64 / nq as f64,
            plain_hits as f64 / tot as f64,
            fdc as f64 / nq as f64
        );
        assert!(rec >= 0.9, "filtered recall {rec} at {sel_pct}%");
    }
}

// Deleted and non-passing nodes are never returned, in both traversal modes.
#[test]
fn knn_excludes_deleted_and_failing() {
    let (n, dim) = (4000, 16);
    let data = normal_data(n, dim, 9);
    let mut g = MemGraph::build(dim, data.clone(), Params::new(8, 40), l2, 3, 2, &noprog);
    for i in (0..n as u32).step_by(3) {
        g.mark_deleted(i);
    }
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    let mut store = Labeled { g: &g, labels: &labels, want: 1 };
    let q = &data[5 * dim..6 * dim];
    for filtered in [false, true] {
        let r = knn_with(&mut store, q, 20, 40, SearchOptions { filtered, ..Default::default() });
        assert_eq!(r.len(), 20);
        assert!(r.iter().all(|c| c.id % 3 != 0 && c.id % 2 == 1));
        let t = truth(&data, dim, q, 20, |j| j % 3 != 0 && j % 2 == 1);
        assert!(hits(&r, &t).0 >= 18);
    }
    assert_eq!(r_len(&g, q), 10);
    fn r_len(g: &MemGraph, q: &[f32]) -> usize {
        g.knn(q, 10, 10).len()
    }
}

// Degenerate inputs (empty, NaN, wrong dims, lying stores) never panic.
#[test]
fn edge_cases_do_not_panic() {
    let p = |_: usize| {};
    // empty / degenerate builds
    let g = MemGraph::build(0, vec![1.0, 2.0], Params::new(16, 64), l2, 0, 2, &p);
    assert!(g.is_empty() && g.entry().is_none());
    let g = MemGraph::build(3, vec![1.0, 2.0], Params::new(16, 64), l2, 0, 2, &p);
    assert!(g.is_empty());
    assert!(g.knn(&[1.0, 2.0, 3.0], 3, 10).is_empty());
    let g = MemGraph::build(3, vec![1.0, 2.0, 3.0, 4.0], Params::new(0, 0), l2, 0, 0, &p);
    assert_eq!(g.len(), 1);
    assert_eq!(g.knn(&[1.0, 2.0, 3.0], 3, 0).len(), 1);
    assert!(g.knn(&[1.0], 3, 10).is_empty(), "wrong dimension finds nothing");
    assert!(g.knn(&[1.0, 2.0, 3.0], 0, 10).is_empty());
    assert!(g.vector(99).is_empty() && g.level(99) == 0);
    // NaN / inf vectors and duplicates
    let mut v = normal_data(300, 4, 1);
    for x in v.iter_mut().take(40) {
        *x = f32::NAN;
    }
    v[100] = f32::INFINITY;
    v.extend(std::iter::repeat_n(0.5, 4 * 50));
    let g = MemGraph::build(4, v, Params::new(5, 20), l2, 0, 2, &p);
    assert_eq!(g.len(), 350);
    let r = g.knn(&[0.5; 4], 60, 80);
    assert_eq!(r.len(), 60);
    assert!(g.knn(&[f32::NAN; 4], 5, 10).len() <= 5);
    // cosine on zero vectors gives NaN distances
    let g = MemGraph::build(2, vec![0.0; 40], Params::new(4, 8), cosine, 0, 1, &p);
    assert_eq!(g.knn(&[0.0, 0.0], 5, 5).len(), 5);
    // searcher on an empty store
    let mut e = MemGraph::new(2, Params::default(), l2, 0);
    let mut s = Searcher::new(&mut e, &[0.0, 0.0], 10);
    assert!(s.next_batch(&mut e).is_empty() && s.is_exhausted());
    // stores lying about ids
    struct Liar;
    impl GraphStore for Liar {
        type Id = u64;
        fn entry_point(&mut self) -> Option<(u64, u8)> {
            Some((u64::MAX, 200))
        }
        fn distance(&mut self, id: u64, _: &[f32]) -> Option<f32> {
            if id.is_multiple_of(7) {
                None
            } else {
                Some(f32::NAN)
            }
        }
        fn neighbors(&mut self, id: u64, _: u8, out: &mut Vec<u64>) {
            if id > 1000 || id == u64::MAX {
                out.extend([1, 2, 3, 7, u64::MAX])
            } else {
                out.push(id + 1)
            }
        }
    }
    let r = knn(&mut Liar, &[1.0], 5, 5);
    assert!(r.len() <= 5);
    let r = knn_filtered(&mut Liar, &[1.0], 5, 5);
    assert!(r.len() <= 5);
    // stamp visited with huge ids
    let mut sv = StampVisited::new(4);
    assert!(sv.insert(u32::MAX) && !sv.insert(u32::MAX) && sv.contains(u32::MAX));
    assert!(sv.insert(100) && sv.len() == 2);
    sv.clear();
    assert!(!sv.contains(100) && !sv.contains(u32::MAX) && sv.is_empty());
    // max_visited stops the search
    let data = normal_data(2000, 8, 3);
    let g = MemGraph::build(8, data, Params::new(8, 32), l2, 0, 2, &p);
    let mut st = &g;
    let opts = SearchOptions { max_visited: 100, ..Default::default() };
    let mut s = Searcher::with_options(&mut st, &[0.0; 8], 10, opts, IdHashSet::default());
    let mut total = 0;
    loop {
        let b = s.next_batch(&mut st);
        if b.is_empty() {
            break;
        }
        total += b.len();
    }
    assert!(total < 400 && s.visited_count() < 200, "{total} {}", s.visited_count());
    // heuristic with zero capacity / empty input
    assert!(select_neighbors_heuristic::<u32>(&[], 5, true, |_, _| 0.0).is_empty());
    let c = [Candidate { id: 1u32, distance: 1.0 }, Candidate { id: 2, distance: f32::NAN }];
    assert!(select_neighbors_heuristic(&c, 0, true, |_, _| 0.0).is_empty());
    assert_eq!(select_neighbors_heuristic(&c, 5, true, |_, _| f32::NAN).len(), 2);
}

// Level 0 is directed: the entry point (node 0, level 1) reaches node 3 on level 0, but the
// node the descent ends on (node 1, nearest the query) reaches only node 2. An exhaustive
// resumable search returns all four, as every node is reachable from the entry; an
// unfiltered one-batch search stays where the descent led it (a filtered one starts from
// the ef nearest nodes of level 1, the entry among them).
#[test]
fn exhaustive_search_reaches_what_the_entry_reaches() {
    struct Split;
    impl GraphStore for Split {
        type Id = u32;
        fn entry_point(&mut self) -> Option<(u32, u8)> {
            Some((0, 1))
        }
        fn distance(&mut self, id: u32, q: &[f32]) -> Option<f32> {
            let v = [10.0f32, 0.0, 1.0, 9.0].get(id as usize)?;
            Some((v - q[0]).abs())
        }
        fn neighbors(&mut self, id: u32, level: u8, out: &mut Vec<u32>) {
            let l: &[u32] = match (level, id) {
                (1, 0) => &[1],
                (1, 1) => &[0],
                (0, 0) => &[3],
                (0, 1) => &[2],
                (0, 2) => &[1],
                (0, 3) => &[0],
                _ => &[],
            };
            out.extend_from_slice(l);
        }
    }
    for filtered in [false, true] {
        for ef in [1usize, 2, 10] {
            let opts = SearchOptions { filtered, ..Default::default() };
            let mut s = Searcher::with_options(&mut Split, &[0.0], ef, opts, IdHashSet::default());
            let mut got = exhaust(&mut s, &mut Split);
            got.sort_unstable();
            assert_eq!(got, vec![0, 1, 2, 3], "filtered {filtered}, ef {ef}");
        }
    }
    let opts = SearchOptions { one_batch: true, ..Default::default() };
    let mut s = Searcher::with_options(&mut Split, &[0.0], 10, opts, IdHashSet::default());
    let mut one: Vec<u32> = s.next_batch(&mut Split).iter().map(|c| c.id).collect();
    one.sort_unstable();
    assert_eq!(one, vec![1, 2]);
}
