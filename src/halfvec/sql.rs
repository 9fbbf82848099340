//! V1 functions behind sql/halfvec.sql: I/O, casts, operators, distances and aggregates of
//! `halfvec`.
//!
//! The in-memory form is pgvector's varlena: 4-byte header, int16 dim, int16 unused, then
//! `dim` half floats (their 16-bit patterns). Arguments are detoasted once and read in
//! place as `&[u16]`; results are palloc'd in the caller's memory context. All checks live
//! in `codec`; this file only moves bytes between Datums and slices.

use super::codec;
use crate::distance::half as kernels;
use crate::fmgr::{arg, bit_datum, datum_int32, float8_datum, ok, pg_v1_fn, raise, return_null};
use crate::vector::codec::{self as vcodec, DenseType};
use crate::vector::sql::{
    array_elements_as_f64, build_array, cstr_arg, cstring_datum, deconstruct, float8_array,
    float8_state, slice_to_datum as vector_datum, vector_arg,
};
use pgrx::pg_sys;

/// Bytes before the first element: varlena header + dim + unused.
const HALFVEC_HEADER: usize = 8;

/// Reads a halfvec Datum as a slice, in place when it is a plain 4-byte-header varlena,
/// else through `pg_detoast_datum` (which also unpacks short headers into an aligned copy).
///
/// # Safety
/// `d` must be a non-null datum of type `halfvec`.
pub unsafe fn datum_to_slice<'a>(d: pg_sys::Datum) -> &'a [u16] {
    // SAFETY: d points to a halfvec varlena per the caller. A 4B-uncompressed header means
    // the value is inline, int-aligned and complete; anything else is detoasted into a
    // palloc'd, 4B-header copy that lives for the current memory context.
    unsafe {
        let raw = d.cast_mut_ptr::<pg_sys::varlena>();
        let p =
            if pgrx::varlena::varatt_is_4b_u(raw) { raw } else { pg_sys::pg_detoast_datum(raw) };
        let total = pgrx::varlena::varsize_4b(p);
        let base = p as *const u8;
        let dim = std::ptr::read_unaligned(base.add(4) as *const i16).max(0) as usize;
        // Never trust the header beyond the bytes actually present.
        let avail = total.saturating_sub(HALFVEC_HEADER) / 2;
        std::slice::from_raw_parts(base.add(HALFVEC_HEADER) as *const u16, dim.min(avail))
    }
}

/// Argument `n` as a halfvec slice.
///
/// # Safety
/// `fcinfo` valid; argument `n` is a non-null halfvec.
#[inline]
pub unsafe fn halfvec_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> &'a [u16] {
    // SAFETY: forwarded caller contract.
    unsafe { datum_to_slice(arg(fcinfo, n)) }
}

/// Builds a palloc'd halfvec Datum. Every halfvec result passes here, so the value is
/// checked once more: 1..=16000 dimensions and no NaN or infinity, which is what dump and
/// restore need to read it back.
pub fn slice_to_datum(x: &[u16]) -> pg_sys::Datum {
    if let Err(e) = codec::check_halfvec(x) {
        raise(e);
    }
    let size = HALFVEC_HEADER + 2 * x.len();
    // SAFETY: palloc0 returns `size` writable, maxaligned bytes (or ERRORs); we write the
    // header, dim, a zero unused field and the values inside that range.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::varlena::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::write(p.add(4) as *mut i16, x.len() as i16);
        std::ptr::copy_nonoverlapping(x.as_ptr(), p.add(HALFVEC_HEADER) as *mut u16, x.len());
        pg_sys::Datum::from(p as usize)
    }
}

fn same_dims(a: &[u16], b: &[u16]) {
    if a.len() != b.len() {
        raise(vcodec::dimension_mismatch_of(DenseType::Halfvec, a.len(), b.len()));
    }
}

// ---- I/O -------------------------------------------------------------------------------

pg_v1_fn!(halfvec_in, pg_finfo_halfvec_in, |fcinfo| {
    // SAFETY: halfvec_in(cstring, oid, int4) is STRICT.
    let (lit, typmod) =
        unsafe { (cstr_arg(arg(fcinfo, 0), "halfvec"), datum_int32(arg(fcinfo, 2))) };
    slice_to_datum(&ok(codec::parse_text(lit, typmod)))
});

pg_v1_fn!(halfvec_out, pg_finfo_halfvec_out, |fcinfo| {
    // SAFETY: halfvec_out(halfvec) is STRICT.
    let x = unsafe { halfvec_arg(fcinfo, 0) };
    cstring_datum(&codec::format_text(x))
});

pg_v1_fn!(halfvec_typmod_in, pg_finfo_halfvec_typmod_in, |fcinfo| {
    // SAFETY: typmod_in(cstring[]) is STRICT: argument 0 is the cstring[].
    let mods = unsafe { crate::fmgr::typmod_array(arg(fcinfo, 0)) };
    pg_sys::Datum::from(ok(codec::typmod_in(&mods)))
});

pg_v1_fn!(halfvec_recv, pg_finfo_halfvec_recv, |fcinfo| {
    // SAFETY: halfvec_recv(internal, oid, int4) gets a StringInfo at the value.
    let x = unsafe { crate::fmgr::recv_with(fcinfo, codec::decode_binary) };
    slice_to_datum(&x)
});

pg_v1_fn!(halfvec_send, pg_finfo_halfvec_send, |fcinfo| {
    // SAFETY: halfvec_send(halfvec) is STRICT.
    let x = unsafe { halfvec_arg(fcinfo, 0) };
    let bytes = codec::encode_binary(x);
    pg_sys::Datum::from(pgrx::varlena::rust_byte_slice_to_bytea(&bytes).into_pg() as usize)
});

// ---- casts -----------------------------------------------------------------------------

pg_v1_fn!(halfvec, pg_finfo_halfvec, |fcinfo| {
    // SAFETY: halfvec(halfvec, int4, bool) is STRICT: the length-coercion cast.
    let (x, typmod) = unsafe { (halfvec_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    ok(vcodec::check_expected_dim(typmod, x.len()));
    // SAFETY: returning our own (unchanged) argument is allowed for varlena results.
    unsafe { arg(fcinfo, 0) }
});

pg_v1_fn!(array_to_halfvec, pg_finfo_array_to_halfvec, |fcinfo| {
    // SAFETY: array_to_halfvec(array, int4, bool) is STRICT.
    let (ndim, elemtype, elems, nulls) = unsafe { deconstruct(arg(fcinfo, 0)) };
    // SAFETY: argument 1 is the int4 typmod of the same STRICT call.
    let typmod = datum_int32(unsafe { arg(fcinfo, 1) });
    let has_nulls = nulls.iter().any(|&n| n);
    ok(vcodec::check_array_shape(DenseType::Halfvec, ndim, has_nulls, elems.len(), typmod));
    slice_to_datum(&ok(codec::from_f64_elements(&array_elements_as_f64(elemtype, &elems))))
});

pg_v1_fn!(halfvec_to_float4, pg_finfo_halfvec_to_float4, |fcinfo| {
    // SAFETY: halfvec_to_float4(halfvec, int4, bool) is STRICT.
    let x = unsafe { halfvec_arg(fcinfo, 0) };
    let datums = codec::to_f32(x).into_iter().map(|v| pg_sys::Datum::from(v.to_bits())).collect();
    build_array(datums, pg_sys::FLOAT4OID)
});

pg_v1_fn!(halfvec_to_vector, pg_finfo_halfvec_to_vector, |fcinfo| {
    // SAFETY: halfvec_to_vector(halfvec, int4, bool) is STRICT.
    let (x, typmod) = unsafe { (halfvec_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    ok(vcodec::check_dim(x.len() as i64));
    ok(vcodec::check_expected_dim(typmod, x.len()));
    vector_datum(&codec::to_f32(x))
});

pg_v1_fn!(vector_to_halfvec, pg_finfo_vector_to_halfvec, |fcinfo| {
    // SAFETY: vector_to_halfvec(vector, int4, bool) is STRICT.
    let (x, typmod) = unsafe { (vector_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1))) };
    slice_to_datum(&ok(codec::from_vector(x, typmod)))
});

// ---- distances -------------------------------------------------------------------------

macro_rules! halfvec_distance {
    ($name:ident, $finfo:ident, $kernel:expr) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (halfvec, halfvec).
            let (a, b) = unsafe { (halfvec_arg(fcinfo, 0), halfvec_arg(fcinfo, 1)) };
            same_dims(a, b);
            float8_datum($kernel(a, b))
        });
    };
}

halfvec_distance!(halfvec_l2_distance, pg_finfo_halfvec_l2_distance, kernels::l2);
halfvec_distance!(
    halfvec_l2_squared_distance,
    pg_finfo_halfvec_l2_squared_distance,
    kernels::l2_squared
);
halfvec_distance!(halfvec_inner_product, pg_finfo_halfvec_inner_product, kernels::dot);
halfvec_distance!(
    halfvec_negative_inner_product,
    pg_finfo_halfvec_negative_inner_product,
    |a, b| -kernels::dot(a, b)
);
halfvec_distance!(halfvec_cosine_distance, pg_finfo_halfvec_cosine_distance, kernels::cosine);
halfvec_distance!(halfvec_l1_distance, pg_finfo_halfvec_l1_distance, kernels::l1);
// Angular distance of unit vectors, pgvector's ivfflat support function for halfvec_ip_ops.
halfvec_distance!(halfvec_spherical_distance, pg_finfo_halfvec_spherical_distance, |a, b| {
    kernels::dot(a, b).clamp(-1.0, 1.0).acos() / std::f64::consts::PI
});

// ---- functions -------------------------------------------------------------------------

pg_v1_fn!(halfvec_vector_dims, pg_finfo_halfvec_vector_dims, |fcinfo| {
    // SAFETY: STRICT (halfvec).
    let x = unsafe { halfvec_arg(fcinfo, 0) };
    pg_sys::Datum::from(x.len() as i32)
});

pg_v1_fn!(halfvec_l2_norm, pg_finfo_halfvec_l2_norm, |fcinfo| {
    // SAFETY: STRICT (halfvec).
    let x = unsafe { halfvec_arg(fcinfo, 0) };
    float8_datum(codec::norm(x))
});

pg_v1_fn!(halfvec_l2_normalize, pg_finfo_halfvec_l2_normalize, |fcinfo| {
    // SAFETY: STRICT (halfvec).
    let x = unsafe { halfvec_arg(fcinfo, 0) };
    slice_to_datum(&ok(codec::l2_normalize(x)))
});

pg_v1_fn!(halfvec_binary_quantize, pg_finfo_halfvec_binary_quantize, |fcinfo| {
    // SAFETY: STRICT (halfvec).
    let x = unsafe { halfvec_arg(fcinfo, 0) };
    bit_datum(x.len(), &codec::binary_quantize(x))
});

pg_v1_fn!(halfvec_subvector, pg_finfo_halfvec_subvector, |fcinfo| {
    // SAFETY: STRICT (halfvec, int4, int4).
    let (x, start, count) = unsafe {
        (halfvec_arg(fcinfo, 0), datum_int32(arg(fcinfo, 1)), datum_int32(arg(fcinfo, 2)))
    };
    slice_to_datum(&ok(codec::subvector(x, start, count)))
});

macro_rules! binary_halfvec_op {
    ($name:ident, $finfo:ident, $op:path) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (halfvec, halfvec).
            let (a, b) = unsafe { (halfvec_arg(fcinfo, 0), halfvec_arg(fcinfo, 1)) };
            slice_to_datum(&ok($op(a, b)))
        });
    };
}

binary_halfvec_op!(halfvec_add, pg_finfo_halfvec_add, codec::add);
binary_halfvec_op!(halfvec_sub, pg_finfo_halfvec_sub, codec::sub);
binary_halfvec_op!(halfvec_mul, pg_finfo_halfvec_mul, codec::mul);
binary_halfvec_op!(halfvec_concat, pg_finfo_halfvec_concat, codec::concat);

// ---- btree support ---------------------------------------------------------------------

macro_rules! comparison {
    ($name:ident, $finfo:ident, $pred:expr) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (halfvec, halfvec).
            let (a, b) = unsafe { (halfvec_arg(fcinfo, 0), halfvec_arg(fcinfo, 1)) };
            pg_sys::Datum::from($pred(codec::compare(a, b)))
        });
    };
}

comparison!(halfvec_lt, pg_finfo_halfvec_lt, |o: std::cmp::Ordering| o.is_lt());
comparison!(halfvec_le, pg_finfo_halfvec_le, |o: std::cmp::Ordering| o.is_le());
comparison!(halfvec_eq, pg_finfo_halfvec_eq, |o: std::cmp::Ordering| o.is_eq());
comparison!(halfvec_ne, pg_finfo_halfvec_ne, |o: std::cmp::Ordering| o.is_ne());
comparison!(halfvec_ge, pg_finfo_halfvec_ge, |o: std::cmp::Ordering| o.is_ge());
comparison!(halfvec_gt, pg_finfo_halfvec_gt, |o: std::cmp::Ordering| o.is_gt());
comparison!(halfvec_cmp, pg_finfo_halfvec_cmp, |o: std::cmp::Ordering| o as i32);

// ---- aggregates (the combine function is vector_combine, as in pgvector) ----------------

pg_v1_fn!(halfvec_accum, pg_finfo_halfvec_accum, |fcinfo| {
    // SAFETY: halfvec_accum(float8[], halfvec) is STRICT.
    let (mut state, x) =
        unsafe { (float8_state(arg(fcinfo, 0), "halfvec_accum"), halfvec_arg(fcinfo, 1)) };
    ok(codec::accum(&mut state, x));
    float8_array(&state)
});

pg_v1_fn!(halfvec_avg, pg_finfo_halfvec_avg, |fcinfo| {
    // SAFETY: halfvec_avg(float8[]) is STRICT.
    let state = unsafe { float8_state(arg(fcinfo, 0), "halfvec_avg") };
    match ok(codec::avg_final(&state)) {
        Some(x) => slice_to_datum(&x),
        // SAFETY: fcinfo is valid.
        None => unsafe { return_null(fcinfo) },
    }
});
