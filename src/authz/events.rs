//! Building and writing audit events (token decisions, key changes, protect/unprotect and
//! setting changes) from backend context.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::audit::{self, Record};
use super::audit_log;
use super::guc::{self, AuditLevel};
use crate::backend::is_parallel_worker;

/// A record stamped with the wall clock and the database role on whose behalf we act
/// (the outer role: SET ROLE counts, SECURITY DEFINER functions and our own switches don't).
pub fn record(event: &str, decision: &str) -> Record {
    let ts = audit::rfc3339_utc(chrono::Utc::now());
    Record::new(&ts, &outer_role(), event, decision)
}

fn outer_role() -> String {
    // SAFETY: GetOuterUserId reads a backend-local; GetUserNameFromId with noerr = true
    // returns NULL instead of raising for a dropped role, and the palloc'd name is copied.
    unsafe {
        let p = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        if p.is_null() {
            "?".to_string()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

thread_local! {
    static RATE: RefCell<audit::RateLimit> = RefCell::new(audit::RateLimit::default());
}

/// Appends a record unless auditing is off or we are a parallel worker, within the
/// backend's `vecguard.audit_rate_limit` (superusers' records are never dropped: they can
/// switch the audit off anyway, and their key and protect changes must all be on record).
pub fn write(rec: &Record) {
    if guc::AUDIT.get() == AuditLevel::Off || is_parallel_worker() {
        return;
    }
    // SAFETY: superuser() reads the current user's catalog entry (we run inside a
    // transaction whenever a record is written).
    let exempt = unsafe { pg_sys::superuser() };
    let limit = u32::try_from(guc::AUDIT_RATE_LIMIT.get()).unwrap_or(0);
    let now = chrono::Utc::now().timestamp();
    match RATE.with(|r| r.borrow_mut().admit(now, if exempt { 0 } else { limit })) {
        audit::Admission::Write { suppressed_before } => {
            if let Some(n) = suppressed_before {
                let mut r = record("audit_suppressed", "change");
                r.detail = Some(
                    serde_json::json!({"suppressed": n, "limit_per_minute": limit}).to_string(),
                );
                append_or_warn(&r);
            }
            append_or_warn(rec);
        }
        audit::Admission::Suppress { first: true } => {
            let mut r = record("audit_suppressed", "change");
            r.detail = Some(
                serde_json::json!({"limit_per_minute": limit, "state": "started"}).to_string(),
            );
            append_or_warn(&r);
        }
        audit::Admission::Suppress { first: false } => {}
    }
}

// A failed write is a WARNING rather than an ERROR so that a full disk cannot be turned into
// an outage of every query; the server log still shows it.
fn append_or_warn(rec: &Record) {
    if let Err(e) = audit_log::append(rec) {
        ereport!(
            WARNING,
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("vecguard: could not write audit record: {e}")
        );
    }
}

/// Records an administrative change (key, protect, setting).
pub fn change(event: &str, kid: Option<&str>, policy: Option<&str>, detail: Option<String>) {
    let mut r = record(event, "change");
    r.kid = kid.map(str::to_string);
    r.policy = policy.map(str::to_string);
    r.detail = detail;
    write(&r);
}

thread_local! {
    static LAST_SETTINGS: RefCell<Option<Vec<(&'static str, String)>>> = const { RefCell::new(None) };
}

/// Compares the audited settings with what this backend saw last and records each change.
/// Called after every utility statement (SET, RESET, ALTER ...) and at every identity
/// resolution, which also catches set_config() and reloads.
pub fn check_settings() {
    // SAFETY: IsTransactionState only reads the transaction state. Outside a healthy
    // transaction (ROLLBACK of a failed block) catalog lookups for the record are not
    // allowed; the change is picked up at the next statement instead.
    if is_parallel_worker() || !unsafe { pg_sys::IsTransactionState() } {
        return;
    }
    let now = guc::snapshot();
    let changed: Vec<(&'static str, String, String)> = LAST_SETTINGS.with(|l| {
        let mut l = l.borrow_mut();
        let out = match l.as_ref() {
            // First look in this backend: values SET before the library was loaded differ
            // from their reset value (config file, ALTER ROLE/DATABASE), so they count as
            // changes too, made by this session.
            None => now
                .iter()
                .filter_map(|(name, v)| {
                    let reset = guc::reset_value(name)?;
                    (reset != *v).then(|| (*name, reset, v.clone()))
                })
                .collect(),
            Some(prev) => now
                .iter()
                .zip(prev.iter())
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, b)| (a.0, b.1.clone(), a.1.clone()))
                .collect(),
        };
        *l = Some(now);
        out
    });
    for (name, old, new) in changed {
        let detail = serde_json::json!({"setting": name, "old": old, "new": new}).to_string();
        let mut r = record("setting_changed", "change");
        r.detail = Some(detail);
        if name == "vecguard.audit" {
            // Switching the audit off must itself be on record, whatever the new level.
            append_or_warn(&r);
        } else {
            write(&r);
        }
    }
}
