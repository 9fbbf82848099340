//! Reads the indexed column's Datum as a [`Value`] of the index's type (glue: the
//! packing and distances are in `values`).

use super::values::{Kind, Value};
use pgrx::pg_sys;

/// The value a non-null Datum of the index's vector column (or an ORDER BY argument of
/// its operators) holds.
///
/// # Safety
/// `d` is a non-null datum of the type `kind` names.
pub(crate) unsafe fn datum_value<'a>(kind: Kind, d: pg_sys::Datum) -> Value<'a> {
    // SAFETY: forwarded caller contract; each reader detoasts as needed.
    unsafe {
        match kind {
            Kind::Vector => Value::Vector(crate::vector::sql::datum_to_slice(d)),
            Kind::Halfvec => Value::Halfvec(crate::halfvec::sql::datum_to_slice(d)),
            Kind::Bit => {
                let (bits, bytes) = crate::bitvec::sql::datum_to_bits(d);
                Value::Bit(bits as usize, bytes)
            }
            Kind::Sparse => Value::Sparse(crate::sparsevec::sql::datum_to_sparse(d)),
        }
    }
}

/// pgvector's limit on what one element may hold beyond the column's dimensions: a
/// sparsevec of more than `MAX_NNZ` stored elements is refused (54000).
pub(crate) fn check_indexable(v: &Value) {
    if let Value::Sparse(s) = v {
        if s.indices.len() > super::values::MAX_NNZ {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "sparsevec cannot have more than {} non-zero elements for hnsw index",
                    super::values::MAX_NNZ
                )
            );
        }
    }
}
