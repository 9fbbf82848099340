//! V1 functions behind sql/sparsevec.sql: I/O, casts, distances and btree support of
//! `sparsevec`.
//!
//! The in-memory form is pgvector's varlena: 4-byte header, int32 dim, int32 nnz, int32
//! unused (0), nnz int32 0-based indices, then nnz float4 values. Arguments are detoasted
//! once and read in place; results are palloc'd in the caller's memory context. All checks
//! live in `codec`; this file only moves bytes between Datums and slices.

use super::codec::{self, SparseRef, SparseVec};
use crate::fmgr::{arg, datum_int32, float8_datum, ok, pg_v1_fn, raise};
use crate::vector::codec::{SqlState, VectorError};
use crate::vector::sql::{cstring_datum, deconstruct, slice_to_datum, vector_arg};
use pgrx::pg_sys;

/// Bytes before the first index: varlena header + dim + nnz + unused.
const SPARSEVEC_HEADER: usize = 16;

/// Reads a sparsevec Datum in place when it is a plain 4-byte-header varlena, else through
/// `pg_detoast_datum` (which also unpacks short headers into an aligned copy).
///
/// # Safety
/// `d` must be a non-null datum of type `sparsevec`.
pub unsafe fn datum_to_sparse<'a>(d: pg_sys::Datum) -> SparseRef<'a> {
    // SAFETY: d points to a sparsevec varlena per the caller. A 4B-uncompressed header means
    // the value is inline, int-aligned and complete; anything else is detoasted into a
    // palloc'd, 4B-header copy that lives for the current memory context. The element
    // count is checked against the bytes present before any slice is formed.
    unsafe {
        let raw = d.cast_mut_ptr::<pg_sys::varlena>();
        let p =
            if pgrx::varlena::varatt_is_4b_u(raw) { raw } else { pg_sys::pg_detoast_datum(raw) };
        let total = pgrx::varlena::varsize_4b(p);
        let base = p as *const u8;
        let dim = std::ptr::read_unaligned(base.add(4) as *const i32);
        let nnz = std::ptr::read_unaligned(base.add(8) as *const i32);
        let avail = total.saturating_sub(SPARSEVEC_HEADER) / 8;
        if nnz < 0 || nnz as usize > avail {
            raise(VectorError::new(SqlState::InternalError, "invalid sparsevec"));
        }
        let nnz = nnz as usize;
        let indices = base.add(SPARSEVEC_HEADER) as *const i32;
        let values = base.add(SPARSEVEC_HEADER + 4 * nnz) as *const f32;
        SparseRef {
            dim,
            indices: std::slice::from_raw_parts(indices, nnz),
            values: std::slice::from_raw_parts(values, nnz),
        }
    }
}

/// Argument `n` as a sparse vector.
///
/// # Safety
/// `fcinfo` valid; argument `n` is a non-null sparsevec.
#[inline]
pub unsafe fn sparse_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> SparseRef<'a> {
    // SAFETY: forwarded caller contract.
    unsafe { datum_to_sparse(arg(fcinfo, n)) }
}

/// Builds a palloc'd sparsevec Datum. The whole value is checked once more here, the one
/// place every sparsevec result passes, so no SQL path can store one that pgvector (or a
/// dump and restore) would refuse.
pub fn sparse_to_datum(s: &SparseVec) -> pg_sys::Datum {
    ok(codec::check_sparse(s.as_ref()));
    let nnz = s.indices.len();
    let size = SPARSEVEC_HEADER + 8 * nnz;
    // SAFETY: palloc0 returns `size` writable, maxaligned bytes (or ERRORs); we write the
    // header, dim, nnz, a zero unused field, then the indices and values inside that range.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::varlena::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::write(p.add(4) as *mut i32, s.dim);
        std::ptr::write(p.add(8) as *mut i32, nnz as i32);
        let indices = p.add(SPARSEVEC_HEADER) as *mut i32;
        std::ptr::copy_nonoverlapping(s.indices.as_ptr(), indices, nnz);
        let values = p.add(SPARSEVEC_HEADER + 4 * nnz) as *mut f32;
        std::ptr::copy_nonoverlapping(s.values.as_ptr(), values, nnz);
        pg_sys::Datum::from(p as usize)
    }
}

// ---- I/O -------------------------------------------------------------------------------

pg_v1_fn!(sparsevec_in, pg_finfo_sparsevec_in, |fcinfo| {
    // SAFETY: sparsevec_in(cstring, oid, int4) is STRICT; a cstring is NUL-terminated.
    let (lit, typmod) = unsafe {
        let c = std::ffi::CStr::from_ptr(arg(fcinfo, 0).cast_mut_ptr::<std::ffi::c_char>());
        (c.to_bytes(), datum_int32(arg(fcinfo, 2)))
    };
    sparse_to_datum(&ok(codec::parse_text(lit, typmod)))
});

pg_v1_fn!(sparsevec_out, pg_finfo_sparsevec_out, |fcinfo| {
    // SAFETY: sparsevec_out(sparsevec) is STRICT.
    let s = unsafe { sparse_arg(fcinfo, 0) };
    cstring_datum(&codec::format_text(s))
});

pg_v1_fn!(sparsevec_typmod_in, pg_finfo_sparsevec_typmod_in, |fcinfo| {
    // SAFETY: typmod_in(cstring[]) is STRICT: argument 0 is the cstring[].
    let mods = unsafe { crate::fmgr::typmod_array(arg(fcinfo, 0)) };
    pg_sys::Datum::from(ok(codec::typmod_in(&mods)))
});

pg_v1_fn!(sparsevec_recv, pg_finfo_sparsevec_recv, |fcinfo| {
    // SAFETY: sparsevec_recv(internal, oid, int4) gets a StringInfo at the value.
    let s = unsafe { crate::fmgr::recv_with(fcinfo, codec::decode_binary) };
    sparse_to_datum(&s)
});

pg_v1_fn!(sparsevec_send, pg_finfo_sparsevec_send, |fcinfo| {
    // SAFETY: sparsevec_send(sparsevec) is STRICT.
    let s = unsafe { sparse_arg(fcinfo, 0) };
    let bytes = codec::encode_binary(s);
    pg_sys::Datum::from(pgrx::varlena::rust_byte_slice_to_bytea(&bytes).into_pg() as usize)
});

// ---- casts -----------------------------------------------------------------------------

pg_v1_fn!(sparsevec, pg_finfo_sparsevec, |fcinfo| {
    // SAFETY: sparsevec(sparsevec, int4, bool) is STRICT: the length-coercion cast.
    let (s, typmod) = unsafe { (sparse_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    ok(codec::check_typmod(s, typmod));
    // SAFETY: returning our own (unchanged) argument is allowed for varlena results.
    unsafe { arg(fcinfo, 0) }
});

pg_v1_fn!(vector_to_sparsevec, pg_finfo_vector_to_sparsevec, |fcinfo| {
    // SAFETY: vector_to_sparsevec(vector, int4, bool) is STRICT.
    let (x, typmod) = unsafe { (vector_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    sparse_to_datum(&ok(codec::from_dense(x, typmod)))
});

pg_v1_fn!(sparsevec_to_vector, pg_finfo_sparsevec_to_vector, |fcinfo| {
    // SAFETY: sparsevec_to_vector(sparsevec, int4, bool) is STRICT.
    let (s, typmod) = unsafe { (sparse_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    slice_to_datum(&ok(codec::to_dense(s, typmod)))
});

pg_v1_fn!(array_to_sparsevec, pg_finfo_array_to_sparsevec, |fcinfo| {
    // SAFETY: array_to_sparsevec(anyarray-like, int4, bool) is STRICT.
    let (ndim, elemtype, elems, nulls) = unsafe { deconstruct(arg(fcinfo, 0)) };
    // SAFETY: argument 1 is the int4 typmod of the same STRICT call.
    let typmod = unsafe { datum_int32(arg(fcinfo, 1)) };
    // pgvector checks shape, NULLs and lengths before converting any element.
    ok(codec::check_array_shape(ndim, nulls.iter().any(|&n| n), elems.len(), typmod));
    let convert = |d: pg_sys::Datum| -> f32 {
        match elemtype {
            pg_sys::INT4OID => datum_int32(d) as f32,
            pg_sys::FLOAT8OID => crate::fmgr::datum_float8(d) as f32,
            pg_sys::FLOAT4OID => crate::fmgr::datum_float4(d),
            pg_sys::NUMERICOID => {
                // SAFETY: numeric_float4 is a builtin taking one numeric datum; it ERRORs
                // cleanly on overflow.
                let f = unsafe {
                    pg_sys::OidFunctionCall1Coll(
                        pg_sys::Oid::from(pg_sys::F_FLOAT4_NUMERIC),
                        pg_sys::InvalidOid,
                        d,
                    )
                };
                crate::fmgr::datum_float4(f)
            }
            _ => raise(VectorError::new(SqlState::DataException, "unsupported array type")),
        }
    };
    let values: Vec<f32> = elems.iter().map(|&d| convert(d)).collect();
    sparse_to_datum(&ok(codec::from_array_values(&values)))
});

// ---- distances and functions -----------------------------------------------------------

macro_rules! sparse_distance {
    ($name:ident, $finfo:ident, $kernel:expr) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (sparsevec, sparsevec).
            let (a, b) = unsafe { (sparse_arg(fcinfo, 0), sparse_arg(fcinfo, 1)) };
            ok(codec::check_same_dims(a, b));
            float8_datum($kernel(a, b))
        });
    };
}

sparse_distance!(sparsevec_l2_distance, pg_finfo_sparsevec_l2_distance, |a, b| {
    (codec::l2_squared(a, b) as f64).sqrt()
});
sparse_distance!(sparsevec_l2_squared_distance, pg_finfo_sparsevec_l2_squared_distance, |a, b| {
    codec::l2_squared(a, b) as f64
});
sparse_distance!(sparsevec_inner_product, pg_finfo_sparsevec_inner_product, |a, b| {
    codec::inner_product(a, b) as f64
});
sparse_distance!(
    sparsevec_negative_inner_product,
    pg_finfo_sparsevec_negative_inner_product,
    |a, b| -(codec::inner_product(a, b) as f64)
);
sparse_distance!(sparsevec_cosine_distance, pg_finfo_sparsevec_cosine_distance, codec::cosine);
sparse_distance!(sparsevec_l1_distance, pg_finfo_sparsevec_l1_distance, |a, b| {
    codec::l1(a, b) as f64
});

pg_v1_fn!(sparsevec_l2_norm, pg_finfo_sparsevec_l2_norm, |fcinfo| {
    // SAFETY: STRICT (sparsevec).
    let s = unsafe { sparse_arg(fcinfo, 0) };
    float8_datum(codec::norm(s))
});

pg_v1_fn!(sparsevec_l2_normalize, pg_finfo_sparsevec_l2_normalize, |fcinfo| {
    // SAFETY: STRICT (sparsevec).
    let s = unsafe { sparse_arg(fcinfo, 0) };
    sparse_to_datum(&ok(codec::l2_normalize(s)))
});

// ---- btree support ---------------------------------------------------------------------

macro_rules! comparison {
    ($name:ident, $finfo:ident, $pred:expr) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (sparsevec, sparsevec).
            let (a, b) = unsafe { (sparse_arg(fcinfo, 0), sparse_arg(fcinfo, 1)) };
            pg_sys::Datum::from($pred(codec::compare(a, b)))
        });
    };
}

comparison!(sparsevec_lt, pg_finfo_sparsevec_lt, |o: std::cmp::Ordering| o.is_lt());
comparison!(sparsevec_le, pg_finfo_sparsevec_le, |o: std::cmp::Ordering| o.is_le());
comparison!(sparsevec_eq, pg_finfo_sparsevec_eq, |o: std::cmp::Ordering| o.is_eq());
comparison!(sparsevec_ne, pg_finfo_sparsevec_ne, |o: std::cmp::Ordering| o.is_ne());
comparison!(sparsevec_ge, pg_finfo_sparsevec_ge, |o: std::cmp::Ordering| o.is_ge());
comparison!(sparsevec_gt, pg_finfo_sparsevec_gt, |o: std::cmp::Ordering| o.is_gt());
comparison!(sparsevec_cmp, pg_finfo_sparsevec_cmp, |o: std::cmp::Ordering| o as i32);

// ---- halfvec casts (declared in sql/sparsevec_halfvec.sql once the halfvec type exists) ---

/// Bytes before the first element of a halfvec: varlena header + int16 dim + int16 unused.
const HALFVEC_HEADER: usize = 8;

pg_v1_fn!(halfvec_to_sparsevec, pg_finfo_halfvec_to_sparsevec, |fcinfo| {
    // SAFETY: halfvec_to_sparsevec(halfvec, int4, bool) is STRICT; a halfvec is pgvector's
    // varlena (header, int16 dim, int16 unused, dim binary16 values), detoasted into a
    // 4B-header copy unless it already is one, and never read beyond its stated size.
    let (x, typmod) = unsafe {
        let raw = arg(fcinfo, 0).cast_mut_ptr::<pg_sys::varlena>();
        let p =
            if pgrx::varlena::varatt_is_4b_u(raw) { raw } else { pg_sys::pg_detoast_datum(raw) };
        let total = pgrx::varlena::varsize_4b(p);
        let base = p as *const u8;
        let dim = std::ptr::read_unaligned(base.add(4) as *const i16).max(0) as usize;
        let avail = total.saturating_sub(HALFVEC_HEADER) / 2;
        let x = std::slice::from_raw_parts(base.add(HALFVEC_HEADER) as *const u16, dim.min(avail));
        (x, datum_int32(arg(fcinfo, 1)))
    };
    sparse_to_datum(&ok(codec::from_half(x, typmod)))
});

pg_v1_fn!(sparsevec_to_halfvec, pg_finfo_sparsevec_to_halfvec, |fcinfo| {
    // SAFETY: sparsevec_to_halfvec(sparsevec, int4, bool) is STRICT.
    let (s, typmod) = unsafe { (sparse_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    let h = ok(codec::to_half(s, typmod));
    let size = HALFVEC_HEADER + 2 * h.len();
    // SAFETY: palloc0 returns `size` writable bytes (or ERRORs); we write the header, the
    // dimension count (at most 16000, checked by to_half), a zero unused field and values.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::varlena::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::write(p.add(4) as *mut i16, h.len() as i16);
        std::ptr::copy_nonoverlapping(h.as_ptr(), p.add(HALFVEC_HEADER) as *mut u16, h.len());
        pg_sys::Datum::from(p as usize)
    }
});
