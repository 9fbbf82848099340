use super::{clustered, hits, l2, noprog, normal_data, truth};

use std::time::Instant;

use crate::hnsw::graph::build::MemGraph;
use crate::hnsw::graph::insert::{
    apply_insert, joins_element, plan_insert, updates_with_in_link, Element, InsertPlan, NodeUpdate,
};
use crate::hnsw::graph::Params;

// aminsert path: 2k single inserts stay findable and keep recall.
#[test]
fn insert_one_by_one_stays_discoverable() {
    let (n0, extra, dim, k) = (8000, 2000, 24, 10);
    let data = clustered(n0 + extra, dim, 25, 31);
    let mut g =
        MemGraph::build(dim, data[..n0 * dim].to_vec(), Params::new(16, 64), l2, 8, 2, &noprog);
    let t = Instant::now();
    let mut plan_dist = 0u64;
    for i in n0..n0 + extra {
        let v = &data[i * dim..(i + 1) * dim];
        // exercise the plan explicitly for one node, insert_one for the rest
        if i == n0 {
            let id = g.len() as u32;
            g.vectors.extend_from_slice(v);
            g.push_slots(2);
            let params = g.params();
            let plan = plan_insert(&mut g, id, v, 2, params, l2);
            assert_eq!(plan.neighbors.len(), 3);
            assert!(!plan.neighbors[0].is_empty());
            plan_dist += plan.distance_computations;
            apply_insert(&mut g, &plan);
        } else {
            assert_eq!(g.insert_one(v), Some(i as u32));
        }
    }
    let el = t.elapsed();
    assert_eq!(g.len(), n0 + extra);
    assert_eq!(g.insert_one(&[1.0]), None);
    // each inserted node finds itself
    let mut self_found = 0;
    for i in n0..n0 + extra {
        let r = g.knn(&data[i * dim..(i + 1) * dim], 1, 32);
        self_found += (r.first().map(|c| c.id) == Some(i as u32)) as usize;
    }
    let mut h = 0;
    let nq = 200;
    for j in 0..nq {
        let qi = (j * 50) % (n0 + extra);
        let q = &data[qi * dim..(qi + 1) * dim];
        let tr = truth(&data, dim, q, k, |_| true);
        h += hits(&g.knn(q, k, 64), &tr).0;
    }
    let rec = h as f64 / (nq * k) as f64;
    println!(
        "insert 2k one by one: {:.2?} ({:.0} us/insert, first plan {plan_dist} distances); self-found {self_found}/{extra}; recall@10 ef=64 {rec:.4}",
        el,
        el.as_micros() as f64 / extra as f64
    );
    assert!(self_found as f64 >= 0.99 * extra as f64);
    assert!(rec >= 0.95);
    // incoming edges exist for inserted nodes
    let mut indeg = vec![0u32; g.len()];
    for i in 0..g.len() as u32 {
        for &x in g.neighbors(i, 0) {
            indeg[x as usize] += 1;
        }
    }
    assert!(indeg[n0..].iter().filter(|&&d| d == 0).count() < extra / 100);
}

// Growing a graph from nothing through insert_one.
#[test]
fn insert_into_empty_graph() {
    let mut g = MemGraph::new(8, Params::new(4, 16), l2, 1);
    assert!(g.knn(&[0.0; 8], 5, 10).is_empty());
    let data = normal_data(1500, 8, 4);
    for i in 0..1500 {
        g.insert_one(&data[i * 8..(i + 1) * 8]).unwrap();
    }
    let (_, top) = g.entry().unwrap();
    assert_eq!(top, (0..1500).map(|i| g.level(i)).max().unwrap());
    let mut h = 0;
    for i in 0..100 {
        let q = &data[i * 8..(i + 1) * 8];
        h += hits(&g.knn(q, 10, 64), &truth(&data, 8, q, 10, |_| true)).0;
    }
    assert!(h >= 950, "recall {h}/1000");
}

// The duplicate rule: a row joins an element only when it is live, has room for another
// heap row, and holds the same vector and key columns.
#[test]
fn duplicate_joins_only_an_equal_live_element() {
    let v = [1.0f32, 2.0];
    let e = Element { deleted: false, heap_tids: 3, vector: &v, keys: Some(&[7u8][..]) };
    assert!(joins_element(&e, &v, &[7], 10));
    assert!(!joins_element(&Element { deleted: true, ..e }, &v, &[7], 10), "deleted");
    assert!(!joins_element(&Element { heap_tids: 10, ..e }, &v, &[7], 10), "full");
    assert!(!joins_element(&e, &[1.0, 2.5], &[7], 10), "other vector");
    assert!(!joins_element(&e, &v, &[8], 10), "other keys");
    assert!(!joins_element(&Element { keys: None, ..e }, &v, &[7], 10), "unreadable keys");
    assert!(!joins_element(&Element { vector: &[], ..e }, &v, &[7], 10), "unreadable vector");
}

// The in-link rule: a node no updated list took gets a link from its nearest neighbour on
// level 0, whose last entry makes room when the list is full; a linked node gets none.
#[test]
fn unlinked_newcomer_gets_an_in_link_from_its_nearest() {
    let data = normal_data(300, 4, 8);
    let mut g = MemGraph::build(4, data, Params::new(4, 16), l2, 1, 1, &noprog);
    let max0 = g.params().max_neighbors(0);
    let nearest = (0..300u32).find(|&i| g.neighbors(i, 0).len() == max0).unwrap();
    let new_id = 9_999u32;
    let plan = InsertPlan {
        id: new_id,
        level: 0,
        neighbors: vec![vec![nearest, 5]],
        updates: vec![NodeUpdate { id: 5, lists: vec![(0, vec![1, 2])] }],
        new_entry: None,
        distance_computations: 0,
    };
    let ups = updates_with_in_link(&mut g, &plan, max0);
    assert_eq!(ups.len(), 2);
    let (l, list) = &ups[1].lists[0];
    assert_eq!((ups[1].id, *l), (nearest, 0));
    let old = g.neighbors(nearest, 0);
    assert_eq!(list.len(), max0);
    assert_eq!(&list[..max0 - 1], &old[..max0 - 1], "the last entry made room");
    assert_eq!(list[max0 - 1], new_id);
    // a list with room keeps every entry
    let ups = updates_with_in_link(&mut g, &plan, max0 + 1);
    assert_eq!(ups[1].lists[0].1.len(), max0 + 1);
    // already linked by an update: nothing added
    let linked = InsertPlan {
        updates: vec![NodeUpdate { id: 5, lists: vec![(0, vec![1, new_id])] }],
        ..plan.clone()
    };
    assert_eq!(updates_with_in_link(&mut g, &linked, max0), linked.updates);
    // no neighbour at all (first node): nothing to link from
    let lone = InsertPlan { neighbors: vec![vec![]], updates: vec![], ..plan };
    assert!(updates_with_in_link(&mut g, &lone, max0).is_empty());
}

// Serial inserts of high-dimensional uniform data (pgvector's TAP 016 shape: 1,000 rows of
// 1,900 random() values, l2): a full list offered a newcomer re-selects with the plain rule,
// so newcomers keep in-links and an exhaustive search from the entry point finds every
// node. With the relaxed rule (alpha 1.05) nearly every old entry of a full list
// survived, and more nodes lost their last in-link (seed 16: 6 unreachable). Minutes long
// without optimisation: scripts/test.sh runs it in a release build.
#[test]
#[cfg_attr(debug_assertions, ignore = "release build only (scripts/test.sh runs it)")]
fn serial_inserts_in_high_dimensions_stay_reachable() {
    let (n, dim) = (1000, 1900);
    for seed in [16u64, 17, 18] {
        let mut r = super::Gen::new(seed);
        let data: Vec<f32> = (0..n * dim).map(|_| r.unif() as f32).collect();
        let mut g = MemGraph::new(dim, Params::new(16, 64), l2, 1);
        for i in 0..n {
            assert_eq!(g.insert_one(&data[i * dim..(i + 1) * dim]), Some(i as u32));
        }
        let mut indeg = vec![0u32; n];
        for i in 0..n as u32 {
            for &x in g.neighbors(i, 0) {
                indeg[x as usize] += 1;
            }
        }
        let (entry, _) = g.entry().unwrap();
        let orphans = (0..n).filter(|&i| indeg[i] == 0 && i as u32 != entry).count();
        let found = g.knn(&data[..dim], n, n).len();
        println!(
            "seed {seed}: {orphans} of {n} without an in-link, exhaustive search finds {found}"
        );
        assert_eq!((orphans, found), (0, n), "seed {seed}");
    }
}
