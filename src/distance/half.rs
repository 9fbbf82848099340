//! Distance kernels for `halfvec` (elements are IEEE half bit patterns, `u16`).
//!
//! Semantics are pgvector's halfutils.c: each half is widened to float4 and the sums are
//! accumulated in float4; `<->` is sqrt of the squared distance in double; cosine divides
//! the float4 sums in double, so parallel vectors give exactly 0 and opposite ones 2.
//!
//! On x86-64 with F16C, AVX and FMA (checked at run time) the kernels have pgvector's own
//! F16C shape: eight float4 lanes converted with `vcvtph2ps`, one fused multiply-add
//! accumulator, the lanes added left to right, then the tail; so they return pgvector's
//! float4 sums bit for bit. Elsewhere a plain float4 loop (the reference) runs.
//!
//! simsimd's f16 kernels are not used: on CPUs with AVX-512 FP16 (Sapphire Rapids) it
//! dispatches to kernels that accumulate in half precision, which overflows past 65504
//! (a squared distance of 1536-dim embeddings easily exceeds it) and keeps about three
//! significant digits.

use crate::halfvec::codec::f16_to_f32;

/// Squared Euclidean distance.
#[inline]
pub fn l2_squared(a: &[u16], b: &[u16]) -> f64 {
    dispatch(a, b, Kernel::L2Sq)
}

/// Euclidean distance (`<->`).
#[inline]
pub fn l2(a: &[u16], b: &[u16]) -> f64 {
    l2_squared(a, b).sqrt()
}

/// Inner product; `<#>` returns its negation.
#[inline]
pub fn dot(a: &[u16], b: &[u16]) -> f64 {
    dispatch(a, b, Kernel::Dot)
}

/// Taxicab distance (`<+>`).
#[inline]
pub fn l1(a: &[u16], b: &[u16]) -> f64 {
    dispatch(a, b, Kernel::L1)
}

/// Cosine distance (`<=>`), NaN when either vector is zero.
#[inline]
pub fn cosine(a: &[u16], b: &[u16]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_f16c() {
            // SAFETY: the CPU has the features the kernel is compiled for.
            let (ab, aa, bb) = unsafe { f16c::cosine_sums(a, b) };
            return super::finish_cosine(f64::from(ab), f64::from(aa), f64::from(bb));
        }
    }
    scalar::cosine(a, b)
}

#[derive(Clone, Copy)]
enum Kernel {
    L2Sq,
    Dot,
    L1,
}

#[inline]
fn dispatch(a: &[u16], b: &[u16], k: Kernel) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_f16c() {
            // SAFETY: the CPU has the features the kernels are compiled for.
            let r = unsafe {
                match k {
                    Kernel::L2Sq => f16c::l2_squared(a, b),
                    Kernel::Dot => f16c::dot(a, b),
                    Kernel::L1 => f16c::l1(a, b),
                }
            };
            return f64::from(r);
        }
    }
    match k {
        Kernel::L2Sq => scalar::l2_squared(a, b),
        Kernel::Dot => scalar::dot(a, b),
        Kernel::L1 => scalar::l1(a, b),
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn has_f16c() -> bool {
    std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("avx")
        && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
mod f16c {
    use super::f16_to_f32;
    use std::arch::x86_64::*;

    /// Eight halves from `p`, widened to float4.
    ///
    /// # Safety
    /// `p` must point at 8 readable u16; the CPU must have F16C.
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> __m256 {
        // SAFETY: per the caller; the load is unaligned.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    /// The eight lanes added left to right, as pgvector adds them.
    #[inline(always)]
    fn lanes_sum(v: __m256) -> f32 {
        let mut s = [0f32; 8];
        // SAFETY: s has room for eight float4 values; storeu needs no alignment.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) };
        s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7]
    }

    #[target_feature(enable = "avx,f16c,fma")]
    pub(super) unsafe fn l2_squared(a: &[u16], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let count = n / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < count {
            // SAFETY: i + 8 <= count <= len of both slices.
            let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
            let d = _mm256_sub_ps(x, y);
            acc = _mm256_fmadd_ps(d, d, acc);
            i += 8;
        }
        let mut s = lanes_sum(acc);
        for j in count..n {
            let d = f16_to_f32(a[j]) - f16_to_f32(b[j]);
            s = d.mul_add(d, s);
        }
        s
    }

    #[target_feature(enable = "avx,f16c,fma")]
    pub(super) unsafe fn dot(a: &[u16], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let count = n / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < count {
            // SAFETY: i + 8 <= count <= len of both slices.
            let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
            acc = _mm256_fmadd_ps(x, y, acc);
            i += 8;
        }
        let mut s = lanes_sum(acc);
        for j in count..n {
            s = f16_to_f32(a[j]).mul_add(f16_to_f32(b[j]), s);
        }
        s
    }

    #[target_feature(enable = "avx,f16c,fma")]
    pub(super) unsafe fn cosine_sums(a: &[u16], b: &[u16]) -> (f32, f32, f32) {
        let n = a.len().min(b.len());
        let count = n / 8 * 8;
        let (mut ab, mut aa, mut bb) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i < count {
            // SAFETY: i + 8 <= count <= len of both slices.
            let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
            ab = _mm256_fmadd_ps(x, y, ab);
            aa = _mm256_fmadd_ps(x, x, aa);
            bb = _mm256_fmadd_ps(y, y, bb);
            i += 8;
        }
        let (mut sab, mut saa, mut sbb) = (lanes_sum(ab), lanes_sum(aa), lanes_sum(bb));
        for j in count..n {
            let (x, y) = (f16_to_f32(a[j]), f16_to_f32(b[j]));
            sab = x.mul_add(y, sab);
            saa = x.mul_add(x, saa);
            sbb = y.mul_add(y, sbb);
        }
        (sab, saa, sbb)
    }

    #[target_feature(enable = "avx,f16c,fma")]
    pub(super) unsafe fn l1(a: &[u16], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let count = n / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let sign = _mm256_set1_ps(-0.0);
        let mut i = 0;
        while i < count {
            // SAFETY: i + 8 <= count <= len of both slices.
            let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
            acc = _mm256_add_ps(acc, _mm256_andnot_ps(sign, _mm256_sub_ps(x, y)));
            i += 8;
        }
        let mut s = lanes_sum(acc);
        for j in count..n {
            s += (f16_to_f32(a[j]) - f16_to_f32(b[j])).abs();
        }
        s
    }

    /// `step(x, y, acc)` over both slices with four accumulators of eight lanes, then
    /// eight at a time, then one at a time (`tail`): the index kernels' shared loop.
    ///
    /// # Safety
    /// The CPU must have AVX, F16C and FMA.
    #[target_feature(enable = "avx,f16c,fma")]
    #[inline]
    unsafe fn sum4(
        a: &[u16],
        b: &[u16],
        step: impl Fn(__m256, __m256, __m256) -> __m256,
        tail: impl Fn(f32, f32, f32) -> f32,
    ) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8k + 8 <= i + 32 <= len of both slices.
                let (x, y) =
                    unsafe { (load8(a.as_ptr().add(i + 8 * k)), load8(b.as_ptr().add(i + 8 * k))) };
                *s = step(x, y, *s);
            }
            i += 32;
        }
        let mut v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        while i + 8 <= n {
            // SAFETY: i + 8 <= len of both slices.
            let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
            v = step(x, y, v);
            i += 8;
        }
        let mut s = lanes_sum(v);
        for j in i..n {
            s = tail(f16_to_f32(a[j]), f16_to_f32(b[j]), s);
        }
        s
    }

    #[target_feature(enable = "avx,f16c,fma")]
    pub(super) unsafe fn l2_squared4(a: &[u16], b: &[u16]) -> f32 {
        // SAFETY: this function's features are the ones sum4 needs.
        unsafe {
            sum4(
                a,
                b,
                |x, y, s| {
                    let d = _mm256_sub_ps(x, y);
                    _mm256_fmadd_ps(d, d, s)
                },
                |x, y, s| (x - y).mul_add(x - y, s),
            )
        }
    }

    #[target_feature(enable = "avx,f16c,fma")]
    pub(super) unsafe fn dot4(a: &[u16], b: &[u16]) -> f32 {
        // SAFETY: this function's features are the ones sum4 needs.
        unsafe { sum4(a, b, |x, y, s| _mm256_fmadd_ps(x, y, s), |x, y, s| x.mul_add(y, s)) }
    }

    #[target_feature(enable = "avx,f16c,fma")]
    pub(super) unsafe fn l1_4(a: &[u16], b: &[u16]) -> f32 {
        let sign = _mm256_set1_ps(-0.0);
        // SAFETY: this function's features are the ones sum4 needs.
        unsafe {
            sum4(
                a,
                b,
                |x, y, s| _mm256_add_ps(s, _mm256_andnot_ps(sign, _mm256_sub_ps(x, y))),
                |x, y, s| s + (x - y).abs(),
            )
        }
    }
}

/// The index's graph distances: the same float4 sums as the operators, with four
/// independent accumulators (32 halves a step) instead of pgvector's one, so the additions
/// do not wait on each other. They agree with the operators to float4 rounding, not bit
/// for bit; only the order of graph candidates depends on them.
pub mod index {
    use super::{scalar, Kernel};

    /// Squared Euclidean distance.
    #[inline]
    pub fn l2_squared(a: &[u16], b: &[u16]) -> f32 {
        dispatch4(a, b, Kernel::L2Sq)
    }

    /// Inner product.
    #[inline]
    pub fn dot(a: &[u16], b: &[u16]) -> f32 {
        dispatch4(a, b, Kernel::Dot)
    }

    /// Taxicab distance.
    #[inline]
    pub fn l1(a: &[u16], b: &[u16]) -> f32 {
        dispatch4(a, b, Kernel::L1)
    }

    /// The four-accumulator kernel where the CPU has F16C, else the reference loop.
    #[inline]
    fn dispatch4(a: &[u16], b: &[u16], k: Kernel) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            if super::has_f16c() {
                // SAFETY: the CPU has the features the kernels are compiled for.
                return unsafe {
                    match k {
                        Kernel::L2Sq => super::f16c::l2_squared4(a, b),
                        Kernel::Dot => super::f16c::dot4(a, b),
                        Kernel::L1 => super::f16c::l1_4(a, b),
                    }
                };
            }
        }
        (match k {
            Kernel::L2Sq => scalar::l2_squared(a, b),
            Kernel::Dot => scalar::dot(a, b),
            Kernel::L1 => scalar::l1(a, b),
        }) as f32
    }
}

/// pgvector's portable loops: sequential float4 sums. The reference the F16C kernels are
/// tested against, and the fallback on other CPUs.
pub mod scalar {
    use super::f16_to_f32;

    fn pairs<'a>(a: &'a [u16], b: &'a [u16]) -> impl Iterator<Item = (f32, f32)> + 'a {
        a.iter().zip(b).map(|(&x, &y)| (f16_to_f32(x), f16_to_f32(y)))
    }

    pub fn l2_squared(a: &[u16], b: &[u16]) -> f64 {
        f64::from(pairs(a, b).fold(0f32, |s, (x, y)| s + (x - y) * (x - y)))
    }
    pub fn dot(a: &[u16], b: &[u16]) -> f64 {
        f64::from(pairs(a, b).fold(0f32, |s, (x, y)| s + x * y))
    }
    pub fn l1(a: &[u16], b: &[u16]) -> f64 {
        f64::from(pairs(a, b).fold(0f32, |s, (x, y)| s + (x - y).abs()))
    }
    pub fn cosine(a: &[u16], b: &[u16]) -> f64 {
        let (ab, aa, bb) = pairs(a, b)
            .fold((0f32, 0f32, 0f32), |(ab, aa, bb), (x, y)| (ab + x * y, aa + x * x, bb + y * y));
        super::super::finish_cosine(f64::from(ab), f64::from(aa), f64::from(bb))
    }
    /// In double precision: the exact-as-possible value both float4 paths approximate.
    #[cfg(test)]
    pub fn l2_squared_f64(a: &[u16], b: &[u16]) -> f64 {
        pairs(a, b).map(|(x, y)| (f64::from(x) - f64::from(y)).powi(2)).sum()
    }
    #[cfg(test)]
    pub fn dot_f64(a: &[u16], b: &[u16]) -> f64 {
        pairs(a, b).map(|(x, y)| f64::from(x) * f64::from(y)).sum()
    }
    #[cfg(test)]
    pub fn l1_f64(a: &[u16], b: &[u16]) -> f64 {
        pairs(a, b).map(|(x, y)| (f64::from(x) - f64::from(y)).abs()).sum()
    }
    #[cfg(test)]
    pub fn cosine_f64(a: &[u16], b: &[u16]) -> f64 {
        super::super::finish_cosine(dot_f64(a, b), dot_f64(a, a), dot_f64(b, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::halfvec::codec::f32_to_f16;

    fn halves(n: usize, seed: u64, scale: f32) -> Vec<u16> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                f32_to_f16((((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale)
            })
            .collect()
    }

    fn close(fast: f64, reference: f64, scale: f64) -> bool {
        (fast - reference).abs() <= 1e-5 * scale.max(1.0)
    }

    #[test]
    fn kernels_match_reference_on_every_awkward_length() {
        let mut lengths: Vec<usize> = (1..=80).collect();
        lengths.extend([127, 128, 129, 384, 1536, 3072, 4000, 16000]);
        for n in lengths {
            for scale in [1.0f32, 100.0] {
                let a = halves(n, n as u64, scale);
                let b = halves(n, n as u64 + 1000, scale);
                let s2 = f64::from(scale * scale) * n as f64;
                let s1 = f64::from(scale) * n as f64;
                assert!(close(l2_squared(&a, &b), scalar::l2_squared_f64(&a, &b), s2), "l2sq {n}");
                assert!(close(l2_squared(&a, &b), scalar::l2_squared(&a, &b), s2), "l2sq {n}");
                assert!(close(dot(&a, &b), scalar::dot_f64(&a, &b), s2), "dot {n}");
                assert!(close(dot(&a, &b), scalar::dot(&a, &b), s2), "dot {n}");
                assert!(close(l1(&a, &b), scalar::l1_f64(&a, &b), s1), "l1 {n}");
                assert!(close(l1(&a, &b), scalar::l1(&a, &b), s1), "l1 {n}");
                assert!(close(cosine(&a, &b), scalar::cosine_f64(&a, &b), 1.0), "cos {n}");
                assert!(close(cosine(&a, &b), scalar::cosine(&a, &b), 1.0), "cos {n}");
                assert!(close(l2(&a, &b), scalar::l2_squared_f64(&a, &b).sqrt(), s1), "l2 {n}");
                // Below 8 elements both paths are the same sequential float4 loop.
                if n < 8 {
                    assert_eq!(dot(&a, &b), scalar::dot(&a, &b));
                    assert_eq!(l1(&a, &b), scalar::l1(&a, &b));
                }
            }
        }
    }

    #[test]
    fn large_sums_do_not_overflow_half_precision() {
        let a = vec![f32_to_f16(60000.0); 1536];
        let b = vec![f32_to_f16(-60000.0); 1536];
        let rel = |x: f64, want: f64| ((x - want) / want).abs() < 1e-6;
        assert!(rel(l2_squared(&a, &b), 1536.0 * 120000f64.powi(2)));
        assert!(rel(dot(&a, &b), -1536.0 * 3.6e9));
        assert!(rel(l1(&a, &b), 1536.0 * 120000.0));
    }

    #[test]
    fn cosine_is_exact_for_parallel_and_opposite_vectors() {
        let h = |v: &[f32]| v.iter().map(|&x| f32_to_f16(x)).collect::<Vec<_>>();
        assert_eq!(cosine(&h(&[1.0, 2.0]), &h(&[2.0, 4.0])), 0.0);
        assert_eq!(cosine(&h(&[1.0, 1.0]), &h(&[-1.0, -1.0])), 2.0);
        assert_eq!(cosine(&h(&[1.0, 0.0]), &h(&[0.0, 2.0])), 1.0);
        assert!(cosine(&h(&[1.0, 2.0]), &h(&[0.0, 0.0])).is_nan());
        for n in (1..=40).chain([1536, 3072, 16000]) {
            let a = halves(n, n as u64 + 3, 10.0);
            assert_eq!(cosine(&a, &a), 0.0, "n={n}");
            let neg: Vec<u16> = a.iter().map(|&x| x ^ 0x8000).collect();
            assert_eq!(cosine(&a, &neg), 2.0, "n={n}");
        }
    }

    #[test]
    fn index_kernels_agree_with_the_operators() {
        let mut lengths: Vec<usize> = (1..=80).collect();
        lengths.extend([127, 128, 129, 384, 1536, 3072, 4000]);
        for n in lengths {
            for scale in [1.0f32, 100.0] {
                let a = halves(n, n as u64 + 50, scale);
                let b = halves(n, n as u64 + 5000, scale);
                let s2 = f64::from(scale * scale) * n as f64;
                let s1 = f64::from(scale) * n as f64;
                let (l2, dt, l1x) =
                    (index::l2_squared(&a, &b), index::dot(&a, &b), index::l1(&a, &b));
                assert!(close(l2.into(), scalar::l2_squared_f64(&a, &b), s2), "l2sq {n}");
                assert!(close(dt.into(), scalar::dot_f64(&a, &b), s2), "dot {n}");
                assert!(close(l1x.into(), scalar::l1_f64(&a, &b), s1), "l1 {n}");
                // Below 8 elements every path is the same sequential loop.
                if n < 8 {
                    assert_eq!(f64::from(dt), dot(&a, &b), "{n}");
                    assert_eq!(f64::from(l1x), l1(&a, &b), "{n}");
                }
            }
        }
        let (a, b) = (vec![f32_to_f16(60000.0); 1536], vec![f32_to_f16(-60000.0); 1536]);
        let rel = |x: f32, want: f64| ((f64::from(x) - want) / want).abs() < 1e-6;
        assert!(rel(index::l2_squared(&a, &b), 1536.0 * 120000f64.powi(2)), "no half overflow");
        assert!(rel(index::dot(&a, &b), -1536.0 * 3.6e9));
        assert!(rel(index::l1(&a, &b), 1536.0 * 120000.0));
    }
}
