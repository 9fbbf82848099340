//! V1 functions behind sql/vector.sql: I/O, casts, operators and aggregates of `vector`.
//!
//! The in-memory form is pgvector's varlena: 4-byte header, int16 dim, int16 unused, then
//! `dim` float4 values. Arguments are detoasted once and read in place as `&[f32]`; results
//! are palloc'd in the caller's memory context. All checks live in `codec`; this file only
//! moves bytes between Datums and slices.

use super::codec::{self, SqlState, VectorError};
use crate::fmgr::{arg, datum_int32, float8_datum, ok, pg_v1_fn, raise, return_null};
use pgrx::pg_sys;

/// Bytes before the first element: varlena header + dim + unused.
const VECTOR_HEADER: usize = 8;

/// Reads a vector Datum as a slice, in place when it is a plain 4-byte-header varlena (the
/// common case on the hot path of a scan), else through `pg_detoast_datum`, which also
/// unpacks short headers into an aligned copy. Calls into Postgres go through pgrx's
/// setjmp guard, which costs more than the distance itself for small vectors, so the fast
/// path avoids them.
///
/// # Safety
/// `d` must be a non-null datum of type `vector`.
pub unsafe fn datum_to_slice<'a>(d: pg_sys::Datum) -> &'a [f32] {
    // SAFETY: d points to a vector varlena per the caller. A 4B-uncompressed header means the
    // value is inline, int-aligned and complete; anything else is detoasted into a palloc'd,
    // 4B-header copy that lives for the current memory context.
    unsafe {
        let raw = d.cast_mut_ptr::<pg_sys::varlena>();
        let p =
            if pgrx::varlena::varatt_is_4b_u(raw) { raw } else { pg_sys::pg_detoast_datum(raw) };
        let total = pgrx::varlena::varsize_4b(p);
        let base = p as *const u8;
        let dim = std::ptr::read_unaligned(base.add(4) as *const i16).max(0) as usize;
        // Never trust the header beyond the bytes actually present.
        let avail = total.saturating_sub(VECTOR_HEADER) / 4;
        std::slice::from_raw_parts(base.add(VECTOR_HEADER) as *const f32, dim.min(avail))
    }
}

/// Argument `n` as a vector slice.
///
/// # Safety
/// `fcinfo` valid; argument `n` is a non-null vector.
#[inline]
pub unsafe fn vector_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> &'a [f32] {
    // SAFETY: forwarded caller contract.
    unsafe { datum_to_slice(arg(fcinfo, n)) }
}

/// Builds a palloc'd vector Datum from values already validated by `codec`. The value is
/// checked once more here, the one place every vector result passes: its header holds the
/// dimension count in 16 bits, and a value outside 1..=16000 dimensions or with a NaN or
/// infinity could not be dumped and restored.
pub fn slice_to_datum(x: &[f32]) -> pg_sys::Datum {
    if let Err(e) = codec::check_vector(x) {
        raise(e);
    }
    let size = VECTOR_HEADER + 4 * x.len();
    // SAFETY: palloc0 returns `size` writable, maxaligned bytes (or ERRORs); we write the
    // header, dim, a zero unused field and the values inside that range.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::varlena::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::write(p.add(4) as *mut i16, x.len() as i16);
        std::ptr::copy_nonoverlapping(x.as_ptr(), p.add(VECTOR_HEADER) as *mut f32, x.len());
        pg_sys::Datum::from(p as usize)
    }
}

/// Raises pgvector's dimension-mismatch error unless both vectors have the same length.
pub fn same_dims(a: &[f32], b: &[f32]) {
    if a.len() != b.len() {
        raise(codec::dimension_mismatch(a.len(), b.len()));
    }
}

/// A type input function's cstring argument; `type_name` words the error for invalid UTF-8.
pub(crate) fn cstr_arg<'a>(d: pg_sys::Datum, type_name: &str) -> &'a str {
    // SAFETY: type input functions receive a NUL-terminated cstring.
    let c = unsafe { std::ffi::CStr::from_ptr(d.cast_mut_ptr::<std::ffi::c_char>()) };
    match c.to_str() {
        Ok(s) => s,
        Err(_) => raise(VectorError::new(
            SqlState::InvalidTextRepresentation,
            format!("invalid input syntax for type {type_name}: input is not valid UTF-8"),
        )),
    }
}

pub(crate) fn cstring_datum(s: &str) -> pg_sys::Datum {
    // SAFETY: palloc returns len+1 writable bytes; we copy the string and a NUL terminator.
    unsafe {
        let p = pg_sys::palloc(s.len() + 1) as *mut u8;
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        *p.add(s.len()) = 0;
        pg_sys::Datum::from(p as usize)
    }
}

// ---- I/O -------------------------------------------------------------------------------

pg_v1_fn!(vector_in, pg_finfo_vector_in, |fcinfo| {
    // SAFETY: vector_in(cstring, oid, int4) is STRICT.
    let (lit, typmod) =
        unsafe { (cstr_arg(arg(fcinfo, 0), "vector"), datum_int32(arg(fcinfo, 2))) };
    slice_to_datum(&ok(codec::parse_text(lit, typmod)))
});

pg_v1_fn!(vector_out, pg_finfo_vector_out, |fcinfo| {
    // SAFETY: vector_out(vector) is STRICT.
    let x = unsafe { vector_arg(fcinfo, 0) };
    cstring_datum(&codec::format_text(x))
});

pg_v1_fn!(vector_typmod_in, pg_finfo_vector_typmod_in, |fcinfo| {
    // SAFETY: typmod_in(cstring[]) is STRICT: argument 0 is the cstring[].
    let mods = unsafe { crate::fmgr::typmod_array(arg(fcinfo, 0)) };
    pg_sys::Datum::from(ok(codec::typmod_in(&mods)))
});

pg_v1_fn!(vector_recv, pg_finfo_vector_recv, |fcinfo| {
    // SAFETY: vector_recv(internal, oid, int4) gets a StringInfo at the value.
    let x = unsafe { crate::fmgr::recv_with(fcinfo, codec::decode_binary) };
    slice_to_datum(&x)
});

pg_v1_fn!(vector_send, pg_finfo_vector_send, |fcinfo| {
    // SAFETY: vector_send(vector) is STRICT.
    let x = unsafe { vector_arg(fcinfo, 0) };
    let bytes = codec::encode_binary(x);
    pg_sys::Datum::from(pgrx::varlena::rust_byte_slice_to_bytea(&bytes).into_pg() as usize)
});

// ---- casts -----------------------------------------------------------------------------

pg_v1_fn!(vector, pg_finfo_vector, |fcinfo| {
    // SAFETY: vector(vector, int4, bool) is STRICT: the length-coercion cast.
    let (x, typmod) = unsafe { (vector_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    ok(codec::check_expected_dim(typmod, x.len()));
    // SAFETY: returning our own (unchanged) argument is allowed for varlena results.
    unsafe { arg(fcinfo, 0) }
});

/// Deconstructs a 1-D array into (elements, nulls) with its element type's storage info.
///
/// # Safety
/// `d` must be an array datum.
pub(crate) unsafe fn deconstruct(
    d: pg_sys::Datum,
) -> (i32, pg_sys::Oid, Vec<pg_sys::Datum>, Vec<bool>) {
    // SAFETY: d is an array; deconstruct_array palloc's n datums and n null flags.
    unsafe {
        let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let ndim = (*arr).ndim;
        let elemtype = (*arr).elemtype;
        let (mut typlen, mut typbyval, mut typalign) = (0i16, false, 0 as std::ffi::c_char);
        pg_sys::get_typlenbyvalalign(elemtype, &mut typlen, &mut typbyval, &mut typalign);
        let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n: std::ffi::c_int = 0;
        pg_sys::deconstruct_array(
            arr,
            elemtype,
            typlen as i32,
            typbyval,
            typalign,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        let n = n.max(0) as usize;
        let e = if n == 0 { Vec::new() } else { std::slice::from_raw_parts(elems, n).to_vec() };
        let nl = if n == 0 { Vec::new() } else { std::slice::from_raw_parts(nulls, n).to_vec() };
        (ndim, elemtype, e, nl)
    }
}

/// Converts the elements of an int4[], float8[], float4[] or numeric[] to f64 (numeric through
/// float4, as pgvector converts it); any other element type is pgvector's "unsupported array
/// type". NULL elements must have been refused already.
pub(crate) fn array_elements_as_f64(elemtype: pg_sys::Oid, elems: &[pg_sys::Datum]) -> Vec<f64> {
    let convert = |d: pg_sys::Datum| -> f64 {
        match elemtype {
            pg_sys::INT4OID => datum_int32(d) as f64,
            pg_sys::FLOAT8OID => crate::fmgr::datum_float8(d),
            pg_sys::FLOAT4OID => crate::fmgr::datum_float4(d) as f64,
            pg_sys::NUMERICOID => {
                // SAFETY: numeric_float4 is a builtin taking one numeric datum; it ERRORs
                // cleanly on overflow. float4 -> f64 -> f32 is lossless.
                let f = unsafe {
                    pg_sys::OidFunctionCall1Coll(
                        pg_sys::Oid::from(pg_sys::F_FLOAT4_NUMERIC),
                        pg_sys::InvalidOid,
                        d,
                    )
                };
                crate::fmgr::datum_float4(f) as f64
            }
            _ => raise(VectorError::new(SqlState::DataException, "unsupported array type")),
        }
    };
    elems.iter().map(|&d| convert(d)).collect()
}

pg_v1_fn!(array_to_vector, pg_finfo_array_to_vector, |fcinfo| {
    // SAFETY: array_to_vector(anyarray-like, int4, bool) is STRICT.
    let (ndim, elemtype, elems, nulls) = unsafe { deconstruct(arg(fcinfo, 0)) };
    // SAFETY: argument 1 is the int4 typmod of the same STRICT call.
    let typmod = datum_int32(unsafe { arg(fcinfo, 1) });
    let has_nulls = nulls.iter().any(|&n| n);
    ok(codec::check_array_shape(codec::DenseType::Vector, ndim, has_nulls, elems.len(), typmod));
    let values = array_elements_as_f64(elemtype, &elems);
    let x = ok(codec::from_array_elements(values.into_iter().map(Some), ndim, typmod));
    slice_to_datum(&x)
});

/// Builds a 1-D array of float4 (len 4, 'i' aligned) or float8 (len 8, 'd' aligned) datums,
/// both pass-by-value on 64-bit builds.
pub(crate) fn build_array(mut datums: Vec<pg_sys::Datum>, elemtype: pg_sys::Oid) -> pg_sys::Datum {
    let (typlen, align) = if elemtype == pg_sys::FLOAT8OID { (8, b'd') } else { (4, b'i') };
    // SAFETY: construct_array copies `n` by-value datums described by typlen/byval/align.
    unsafe {
        let arr = pg_sys::construct_array(
            datums.as_mut_ptr(),
            datums.len() as i32,
            elemtype,
            typlen,
            true,
            align as std::ffi::c_char,
        );
        pg_sys::Datum::from(arr as usize)
    }
}

pg_v1_fn!(vector_to_float4, pg_finfo_vector_to_float4, |fcinfo| {
    // SAFETY: vector_to_float4(vector, int4, bool) is STRICT.
    let x = unsafe { vector_arg(fcinfo, 0) };
    build_array(x.iter().map(|v| pg_sys::Datum::from(v.to_bits())).collect(), pg_sys::FLOAT4OID)
});

// ---- distances and functions -----------------------------------------------------------

pg_v1_fn!(vector_dims, pg_finfo_vector_dims, |fcinfo| {
    // SAFETY: STRICT (vector).
    let x = unsafe { vector_arg(fcinfo, 0) };
    pg_sys::Datum::from(x.len() as i32)
});

pg_v1_fn!(vector_norm, pg_finfo_vector_norm, |fcinfo| {
    // SAFETY: STRICT (vector).
    let x = unsafe { vector_arg(fcinfo, 0) };
    float8_datum(codec::norm(x))
});

pg_v1_fn!(l2_normalize, pg_finfo_l2_normalize, |fcinfo| {
    // SAFETY: STRICT (vector).
    let x = unsafe { vector_arg(fcinfo, 0) };
    slice_to_datum(&ok(codec::l2_normalize(x)))
});

pg_v1_fn!(binary_quantize, pg_finfo_binary_quantize, |fcinfo| {
    // SAFETY: STRICT (vector).
    let x = unsafe { vector_arg(fcinfo, 0) };
    crate::fmgr::bit_datum(x.len(), &codec::binary_quantize(x))
});

pg_v1_fn!(subvector, pg_finfo_subvector, |fcinfo| {
    // SAFETY: STRICT (vector, int4, int4).
    let (x, start, count) = unsafe {
        (vector_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1)), datum_int32(arg(fcinfo, 2)))
    };
    slice_to_datum(&ok(codec::subvector(x, start, count)))
});

macro_rules! binary_vector_op {
    ($name:ident, $finfo:ident, $op:path) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (vector, vector).
            let (a, b) = unsafe { (vector_arg(fcinfo, 0), vector_arg(fcinfo, 1)) };
            slice_to_datum(&ok($op(a, b)))
        });
    };
}

binary_vector_op!(vector_add, pg_finfo_vector_add, codec::add);
binary_vector_op!(vector_sub, pg_finfo_vector_sub, codec::sub);
binary_vector_op!(vector_mul, pg_finfo_vector_mul, codec::mul);
binary_vector_op!(vector_concat, pg_finfo_vector_concat, codec::concat);

// ---- btree support ---------------------------------------------------------------------

macro_rules! comparison {
    ($name:ident, $finfo:ident, $pred:expr) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (vector, vector).
            let (a, b) = unsafe { (vector_arg(fcinfo, 0), vector_arg(fcinfo, 1)) };
            pg_sys::Datum::from($pred(codec::compare(a, b)))
        });
    };
}

comparison!(vector_lt, pg_finfo_vector_lt, |o: std::cmp::Ordering| o.is_lt());
comparison!(vector_le, pg_finfo_vector_le, |o: std::cmp::Ordering| o.is_le());
comparison!(vector_eq, pg_finfo_vector_eq, |o: std::cmp::Ordering| o.is_eq());
comparison!(vector_ne, pg_finfo_vector_ne, |o: std::cmp::Ordering| o.is_ne());
comparison!(vector_ge, pg_finfo_vector_ge, |o: std::cmp::Ordering| o.is_ge());
comparison!(vector_gt, pg_finfo_vector_gt, |o: std::cmp::Ordering| o.is_gt());
comparison!(vector_cmp, pg_finfo_vector_cmp, |o: std::cmp::Ordering| o as i32);

// ---- aggregates ------------------------------------------------------------------------

/// Reads a float8[] aggregate state; `caller` words pgvector's error for any other shape.
///
/// # Safety
/// `d` must be an array datum.
pub(crate) unsafe fn float8_state(d: pg_sys::Datum, caller: &str) -> Vec<f64> {
    // SAFETY: forwarded; elements of a float8[] are by-value float8 datums.
    let (ndim, elemtype, elems, nulls) = unsafe { deconstruct(d) };
    if ndim != 1 || elemtype != pg_sys::FLOAT8OID || nulls.iter().any(|&n| n) {
        raise(VectorError::new(SqlState::InternalError, format!("{caller}: expected state array")));
    }
    elems.into_iter().map(crate::fmgr::datum_float8).collect()
}

pub(crate) fn float8_array(v: &[f64]) -> pg_sys::Datum {
    build_array(v.iter().map(|x| float8_datum(*x)).collect(), pg_sys::FLOAT8OID)
}

pg_v1_fn!(vector_accum, pg_finfo_vector_accum, |fcinfo| {
    // SAFETY: vector_accum(float8[], vector) is STRICT.
    let (mut state, x) =
        unsafe { (float8_state(arg(fcinfo, 0), "vector_accum"), vector_arg(fcinfo, 1)) };
    ok(codec::accum(&mut state, x, "vector_accum", codec::DenseType::Vector));
    float8_array(&state)
});

pg_v1_fn!(vector_combine, pg_finfo_vector_combine, |fcinfo| {
    // SAFETY: vector_combine(float8[], float8[]) is STRICT.
    let (a, b) = unsafe {
        (
            float8_state(arg(fcinfo, 0), "vector_combine"),
            float8_state(arg(fcinfo, 1), "vector_combine"),
        )
    };
    float8_array(&ok(codec::combine(&a, &b)))
});

pg_v1_fn!(vector_avg, pg_finfo_vector_avg, |fcinfo| {
    // SAFETY: vector_avg(float8[]) is STRICT.
    let state = unsafe { float8_state(arg(fcinfo, 0), "vector_avg") };
    match ok(codec::avg_final(&state)) {
        Some(x) => slice_to_datum(&x),
        // SAFETY: fcinfo is valid.
        None => unsafe { return_null(fcinfo) },
    }
});
