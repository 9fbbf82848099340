//! Distances on Postgres's built-in `bit`/`varbit` and `binary_quantize`, as pgvector 0.8
//! defines them; `sql.rs` next to this is the glue.
//!
//! - Hamming distance: the number of differing bits;
//! - Jaccard distance: `1 - |a∧b| / |a∨b|`, and exactly 1 when the intersection is empty
//!   (which covers two all-zero strings, where pgvector would otherwise divide 0 by 0);
//! - `binary_quantize(v)`: bit i is `v[i] > 0`, most significant bit of each byte first,
//!   Postgres's bit-string layout.
//!
//! The counts come from simsimd's b8 kernels (run-time dispatched: AVX-512 VPOPCNTDQ,
//! POPCNT, NEON or SVE), which compute Jaccard from integer counts in double precision with
//! the same formula as pgvector, so the results are bit-identical. A scalar reference
//! checks them over awkward lengths. Postgres keeps the pad bits of the last byte zero, so
//! whole bytes can be compared.

pub mod sql;

use simsimd::BinarySimilarity;

/// Hamming distance between two byte strings of equal length.
#[inline]
pub fn hamming(a: &[u8], b: &[u8]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    <u8 as BinarySimilarity>::hamming(a, b).unwrap_or_else(|| scalar::hamming(a, b))
}

/// Jaccard distance between two byte strings of equal length.
#[inline]
pub fn jaccard(a: &[u8], b: &[u8]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    <u8 as BinarySimilarity>::jaccard(a, b).unwrap_or_else(|| scalar::jaccard(a, b))
}

/// The bits of `x > 0`, packed most significant bit first, `ceil(len / 8)` bytes.
#[cfg(test)]
pub fn quantize(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len().div_ceil(8)];
    for (byte, chunk) in out.iter_mut().zip(x.chunks(8)) {
        for (j, &v) in chunk.iter().enumerate() {
            *byte |= ((v > 0.0) as u8) << (7 - j);
        }
    }
    out
}

/// Byte-at-a-time loops: the reference the kernels are tested against (pgvector's formulas).
pub mod scalar {
    pub fn hamming(a: &[u8], b: &[u8]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones() as u64).sum::<u64>() as f64
    }

    pub fn jaccard(a: &[u8], b: &[u8]) -> f64 {
        let (mut ab, mut aa, mut bb) = (0u64, 0u64, 0u64);
        for (x, y) in a.iter().zip(b) {
            ab += (x & y).count_ones() as u64;
            aa += x.count_ones() as u64;
            bb += y.count_ones() as u64;
        }
        if ab == 0 {
            1.0
        } else {
            1.0 - (ab as f64 / (aa + bb - ab) as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u64, density: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                let mut byte = 0u8;
                for bit in 0..8 {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    if (s >> 33) % 100 < density {
                        byte |= 1 << bit;
                    }
                }
                byte
            })
            .collect()
    }

    #[test]
    fn kernels_match_reference_on_every_awkward_length() {
        let mut lengths: Vec<usize> = (0..=130).collect();
        lengths.extend([191, 192, 193, 255, 256, 257, 1023, 1024, 1025, 8000, 8001]);
        for n in lengths {
            for density in [0, 3, 50, 97, 100] {
                let a = bytes(n, n as u64, density);
                let b = bytes(n, n as u64 + 7777, 50);
                assert_eq!(hamming(&a, &b), scalar::hamming(&a, &b), "hamming n={n}");
                assert_eq!(
                    jaccard(&a, &b).to_bits(),
                    scalar::jaccard(&a, &b).to_bits(),
                    "jaccard n={n} density={density}"
                );
                assert_eq!(hamming(&a, &a), 0.0);
            }
        }
    }

    #[test]
    fn pgvector_values() {
        // '1111' against '1110', '1100', '1000', '0000' (bit strings, pad bits zero)
        let j = |x: u8, y: u8| jaccard(&[x], &[y]);
        assert_eq!(j(0xf0, 0xf0), 0.0);
        assert_eq!(j(0xf0, 0xe0), 0.25);
        assert_eq!(j(0xf0, 0xc0), 0.5);
        assert_eq!(j(0xf0, 0x80), 0.75);
        assert_eq!(j(0xf0, 0x00), 1.0);
        assert_eq!(j(0x00, 0x00), 1.0);
        assert_eq!(jaccard(&[], &[]), 1.0);
        assert_eq!(hamming(&[], &[]), 0.0);
        assert_eq!(hamming(&[0xe0], &[0x80]), 2.0);
        assert_eq!(hamming(&[0xaa; 65], &[0x55; 65]), 520.0);
    }

    #[test]
    fn quantize_packs_msb_first() {
        assert_eq!(quantize(&[1.0, -1.0, 0.0, 2.0]), vec![0b1001_0000]);
        let x: Vec<f32> = (0..17).map(|i| if i % 2 == 0 { 1.0 } else { -0.5 }).collect();
        assert_eq!(quantize(&x), vec![0xaa, 0xaa, 0x80]);
        assert_eq!(quantize(&[0.0; 8]), vec![0]);
        assert_eq!(quantize(&[1e-45; 9]), vec![0xff, 0x80]);
    }

    /// Kernel timing (ignored in normal test runs; `cargo test --release --lib --features pg15
    /// -- --ignored bit_kernel_speed --nocapture`): ns per distance, SIMD and scalar.
    #[test]
    #[ignore]
    fn bit_kernel_speed() {
        use std::hint::black_box;
        use std::time::Instant;
        type K = fn(&[u8], &[u8]) -> f64;
        let kernels: [(&str, K, K); 2] =
            [("hamming", hamming, scalar::hamming), ("jaccard", jaccard, scalar::jaccard)];
        println!(
            "{:>6} {:>8} {:>10} {:>10} {:>7}",
            "bits", "kernel", "simd ns", "scalar ns", "ratio"
        );
        for bits in [256usize, 1024, 1536, 3072, 64000] {
            let n = 2048;
            let data: Vec<Vec<u8>> = (0..n).map(|i| bytes(bits / 8, i as u64, 50)).collect();
            let q = bytes(bits / 8, 99_999, 50);
            let reps = (50_000_000 / (bits * n)).max(1);
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
                println!("{bits:>6} {name:>8} {f:>10.1} {s:>10.1} {:>6.1}x", s / f);
            }
        }
    }
}
