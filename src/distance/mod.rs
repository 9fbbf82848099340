//! Distance kernels: SIMD from `simsimd` (dispatched at run time to the best kernel the CPU
//! has: Haswell AVX2+FMA here, Skylake/Ice Lake AVX-512 or NEON/SVE elsewhere), plus a
//! scalar reference that every kernel is tested against over awkward lengths.
//!
//! Semantics follow pgvector 0.8 exactly where users can see them:
//! - `l2` is sqrt of the squared distance; `<#>` is the negated inner product;
//! - `cosine` is `1 - ab / sqrt(|a|²|b|²)` clamped to [0, 2]; a zero vector gives NaN
//!   (0/0), as in pgvector;
//! - `l1` (taxicab) has no simsimd kernel for f32, so it is a chunked loop that LLVM
//!   vectorises; it is tested against the reference like the others.
//!
//! Results are f64 because the SQL functions return double precision. This module never
//! touches Postgres; `sql.rs` next to it is the glue.

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
///
/// simsimd's fused one-pass kernel answers the common case. It returns exactly 0 when both
/// vectors are zero and exactly 1 when the dot product is zero (which includes one zero
/// vector), where pgvector answers NaN or 1; only those two values take the precise
/// three-sum path, which reproduces pgvector's semantics.
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    match <f32 as SpatialSimilarity>::cos(a, b) {
        Some(d) if d != 0.0 && d != 1.0 => d.clamp(0.0, 2.0),
        _ => finish_cosine(dot(a, b), dot(a, a), dot(b, b)),
    }
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
    fn cosine_is_clamped_and_exact_for_parallel_vectors() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [2.0f32, 4.0, 6.0];
        let d = cosine(&a, &b);
        assert!((0.0..1e-6).contains(&d), "parallel vectors: {d}");
        let neg = [-1.0f32, -2.0, -3.0];
        assert!((cosine(&a, &neg) - 2.0).abs() < 1e-6);
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
        let kernels: [(&str, K, K); 4] = [
            ("l2sq", l2_squared, scalar::l2_squared),
            ("dot", dot, scalar::dot),
            ("cosine", cosine, scalar::cosine),
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
                    for _ in 0..5 {
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
