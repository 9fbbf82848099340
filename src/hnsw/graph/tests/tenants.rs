use super::{clustered, clustered_q, hits, l2, truth, Gen};
use crate::hnsw::graph::search::{collect_k, SearchOptions, Searcher};
use crate::hnsw::graph::store::GraphStore;
use crate::hnsw::graph::tenants::{build_tenant_links, TenantLinks, PIVOT_GROUP_MIN};
use crate::hnsw::graph::visited::StampVisited;
use crate::hnsw::graph::Params;

// Tenant graphs as a store: layer 0 is the group lists, no upper layers; counts reads
// of nodes outside `want` (a leak would show up there).
struct Tenants<'a> {
    data: &'a [f32],
    dim: usize,
    links: &'a TenantLinks,
    labels: &'a [u32],
    want: &'a [u32],
    foreign_reads: usize,
}

impl GraphStore for Tenants<'_> {
    type Id = u32;
    // No global entry: searches are seeded.
    fn entry_point(&mut self) -> Option<(u32, u8)> {
        None
    }
    // Distance, counting reads of other groups' nodes.
    fn distance(&mut self, id: u32, q: &[f32]) -> Option<f32> {
        if !self.want.contains(&self.labels[id as usize]) {
            self.foreign_reads += 1;
        }
        let i = id as usize * self.dim;
        Some(l2(&self.data[i..i + self.dim], q))
    }
    // Group lists only.
    fn neighbors(&mut self, id: u32, level: u8, out: &mut Vec<u32>) {
        if level == 0 {
            out.extend_from_slice(&self.links.lists[id as usize]);
        }
    }
    // The label check a scan's key conditions make.
    fn passes(&mut self, id: u32) -> bool {
        self.want.contains(&self.labels[id as usize])
    }
}

// Per-group graphs link only within a group, and seeded searches over them return
// exactly k authorized nodes with high recall at 10%, 1% and tiny groups, for one
// group and for several (`= ANY`), without ever reading a node of another group.
#[test]
fn tenant_links_search_stays_inside_the_group() {
    let (n, dim, nq, k) = (20_000, 32, 60, 10);
    let data = clustered(n, dim, 40, 31);
    let queries = clustered_q(nq, dim, 40, 31, 1000);
    let mut gen = Gen::new(5);
    // Group sizes: 2 groups of 10%, 20 of 1%, the rest tiny (Zipf-like tail).
    let labels: Vec<u32> = (0..n)
        .map(|_| {
            let r = gen.below(1000);
            if r < 200 {
                (r / 100) as u32
            } else if r < 400 {
                2 + ((r - 200) / 10) as u32
            } else {
                22 + gen.below(600) as u32
            }
        })
        .collect();
    let ngroups = *labels.iter().max().unwrap() as usize + 1;
    let mut groups = vec![Vec::new(); ngroups];
    for (i, &l) in labels.iter().enumerate() {
        groups[l as usize].push(i as u32);
    }
    let links = build_tenant_links(dim, &data, &groups, Params::new(16, 64), l2, 9, 2);
    for (i, l) in links.lists.iter().enumerate() {
        assert!(
            l.iter().all(|&j| labels[j as usize] == labels[i] && j as usize != i),
            "node {i} links outside its group"
        );
    }
    for (gi, &e) in links.entries.iter().enumerate() {
        if !groups[gi].is_empty() {
            assert_eq!(labels[e as usize], gi as u32, "entry of group {gi}");
        }
        assert!(
            links.pivots[gi].iter().all(|&p| labels[p as usize] == gi as u32 && p != e),
            "pivots of group {gi}"
        );
        assert_eq!(
            links.pivots[gi].is_empty(),
            groups[gi].len() < PIVOT_GROUP_MIN,
            "group {gi}: pivots iff large"
        );
    }
    for want in [vec![0u32], vec![7], vec![30], vec![3, 9, 15], vec![0, 1]] {
        let seeds: Vec<Vec<u32>> = want
            .iter()
            .filter(|&&w| !groups[w as usize].is_empty())
            .map(|&w| {
                std::iter::once(links.entries[w as usize])
                    .chain(links.pivots[w as usize].iter().copied())
                    .collect()
            })
            .collect();
        let size: usize = want.iter().map(|&w| groups[w as usize].len()).sum();
        let mut store = Tenants {
            data: &data,
            dim,
            links: &links,
            labels: &labels,
            want: &want,
            foreign_reads: 0,
        };
        let mut h = 0;
        for i in 0..nq {
            let q = &queries[i * dim..(i + 1) * dim];
            let t = truth(&data, dim, q, k, |j| want.contains(&labels[j]));
            let opts = SearchOptions { filtered: true, ..Default::default() };
            let mut s = Searcher::with_seeds(&mut store, q, 40, opts, StampVisited::new(n), &seeds);
            let r = collect_k(&mut s, &mut store, k);
            assert_eq!(r.len(), k.min(size), "group {want:?}: exactly min(k, size) rows");
            h += hits(&r, &t).0;
        }
        let rec = h as f64 / (nq * k.min(size)) as f64;
        println!("groups {want:?} ({size} nodes): recall@10 {rec:.3}");
        assert!(rec >= 0.95, "groups {want:?}: recall {rec}");
        assert_eq!(store.foreign_reads, 0, "groups {want:?}: a node of another group was read");
    }
}
