//! SQL surface of the authorization half, in schema `vecguard`.
//!
//! Claim functions (STABLE, PARALLEL SAFE, NULL when absent or invalid): `claims()`,
//! `subject()`, `tenant()`, `tenants()`, `clearance()`, `roles()`, plus `token_status()`.
//! Administration (EXECUTE revoked from PUBLIC in sql/authz.sql): `add_key`, `add_jwks`,
//! `revoke_key`, `protect`, `unprotect`, `audit_log`, `audit_verify`, `check_roles`.
//! Policy helper: `access_hours_ok`. Decisions live in the pure modules; this file converts
//! between SQL and them, and runs the SPI statements that write the key table
//! (`store_key`, `revoke_key`).

use pgrx::prelude::*;

fn spi_err(e: pgrx::spi::Error) -> ! {
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("vecguard: SPI failure: {e}"));
}

#[pg_schema]
pub mod vecguard {
    use pgrx::prelude::*;
    use pgrx::{pg_sys, JsonB, PgRelation};
    use serde_json::Value;

    use super::super::policy;
    use super::super::protection;
    use super::super::{audit_log, claims, events, guc, identity, jwt};
    use super::spi_err;

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

    /// The caller's tenants that are keys of a tenant column of type `type_name` written as
    /// PostgreSQL prints them (see `policy::is_canonical_tenant_key`); the tenant policy
    /// casts exactly these to the column's type.
    #[pg_extern(stable, parallel_safe)]
    pub fn tenant_keys(type_name: &str) -> Option<Vec<String>> {
        let ty = policy::tenant_key_type(type_name)?;
        let id = identity::identity()?;
        let all = claims::tenants(&id.verified.claims, &guc::claim_names())?;
        Some(all.into_iter().filter(|t| policy::is_canonical_tenant_key(ty, t)).collect())
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
            identity::Resolved::SessionTokenRefused => "session_token_refused".into(),
        }
    }

    /// Verifies `token` and makes it the caller's identity: for the current transaction
    /// (`SET LOCAL vecguard.jwt`) unless `local => false`, which `vecguard.token_scope =
    /// transaction` refuses. Takes the token as a bind parameter, so the statement text that
    /// pg_stat_activity, log_statement and pg_stat_statements show does not contain it.
    /// An invalid token raises 28000 and leaves the setting unchanged.
    #[pg_extern(volatile, parallel_unsafe)]
    pub fn login(token: &str, local: default!(bool, true)) {
        if !local && guc::TOKEN_SCOPE.get() == guc::TokenScope::Transaction {
            identity::raise_session_token();
        }
        // SAFETY: reads backend-local transaction state.
        if local && !unsafe { pg_sys::IsTransactionBlock() } {
            ereport!(
                WARNING,
                PgSqlErrorCode::ERRCODE_NO_ACTIVE_SQL_TRANSACTION,
                "vecguard.login() outside a transaction block sets the token for this statement only",
                "Call it after BEGIN, in the transaction that runs the queries."
            );
        }
        identity::verify_for_login(token);
        guc::set_token(token, local);
    }

    // ------------------------------------------------------------------ keys

    fn key_error(e: jwt::KeyError) -> ! {
        ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("vecguard: {e}"));
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

    /// Enables and forces row level security on `tbl` with one permissive base policy and
    /// one restrictive policy per dimension given (tenant, clearance, validity window,
    /// access hours), for SELECT/INSERT/UPDATE/DELETE; the same for every partition and
    /// inheritance child, now and later. Calling it again replaces them.
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
        let owned = |s: Option<&str>| s.map(str::to_string);
        let args = protection::ProtectArgs {
            tenant: owned(tenant),
            clearance: owned(clearance),
            valid_from: owned(valid_from),
            valid_until: owned(valid_until),
            hours_days: owned(hours_days),
            hours_start: owned(hours_start),
            hours_end: owned(hours_end),
            hours_tz: owned(hours_tz),
        };
        protection::protect(tbl, &args);
    }

    /// Drops vecguard's policies and switches row level security off again, on the table
    /// and on the children protect() protected with it.
    #[pg_extern]
    pub fn unprotect(tbl: PgRelation) {
        protection::unprotect(tbl);
    }

    /// Run by the event trigger `vecguard_ddl_guard` after every DDL command: protects new
    /// partitions and inheritance children of protected tables, and refuses (for
    /// non-superusers) or records (for superusers) a change of a protected table's row
    /// level security.
    #[pg_extern(volatile, parallel_unsafe)]
    pub fn enforce_protection() {
        protection::enforce();
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
        vecguard::tenant_keys,
        vecguard::enforce_protection,
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
        Spi::get_one::<i64>("SELECT count(*) FROM pt_docs").expect("count").unwrap_or(-1)
    }

    #[pg_test]
    fn claims_and_rows_for_valid_token() {
        setup();
        as_app(&token(json!({"sub": "u1", "tenant_id": "a", "clearance": 1, "exp": exp()})));
        assert_eq!(
            Spi::get_one::<String>("SELECT vecguard.tenant()").expect("spi"),
            Some("a".into())
        );
        assert_eq!(Spi::get_one::<i32>("SELECT vecguard.clearance()").expect("spi"), Some(1));
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
        let tampered = format!(
            "{}{}{}",
            &good[..sig_at],
            if first == "A" { "B" } else { "A" },
            &good[sig_at + 1..]
        );
        for (tok, code) in [
            (tampered.as_str(), "bad_signature"),
            ("a.b", "malformed"),
            (&token(json!({"tenant_id": "a", "exp": 1000})) as &str, "expired"),
        ] {
            as_app(tok);
            assert_eq!(
                Spi::get_one::<String>("SELECT vecguard.token_status()").expect("spi"),
                Some(code.into())
            );
            assert_eq!(Spi::get_one::<String>("SELECT vecguard.tenant()").expect("spi"), None);
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

    #[pg_test(
        error = "vecguard: HMAC secret looks like a PEM document; register public keys with an RS*, PS*, ES* or EdDSA algorithm instead"
    )]
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
