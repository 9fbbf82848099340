//! The pgvector-compatible `vector` type: `codec` is the pure format and arithmetic,
//! `sql` the V1 functions that sql/vector.sql declares.

pub mod codec;
pub mod sql;
