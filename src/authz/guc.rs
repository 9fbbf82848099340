//! The `vecguard.*` settings of the authorization half, and the snapshot of them that the
//! audit uses to notice changes.
//!
//! Who may change what follows from what a change could do:
//! * `vecguard.jwt` and `vecguard.strict` are USERSET: the token is the caller's identity
//!   claim (worthless without a valid signature), and strict mode can only turn a NULL
//!   into an error.
//! * Everything that decides *which* token is valid or which claim means what (issuer,
//!   audience, leeway, claim names, trusting PostgREST's `request.jwt.claims`) and the audit
//!   volume are SUSET: a non-superuser changing any of them could widen their own access or
//!   hide their tracks.

use std::ffi::{CStr, CString};

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

use super::claims::ClaimNames;
use super::jwt;

/// How much the audit log records.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuditLevel {
    /// Nothing at all.
    #[name = c"off"]
    Off,
    /// Rejected tokens and administrative changes (keys, protect, settings).
    #[name = c"denials"]
    Denials,
    /// Additionally every accepted token (once per backend and token).
    #[name = c"all"]
    All,
}

pub static JWT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ISSUER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static AUDIENCE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static TRUST_REQUEST_CLAIMS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static STRICT: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static CLAIM_SUBJECT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"sub"));
pub static CLAIM_TENANT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"tenant_id"));
pub static CLAIM_CLEARANCE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"clearance"));
pub static CLAIM_ROLES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"roles"));
pub static AUDIT: GucSetting<AuditLevel> = GucSetting::<AuditLevel>::new(AuditLevel::All);
pub static TOKEN_SCOPE: GucSetting<TokenScope> =
    GucSetting::<TokenScope>::new(TokenScope::Transaction);
pub static AUDIT_RATE_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(600);
pub static AUDIT_MAX_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);

/// Which tokens are honoured, by how long they were set for.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum TokenScope {
    /// Only a token set for the current transaction (`SET LOCAL`, `set_config(.., true)`,
    /// `vecguard.login($1)`) or by a function's own `SET` clause. A session-level token is
    /// refused with SQLSTATE 28000: behind a transaction-mode pooler it would outlive the
    /// client that set it and serve the next one.
    #[name = c"transaction"]
    Transaction,
    /// Also session-level tokens (`SET`, PGOPTIONS, ALTER ROLE ... SET). Only for
    /// connections that are never shared between end users.
    #[name = c"session"]
    Session,
}

/// Names whose changes are audited (`vecguard.jwt` is not: tokens have their own events,
/// and its value must not be copied into the log).
pub const AUDITED_SETTINGS: [&CStr; 13] = [
    c"vecguard.jwt_issuer",
    c"vecguard.jwt_audience",
    c"vecguard.jwt_leeway",
    c"vecguard.trust_request_claims",
    c"vecguard.strict",
    c"vecguard.claim_subject",
    c"vecguard.claim_tenant",
    c"vecguard.claim_clearance",
    c"vecguard.claim_roles",
    c"vecguard.audit",
    c"vecguard.token_scope",
    c"vecguard.audit_rate_limit",
    c"vecguard.audit_max_size",
];

/// Registers every setting; called once from `_PG_init`.
pub fn define() {
    GucRegistry::define_string_guc(
        c"vecguard.jwt",
        c"Compact JWS identifying the caller.",
        c"Verified against vecguard.keys; its claims drive vecguard.tenants() and friends.",
        &JWT,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"vecguard.jwt_issuer",
        c"Required iss claim (empty: not checked).",
        c"",
        &ISSUER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"vecguard.jwt_audience",
        c"Required aud claim member (empty: not checked).",
        c"",
        &AUDIENCE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"vecguard.jwt_leeway",
        c"Clock-skew leeway in seconds for exp and nbf.",
        c"",
        &LEEWAY,
        0,
        jwt::MAX_LEEWAY_SECS as i32,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"vecguard.trust_request_claims",
        c"Accept PostgREST's request.jwt.claims as verified claims.",
        c"Only safe when every connection comes through a PostgREST that verifies tokens.",
        &TRUST_REQUEST_CLAIMS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"vecguard.strict",
        c"Raise SQLSTATE 28000 for an invalid token instead of returning NULL claims.",
        c"",
        &STRICT,
        GucContext::Userset,
        GucFlags::default(),
    );
    for (name, setting, what) in [
        (c"vecguard.claim_subject", &CLAIM_SUBJECT, c"Claim holding the subject."),
        (c"vecguard.claim_tenant", &CLAIM_TENANT, c"Claim holding the tenant or tenants."),
        (c"vecguard.claim_clearance", &CLAIM_CLEARANCE, c"Claim holding the clearance level."),
        (c"vecguard.claim_roles", &CLAIM_ROLES, c"Claim holding the application roles."),
    ] {
        GucRegistry::define_string_guc(
            name,
            what,
            c"A top-level claim name or a dotted path into nested objects.",
            setting,
            GucContext::Suset,
            GucFlags::default(),
        );
    }
    GucRegistry::define_enum_guc(
        c"vecguard.audit",
        c"Audit volume: off, denials or all.",
        c"",
        &AUDIT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"vecguard.token_scope",
        c"Honour only transaction-scoped tokens (transaction) or session-level ones too (session).",
        c"Under transaction, a session-level vecguard.jwt is refused with SQLSTATE 28000, so a \
          connection pooler in transaction mode cannot hand one client's identity to the next.",
        &TOKEN_SCOPE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"vecguard.audit_rate_limit",
        c"Token-decision audit records one backend may write per minute (0: no limit).",
        c"Records over the limit are counted and summarised in one audit_suppressed record.",
        &AUDIT_RATE_LIMIT,
        0,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"vecguard.audit_max_size",
        c"Size at which the audit log is rotated (0: never).",
        c"The full log is renamed to audit.log.1 (the previous one is dropped) and the new log \
          continues its hash chain.",
        &AUDIT_MAX_SIZE,
        0,
        i32::MAX / 1024,
        GucContext::Sighup,
        GucFlags::UNIT_KB,
    );
}

/// Whether the current value of `vecguard.jwt` was set for this transaction (or for a
/// function call) rather than for the session.
///
/// PostgreSQL keeps a stack of saved values per setting while a transaction changes it: its
/// top says how the current value was set. No stack means the value came from an earlier
/// transaction, the connection's options or ALTER ROLE/DATABASE: a session-level token.
/// `GUC_SET` is a plain `SET` (or `set_config(.., false)`) in this transaction; `GUC_LOCAL`
/// and `GUC_SET_LOCAL` are `SET LOCAL` (on top of whatever was there); `GUC_SAVE` is a
/// function's `SET` clause, which ends with the call.
pub fn token_is_transaction_scoped() -> bool {
    use pgrx::pg_sys::GucStackState;
    let Some(var) = jwt_variable() else {
        return false;
    };
    // SAFETY: var points to the config_generic of our own setting, which PostgreSQL keeps
    // for the life of the process; its stack is only changed by this backend's GUC code,
    // which is not running while we read it.
    unsafe {
        let stack = (*var).stack;
        !stack.is_null()
            && matches!(
                (*stack).state,
                GucStackState::GUC_LOCAL | GucStackState::GUC_SET_LOCAL | GucStackState::GUC_SAVE
            )
    }
}

thread_local! {
    static JWT_VARIABLE: std::cell::Cell<*mut pgrx::pg_sys::config_generic> =
        const { std::cell::Cell::new(std::ptr::null_mut()) };
}

// The config_generic of vecguard.jwt, found once (PostgreSQL moves the array of pointers
// when settings are added, never the records themselves).
fn jwt_variable() -> Option<*mut pgrx::pg_sys::config_generic> {
    let cached = JWT_VARIABLE.with(|c| c.get());
    if !cached.is_null() {
        return Some(cached);
    }
    // SAFETY: the array is used before any setting is defined; names are NUL-terminated
    // strings owned by the GUC records.
    let found = unsafe {
        crate::compat::guc_variables()
            .iter()
            .copied()
            .find(|&v| !v.is_null() && CStr::from_ptr((*v).name) == c"vecguard.jwt")
    }?;
    JWT_VARIABLE.with(|c| c.set(found));
    Some(found)
}

fn string(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get().map(|c| c.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
}

/// The token the session set, if any.
pub fn token() -> Option<String> {
    string(&JWT)
}

/// Sets `vecguard.jwt` as `SET LOCAL` (local) or `SET` would.
pub fn set_token(token: &str, local: bool) {
    let Ok(value) = CString::new(token) else {
        ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "vecguard: a token cannot contain a NUL byte"
        );
    };
    // SAFETY: both strings are NUL-terminated and live across the call; set_config_option
    // raises (longjmp, caught by pgrx's guard) on any failure since elevel is ERROR.
    unsafe {
        pgrx::pg_sys::set_config_option(
            c"vecguard.jwt".as_ptr(),
            value.as_ptr(),
            pgrx::pg_sys::GucContext::PGC_USERSET,
            pgrx::pg_sys::GucSource::PGC_S_SESSION,
            if local {
                pgrx::pg_sys::GucAction::GUC_ACTION_LOCAL
            } else {
                pgrx::pg_sys::GucAction::GUC_ACTION_SET
            },
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
    }
}

/// Current claim expectations.
pub fn validation() -> jwt::Validation {
    jwt::Validation::new(
        string(&ISSUER),
        string(&AUDIENCE),
        u64::try_from(LEEWAY.get()).unwrap_or(0),
    )
}

/// Current claim names (an empty setting falls back to the default name).
pub fn claim_names() -> ClaimNames {
    let d = ClaimNames::default();
    ClaimNames {
        subject: string(&CLAIM_SUBJECT).unwrap_or(d.subject),
        tenant: string(&CLAIM_TENANT).unwrap_or(d.tenant),
        clearance: string(&CLAIM_CLEARANCE).unwrap_or(d.clearance),
        roles: string(&CLAIM_ROLES).unwrap_or(d.roles),
    }
}

/// Current values of the audited settings, as PostgreSQL displays them.
pub fn snapshot() -> Vec<(&'static str, String)> {
    AUDITED_SETTINGS
        .iter()
        .map(|name| {
            // SAFETY: name is a NUL-terminated static string; missing_ok = true returns NULL
            // instead of raising, and the returned pointer is only read before the next GUC
            // change, which cannot happen during this copy.
            let v = unsafe {
                let p = pgrx::pg_sys::GetConfigOption(name.as_ptr(), true, false);
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            (name.to_str().unwrap_or("?"), v)
        })
        .collect()
}

/// The value RESET would restore (from the config file, ALTER ROLE/DATABASE or the default).
pub fn reset_value(name: &str) -> Option<String> {
    let c = CString::new(name).ok()?;
    // SAFETY: only called for settings this module defined, so the lookup cannot fail;
    // the returned string is copied immediately.
    unsafe {
        let p = pgrx::pg_sys::GetConfigOptionResetString(c.as_ptr());
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }
}
