//! Thin fmgr glue shared by the type, operator and index-support functions.
//!
//! The `vector` type is declared in hand-written SQL (sql/vector.sql) exactly as pgvector
//! declares it, and its functions are plain V1 C functions, so every name, strictness flag,
//! cost and cast matches pgvector. `pg_v1_fn!` emits the exported symbol, its
//! `pg_finfo_*` record and pgrx's guard, which turns a Rust panic or an `ErrorReport` into a
//! Postgres ERROR at the boundary instead of unwinding into C.

use crate::vector::codec::{SqlState, VectorError};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// Declares `name` as a V1 SQL-callable C function with body `|fcinfo| -> Datum`.
macro_rules! pg_v1_fn {
    ($name:ident, $finfo:ident, |$fcinfo:ident| $body:block) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1_API: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub unsafe extern "C-unwind" fn $name(fcinfo: ::pgrx::pg_sys::FunctionCallInfo) -> ::pgrx::pg_sys::Datum {
            fn body($fcinfo: ::pgrx::pg_sys::FunctionCallInfo) -> ::pgrx::pg_sys::Datum $body
            // SAFETY: Postgres calls this through fmgr with a valid fcinfo; the guard catches
            // every Rust panic (including ErrorReports) and re-raises it as an ERROR.
            unsafe { ::pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| body(fcinfo)) }
        }
    };
}
pub(crate) use pg_v1_fn;

/// Maps our SQLSTATE enum onto pgrx's error codes.
pub fn errcode(state: SqlState) -> PgSqlErrorCode {
    match state {
        SqlState::InvalidTextRepresentation => PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
        SqlState::DataException => PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
        SqlState::NumericValueOutOfRange => PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        SqlState::ProgramLimitExceeded => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        SqlState::InvalidParameterValue => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        SqlState::NullValueNotAllowed => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        SqlState::ProtocolViolation => PgSqlErrorCode::ERRCODE_PROTOCOL_VIOLATION,
        SqlState::InternalError => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    }
}

/// Raises a VectorError as a Postgres ERROR (does not return).
pub fn raise(e: VectorError) -> ! {
    let mut report = ErrorReport::new(errcode(e.state), e.message, "vecguard");
    if let Some(d) = e.detail {
        report = report.set_detail(d);
    }
    report.report(pgrx::PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Unwraps a codec result or raises its error.
pub fn ok<T>(r: Result<T, VectorError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(e),
    }
}

/// Raw argument `n` (the caller's SQL declaration guarantees it is not NULL: STRICT).
///
/// # Safety
/// `fcinfo` must be a valid call frame with more than `n` arguments.
#[inline]
pub unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> pg_sys::Datum {
    // SAFETY: the caller promises a valid fcinfo with at least n+1 args.
    unsafe { (*fcinfo).args.as_slice(n + 1)[n].value }
}

/// Marks the result NULL and returns a dummy datum.
///
/// # Safety
/// `fcinfo` must be valid.
pub unsafe fn return_null(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: valid fcinfo per the caller.
    unsafe { (*fcinfo).isnull = true };
    pg_sys::Datum::from(0usize)
}

/// A float8 result (pass-by-value on every 64-bit platform Postgres 15 supports).
#[inline]
pub fn float8_datum(v: f64) -> pg_sys::Datum {
    pg_sys::Datum::from(v.to_bits())
}

/// A float8 argument.
#[inline]
pub fn datum_float8(d: pg_sys::Datum) -> f64 {
    f64::from_bits(d.value() as u64)
}

/// A float4 argument (stored in the low 32 bits).
#[inline]
pub fn datum_float4(d: pg_sys::Datum) -> f32 {
    f32::from_bits(d.value() as u32)
}

/// An int4 argument.
#[inline]
pub fn datum_int32(d: pg_sys::Datum) -> i32 {
    d.value() as i32
}

/// A palloc'd `bit(n)` (PG's VarBit: varlena header, int32 bit length, the bits MSB first)
/// from bytes packed as `vector::codec::pack_bits` packs them.
pub fn bit_datum(nbits: usize, bytes: &[u8]) -> pg_sys::Datum {
    debug_assert_eq!(bytes.len(), nbits.div_ceil(8));
    let size = 8 + bytes.len();
    // SAFETY: palloc0 returns `size` writable, maxaligned bytes (or ERRORs); we write the
    // header, the bit length and the bytes inside that range.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::varlena::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::write(p.add(4) as *mut i32, nbits as i32);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(8), bytes.len());
        pg_sys::Datum::from(p as usize)
    }
}

/// The integers of a `typmod_in(cstring[])` argument. ArrayGetIntegerTypmods validates the
/// array (ERROR on nulls or bad integers).
///
/// # Safety
/// `d` is the non-null cstring[] argument of a typmod_in function.
pub unsafe fn typmod_array(d: pg_sys::Datum) -> Vec<i32> {
    let mut n: std::ffi::c_int = 0;
    // SAFETY: d is a cstring[] (caller's contract); ArrayGetIntegerTypmods returns n
    // palloc'd ints, copied out before the memory context can go.
    unsafe {
        let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let p = pg_sys::ArrayGetIntegerTypmods(arr, &mut n);
        std::slice::from_raw_parts(p, n.max(0) as usize).to_vec()
    }
}

/// The body of a `*_recv(internal, oid, int4)` function: hands `decode` the unread bytes of
/// the StringInfo and the typmod, and advances the cursor by the bytes it consumed.
///
/// # Safety
/// `fcinfo` is a call of a recv function: argument 0 is a StringInfo positioned at the value
/// and argument 2 the typmod.
pub unsafe fn recv_with<T>(
    fcinfo: pg_sys::FunctionCallInfo,
    decode: impl FnOnce(&[u8], i32) -> Result<(T, usize), VectorError>,
) -> T {
    // SAFETY: the caller's contract.
    let (buf, typmod) = unsafe {
        (arg(fcinfo, 0).cast_mut_ptr::<pg_sys::StringInfoData>(), datum_int32(arg(fcinfo, 2)))
    };
    // SAFETY: buf->data has buf->len bytes and cursor <= len, as pq_getmsg* maintain.
    let bytes = unsafe {
        let b = &*buf;
        let cursor = b.cursor.max(0) as usize;
        let len = (b.len.max(0) as usize).max(cursor);
        std::slice::from_raw_parts((b.data as *const u8).add(cursor), len - cursor)
    };
    let (value, used) = ok(decode(bytes, typmod));
    // SAFETY: advance the cursor by exactly the bytes consumed, within len.
    unsafe { (*buf).cursor += used as i32 };
    value
}
