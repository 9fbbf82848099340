//! Turning the session's token into verified claims, once per statement.
//!
//! Per backend we cache each verified token (keyed by the token text), so a query pays for
//! signature verification once. What is *not* cached across statements is the key: at the
//! first claim lookup of every statement we re-read the key row and re-check exp/nbf, so a
//! revoked or rotated key and an expired token stop granting at the next statement in
//! every backend, without shared memory (the library need not be preloaded).
//!
//! The key table is unreadable for ordinary roles. Verification reads it directly from the
//! heap (no SQL, so nothing the caller controls such as search_path is involved); the
//! administrative functions write it through SPI with the user id switched to the table's
//! owner (SECURITY_LOCAL_USERID_CHANGE, restored by a drop guard and by transaction abort).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgRelation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::guc::{self, AuditLevel};
use super::jwt::{self, Key, KeyLookup, Reject, Verified};
use super::{claims, events};
use crate::backend::is_parallel_worker;

/// The first claim lookup of each statement revalidates; `(lxid, statement start)` names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct StmtId(u32, i64);

fn current_stmt() -> StmtId {
    // SAFETY: MyProc is set for every backend and parallel worker before SQL runs;
    // GetCurrentStatementStartTimestamp only reads a backend-local variable.
    unsafe {
        let lxid = crate::compat::local_xid(pg_sys::MyProc);
        StmtId(lxid, pg_sys::GetCurrentStatementStartTimestamp())
    }
}

/// "Now" for exp/nbf: the statement's start, so every row of one statement sees the same
/// answer (the claim functions are STABLE).
pub fn statement_unix_time() -> i64 {
    // SAFETY: reads a backend-local timestamp.
    let ts = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    // TimestampTz counts microseconds since 2000-01-01; 946684800 is that instant in Unix time.
    ts.div_euclid(1_000_000) + 946_684_800
}

/// A key row as stored in vecguard.keys.
#[derive(Clone, PartialEq, Eq, Debug)]
struct KeyRow {
    alg: String,
    format: String,
    material: String,
    revoked: bool,
}

/// Where the claims came from.
#[derive(Clone, Debug)]
pub enum Source {
    Jwt,
    RequestClaims,
}

/// A verified identity for this statement.
#[derive(Debug)]
pub struct Identity {
    pub verified: Verified,
    pub source: Source,
}

#[derive(Clone)]
enum Outcome {
    Accepted(Rc<Identity>),
    Rejected(Reject),
}

struct Entry {
    stmt: StmtId,
    outcome: Outcome,
    key: Option<KeyRow>,
    validation: jwt::Validation,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Entry>,
    keys: HashMap<String, (KeyRow, Key)>,
    audited: HashSet<([u8; 32], &'static str)>,
}

const MAX_CACHED_TOKENS: usize = 256;
const MAX_AUDITED: usize = 8192;

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    static SETTINGS_CHECKED: Cell<Option<StmtId>> = const { Cell::new(None) };
}

/// Restores the previous user id and security context when dropped, including while an
/// ERROR unwinds through us.
struct AsUser {
    saved_user: pg_sys::Oid,
    saved_ctx: i32,
}

impl AsUser {
    fn switch(user: pg_sys::Oid) -> AsUser {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_ctx = 0;
        // SAFETY: plain reads/writes of backend-local variables; the flags mark the change as
        // local (not a SET ROLE) and restricted, as PostgreSQL itself does for maintenance
        // commands that run as a table owner.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
            pg_sys::SetUserIdAndSecContext(
                user,
                saved_ctx
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
        }
        AsUser { saved_user, saved_ctx }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // SAFETY: restores exactly what switch() read.
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_ctx) };
    }
}

/// Oid and owner of vecguard.keys, or None when the extension is not installed here.
pub fn keys_table() -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: catalog lookups with missing_ok semantics; the relation is opened with
    // AccessShareLock only to read its owner and closed by PgRelation's Drop.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"vecguard".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let relid = pg_sys::get_relname_relid(c"keys".as_ptr(), nsp);
        if relid == pg_sys::InvalidOid {
            return None;
        }
        let rel = PgRelation::with_lock(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        Some((relid, (*rel.rd_rel).relowner))
    }
}

/// Runs `f` as the owner of vecguard.keys (for reading and writing it via SPI).
pub fn as_keys_owner<R>(f: impl FnOnce() -> R) -> R {
    let Some((_, owner)) = keys_table() else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "vecguard: table vecguard.keys is missing; is the extension installed in this database?"
        );
    };
    let _guard = AsUser::switch(owner);
    f()
}

fn keys_relid() -> Option<pg_sys::Oid> {
    // SAFETY: catalog name lookups that return InvalidOid instead of raising.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"vecguard".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let relid = pg_sys::get_relname_relid(c"keys".as_ptr(), nsp);
        (relid != pg_sys::InvalidOid).then_some(relid)
    }
}

// Column numbers of vecguard.keys (sql/authz.sql); attnums never move, even when
// columns are dropped later.
const ATT_KID: i16 = 1;
const ATT_ALG: usize = 1;
const ATT_FORMAT: usize = 2;
const ATT_MATERIAL: usize = 3;
const ATT_REVOKED_AT: usize = 7;
const KEYS_NATTS: usize = 8;

/// Reads the key row for `kid` straight from the heap, once per statement.
///
/// Reading the table directly (no SPI, no permission check, no user switch) is what lets
/// an ordinary role's session verify its token against a table it cannot SELECT, at a
/// cost of microseconds. The scan uses a fresh catalog snapshot, taken now, so a revocation
/// committed by any backend is seen at the next statement even inside a REPEATABLE READ
/// transaction. Parallel workers may take catalog snapshots too (they read catalogs all the
/// time), so a worker of a long REPEATABLE READ transaction sees the revocation as well.
fn fetch_key_row(kid: &str) -> Option<KeyRow> {
    let relid = keys_relid()?;
    let kid_c = std::ffi::CString::new(kid).ok()?;
    // SAFETY: standard catalog-style heap scan: the relation is opened and closed with
    // AccessShareLock, the snapshot is registered (or the active one used) for the scan's
    // duration, the tuple is deformed with the relation's own descriptor and only read
    // before systable_endscan. On ERROR, transaction abort releases relation, scan and
    // snapshot through the resource owner.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let desc = (*rel).rd_att;
        let natts = usize::try_from((*desc).natts).unwrap_or(0);
        if natts < KEYS_NATTS {
            pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            return None;
        }
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut key,
            ATT_KID,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_TEXTEQ),
            pg_sys::Datum::from(pg_sys::cstring_to_text(kid_c.as_ptr())),
        );
        // A null snapshot makes systable_beginscan register the catalog snapshot for the
        // scan; invalidating it first makes that a snapshot taken now.
        pg_sys::InvalidateCatalogSnapshot();
        let scan = pg_sys::systable_beginscan(
            rel,
            pg_sys::InvalidOid,
            false,
            std::ptr::null_mut(),
            1,
            &mut key,
        );
        let tup = pg_sys::systable_getnext(scan);
        let row = if tup.is_null() {
            None
        } else {
            let mut values = vec![pg_sys::Datum::from(0usize); natts];
            let mut nulls = vec![true; natts];
            pg_sys::heap_deform_tuple(tup, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let text = |i: usize| -> Option<String> {
                if nulls[i] {
                    return None;
                }
                let c = pg_sys::text_to_cstring(values[i].cast_mut_ptr::<pg_sys::text>());
                Some(std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned())
            };
            match (text(ATT_ALG), text(ATT_FORMAT), text(ATT_MATERIAL)) {
                (Some(alg), Some(format), Some(material)) => {
                    Some(KeyRow { alg, format, material, revoked: !nulls[ATT_REVOKED_AT] })
                }
                _ => None,
            }
        };
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        row
    }
}

/// Parses stored key material into a `Key` (the same checks as at registration).
pub fn key_from_row(
    kid: &str,
    alg: &str,
    format: &str,
    material: &str,
) -> Result<Key, jwt::KeyError> {
    if format == "jwk" {
        let v: Value = serde_json::from_str(material)
            .map_err(|_| jwt::KeyError::InvalidJwk("stored JWK is not valid JSON".into()))?;
        let k = Key::from_jwk(&v)?;
        if k.kid != kid || k.alg.as_str() != alg {
            return Err(jwt::KeyError::InvalidJwk("stored JWK does not match its row".into()));
        }
        Ok(k)
    } else {
        Key::from_material(kid, alg, material)
    }
}

// Key for a row, reusing the parsed key when the row is unchanged (PEM/JWK parsing of RSA
// keys costs more than the lookup).
fn key_for(kid: &str, row: &KeyRow) -> Option<Key> {
    if let Some(k) =
        STATE.with(|s| s.borrow().keys.get(kid).filter(|(r, _)| r == row).map(|(_, k)| k.clone()))
    {
        return Some(k);
    }
    let k = key_from_row(kid, &row.alg, &row.format, &row.material).ok()?;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.keys.len() >= MAX_CACHED_TOKENS {
            s.keys.clear();
        }
        s.keys.insert(kid.to_string(), (row.clone(), k.clone()));
    });
    Some(k)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

// Audit a decision once per backend per (token, outcome); never from parallel workers.
fn audit_decision(token: &str, outcome: &Outcome, kid: Option<String>) {
    if is_parallel_worker() {
        return;
    }
    let level = guc::AUDIT.get();
    let (code, accepted) = match outcome {
        Outcome::Accepted(_) => ("accepted", true),
        Outcome::Rejected(r) => (r.code(), false),
    };
    if level == AuditLevel::Off || (accepted && level != AuditLevel::All) {
        return;
    }
    let key = (digest(token), code);
    let fresh = STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.audited.len() >= MAX_AUDITED {
            s.audited.clear();
        }
        s.audited.insert(key)
    });
    if !fresh {
        return;
    }
    let mut rec = match outcome {
        Outcome::Accepted(id) => {
            let names = guc::claim_names();
            let mut r = events::record("token_accepted", "allow");
            r.subject = claims::subject(&id.verified.claims, &names);
            r.tenant = claims::tenants(&id.verified.claims, &names).map(|t| t.join(","));
            r.kid = Some(id.verified.kid.clone()).filter(|k| !k.is_empty());
            r.jti = id.verified.jti.clone();
            if let Source::RequestClaims = id.source {
                r.detail = Some("source=request.jwt.claims".into());
            }
            r
        }
        Outcome::Rejected(rej) => {
            let mut r = events::record("token_rejected", "deny");
            r.reason = Some(rej.code().to_string());
            r.kid = kid;
            r
        }
    };
    // A fingerprint lets an auditor correlate records of the same token without the log
    // holding a replayable bearer token.
    let fp = hex::encode(&digest(token)[..8]);
    rec.detail = Some(match rec.detail.take() {
        Some(d) => format!("{d} token_sha256={fp}"),
        None => format!("token_sha256={fp}"),
    });
    events::write(&rec);
}

fn verify_jwt(token: &str, stmt: StmtId) -> Outcome {
    let validation = guc::validation();
    let now = statement_unix_time();
    let kid = match jwt::header_kid(token) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return finish(
                token,
                stmt,
                Outcome::Rejected(Reject::MissingKid),
                None,
                validation,
                None,
            )
        }
        Err(r) => return finish(token, stmt, Outcome::Rejected(r), None, validation, None),
    };
    let row = fetch_key_row(&kid);

    // Fast path: same token, same key row, same validation settings -> only the clock.
    let cached = STATE.with(|s| {
        let s = s.borrow();
        s.tokens.get(token).and_then(|e| match &e.outcome {
            Outcome::Accepted(id)
                if e.key.is_some() && e.key == row && e.validation == validation =>
            {
                Some(id.clone())
            }
            _ => None,
        })
    });
    if let Some(id) = cached {
        let outcome = match id.verified.check_time(now, validation.leeway_secs) {
            Ok(()) => Outcome::Accepted(id),
            Err(r) => Outcome::Rejected(r),
        };
        return finish(token, stmt, outcome, row, validation, Some(kid));
    }

    let lookup = |k: &str| -> KeyLookup {
        match &row {
            _ if k != kid => KeyLookup::Unknown,
            None => KeyLookup::Unknown,
            Some(r) if r.revoked => KeyLookup::Revoked,
            // A stored key that no longer parses is treated as absent: fail closed.
            Some(r) => match key_for(k, r) {
                Some(key) => KeyLookup::Found(key),
                None => KeyLookup::Unknown,
            },
        }
    };
    let outcome = match jwt::verify_with(token, &lookup, &validation, now) {
        Ok(v) => Outcome::Accepted(Rc::new(Identity { verified: v, source: Source::Jwt })),
        Err(r) => Outcome::Rejected(r),
    };
    finish(token, stmt, outcome, row, validation, Some(kid))
}

fn finish(
    token: &str,
    stmt: StmtId,
    outcome: Outcome,
    key: Option<KeyRow>,
    validation: jwt::Validation,
    kid: Option<String>,
) -> Outcome {
    audit_decision(token, &outcome, kid);
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.tokens.len() >= MAX_CACHED_TOKENS && !s.tokens.contains_key(token) {
            s.tokens.clear();
        }
        s.tokens
            .insert(token.to_string(), Entry { stmt, outcome: outcome.clone(), key, validation });
    });
    outcome
}

// PostgREST has verified the token and put its claims here; we only trust that when a
// superuser said so. exp is still honoured when present.
fn from_request_claims(stmt: StmtId) -> Option<Outcome> {
    if !guc::TRUST_REQUEST_CLAIMS.get() {
        return None;
    }
    // SAFETY: name is a static C string; missing_ok = true returns NULL when unset.
    let raw = unsafe {
        let p = pg_sys::GetConfigOption(c"request.jwt.claims".as_ptr(), true, false);
        if p.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    if raw.trim().is_empty() {
        return None;
    }
    let key = format!("request.jwt.claims:{raw}");
    if let Some(o) = cached_for_stmt(&key, stmt) {
        return Some(o);
    }
    let now = statement_unix_time();
    let outcome = match serde_json::from_str::<Value>(&raw) {
        Ok(v @ Value::Object(_)) => {
            let exp = v.get("exp").and_then(Value::as_i64);
            let expired =
                exp.is_some_and(|e| now >= e.saturating_add(guc::validation().leeway_secs as i64));
            if v.get("exp").is_some() && exp.is_none() {
                Outcome::Rejected(Reject::BadClaim("exp must be a number".into()))
            } else if expired {
                Outcome::Rejected(Reject::Expired)
            } else {
                let names = guc::claim_names();
                Outcome::Accepted(Rc::new(Identity {
                    verified: Verified {
                        kid: String::new(),
                        alg: jwt::Alg::HS256,
                        exp: exp.unwrap_or(i64::MAX),
                        nbf: None,
                        jti: v.get("jti").and_then(Value::as_str).map(str::to_string),
                        subject: claims::subject(&v, &names),
                        claims: v,
                    },
                    source: Source::RequestClaims,
                }))
            }
        }
        _ => Outcome::Rejected(Reject::Malformed),
    };
    Some(finish(&key, stmt, outcome, None, guc::validation(), None))
}

fn cached_for_stmt(token: &str, stmt: StmtId) -> Option<Outcome> {
    STATE.with(|s| {
        s.borrow().tokens.get(token).filter(|e| e.stmt == stmt).map(|e| e.outcome.clone())
    })
}

/// Result of resolving the session's identity for the current statement.
pub enum Resolved {
    NoToken,
    Accepted(Rc<Identity>),
    Rejected(Reject),
    /// A token is set for the whole session while `vecguard.token_scope = transaction`.
    SessionTokenRefused,
}

/// The session's identity for this statement (verifying or revalidating as needed).
pub fn resolve() -> Resolved {
    let stmt = current_stmt();
    // Settings changed by set_config() inside queries are noticed here, once per statement.
    if SETTINGS_CHECKED.with(|c| c.replace(Some(stmt))) != Some(stmt) {
        events::check_settings();
    }
    let outcome = match guc::token() {
        // A parallel worker's settings are copies of the leader's, without their history;
        // the leader made this check when the statement started (see `precheck`).
        Some(_)
            if guc::TOKEN_SCOPE.get() == guc::TokenScope::Transaction
                && !is_parallel_worker()
                && !guc::token_is_transaction_scoped() =>
        {
            return Resolved::SessionTokenRefused;
        }
        Some(token) => match cached_for_stmt(&token, stmt) {
            Some(o) => o,
            None => verify_jwt(&token, stmt),
        },
        None => match from_request_claims(stmt) {
            Some(o) => o,
            None => return Resolved::NoToken,
        },
    };
    match outcome {
        Outcome::Accepted(id) => Resolved::Accepted(id),
        Outcome::Rejected(r) => Resolved::Rejected(r),
    }
}

/// The verified identity, or None. In strict mode an invalid token raises 28000; a
/// refused session-level token always does.
pub fn identity() -> Option<Rc<Identity>> {
    match resolve() {
        Resolved::NoToken => None,
        Resolved::Accepted(id) => Some(id),
        Resolved::Rejected(r) => {
            if guc::STRICT.get() {
                raise_invalid(&r);
            }
            None
        }
        Resolved::SessionTokenRefused => raise_session_token(),
    }
}

fn raise_invalid(r: &Reject) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        format!("vecguard: invalid token: {r}"),
        format!("reason code: {}", r.code())
    );
}

/// The error for a session-level token under `vecguard.token_scope = transaction`.
pub fn raise_session_token() -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        "vecguard: session-level token refused (vecguard.token_scope = transaction)",
        "Set the token for the transaction: BEGIN; SELECT vecguard.login($1); ... COMMIT; \
         or SET LOCAL vecguard.jwt. A session-level token would outlive the client behind a \
         connection pooler."
    );
}

/// Settles the statement's identity before its first row is read: called when a statement
/// that reads a table with row level security starts. The policies evaluate the claim
/// functions lazily, in InitPlans that run only when a row reaches them, so an error raised
/// there (strict mode, a refused session token) would tell the caller whether rows it may
/// not see match its own conditions. Raising here depends on the token alone.
pub fn precheck() {
    if guc::token().is_none() && !guc::TRUST_REQUEST_CLAIMS.get() {
        return;
    }
    match resolve() {
        Resolved::Rejected(r) if guc::STRICT.get() => raise_invalid(&r),
        Resolved::SessionTokenRefused => raise_session_token(),
        _ => {}
    }
}

/// Verifies `token` as the session's token would be, without setting it; the claims on
/// success, else ERROR 28000 with the reason.
pub fn verify_for_login(token: &str) -> Rc<Identity> {
    match verify_jwt(token, current_stmt()) {
        Outcome::Accepted(id) => id,
        Outcome::Rejected(r) => raise_invalid(&r),
    }
}

/// Forgets cached verifications (used after key changes in this backend; other backends
/// notice at their next statement anyway).
pub fn forget_keys() {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.keys.clear();
    });
}
