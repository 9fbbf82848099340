//! The `vector` value without Postgres: parsing, printing and the binary wire format.
//!
//! Everything here mirrors pgvector 0.8 byte for byte and message for message, because
//! clients (psycopg, asyncpg, node-postgres, sqlx) were written against pgvector and must
//! not notice that vecguard sits behind the type name `vector`:
//! - text: `[1,2,3]`, whitespace allowed around elements, `strtof` number syntax, output in
//!   Postgres's shortest round-trip float4 form (`1e+20`, `1.5`, `-0`);
//! - binary: int16 dim, int16 unused (must be 0), then float4 values, all big-endian;
//! - the same error texts and SQLSTATEs, so applications that match on them keep working.
//!
//! Errors are values (`VectorError`) carrying the SQLSTATE; the glue turns them into
//! `ereport(ERROR)`. Nothing here panics on any input.

use std::fmt::Write as _;

/// Largest dimension count of a `vector` (pgvector's VECTOR_MAX_DIM).
pub const VECTOR_MAX_DIM: usize = 16000;

/// SQLSTATE classes used by vector errors (five-character codes as in the Postgres docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    /// 22P02 invalid_text_representation
    InvalidTextRepresentation,
    /// 22000 data_exception
    DataException,
    /// 22003 numeric_value_out_of_range
    NumericValueOutOfRange,
    /// 54000 program_limit_exceeded
    ProgramLimitExceeded,
    /// 22023 invalid_parameter_value
    InvalidParameterValue,
    /// 22004 null_value_not_allowed
    NullValueNotAllowed,
    /// 08P01 protocol_violation (short binary message)
    ProtocolViolation,
    /// XX000 internal_error (pgvector's elog(ERROR) for a malformed aggregate state)
    InternalError,
}

/// A user-facing error: SQLSTATE, primary message and optional detail, as pgvector words them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorError {
    pub state: SqlState,
    pub message: String,
    pub detail: Option<String>,
}

impl VectorError {
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        VectorError { state, message: message.into(), detail: None }
    }
    fn with_detail(mut self, detail: &str) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}

impl std::fmt::Display for VectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// The dense types that share this text syntax and these limits; each error names its type
/// as pgvector's does ("NaN not allowed in halfvec").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseType {
    Vector,
    Halfvec,
}

impl DenseType {
    pub fn name(self) -> &'static str {
        match self {
            DenseType::Vector => "vector",
            DenseType::Halfvec => "halfvec",
        }
    }
}

/// `different vector dimensions 3 and 4`
pub fn dimension_mismatch(a: usize, b: usize) -> VectorError {
    dimension_mismatch_of(DenseType::Vector, a, b)
}

/// `different halfvec dimensions 3 and 4`
pub fn dimension_mismatch_of(ty: DenseType, a: usize, b: usize) -> VectorError {
    VectorError::new(
        SqlState::DataException,
        format!("different {} dimensions {a} and {b}", ty.name()),
    )
}

/// `NaN not allowed in vector`
pub fn nan_not_allowed(ty: DenseType) -> VectorError {
    VectorError::new(SqlState::DataException, format!("NaN not allowed in {}", ty.name()))
}

/// `infinite value not allowed in vector`
pub fn infinite_not_allowed(ty: DenseType) -> VectorError {
    VectorError::new(
        SqlState::DataException,
        format!("infinite value not allowed in {}", ty.name()),
    )
}

/// `"1e39" is out of range for type vector`
pub fn out_of_range(ty: DenseType, tok: &str) -> VectorError {
    VectorError::new(
        SqlState::NumericValueOutOfRange,
        format!("\"{tok}\" is out of range for type {}", ty.name()),
    )
}

/// Postgres's float_overflow_error / float_underflow_error.
pub fn float_overflow() -> VectorError {
    VectorError::new(SqlState::NumericValueOutOfRange, "value out of range: overflow")
}

pub fn float_underflow() -> VectorError {
    VectorError::new(SqlState::NumericValueOutOfRange, "value out of range: underflow")
}

/// Rejects NaN and infinities, which pgvector never stores.
pub fn check_element(v: f32) -> Result<(), VectorError> {
    if v.is_nan() {
        Err(nan_not_allowed(DenseType::Vector))
    } else if v.is_infinite() {
        Err(infinite_not_allowed(DenseType::Vector))
    } else {
        Ok(())
    }
}

/// Checks a dimension count against pgvector's limits.
pub fn check_dim(dim: i64) -> Result<(), VectorError> {
    check_dim_of(DenseType::Vector, dim)
}

/// `vector must have at least 1 dimension`
pub fn too_few_dims(ty: DenseType) -> VectorError {
    VectorError::new(
        SqlState::DataException,
        format!("{} must have at least 1 dimension", ty.name()),
    )
}

/// `vector cannot have more than 16000 dimensions` (54000, program_limit_exceeded)
pub fn too_many_dims(ty: DenseType) -> VectorError {
    VectorError::new(
        SqlState::ProgramLimitExceeded,
        format!("{} cannot have more than {VECTOR_MAX_DIM} dimensions", ty.name()),
    )
}

/// Checks a dimension count against the limits of `ty` (both 1..=16000).
pub fn check_dim_of(ty: DenseType, dim: i64) -> Result<(), VectorError> {
    if dim < 1 {
        return Err(too_few_dims(ty));
    }
    if dim > VECTOR_MAX_DIM as i64 {
        return Err(too_many_dims(ty));
    }
    Ok(())
}

/// Checks a whole value before it is stored: dimension count and elements.
pub fn check_vector(x: &[f32]) -> Result<(), VectorError> {
    check_dim(x.len() as i64)?;
    x.iter().try_for_each(|&v| check_element(v))
}

/// Checks a value's dimension count against a column's typmod (-1 = unconstrained).
pub fn check_expected_dim(typmod: i32, dim: usize) -> Result<(), VectorError> {
    if typmod != -1 && typmod as i64 != dim as i64 {
        return Err(VectorError::new(
            SqlState::DataException,
            format!("expected {typmod} dimensions, not {dim}"),
        ));
    }
    Ok(())
}

/// Validates `vector(n)`: exactly one modifier within 1..=16000.
pub fn typmod_in(mods: &[i32]) -> Result<i32, VectorError> {
    typmod_in_of(DenseType::Vector, mods)
}

/// Validates `vector(n)` or `halfvec(n)`.
pub fn typmod_in_of(ty: DenseType, mods: &[i32]) -> Result<i32, VectorError> {
    if mods.len() != 1 {
        return Err(VectorError::new(SqlState::InvalidParameterValue, "invalid type modifier"));
    }
    let n = mods[0];
    if n < 1 {
        return Err(VectorError::new(
            SqlState::InvalidParameterValue,
            format!("dimensions for type {} must be at least 1", ty.name()),
        ));
    }
    if n > VECTOR_MAX_DIM as i32 {
        return Err(VectorError::new(
            SqlState::InvalidParameterValue,
            format!("dimensions for type {} cannot exceed {VECTOR_MAX_DIM}", ty.name()),
        ));
    }
    Ok(n)
}

fn is_vector_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn invalid_syntax(ty: DenseType, lit: &str) -> VectorError {
    VectorError::new(
        SqlState::InvalidTextRepresentation,
        format!("invalid input syntax for type {}: \"{lit}\"", ty.name()),
    )
}

/// Length of the longest prefix of `s` that C's `strtof` would consume (0 = none).
/// Accepts an optional sign, then `inf`/`infinity`/`nan` (any case), a hex float, or a
/// decimal with optional fraction and exponent, exactly the forms `strtof` takes.
pub fn strtof_prefix_len(s: &[u8]) -> usize {
    let mut i = 0;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let rest = &s[i..];
    let starts_ci = |word: &str| {
        rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word.as_bytes())
    };
    if starts_ci("infinity") {
        return i + 8;
    }
    if starts_ci("inf") || starts_ci("nan") {
        return i + 3;
    }
    if rest.len() >= 2 && rest[0] == b'0' && (rest[1] == b'x' || rest[1] == b'X') {
        let mut j = 2;
        let mut digits = 0;
        while j < rest.len() && rest[j].is_ascii_hexdigit() {
            j += 1;
            digits += 1;
        }
        if j < rest.len() && rest[j] == b'.' {
            j += 1;
            while j < rest.len() && rest[j].is_ascii_hexdigit() {
                j += 1;
                digits += 1;
            }
        }
        if digits == 0 {
            // "0x" without digits: strtof takes just the "0".
            return i + 1;
        }
        if j < rest.len() && (rest[j] == b'p' || rest[j] == b'P') {
            let mut k = j + 1;
            if k < rest.len() && (rest[k] == b'+' || rest[k] == b'-') {
                k += 1;
            }
            if k < rest.len() && rest[k].is_ascii_digit() {
                while k < rest.len() && rest[k].is_ascii_digit() {
                    k += 1;
                }
                j = k;
            }
        }
        return i + j;
    }
    let mut j = 0;
    let mut digits = 0;
    while j < rest.len() && rest[j].is_ascii_digit() {
        j += 1;
        digits += 1;
    }
    if j < rest.len() && rest[j] == b'.' {
        j += 1;
        while j < rest.len() && rest[j].is_ascii_digit() {
            j += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return 0;
    }
    if j < rest.len() && (rest[j] == b'e' || rest[j] == b'E') {
        let mut k = j + 1;
        if k < rest.len() && (rest[k] == b'+' || rest[k] == b'-') {
            k += 1;
        }
        if k < rest.len() && rest[k].is_ascii_digit() {
            while k < rest.len() && rest[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    i + j
}

/// Converts one `strtof`-syntax token to f32 with correct rounding.
/// Returns (value, overflowed) where overflowed means a finite literal rounded to infinity.
pub fn parse_float_token(tok: &str) -> Option<(f32, bool)> {
    let body = tok.trim_start_matches(['+', '-']);
    let negative = tok.starts_with('-');
    let lower = body.to_ascii_lowercase();
    if let Some(digits) = lower.strip_prefix("0x") {
        let v = parse_hex_float(digits)?;
        let v = if negative { -v } else { v };
        let f = v as f32;
        return Some((f, f.is_infinite()));
    }
    let v: f32 = tok.parse().ok()?;
    let literal_inf = lower.starts_with("inf");
    Some((v, v.is_infinite() && !literal_inf))
}

/// Parses the digits of a hex float after "0x" (e.g. "1.8p3") into f64.
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mantissa, exp) = match s.find('p') {
        Some(p) => (&s[..p], s[p + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(d) => (&mantissa[..d], &mantissa[d + 1..]),
        None => (mantissa, ""),
    };
    // The value is m · 2^e exactly, with m kept below 2^52 and the digits it cannot hold
    // folded into one sticky bit: then m converts to f64 exactly and the caller's single
    // rounding to f32 is strtof's (rounding the digits to f64 first could round twice).
    let (mut m, mut e, mut sticky) = (0u64, exp, false);
    for (c, fractional) in
        int_part.chars().map(|c| (c, false)).chain(frac_part.chars().map(|c| (c, true)))
    {
        let d = u64::from(c.to_digit(16)?);
        if m < 1 << 48 {
            m = m * 16 + d;
            if fractional {
                e -= 4;
            }
        } else {
            sticky |= d != 0;
            if !fractional {
                e += 4;
            }
        }
    }
    if m == 0 {
        return Some(0.0);
    }
    if sticky {
        m = (m << 1) | 1;
        e -= 1;
    }
    // m < 2^53, so anything beyond these bounds is infinite or zero as an f32 anyway.
    let e = e.clamp(-1200, 1200) as i32;
    let half = e / 2;
    Some(m as f64 * 2f64.powi(half) * 2f64.powi(e - half))
}

/// Parses pgvector's text form, checking elements and the column's typmod.
pub fn parse_text(lit: &str, typmod: i32) -> Result<Vec<f32>, VectorError> {
    parse_text_with(DenseType::Vector, lit, typmod, |tok, val, overflowed| {
        if overflowed {
            return Err(out_of_range(DenseType::Vector, tok));
        }
        check_element(val)?;
        Ok(val)
    })
}

/// The text syntax shared by `vector` and `halfvec` (pgvector's vector_in and halfvec_in
/// differ only in the element step): `elem` receives each number's token, its `strtof`
/// value and whether a finite literal overflowed float4, and returns the stored element.
pub fn parse_text_with<T>(
    ty: DenseType,
    lit: &str,
    typmod: i32,
    mut elem: impl FnMut(&str, f32, bool) -> Result<T, VectorError>,
) -> Result<Vec<T>, VectorError> {
    let b = lit.as_bytes();
    let mut pt = 0;
    while pt < b.len() && is_vector_space(b[pt]) {
        pt += 1;
    }
    if pt >= b.len() || b[pt] != b'[' {
        return Err(invalid_syntax(ty, lit).with_detail("Vector contents must start with \"[\"."));
    }
    pt += 1;
    while pt < b.len() && is_vector_space(b[pt]) {
        pt += 1;
    }
    if pt < b.len() && b[pt] == b']' {
        return Err(too_few_dims(ty));
    }
    let mut out = Vec::new();
    loop {
        if out.len() == VECTOR_MAX_DIM {
            return Err(too_many_dims(ty));
        }
        while pt < b.len() && is_vector_space(b[pt]) {
            pt += 1;
        }
        if pt >= b.len() {
            return Err(invalid_syntax(ty, lit));
        }
        let len = strtof_prefix_len(&b[pt..]);
        if len == 0 {
            return Err(invalid_syntax(ty, lit));
        }
        // The prefix is ASCII by construction, so slicing at byte offsets is on char boundaries.
        let tok = &lit[pt..pt + len];
        let (val, overflowed) = parse_float_token(tok).ok_or_else(|| invalid_syntax(ty, lit))?;
        out.push(elem(tok, val, overflowed)?);
        pt += len;
        while pt < b.len() && is_vector_space(b[pt]) {
            pt += 1;
        }
        if pt < b.len() && b[pt] == b',' {
            pt += 1;
        } else if pt < b.len() && b[pt] == b']' {
            pt += 1;
            break;
        } else {
            return Err(invalid_syntax(ty, lit));
        }
    }
    while pt < b.len() && is_vector_space(b[pt]) {
        pt += 1;
    }
    if pt != b.len() {
        return Err(invalid_syntax(ty, lit).with_detail("Junk after closing right brace."));
    }
    check_dim_of(ty, out.len() as i64)?;
    check_expected_dim(typmod, out.len())?;
    Ok(out)
}

/// Appends one float4 in Postgres's shortest round-trip form (what float4out prints with
/// extra_float_digits > 0 and what pgvector's vector_out prints): fixed notation when the
/// decimal exponent is in -4..6 (float4's FLT_DIG), else `d.ddde+XX` with at least two exponent digits.
pub fn write_float4(out: &mut String, v: f32) {
    if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    if !v.is_finite() {
        out.push_str(if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    let (negative, digits, exp) = shortest_digits(v);
    if negative {
        out.push('-');
    }
    if (-4..6).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// The shortest decimal digits that read back as `v` (finite, non-zero), as PostgreSQL's
/// Ryu picks them (ties to even), with the decimal exponent of the first digit:
/// 0.330078125 is `(false, "33007812", -1)`.
fn shortest_digits(v: f32) -> (bool, String, i32) {
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    let (mant, e) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let negative = mant.starts_with('-');
    let mant = mant.trim_start_matches('-');
    let (int_part, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let all: String = int_part.chars().chain(frac.chars()).collect();
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_string();
    // The first significant digit sits at 10^(int_part.len() - 1 - lead), times 10^e.
    let exp = e + int_part.len() as i32 - 1 - lead as i32;
    (negative, digits, exp)
}

/// Formats a vector as `[1,2,3]`.
pub fn format_text(x: &[f32]) -> String {
    let mut out = String::with_capacity(2 + x.len() * 12);
    out.push('[');
    for (i, &v) in x.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_float4(&mut out, v);
    }
    out.push(']');
    out
}

/// Encodes the binary send format: int16 dim, int16 unused = 0, float4 values, big-endian.
pub fn encode_binary(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * x.len());
    out.extend_from_slice(&(x.len() as i16).to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    for v in x {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

pub fn insufficient_data() -> VectorError {
    VectorError::new(SqlState::ProtocolViolation, "insufficient data left in message")
}

/// Reads the 4-byte header (int16 dim, int16 unused) that the binary formats of `vector` and
/// `halfvec` share, with pgvector's checks in its order; `check_dim` is the type's own.
pub fn dense_binary_header(
    buf: &[u8],
    typmod: i32,
    check_dim: impl Fn(i64) -> Result<(), VectorError>,
) -> Result<usize, VectorError> {
    if buf.len() < 4 {
        return Err(insufficient_data());
    }
    let dim = i16::from_be_bytes([buf[0], buf[1]]);
    let unused = i16::from_be_bytes([buf[2], buf[3]]);
    check_dim(i64::from(dim))?;
    check_expected_dim(typmod, dim as usize)?;
    if unused != 0 {
        return Err(VectorError::new(
            SqlState::DataException,
            format!("expected unused to be 0, not {unused}"),
        ));
    }
    Ok(dim as usize)
}

/// Decodes the binary format from `buf`; returns the values and the number of bytes used.
pub fn decode_binary(buf: &[u8], typmod: i32) -> Result<(Vec<f32>, usize), VectorError> {
    let dim = dense_binary_header(buf, typmod, check_dim)?;
    let need = 4 + 4 * dim;
    if buf.len() < need {
        return Err(insufficient_data());
    }
    let mut out = Vec::with_capacity(dim);
    for c in buf[4..need].chunks_exact(4) {
        let v = f32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        check_element(v)?;
        out.push(v);
    }
    Ok((out, need))
}

/// pgvector's checks of an array cast before any element is converted, in its order: shape,
/// NULLs, dimension count, typmod.
pub fn check_array_shape(
    ty: DenseType,
    ndim: i32,
    has_nulls: bool,
    n: usize,
    typmod: i32,
) -> Result<(), VectorError> {
    if ndim > 1 {
        return Err(VectorError::new(SqlState::DataException, "array must be 1-D"));
    }
    if has_nulls {
        return Err(VectorError::new(
            SqlState::NullValueNotAllowed,
            "array must not contain nulls",
        ));
    }
    check_dim_of(ty, n as i64)?;
    check_expected_dim(typmod, n)
}

/// Builds a vector from array elements, as `array_to_vector` does: each element is rounded
/// to float4 (a finite double beyond float4's range becomes an infinity, which is refused).
/// `None` elements are NULLs, which pgvector rejects.
pub fn from_array_elements(
    elems: impl ExactSizeIterator<Item = Option<f64>>,
    ndim: i32,
    typmod: i32,
) -> Result<Vec<f32>, VectorError> {
    let elems: Vec<Option<f64>> = elems.collect();
    let has_nulls = elems.iter().any(Option::is_none);
    check_array_shape(DenseType::Vector, ndim, has_nulls, elems.len(), typmod)?;
    let out: Vec<f32> = elems.into_iter().map(|e| e.unwrap_or(0.0) as f32).collect();
    out.iter().try_for_each(|&v| check_element(v))?;
    Ok(out)
}

/// pgvector's ordering: element-wise on the common prefix, then shorter first.
pub fn compare(a: &[f32], b: &[f32]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (x, y) in a.iter().zip(b.iter()) {
        if x < y {
            return Ordering::Less;
        }
        if x > y {
            return Ordering::Greater;
        }
    }
    a.len().cmp(&b.len())
}

/// Checks an arithmetic result: pgvector reports overflow to infinity as 22003.
pub fn check_overflow(x: &[f32]) -> Result<(), VectorError> {
    if x.iter().any(|v| v.is_infinite()) {
        return Err(VectorError::new(
            SqlState::NumericValueOutOfRange,
            "value out of range: overflow",
        ));
    }
    Ok(())
}

/// Element-wise a + b.
pub fn add(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    if a.len() != b.len() {
        return Err(dimension_mismatch(a.len(), b.len()));
    }
    let r: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    check_overflow(&r)?;
    Ok(r)
}

/// Element-wise a - b.
pub fn sub(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    if a.len() != b.len() {
        return Err(dimension_mismatch(a.len(), b.len()));
    }
    let r: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    check_overflow(&r)?;
    Ok(r)
}

/// Element-wise a * b; a product of non-zero values that rounds to zero is an underflow.
pub fn mul(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    if a.len() != b.len() {
        return Err(dimension_mismatch(a.len(), b.len()));
    }
    let mut r = Vec::with_capacity(a.len());
    for (x, y) in a.iter().zip(b) {
        let p = x * y;
        if p == 0.0 && *x != 0.0 && *y != 0.0 {
            return Err(VectorError::new(
                SqlState::NumericValueOutOfRange,
                "value out of range: underflow",
            ));
        }
        r.push(p);
    }
    check_overflow(&r)?;
    Ok(r)
}

/// a || b, bounded by the dimension limit.
pub fn concat(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    check_dim((a.len() + b.len()) as i64)?;
    let mut r = Vec::with_capacity(a.len() + b.len());
    r.extend_from_slice(a);
    r.extend_from_slice(b);
    Ok(r)
}

/// subvector(v, start, count) with 1-based start, clamped like pgvector.
pub fn subvector(a: &[f32], start: i32, count: i32) -> Result<Vec<f32>, VectorError> {
    if count < 1 {
        return Err(VectorError::new(
            SqlState::DataException,
            "vector must have at least 1 dimension",
        ));
    }
    // Compute the end in i64 so start + count cannot overflow.
    let mut begin = start as i64;
    let end = if start as i64 > i64::from(i32::MAX) - count as i64 {
        i64::from(i32::MAX)
    } else {
        start as i64 + count as i64
    };
    if begin < 1 {
        begin = 1;
    }
    let end = end.min(a.len() as i64 + 1);
    let dim = end - begin;
    check_dim(dim)?;
    Ok(a[(begin - 1) as usize..(end - 1) as usize].to_vec())
}

/// Packs booleans into PG's bit(n) layout: the first into the high bit of the first byte,
/// the unused low bits of the last byte zero.
pub fn pack_bits(bits: impl Iterator<Item = bool>, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n.div_ceil(8)];
    for (i, b) in bits.enumerate().take(n) {
        if b {
            out[i / 8] |= 0x80 >> (i % 8);
        }
    }
    out
}

/// binary_quantize(vector): bit i is set when element i is > 0 (pgvector's rule).
pub fn binary_quantize(x: &[f32]) -> Vec<u8> {
    pack_bits(x.iter().map(|&v| v > 0.0), x.len())
}

/// Euclidean norm in double precision, as pgvector's vector_norm.
pub fn norm(a: &[f32]) -> f64 {
    a.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt()
}

/// Unit-length copy; a zero vector stays zero (pgvector's l2_normalize).
pub fn l2_normalize(a: &[f32]) -> Result<Vec<f32>, VectorError> {
    let n = norm(a);
    if n > 0.0 {
        let r: Vec<f32> = a.iter().map(|&v| (v as f64 / n) as f32).collect();
        check_overflow(&r)?;
        Ok(r)
    } else {
        Ok(a.to_vec())
    }
}

/// State of avg(vector) and avg(halfvec): count and per-dimension sums in double precision,
/// laid out as pgvector's float8[] state `{n, s1, ..., sd}` so combine functions agree.
/// `caller` names the SQL function in pgvector's "vector_accum: expected state array".
pub fn accum(
    state: &mut Vec<f64>,
    v: &[f32],
    caller: &str,
    ty: DenseType,
) -> Result<(), VectorError> {
    // An empty state is "no rows yet" here; SQL's empty array is refused by the glue.
    if state.is_empty() {
        state.push(0.0);
    }
    check_state(state, caller, ty)?;
    if state.len() == 1 {
        state.extend(v.iter().map(|&x| f64::from(x)));
    } else {
        check_expected_dim((state.len() - 1) as i32, v.len())?;
        for (s, &x) in state[1..].iter_mut().zip(v) {
            *s += f64::from(x);
            if s.is_infinite() {
                return Err(float_overflow());
            }
        }
    }
    state[0] += 1.0;
    Ok(())
}

/// Merges two aggregate states (the combine function that makes avg parallel); pgvector
/// uses the one function, vector_combine, for vector and halfvec.
pub fn combine(a: &[f64], b: &[f64]) -> Result<Vec<f64>, VectorError> {
    const CALLER: &str = "vector_combine";
    check_state(a, CALLER, DenseType::Vector)?;
    check_state(b, CALLER, DenseType::Vector)?;
    let (d1, d2) = (a.len() - 1, b.len() - 1);
    let mut out = if d1 == 0 && d2 == 0 {
        vec![0.0]
    } else if d1 == 0 {
        b.to_vec()
    } else if d2 == 0 {
        a.to_vec()
    } else {
        check_expected_dim(d1 as i32, d2)?;
        let mut out = Vec::with_capacity(a.len());
        out.push(0.0);
        for (x, y) in a[1..].iter().zip(&b[1..]) {
            let v = x + y;
            if v.is_infinite() {
                return Err(float_overflow());
            }
            out.push(v);
        }
        out
    };
    out[0] = a[0] + b[0];
    Ok(out)
}

/// The per-dimension means of a state, checked as pgvector's final functions check it;
/// None when no rows were aggregated (SQL NULL).
pub fn avg_values(
    state: &[f64],
    caller: &str,
    ty: DenseType,
) -> Result<Option<Vec<f64>>, VectorError> {
    check_state(state, caller, ty)?;
    let n = state[0];
    if n == 0.0 {
        return Ok(None);
    }
    check_dim_of(ty, state.len() as i64 - 1)?;
    Ok(Some(state[1..].iter().map(|s| s / n).collect()))
}

/// Final avg(vector) from a state; None when no rows were aggregated (SQL NULL).
pub fn avg_final(state: &[f64]) -> Result<Option<Vec<f32>>, VectorError> {
    let Some(means) = avg_values(state, "vector_avg", DenseType::Vector)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(means.len());
    for m in means {
        let v = m as f32;
        check_element(v)?;
        out.push(v);
    }
    Ok(Some(out))
}

/// Checks an aggregate state that arrived from SQL (the transition, combine and final
/// functions are callable directly, so the state is input like any other): a count that is
/// a whole number, then one sum per dimension, within the type's limits. pgvector's words.
pub fn check_state(state: &[f64], caller: &str, ty: DenseType) -> Result<(), VectorError> {
    let bad =
        || VectorError::new(SqlState::InternalError, format!("{caller}: expected state array"));
    let Some(&n) = state.first() else {
        return Err(bad());
    };
    if !(n.is_finite() && n >= 0.0 && n.fract() == 0.0) {
        return Err(bad());
    }
    if state.len() > 1 {
        check_dim_of(ty, state.len() as i64 - 1)?;
    }
    if state[1..].iter().any(|s| s.is_nan()) {
        return Err(nan_not_allowed(ty));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(lit: &str) -> VectorError {
        parse_text(lit, -1).unwrap_err()
    }

    #[test]
    fn aggregate_states_from_sql_are_checked() {
        let check = |s: &[f64]| check_state(s, "vector_avg", DenseType::Vector);
        assert_eq!(check(&[]).unwrap_err().message, "vector_avg: expected state array");
        assert_eq!(check(&[-1.0, 1.0]).unwrap_err().message, "vector_avg: expected state array");
        assert_eq!(check(&[f64::NAN]).unwrap_err().state, SqlState::InternalError);
        assert_eq!(check(&[1.0, f64::NAN]).unwrap_err().message, "NaN not allowed in vector");
        let huge = vec![1.0; 70_001];
        let e = avg_final(&huge).unwrap_err();
        assert_eq!(
            (e.state, e.message.as_str()),
            (SqlState::ProgramLimitExceeded, "vector cannot have more than 16000 dimensions")
        );
        assert!(avg_final(&vec![1.0; 32_769]).is_err());
        assert!(combine(&huge, &[0.0]).is_err());
        let mut s = vec![1.0; 20_001];
        assert!(accum(&mut s, &[1.0; 20_000], "vector_accum", DenseType::Vector).is_err());
        assert_eq!(avg_final(&[0.0]).unwrap(), None);
        assert_eq!(avg_final(&[2.0, 2.0, 4.0]).unwrap(), Some(vec![1.0, 2.0]));
        let mut s = vec![0.0];
        accum(&mut s, &[1.0, 2.0], "vector_accum", DenseType::Vector).unwrap();
        assert_eq!(s, vec![1.0, 1.0, 2.0]);
        assert!(check_vector(&[]).is_err());
        assert!(check_vector(&[f32::INFINITY]).is_err());
    }

    #[test]
    fn hex_floats_round_once() {
        // strtof: 1 + 2^-24 + a little rounds up to 1 + 2^-23
        assert_eq!(parse_text("[0x1.0000010000000001p0]", -1).unwrap(), vec![1.000_000_1]);
        assert_eq!(parse_text("[0x1.000001p0]", -1).unwrap(), vec![1.0]); // a tie: to even
        assert_eq!(parse_text("[0x0p2000]", -1).unwrap(), vec![0.0]);
        assert_eq!(parse_text("[0x1p-149]", -1).unwrap(), vec![f32::from_bits(1)]);
        assert_eq!(parse_text("[0xA.8p1]", -1).unwrap(), vec![21.0]);
    }

    #[test]
    fn parses_pgvector_text_forms() {
        assert_eq!(parse_text("[1,2,3]", -1).unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(parse_text("  [ 1 , -2.5e1 ,3 ]  ", -1).unwrap(), vec![1.0, -25.0, 3.0]);
        assert_eq!(parse_text("[1.5]", 1).unwrap(), vec![1.5]);
        assert_eq!(parse_text("[+.5,5.,1E2]", -1).unwrap(), vec![0.5, 5.0, 100.0]);
        assert_eq!(parse_text("[0x10]", -1).unwrap(), vec![16.0]);
    }

    #[test]
    fn rejects_bad_text_with_pgvector_messages() {
        let e = err("[1,2");
        assert_eq!(e.state, SqlState::InvalidTextRepresentation);
        assert_eq!(e.message, "invalid input syntax for type vector: \"[1,2\"");
        let e = err("[]");
        assert_eq!(
            (e.state, e.message.as_str()),
            (SqlState::DataException, "vector must have at least 1 dimension")
        );
        assert_eq!(err("[a]").state, SqlState::InvalidTextRepresentation);
        assert_eq!(err("[1,,2]").state, SqlState::InvalidTextRepresentation);
        assert_eq!(err("1,2").detail.as_deref(), Some("Vector contents must start with \"[\"."));
        assert_eq!(err("[1] x").detail.as_deref(), Some("Junk after closing right brace."));
        assert_eq!(err("").state, SqlState::InvalidTextRepresentation);
        assert_eq!(err("[1,]").state, SqlState::InvalidTextRepresentation);
        assert_eq!(err("[NaN]").message, "NaN not allowed in vector");
        assert_eq!(err("[Infinity]").message, "infinite value not allowed in vector");
        assert_eq!(err("[-inf]").message, "infinite value not allowed in vector");
        let e = err("[1e39]");
        assert_eq!(
            (e.state, e.message.as_str()),
            (SqlState::NumericValueOutOfRange, "\"1e39\" is out of range for type vector")
        );
        let e = parse_text("[1,2]", 3).unwrap_err();
        assert_eq!(e.message, "expected 3 dimensions, not 2");
    }

    #[test]
    fn rejects_too_many_dimensions() {
        let lit = format!("[{}]", vec!["1"; VECTOR_MAX_DIM + 1].join(","));
        let e = err(&lit);
        assert_eq!(e.state, SqlState::ProgramLimitExceeded);
        assert_eq!(e.message, "vector cannot have more than 16000 dimensions");
        let ok = format!("[{}]", vec!["1"; VECTOR_MAX_DIM].join(","));
        assert_eq!(parse_text(&ok, -1).unwrap().len(), VECTOR_MAX_DIM);
    }

    #[test]
    fn non_ascii_input_is_an_error_not_a_panic() {
        assert_eq!(err("[1,é]").state, SqlState::InvalidTextRepresentation);
        assert_eq!(err("[1]é").state, SqlState::InvalidTextRepresentation);
        assert_eq!(err("é").state, SqlState::InvalidTextRepresentation);
    }

    #[test]
    fn prints_shortest_round_trip_like_float4out() {
        let cases: &[(f32, &str)] = &[
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1e-7, "1e-07"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456.79, "123456.79"),
            (1e14, "1e+14"),
            (1e5, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.00012, "0.00012"),
            (16777216.0, "1.6777216e+07"),
            (3.4028235e38, "3.4028235e+38"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f32::MIN_POSITIVE, "1.1754944e-38"),
            // Exact ties between two shortest candidates go to the even digit, as
            // PostgreSQL's Ryu does (checked against float4out on PostgreSQL 18).
            (1352.0 / 4096.0, "0.33007812"), // 0.330078125
            (1.0 / 4096.0, "0.00024414062"),
            (33554436.0, "3.3554436e+07"),
            (8.5, "8.5"),
            (1e-45, "1e-45"),
        ];
        for (v, s) in cases {
            let mut out = String::new();
            write_float4(&mut out, *v);
            assert_eq!(&out, s, "formatting {v:e}");
        }
        assert_eq!(format_text(&[1.0, 2.0, 3.5]), "[1,2,3.5]");
    }

    #[test]
    fn printed_floats_read_back_exactly_and_are_shortest() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = f32::from_bits(state as u32);
            if !v.is_finite() || v == 0.0 {
                continue;
            }
            let mut out = String::new();
            write_float4(&mut out, v);
            assert_eq!(out.parse::<f32>().map(f32::to_bits), Ok(v.to_bits()), "{out}");
            let rust = format!("{v:e}");
            let rust_digits = rust.split('e').next().unwrap().chars().filter(char::is_ascii_digit);
            assert_eq!(shortest_digits(v).1.len(), rust_digits.count(), "{v:e} printed {out}");
        }
    }

    #[test]
    fn text_round_trips_exactly() {
        let mut x = 0.123_456_79f32;
        let mut vals = Vec::new();
        for i in 0..2000 {
            x = (x * 7.31 + i as f32 * 1e-3).fract() * 10f32.powi((i % 30) - 15);
            vals.push(if i % 3 == 0 { -x } else { x });
        }
        let text = format_text(&vals);
        let back = parse_text(&text, -1).unwrap();
        assert_eq!(back.len(), vals.len());
        for (a, b) in vals.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn binary_round_trip_and_errors() {
        let v = vec![1.0, -2.0, 3.25];
        let b = encode_binary(&v);
        assert_eq!(&b[..4], &[0, 3, 0, 0]);
        assert_eq!(&b[4..8], &1.0f32.to_be_bytes());
        let (back, used) = decode_binary(&b, -1).unwrap();
        assert_eq!((back, used), (v.clone(), 16));
        assert_eq!(decode_binary(&b, 2).unwrap_err().message, "expected 2 dimensions, not 3");
        let mut bad = b.clone();
        bad[3] = 1;
        assert_eq!(decode_binary(&bad, -1).unwrap_err().message, "expected unused to be 0, not 1");
        let mut zero = b.clone();
        zero[1] = 0;
        assert_eq!(
            decode_binary(&zero, -1).unwrap_err().message,
            "vector must have at least 1 dimension"
        );
        assert_eq!(decode_binary(&b[..10], -1).unwrap_err().state, SqlState::ProtocolViolation);
        let neg = [0xff, 0xff, 0, 0];
        assert_eq!(
            decode_binary(&neg, -1).unwrap_err().message,
            "vector must have at least 1 dimension"
        );
        let mut nan = encode_binary(&[1.0]);
        nan[4..8].copy_from_slice(&f32::NAN.to_be_bytes());
        assert_eq!(decode_binary(&nan, -1).unwrap_err().message, "NaN not allowed in vector");
    }

    #[test]
    fn typmods() {
        assert_eq!(typmod_in(&[3]).unwrap(), 3);
        assert_eq!(
            typmod_in(&[0]).unwrap_err().message,
            "dimensions for type vector must be at least 1"
        );
        assert_eq!(
            typmod_in(&[16001]).unwrap_err().message,
            "dimensions for type vector cannot exceed 16000"
        );
        assert_eq!(typmod_in(&[1, 2]).unwrap_err().message, "invalid type modifier");
    }

    #[test]
    fn arrays() {
        let ok = from_array_elements(vec![Some(1.0), Some(2.0)].into_iter(), 1, -1).unwrap();
        assert_eq!(ok, vec![1.0, 2.0]);
        let e = from_array_elements(vec![Some(1.0), None].into_iter(), 1, -1).unwrap_err();
        assert_eq!(
            (e.state, e.message.as_str()),
            (SqlState::NullValueNotAllowed, "array must not contain nulls")
        );
        assert_eq!(
            from_array_elements(vec![Some(1.0)].into_iter(), 2, -1).unwrap_err().message,
            "array must be 1-D"
        );
        assert_eq!(
            from_array_elements(vec![Some(1e300)].into_iter(), 1, -1).unwrap_err().message,
            "infinite value not allowed in vector"
        );
        assert_eq!(
            from_array_elements(vec![Some(1.0)].into_iter(), 1, 2).unwrap_err().message,
            "expected 2 dimensions, not 1"
        );
        assert_eq!(
            from_array_elements(Vec::<Option<f64>>::new().into_iter(), 1, -1).unwrap_err().message,
            "vector must have at least 1 dimension"
        );
    }

    #[test]
    fn arithmetic_and_ordering() {
        assert_eq!(add(&[1.0, 2.0], &[3.0, 4.0]).unwrap(), vec![4.0, 6.0]);
        assert_eq!(sub(&[1.0], &[3.0]).unwrap(), vec![-2.0]);
        assert_eq!(
            add(&[1.0], &[1.0, 2.0]).unwrap_err().message,
            "different vector dimensions 1 and 2"
        );
        assert_eq!(add(&[3e38], &[3e38]).unwrap_err().message, "value out of range: overflow");
        assert_eq!(mul(&[1e-30], &[1e-30]).unwrap_err().message, "value out of range: underflow");
        assert_eq!(concat(&[1.0], &[2.0]).unwrap(), vec![1.0, 2.0]);
        use std::cmp::Ordering::*;
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 3.0]), Less);
        assert_eq!(compare(&[1.0, 2.0], &[1.0]), Greater);
        assert_eq!(compare(&[1.0], &[1.0]), Equal);
    }

    #[test]
    fn binary_quantize_sets_high_bits_first() {
        assert_eq!(binary_quantize(&[1.0, 0.0, -1.0, 2.0]), vec![0b1001_0000]);
        let x: Vec<f32> = (0..9).map(|i| if i % 2 == 0 { 1.0 } else { -0.0 }).collect();
        assert_eq!(binary_quantize(&x), vec![0b1010_1010, 0b1000_0000]);
    }

    #[test]
    fn subvector_clamps_like_pgvector() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(subvector(&a, 1, 3).unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(subvector(&a, 3, 2).unwrap(), vec![3.0, 4.0]);
        assert_eq!(subvector(&a, -1, 3).unwrap(), vec![1.0]);
        assert_eq!(subvector(&a, 3, 9).unwrap(), vec![3.0, 4.0, 5.0]);
        assert!(subvector(&a, 6, 1).is_err());
        assert!(subvector(&a, 1, 0).is_err());
        assert_eq!(
            subvector(&a, i32::MAX, i32::MAX).unwrap_err().message,
            "vector must have at least 1 dimension"
        );
    }

    #[test]
    fn aggregates_combine_in_any_split() {
        let rows: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32, 1.0]).collect();
        let mut whole = Vec::new();
        for r in &rows {
            accum(&mut whole, r, "vector_accum", DenseType::Vector).unwrap();
        }
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for r in &rows[..3] {
            accum(&mut left, r, "vector_accum", DenseType::Vector).unwrap();
        }
        for r in &rows[3..] {
            accum(&mut right, r, "vector_accum", DenseType::Vector).unwrap();
        }
        assert_eq!(combine(&left, &right).unwrap(), whole);
        assert_eq!(avg_final(&whole).unwrap().unwrap(), vec![4.5, 1.0]);
        assert_eq!(avg_final(&[0.0]).unwrap(), None);
        let mut s = Vec::new();
        accum(&mut s, &[1.0], "vector_accum", DenseType::Vector).unwrap();
        assert_eq!(
            accum(&mut s, &[1.0, 2.0], "vector_accum", DenseType::Vector).unwrap_err().message,
            "expected 1 dimensions, not 2"
        );
        assert_eq!(l2_normalize(&[3.0, 4.0]).unwrap(), vec![0.6, 0.8]);
        assert_eq!(l2_normalize(&[0.0, 0.0]).unwrap(), vec![0.0, 0.0]);
    }
}
