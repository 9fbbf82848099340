//! Distance kernels: SIMD from `simsimd` (dispatched at run time to the best kernel the CPU
//! has: Haswell AVX2+FMA here, Skylake/Ice Lake AVX-512 or NEON/SVE elsewhere), plus a
//! scalar reference that every kernel is tested against over awkward lengths.
//!
//! Semantics follow pgvector 0.8 exactly where users can see them:
//! - `l2` is sqrt of the squared distance; `<#>` is the negated inner product;
//! - `cosine` is `1 - ab / sqrt(|a|²|b|²)` clamped to [0, 2], with the three sums
//!   accumulated in float4 and the division in double, as pgvector's
//!   VectorCosineSimilarity does: parallel vectors give exactly 0, opposite ones exactly 2,
//!   a zero vector NaN (0/0), and sums that overflow float4 NaN (inf/inf). simsimd's fused
//!   cosine kernel normalises with an approximate reciprocal square root, so it gives
//!   8.4e-9 for `[1,1] <=> [1,1]`; ours is a one-pass float4 loop compiled for AVX2+FMA
//!   and chosen at run time;
//! - `l1` (taxicab) has no simsimd kernel for f32, so it is a chunked loop that LLVM
//!   vectorises; it is tested against the reference like the others.
//!
//! Results are f64 because the SQL functions return double precision. This module never
//! touches Postgres; `sql.rs` next to it is the glue. `half` holds the halfvec kernels.

pub mod half;
#[cfg(test)]
mod speed;
pub mod sql;

use simsimd::SpatialSimilarity;

/// Squared Euclidean distance.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    f32::l2sq(a, b).unwrap_or_else(|| scalar::l2_squared(a, b))
}

/// Euclidean distance (`<->`).
#[inline]
pub fn l2(a: &[f32], b: &[f32]) -> f64 {
    l2_squared(a, b).sqrt()
}

/// Inner product; `<#>` returns its negation so that smaller is nearer.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    f32::dot(a, b).unwrap_or_else(|| scalar::dot(a, b))
}

/// Cosine distance (`<=>`), NaN when either vector is zero.
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let (ab, aa, bb) = cosine_sums(a, b);
    finish_cosine(f64::from(ab), f64::from(aa), f64::from(bb))
}

/// The sums a·b, a·a and b·b in float4, in one pass. When a and b are the same values the
/// three sums are the same float4, so the distance is exactly 0 whatever the rounding.
#[inline]
pub fn cosine_sums(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features cosine_sums_avx2 is compiled for.
            return unsafe { cosine_sums_avx2(a, b) };
        }
    }
    cosine_sums_portable(a, b)
}

/// AVX2+FMA: two 8-lane float4 accumulators per sum (16 elements per step); the last
/// 1..15 elements through one full and one masked 8-lane load, so short vectors stay in
/// SIMD registers; the three sums reduced together with horizontal adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cosine_sums_avx2(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let z = _mm256_setzero_ps();
    let (mut ab0, mut aa0, mut bb0, mut ab1, mut aa1, mut bb1) = (z, z, z, z, z, z);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n <= len of both slices; the loads are unaligned.
        let (x0, y0, x1, y1) = unsafe {
            (
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
            )
        };
        ab0 = _mm256_fmadd_ps(x0, y0, ab0);
        aa0 = _mm256_fmadd_ps(x0, x0, aa0);
        bb0 = _mm256_fmadd_ps(y0, y0, bb0);
        ab1 = _mm256_fmadd_ps(x1, y1, ab1);
        aa1 = _mm256_fmadd_ps(x1, x1, aa1);
        bb1 = _mm256_fmadd_ps(y1, y1, bb1);
        i += 16;
    }
    if i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        ab0 = _mm256_fmadd_ps(x, y, ab0);
        aa0 = _mm256_fmadd_ps(x, x, aa0);
        bb0 = _mm256_fmadd_ps(y, y, bb0);
        i += 8;
    }
    if i < n {
        // Lanes 0..n-i load, the others read nothing and are zero.
        let rest = (n - i) as i32;
        let mask =
            _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        // SAFETY: a masked load touches only the lanes whose mask is set, all below n.
        let (x, y) =
            unsafe { (_mm256_maskload_ps(pa.add(i), mask), _mm256_maskload_ps(pb.add(i), mask)) };
        ab1 = _mm256_fmadd_ps(x, y, ab1);
        aa1 = _mm256_fmadd_ps(x, x, aa1);
        bb1 = _mm256_fmadd_ps(y, y, bb1);
    }
    let (ab, aa, bb) = (_mm256_add_ps(ab0, ab1), _mm256_add_ps(aa0, aa1), _mm256_add_ps(bb0, bb1));
    // [ab, aa, bb, 0] per 128-bit half, then the halves added.
    let h = _mm256_hadd_ps(_mm256_hadd_ps(ab, aa), _mm256_hadd_ps(bb, z));
    let r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let mut out = [0f32; 4];
    // SAFETY: out holds four float4 values; storeu needs no alignment.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), r) };
    (out[0], out[1], out[2])
}

/// Portable loop: 16 independent float4 accumulators per sum (which LLVM packs into SIMD
/// registers), added pairwise at the end, then the tail.
fn cosine_sums_portable(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut ab, mut aa, mut bb) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    let madd = |x: f32, y: f32, acc: f32| acc + x * y;
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            ab[i] = madd(x[i], y[i], ab[i]);
            aa[i] = madd(x[i], x[i], aa[i]);
            bb[i] = madd(y[i], y[i], bb[i]);
        }
    }
    let (mut sab, mut saa, mut sbb) = (pairwise_sum(ab), pairwise_sum(aa), pairwise_sum(bb));
    for (&x, &y) in ar.iter().zip(br) {
        sab = madd(x, y, sab);
        saa = madd(x, x, saa);
        sbb = madd(y, y, sbb);
    }
    (sab, saa, sbb)
}

#[inline(always)]
fn pairwise_sum<const N: usize>(mut v: [f32; N]) -> f32 {
    let mut width = N;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            v[i] += v[i + width];
        }
    }
    v[0]
}

/// Cosine distance from the three sums, shared by the SIMD and reference paths.
#[inline]
pub fn finish_cosine(ab: f64, aa: f64, bb: f64) -> f64 {
    // sqrt(a*b) rather than sqrt(a)*sqrt(b), as pgvector does.
    let sim = ab / (aa * bb).sqrt();
    // NaN stays NaN (f64::clamp passes it through), as pgvector's clamp lets it.
    let sim = sim.clamp(-1.0, 1.0);
    1.0 - sim
}

/// Taxicab distance (`<+>`).
#[inline]
pub fn l1(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = a.len() / LANES;
    for c in 0..chunks {
        let (x, y) = (&a[c * LANES..(c + 1) * LANES], &b[c * LANES..(c + 1) * LANES]);
        for i in 0..LANES {
            acc[i] += (x[i] - y[i]).abs();
        }
    }
    let mut sum: f64 = acc.iter().map(|&v| v as f64).sum();
    for i in chunks * LANES..a.len() {
        sum += (a[i] - b[i]).abs() as f64;
    }
    sum
}

/// Which SIMD kernel family the running CPU dispatched to (printed by the kernel bench).
#[cfg(test)]
fn simd_backend() -> &'static str {
    if simsimd::capabilities::uses_sapphire()
        || simsimd::capabilities::uses_ice()
        || simsimd::capabilities::uses_skylake()
    {
        "avx512"
    } else if simsimd::capabilities::uses_haswell() {
        "haswell (avx2+fma)"
    } else if simsimd::capabilities::uses_neon() {
        "neon"
    } else {
        "serial"
    }
}

/// Plain loops in f64: the reference every fast kernel must agree with.
pub mod scalar {
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum()
    }
    pub fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }
    #[cfg(test)]
    pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
        super::finish_cosine(dot(a, b), dot(a, a), dot(b, b))
    }
    #[cfg(test)]
    /// pgvector's VectorCosineSimilarity as written: sequential float4 sums.
    pub fn cosine_f32(a: &[f32], b: &[f32]) -> f64 {
        let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
        for (&x, &y) in a.iter().zip(b) {
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        super::finish_cosine(f64::from(ab), f64::from(aa), f64::from(bb))
    }
    #[cfg(test)]
    pub fn l1(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1) without a dependency.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(fast: f64, reference: f64, scale: f64) -> bool {
        (fast - reference).abs() <= 1e-5 * scale.max(1.0)
    }

    #[test]
    fn kernels_match_reference_on_every_awkward_length() {
        let mut lengths: Vec<usize> = (1..=80).collect();
        lengths.extend([127, 128, 129, 384, 1536, 2000, 16000]);
        for n in lengths {
            let a = values(n, n as u64);
            let b = values(n, n as u64 + 1000);
            let scale = n as f64;
            assert!(close(l2_squared(&a, &b), scalar::l2_squared(&a, &b), scale), "l2sq n={n}");
            assert!(close(dot(&a, &b), scalar::dot(&a, &b), scale), "dot n={n}");
            assert!(close(l1(&a, &b), scalar::l1(&a, &b), scale), "l1 n={n}");
            assert!(close(cosine(&a, &b), scalar::cosine(&a, &b), 1.0), "cos n={n}");
            assert!(close(l2(&a, &b), scalar::l2_squared(&a, &b).sqrt(), scale), "l2 n={n}");
        }
    }

    #[test]
    fn cosine_of_zero_vector_is_nan_like_pgvector() {
        for n in [1, 3, 17, 1536] {
            let z = vec![0f32; n];
            let a = values(n, 7);
            assert!(cosine(&z, &a).is_nan());
            assert!(cosine(&a, &z).is_nan());
            assert!(scalar::cosine(&z, &z).is_nan());
        }
    }

    #[test]
    fn cosine_is_exact_where_pgvector_is() {
        // pgvector's regression outputs.
        assert_eq!(cosine(&[1.0, 2.0], &[2.0, 4.0]), 0.0);
        assert_eq!(cosine(&[1.0, 1.0], &[1.0, 1.0]), 0.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 2.0]), 1.0);
        assert_eq!(cosine(&[1.0, 1.0], &[-1.0, -1.0]), 2.0);
        assert_eq!(cosine(&[1.0, 1.0], &[1.1, 1.1]), 0.0);
        assert_eq!(cosine(&[1.0, 1.0], &[-1.1, -1.1]), 2.0);
        assert!(cosine(&[3e38], &[3e38]).is_nan());
        let nine: Vec<f32> = (1..=9).map(|i| i as f32).collect();
        let neg: Vec<f32> = nine.iter().map(|v| -v).collect();
        assert_eq!(cosine(&nine, &nine), 0.0);
        assert_eq!(cosine(&nine, &neg), 2.0);
        // Any vector against itself, and against itself scaled by a power of two, on every
        // awkward length: the sums scale exactly, so the distance is exactly 0 (or 2).
        for n in (1..=70).chain([127, 128, 129, 1536, 3072, 16000]) {
            let a = values(n, n as u64 + 7);
            assert_eq!(cosine(&a, &a), 0.0, "n={n}");
            for k in [0.25f32, 2.0, 1024.0] {
                let ka: Vec<f32> = a.iter().map(|v| v * k).collect();
                assert_eq!(cosine(&a, &ka), 0.0, "n={n} k={k}");
                let nka: Vec<f32> = ka.iter().map(|v| -v).collect();
                assert_eq!(cosine(&a, &nka), 2.0, "n={n} k={k}");
            }
            let b = values(n, n as u64 + 8);
            assert!(close(cosine(&a, &b), scalar::cosine_f32(&a, &b), 1.0), "n={n}");
        }
    }

    #[test]
    fn cosine_is_clamped_and_exact_for_parallel_vectors() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [2.0f32, 4.0, 6.0];
        let d = cosine(&a, &b);
        assert_eq!(d, 0.0, "parallel vectors: {d}");
        let neg = [-1.0f32, -2.0, -3.0];
        assert_eq!(cosine(&a, &neg), 2.0);
        assert_eq!(l2(&[3.0, 0.0], &[0.0, 4.0]), 5.0);
        assert_eq!(dot(&[1.0, 2.0], &[3.0, 4.0]), 11.0);
        assert_eq!(l1(&[1.0, -2.0], &[3.0, 4.0]), 8.0);
    }

    /// Kernel timing, run by `benches/run.sh kernels` (ignored in normal test runs):
    /// ns per distance for each SIMD kernel and its scalar reference.
    #[test]
    #[ignore]
    fn kernel_speed() {
        use std::hint::black_box;
        use std::time::Instant;
        println!("simd backend: {}", simd_backend());
        println!(
            "{:>6} {:>8} {:>10} {:>10} {:>7}",
            "dim", "kernel", "simd ns", "scalar ns", "ratio"
        );
        type K = fn(&[f32], &[f32]) -> f64;
        let simsimd_cos: K = |a, b| <f32 as SpatialSimilarity>::cos(a, b).unwrap_or(0.0);
        let kernels: [(&str, K, K); 5] = [
            ("l2sq", l2_squared, scalar::l2_squared),
            ("dot", dot, scalar::dot),
            ("cosine", cosine, scalar::cosine),
            ("simsimd-cos", simsimd_cos, scalar::cosine),
            ("l1", l1, scalar::l1),
        ];
        for dim in [50usize, 384, 1536] {
            let n = 2048;
            let data: Vec<Vec<f32>> = (0..n).map(|i| values(dim, i as u64)).collect();
            let q = values(dim, 99_999);
            let reps = (20_000_000 / (dim * n)).max(1);
            for (name, fast, slow) in kernels {
                let time = |f: K| {
                    let mut best = f64::MAX;
                    for _ in 0..15 {
                        let t = Instant::now();
                        let mut acc = 0.0;
                        for _ in 0..reps {
                            for v in &data {
                                acc += f(black_box(&q), black_box(v));
                            }
                        }
                        black_box(acc);
                        best = best.min(t.elapsed().as_nanos() as f64 / (reps * n) as f64);
                    }
                    best
                };
                let (f, s) = (time(fast), time(slow));
                println!("{dim:>6} {name:>8} {f:>10.1} {s:>10.1} {:>6.1}x", s / f);
            }
        }
    }
}
