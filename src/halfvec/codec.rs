//! The `halfvec` value without Postgres: IEEE half floats, pgvector's text and binary
//! formats, casts, arithmetic and the aggregate final step.
//!
//! A halfvec is stored as the raw 16-bit patterns (`u16`), exactly as pgvector stores its
//! `half` elements. Every rule mirrors pgvector 0.8's halfvec.c, message for message:
//! - text in: `strtof` first, then float4 -> half with round-to-nearest-even, so a literal
//!   rounds twice exactly as in pgvector; a finite literal that becomes an infinite half is
//!   `"70000" is out of range for type halfvec`;
//! - text out: each half widened to float4 and printed in float4's shortest round-trip form;
//! - binary: int16 dim, int16 unused (0), then the 16-bit patterns, all big-endian;
//! - arithmetic: widen to float4, operate, round back to half, refuse infinities (and, for
//!   `*`, a product of non-zero values that rounds to zero).
//!
//! Errors are `VectorError`s with pgvector's SQLSTATEs; nothing here panics on any input.

use crate::vector::codec::{
    self as vcodec, check_dim_of, check_expected_dim, dense_binary_header, dimension_mismatch_of,
    float_overflow, float_underflow, infinite_not_allowed, insufficient_data, nan_not_allowed,
    out_of_range, DenseType, VectorError,
};

const HALFVEC: DenseType = DenseType::Halfvec;

/// Largest dimension count of a `halfvec` (pgvector's HALFVEC_MAX_DIM).
#[cfg(test)]
pub const HALFVEC_MAX_DIM: usize = 16000;

/// Widens a half (its bit pattern) to float4 exactly.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man * 2^-24, exact in float4.
        (0, _) => {
            let v = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Rounds a float4 to the nearest half, ties to even (what F16C's `vcvtps2ph` with
/// rounding mode 0 and pgvector's Float4ToHalfUnchecked do). Values too large become
/// infinities; the caller decides whether that is an error.
#[inline]
pub fn f32_to_f16(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 | (man >> 13) as u16 } else { 0 };
    }
    // Biased half exponent.
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            // Below 2^-25: rounds to zero.
            return sign;
        }
        // Subnormal half: units of 2^-24; the float's 24-bit significand shifted down.
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let r = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let r = if rem > halfway || (rem == halfway && r & 1 == 1) { r + 1 } else { r };
        return sign | r as u16;
    }
    let r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    // A carry out of the mantissa moves into the exponent, up to infinity: still correct.
    let r = if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) { r + 1 } else { r };
    sign | r as u16
}

pub fn is_nan(h: u16) -> bool {
    (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0
}

pub fn is_inf(h: u16) -> bool {
    (h & 0x7fff) == 0x7c00
}

fn is_zero(h: u16) -> bool {
    (h & 0x7fff) == 0
}

/// pgvector's CheckElement for halfvec.
pub fn check_element(h: u16) -> Result<(), VectorError> {
    if is_nan(h) {
        Err(nan_not_allowed(HALFVEC))
    } else if is_inf(h) {
        Err(infinite_not_allowed(HALFVEC))
    } else {
        Ok(())
    }
}

/// Checks a dimension count against halfvec's limits.
pub fn check_dim(dim: i64) -> Result<(), VectorError> {
    check_dim_of(HALFVEC, dim)
}

/// Checks a whole value before it is stored: dimension count and elements.
pub fn check_halfvec(x: &[u16]) -> Result<(), VectorError> {
    check_dim(x.len() as i64)?;
    x.iter().try_for_each(|&h| check_element(h))
}

/// pgvector's Float4ToHalf: a finite float4 that rounds to an infinite half is an error
/// naming the float4 in its shortest form; an infinite float4 passes through (the
/// element check refuses it with "infinite value not allowed in halfvec").
pub fn f32_to_f16_checked(f: f32) -> Result<u16, VectorError> {
    let h = f32_to_f16(f);
    if is_inf(h) && !f.is_infinite() {
        let mut s = String::new();
        vcodec::write_float4(&mut s, f);
        return Err(out_of_range(HALFVEC, &s));
    }
    Ok(h)
}

/// Validates `halfvec(n)`.
pub fn typmod_in(mods: &[i32]) -> Result<i32, VectorError> {
    vcodec::typmod_in_of(HALFVEC, mods)
}

/// Parses pgvector's text form `[1,2,3]` into halves, checking elements and the typmod.
pub fn parse_text(lit: &str, typmod: i32) -> Result<Vec<u16>, VectorError> {
    vcodec::parse_text_with(HALFVEC, lit, typmod, |tok, val, overflowed| {
        let h = f32_to_f16(val);
        if overflowed || (is_inf(h) && !val.is_infinite()) {
            return Err(out_of_range(HALFVEC, tok));
        }
        check_element(h)?;
        Ok(h)
    })
}

/// Formats as `[1,2,3]`: each half printed as the shortest float4 that round-trips.
pub fn format_text(x: &[u16]) -> String {
    let mut out = String::with_capacity(2 + x.len() * 8);
    out.push('[');
    for (i, &h) in x.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        vcodec::write_float4(&mut out, f16_to_f32(h));
    }
    out.push(']');
    out
}

/// Encodes the binary send format: int16 dim, int16 unused = 0, halves, big-endian.
pub fn encode_binary(x: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 2 * x.len());
    out.extend_from_slice(&(x.len() as i16).to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    for h in x {
        out.extend_from_slice(&h.to_be_bytes());
    }
    out
}

/// Decodes the binary format from `buf`; returns the values and the number of bytes used.
pub fn decode_binary(buf: &[u8], typmod: i32) -> Result<(Vec<u16>, usize), VectorError> {
    let dim = dense_binary_header(buf, typmod, check_dim)?;
    let need = 4 + 2 * dim;
    if buf.len() < need {
        return Err(insufficient_data());
    }
    let mut out = Vec::with_capacity(dim);
    for c in buf[4..need].chunks_exact(2) {
        let h = u16::from_be_bytes([c[0], c[1]]);
        check_element(h)?;
        out.push(h);
    }
    Ok((out, need))
}

/// array_to_halfvec after the array's shape was checked (`vcodec::check_array_shape`):
/// each element goes through float4, then to half with pgvector's range error.
pub fn from_f64_elements(elems: &[f64]) -> Result<Vec<u16>, VectorError> {
    let out = elems.iter().map(|&v| f32_to_f16_checked(v as f32)).collect::<Result<Vec<_>, _>>()?;
    out.iter().try_for_each(|&h| check_element(h))?;
    Ok(out)
}

/// vector -> halfvec (pgvector's vector_to_halfvec).
pub fn from_vector(x: &[f32], typmod: i32) -> Result<Vec<u16>, VectorError> {
    check_dim(x.len() as i64)?;
    check_expected_dim(typmod, x.len())?;
    x.iter().map(|&v| f32_to_f16_checked(v)).collect()
}

/// halfvec -> vector or real[]: exact widening.
pub fn to_f32(x: &[u16]) -> Vec<f32> {
    x.iter().map(|&h| f16_to_f32(h)).collect()
}

fn elementwise(
    a: &[u16],
    b: &[u16],
    op: impl Fn(f32, f32) -> f32,
    check_underflow: bool,
) -> Result<Vec<u16>, VectorError> {
    if a.len() != b.len() {
        return Err(dimension_mismatch_of(HALFVEC, a.len(), b.len()));
    }
    let mut out = Vec::with_capacity(a.len());
    for (&x, &y) in a.iter().zip(b) {
        let r = f32_to_f16(op(f16_to_f32(x), f16_to_f32(y)));
        if is_inf(r) {
            return Err(float_overflow());
        }
        if check_underflow && is_zero(r) && !(is_zero(x) || is_zero(y)) {
            return Err(float_underflow());
        }
        out.push(r);
    }
    Ok(out)
}

/// Element-wise a + b.
pub fn add(a: &[u16], b: &[u16]) -> Result<Vec<u16>, VectorError> {
    elementwise(a, b, |x, y| x + y, false)
}

/// Element-wise a - b.
pub fn sub(a: &[u16], b: &[u16]) -> Result<Vec<u16>, VectorError> {
    elementwise(a, b, |x, y| x - y, false)
}

/// Element-wise a * b.
pub fn mul(a: &[u16], b: &[u16]) -> Result<Vec<u16>, VectorError> {
    elementwise(a, b, |x, y| x * y, true)
}

/// a || b, bounded by the dimension limit.
pub fn concat(a: &[u16], b: &[u16]) -> Result<Vec<u16>, VectorError> {
    check_dim((a.len() + b.len()) as i64)?;
    Ok([a, b].concat())
}

/// subvector(v, start, count), 1-based, clamped as pgvector's halfvec_subvector clamps.
pub fn subvector(a: &[u16], start: i32, count: i32) -> Result<Vec<u16>, VectorError> {
    let dim = a.len() as i64;
    let (start, count) = (i64::from(start), i64::from(count));
    if count < 1 {
        return Err(vcodec::too_few_dims(HALFVEC));
    }
    let end = if start > dim - count { dim + 1 } else { start + count };
    let start = if start < 1 {
        1
    } else if start > dim {
        return Err(vcodec::too_few_dims(HALFVEC));
    } else {
        start
    };
    check_dim(end - start)?;
    Ok(a[(start - 1) as usize..(end - 1) as usize].to_vec())
}

/// pgvector's ordering: element-wise on the common prefix (as float4), then shorter first.
pub fn compare(a: &[u16], b: &[u16]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f16_to_f32(x), f16_to_f32(y));
        if x < y {
            return Ordering::Less;
        }
        if x > y {
            return Ordering::Greater;
        }
    }
    a.len().cmp(&b.len())
}

/// Euclidean norm in double precision (pgvector's halfvec_l2_norm).
pub fn norm(a: &[u16]) -> f64 {
    a.iter().map(|&h| f64::from(f16_to_f32(h)).powi(2)).sum::<f64>().sqrt()
}

/// Unit-length copy; a zero vector stays zero (pgvector's halfvec_l2_normalize).
pub fn l2_normalize(a: &[u16]) -> Result<Vec<u16>, VectorError> {
    let n = norm(a);
    if n > 0.0 {
        let r: Vec<u16> =
            a.iter().map(|&h| f32_to_f16((f64::from(f16_to_f32(h)) / n) as f32)).collect();
        if r.iter().any(|&h| is_inf(h)) {
            return Err(float_overflow());
        }
        Ok(r)
    } else {
        Ok(a.to_vec())
    }
}

/// binary_quantize(halfvec): bit i is set when element i is > 0.
pub fn binary_quantize(x: &[u16]) -> Vec<u8> {
    vcodec::pack_bits(x.iter().map(|&h| f16_to_f32(h) > 0.0), x.len())
}

/// Final avg(halfvec) from per-dimension means (pgvector's halfvec_avg).
pub fn avg_from_means(means: &[f64]) -> Result<Vec<u16>, VectorError> {
    let mut out = Vec::with_capacity(means.len());
    for &m in means {
        let h = f32_to_f16_checked(m as f32)?;
        check_element(h)?;
        out.push(h);
    }
    Ok(out)
}

/// Final avg(halfvec) from an aggregate state; None when no rows were aggregated.
pub fn avg_final(state: &[f64]) -> Result<Option<Vec<u16>>, VectorError> {
    match vcodec::avg_values(state, "halfvec_avg", HALFVEC)? {
        Some(means) => avg_from_means(&means).map(Some),
        None => Ok(None),
    }
}

/// The aggregate transition step (pgvector's halfvec_accum).
pub fn accum(state: &mut Vec<f64>, x: &[u16]) -> Result<(), VectorError> {
    vcodec::accum(state, &to_f32(x), "halfvec_accum", HALFVEC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::codec::SqlState;

    fn h(v: f32) -> u16 {
        f32_to_f16(v)
    }

    #[test]
    fn every_half_widens_and_rounds_back_to_itself() {
        for bits in 0..=u16::MAX {
            if is_nan(bits) {
                assert!(f16_to_f32(bits).is_nan());
                assert!(is_nan(f32_to_f16(f16_to_f32(bits))));
                continue;
            }
            assert_eq!(f32_to_f16(f16_to_f32(bits)), bits, "half {bits:#06x}");
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn rounding_to_half_is_to_nearest_even() {
        // Between every pair of neighbouring positive halves: the exact midpoint goes to the
        // even one, a float4 step either side to the nearer one.
        for lo in 0u16..0x7bff {
            let (a, b) = (f16_to_f32(lo), f16_to_f32(lo + 1));
            let mid = (a + b) / 2.0; // exact: a float4 has 13 more significand bits
            let even = if lo & 1 == 0 { lo } else { lo + 1 };
            assert_eq!(f32_to_f16(mid), even, "tie above {lo:#06x}");
            assert_eq!(f32_to_f16(f32::from_bits(mid.to_bits() - 1)), lo);
            assert_eq!(f32_to_f16(f32::from_bits(mid.to_bits() + 1)), lo + 1);
            assert_eq!(f32_to_f16(-mid), even | 0x8000);
        }
        assert_eq!(f32_to_f16(65520.0), 0x7c00, "65520 ties to infinity");
        assert_eq!(f32_to_f16(65519.996), 0x7bff);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0, "tie to even zero");
        assert_eq!(f32_to_f16(f32::from_bits(2f32.powi(-25).to_bits() + 1)), 1);
        assert_eq!(f32_to_f16(1e-30), 0);
        assert_eq!(f32_to_f16(-1e-30), 0x8000);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7c00);
        assert_eq!(f32_to_f16(1e10), 0x7c00);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rounding_matches_the_f16c_instruction() {
        if !std::arch::is_x86_feature_detected!("f16c") {
            return;
        }
        #[target_feature(enable = "f16c")]
        unsafe fn hw(f: f32) -> u16 {
            use std::arch::x86_64::*;
            // SAFETY: f16c is enabled for this function and detected at run time.
            _mm_extract_epi16::<0>(_mm_cvtps_ph::<0>(_mm_set1_ps(f))) as u16
        }
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let f = f32::from_bits(s as u32);
            if f.is_nan() {
                continue;
            }
            // SAFETY: f16c was detected above.
            assert_eq!(f32_to_f16(f), unsafe { hw(f) }, "{f:e}");
        }
    }

    #[test]
    fn text_round_trip_and_pgvector_messages() {
        assert_eq!(parse_text("[1,2,3]", -1).unwrap(), vec![h(1.0), h(2.0), h(3.0)]);
        assert_eq!(
            format_text(&parse_text("[1.5,-0,0.1,65504]", -1).unwrap()),
            "[1.5,-0,0.099975586,65504]"
        );
        let e = parse_text("[65520]", -1).unwrap_err();
        assert_eq!(
            (e.state, e.message.as_str()),
            (SqlState::NumericValueOutOfRange, "\"65520\" is out of range for type halfvec")
        );
        assert_eq!(
            parse_text("[1e39]", -1).unwrap_err().message,
            "\"1e39\" is out of range for type halfvec"
        );
        assert_eq!(parse_text("[NaN]", -1).unwrap_err().message, "NaN not allowed in halfvec");
        assert_eq!(
            parse_text("[-inf]", -1).unwrap_err().message,
            "infinite value not allowed in halfvec"
        );
        assert_eq!(
            parse_text("[]", -1).unwrap_err().message,
            "halfvec must have at least 1 dimension"
        );
        assert_eq!(
            parse_text("[1,", -1).unwrap_err().message,
            "invalid input syntax for type halfvec: \"[1,\""
        );
        assert_eq!(parse_text("[1,2]", 3).unwrap_err().message, "expected 3 dimensions, not 2");
        let lit = format!("[{}]", vec!["1"; HALFVEC_MAX_DIM + 1].join(","));
        let e = parse_text(&lit, -1).unwrap_err();
        assert_eq!(
            (e.state, e.message.as_str()),
            (SqlState::ProgramLimitExceeded, "halfvec cannot have more than 16000 dimensions")
        );
        // Every finite half prints and parses back to itself.
        let all: Vec<u16> = (0..=u16::MAX).filter(|&b| !is_nan(b) && !is_inf(b)).collect();
        for chunk in all.chunks(HALFVEC_MAX_DIM) {
            assert_eq!(parse_text(&format_text(chunk), -1).unwrap(), chunk);
        }
    }

    #[test]
    fn binary_round_trip_and_errors() {
        let v = vec![h(1.0), h(-2.5), h(0.0)];
        let b = encode_binary(&v);
        assert_eq!(&b[..6], &[0, 3, 0, 0, 0x3c, 0x00]);
        assert_eq!(decode_binary(&b, -1).unwrap(), (v.clone(), 10));
        assert_eq!(decode_binary(&b, 2).unwrap_err().message, "expected 2 dimensions, not 3");
        assert_eq!(decode_binary(&b[..9], -1).unwrap_err().state, SqlState::ProtocolViolation);
        let mut bad = b.clone();
        bad[3] = 1;
        assert_eq!(decode_binary(&bad, -1).unwrap_err().message, "expected unused to be 0, not 1");
        let mut inf = b.clone();
        inf[4..6].copy_from_slice(&0x7c00u16.to_be_bytes());
        assert_eq!(
            decode_binary(&inf, -1).unwrap_err().message,
            "infinite value not allowed in halfvec"
        );
        inf[4..6].copy_from_slice(&0x7e00u16.to_be_bytes());
        assert_eq!(decode_binary(&inf, -1).unwrap_err().message, "NaN not allowed in halfvec");
        assert_eq!(
            decode_binary(&[0, 0, 0, 0], -1).unwrap_err().message,
            "halfvec must have at least 1 dimension"
        );
    }

    #[test]
    fn casts() {
        assert_eq!(from_vector(&[1.0, 65504.0], -1).unwrap(), vec![h(1.0), 0x7bff]);
        assert_eq!(
            from_vector(&[1e5], -1).unwrap_err().message,
            "\"100000\" is out of range for type halfvec"
        );
        assert_eq!(from_vector(&[1.0], 2).unwrap_err().message, "expected 2 dimensions, not 1");
        assert_eq!(from_f64_elements(&[1.0, 2.0]).unwrap(), vec![h(1.0), h(2.0)]);
        assert_eq!(
            from_f64_elements(&[1e300]).unwrap_err().message,
            "infinite value not allowed in halfvec"
        );
        assert_eq!(
            from_f64_elements(&[f64::NAN]).unwrap_err().message,
            "NaN not allowed in halfvec"
        );
        assert_eq!(
            from_f64_elements(&[70000.0]).unwrap_err().message,
            "\"70000\" is out of range for type halfvec"
        );
        assert_eq!(to_f32(&[h(1.5), 0x8000]), vec![1.5, -0.0]);
    }

    #[test]
    fn arithmetic_ordering_and_subvector() {
        let a = [h(1.0), h(2.0)];
        let b = [h(3.0), h(4.0)];
        assert_eq!(add(&a, &b).unwrap(), vec![h(4.0), h(6.0)]);
        assert_eq!(sub(&a, &b).unwrap(), vec![h(-2.0), h(-2.0)]);
        assert_eq!(mul(&a, &b).unwrap(), vec![h(3.0), h(8.0)]);
        assert_eq!(add(&[0x7bff], &[0x7bff]).unwrap_err().message, "value out of range: overflow");
        assert_eq!(
            mul(&[h(1e-4)], &[h(1e-4)]).unwrap_err().message,
            "value out of range: underflow"
        );
        assert_eq!(add(&a, &[h(1.0)]).unwrap_err().message, "different halfvec dimensions 2 and 1");
        assert_eq!(concat(&a, &b).unwrap().len(), 4);
        assert!(concat(&vec![0; 16000], &[0]).is_err());
        use std::cmp::Ordering::*;
        assert_eq!(compare(&a, &b), Less);
        assert_eq!(compare(&[h(-0.0)], &[h(0.0)]), Equal);
        assert_eq!(compare(&a, &a[..1]), Greater);
        let v: Vec<u16> = (1..=5).map(|i| h(i as f32)).collect();
        assert_eq!(subvector(&v, 1, 3).unwrap(), v[..3]);
        assert_eq!(subvector(&v, 3, 9).unwrap(), v[2..]);
        assert_eq!(subvector(&v, -1, 3).unwrap(), v[..1]);
        assert!(subvector(&v, 6, 1).is_err());
        assert!(subvector(&v, 1, 0).is_err());
        assert_eq!(
            subvector(&v, i32::MAX, i32::MAX).unwrap_err().message,
            "halfvec must have at least 1 dimension"
        );
        assert_eq!(
            subvector(&v, i32::MIN, i32::MAX).unwrap_err().message,
            "halfvec must have at least 1 dimension"
        );
        assert_eq!(l2_normalize(&[h(3.0), h(4.0)]).unwrap(), vec![h(0.6), h(0.8)]);
        assert_eq!(l2_normalize(&[0, 0]).unwrap(), vec![0, 0]);
        assert_eq!(norm(&[h(3.0), h(4.0)]), 5.0);
    }

    #[test]
    fn aggregates() {
        let mut s = Vec::new();
        accum(&mut s, &[h(1.0), h(2.0)]).unwrap();
        accum(&mut s, &[h(3.0), h(4.0)]).unwrap();
        assert_eq!(s, vec![2.0, 4.0, 6.0]);
        assert_eq!(avg_final(&s).unwrap(), Some(vec![h(2.0), h(3.0)]));
        assert_eq!(avg_final(&[0.0]).unwrap(), None);
        assert_eq!(accum(&mut s, &[h(1.0)]).unwrap_err().message, "expected 2 dimensions, not 1");
        assert_eq!(
            avg_final(&[1.0, 70000.0]).unwrap_err().message,
            "\"70000\" is out of range for type halfvec"
        );
        assert_eq!(
            avg_final(&[1.0, 1e300]).unwrap_err().message,
            "infinite value not allowed in halfvec"
        );
        assert_eq!(avg_final(&[]).unwrap_err().message, "halfvec_avg: expected state array");
        assert_eq!(
            avg_final(&vec![1.0; 16002]).unwrap_err().message,
            "halfvec cannot have more than 16000 dimensions"
        );
        assert_eq!(
            avg_final(&[1.0]).unwrap_err().message,
            "halfvec must have at least 1 dimension"
        );
    }
}
