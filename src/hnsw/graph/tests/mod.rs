//! Unit tests of the graph algorithm, one file per part of `graph`, and the data
//! generators and exact-search helpers they share.

use std::collections::HashSet;

use rand_chacha::ChaCha8Rng;

use crate::hnsw::graph::search::Searcher;
use crate::hnsw::graph::store::GraphStore;
use crate::hnsw::graph::visited::VisitedSet;
use crate::hnsw::graph::{random_level, Candidate, Params, MAX_LEVEL};
use rand_chacha::rand_core::{RngCore, SeedableRng};

mod build;
mod insert;
mod repair;
mod search;
mod select;
mod tenants;

// Squared L2 with 8 accumulators so the optimiser vectorises it (the main
// crate passes real SIMD kernels).
fn l2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

// Cosine distance, scalar.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut d, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    1.0 - d / (na * nb).sqrt()
}

// Seeded normal samples via Box-Muller.
struct Gen(ChaCha8Rng);

impl Gen {
    // Seeded generator.
    fn new(seed: u64) -> Self {
        Gen(ChaCha8Rng::seed_from_u64(seed))
    }
    // Uniform in (0, 1).
    fn unif(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    // Standard normal.
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unif(), self.unif());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
    // Uniform integer below n.
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
}

// n random-normal vectors.
fn normal_data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut g = Gen::new(seed);
    (0..n * dim).map(|_| g.normal()).collect()
}

// n vectors around `clusters` random centres (centres from `seed`).
fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    clustered_q(n, dim, clusters, seed, seed)
}

// Same centres as `clustered(.., seed)`, points drawn from `point_seed`:
// in-distribution queries.
fn clustered_q(n: usize, dim: usize, clusters: usize, seed: u64, point_seed: u64) -> Vec<f32> {
    let mut g = Gen::new(seed);
    let centres: Vec<f32> = (0..clusters * dim).map(|_| g.normal() * 4.0).collect();
    let mut g = Gen::new(point_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1));
    let mut v = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = g.below(clusters as u64) as usize;
        for j in 0..dim {
            v.push(centres[c * dim + j] + g.normal());
        }
    }
    v
}

// Exact top-k among nodes accepted by `keep`.
fn truth(data: &[f32], dim: usize, q: &[f32], k: usize, keep: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut all: Vec<(f32, u32)> = (0..data.len() / dim)
        .filter(|&i| keep(i))
        .map(|i| (l2(&data[i * dim..(i + 1) * dim], q), i as u32))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all.into_iter().map(|x| x.1).collect()
}

// |found ∩ truth| / |truth|.
fn hits(found: &[Candidate<u32>], t: &[u32]) -> (usize, usize) {
    let f: HashSet<u32> = found.iter().map(|c| c.id).collect();
    (t.iter().filter(|x| f.contains(x)).count(), t.len())
}

// Progress callback that ignores progress.
fn noprog(_: usize) {}

// User+system CPU seconds of this process (the cores are shared with
// other work, so wall time alone is noisy).
fn cpu_secs() -> f64 {
    let st = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = st.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

// Level formula, determinism and distribution; parameter clamping.
#[test]
fn params_and_levels() {
    let p = Params::new(16, 64);
    assert_eq!(p.max_neighbors(0), 32);
    assert_eq!(p.max_neighbors(3), 16);
    assert!((p.ml() - 1.0 / 16f64.ln()).abs() < 1e-12);
    assert_eq!(random_level(u64::MAX, 16), 0);
    assert_eq!(random_level(0, 16), 13); // -ln(2^-53)/ln16 = 13.25
    assert_eq!(random_level(0, 2), MAX_LEVEL);
    assert_eq!(random_level(0, 0), MAX_LEVEL);
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let lv: Vec<u8> = (0..200_000).map(|_| random_level(r.next_u64(), 16)).collect();
    let mut r2 = ChaCha8Rng::seed_from_u64(7);
    let lv2: Vec<u8> = (0..200_000).map(|_| random_level(r2.next_u64(), 16)).collect();
    assert_eq!(lv, lv2);
    let above = lv.iter().filter(|&&l| l >= 1).count() as f64 / lv.len() as f64;
    assert!((above - 1.0 / 16.0).abs() < 0.005, "P(level>=1) = {above}");
    assert_eq!(Params::new(0, 0).sanitized(), Params::new(2, 1));
    assert_eq!(Params::new(10_000, 1 << 40).sanitized().m, 256);
}

// Every id a resumable search returns, batch after batch until an empty one.
fn exhaust<S, V>(s: &mut Searcher<S::Id, V>, store: &mut S) -> Vec<S::Id>
where
    S: GraphStore,
    V: VisitedSet<S::Id> + Default,
{
    let mut got = Vec::new();
    loop {
        let b = s.next_batch(store);
        if b.is_empty() {
            return got;
        }
        got.extend(b.iter().map(|c| c.id));
    }
}
