//! What an index stores for each indexed type, and its graph distances (pure: no pgrx).
//!
//! The graph code works on `&[f32]` slices; an element stores its value as such a slice of
//! 32-bit words whose meaning the index's `Metric` defines:
//! - `vector`: one f32 per dimension (normalised for cosine);
//! - `halfvec`: two halves per word, in memory order (half `2i` in the word's first two
//!   bytes, `2i + 1` in its last two), so 4000 dimensions take 2000 words; an odd count
//!   ends with `HALF_PAD`, a NaN that a halfvec never holds, which the distances drop;
//! - `bit`: the bit string's bytes, four per word in memory order, the last word padded
//!   with zero bytes (which change neither Hamming nor Jaccard counts);
//! - `sparsevec`: the number of stored elements n (u32 bits), the n indices (i32 bits),
//!   the n values: `1 + 2n` words, at most `1 + 2 * MAX_NNZ`, so elements differ in length.
//!   The in-memory build pads every value to the longest with zero words, which `stored`
//!   drops again before a value reaches a page.
//!
//! Packed words are only ever copied, hashed and compared by their bits, never by float
//! arithmetic; the distances reinterpret them as the type's own elements and call the
//! type's distance kernels: the SQL ones for vector, bit and sparsevec (`crate::distance`,
//! `crate::bitvec`, `crate::sparsevec::codec`), and for halfvec the index kernels of
//! `crate::distance::half::index`, the same float4 sums added in another order.

use super::graph::Distance;
use super::page::Metric;
use crate::distance;
use crate::distance::half;
use crate::halfvec::codec as halfcodec;
use crate::sparsevec::codec::{self as sparse, SparseRef};

/// Most stored elements of an indexed sparsevec (pgvector's HNSW_MAX_NNZ).
pub(crate) const MAX_NNZ: usize = 1000;

/// Pad half of an odd-dimension halfvec: a NaN pattern, which halfvec input refuses.
pub(crate) const HALF_PAD: u16 = 0xFFFF;

/// The SQL type an index's vector column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Vector,
    Halfvec,
    Bit,
    Sparse,
}

impl Kind {
    /// Most dimensions (bits for `bit`) an index accepts, pgvector's limits.
    pub(crate) fn max_dims(self) -> usize {
        match self {
            Kind::Vector => 2000,
            Kind::Halfvec => 4000,
            Kind::Bit => 64000,
            Kind::Sparse => crate::sparsevec::codec::SPARSEVEC_MAX_DIM as usize,
        }
    }

    /// Stored words of a value of `dims` dimensions; None for sparsevec, whose length
    /// depends on the value.
    pub(crate) fn words(self, dims: usize) -> Option<usize> {
        match self {
            Kind::Vector => Some(dims),
            Kind::Halfvec => Some(dims.div_ceil(2)),
            Kind::Bit => Some(dims.div_ceil(32)),
            Kind::Sparse => None,
        }
    }
}

impl Metric {
    pub(crate) fn kind(self) -> Kind {
        match self {
            Metric::L2 | Metric::InnerProduct | Metric::Cosine | Metric::L1 => Kind::Vector,
            Metric::HalfL2 | Metric::HalfInnerProduct | Metric::HalfCosine | Metric::HalfL1 => {
                Kind::Halfvec
            }
            Metric::BitHamming | Metric::BitJaccard => Kind::Bit,
            Metric::SparseL2
            | Metric::SparseInnerProduct
            | Metric::SparseCosine
            | Metric::SparseL1 => Kind::Sparse,
        }
    }

    /// Cosine indexes store unit vectors and skip zero ones.
    pub(crate) fn is_cosine(self) -> bool {
        matches!(self, Metric::Cosine | Metric::HalfCosine | Metric::SparseCosine)
    }
}

/// A value of one of the indexed types, as its datum holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Vector(&'a [f32]),
    Halfvec(&'a [u16]),
    /// Bit length and the bytes (pad bits of the last byte zero, as Postgres keeps them).
    Bit(usize, &'a [u8]),
    Sparse(SparseRef<'a>),
}

impl Value<'_> {
    /// Dimensions (bits for `bit`).
    pub(crate) fn dims(&self) -> usize {
        match self {
            Value::Vector(v) => v.len(),
            Value::Halfvec(v) => v.len(),
            Value::Bit(n, _) => *n,
            Value::Sparse(s) => s.dim.max(0) as usize,
        }
    }
}

/// The stored words of a value for an index of `metric` (whose kind the caller matched);
/// None for a zero vector in a cosine index, which has no direction and is not indexed.
/// `normalize` false keeps a cosine query as it is (a zero query orders by distance NaN).
pub(crate) fn encode(metric: Metric, v: Value, normalize: bool) -> Option<Vec<f32>> {
    let cosine = normalize && metric.is_cosine();
    match v {
        Value::Vector(x) => {
            if !cosine {
                return Some(x.to_vec());
            }
            let n = crate::vector::codec::norm(x);
            (n > 0.0).then(|| x.iter().map(|&e| (e as f64 / n) as f32).collect())
        }
        Value::Halfvec(x) => {
            if cosine {
                if halfcodec::norm(x) <= 0.0 {
                    return None;
                }
                // Normalising cannot overflow (every element shrinks); a failure keeps x.
                let unit = halfcodec::l2_normalize(x).unwrap_or_else(|_| x.to_vec());
                Some(pack_halves(&unit))
            } else {
                Some(pack_halves(x))
            }
        }
        Value::Bit(_, bytes) => Some(pack_bytes(bytes)),
        Value::Sparse(x) => {
            if !cosine {
                return Some(pack_sparse(x));
            }
            if sparse::norm(x) <= 0.0 {
                return None;
            }
            match sparse::l2_normalize(x) {
                Ok(unit) => Some(pack_sparse(unit.as_ref())),
                Err(_) => Some(pack_sparse(x)),
            }
        }
    }
}

/// `[n, indices.., values..]` as words.
pub(crate) fn pack_sparse(x: SparseRef) -> Vec<f32> {
    let mut w = Vec::with_capacity(1 + 2 * x.indices.len());
    w.push(f32::from_bits(x.indices.len() as u32));
    w.extend(x.indices.iter().map(|&i| f32::from_bits(i as u32)));
    w.extend_from_slice(x.values);
    w
}

/// The sparse value in packed words (padding after it ignored; a count larger than the
/// words hold is cut to what they hold).
pub(crate) fn sparse_of(w: &[f32]) -> SparseRef<'_> {
    let Some((count, rest)) = w.split_first() else {
        return SparseRef { dim: 0, indices: &[], values: &[] };
    };
    let n = (count.to_bits() as usize).min(rest.len() / 2);
    let idx = &rest[..n];
    // SAFETY: i32 and f32 have the same size and alignment and i32 has no invalid bit
    // patterns; `idx` is n words inside `w`.
    let indices = unsafe { std::slice::from_raw_parts(idx.as_ptr() as *const i32, n) };
    SparseRef { dim: 0, indices, values: &rest[n..2 * n] }
}

/// The words of a value a page stores: a sparse value without the build's padding.
pub(crate) fn stored(metric: Metric, w: &[f32]) -> &[f32] {
    if metric.kind() != Kind::Sparse || w.is_empty() {
        return w;
    }
    let n = sparse_of(w).indices.len();
    &w[..1 + 2 * n]
}

/// What is wrong with the words an element of a sparsevec index stores, for `hnsw_check`:
/// None when they are `[n, indices.., values..]` with n at most [`MAX_NNZ`], exactly
/// 1 + 2n words, indices ascending within `dims` (0-based) and finite values.
pub(crate) fn sparse_problem(w: &[f32], dims: usize) -> Option<String> {
    let Some(count) = w.first() else { return Some("no element count".into()) };
    let n = count.to_bits() as usize;
    if n > MAX_NNZ {
        return Some(format!("{n} stored elements, at most {MAX_NNZ} are indexed"));
    }
    if w.len() != 1 + 2 * n {
        return Some(format!("{} words for {n} stored elements, expected {}", w.len(), 1 + 2 * n));
    }
    let x = sparse_of(w);
    let mut last = -1i64;
    for &i in x.indices {
        if (i as i64) <= last || (i as i64) >= dims as i64 {
            return Some(format!("index {i} out of order or outside {dims} dimensions"));
        }
        last = i as i64;
    }
    x.values.iter().find(|v| !v.is_finite()).map(|v| format!("value {v} is not finite"))
}

/// Halves packed two per word in memory order, `HALF_PAD` after an odd count.
pub(crate) fn pack_halves(x: &[u16]) -> Vec<f32> {
    x.chunks(2)
        .map(|c| {
            let (a, b) = (c[0].to_ne_bytes(), c.get(1).copied().unwrap_or(HALF_PAD).to_ne_bytes());
            f32::from_ne_bytes([a[0], a[1], b[0], b[1]])
        })
        .collect()
}

/// Bytes packed four per word in memory order, zero-padded.
pub(crate) fn pack_bytes(x: &[u8]) -> Vec<f32> {
    x.chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            f32::from_ne_bytes(w)
        })
        .collect()
}

/// The halves of packed words, the pad dropped.
pub(crate) fn halves(w: &[f32]) -> &[u16] {
    // SAFETY: a u16 has no invalid bit patterns and an alignment (2) dividing f32's (4);
    // the words span exactly 2 * len halves, in the memory order `pack_halves` wrote.
    let h = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u16, 2 * w.len()) };
    match h.last() {
        Some(&HALF_PAD) => &h[..h.len() - 1],
        _ => h,
    }
}

/// The bytes of packed words (with the zero pad).
pub(crate) fn bytes(w: &[f32]) -> &[u8] {
    // SAFETY: u8 has no invalid bit patterns and alignment 1; the words span 4 * len bytes.
    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, 4 * w.len()) }
}

/// Graph distance for each metric (smaller is nearer): the operator's value or one
/// ordering the same way (squared L2, negated inner product; cosine indexes hold unit
/// vectors, so cosine distance is 1 - dot there).
pub(crate) fn graph_distance(metric: Metric) -> Distance {
    fn l2(a: &[f32], b: &[f32]) -> f32 {
        distance::l2_squared(a, b) as f32
    }
    fn ip(a: &[f32], b: &[f32]) -> f32 {
        -distance::dot(a, b) as f32
    }
    fn cos(a: &[f32], b: &[f32]) -> f32 {
        (1.0 - distance::dot(a, b)) as f32
    }
    fn l1(a: &[f32], b: &[f32]) -> f32 {
        distance::l1(a, b) as f32
    }
    fn half_l2(a: &[f32], b: &[f32]) -> f32 {
        half::index::l2_squared(halves(a), halves(b))
    }
    fn half_ip(a: &[f32], b: &[f32]) -> f32 {
        -half::index::dot(halves(a), halves(b))
    }
    fn half_cos(a: &[f32], b: &[f32]) -> f32 {
        1.0 - half::index::dot(halves(a), halves(b))
    }
    fn half_l1(a: &[f32], b: &[f32]) -> f32 {
        half::index::l1(halves(a), halves(b))
    }
    fn hamming(a: &[f32], b: &[f32]) -> f32 {
        crate::bitvec::hamming(bytes(a), bytes(b)) as f32
    }
    fn jaccard(a: &[f32], b: &[f32]) -> f32 {
        crate::bitvec::jaccard(bytes(a), bytes(b)) as f32
    }
    fn sparse_l2(a: &[f32], b: &[f32]) -> f32 {
        sparse::l2_squared(sparse_of(a), sparse_of(b))
    }
    fn sparse_ip(a: &[f32], b: &[f32]) -> f32 {
        -sparse::inner_product(sparse_of(a), sparse_of(b))
    }
    fn sparse_cos(a: &[f32], b: &[f32]) -> f32 {
        1.0 - sparse::inner_product(sparse_of(a), sparse_of(b))
    }
    fn sparse_l1(a: &[f32], b: &[f32]) -> f32 {
        sparse::l1(sparse_of(a), sparse_of(b))
    }
    match metric {
        Metric::L2 => l2,
        Metric::InnerProduct => ip,
        Metric::Cosine => cos,
        Metric::L1 => l1,
        Metric::HalfL2 => half_l2,
        Metric::HalfInnerProduct => half_ip,
        Metric::HalfCosine => half_cos,
        Metric::HalfL1 => half_l1,
        Metric::BitHamming => hamming,
        Metric::BitJaccard => jaccard,
        Metric::SparseL2 => sparse_l2,
        Metric::SparseInnerProduct => sparse_ip,
        Metric::SparseCosine => sparse_cos,
        Metric::SparseL1 => sparse_l1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::halfvec::codec::{f16_to_f32, f32_to_f16};

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn rng(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    fn random_halves(n: usize, seed: &mut u64) -> Vec<u16> {
        (0..n).map(|_| f32_to_f16(rng(seed))).collect()
    }

    fn random_bytes(bits: usize, seed: &mut u64) -> Vec<u8> {
        let mut b: Vec<u8> =
            (0..bits.div_ceil(8)).map(|_| (rng(seed) * 1000.0) as i32 as u8).collect();
        if !bits.is_multiple_of(8) {
            // Postgres keeps the pad bits of the last byte zero
            *b.last_mut().unwrap() &= 0xFFu8 << (8 - bits % 8);
        }
        b
    }

    #[test]
    fn halves_round_trip_at_awkward_lengths() {
        let mut s = 7;
        for n in [1, 2, 3, 7, 8, 15, 16, 17, 1999, 4000] {
            let x = random_halves(n, &mut s);
            let w = encode(Metric::HalfL2, Value::Halfvec(&x), true).unwrap();
            assert_eq!(Some(w.len()), Kind::Halfvec.words(n));
            assert_eq!(halves(&w), &x[..], "n={n}");
            // words survive copies by bits (a packed word may be a float NaN)
            let copied: Vec<f32> = w.to_vec();
            assert!(same_bits(&copied, &w));
        }
        // the pad pattern is a NaN, never a halfvec element
        assert!(f16_to_f32(HALF_PAD).is_nan());
        assert!(halfcodec::check_element(HALF_PAD).is_err());
    }

    #[test]
    fn bit_bytes_round_trip_at_awkward_lengths() {
        let mut s = 11;
        for bits in [1, 3, 8, 9, 31, 32, 33, 64, 100, 64000] {
            let x = random_bytes(bits, &mut s);
            let w = encode(Metric::BitHamming, Value::Bit(bits, &x), true).unwrap();
            assert_eq!(Some(w.len()), Kind::Bit.words(bits));
            let b = bytes(&w);
            assert_eq!(&b[..x.len()], &x[..]);
            assert!(b[x.len()..].iter().all(|&z| z == 0));
        }
    }

    #[test]
    fn distances_equal_the_sql_kernels() {
        let mut s = 3;
        for n in [1, 2, 3, 5, 8, 9, 16, 17, 33, 100, 1023] {
            let (a, b) = (random_halves(n, &mut s), random_halves(n, &mut s));
            let (wa, wb) = (pack_halves(&a), pack_halves(&b));
            // halfvec: exactly the index kernels (four accumulators), which agree with the
            // operators' kernels to float4 rounding
            assert_eq!(graph_distance(Metric::HalfL2)(&wa, &wb), half::index::l2_squared(&a, &b));
            assert_eq!(
                graph_distance(Metric::HalfInnerProduct)(&wa, &wb),
                -half::index::dot(&a, &b)
            );
            assert_eq!(graph_distance(Metric::HalfL1)(&wa, &wb), half::index::l1(&a, &b));
            let near = |x: f32, y: f64| (f64::from(x) - y).abs() <= 1e-5 * y.abs().max(1.0);
            assert!(near(graph_distance(Metric::HalfL2)(&wa, &wb), half::l2_squared(&a, &b)));
            assert!(near(graph_distance(Metric::HalfL2)(&wa, &wb).sqrt(), half::l2(&a, &b)));
            assert!(near(graph_distance(Metric::HalfInnerProduct)(&wa, &wb), -half::dot(&a, &b)));
            assert!(near(graph_distance(Metric::HalfL1)(&wa, &wb), half::l1(&a, &b)));
            // cosine: on the normalised values pgvector's index stores
            let (ua, ub) = (
                encode(Metric::HalfCosine, Value::Halfvec(&a), true).unwrap(),
                encode(Metric::HalfCosine, Value::Halfvec(&b), true).unwrap(),
            );
            let (na, nb) =
                (halfcodec::l2_normalize(&a).unwrap(), halfcodec::l2_normalize(&b).unwrap());
            assert_eq!(halves(&ua), &na[..]);
            assert_eq!(
                graph_distance(Metric::HalfCosine)(&ua, &ub),
                1.0 - half::index::dot(&na, &nb)
            );
            assert!(near(graph_distance(Metric::HalfCosine)(&ua, &ub), 1.0 - half::dot(&na, &nb)));
            let d = graph_distance(Metric::HalfCosine)(&ua, &ub) as f64;
            assert!((d - half::cosine(&a, &b)).abs() < 1e-2, "n={n}: {d}");
        }
        for bits in [1, 3, 8, 9, 31, 32, 33, 100, 1000, 64000] {
            let (a, b) = (random_bytes(bits, &mut s), random_bytes(bits, &mut s));
            let (wa, wb) = (pack_bytes(&a), pack_bytes(&b));
            assert_eq!(
                graph_distance(Metric::BitHamming)(&wa, &wb),
                crate::bitvec::hamming(&a, &b) as f32
            );
            assert_eq!(
                graph_distance(Metric::BitJaccard)(&wa, &wb),
                crate::bitvec::jaccard(&a, &b) as f32
            );
        }
        let (a, b) = ([1.0f32, -2.0, 3.0], [0.5f32, 0.25, -1.0]);
        assert_eq!(graph_distance(Metric::L2)(&a, &b), distance::l2_squared(&a, &b) as f32);
        assert_eq!(graph_distance(Metric::L1)(&a, &b), distance::l1(&a, &b) as f32);
    }

    fn random_sparse(dim: i32, nnz: usize, seed: &mut u64) -> sparse::SparseVec {
        let mut idx: Vec<i32> = Vec::new();
        while idx.len() < nnz {
            let i = ((rng(seed) + 2.0) / 4.0 * dim as f32) as i32 % dim;
            if !idx.contains(&i) {
                idx.push(i);
            }
        }
        idx.sort_unstable();
        let values = idx.iter().map(|_| rng(seed)).collect();
        sparse::SparseVec { dim, indices: idx, values }
    }

    #[test]
    fn sparse_round_trip_padding_and_distances() {
        let mut s = 5;
        for (na, nb) in [(0, 0), (0, 3), (1, 1), (5, 17), (40, 40), (1000, 999)] {
            let (a, b) = (random_sparse(5000, na, &mut s), random_sparse(5000, nb, &mut s));
            let wa = encode(Metric::SparseL2, Value::Sparse(a.as_ref()), true).unwrap();
            assert_eq!(wa.len(), 1 + 2 * na);
            assert_eq!(sparse_of(&wa).indices, &a.indices[..]);
            assert_eq!(sparse_of(&wa).values, &a.values[..]);
            // the build's zero padding is ignored by the distances and dropped by `stored`
            let mut padded = wa.clone();
            padded.resize(wa.len() + 7, 0.0);
            assert_eq!(stored(Metric::SparseL2, &padded), &wa[..]);
            let wb = pack_sparse(b.as_ref());
            let (ra, rb) = (a.as_ref(), b.as_ref());
            for (m, want) in [
                (Metric::SparseL2, sparse::l2_squared(ra, rb)),
                (Metric::SparseInnerProduct, -sparse::inner_product(ra, rb)),
                (Metric::SparseL1, sparse::l1(ra, rb)),
            ] {
                assert_eq!(graph_distance(m)(&wa, &wb), want);
                assert_eq!(graph_distance(m)(&padded, &wb), want);
                assert_eq!(graph_distance(m)(&wb, &padded), graph_distance(m)(&wb, &wa));
            }
            if na > 0 && nb > 0 {
                let ua = encode(Metric::SparseCosine, Value::Sparse(ra), true).unwrap();
                let ub = encode(Metric::SparseCosine, Value::Sparse(rb), true).unwrap();
                let (xa, xb) =
                    (sparse::l2_normalize(ra).unwrap(), sparse::l2_normalize(rb).unwrap());
                assert_eq!(
                    graph_distance(Metric::SparseCosine)(&ua, &ub),
                    1.0 - sparse::inner_product(xa.as_ref(), xb.as_ref())
                );
            } else {
                assert!(encode(Metric::SparseCosine, Value::Sparse(ra), true).is_none() || na > 0);
            }
        }
        // a corrupt count cannot read past the words
        let bad = [f32::from_bits(99), 1.0, 2.0];
        assert_eq!(sparse_of(&bad).indices.len(), 1);
        assert!(sparse_of(&[]).indices.is_empty());
        // vector values are stored as they are
        assert_eq!(stored(Metric::L2, &[1.0, 0.0]), &[1.0, 0.0]);
    }

    #[test]
    fn cosine_skips_zero_values_and_keeps_zero_queries() {
        let z = [0u16; 5];
        assert!(encode(Metric::HalfCosine, Value::Halfvec(&z), true).is_none());
        assert_eq!(halves(&encode(Metric::HalfCosine, Value::Halfvec(&z), false).unwrap()), &z);
        assert!(encode(Metric::HalfL2, Value::Halfvec(&z), true).is_some());
        assert!(encode(Metric::Cosine, Value::Vector(&[0.0, 0.0]), true).is_none());
        let v = encode(Metric::Cosine, Value::Vector(&[3.0, 4.0]), true).unwrap();
        assert_eq!(v, vec![0.6f32, 0.8]);
        assert!(encode(Metric::BitJaccard, Value::Bit(3, &[0]), true).is_some());
    }

    #[test]
    fn duplicates_join_by_bits() {
        use crate::hnsw::graph::{joins_element, Element};
        let el = |v: &[f32]| -> bool {
            let stored = pack_halves(&[0, 0x8000, 0x3c00]);
            let e = Element { deleted: false, heap_tids: 1, vector: &stored, keys: Some(&[]) };
            joins_element(&e, v, &[], 10)
        };
        // halfvec [0, -0, 1] and [0, 0, 1] are different values (the first word is -0.0f32)
        assert!(!el(&pack_halves(&[0, 0, 0x3c00])));
        assert!(el(&pack_halves(&[0, 0x8000, 0x3c00])));
        // a packed word can be a float NaN (here bit-string bytes): still equal to itself
        let nan = pack_bytes(&f32::from_bits(0x7fc0_0001).to_ne_bytes());
        assert!(f32::from_bits(nan[0].to_bits()).is_nan());
        let e = Element { deleted: false, heap_tids: 1, vector: &nan, keys: Some(&[]) };
        assert!(joins_element(&e, &nan, &[], 10));
    }

    #[test]
    fn kinds_and_limits() {
        for m in [Metric::HalfL2, Metric::HalfInnerProduct, Metric::HalfCosine, Metric::HalfL1] {
            assert_eq!(m.kind(), Kind::Halfvec);
            assert_eq!(Metric::from_u8(m as u8), Some(m));
        }
        for m in [Metric::BitHamming, Metric::BitJaccard] {
            assert_eq!(m.kind(), Kind::Bit);
            assert_eq!(Metric::from_u8(m as u8), Some(m));
        }
        // every kind's largest value is at most MAX_DIM words
        for k in [Kind::Vector, Kind::Halfvec, Kind::Bit] {
            assert_eq!(k.words(k.max_dims()), Some(super::super::page::MAX_DIM));
        }
        assert_eq!(Kind::Halfvec.words(3), Some(2));
        assert_eq!(Kind::Bit.words(33), Some(2));
        assert_eq!(Kind::Sparse.words(3), None);
        for m in
            [Metric::SparseL2, Metric::SparseInnerProduct, Metric::SparseCosine, Metric::SparseL1]
        {
            assert_eq!(m.kind(), Kind::Sparse);
            assert_eq!(Metric::from_u8(m as u8), Some(m));
        }
        // the longest sparse element and its header fit a page with room for keys
        let longest = super::super::page::element_size(1 + 2 * MAX_NNZ);
        assert!(super::super::page::fits(super::super::page::page_capacity(), &[longest + 64]));
        assert!(Metric::HalfCosine.is_cosine() && !Metric::BitJaccard.is_cosine());
    }

    #[test]
    fn sparse_problems_are_named() {
        let good =
            pack_sparse(SparseRef { dim: 0, indices: &[0, 3, 9], values: &[1.0, -2.0, 0.5] });
        assert_eq!(sparse_problem(&good, 10), None);
        assert_eq!(
            sparse_problem(&pack_sparse(SparseRef { dim: 0, indices: &[], values: &[] }), 5),
            None
        );
        assert!(sparse_problem(&good, 9).unwrap().contains("outside 9 dimensions"));
        assert!(sparse_problem(&good[..6], 10).unwrap().contains("6 words for 3"));
        let mut padded = good.clone();
        padded.push(0.0);
        assert!(sparse_problem(&padded, 10).unwrap().contains("8 words"));
        let unsorted = pack_sparse(SparseRef { dim: 0, indices: &[3, 3], values: &[1.0, 1.0] });
        assert!(sparse_problem(&unsorted, 10).unwrap().contains("out of order"));
        let negative = pack_sparse(SparseRef { dim: 0, indices: &[-1], values: &[1.0] });
        assert!(sparse_problem(&negative, 10).is_some());
        let nan = pack_sparse(SparseRef { dim: 0, indices: &[1], values: &[f32::NAN] });
        assert!(sparse_problem(&nan, 10).unwrap().contains("not finite"));
        let mut huge = vec![f32::from_bits(MAX_NNZ as u32 + 1)];
        huge.extend(std::iter::repeat_n(0.0, 2 * (MAX_NNZ + 1)));
        assert!(sparse_problem(&huge, 100_000).unwrap().contains("at most"));
        assert!(sparse_problem(&[], 10).is_some());
    }
}
