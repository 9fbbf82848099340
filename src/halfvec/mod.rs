//! The pgvector-compatible `halfvec` type (IEEE half floats): `codec` is the pure format,
//! casts and arithmetic, `sql` the V1 functions that sql/halfvec.sql declares. Its
//! distance kernels live with the others in `crate::distance::half`.

pub mod codec;
pub mod sql;
