//! The pgvector-compatible `sparsevec` type: `codec` is the pure format, checks, distances
//! and ordering, `sql` the V1 functions that sql/sparsevec.sql declares.

pub mod codec;
pub mod sql;
