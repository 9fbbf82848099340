//! The `sparsevec` value without Postgres: text and binary formats, checks, conversions,
//! distances and ordering, each mirroring pgvector 0.8's sparsevec.c.
//!
//! - text: `{1:1.5,3:2}/5`, 1-based indices in any order, zero values dropped, whitespace
//!   allowed around every token, `strtol` syntax for indices and the dimension count and
//!   `strtof` syntax for values; output lists the stored elements in index order;
//! - binary: int32 dim, int32 nnz, int32 unused (0), nnz int32 0-based indices, nnz float4
//!   values, all big-endian; zero values are refused there, never silently dropped;
//! - limits: 1..=1,000,000,000 dimensions, at most 16,000 stored (non-zero) elements;
//! - distances accumulate in float4 in index order, as pgvector's loops do, so sums that
//!   overflow float4 give the same Infinity or NaN; norms accumulate in float8 where
//!   pgvector's do.
//!
//! A stored value always has strictly ascending indices in `0..dim`, no zero, NaN or
//! infinite value, and `nnz <= min(dim, 16000)`. Every constructor here establishes that
//! or returns pgvector's error; nothing here panics on any input.

use crate::vector::codec::{
    check_expected_dim, parse_float_token, strtof_prefix_len, write_float4, SqlState, VectorError,
};

/// Largest dimension count of a `sparsevec` (pgvector's SPARSEVEC_MAX_DIM).
pub const SPARSEVEC_MAX_DIM: i32 = 1_000_000_000;
/// Most non-zero elements a `sparsevec` stores (pgvector's SPARSEVEC_MAX_NNZ).
pub const SPARSEVEC_MAX_NNZ: usize = 16_000;

/// An owned sparse vector: `indices` are 0-based and ascending, `values` parallel to them.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseVec {
    pub dim: i32,
    pub indices: Vec<i32>,
    pub values: Vec<f32>,
}

/// A sparse vector read in place from a Datum (or borrowed from a `SparseVec`).
#[derive(Debug, Clone, Copy)]
pub struct SparseRef<'a> {
    pub dim: i32,
    pub indices: &'a [i32],
    pub values: &'a [f32],
}

impl SparseVec {
    pub fn as_ref(&self) -> SparseRef<'_> {
        SparseRef { dim: self.dim, indices: &self.indices, values: &self.values }
    }
}

fn data_exception(message: &str) -> VectorError {
    VectorError::new(SqlState::DataException, message)
}

fn too_many_nnz() -> VectorError {
    VectorError::new(
        SqlState::ProgramLimitExceeded,
        format!("sparsevec cannot have more than {SPARSEVEC_MAX_NNZ} non-zero elements"),
    )
}

/// `different sparsevec dimensions 2 and 1`
pub fn check_same_dims(a: SparseRef, b: SparseRef) -> Result<(), VectorError> {
    if a.dim != b.dim {
        return Err(data_exception(&format!(
            "different sparsevec dimensions {} and {}",
            a.dim, b.dim
        )));
    }
    Ok(())
}

/// pgvector's CheckDim for sparsevec: 1..=1e9.
pub fn check_dim(dim: i64) -> Result<(), VectorError> {
    if dim < 1 {
        return Err(data_exception("sparsevec must have at least 1 dimension"));
    }
    if dim > SPARSEVEC_MAX_DIM as i64 {
        return Err(VectorError::new(
            SqlState::ProgramLimitExceeded,
            format!("sparsevec cannot have more than {SPARSEVEC_MAX_DIM} dimensions"),
        ));
    }
    Ok(())
}

/// pgvector's CheckNnz: a count of stored elements within the limits and the dimensions.
pub fn check_nnz(nnz: i64, dim: i64) -> Result<(), VectorError> {
    if nnz < 0 {
        return Err(data_exception("sparsevec cannot have negative number of elements"));
    }
    if nnz > SPARSEVEC_MAX_NNZ as i64 {
        return Err(too_many_nnz());
    }
    if nnz > dim {
        return Err(VectorError::new(
            SqlState::ProgramLimitExceeded,
            "sparsevec cannot have more elements than dimensions",
        ));
    }
    Ok(())
}

/// pgvector's CheckIndex: element `i` is in bounds and above its predecessor.
pub fn check_index(indices: &[i32], i: usize, dim: i32) -> Result<(), VectorError> {
    let index = indices[i];
    if index < 0 || index >= dim {
        return Err(data_exception("sparsevec index out of bounds"));
    }
    if i > 0 {
        if index < indices[i - 1] {
            return Err(data_exception("sparsevec indices must be in ascending order"));
        }
        if index == indices[i - 1] {
            return Err(data_exception("sparsevec indices must not contain duplicates"));
        }
    }
    Ok(())
}

/// Rejects NaN and infinities, which pgvector never stores.
pub fn check_element(v: f32) -> Result<(), VectorError> {
    if v.is_nan() {
        Err(data_exception("NaN not allowed in sparsevec"))
    } else if v.is_infinite() {
        Err(data_exception("infinite value not allowed in sparsevec"))
    } else {
        Ok(())
    }
}

/// Checks a whole value before it becomes a Datum: the one invariant every result keeps.
pub fn check_sparse(s: SparseRef) -> Result<(), VectorError> {
    check_dim(s.dim as i64)?;
    check_nnz(s.indices.len() as i64, s.dim as i64)?;
    if s.values.len() != s.indices.len() {
        return Err(VectorError::new(SqlState::InternalError, "correctness check failed"));
    }
    for i in 0..s.indices.len() {
        check_index(s.indices, i, s.dim)?;
        check_element(s.values[i])?;
        if s.values[i] == 0.0 {
            return Err(VectorError::new(SqlState::InternalError, "correctness check failed"));
        }
    }
    Ok(())
}

/// Validates `sparsevec(n)`: exactly one modifier within 1..=1e9.
pub fn typmod_in(mods: &[i32]) -> Result<i32, VectorError> {
    if mods.len() != 1 {
        return Err(VectorError::new(SqlState::InvalidParameterValue, "invalid type modifier"));
    }
    let n = mods[0];
    if n < 1 {
        return Err(VectorError::new(
            SqlState::InvalidParameterValue,
            "dimensions for type sparsevec must be at least 1",
        ));
    }
    if n > SPARSEVEC_MAX_DIM {
        return Err(VectorError::new(
            SqlState::InvalidParameterValue,
            format!("dimensions for type sparsevec cannot exceed {SPARSEVEC_MAX_DIM}"),
        ));
    }
    Ok(n)
}

// ---- text ------------------------------------------------------------------------------

/// The C locale's isspace, which is what pgvector's sparsevec_isspace, strtol and strtof skip.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn skip_space(b: &[u8], mut pt: usize) -> usize {
    while pt < b.len() && is_space(b[pt]) {
        pt += 1;
    }
    pt
}

/// C's `strtol(s, &end, 10)` on a 64-bit long: (value saturated to i64, bytes consumed),
/// 0 consumed when there are no digits (leading whitespace and a sign alone count for nothing).
fn strtol(s: &[u8]) -> (i64, usize) {
    let mut i = skip_space(s, 0);
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    // Accumulate negatively so i64::MIN is representable; saturate like strtol's ERANGE.
    let mut acc: i64 = 0;
    let mut overflow = false;
    while i < s.len() && s[i].is_ascii_digit() {
        let d = (s[i] - b'0') as i64;
        match acc.checked_mul(10).and_then(|v| v.checked_sub(d)) {
            Some(v) => acc = v,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start {
        return (0, 0);
    }
    let value = match (overflow, negative) {
        (true, true) => i64::MIN,
        (true, false) => i64::MAX,
        (false, true) => acc,
        (false, false) => acc.checked_neg().unwrap_or(i64::MAX),
    };
    (value, i)
}

/// What C's `strtof` reads at the start of `s` (already past whitespace): None when it reads
/// nothing, else (value, bytes consumed, whether it reported ERANGE with a zero or infinite
/// result, which is pgvector's out-of-range condition).
fn strtof(s: &[u8]) -> Option<(f32, usize, bool)> {
    let mut len = strtof_prefix_len(s);
    if len == 0 {
        return None;
    }
    // glibc also takes "nan(n-char-sequence)".
    let body = s[..len].trim_ascii_start();
    let unsigned = body.strip_prefix(b"-").or_else(|| body.strip_prefix(b"+")).unwrap_or(body);
    if unsigned.eq_ignore_ascii_case(b"nan") && s.get(len) == Some(&b'(') {
        let close = s[len + 1..].iter().position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'));
        if let Some(k) = close {
            if s[len + 1 + k] == b')' {
                len += k + 2;
            }
        }
    }
    // The prefix is ASCII by construction.
    let tok = std::str::from_utf8(&s[..len]).ok()?;
    let num_end = strtof_prefix_len(s);
    let (value, overflowed) = parse_float_token(std::str::from_utf8(&s[..num_end]).ok()?)?;
    let underflowed = value == 0.0 && has_nonzero_mantissa(tok);
    Some((value, len, overflowed || underflowed))
}

/// Whether a strtof token's significand has a non-zero digit (so a zero result underflowed).
fn has_nonzero_mantissa(tok: &str) -> bool {
    let t = tok.trim_start_matches(['+', '-']);
    let (digits, stop): (&str, &[char]) = match t.get(..2) {
        Some(p) if p.eq_ignore_ascii_case("0x") => (&t[2..], &['p', 'P']),
        _ => (t, &['e', 'E']),
    };
    digits.chars().take_while(|c| !stop.contains(c)).any(|c| c.is_ascii_hexdigit() && c != '0')
}

fn invalid_syntax(lit: &[u8]) -> VectorError {
    VectorError::new(
        SqlState::InvalidTextRepresentation,
        format!("invalid input syntax for type sparsevec: \"{}\"", String::from_utf8_lossy(lit)),
    )
}

fn with_detail(mut e: VectorError, detail: &str) -> VectorError {
    e.detail = Some(detail.to_string());
    e
}

/// Parses pgvector's text form, checking elements, indices and the column's typmod, in
/// pgvector's order (so the same input gets the same error).
pub fn parse_text(lit: &[u8], typmod: i32) -> Result<SparseVec, VectorError> {
    let b = lit;
    // pgvector sizes its buffer from the comma count before reading anything.
    let max_nnz = 1 + b.iter().filter(|&&c| c == b',').count();
    if max_nnz > SPARSEVEC_MAX_NNZ {
        return Err(too_many_nnz());
    }
    let mut pt = skip_space(b, 0);
    if b.get(pt) != Some(&b'{') {
        return Err(with_detail(invalid_syntax(lit), "Vector contents must start with \"{\"."));
    }
    pt = skip_space(b, pt + 1);
    let mut elements: Vec<(i32, f32)> = Vec::new();
    if b.get(pt) == Some(&b'}') {
        pt += 1;
    } else {
        loop {
            pt = skip_space(b, pt);
            if pt >= b.len() {
                return Err(invalid_syntax(lit));
            }
            let (index, len) = strtol(&b[pt..]);
            if len == 0 {
                return Err(invalid_syntax(lit));
            }
            // Kept in int range so that an enormous index reports "out of bounds".
            let index = index.clamp(i32::MIN as i64 + 1, i32::MAX as i64);
            pt = skip_space(b, pt + len);
            if b.get(pt) != Some(&b':') {
                return Err(invalid_syntax(lit));
            }
            pt = skip_space(b, pt + 1);
            let Some((value, len, out_of_range)) = strtof(&b[pt..]) else {
                return Err(invalid_syntax(lit));
            };
            if out_of_range {
                return Err(VectorError::new(
                    SqlState::NumericValueOutOfRange,
                    format!(
                        "\"{}\" is out of range for type sparsevec",
                        String::from_utf8_lossy(&b[pt..pt + len])
                    ),
                ));
            }
            check_element(value)?;
            if value != 0.0 {
                // 1-based (SQL) to 0-based (storage)
                elements.push(((index - 1) as i32, value));
            }
            pt = skip_space(b, pt + len);
            match b.get(pt) {
                Some(b',') => pt += 1,
                Some(b'}') => {
                    pt += 1;
                    break;
                }
                _ => return Err(invalid_syntax(lit)),
            }
        }
    }
    pt = skip_space(b, pt);
    if b.get(pt) != Some(&b'/') {
        return Err(with_detail(invalid_syntax(lit), "Unexpected end of input."));
    }
    pt = skip_space(b, pt + 1);
    let (dim, len) = strtol(&b[pt..]);
    if len == 0 {
        return Err(invalid_syntax(lit));
    }
    let dim = dim.clamp(i32::MIN as i64, i32::MAX as i64);
    pt = skip_space(b, pt + len);
    if pt != b.len() {
        return Err(with_detail(invalid_syntax(lit), "Junk after closing."));
    }
    check_dim(dim)?;
    check_expected_dim(typmod, dim as usize)?;
    let dim = dim as i32;
    elements.sort_by_key(|e| e.0);
    let mut out = SparseVec {
        dim,
        indices: Vec::with_capacity(elements.len()),
        values: Vec::with_capacity(elements.len()),
    };
    for (i, (index, value)) in elements.into_iter().enumerate() {
        out.indices.push(index);
        out.values.push(value);
        check_index(&out.indices, i, dim)?;
    }
    Ok(out)
}

/// Formats as `{1:1.5,3:2}/5` (1-based indices, shortest round-trip float4 values).
pub fn format_text(s: SparseRef) -> String {
    let mut out = String::with_capacity(16 + s.indices.len() * 20);
    out.push('{');
    for (i, (&index, &value)) in s.indices.iter().zip(s.values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&(index as i64 + 1).to_string());
        out.push(':');
        write_float4(&mut out, value);
    }
    out.push_str("}/");
    out.push_str(&s.dim.to_string());
    out
}

// ---- binary ----------------------------------------------------------------------------

/// Encodes the binary send format.
pub fn encode_binary(s: SparseRef) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 8 * s.indices.len());
    out.extend_from_slice(&s.dim.to_be_bytes());
    out.extend_from_slice(&(s.indices.len() as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    for i in s.indices {
        out.extend_from_slice(&i.to_be_bytes());
    }
    for v in s.values {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// A big-endian reader that fails like `pq_getmsgint` on a short message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn word(&mut self) -> Result<[u8; 4], VectorError> {
        let w = self.buf.get(self.pos..self.pos + 4).ok_or_else(|| {
            VectorError::new(SqlState::ProtocolViolation, "insufficient data left in message")
        })?;
        self.pos += 4;
        Ok([w[0], w[1], w[2], w[3]])
    }
    fn int(&mut self) -> Result<i32, VectorError> {
        self.word().map(i32::from_be_bytes)
    }
    fn float(&mut self) -> Result<f32, VectorError> {
        self.word().map(f32::from_be_bytes)
    }
}

/// Decodes the binary format; returns the value and the number of bytes used. Checks run in
/// pgvector's order, each field as soon as it is read.
pub fn decode_binary(buf: &[u8], typmod: i32) -> Result<(SparseVec, usize), VectorError> {
    let mut r = Reader { buf, pos: 0 };
    let dim = r.int()?;
    let nnz = r.int()?;
    let unused = r.int()?;
    check_dim(dim as i64)?;
    check_nnz(nnz as i64, dim as i64)?;
    check_expected_dim(typmod, dim as usize)?;
    if unused != 0 {
        return Err(data_exception(&format!("expected unused to be 0, not {unused}")));
    }
    let nnz = nnz as usize;
    let mut out = SparseVec { dim, indices: Vec::with_capacity(nnz), values: Vec::new() };
    for i in 0..nnz {
        out.indices.push(r.int()?);
        check_index(&out.indices, i, dim)?;
    }
    out.values.reserve(nnz);
    for _ in 0..nnz {
        let v = r.float()?;
        check_element(v)?;
        if v == 0.0 {
            return Err(data_exception(
                "binary representation of sparsevec cannot contain zero values",
            ));
        }
        out.values.push(v);
    }
    Ok((out, r.pos))
}

// ---- conversions -----------------------------------------------------------------------

/// `sparsevec(sparsevec, typmod)`: the length-coercion cast.
pub fn check_typmod(s: SparseRef, typmod: i32) -> Result<(), VectorError> {
    check_expected_dim(typmod, s.dim.max(0) as usize)
}

/// vector -> sparsevec: the non-zero elements of a dense vector.
pub fn from_dense(x: &[f32], typmod: i32) -> Result<SparseVec, VectorError> {
    check_dim(x.len() as i64)?;
    check_expected_dim(typmod, x.len())?;
    let nnz = x.iter().filter(|&&v| v != 0.0).count();
    check_nnz(nnz as i64, x.len() as i64)?;
    let mut out = SparseVec {
        dim: x.len() as i32,
        indices: Vec::with_capacity(nnz),
        values: Vec::with_capacity(nnz),
    };
    for (i, &v) in x.iter().enumerate() {
        if v != 0.0 {
            out.indices.push(i as i32);
            out.values.push(v);
        }
    }
    Ok(out)
}

/// sparsevec -> vector: the dense form, within the `vector` type's own limits.
pub fn to_dense(s: SparseRef, typmod: i32) -> Result<Vec<f32>, VectorError> {
    crate::vector::codec::check_dim(s.dim as i64)?;
    check_expected_dim(typmod, s.dim as usize)?;
    let mut out = vec![0f32; s.dim as usize];
    for (&index, &value) in s.indices.iter().zip(s.values) {
        match out.get_mut(index as usize) {
            Some(slot) if index >= 0 => *slot = value,
            _ => return Err(VectorError::new(SqlState::InternalError, "index out of bounds")),
        }
    }
    Ok(out)
}

/// The checks array_to_sparsevec makes before it looks at element values, in its order:
/// shape, NULLs, dimension count, typmod.
pub fn check_array_shape(
    ndim: i32,
    has_nulls: bool,
    nelems: usize,
    typmod: i32,
) -> Result<(), VectorError> {
    if ndim > 1 {
        return Err(data_exception("array must be 1-D"));
    }
    if has_nulls {
        return Err(VectorError::new(
            SqlState::NullValueNotAllowed,
            "array must not contain nulls",
        ));
    }
    check_dim(nelems as i64)?;
    check_expected_dim(typmod, nelems)
}

/// array -> sparsevec after `check_array_shape`: elements already converted to float4.
pub fn from_array_values(values: &[f32]) -> Result<SparseVec, VectorError> {
    let nnz = values.iter().filter(|&&v| v != 0.0).count();
    check_nnz(nnz as i64, values.len() as i64)?;
    let mut out = SparseVec {
        dim: values.len() as i32,
        indices: Vec::with_capacity(nnz),
        values: Vec::with_capacity(nnz),
    };
    for (i, &v) in values.iter().enumerate() {
        if v != 0.0 {
            out.indices.push(i as i32);
            out.values.push(v);
        }
    }
    out.values.iter().try_for_each(|&v| check_element(v))?;
    Ok(out)
}

// ---- halfvec casts ---------------------------------------------------------------------
//
// `halfvec` values are IEEE binary16 bit patterns here. The conversions are local until the
// halfvec type merges, whose codec can then supply them.

/// Largest dimension count of a `halfvec` (pgvector's HALFVEC_MAX_DIM).
pub const HALFVEC_MAX_DIM: i64 = 16_000;

/// binary16 bits to float4 (exact).
pub fn half_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let sign = if negative { 0x8000_0000 } else { 0 };
    match exp {
        0 => {
            // zero or subnormal: man * 2^-24, exact in float4
            let v = man as f32 * (1.0 / 16_777_216.0);
            if negative {
                -v
            } else {
                v
            }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// float4 to binary16 bits, rounding to nearest even; a finite value beyond 65504 (after
/// rounding) becomes an infinity, which the caller reports.
pub fn f32_to_half(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        let nan = if man != 0 { 0x200 | (man >> 13) as u16 } else { 0 };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 112; // rebias 127 -> 15
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |kept: u32, rem: u32, halfway: u32| {
        if rem > halfway || (rem == halfway && kept & 1 == 1) {
            kept + 1
        } else {
            kept
        }
    };
    if e <= 0 {
        if e < -10 {
            return sign; // below half the smallest subnormal
        }
        // subnormal: the 24-bit significand in units of 2^-24; a carry makes it normal
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let kept = round(m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1));
        return sign | kept as u16;
    }
    // a carry out of the significand bumps the exponent, up to infinity, as it should
    let kept = round(((e as u32) << 10) | (man >> 13), man & 0x1fff, 0x1000);
    sign | kept as u16
}

/// halfvec -> sparsevec: the non-zero elements of a dense half vector.
pub fn from_half(x: &[u16], typmod: i32) -> Result<SparseVec, VectorError> {
    check_dim(x.len() as i64)?;
    check_expected_dim(typmod, x.len())?;
    let is_zero = |h: u16| h & 0x7fff == 0;
    let nnz = x.iter().filter(|&&h| !is_zero(h)).count();
    check_nnz(nnz as i64, x.len() as i64)?;
    let mut out = SparseVec {
        dim: x.len() as i32,
        indices: Vec::with_capacity(nnz),
        values: Vec::with_capacity(nnz),
    };
    for (i, &h) in x.iter().enumerate() {
        if !is_zero(h) {
            out.indices.push(i as i32);
            out.values.push(half_to_f32(h));
        }
    }
    out.values.iter().try_for_each(|&v| check_element(v))?;
    Ok(out)
}

/// sparsevec -> halfvec: the dense half form, within the halfvec type's limits; a value
/// too large for a half is pgvector's out-of-range error, a value too small becomes 0.
pub fn to_half(s: SparseRef, typmod: i32) -> Result<Vec<u16>, VectorError> {
    if s.dim < 1 {
        return Err(data_exception("halfvec must have at least 1 dimension"));
    }
    if s.dim as i64 > HALFVEC_MAX_DIM {
        return Err(VectorError::new(
            SqlState::ProgramLimitExceeded,
            format!("halfvec cannot have more than {HALFVEC_MAX_DIM} dimensions"),
        ));
    }
    check_expected_dim(typmod, s.dim as usize)?;
    let mut out = vec![0u16; s.dim as usize];
    for (&index, &value) in s.indices.iter().zip(s.values) {
        let h = f32_to_half(value);
        if h & 0x7fff == 0x7c00 && !value.is_infinite() {
            let mut shown = String::new();
            write_float4(&mut shown, value);
            return Err(VectorError::new(
                SqlState::NumericValueOutOfRange,
                format!("\"{shown}\" is out of range for type halfvec"),
            ));
        }
        match out.get_mut(index as usize) {
            Some(slot) if index >= 0 => *slot = h,
            _ => return Err(VectorError::new(SqlState::InternalError, "index out of bounds")),
        }
    }
    Ok(out)
}

// ---- distances -------------------------------------------------------------------------

/// Visits the union of both index sets in ascending order with the pair of values there
/// (0 for an index one side does not store): the summation order of pgvector's loops.
#[inline]
fn merge(a: SparseRef, b: SparseRef, mut f: impl FnMut(f32, f32)) {
    let (mut i, mut j) = (0, 0);
    while i < a.indices.len() && j < b.indices.len() {
        let (ai, bj) = (a.indices[i], b.indices[j]);
        if ai == bj {
            f(a.values[i], b.values[j]);
            i += 1;
            j += 1;
        } else if ai < bj {
            f(a.values[i], 0.0);
            i += 1;
        } else {
            f(0.0, b.values[j]);
            j += 1;
        }
    }
    a.values[i..].iter().for_each(|&x| f(x, 0.0));
    b.values[j..].iter().for_each(|&y| f(0.0, y));
}

/// Squared Euclidean distance, accumulated in float4 like pgvector's.
pub fn l2_squared(a: SparseRef, b: SparseRef) -> f32 {
    let mut d = 0f32;
    merge(a, b, |x, y| {
        // pgvector adds x*x (not (x-0)*(x-0)) for one-sided elements: the same value.
        let diff = x - y;
        d += diff * diff;
    });
    d
}

/// Inner product over the common indices, accumulated in float4.
pub fn inner_product(a: SparseRef, b: SparseRef) -> f32 {
    let mut d = 0f32;
    let (mut i, mut j) = (0, 0);
    while i < a.indices.len() && j < b.indices.len() {
        let (ai, bj) = (a.indices[i], b.indices[j]);
        if ai == bj {
            d += a.values[i] * b.values[j];
            i += 1;
            j += 1;
        } else if ai < bj {
            i += 1;
        } else {
            j += 1;
        }
    }
    d
}

/// Sum of squares in float4 (the norms inside pgvector's sparse cosine).
fn squares_f32(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |acc, &x| acc + x * x)
}

/// Cosine distance, NaN when either side is zero (or a float4 sum overflowed), clamped to
/// [0, 2] otherwise.
pub fn cosine(a: SparseRef, b: SparseRef) -> f64 {
    let ab = inner_product(a, b) as f64;
    let (aa, bb) = (squares_f32(a.values) as f64, squares_f32(b.values) as f64);
    // sqrt(a*b) rather than sqrt(a)*sqrt(b), as pgvector does.
    let sim = ab / (aa * bb).sqrt();
    // clamp keeps NaN, as pgvector's comparisons do.
    1.0 - sim.clamp(-1.0, 1.0)
}

/// Taxicab distance, accumulated in float4.
pub fn l1(a: SparseRef, b: SparseRef) -> f32 {
    let mut d = 0f32;
    merge(a, b, |x, y| d += (x - y).abs());
    d
}

/// Euclidean norm, accumulated in float8 from +0 (Rust's float `sum` starts at -0, which
/// would print the norm of an empty vector as `-0`).
pub fn norm(a: SparseRef) -> f64 {
    a.values.iter().fold(0f64, |acc, &v| acc + v as f64 * v as f64).sqrt()
}

/// Unit-length copy; elements that round to zero are dropped, a zero vector stays zero.
pub fn l2_normalize(a: SparseRef) -> Result<SparseVec, VectorError> {
    let n = norm(a);
    let mut out = SparseVec {
        dim: a.dim,
        indices: Vec::with_capacity(a.indices.len()),
        values: Vec::with_capacity(a.indices.len()),
    };
    if n > 0.0 {
        for (&index, &v) in a.indices.iter().zip(a.values) {
            let r = (v as f64 / n) as f32;
            if r.is_infinite() {
                return Err(VectorError::new(
                    SqlState::NumericValueOutOfRange,
                    "value out of range: overflow",
                ));
            }
            if r != 0.0 {
                out.indices.push(index);
                out.values.push(r);
            }
        }
    }
    Ok(out)
}

/// pgvector's btree order: values compared position by position as if dense, then the
/// dimension count (values first, to be consistent with Postgres arrays).
pub fn compare(a: SparseRef, b: SparseRef) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let (ax, bx) = (a.values, b.values);
    let nnz = a.indices.len().min(b.indices.len());
    for i in 0..nnz {
        // a stores a value where b has an implicit zero, or the other way round
        if a.indices[i] < b.indices[i] {
            return if ax[i] < 0.0 { Less } else { Greater };
        }
        if a.indices[i] > b.indices[i] {
            return if bx[i] < 0.0 { Greater } else { Less };
        }
        if ax[i] < bx[i] {
            return Less;
        }
        if ax[i] > bx[i] {
            return Greater;
        }
    }
    if a.indices.len() < b.indices.len() && b.indices[nnz] < a.dim {
        return if bx[nnz] < 0.0 { Greater } else { Less };
    }
    if a.indices.len() > b.indices.len() && a.indices[nnz] < b.dim {
        return if ax[nnz] < 0.0 { Less } else { Greater };
    }
    a.dim.cmp(&b.dim)
}

/// Plain dense loops: the reference the merge kernels are tested against.
#[cfg(test)]
pub mod reference {
    use super::SparseRef;

    pub fn dense(s: SparseRef) -> Vec<f32> {
        let mut out = vec![0f32; s.dim as usize];
        for (&i, &v) in s.indices.iter().zip(s.values) {
            out[i as usize] = v;
        }
        out
    }

    /// Sums skip index pairs where both sides are zero, which add exactly 0 anyway.
    pub fn l2_squared(a: SparseRef, b: SparseRef) -> f32 {
        let (x, y) = (dense(a), dense(b));
        x.iter().zip(&y).filter(|(p, q)| **p != 0.0 || **q != 0.0).fold(0f32, |d, (p, q)| {
            let diff = p - q;
            d + diff * diff
        })
    }

    pub fn inner_product(a: SparseRef, b: SparseRef) -> f32 {
        let (x, y) = (dense(a), dense(b));
        x.iter().zip(&y).filter(|(p, q)| **p != 0.0 && **q != 0.0).fold(0f32, |d, (p, q)| d + p * q)
    }

    pub fn l1(a: SparseRef, b: SparseRef) -> f32 {
        let (x, y) = (dense(a), dense(b));
        x.iter()
            .zip(&y)
            .filter(|(p, q)| **p != 0.0 || **q != 0.0)
            .fold(0f32, |d, (p, q)| d + (p - q).abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The five-character SQLSTATE, as users see it.
    fn code(state: SqlState) -> &'static str {
        match state {
            SqlState::InvalidTextRepresentation => "22P02",
            SqlState::DataException => "22000",
            SqlState::NumericValueOutOfRange => "22003",
            SqlState::ProgramLimitExceeded => "54000",
            SqlState::InvalidParameterValue => "22023",
            SqlState::NullValueNotAllowed => "22004",
            SqlState::ProtocolViolation => "08P01",
            SqlState::InternalError => "XX000",
        }
    }

    fn parse(s: &str) -> Result<SparseVec, VectorError> {
        parse_text(s.as_bytes(), -1)
    }

    fn err(s: &str) -> (SqlState, String, Option<String>) {
        let e = parse(s).unwrap_err();
        (e.state, e.message, e.detail)
    }

    fn text(s: &str) -> String {
        format_text(parse(s).unwrap().as_ref())
    }

    #[test]
    fn parses_and_prints_pgvector_forms() {
        assert_eq!(text("{1:1.5,3:3.5}/5"), "{1:1.5,3:3.5}/5");
        assert_eq!(text("{1:2.,3:4.}/5"), "{1:2,3:4}/5");
        assert_eq!(text(" { 1 : 1.5 ,  3  :  3.5  } / 5 "), "{1:1.5,3:3.5}/5");
        assert_eq!(text("{1:1.5e38,2:-1.5e38}/2"), "{1:1.5e+38,2:-1.5e+38}/2");
        assert_eq!(text("{1:0,2:1,3:0}/3"), "{2:1}/3");
        assert_eq!(text("{2:1,1:1}/2"), "{1:1,2:1}/2");
        assert_eq!(text("{}/1"), "{}/1");
        assert_eq!(text("{ }/1"), "{}/1");
        assert_eq!(text("{+1:-0,+2:+1}/+2"), "{2:1}/2");
        assert_eq!(text("{}/1000000000"), "{}/1000000000");
        // an index out of range is harmless when its value is zero: it is never stored
        assert_eq!(text("{0:0,99:0}/1"), "{}/1");
        let s = parse("{3:0x10,1:-2}/4").unwrap();
        assert_eq!((s.indices, s.values), (vec![0, 2], vec![-2.0, 16.0]));
    }

    #[test]
    fn syntax_errors_carry_pgvector_details() {
        let bad = |s: &str| {
            let (state, message, _) = err(s);
            assert_eq!(state, SqlState::InvalidTextRepresentation, "{s}");
            assert_eq!(message, format!("invalid input syntax for type sparsevec: \"{s}\""));
        };
        for s in [
            "{1:hello,2:1}/2",
            "{",
            "{ ",
            "{:",
            "{,",
            "{}/",
            "{:}/1",
            "{,}/1",
            "{1,}/1",
            "{:1}/1",
            "{1:}/1",
            "{1a:1}/1",
            "{1:1a}/1",
            "{1:1,}/1",
            "{1:1}/x",
            "{- 1:1}/1",
        ] {
            bad(s);
        }
        assert_eq!(err("").2.as_deref(), Some("Vector contents must start with \"{\"."));
        assert_eq!(err("[1]").2.as_deref(), Some("Vector contents must start with \"{\"."));
        assert_eq!(err("{}").2.as_deref(), Some("Unexpected end of input."));
        assert_eq!(err("{}x").2.as_deref(), Some("Unexpected end of input."));
        assert_eq!(err("{}/1a").2.as_deref(), Some("Junk after closing."));
        assert_eq!(err("{1:1,}/1").2, None);
    }

    #[test]
    fn value_errors() {
        let e = |s: &str| {
            let (state, message, _) = err(s);
            (code(state), message)
        };
        assert_eq!(e("{1:NaN,2:1}/2"), ("22000", "NaN not allowed in sparsevec".into()));
        assert_eq!(e("{1:nan(0x1f),2:1}/2"), ("22000", "NaN not allowed in sparsevec".into()));
        assert_eq!(
            e("{1:-Infinity}/2"),
            ("22000", "infinite value not allowed in sparsevec".into())
        );
        assert_eq!(
            e("{1:4e38,2:1}/2"),
            ("22003", "\"4e38\" is out of range for type sparsevec".into())
        );
        assert_eq!(
            e("{1: -4e38}/2"),
            ("22003", "\"-4e38\" is out of range for type sparsevec".into())
        );
        assert_eq!(
            e("{1:1e-46}/2"),
            ("22003", "\"1e-46\" is out of range for type sparsevec".into())
        );
        assert_eq!(e("{1:0x1p-150}/2").0, "22003");
        // exact zeros and subnormals that survive are fine
        assert_eq!(text("{1:0e-999,2:0x0p-999,3:1e-45}/3"), "{3:1e-45}/3");
    }

    #[test]
    fn dimension_and_index_limits() {
        let e = |s: &str| {
            let (state, message, _) = err(s);
            (code(state), message)
        };
        let at_least = ("22000", "sparsevec must have at least 1 dimension".to_string());
        let too_many =
            ("54000", "sparsevec cannot have more than 1000000000 dimensions".to_string());
        assert_eq!(e("{}/-1"), at_least);
        assert_eq!(e("{}/0"), at_least);
        assert_eq!(e("{}/-2147483649"), at_least);
        assert_eq!(e("{}/-9223372036854775809"), at_least);
        assert_eq!(e("{}/1000000001"), too_many);
        assert_eq!(e("{}/2147483648"), too_many);
        assert_eq!(e("{}/9223372036854775808"), too_many);
        let oob = ("22000", "sparsevec index out of bounds".to_string());
        for s in ["{2147483647:1}/1", "{2147483648:1}/1", "{-2147483648:1}/1", "{0:1}/1", "{2:1}/1"]
        {
            assert_eq!(e(s), oob, "{s}");
        }
        assert_eq!(e("{-2147483649:1}/1"), oob);
        assert_eq!(e("{99999999999999999999:1}/1"), oob);
        let dup = ("22000", "sparsevec indices must not contain duplicates".to_string());
        assert_eq!(e("{1:1,1:1}/2"), dup);
        assert_eq!(e("{1:1,2:1,1:1}/2"), dup);
        // the duplicate sorts before the out-of-bounds element, so it is reported first
        assert_eq!(e("{3:1,1:1,1:2}/2"), dup);
        let many = (0..16001).map(|i| format!("{}:0", i + 1)).collect::<Vec<_>>().join(",");
        assert_eq!(
            e(&format!("{{{many}}}/20000")),
            ("54000", "sparsevec cannot have more than 16000 non-zero elements".into())
        );
        let ok = (0..16000).map(|i| format!("{}:1", i + 1)).collect::<Vec<_>>().join(",");
        assert_eq!(parse(&format!("{{{ok}}}/16000")).unwrap().indices.len(), 16000);
        assert_eq!(parse_text(b"{}/3", 2).unwrap_err().message, "expected 2 dimensions, not 3");
        assert!(parse_text(b"{}/3", 3).is_ok());
        // invalid UTF-8 is an ordinary syntax error
        assert_eq!(
            parse_text(b"{1:\xff}/1", -1).unwrap_err().state,
            SqlState::InvalidTextRepresentation
        );
    }

    #[test]
    fn typmods() {
        assert_eq!(typmod_in(&[3]), Ok(3));
        assert_eq!(typmod_in(&[1, 2]).unwrap_err().message, "invalid type modifier");
        assert_eq!(
            typmod_in(&[0]).unwrap_err().message,
            "dimensions for type sparsevec must be at least 1"
        );
        assert_eq!(
            typmod_in(&[1_000_000_001]).unwrap_err().message,
            "dimensions for type sparsevec cannot exceed 1000000000"
        );
    }

    #[test]
    fn binary_round_trip_and_errors() {
        let s = parse("{1:1.5,3:-2}/5").unwrap();
        let b = encode_binary(s.as_ref());
        assert_eq!(&b[..12], &[0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(&b[12..20], &[0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(decode_binary(&b, -1).unwrap(), (s.clone(), b.len()));
        let msg = |bytes: &[u8], typmod| {
            let e = decode_binary(bytes, typmod).unwrap_err();
            (code(e.state), e.message)
        };
        let header = |dim: i32, nnz: i32, unused: i32| {
            [dim.to_be_bytes(), nnz.to_be_bytes(), unused.to_be_bytes()].concat()
        };
        assert_eq!(msg(&b, 4), ("22000", "expected 4 dimensions, not 5".into()));
        assert_eq!(msg(&b[..10], -1), ("08P01", "insufficient data left in message".into()));
        assert_eq!(msg(&b[..b.len() - 1], -1).0, "08P01");
        assert_eq!(msg(&header(0, 0, 0), -1).1, "sparsevec must have at least 1 dimension");
        assert_eq!(
            msg(&header(1, -1, 0), -1).1,
            "sparsevec cannot have negative number of elements"
        );
        assert_eq!(
            msg(&header(20000, 16001, 0), -1).1,
            "sparsevec cannot have more than 16000 non-zero elements"
        );
        assert_eq!(
            msg(&header(1, 2, 0), -1),
            ("54000", "sparsevec cannot have more elements than dimensions".into())
        );
        assert_eq!(msg(&header(1, 0, 7), -1).1, "expected unused to be 0, not 7");
        let with = |idx: &[i32], vals: &[f32]| {
            let mut v = header(10, idx.len() as i32, 0);
            idx.iter().for_each(|i| v.extend_from_slice(&i.to_be_bytes()));
            vals.iter().for_each(|x| v.extend_from_slice(&x.to_be_bytes()));
            v
        };
        assert_eq!(
            msg(&with(&[1, 1], &[1.0, 1.0]), -1).1,
            "sparsevec indices must not contain duplicates"
        );
        assert_eq!(
            msg(&with(&[2, 1], &[1.0, 1.0]), -1).1,
            "sparsevec indices must be in ascending order"
        );
        assert_eq!(msg(&with(&[10], &[1.0]), -1).1, "sparsevec index out of bounds");
        assert_eq!(msg(&with(&[-1], &[1.0]), -1).1, "sparsevec index out of bounds");
        // an index error is found before a short value section
        assert_eq!(msg(&with(&[10], &[]), -1).1, "sparsevec index out of bounds");
        assert_eq!(
            msg(&with(&[1], &[0.0]), -1).1,
            "binary representation of sparsevec cannot contain zero values"
        );
        assert_eq!(
            msg(&with(&[1], &[-0.0]), -1).1,
            "binary representation of sparsevec cannot contain zero values"
        );
        assert_eq!(msg(&with(&[1], &[f32::NAN]), -1).1, "NaN not allowed in sparsevec");
        assert_eq!(
            msg(&with(&[1], &[f32::NEG_INFINITY]), -1).1,
            "infinite value not allowed in sparsevec"
        );
        // trailing bytes are the caller's business: only the value's bytes are consumed
        let mut long = b.clone();
        long.push(0);
        assert_eq!(decode_binary(&long, -1).unwrap().1, b.len());
    }

    #[test]
    fn text_round_trips_exactly() {
        let mut x = 0.123_456_79f32;
        let mut s = SparseVec { dim: 1_000_000_000, indices: vec![], values: vec![] };
        for i in 0..3000 {
            x = (x * 7.31 + i as f32 * 1e-3).fract() * 10f32.powi((i % 60) - 30);
            if x != 0.0 {
                s.indices.push(i * 333_331);
                s.values.push(if i % 3 == 0 { -x } else { x });
            }
        }
        check_sparse(s.as_ref()).unwrap();
        let back = parse(&format_text(s.as_ref())).unwrap();
        assert_eq!(back.indices, s.indices);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.values), bits(&s.values));
    }

    #[test]
    fn dense_conversions() {
        let s = from_dense(&[0.0, 1.5, 0.0, -2.0], -1).unwrap();
        assert_eq!(format_text(s.as_ref()), "{2:1.5,4:-2}/4");
        assert_eq!(from_dense(&[1.0], 2).unwrap_err().message, "expected 2 dimensions, not 1");
        assert_eq!(from_dense(&[0.0, -0.0], -1).unwrap().indices.len(), 0);
        assert_eq!(to_dense(s.as_ref(), -1).unwrap(), vec![0.0, 1.5, 0.0, -2.0]);
        assert_eq!(to_dense(s.as_ref(), 3).unwrap_err().message, "expected 3 dimensions, not 4");
        let wide = parse("{1:1}/16001").unwrap();
        let e = to_dense(wide.as_ref(), -1).unwrap_err();
        assert_eq!(
            (code(e.state), e.message.as_str()),
            ("54000", "vector cannot have more than 16000 dimensions")
        );
    }

    #[test]
    fn arrays() {
        let e = |r: Result<(), VectorError>| r.unwrap_err().message;
        assert_eq!(e(check_array_shape(2, false, 4, -1)), "array must be 1-D");
        assert_eq!(e(check_array_shape(1, true, 4, -1)), "array must not contain nulls");
        assert_eq!(
            e(check_array_shape(0, false, 0, -1)),
            "sparsevec must have at least 1 dimension"
        );
        assert_eq!(e(check_array_shape(1, false, 4, 3)), "expected 3 dimensions, not 4");
        assert!(check_array_shape(1, false, 4, 4).is_ok());
        let s = from_array_values(&[0.0, 2.0, -0.0, 3.0]).unwrap();
        assert_eq!(format_text(s.as_ref()), "{2:2,4:3}/4");
        assert_eq!(
            from_array_values(&[f32::NAN]).unwrap_err().message,
            "NaN not allowed in sparsevec"
        );
        assert_eq!(
            from_array_values(&[0.0, f32::INFINITY]).unwrap_err().message,
            "infinite value not allowed in sparsevec"
        );
        let many = vec![1.0; 16001];
        assert_eq!(
            from_array_values(&many).unwrap_err().message,
            "sparsevec cannot have more than 16000 non-zero elements"
        );
        let mut wide = vec![0.0; 100_000];
        wide[99_999] = 1.0;
        assert_eq!(format_text(from_array_values(&wide).unwrap().as_ref()), "{100000:1}/100000");
    }

    fn sp(s: &str) -> SparseVec {
        parse(s).unwrap()
    }

    #[test]
    fn distances_match_pgvector_regression_values() {
        let d = |a: &str, b: &str| {
            let (a, b) = (sp(a), sp(b));
            (
                (l2_squared(a.as_ref(), b.as_ref()) as f64).sqrt(),
                inner_product(a.as_ref(), b.as_ref()) as f64,
                cosine(a.as_ref(), b.as_ref()),
                l1(a.as_ref(), b.as_ref()) as f64,
            )
        };
        assert_eq!(d("{}/2", "{1:3,2:4}/2").0, 5.0);
        assert_eq!(d("{1:3}/2", "{2:4}/2").0, 5.0);
        assert_eq!(d("{2:4}/2", "{1:3}/2").0, 5.0);
        assert_eq!(d("{1:1,2:2}/2", "{1:2,2:4}/2").1, 10.0);
        assert_eq!(d("{1:1,3:3,5:5}/5", "{2:4,3:6,4:8}/5").1, 18.0);
        assert_eq!(d("{1:3e38}/1", "{1:3e38}/1").1, f64::INFINITY);
        assert_eq!(d("{1:1,2:2}/2", "{1:2,2:4}/2").2, 0.0);
        assert!(d("{1:1,2:2}/2", "{}/2").2.is_nan());
        assert_eq!(d("{1:1}/2", "{2:2}/2").2, 1.0);
        assert_eq!(d("{1:1,2:1}/2", "{1:-1,2:-1}/2").2, 2.0);
        assert_eq!(d("{1:1,2:1}/2", "{1:1.1,2:1.1}/2").2, 0.0);
        assert_eq!(d("{1:1,2:1}/2", "{1:-1.1,2:-1.1}/2").2, 2.0);
        assert!(d("{1:3e38}/1", "{1:3e38}/1").2.is_nan());
        assert!(d("{}/1", "{}/1").2.is_nan());
        assert_eq!(d("{1:3e38}/1", "{1:-3e38}/1").3, f64::INFINITY);
        assert_eq!(d("{1:1,3:3,5:5,7:7}/8", "{2:2,4:4,6:6,8:8}/8").3, 36.0);
        assert_eq!(d("{1:1,3:3,5:5,7:7,9:9}/9", "{2:2,4:4,6:6,8:8}/9").3, 45.0);
        assert_eq!(
            check_same_dims(sp("{}/2").as_ref(), sp("{}/1").as_ref()).unwrap_err().message,
            "different sparsevec dimensions 2 and 1"
        );
    }

    #[test]
    fn merge_kernels_match_dense_reference() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for round in 0..400 {
            let dim = 1 + (next() % 200) as i32;
            let mut make = || {
                let density = next() % 100;
                let mut s = SparseVec { dim, indices: vec![], values: vec![] };
                for i in 0..dim {
                    if next() % 100 < density {
                        s.indices.push(i);
                        s.values.push((next() % 2001) as f32 / 100.0 - 10.0 + 0.003);
                    }
                }
                s
            };
            let (a, b) = (make(), make());
            let (a, b) = (a.as_ref(), b.as_ref());
            assert_eq!(
                l2_squared(a, b).to_bits(),
                reference::l2_squared(a, b).to_bits(),
                "{round}"
            );
            assert_eq!(inner_product(a, b).to_bits(), reference::inner_product(a, b).to_bits());
            assert_eq!(l1(a, b).to_bits(), reference::l1(a, b).to_bits(), "{round}");
            assert_eq!(l2_squared(a, b), l2_squared(b, a));
            assert_eq!(compare(a, b), compare(b, a).reverse(), "{round}");
            assert_eq!(compare(a, a), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn norms_and_normalize() {
        assert_eq!(norm(sp("{1:3,2:4}/2").as_ref()), 5.0);
        assert_eq!(norm(sp("{}/2").as_ref()).to_bits(), 0f64.to_bits());
        assert_eq!(norm(sp("{1:3e37,2:4e37}/2").as_ref()) as f32, 5e37);
        let n = |s: &str| format_text(l2_normalize(sp(s).as_ref()).unwrap().as_ref());
        assert_eq!(n("{1:3,2:4}/2"), "{1:0.6,2:0.8}/2");
        assert_eq!(n("{2:0.1}/2"), "{2:1}/2");
        assert_eq!(n("{}/2"), "{}/2");
        assert_eq!(n("{1:3e38}/1"), "{1:1}/1");
        assert_eq!(n("{1:3e38,2:1e-37}/2"), "{1:1}/2");
        assert_eq!(n("{2:3e37,4:3e-37,6:4e37,8:4e-37}/9"), "{2:0.6,6:0.8}/9");
    }

    #[test]
    fn ordering_matches_pgvector() {
        use std::cmp::Ordering::*;
        let c = |a: &str, b: &str| compare(sp(a).as_ref(), sp(b).as_ref());
        assert_eq!(c("{1:1,2:2,3:3}/3", "{1:1,2:2,3:3}/3"), Equal);
        assert_eq!(c("{1:1,2:2,3:3}/3", "{}/3"), Greater);
        assert_eq!(c("{}/3", "{1:1,2:2,3:3}/3"), Less);
        assert_eq!(c("{1:1,2:2}/2", "{1:1,2:2,3:3}/3"), Less);
        assert_eq!(c("{1:1,2:2,3:3}/3", "{1:1,2:2}/2"), Greater);
        assert_eq!(c("{1:1,2:2}/2", "{1:2,2:3,3:4}/3"), Less);
        assert_eq!(c("{1:2,2:3}/2", "{1:1,2:2,3:3}/3"), Greater);
        // an implicit zero against a stored negative value
        assert_eq!(c("{1:-1}/2", "{2:1}/2"), Less);
        assert_eq!(c("{2:1}/2", "{1:-1}/2"), Greater);
        assert_eq!(c("{}/2", "{2:-1}/2"), Greater);
        // as for vector, the dense prefix decides before the length
        assert_eq!(c("{1:2}/1", "{1:1}/5"), Greater);
    }

    #[test]
    fn half_conversions_round_trip_and_round_to_even() {
        for h in 0..=u16::MAX {
            let f = half_to_f32(h);
            if f.is_nan() {
                assert!(f32_to_half(f) & 0x7fff > 0x7c00);
            } else {
                assert_eq!(f32_to_half(f), h, "{h:#06x}");
            }
        }
        // every float4 between two adjacent halves rounds to the nearer, ties to even
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let x = f32::from_bits(seed as u32);
            if !x.is_finite() || x.abs() > 65519.0 {
                continue;
            }
            let h = f32_to_half(x);
            let (lo, hi) =
                if half_to_f32(h).abs() <= x.abs() { (h, h + 1) } else { (h.wrapping_sub(1), h) };
            let (dl, dh) = (
                (x.abs() - half_to_f32(lo & 0x7fff).abs()) as f64,
                (half_to_f32(hi & 0x7fff).abs() - x.abs()) as f64,
            );
            let want = if dl < dh || (dl == dh && lo & 1 == 0) { lo } else { hi };
            assert_eq!(h & 0x7fff, want & 0x7fff, "{x:e}");
        }
        assert_eq!(f32_to_half(65504.0), 0x7bff);
        assert_eq!(f32_to_half(65519.996), 0x7bff);
        assert_eq!(f32_to_half(65520.0), 0x7c00);
        assert_eq!(f32_to_half(1e-8), 0);
        assert_eq!(f32_to_half(-1e-8), 0x8000);
        assert_eq!(f32_to_half(2f32.powi(-25)), 0);
        assert_eq!(f32_to_half(2f32.powi(-25) * 1.000_001), 1);
    }

    #[test]
    fn halfvec_casts() {
        let s = parse("{2:1.5,4:3.5}/5").unwrap();
        let h = to_half(s.as_ref(), -1).unwrap();
        assert_eq!(
            h.iter().map(|&b| half_to_f32(b)).collect::<Vec<_>>(),
            vec![0.0, 1.5, 0.0, 3.5, 0.0]
        );
        assert_eq!(from_half(&h, -1).unwrap(), s);
        assert_eq!(from_half(&h, 4).unwrap_err().message, "expected 4 dimensions, not 5");
        assert_eq!(to_half(s.as_ref(), 4).unwrap_err().message, "expected 4 dimensions, not 5");
        assert_eq!(from_half(&[0x8000, 0], -1).unwrap().indices.len(), 0);
        let e = to_half(sp("{}/16001").as_ref(), -1).unwrap_err();
        assert_eq!(
            (code(e.state), e.message.as_str()),
            ("54000", "halfvec cannot have more than 16000 dimensions")
        );
        let e = to_half(sp("{1:65520}/1").as_ref(), -1).unwrap_err();
        assert_eq!(
            (code(e.state), e.message.as_str()),
            ("22003", "\"65520\" is out of range for type halfvec")
        );
        assert_eq!(to_half(sp("{1:1e-8}/1").as_ref(), -1).unwrap(), vec![0]);
    }
}
