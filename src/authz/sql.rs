//! SQL surface of the authorization half, in schema `vecguard`.
//!
//! Claim functions (STABLE, PARALLEL SAFE, NULL when absent or invalid): `claims()`,
//! `subject()`, `tenant()`, `tenants()`, `clearance()`, `roles()`, plus `token_status()`.
//! Administration (EXECUTE revoked from PUBLIC in sql/authz.sql): `add_key`, `add_jwks`,
//! `revoke_key`, `protect`, `unprotect`, `audit_log`, `audit_verify`, `check_roles`.
//! Policy helper: `access_hours_ok`. All logic lives in the pure modules; this file only
//! moves values between SQL and them.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::{events, guc};

/// Called from `_PG_init`: settings and the utility hook that audits setting changes.
pub fn init() {
    guc::define();
    // SAFETY: _PG_init runs once per process, single-threaded, before any query of ours;
    // we chain to whatever hook was installed before us.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(vecguard_process_utility);
    }
}

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

// Setting changes arrive through utility statements (SET, RESET, ALTER SYSTEM/ROLE/DATABASE
// ... SET). After the statement has run we compare the live settings with what we saw
// before; persistent ALTERs do not change the live value, so they are recorded by name.
#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn vecguard_process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: arguments are passed through unchanged from the executor, as the hook contract
    // requires; PREV_PROCESS_UTILITY was set once in init().
    unsafe {
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt, query_string, read_only_tree, context, params, query_env, dest, qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt, query_string, read_only_tree, context, params, query_env, dest, qc,
            ),
        }
    }
    // SAFETY: pstmt is a valid PlannedStmt for the statement that just ran.
    let persistent = unsafe { persistent_setting(pstmt) }
        // SAFETY: reads the transaction state (records need catalog access).
        .filter(|_| unsafe { pg_sys::IsTransactionState() });
    if let Some((how, name)) = persistent {
        let detail = serde_json::json!({"statement": how, "setting": name}).to_string();
        events::change("setting_changed", None, None, Some(detail));
    }
    events::check_settings();
}

// For ALTER SYSTEM / ALTER ROLE ... SET / ALTER DATABASE ... SET of a vecguard.* setting,
// (statement kind, setting name).
unsafe fn persistent_setting(pstmt: *mut pg_sys::PlannedStmt) -> Option<(&'static str, String)> {
    // SAFETY: the caller passes the PlannedStmt of a utility statement; node tags are
    // checked before each cast, and the VariableSetStmt pointers come from the parser.
    unsafe {
        if pstmt.is_null() || (*pstmt).utilityStmt.is_null() {
            return None;
        }
        let node = (*pstmt).utilityStmt;
        let (how, set): (&'static str, *mut pg_sys::VariableSetStmt) = match (*node).type_ {
            pg_sys::NodeTag::T_AlterSystemStmt => {
                ("ALTER SYSTEM", (*(node as *mut pg_sys::AlterSystemStmt)).setstmt)
            }
            pg_sys::NodeTag::T_AlterRoleSetStmt => {
                ("ALTER ROLE", (*(node as *mut pg_sys::AlterRoleSetStmt)).setstmt)
            }
            pg_sys::NodeTag::T_AlterDatabaseSetStmt => {
                ("ALTER DATABASE", (*(node as *mut pg_sys::AlterDatabaseSetStmt)).setstmt)
            }
            _ => return None,
        };
        if set.is_null() || (*set).name.is_null() {
            return None;
        }
        let name = CStr::from_ptr((*set).name).to_string_lossy().into_owned();
        name.starts_with("vecguard.").then_some((how, name))
    }
}

/// Runs `f` with `search_path = pg_catalog, pg_temp`, so SQL we generate and run cannot be
/// redirected to objects the caller planted. Restored on success; an ERROR restores it
/// through transaction/subtransaction abort.
fn with_safe_search_path<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the standard GUC nesting protocol (as used by PostgreSQL's own
    // RestrictSearchPath callers): new nest level, SET LOCAL-like save, pop with AtEOXact_GUC.
    let nest = unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        nest
    };
    let r = f();
    // SAFETY: pops exactly the level pushed above.
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    r
}

/// Raises an ERROR with the given SQLSTATE (usable in expression position).
pub(crate) fn fail(code: PgSqlErrorCode, msg: String) -> ! {
    ereport!(ERROR, code, msg);
}

fn spi_err(e: pgrx::spi::Error) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("vecguard: SPI failure: {e}")
    );
}

#[pg_schema]
pub mod vecguard {
    use pgrx::prelude::*;
    use pgrx::{pg_sys, JsonB, PgRelation};
    use serde_json::Value;

    use super::super::policy::{self, Column, ProtectSpec, QualifiedName};
    use super::super::{audit_log, claims, events, guc, identity, jwt};
    use super::{fail, spi_err, with_safe_search_path};

    // ------------------------------------------------------------------ claims

    /// The verified token's whole payload.
    #[pg_extern(stable, parallel_safe)]
    pub fn claims() -> Option<JsonB> {
        identity::identity().map(|id| JsonB(id.verified.claims.clone()))
    }

    /// The subject (claim `vecguard.claim_subject`, default `sub`).
    #[pg_extern(stable, parallel_safe)]
    pub fn subject() -> Option<String> {
        let id = identity::identity()?;
        claims::subject(&id.verified.claims, &guc::claim_names())
    }

    /// The caller's tenant when there is exactly one.
    #[pg_extern(stable, parallel_safe)]
    pub fn tenant() -> Option<String> {
        let id = identity::identity()?;
        claims::tenant(&id.verified.claims, &guc::claim_names())
    }

    /// All tenants of the caller.
    #[pg_extern(stable, parallel_safe)]
    pub fn tenants() -> Option<Vec<String>> {
        let id = identity::identity()?;
        claims::tenants(&id.verified.claims, &guc::claim_names())
    }

    /// Clearance level (a JSON integer only).
    #[pg_extern(stable, parallel_safe)]
    pub fn clearance() -> Option<i32> {
        let id = identity::identity()?;
        claims::clearance(&id.verified.claims, &guc::claim_names())
    }

    /// Application roles from the token.
    #[pg_extern(stable, parallel_safe)]
    pub fn roles() -> Option<Vec<String>> {
        let id = identity::identity()?;
        claims::roles(&id.verified.claims, &guc::claim_names())
    }

    /// 'none', 'valid', or the stable reject code (e.g. 'expired', 'bad_signature'), for
    /// diagnosing why claims are NULL. Never raises, even in strict mode.
    #[pg_extern(stable, parallel_safe)]
    pub fn token_status() -> String {
        match identity::resolve() {
            identity::Resolved::NoToken => "none".into(),
            identity::Resolved::Accepted(_) => "valid".into(),
            identity::Resolved::Rejected(r) => r.code().into(),
        }
    }

    // ------------------------------------------------------------------ keys

    fn key_error(e: jwt::KeyError) -> ! {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("vecguard: {e}")
        );
    }

    // Inserts or (when `replace`) replaces a key row, as the key table's owner. Returns
    // whether the kid existed before.
    fn store_key(k: &jwt::Key, format: &str, material: &str, replace: bool) -> bool {
        let thumb = k.thumbprint();
        identity::as_keys_owner(|| {
            Spi::connect_mut(|c| {
                let missing = c
                    .update(
                        "SELECT 1 FROM vecguard.keys WHERE kid OPERATOR(pg_catalog.=) $1 FOR UPDATE",
                        None,
                        &[k.kid.as_str().into()],
                    )
                    .unwrap_or_else(|e| spi_err(e))
                    .is_empty();
                let existed = !missing;
                if existed && !replace {
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                        format!("vecguard: key \"{}\" already exists", k.kid),
                        "pass replace => true to rotate it".to_string()
                    );
                }
                let q = if existed {
                    "UPDATE vecguard.keys SET alg = $2, format = $3, material = $4, thumbprint = $5, \
                     added_at = pg_catalog.now(), added_by = pg_catalog.session_user(), revoked_at = NULL \
                     WHERE kid OPERATOR(pg_catalog.=) $1"
                } else {
                    "INSERT INTO vecguard.keys (kid, alg, format, material, thumbprint, added_by) \
                     VALUES ($1, $2, $3, $4, $5, pg_catalog.session_user())"
                };
                c.update(
                    q,
                    None,
                    &[
                        k.kid.as_str().into(),
                        k.alg.as_str().into(),
                        format.into(),
                        material.into(),
                        thumb.clone().into(),
                    ],
                )
                .unwrap_or_else(|e| spi_err(e));
                existed
            })
        })
    }

    fn audit_key(event: &str, k: &jwt::Key, existed: bool) {
        let detail = serde_json::json!({
            "alg": k.alg.as_str(),
            "thumbprint": k.thumbprint(),
            "replaced": existed,
        })
        .to_string();
        events::change(event, Some(&k.kid), None, Some(detail));
    }

    /// Registers a verification key: an HS* secret (>= 32 bytes) or an RS*/PS*/ES*/EdDSA
    /// public key in PEM. The key pins the algorithm. `replace => true` rotates an existing kid.
    #[pg_extern]
    pub fn add_key(kid: &str, alg: &str, key: &str, replace: default!(bool, false)) {
        let k = jwt::Key::from_material(kid, alg, key).unwrap_or_else(|e| key_error(e));
        let existed = store_key(&k, "material", key, replace);
        identity::forget_keys();
        audit_key(if existed { "key_rotated" } else { "key_added" }, &k, existed);
    }

    /// Registers every signature key of a JWK set (encryption keys are skipped); existing
    /// kids are replaced (rotation). Returns the number of keys stored.
    #[pg_extern]
    pub fn add_jwks(jwks: JsonB) -> i32 {
        let text = jwks.0.to_string();
        // Validates the whole set first: one bad key rejects all of it.
        jwt::parse_jwks(&text).unwrap_or_else(|e| key_error(e));
        let items = jwks.0.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut n = 0;
        for item in items {
            // Entries parse_jwks skipped (encryption keys) fail here and are skipped too.
            let Ok(k) = jwt::Key::from_jwk(&item) else { continue };
            let existed = store_key(&k, "jwk", &item.to_string(), true);
            audit_key(if existed { "key_rotated" } else { "key_added" }, &k, existed);
            n += 1;
        }
        identity::forget_keys();
        n
    }

    /// Revokes a key: tokens naming it stop granting at every backend's next statement.
    /// Returns false when there was no active key with that kid.
    #[pg_extern]
    pub fn revoke_key(kid: &str) -> bool {
        let none_active = identity::as_keys_owner(|| {
            Spi::connect_mut(|c| {
                c.update(
                    "UPDATE vecguard.keys SET revoked_at = pg_catalog.now() \
                     WHERE kid OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL RETURNING kid",
                    None,
                    &[kid.into()],
                )
                .unwrap_or_else(|e| spi_err(e))
                .is_empty()
            })
        });
        let done = !none_active;
        identity::forget_keys();
        let mut r = events::record("key_revoked", "change");
        r.kid = Some(kid.to_string());
        r.detail = Some(serde_json::json!({"found": done}).to_string());
        events::write(&r);
        done
    }

    // ------------------------------------------------------------------ policies

    const INT_TYPES: [&str; 3] = ["smallint", "integer", "bigint"];
    const TIME_TYPES: [&str; 3] = [
        "timestamp with time zone",
        "timestamp without time zone",
        "date",
    ];

    // Column with its type as format_type() prints it; 42703 when absent.
    fn column(
        rel: &TableInfo,
        name: Option<&str>,
        allowed: &[&str],
        what: &str,
    ) -> Option<Column> {
        let name = name?;
        let ty: Option<String> = Spi::get_one_with_args(
            "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
             WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2::pg_catalog.name \
             AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
            &[rel.oid.into(), name.into()],
        )
        .unwrap_or(None);
        let Some(ty) = ty else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "vecguard: column {} of relation {} does not exist",
                    policy::quote_ident(name),
                    policy::quote_ident(&rel.name.name)
                )
            );
        };
        if !allowed.is_empty() && !allowed.contains(&ty.as_str()) {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "vecguard: {what} column {} has type {ty}; expected one of {}",
                    policy::quote_ident(name),
                    allowed.join(", ")
                )
            );
        }
        Some(Column {
            name: name.to_string(),
            type_name: ty,
        })
    }

    struct TableInfo {
        oid: pg_sys::Oid,
        name: QualifiedName,
    }

    // What we need from the relation, taken before running DDL on it: holding the
    // PgRelation open would make ALTER TABLE fail with "being used by active queries".
    fn table_info(rel: PgRelation) -> TableInfo {
        if !(rel.is_table() || rel.is_partitioned_table()) {
            fail(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("vecguard: {} is not a table", policy::quote_ident(rel.name())),
            );
        }
        TableInfo {
            oid: rel.oid(),
            name: QualifiedName {
                schema: rel.namespace().to_string(),
                name: rel.name().to_string(),
            },
        }
    }

    fn run_all(stmts: &[String]) {
        Spi::connect_mut(|c| {
            for s in stmts {
                c.update(s.as_str(), None, &[]).unwrap_or_else(|e| spi_err(e));
            }
        });
    }

    /// Enables and forces row level security on `tbl` with one permissive base policy and
    /// one restrictive policy per dimension given (tenant, clearance, validity window,
    /// access hours), for SELECT/INSERT/UPDATE/DELETE. Calling it again replaces them.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern]
    pub fn protect(
        tbl: PgRelation,
        tenant: default!(Option<&str>, "NULL"),
        clearance: default!(Option<&str>, "NULL"),
        valid_from: default!(Option<&str>, "NULL"),
        valid_until: default!(Option<&str>, "NULL"),
        hours_days: default!(Option<&str>, "NULL"),
        hours_start: default!(Option<&str>, "NULL"),
        hours_end: default!(Option<&str>, "NULL"),
        hours_tz: default!(Option<&str>, "'UTC'"),
    ) {
        let tbl = table_info(tbl);
        let access_hours = match (hours_days, hours_start, hours_end) {
            (None, None, None) => None,
            (Some(d), Some(s), Some(e)) => Some(
                policy::parse_access_hours(d, s, e, hours_tz.unwrap_or("UTC")).unwrap_or_else(|e| {
                    fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("vecguard: {e}"))
                }),
            ),
            _ => fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "vecguard: access hours need hours_days, hours_start and hours_end together".into(),
            ),
        };
        with_safe_search_path(|| {
            let spec = ProtectSpec {
                table: tbl.name.clone(),
                tenant: column(&tbl, tenant, &[], "tenant"),
                clearance: column(&tbl, clearance, &INT_TYPES, "clearance"),
                valid_from: column(&tbl, valid_from, &TIME_TYPES, "valid_from"),
                valid_until: column(&tbl, valid_until, &TIME_TYPES, "valid_until"),
                access_hours,
            };
            let stmts = policy::protect_sql(&spec).unwrap_or_else(|e| {
                fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("vecguard: {e}"))
            });
            run_all(&stmts);
            let detail = serde_json::json!({
                "tenant": spec.tenant.as_ref().map(|c| &c.name),
                "clearance": spec.clearance.as_ref().map(|c| &c.name),
                "valid_from": spec.valid_from.as_ref().map(|c| &c.name),
                "valid_until": spec.valid_until.as_ref().map(|c| &c.name),
                "access_hours": spec.access_hours.as_ref().map(|h| format!(
                    "{} {}-{} {}", h.days_spec(), h.start_str(), h.end_str(), h.time_zone.name())),
            })
            .to_string();
            let name = format!("{}.{}", spec.table.schema, spec.table.name);
            events::change("protect", None, Some(&name), Some(detail));
        });
    }

    /// Drops vecguard's policies and switches row level security off again.
    #[pg_extern]
    pub fn unprotect(tbl: PgRelation) {
        let q = table_info(tbl).name;
        with_safe_search_path(|| {
            run_all(&policy::unprotect_sql(&q));
            let name = format!("{}.{}", q.schema, q.name);
            events::change("unprotect", None, Some(&name), None);
        });
    }

    /// True when the statement's start time lies inside the weekly window (days such as
    /// 'mon-fri', times 'HH:MM', an IANA time zone). Invalid arguments give false.
    #[pg_extern(stable, parallel_safe, strict)]
    pub fn access_hours_ok(days: &str, start_time: &str, end_time: &str, tz: &str) -> bool {
        let Ok(h) = policy::parse_access_hours(days, start_time, end_time, tz) else {
            return false;
        };
        let now = identity::statement_unix_time();
        match chrono::DateTime::<chrono::Utc>::from_timestamp(now, 0) {
            Some(t) => policy::within_hours(&h, t),
            None => false,
        }
    }

    // ------------------------------------------------------------------ audit

    fn io_error(e: std::io::Error) -> ! {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("vecguard: cannot read audit log: {e}")
        );
    }

    fn pg_ts(rfc3339: &str) -> Option<pgrx::datum::TimestampWithTimeZone> {
        let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
        // PostgreSQL counts microseconds from 2000-01-01 00:00:00 UTC.
        let micros = t.timestamp_micros().checked_sub(946_684_800_000_000)?;
        pgrx::datum::TimestampWithTimeZone::try_from(micros).ok()
    }

    /// Every audit record, oldest first (superusers only).
    #[allow(clippy::type_complexity)]
    #[pg_extern]
    pub fn audit_log() -> TableIterator<
        'static,
        (
            name!(line, i64),
            name!(ts, Option<pgrx::datum::TimestampWithTimeZone>),
            name!(db_role, String),
            name!(event, String),
            name!(subject, Option<String>),
            name!(tenant, Option<String>),
            name!(kid, Option<String>),
            name!(jti, Option<String>),
            name!(decision, String),
            name!(reason, Option<String>),
            name!(policy, Option<String>),
            name!(detail, Option<String>),
            name!(hash, String),
        ),
    > {
        let text = audit_log::read_all().unwrap_or_else(|e| io_error(e));
        let rows: Vec<_> = text
            .split('\n')
            .enumerate()
            .filter_map(|(i, l)| {
                let (r, _prev, hash) = super::super::audit::parse_line(l)?;
                Some((
                    i as i64 + 1,
                    pg_ts(&r.ts),
                    r.db_role,
                    r.event,
                    r.subject,
                    r.tenant,
                    r.kid,
                    r.jti,
                    r.decision,
                    r.reason,
                    r.policy,
                    r.detail,
                    hash,
                ))
            })
            .collect();
        TableIterator::new(rows)
    }

    /// Verifies the hash chain and the head anchor (superusers only).
    #[allow(clippy::type_complexity)]
    #[pg_extern]
    pub fn audit_verify() -> TableIterator<
        'static,
        (
            name!(ok, bool),
            name!(records, i64),
            name!(first_bad_line, Option<i64>),
            name!(reason, Option<String>),
            name!(last_hash, Option<String>),
        ),
    > {
        let r = audit_log::verify().unwrap_or_else(|e| io_error(e));
        TableIterator::once((
            r.ok,
            r.records as i64,
            r.first_bad_line.map(|n| n as i64),
            r.reason,
            r.last_hash,
        ))
    }
}

pgrx::extension_sql_file!(
    "../../sql/authz.sql",
    name = "authz",
    requires = [
        vecguard::add_key,
        vecguard::add_jwks,
        vecguard::revoke_key,
        vecguard::protect,
        vecguard::unprotect,
        vecguard::audit_log,
        vecguard::audit_verify,
        vecguard::tenants,
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use pgrx::prelude::*;
    use serde_json::json;

    const SECRET: &str = "pg-test-secret-pg-test-secret-0123456789";

    fn token(claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("pt1".into());
        encode(&h, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
    }

    fn exp() -> i64 {
        chrono::Utc::now().timestamp() + 600
    }

    // Key, an ordinary role and a protected table; everything after runs as that role.
    fn setup() {
        Spi::run(&format!("SELECT vecguard.add_key('pt1', 'HS256', '{SECRET}', replace => true)"))
            .expect("add_key");
        Spi::run(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pt_app') \
             THEN CREATE ROLE pt_app; END IF; END $$",
        )
        .expect("role");
        Spi::run(
            "CREATE TABLE pt_docs (id int, tenant_id text, clearance int);
             INSERT INTO pt_docs SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, i % 3
               FROM generate_series(1, 60) i;
             GRANT SELECT ON pt_docs TO pt_app;
             SELECT vecguard.protect('pt_docs', tenant => 'tenant_id', clearance => 'clearance');",
        )
        .expect("table");
    }

    fn as_app(tok: &str) {
        Spi::run("SET LOCAL ROLE pt_app").expect("set role");
        Spi::run(&format!("SELECT set_config('vecguard.jwt', '{tok}', true)")).expect("jwt");
    }

    fn count() -> i64 {
        Spi::get_one::<i64>("SELECT count(*) FROM pt_docs")
            .expect("count")
            .unwrap_or(-1)
    }

    #[pg_test]
    fn claims_and_rows_for_valid_token() {
        setup();
        as_app(&token(json!({"sub": "u1", "tenant_id": "a", "clearance": 1, "exp": exp()})));
        assert_eq!(
            Spi::get_one::<String>("SELECT vecguard.tenant()").expect("spi"),
            Some("a".into())
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT vecguard.clearance()").expect("spi"),
            Some(1)
        );
        // tenant a = even ids, clearance i % 3 <= 1: 20 of the 30 even ids
        assert_eq!(count(), 20);
        // the key lookup ran as the key table's owner and switched back
        assert_eq!(
            Spi::get_one::<String>("SELECT current_user::text").expect("spi"),
            Some("pt_app".into())
        );
    }

    #[pg_test]
    fn bad_tokens_grant_nothing() {
        setup();
        let good = token(json!({"tenant_id": "a", "clearance": 2, "exp": exp()}));
        // Change the signature's first character: all six of its bits are signature
        // bits. (The last character also carries padding bits, which must be zero: turning
        // it into 'B' made the token malformed, not badly signed, in 1 run out of 16.)
        let sig_at = good.rfind('.').expect("three parts") + 1;
        let first = &good[sig_at..sig_at + 1];
        let tampered = format!("{}{}{}", &good[..sig_at], if first == "A" { "B" } else { "A" }, &good[sig_at + 1..]);
        for (tok, code) in [
            (tampered.as_str(), "bad_signature"),
            ("a.b", "malformed"),
            (
                &token(json!({"tenant_id": "a", "exp": 1000})) as &str,
                "expired",
            ),
        ] {
            as_app(tok);
            assert_eq!(
                Spi::get_one::<String>("SELECT vecguard.token_status()").expect("spi"),
                Some(code.into())
            );
            assert_eq!(
                Spi::get_one::<String>("SELECT vecguard.tenant()").expect("spi"),
                None
            );
            assert_eq!(count(), 0);
            Spi::run("RESET ROLE").expect("reset");
        }
    }

    #[pg_test(error = "vecguard: invalid token: token signature is invalid")]
    fn strict_mode_raises() {
        setup();
        let good = token(json!({"tenant_id": "a", "exp": exp()}));
        let (hp, _) = good.rsplit_once('.').expect("jws");
        as_app(&format!("{hp}.AAAA"));
        Spi::run("SET LOCAL vecguard.strict = on").expect("strict");
        count();
    }

    #[pg_test(error = "vecguard: HMAC secret looks like a PEM document; register public keys with an RS*, PS*, ES* or EdDSA algorithm instead")]
    fn add_key_refuses_pem_secret() {
        Spi::run(
            "SELECT vecguard.add_key('x', 'HS256', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----')",
        )
        .expect("add_key");
    }

    #[pg_test]
    fn audit_chain_verifies() {
        setup();
        as_app("garbage");
        count();
        Spi::run("RESET ROLE").expect("reset");
        assert_eq!(
            Spi::get_one::<bool>("SELECT ok FROM vecguard.audit_verify()").expect("spi"),
            Some(true)
        );
        assert!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM vecguard.audit_log() WHERE event = 'token_rejected'"
            )
            .expect("spi")
            .unwrap_or(0)
                > 0
        );
    }
}
