//! Datum glue for key columns: the types an authorized index supports, encoding a row's
//! key values at build/insert time, and turning the executor's scan keys (`tenant_id =
//! ANY ($1)`, `clearance <= $2`) into `keys::Cond`s the traversal evaluates.

use super::keys::{self, Cond, KeyType, KeyValue, Op};
use super::storage::IndexRel;
use crate::fmgr::{arg, pg_v1_fn, return_null};
use pgrx::pg_sys;

/// The window operators of sql/hnsw.sql, `x <=* y` (`x IS NULL OR x <= y`) and `x >* y`
/// (`x IS NULL OR x > y`) on date, timestamp and timestamptz, for validity windows whose
/// open ends are NULL. SQL's own form of them is an OR, which no index can take as a
/// condition; as operators of the hnsw key opclasses they are, and the traversal tests them
/// (`keys::Op::NullOrLe`, `NullOrGt`). Not strict: a NULL `x` is true, a NULL `y` is NULL
/// unless `x` is NULL, as the OR gives.
///
/// # Safety
/// `fcinfo` is a call of one of the functions below with two arguments of one type whose
/// datums are integers (`int32` when `date`).
unsafe fn window(fcinfo: pg_sys::FunctionCallInfo, date: bool, op: Op) -> pg_sys::Datum {
    // SAFETY: two arguments per the caller.
    let (xnull, ynull, x, y) = unsafe {
        let a = (*fcinfo).args.as_slice(2);
        (a[0].isnull, a[1].isnull, arg(fcinfo, 0), arg(fcinfo, 1))
    };
    if xnull {
        return pg_sys::Datum::from(true);
    }
    if ynull {
        // SAFETY: valid fcinfo.
        return unsafe { return_null(fcinfo) };
    }
    let int = |d: pg_sys::Datum| if date { d.value() as i32 as i64 } else { d.value() as i64 };
    let (x, y) = (int(x), int(y));
    pg_sys::Datum::from(match op {
        Op::NullOrLe => x <= y,
        _ => x > y,
    })
}

pg_v1_fn!(hnsw_window_started_date, pg_finfo_hnsw_window_started_date, |fcinfo| {
    // SAFETY: declared (date, date) in sql/hnsw.sql.
    unsafe { window(fcinfo, true, Op::NullOrLe) }
});
pg_v1_fn!(hnsw_window_open_date, pg_finfo_hnsw_window_open_date, |fcinfo| {
    // SAFETY: declared (date, date) in sql/hnsw.sql.
    unsafe { window(fcinfo, true, Op::NullOrGt) }
});
pg_v1_fn!(hnsw_window_started_ts, pg_finfo_hnsw_window_started_ts, |fcinfo| {
    // SAFETY: declared (timestamp, timestamp) and (timestamptz, timestamptz): int64 datums.
    unsafe { window(fcinfo, false, Op::NullOrLe) }
});
pg_v1_fn!(hnsw_window_open_ts, pg_finfo_hnsw_window_open_ts, |fcinfo| {
    // SAFETY: declared (timestamp, timestamp) and (timestamptz, timestamptz): int64 datums.
    unsafe { window(fcinfo, false, Op::NullOrGt) }
});

pub(crate) fn key_type_of(typid: pg_sys::Oid) -> Option<KeyType> {
    match typid {
        pg_sys::INT2OID
        | pg_sys::INT4OID
        | pg_sys::INT8OID
        | pg_sys::DATEOID
        | pg_sys::TIMESTAMPOID
        | pg_sys::TIMESTAMPTZOID => Some(KeyType::Int),
        pg_sys::UUIDOID => Some(KeyType::Uuid),
        pg_sys::TEXTOID | pg_sys::VARCHAROID => Some(KeyType::Text),
        _ => None,
    }
}

/// Where the vector sits among the index columns, and the key columns in index order as
/// (0-based attribute number, type). The vector may be any column: PostgreSQL 15 keeps
/// index ordering with `= ANY` only on the first column, so `(tenant_id, embedding, ...)`
/// is the layout for tokens that name several tenants.
pub(crate) struct Columns {
    pub(crate) vector: usize,
    pub(crate) keys: Vec<(usize, KeyType)>,
}

impl Columns {
    pub(crate) fn key_types(&self) -> Vec<KeyType> {
        self.keys.iter().map(|k| k.1).collect()
    }
}

pub(crate) fn columns(rel: IndexRel) -> Columns {
    // SAFETY: an open index relation has natts attributes in rd_att.
    let types: Vec<pg_sys::Oid> = unsafe {
        let desc = (*rel.raw()).rd_att;
        let natts = (*desc).natts as usize;
        (0..natts).map(|i| crate::compat::attr_type(desc, i).0).collect()
    };
    let non_keys: Vec<usize> =
        (0..types.len()).filter(|&i| key_type_of(types[i]).is_none()).collect();
    if non_keys.len() != 1 {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "an hnsw index has exactly one vector column; other columns must be int2, int4, int8, date, timestamp, timestamptz, uuid or text"
        );
    }
    let vector = non_keys[0];
    let keys: Vec<(usize, KeyType)> = (0..types.len())
        .filter(|&i| i != vector)
        .filter_map(|i| key_type_of(types[i]).map(|t| (i, t)))
        .collect();
    for &(i, ty) in &keys {
        // Text keys compare bytes, which is equality only under a deterministic collation:
        // under one where 'A' = 'a' the index would return fewer rows than a seq scan.
        // SAFETY: rd_indcollation has one entry per key attribute of an open index;
        // get_collation_isdeterministic looks up a collation the index depends on.
        let nondeterministic = ty == KeyType::Text
            && unsafe {
                let coll = *(*rel.raw()).rd_indcollation.add(i);
                coll != pg_sys::InvalidOid && !pg_sys::get_collation_isdeterministic(coll)
            };
        if nondeterministic {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "hnsw key columns of type text need a deterministic collation",
                "Give the column a deterministic collation, e.g. COLLATE \"C\"."
            );
        }
    }
    Columns { vector, keys }
}

/// Key-column types of an index, in index order.
pub(crate) fn key_types(rel: IndexRel) -> Vec<KeyType> {
    columns(rel).key_types()
}

/// Converts one non-null datum of a key column.
///
/// # Safety
/// `d` must be a valid datum of the column's type.
unsafe fn datum_value(ty: KeyType, typid: pg_sys::Oid, d: pg_sys::Datum) -> KeyValue {
    match ty {
        KeyType::Int => KeyValue::Int(match typid {
            pg_sys::INT2OID => d.value() as i16 as i64,
            pg_sys::INT4OID | pg_sys::DATEOID => d.value() as i32 as i64,
            _ => d.value() as i64,
        }),
        // SAFETY: a uuid datum points at 16 bytes.
        KeyType::Uuid => KeyValue::Bytes(
            unsafe { std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), 16) }.to_vec(),
        ),
        KeyType::Text => {
            // SAFETY: text datums are varlenas; pg_detoast_datum_packed yields readable bytes.
            let bytes = unsafe {
                let p = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
                pgrx::varlena::varlena_to_byte_slice(p).to_vec()
            };
            if bytes.len() > keys::MAX_TEXT_KEY {
                pgrx::ereport!(
                    ERROR,
                    pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    format!("hnsw text key values are limited to {} bytes", keys::MAX_TEXT_KEY)
                );
            }
            KeyValue::Bytes(bytes)
        }
    }
}

/// Encodes the key columns of one index row.
///
/// # Safety
/// `values` and `isnull` must hold one entry per index column.
pub(crate) unsafe fn encode_row(
    rel: IndexRel,
    cols: &Columns,
    values: *const pg_sys::Datum,
    isnull: *const bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for &(att, ty) in &cols.keys {
        // SAFETY: att < natts; the attribute array has natts entries.
        unsafe {
            if *isnull.add(att) {
                keys::encode(&mut out, ty, None);
            } else {
                let typid = crate::compat::attr_type((*rel.raw()).rd_att, att).0;
                let v = datum_value(ty, typid, *values.add(att));
                keys::encode(&mut out, ty, Some(&v));
            }
        }
    }
    out
}

/// Translates the scan keys on key columns into conditions. A NULL argument (or NULL
/// array, e.g. `tenant = ANY(NULL)` when the caller has no token) matches nothing.
///
/// # Safety
/// `keys` must point at `nkeys` scan keys of this index.
pub(crate) unsafe fn conds(
    rel: IndexRel,
    cols: &Columns,
    keys: pg_sys::ScanKey,
    nkeys: usize,
) -> Vec<Cond> {
    let mut out = Vec::new();
    for k in 0..nkeys {
        // SAFETY: k < nkeys.
        let key = unsafe { &*keys.add(k) };
        let attno = key.sk_attno as usize;
        let Some(col) = cols.keys.iter().position(|&(att, _)| att + 1 == attno) else { continue };
        let ty = cols.keys[col].1;
        // The argument's own type: cross-type operators (int4 column = int8 value) are in
        // the integer family; sk_subtype names the right-hand type.
        let typid = if key.sk_subtype != pg_sys::InvalidOid {
            key.sk_subtype
        } else {
            // SAFETY: attno is a valid 1-based index column.
            unsafe { crate::compat::attr_type((*rel.raw()).rd_att, attno - 1).0 }
        };
        let Some(op) = Op::from_strategy(key.sk_strategy) else {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("hnsw key columns have no operator of strategy {}", key.sk_strategy)
            );
        };
        let mut values = Vec::new();
        if key.sk_flags & pg_sys::SK_ISNULL as i32 == 0 {
            if key.sk_flags & pg_sys::SK_SEARCHARRAY as i32 != 0 {
                // SAFETY: a SEARCHARRAY key's argument is an array of the column's type.
                unsafe {
                    let arr = pg_sys::pg_detoast_datum(key.sk_argument.cast_mut_ptr())
                        as *mut pg_sys::ArrayType;
                    let elemtype = (*arr).elemtype;
                    let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
                    pg_sys::get_typlenbyvalalign(elemtype, &mut len, &mut byval, &mut align);
                    let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
                    let mut nulls: *mut bool = std::ptr::null_mut();
                    let mut n: std::ffi::c_int = 0;
                    pg_sys::deconstruct_array(
                        arr, elemtype, len as i32, byval, align, &mut elems, &mut nulls, &mut n,
                    );
                    for j in 0..n.max(0) as usize {
                        if !*nulls.add(j) {
                            values.push(datum_value(ty, elemtype, *elems.add(j)));
                        }
                    }
                }
            } else {
                // SAFETY: the argument has the column's type (same-type opclasses only).
                values.push(unsafe { datum_value(ty, typid, key.sk_argument) });
            }
        }
        out.push(Cond { col, op, values });
    }
    out
}
