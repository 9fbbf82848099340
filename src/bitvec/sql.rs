//! V1 functions behind sql/bit.sql: `hamming_distance`, `jaccard_distance` on Postgres's
//! `bit`/`varbit` and `binary_quantize(vector)`.
//!
//! A bit string is Postgres's VarBit: 4-byte varlena header, int32 bit length, then the
//! bits packed most significant first with the pad bits of the last byte zero.

use crate::fmgr::{arg, float8_datum, pg_v1_fn, raise};
use crate::vector::codec::{SqlState, VectorError};
use pgrx::pg_sys;

/// Bytes before the first bit byte: varlena header + bit length.
const VARBIT_HEADER: usize = 8;

/// A bit-string Datum as (bit length, bytes), detoasted when it is not a plain
/// 4-byte-header varlena.
///
/// # Safety
/// `d` is a non-null `bit` or `varbit` datum.
pub unsafe fn datum_to_bits<'a>(d: pg_sys::Datum) -> (u32, &'a [u8]) {
    // SAFETY: d is a varbit varlena per the caller; a 4B-uncompressed header means it is
    // inline and complete, anything else is detoasted into a 4B copy. The byte count never
    // exceeds what the header says is present.
    unsafe {
        let raw = d.cast_mut_ptr::<pg_sys::varlena>();
        let p =
            if pgrx::varlena::varatt_is_4b_u(raw) { raw } else { pg_sys::pg_detoast_datum(raw) };
        let total = pgrx::varlena::varsize_4b(p);
        let base = p as *const u8;
        let bitlen = std::ptr::read_unaligned(base.add(4) as *const i32).max(0) as u32;
        let bytes = (bitlen as usize).div_ceil(8).min(total.saturating_sub(VARBIT_HEADER));
        (bitlen, std::slice::from_raw_parts(base.add(VARBIT_HEADER), bytes))
    }
}

/// Argument `n` as (bit length, bytes).
///
/// # Safety
/// `fcinfo` valid; argument `n` is a non-null `bit` or `varbit`.
unsafe fn bits_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> (u32, &'a [u8]) {
    // SAFETY: forwarded caller contract.
    unsafe { datum_to_bits(arg(fcinfo, n)) }
}

/// Both bit arguments, with pgvector's error when their lengths differ.
///
/// # Safety
/// As `bits_arg`, for arguments 0 and 1.
unsafe fn same_length_args<'a>(fcinfo: pg_sys::FunctionCallInfo) -> (&'a [u8], &'a [u8]) {
    // SAFETY: forwarded caller contract.
    let ((alen, a), (blen, b)) = unsafe { (bits_arg(fcinfo, 0), bits_arg(fcinfo, 1)) };
    if alen != blen || a.len() != b.len() {
        raise(VectorError::new(
            SqlState::DataException,
            format!("different bit lengths {alen} and {blen}"),
        ));
    }
    (a, b)
}

pg_v1_fn!(hamming_distance, pg_finfo_hamming_distance, |fcinfo| {
    // SAFETY: hamming_distance(bit, bit) is STRICT.
    let (a, b) = unsafe { same_length_args(fcinfo) };
    float8_datum(super::hamming(a, b))
});

pg_v1_fn!(jaccard_distance, pg_finfo_jaccard_distance, |fcinfo| {
    // SAFETY: jaccard_distance(bit, bit) is STRICT.
    let (a, b) = unsafe { same_length_args(fcinfo) };
    float8_datum(super::jaccard(a, b))
});
