//! Authorization: identity from signed JWTs, claim accessors, protect() policies, audit.
//!
//! `jwt`, `claims`, `policy` and `audit` are pure (no pgrx, clock injected) and unit-tested;
//! the SQL surface in schema `vecguard` is glue on top of them.

pub mod audit;
pub mod claims;
pub mod jwt;
pub mod policy;
