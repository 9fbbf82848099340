//! Kernel timing for the other types, run by `benches/run.sh types` (ignored in normal
//! test runs): ns per distance of the halfvec, sparsevec and bit kernels the SQL operators
//! and the index call, beside the scalar reference each is tested against.

use std::hint::black_box;
use std::time::Instant;

use crate::bitvec;
use crate::distance::half;
use crate::halfvec::codec::f32_to_f16;
use crate::sparsevec::codec::{self as sparse, SparseRef, SparseVec};

/// Deterministic pseudo-random numbers in [0, 1) without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Best of 7 timings of `f` over every (query, item) pair, each about 20 ms long, in ns
/// per call.
fn time<T>(q: &T, items: &[T], f: &dyn Fn(&T, &T) -> f64) -> f64 {
    let pass = || {
        let t = Instant::now();
        let mut acc = 0.0;
        for v in items {
            acc += f(black_box(q), black_box(v));
        }
        black_box(acc);
        t.elapsed().as_nanos() as f64
    };
    let reps = (20e6 / pass().max(1.0)).ceil().max(1.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..7 {
        let ns: f64 = (0..reps).map(|_| pass()).sum();
        best = best.min(ns / (reps * items.len()) as f64);
    }
    best
}

fn row(what: &str, size: &str, fast: f64, slow: f64) {
    println!("{what:>22} {size:>14} {fast:>10.1} {slow:>10.1} {:>6.1}x", slow / fast);
}

/// One query and `count` items from `gen`, then a row per (name, kernel, reference) pair,
/// both timed over the items; `call` applies a kernel to two items.
fn compare<T, K: Copy>(
    size: &str,
    count: usize,
    mut gen: impl FnMut() -> T,
    pairs: &[(&str, K, K)],
    call: impl Fn(K, &T, &T) -> f64,
) {
    let q = gen();
    let items: Vec<T> = (0..count).map(|_| gen()).collect();
    for &(name, fast, slow) in pairs {
        let f = time(&q, &items, &|a, b| call(fast, a, b));
        let s = time(&q, &items, &|a, b| call(slow, a, b));
        row(name, size, f, s);
    }
}

#[test]
#[ignore]
fn types_kernel_speed() {
    println!(
        "{:>22} {:>14} {:>10} {:>10} {:>7}",
        "kernel", "size", "kernel ns", "scalar ns", "ratio"
    );
    // halfvec: values in [-1, 1), 2,048 items (4-24 MB, past the caches at 1536+ dims).
    // The SQL operators' kernels (pgvector's summation order), and the index's (four
    // accumulators).
    type H = fn(&[u16], &[u16]) -> f64;
    let halves: [(&str, H, H); 7] = [
        ("halfvec l2sq", half::l2_squared, half::scalar::l2_squared),
        ("halfvec dot", half::dot, half::scalar::dot),
        ("halfvec cosine", half::cosine, half::scalar::cosine),
        ("halfvec l1", half::l1, half::scalar::l1),
        (
            "halfvec l2sq (index)",
            |a, b| half::index::l2_squared(a, b).into(),
            half::scalar::l2_squared,
        ),
        ("halfvec dot (index)", |a, b| half::index::dot(a, b).into(), half::scalar::dot),
        ("halfvec l1 (index)", |a, b| half::index::l1(a, b).into(), half::scalar::l1),
    ];
    for dim in [384usize, 1536, 3072] {
        let mut r = Lcg(dim as u64);
        let gen = || (0..dim).map(|_| f32_to_f16(r.next() * 2.0 - 1.0)).collect::<Vec<u16>>();
        compare(&format!("{dim} dims"), 2048, gen, &halves, |k: H, a, b| k(a, b));
    }
    // sparsevec: SPLADE-like, indices spread over a 30,522-term vocabulary. The reference
    // is the dense loop over all dimensions the merge kernels are tested against.
    type S = fn(SparseRef, SparseRef) -> f64;
    let sparses: [(&str, S, S); 3] = [
        (
            "sparsevec l2sq",
            |a, b| sparse::l2_squared(a, b).into(),
            |a, b| sparse::reference::l2_squared(a, b).into(),
        ),
        (
            "sparsevec dot",
            |a, b| sparse::inner_product(a, b).into(),
            |a, b| sparse::reference::inner_product(a, b).into(),
        ),
        ("sparsevec l1", |a, b| sparse::l1(a, b).into(), |a, b| sparse::reference::l1(a, b).into()),
    ];
    let dim = 30_522;
    for nnz in [32usize, 128, 512] {
        let mut r = Lcg(nnz as u64);
        let gen = || {
            let mut indices: Vec<i32> = (0..nnz).map(|_| (r.next() * dim as f32) as i32).collect();
            indices.sort_unstable();
            indices.dedup();
            let values = indices.iter().map(|_| r.next() + 0.01).collect();
            SparseVec { dim, indices, values }
        };
        let call = |k: S, a: &SparseVec, b: &SparseVec| k(a.as_ref(), b.as_ref());
        compare(&format!("{nnz} of {dim}"), 256, gen, &sparses, call);
    }
    // bit: random bytes.
    type B = fn(&[u8], &[u8]) -> f64;
    let bits: [(&str, B, B); 2] = [
        ("bit hamming", bitvec::hamming, bitvec::scalar::hamming),
        ("bit jaccard", bitvec::jaccard, bitvec::scalar::jaccard),
    ];
    for nbits in [1536usize, 3072, 64_000] {
        let mut r = Lcg(nbits as u64);
        let gen = || (0..nbits / 8).map(|_| (r.next() * 256.0) as u8).collect::<Vec<u8>>();
        compare(&format!("{nbits} bits"), 2048, gen, &bits, |k: B, a, b| k(a, b));
    }
}
