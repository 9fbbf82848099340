//! Authorization: identity from signed JWTs, claim accessors, protect() policies, audit.
//!
//! `jwt`, `claims`, `policy` and `audit` are pure (no pgrx, clock injected) and unit-tested;
//! the SQL surface in schema `vecguard` is glue on top of them: `guc` (settings),
//! `identity` (per-statement token resolution and the key lookup), `events` and
//! `audit_log` (the audit file), `sql` (the functions).

pub mod audit;
pub mod audit_log;
pub mod claims;
pub mod events;
pub mod guc;
pub mod identity;
pub mod jwt;
pub mod policy;
pub mod sql;
