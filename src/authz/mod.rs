//! Authorization: identity from signed JWTs, claim accessors, protect() policies, audit.
//!
//! `jwt`, `claims`, `policy`, `redact` and `audit` are pure (no pgrx, clock injected) and unit-tested;
//! the SQL surface in schema `vecguard` is glue on top of them: `guc` (settings),
//! `identity` (per-statement token resolution and the key lookup), `hooks` (executor,
//! utility and log hooks), `events` and
//! `audit_log` (the audit file), `sql` (the functions).

pub mod audit;
pub mod audit_log;
pub mod claims;
pub mod events;
pub mod guc;
pub mod hooks;
pub mod identity;
pub mod jwt;
pub mod policy;
pub mod protection;
pub mod redact;
pub mod sql;
