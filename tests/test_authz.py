"""Authorization against a live cluster: JWT identity, protect() policies, audit.

Every authorization check runs as the ordinary LOGIN role `app` (never a superuser); the
protected tables belong to the ordinary role `docowner`. Each positive check has a
negative one beside it: another tenant, a bad token or a missing privilege gets nothing.
"""

import base64
import hashlib
import hmac
import json
import shutil
import time

import jwt as pyjwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISS = "https://idp.example"
AUD = "vecguard-tests"
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret-42"
TENANTS = ["acme", "globex", "initech"]
N = 900


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_public(key) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
KEYS = {  # kid -> (alg, signing key)
    "hs1": ("HS256", SECRET),
    "rs1": ("RS256", RSA_KEY),
    "es1": ("ES256", EC_KEY),
    "ed1": ("EdDSA", ED_KEY),
}


def claims(tenant="acme", clearance=4, exp_in=600, **extra):
    now = int(time.time())
    c = {"sub": "alice", "iss": ISS, "aud": AUD, "exp": now + exp_in, "iat": now,
         "tenant_id": tenant, "clearance": clearance, "roles": ["reader"], "jti": f"j{time.time_ns()}"}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def token(kid="hs1", **kw):
    alg, key = KEYS[kid]
    return pyjwt.encode(claims(**kw), key, algorithm=alg, headers={"kid": kid})


def hs_raw(header: dict, payload: dict, secret: bytes) -> str:
    """HS256 by hand, for tokens pyjwt refuses to make (e.g. a PEM as the HMAC secret)."""
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


def visible(i, tenants, clearance):
    """Rows of the docs table a caller with these claims may see (see the fixture)."""
    return TENANTS[i % 3] in tenants and i % 5 <= clearance and i % 10 not in (7, 9)


def expected_ids(tenants=("acme",), clearance=4):
    return sorted(i for i in range(1, N + 1) if visible(i, tenants, clearance))


def sqlstate(conn, query, params=None):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()
    return info.value.sqlstate


def set_token(conn, tok):
    conn.execute("SELECT set_config('vecguard.jwt', %s, false)", [tok])


def ids(conn, query="SELECT id FROM docs ORDER BY id"):
    return [r[0] for r in conn.execute(query).fetchall()]


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def env(cluster, dbname):
    with cluster.connect(dbname) as su:
        su.execute("""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app LOGIN; END IF;
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'docowner') THEN CREATE ROLE docowner LOGIN; END IF;
            END $$""")
        # These tests set the token for the session (set_token) on connections no one else
        # shares; test_security.py and test_pooler.py cover the default, transaction scope.
        su.execute(f"ALTER DATABASE {dbname} SET vecguard.token_scope = 'session'")
        su.execute("SELECT vecguard.add_key('hs1', 'HS256', %s)", [SECRET])
        su.execute("SELECT vecguard.add_key('rs1', 'RS256', %s)", [pem_public(RSA_KEY)])
        su.execute("SELECT vecguard.add_key('es1', 'ES256', %s)", [pem_public(EC_KEY)])
        su.execute("SELECT vecguard.add_key('ed1', 'EdDSA', %s)", [pem_public(ED_KEY)])
        su.execute(f"GRANT CREATE ON SCHEMA public TO docowner")
        su.execute("""
            CREATE TABLE docs (
              id int PRIMARY KEY, tenant_id text NOT NULL, clearance int NOT NULL,
              valid_from timestamptz, valid_until timestamptz, body text, embedding vector(3))""")
        su.execute(f"""
            INSERT INTO docs
            SELECT i, (ARRAY['acme','globex','initech'])[i % 3 + 1], i % 5,
                   CASE WHEN i % 10 = 7 THEN now() + interval '1 day'
                        WHEN i % 10 = 8 THEN now() - interval '1 day' END,
                   CASE WHEN i % 10 = 9 THEN now() - interval '1 hour'
                        WHEN i % 10 = 8 THEN now() + interval '1 day' END,
                   'doc ' || i, ARRAY[i, i % 7, 1]::real[]::vector
            FROM generate_series(1, {N}) i""")
        su.execute("CREATE INDEX docs_tenant_idx ON docs (tenant_id)")
        su.execute("ALTER TABLE docs OWNER TO docowner")
        su.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO app")
        su.execute("ANALYZE docs")
        su.execute("""SELECT vecguard.protect('docs', tenant => 'tenant_id', clearance => 'clearance',
                                             valid_from => 'valid_from', valid_until => 'valid_until')""")
        su.execute(f"ALTER SYSTEM SET vecguard.jwt_issuer = '{ISS}'")
        su.execute(f"ALTER SYSTEM SET vecguard.jwt_audience = '{AUD}'")
        su.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)
    yield {"cluster": cluster, "db": dbname}
    with cluster.connect(dbname) as su:
        su.execute("ALTER SYSTEM RESET vecguard.jwt_issuer")
        su.execute("ALTER SYSTEM RESET vecguard.jwt_audience")
        su.execute("SELECT pg_reload_conf()")


@pytest.fixture
def su(env):
    with env["cluster"].connect(env["db"]) as c:
        yield c


@pytest.fixture
def app(env):
    with env["cluster"].connect(env["db"], user="app") as c:
        assert c.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        yield c


@pytest.fixture
def app2(env):
    with env["cluster"].connect(env["db"], user="app") as c:
        yield c


def new_app(env):
    return env["cluster"].connect(env["db"], user="app")


# ----------------------------------------------------------------------------- identity

def test_no_token_grants_nothing(app):
    assert app.execute("SELECT vecguard.token_status(), vecguard.tenant(), vecguard.tenants(), "
                       "vecguard.clearance(), vecguard.subject(), vecguard.claims()").fetchone() == (
        "none", None, None, None, None, None)
    assert ids(app) == []


@pytest.mark.parametrize("kid", ["hs1", "rs1", "es1", "ed1"])
def test_valid_token_each_algorithm(app, kid):
    set_token(app, token(kid, tenant="acme", clearance=2))
    row = app.execute("SELECT vecguard.token_status(), vecguard.tenant(), vecguard.tenants(), "
                      "vecguard.clearance(), vecguard.subject(), vecguard.roles(), "
                      "vecguard.claims()->>'iss'").fetchone()
    assert row == ("valid", "acme", ["acme"], 2, "alice", ["reader"], ISS)
    assert ids(app) == expected_ids(("acme",), 2)
    # the same role with another tenant's token sees exactly the other tenant's rows
    set_token(app, token(kid, tenant="globex", clearance=2))
    assert ids(app) == expected_ids(("globex",), 2)
    assert not set(ids(app)) & set(expected_ids(("acme",), 4))


def test_multi_tenant_token_and_claim_shapes(app):
    set_token(app, token(tenant=["acme", "globex"], clearance=4))
    assert app.execute("SELECT vecguard.tenant(), vecguard.tenants()").fetchone() == (None, ["acme", "globex"])
    assert ids(app) == expected_ids(("acme", "globex"), 4)
    # a string clearance is not coerced: no clearance, no rows
    set_token(app, token(tenant="acme", clearance="4"))
    assert app.execute("SELECT vecguard.token_status(), vecguard.clearance()").fetchone() == ("valid", None)
    assert ids(app) == []
    # an object where a tenant is expected grants nothing
    set_token(app, token(tenant={"$ne": 0}))
    assert app.execute("SELECT vecguard.tenants()").fetchone() == (None,)
    assert ids(app) == []


def _negatives():
    now = int(time.time())
    good = token("hs1")
    h, p, s = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=="))
    payload["tenant_id"] = "globex"
    tampered_payload = f"{h}.{b64(json.dumps(payload).encode())}.{s}"
    tampered_sig = f"{h}.{p}.{s[:-4]}{'AAAA' if s[-4:] != 'AAAA' else 'BBBB'}"
    alg_none = b64(json.dumps({"alg": "none", "kid": "hs1", "typ": "JWT"}).encode()) + "." + p + "."
    rsa_pem_as_secret = hs_raw({"alg": "HS256", "kid": "rs1", "typ": "JWT"}, claims(),
                               pem_public(RSA_KEY).encode())
    string_exp = hs_raw({"alg": "HS256", "kid": "hs1"}, {**claims(), "exp": str(now + 600)}, SECRET.encode())
    no_exp = hs_raw({"alg": "HS256", "kid": "hs1"}, {k: v for k, v in claims().items() if k != "exp"},
                    SECRET.encode())
    oversize = token("hs1", padding="x" * (17 * 1024))
    no_kid = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    return [
        ("alg_none", alg_none, "alg_not_allowed"),
        ("hs256_with_rsa_public_key", rsa_pem_as_secret, "alg_mismatch"),
        ("tampered_payload", tampered_payload, "bad_signature"),
        ("tampered_signature", tampered_sig, "bad_signature"),
        ("expired", token("hs1", exp_in=-120), "expired"),
        ("nbf_in_future", token("hs1", nbf=now + 3600), "not_yet_valid"),
        ("wrong_issuer", token("hs1", iss="https://evil.example"), "wrong_issuer"),
        ("missing_issuer", token("hs1", iss=None), "wrong_issuer"),
        ("wrong_audience", token("hs1", aud="other-app"), "wrong_audience"),
        ("unknown_kid", pyjwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "nope"}), "unknown_key"),
        ("no_kid", no_kid, "missing_kid"),
        ("string_exp", string_exp, "bad_claim"),
        ("missing_exp", no_exp, "missing_exp"),
        ("oversize", oversize, "too_large"),
        ("garbage_base64", "!!!.@@@.###", "malformed"),
        ("not_a_jwt", "hello", "malformed"),
        ("sql_in_header", b64(b'{"alg":"HS256","kid":"x\' OR 1=1 --"}') + "." + p + "." + s, "unknown_key"),
    ]


NEGATIVES = _negatives()


@pytest.mark.parametrize("name,tok,code", NEGATIVES, ids=[n[0] for n in NEGATIVES])
def test_bad_tokens_grant_nothing(app, name, tok, code):
    set_token(app, tok)
    assert app.execute("SELECT vecguard.token_status()").fetchone() == (code,)
    assert app.execute("SELECT vecguard.tenant(), vecguard.tenants(), vecguard.clearance(), "
                       "vecguard.subject(), vecguard.roles(), vecguard.claims()").fetchone() == (None,) * 6
    assert ids(app) == []
    assert app.execute("SELECT count(*) FROM docs WHERE tenant_id = 'globex'").fetchone() == (0,)
    # strict mode: the same token is an error, SQLSTATE 28000, for claims and for queries
    app.execute("SET vecguard.strict = on")
    assert sqlstate(app, "SELECT vecguard.tenant()") == "28000"
    assert sqlstate(app, "SELECT count(*) FROM docs") == "28000"
    assert app.execute("SELECT vecguard.token_status()").fetchone() == (code,)
    # ...while a good token in strict mode still works
    set_token(app, token("hs1"))
    assert ids(app) == expected_ids()


def test_revoked_key(su, app):
    su.execute("SELECT vecguard.add_key('tmp1', 'HS384', %s)", ["k" * 48])
    tok = pyjwt.encode(claims(), "k" * 48, algorithm="HS384", headers={"kid": "tmp1"})
    set_token(app, tok)
    assert ids(app) == expected_ids()
    assert su.execute("SELECT vecguard.revoke_key('tmp1')").fetchone() == (True,)
    assert app.execute("SELECT vecguard.token_status()").fetchone() == ("revoked_key",)
    assert ids(app) == []
    assert su.execute("SELECT vecguard.revoke_key('tmp1')").fetchone() == (False,)


def test_sql_metacharacters_are_data(app):
    evil = "acme' OR '1'='1"
    set_token(app, token(tenant=evil, sub="x'); DROP TABLE docs; --"))
    assert app.execute("SELECT vecguard.tenant(), vecguard.subject()").fetchone() == (
        evil, "x'); DROP TABLE docs; --")
    assert ids(app) == []
    set_token(app, token(tenant="acme"))
    assert ids(app) == expected_ids()


def test_exp_rechecked_every_statement(app):
    set_token(app, token(exp_in=2))
    assert ids(app) == expected_ids()
    app.execute("BEGIN")
    assert ids(app) == expected_ids()
    time.sleep(3)
    # same session, same token, same transaction: the next statement no longer grants
    assert app.execute("SELECT vecguard.token_status()").fetchone() == ("expired",)
    assert ids(app) == []
    app.execute("COMMIT")


def test_revocation_reaches_connected_backend(env, su):
    su.execute("SELECT vecguard.add_key('live1', 'HS256', %s)", ["L" * 40])
    tok = pyjwt.encode(claims(), "L" * 40, algorithm="HS256", headers={"kid": "live1"})
    with new_app(env) as b:
        set_token(b, tok)
        assert ids(b) == expected_ids()
        assert ids(b) == expected_ids()  # cached
        su.execute("SELECT vecguard.revoke_key('live1')")
        assert ids(b) == []
        assert b.execute("SELECT vecguard.token_status()").fetchone() == ("revoked_key",)


def test_rotation_reaches_connected_backend(env, su):
    su.execute("SELECT vecguard.add_key('rot1', 'HS256', %s)", ["A" * 40])
    old = pyjwt.encode(claims(), "A" * 40, algorithm="HS256", headers={"kid": "rot1"})
    new = pyjwt.encode(claims(), "B" * 40, algorithm="HS256", headers={"kid": "rot1"})
    with new_app(env) as b:
        set_token(b, old)
        assert ids(b) == expected_ids()
        # adding an existing kid without replace is refused
        assert sqlstate(su, "SELECT vecguard.add_key('rot1', 'HS256', %s)", ["B" * 40]) == "23505"
        su.execute("SELECT vecguard.add_key('rot1', 'HS256', %s, replace => true)", ["B" * 40])
        assert ids(b) == []
        assert b.execute("SELECT vecguard.token_status()").fetchone() == ("bad_signature",)
        set_token(b, new)
        assert ids(b) == expected_ids()


def test_add_key_validation(su):
    assert sqlstate(su, "SELECT vecguard.add_key('w', 'HS256', 'short')") == "22023"
    assert sqlstate(su, "SELECT vecguard.add_key('w', 'HS256', %s)", [pem_public(RSA_KEY)]) == "22023"
    assert sqlstate(su, "SELECT vecguard.add_key('w', 'none', %s)", [SECRET]) == "22023"
    priv = RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
    assert sqlstate(su, "SELECT vecguard.add_key('w', 'RS256', %s)", [priv]) == "22023"
    assert su.execute("SELECT count(*) FROM vecguard.keys WHERE kid = 'w'").fetchone() == (0,)


def test_add_jwks(su, app):
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    jwk.update({"kid": "jw1", "alg": "RS256", "use": "sig"})
    enc = dict(jwk, kid="jw-enc", use="enc")
    assert su.execute("SELECT vecguard.add_jwks(%s)", [json.dumps({"keys": [jwk, enc]})]).fetchone() == (1,)
    tok = pyjwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "jw1"})
    set_token(app, tok)
    assert ids(app) == expected_ids()
    # a private JWK poisons the whole set
    bad = dict(jwk, kid="jw2", d="AAAA")
    assert sqlstate(su, "SELECT vecguard.add_jwks(%s)", [json.dumps({"keys": [bad]})]) == "22023"
    assert su.execute("SELECT count(*) FROM vecguard.keys WHERE kid IN ('jw2', 'jw-enc')").fetchone() == (0,)


def test_request_jwt_claims_not_trusted_by_default(app):
    forged = json.dumps({"sub": "mallory", "tenant_id": "acme", "clearance": 9})
    app.execute("SELECT set_config('request.jwt.claims', %s, false)", [forged])
    assert app.execute("SELECT vecguard.tenant(), vecguard.token_status()").fetchone() == (None, "none")
    assert ids(app) == []
    # an ordinary role cannot switch the trust on, by SET or set_config
    assert sqlstate(app, "SET vecguard.trust_request_claims = on") == "42501"
    assert sqlstate(app, "SELECT set_config('vecguard.trust_request_claims', 'on', false)") == "42501"
    assert ids(app) == []


def test_request_jwt_claims_trusted_when_superuser_says_so(su):
    # PostgREST style: a privileged session configures, then SET ROLE to the end-user role.
    su.execute("SET vecguard.trust_request_claims = on")
    su.execute("SET ROLE app")
    assert su.execute("SELECT current_user").fetchone() == ("app",)
    su.execute("SELECT set_config('request.jwt.claims', %s, false)",
               [json.dumps({"sub": "bob", "tenant_id": "globex", "clearance": 4})])
    assert su.execute("SELECT vecguard.subject(), vecguard.tenant()").fetchone() == ("bob", "globex")
    assert ids(su) == expected_ids(("globex",), 4)
    # expired request claims grant nothing
    su.execute("SELECT set_config('request.jwt.claims', %s, false)",
               [json.dumps({"tenant_id": "globex", "clearance": 4, "exp": int(time.time()) - 60})])
    assert ids(su) == []
    # app, even in this session, cannot turn the trust off/on itself
    assert sqlstate(su, "SET vecguard.trust_request_claims = off") == "42501"
    su.execute("RESET ROLE")


# ----------------------------------------------------------------------------- access paths

@pytest.fixture
def acme(app):
    set_token(app, token(tenant="acme", clearance=4))
    return app


def plan(conn, query, params=None):
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + query, params).fetchall())


def test_index_cond_for_ordinary_role(acme):
    acme.execute("SET enable_seqscan = off")
    acme.execute("SET enable_bitmapscan = off")
    p = plan(acme, "SELECT id FROM docs")
    # The policy's values come from InitPlans: EXPLAIN names their outputs $n up to
    # PostgreSQL 15 and (InitPlan n).col1 from 16 on.
    param = "$" if acme.info.server_version < 160000 else "(InitPlan "
    assert f"Index Cond: (tenant_id = ANY ({param}" in p, p
    assert "InitPlan" in p
    assert ids(acme) == expected_ids()


@pytest.mark.parametrize("scan,settings,node", [
    ("seq", ["enable_indexscan=off", "enable_bitmapscan=off", "enable_indexonlyscan=off"], "Seq Scan"),
    ("index", ["enable_seqscan=off", "enable_bitmapscan=off"], "Index Scan"),
    ("bitmap", ["enable_seqscan=off", "enable_indexscan=off", "enable_indexonlyscan=off"], "Bitmap Heap Scan"),
])
def test_scan_paths(acme, scan, settings, node):
    for s in settings:
        acme.execute("SET " + s)
    assert node in plan(acme, "SELECT id FROM docs WHERE tenant_id IN ('acme', 'globex')")
    assert ids(acme, "SELECT id FROM docs WHERE tenant_id IN ('acme', 'globex') ORDER BY id") == expected_ids()
    assert acme.execute("SELECT count(*) FROM docs WHERE tenant_id = 'globex'").fetchone() == (0,)
    set_token(acme, token(tenant="globex"))
    assert ids(acme, "SELECT id FROM docs WHERE tenant_id IN ('acme', 'globex') ORDER BY id") == expected_ids(("globex",))


def test_clearance_and_validity_windows(app):
    for c in range(5):
        set_token(app, token(tenant="acme", clearance=c))
        got = ids(app)
        assert got == expected_ids(("acme",), c)
        assert app.execute("SELECT coalesce(max(clearance), -1) FROM docs").fetchone()[0] <= c
    set_token(app, token(tenant="acme", clearance=None))
    assert ids(app) == []
    set_token(app, token(tenant="acme", clearance=4))
    # future valid_from (i%10=7) and past valid_until (i%10=9) are invisible; NULL bounds open
    assert app.execute("SELECT count(*) FROM docs WHERE id % 10 IN (7, 9)").fetchone() == (0,)
    assert app.execute("SELECT count(*) FROM docs WHERE valid_from IS NULL AND valid_until IS NULL").fetchone()[0] > 0
    assert app.execute("SELECT count(*) FROM docs WHERE id % 10 = 8").fetchone()[0] > 0


def test_copy_to(acme):
    with acme.cursor() as cur:
        with cur.copy("COPY docs (id, tenant_id) TO STDOUT") as cp:
            rows = [r for r in cp.rows()]
    assert sorted(int(r[0]) for r in rows) == expected_ids()
    assert {r[1] for r in rows} == {"acme"}
    with acme.cursor() as cur:
        with cur.copy("COPY (SELECT id FROM docs WHERE tenant_id = 'globex') TO STDOUT") as cp:
            assert list(cp.rows()) == []


def test_views(su, acme):
    su.execute("SET ROLE docowner")
    su.execute("CREATE OR REPLACE VIEW docs_owner_view AS SELECT id, tenant_id FROM docs")
    su.execute("CREATE OR REPLACE VIEW docs_invoker_view WITH (security_invoker = true) AS SELECT id, tenant_id FROM docs")
    su.execute("GRANT SELECT ON docs_owner_view, docs_invoker_view TO app")
    su.execute("RESET ROLE")
    for v in ["docs_owner_view", "docs_invoker_view"]:
        assert ids(acme, f"SELECT id FROM {v} ORDER BY id") == expected_ids(), v
        assert acme.execute(f"SELECT count(*) FROM {v} WHERE tenant_id <> 'acme'").fetchone() == (0,)
    set_token(acme, token(tenant="globex"))
    assert ids(acme, "SELECT id FROM docs_owner_view ORDER BY id") == expected_ids(("globex",))
    acme.execute("RESET vecguard.jwt")
    assert ids(acme, "SELECT id FROM docs_owner_view ORDER BY id") == []


def test_superuser_owned_view_is_reported_and_invoker_fixes_it(su, acme):
    # PostgreSQL exempts superusers from RLS, FORCE or not: a superuser-owned view over a
    # protected table is a hole. check_roles() must report it; security_invoker closes it.
    su.execute("CREATE OR REPLACE VIEW docs_su_view AS SELECT id, tenant_id FROM docs")
    su.execute("GRANT SELECT ON docs_su_view TO app")
    holes = su.execute("SELECT role, object::text FROM vecguard.check_roles() WHERE object IS NOT NULL").fetchall()
    assert ("postgres", "docs_su_view") in holes
    su.execute("ALTER VIEW docs_su_view SET (security_invoker = true)")
    holes = su.execute("SELECT object::text FROM vecguard.check_roles() WHERE object IS NOT NULL").fetchall()
    assert ("docs_su_view",) not in holes
    assert ids(acme, "SELECT id FROM docs_su_view ORDER BY id") == expected_ids()
    su.execute("DROP VIEW docs_su_view")


def test_functions(su, acme):
    su.execute("SET ROLE docowner")
    su.execute("CREATE OR REPLACE FUNCTION f_sql() RETURNS SETOF int LANGUAGE sql STABLE AS 'SELECT id FROM docs ORDER BY id'")
    su.execute("""CREATE OR REPLACE FUNCTION f_plpgsql() RETURNS SETOF int LANGUAGE plpgsql AS
                  $$ BEGIN RETURN QUERY EXECUTE 'SELECT id FROM docs ORDER BY id'; END $$""")
    su.execute("""CREATE OR REPLACE FUNCTION f_definer() RETURNS SETOF int LANGUAGE sql SECURITY DEFINER
                  SET search_path = public AS 'SELECT id FROM docs ORDER BY id'""")
    su.execute("RESET ROLE")
    for f in ["f_sql", "f_plpgsql", "f_definer"]:
        assert ids(acme, f"SELECT * FROM {f}()") == expected_ids(), f
    set_token(acme, token(tenant="globex"))
    for f in ["f_sql", "f_plpgsql", "f_definer"]:
        assert ids(acme, f"SELECT * FROM {f}()") == expected_ids(("globex",)), f
    acme.execute("RESET vecguard.jwt")
    for f in ["f_sql", "f_plpgsql", "f_definer"]:
        assert ids(acme, f"SELECT * FROM {f}()") == [], f


@pytest.mark.parametrize("mode", ["auto", "force_generic_plan", "force_custom_plan"])
def test_prepared_statement_follows_token(acme, mode):
    acme.execute(f"SET plan_cache_mode = {mode}")
    acme.execute("PREPARE q(int) AS SELECT id FROM docs WHERE clearance <= $1 ORDER BY id")
    for _ in range(3):
        for t in ["acme", "globex", "initech"]:
            set_token(acme, token(tenant=t))
            assert ids(acme, "EXECUTE q(4)") == expected_ids((t,)), (mode, t)
    acme.execute("RESET vecguard.jwt")
    assert ids(acme, "EXECUTE q(4)") == []
    # the protocol-level prepared statement psycopg makes after 5 runs behaves the same
    for i in range(8):
        t = TENANTS[i % 3]
        set_token(acme, token(tenant=t))
        assert [r[0] for r in acme.execute("SELECT id FROM docs WHERE clearance <= %s ORDER BY id",
                                           [4], prepare=True)] == expected_ids((t,))


def test_cursors(env, acme):
    acme.execute("BEGIN")
    acme.execute("DECLARE c CURSOR FOR SELECT id, tenant_id FROM docs ORDER BY id")
    rows = acme.execute("FETCH ALL FROM c").fetchall()
    acme.execute("COMMIT")
    assert [r[0] for r in rows] == expected_ids()
    acme.execute("BEGIN")
    acme.execute("DECLARE h CURSOR WITH HOLD FOR SELECT id, tenant_id FROM docs ORDER BY id")
    acme.execute("COMMIT")
    # the held cursor keeps what acme was allowed at open time; switching to globex
    # never makes globex (or any other tenant's) rows appear in it
    set_token(acme, token(tenant="globex"))
    rows = acme.execute("FETCH ALL FROM h").fetchall()
    assert {r[1] for r in rows} == {"acme"}
    acme.execute("CLOSE h")
    acme.execute("BEGIN")
    acme.execute("DECLARE g CURSOR FOR SELECT id, tenant_id FROM docs ORDER BY id")
    assert {r[1] for r in acme.execute("FETCH ALL FROM g").fetchall()} == {"globex"}
    acme.execute("COMMIT")


def test_parallel_workers(acme):
    for s in ["parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
              "max_parallel_workers_per_gather = 2", "enable_indexscan = off", "enable_bitmapscan = off",
              "enable_indexonlyscan = off"]:
        acme.execute("SET " + s)
    text = "\n".join(r[0] for r in acme.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT id, tenant_id FROM docs").fetchall())
    assert "Parallel Seq Scan" in text, text
    launched = [int(l.split(":")[1]) for l in text.splitlines() if "Workers Launched" in l]
    assert launched and launched[0] > 0, text
    rows = acme.execute("SELECT id, tenant_id FROM docs").fetchall()
    assert sorted(r[0] for r in rows) == expected_ids()
    assert acme.execute("SELECT count(*) FROM docs WHERE tenant_id = 'globex'").fetchone() == (0,)
    acme.execute("RESET vecguard.jwt")
    assert acme.execute("SELECT count(*) FROM docs").fetchone() == (0,)


def test_writes(su, acme):
    acme.execute("BEGIN")
    # own tenant, within clearance: fine
    acme.execute("INSERT INTO docs (id, tenant_id, clearance, body) VALUES (10001, 'acme', 1, 'mine')")
    # another tenant or above clearance: WITH CHECK refuses (42501)
    assert sqlstate(acme, "INSERT INTO docs (id, tenant_id, clearance) VALUES (10002, 'globex', 1)") == "42501"
    acme.execute("BEGIN")
    assert sqlstate(acme, "INSERT INTO docs (id, tenant_id, clearance) VALUES (10003, 'acme', 9)") == "42501"
    acme.execute("BEGIN")
    # moving an own row into another tenant is refused
    assert sqlstate(acme, "UPDATE docs SET tenant_id = 'globex' WHERE id = 3") == "42501"
    acme.execute("BEGIN")
    # other tenants' rows are untouchable: 0 rows affected
    assert acme.execute("UPDATE docs SET body = 'pwned' WHERE tenant_id = 'globex'").rowcount == 0
    assert acme.execute("DELETE FROM docs WHERE tenant_id = 'globex'").rowcount == 0
    assert acme.execute("UPDATE docs SET body = 'pwned' WHERE id = 1").rowcount == 0  # id 1 is globex
    assert acme.execute("UPDATE docs SET body = 'ok' WHERE id = 3").rowcount == 1  # id 3 is acme
    # ON CONFLICT: updating another tenant's row through an upsert fails
    assert sqlstate(acme, "INSERT INTO docs (id, tenant_id, clearance) VALUES (1, 'acme', 1) "
                          "ON CONFLICT (id) DO UPDATE SET body = 'pwned'") == "42501"
    acme.execute("BEGIN")
    assert acme.execute("INSERT INTO docs (id, tenant_id, clearance) VALUES (1, 'acme', 1) "
                        "ON CONFLICT (id) DO NOTHING").rowcount == 0
    acme.execute("ROLLBACK")
    assert su.execute("SELECT count(*) FROM docs WHERE body = 'pwned'").fetchone() == (0,)
    # without a token nothing can be written at all
    acme.execute("RESET vecguard.jwt")
    assert sqlstate(acme, "INSERT INTO docs (id, tenant_id, clearance) VALUES (10004, 'acme', 0)") == "42501"


def test_access_hours(su, app):
    su.execute("CREATE TABLE shifts (id int, tenant_id text)")
    su.execute("INSERT INTO shifts SELECT i, 'acme' FROM generate_series(1, 10) i")
    su.execute("ALTER TABLE shifts OWNER TO docowner")
    su.execute("GRANT SELECT ON shifts TO app")
    su.execute("""SELECT vecguard.protect('shifts', tenant => 'tenant_id', hours_days => 'daily',
                  hours_start => '00:00', hours_end => '24:00', hours_tz => 'Europe/Berlin')""")
    set_token(app, token(tenant="acme"))
    assert app.execute("SELECT count(*) FROM shifts").fetchone() == (10,)
    # a window that starts two hours from now and lasts one hour excludes the present
    h = (time.gmtime().tm_hour + 2) % 24
    su.execute(f"""SELECT vecguard.protect('shifts', tenant => 'tenant_id', hours_days => 'mon-sun',
                   hours_start => '{h:02d}:00', hours_end => '{(h + 1) % 24:02d}:00', hours_tz => 'UTC')""")
    assert app.execute("SELECT count(*) FROM shifts").fetchone() == (0,)
    assert app.execute("SELECT vecguard.access_hours_ok('daily', '00:00', '24:00', 'UTC'), "
                       "vecguard.access_hours_ok('daily', 'xx', '24:00', 'UTC')").fetchone() == (True, False)
    assert sqlstate(su, "SELECT vecguard.protect('shifts', tenant => 'tenant_id', hours_days => 'mon', "
                        "hours_start => '08:00', hours_end => '18:00', hours_tz => 'Mars/Olympus')") == "22023"


def test_protect_errors_and_unprotect(su, app):
    su.execute("CREATE TABLE scratch (id int, tenant_id text, lvl text)")
    su.execute("INSERT INTO scratch VALUES (1, 'acme', 'x'), (2, 'globex', 'y')")
    su.execute("GRANT SELECT ON scratch TO app")
    assert sqlstate(su, "SELECT vecguard.protect('scratch', tenant => 'nope')") == "42703"
    assert sqlstate(su, "SELECT vecguard.protect('scratch', clearance => 'lvl')") == "42804"
    assert sqlstate(su, "SELECT vecguard.protect('scratch')") == "22023"
    su.execute("SELECT vecguard.protect('scratch', tenant => 'tenant_id')")
    assert su.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'scratch'::regclass").fetchone() == (True, True)
    set_token(app, token(tenant="acme"))
    assert app.execute("SELECT id FROM scratch").fetchall() == [(1,)]
    su.execute("SELECT vecguard.unprotect('scratch')")
    assert su.execute("SELECT relrowsecurity, relforcerowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = 'scratch'::regclass) "
                      "FROM pg_class WHERE oid = 'scratch'::regclass").fetchone() == (False, False, 0)
    assert app.execute("SELECT count(*) FROM scratch").fetchone() == (2,)


def test_protection_lives_in_catalog(env, su):
    # A brand-new backend that has not loaded the library yet is still filtered.
    with new_app(env) as b:
        assert b.execute("SELECT count(*) FROM pg_class WHERE relname = 'docs' AND relforcerowsecurity").fetchone() == (1,)
        assert b.execute("SELECT count(*) FROM docs").fetchone() == (0,)


def test_check_roles(su):
    su.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bypasser') "
               "THEN CREATE ROLE bypasser BYPASSRLS; END IF; END $$")
    su.execute("CREATE TABLE unforced (id int, tenant_id text)")
    su.execute("SELECT vecguard.protect('unforced', tenant => 'tenant_id')")
    su.execute("ALTER TABLE unforced NO FORCE ROW LEVEL SECURITY")
    rows = su.execute("SELECT role, problem, object::text FROM vecguard.check_roles()").fetchall()
    assert any(r[0] == "postgres" and r[1].startswith("superuser") for r in rows)
    assert any(r[0] == "bypasser" and r[1].startswith("bypassrls") for r in rows)
    assert any(r[2] == "unforced" and "FORCE" in r[1] for r in rows)
    assert not any(r[0] == "app" for r in rows)
    assert not any(r[2] == "docs" for r in rows)


def test_superuser_settings_before_library_load(env):
    # In a fresh backend the library is not loaded yet, so SET only makes a placeholder;
    # PostgreSQL re-checks it when vecguard defines the setting and drops it.
    with new_app(env) as b:
        b.execute("SET vecguard.trust_request_claims = on")
        b.execute("SET vecguard.audit = off")
        b.execute("SELECT set_config('request.jwt.claims', %s, false)",
                  [json.dumps({"tenant_id": "acme", "clearance": 4})])
        assert ids(b) == []
        assert b.execute("SELECT current_setting('vecguard.trust_request_claims'), "
                         "current_setting('vecguard.audit')").fetchone() == ("off", "all")


def test_privileges_of_ordinary_role(app):
    set_token(app, token())
    assert ids(app) == expected_ids()  # library loaded: settings are defined now
    assert sqlstate(app, "SELECT * FROM vecguard.keys") == "42501"
    assert sqlstate(app, "SELECT vecguard.add_key('x', 'HS256', %s)", [SECRET]) == "42501"
    assert sqlstate(app, "SELECT vecguard.add_jwks('{\"keys\":[]}')") == "42501"
    assert sqlstate(app, "SELECT vecguard.revoke_key('hs1')") == "42501"
    assert sqlstate(app, "SELECT vecguard.protect('docs', tenant => 'tenant_id')") == "42501"
    assert sqlstate(app, "SELECT vecguard.unprotect('docs')") == "42501"
    assert sqlstate(app, "SELECT * FROM vecguard.audit_log()") == "42501"
    assert sqlstate(app, "SELECT * FROM vecguard.audit_verify()") == "42501"
    assert sqlstate(app, "SELECT * FROM vecguard.check_roles()") == "42501"
    assert sqlstate(app, "SELECT pg_read_file('pg_vecguard/audit.log')") == "42501"
    assert sqlstate(app, "COPY docs FROM '/etc/passwd'") == "42501"
    assert sqlstate(app, "SET vecguard.audit = off") == "42501"
    assert sqlstate(app, "SET vecguard.claim_tenant = 'sub'") == "42501"
    assert sqlstate(app, "SET vecguard.jwt_issuer = ''") == "42501"
    assert sqlstate(app, "ALTER TABLE docs NO FORCE ROW LEVEL SECURITY") == "42501"
    # the token still verifies for app although app cannot read the key table
    assert ids(app) == expected_ids()


# ----------------------------------------------------------------------------- audit

def audit_rows(su):
    return su.execute("SELECT event, db_role, subject, tenant, kid, jti, decision, reason, policy, detail "
                      "FROM vecguard.audit_log()").fetchall()


def test_audit_records(su, app):
    tok = token(tenant="initech", jti="audit-jti-1")
    set_token(app, tok)
    for _ in range(3):
        ids(app)
    set_token(app, token(exp_in=-100))
    ids(app)
    ids(app)
    rows = audit_rows(su)
    accepted = [r for r in rows if r[0] == "token_accepted" and r[5] == "audit-jti-1"]
    assert len(accepted) == 1  # once per backend and token, not per statement
    assert accepted[0][1:8] == ("app", "alice", "initech", "hs1", "audit-jti-1", "allow", None)
    rejected = {r[7] for r in rows if r[0] == "token_rejected" and r[6] == "deny"}
    assert {"expired", "bad_signature", "alg_not_allowed", "unknown_key", "too_large", "malformed",
            "revoked_key", "wrong_issuer", "wrong_audience", "bad_claim"} <= rejected
    events = {r[0] for r in rows}
    assert {"key_added", "key_revoked", "key_rotated", "protect", "unprotect"} <= events
    assert any(r[0] == "protect" and r[8] == "public.docs" for r in rows)
    assert all("s3cret" not in (r[9] or "") for r in rows)  # no secrets in the log
    assert su.execute("SELECT ok, reason FROM vecguard.audit_verify()").fetchone() == (True, None)


def test_audit_settings_and_rollback(su):
    su.execute("SET vecguard.strict = on")
    su.execute("SELECT set_config('vecguard.claim_roles', 'groups', false)")
    su.execute("SELECT 1")
    su.execute("BEGIN")
    su.execute("SELECT vecguard.add_key('rolled-back', 'HS256', %s)", [SECRET])
    su.execute("ROLLBACK")
    rows = audit_rows(su)
    settings = [json.loads(r[9]) for r in rows if r[0] == "setting_changed"]
    assert {"setting": "vecguard.strict", "old": "off", "new": "on"} in settings
    assert any(s.get("setting") == "vecguard.claim_roles" and s.get("new") == "groups" for s in settings)
    # the key is gone with the rollback, its audit record is not
    assert su.execute("SELECT count(*) FROM vecguard.keys WHERE kid = 'rolled-back'").fetchone() == (0,)
    assert any(r[0] == "key_added" and r[4] == "rolled-back" for r in rows)
    su.execute("SET vecguard.audit = denials")
    su.execute("SET vecguard.audit = off")
    rows = audit_rows(su)
    assert any(r[0] == "setting_changed" and json.loads(r[9]).get("new") == "off" for r in rows)
    su.execute("RESET vecguard.audit")


def test_audit_tamper_detection(env, su):
    data = env["cluster"].data / "pg_vecguard"
    log, head = data / "audit.log", data / "audit.head"
    su.execute("SELECT vecguard.revoke_key('no-such-kid')")  # make sure there are records
    assert su.execute("SELECT ok FROM vecguard.audit_verify()").fetchone() == (True,)
    original = log.read_bytes()
    lines = original.decode().splitlines(keepends=True)
    assert len(lines) >= 3
    try:
        # 1. edit one field of a middle record
        edited = lines[:]
        edited[1] = edited[1].replace('"db_role":"', '"db_role":"x', 1)
        log.write_text("".join(edited))
        ok, _, bad, reason, _ = su.execute("SELECT * FROM vecguard.audit_verify()").fetchone()
        assert (ok, bad) == (False, 2), reason
        # 2. delete a middle record
        log.write_text("".join(lines[:1] + lines[2:]))
        assert su.execute("SELECT ok, first_bad_line FROM vecguard.audit_verify()").fetchone() == (False, 2)
        # 3. cut off the newest record: the chain is intact, the head anchor catches it
        log.write_text("".join(lines[:-1]))
        ok, _, _, reason, _ = su.execute("SELECT * FROM vecguard.audit_verify()").fetchone()
        assert not ok and "truncated" in reason
        # 4. remove the anchor
        log.write_bytes(original)
        saved_head = head.read_bytes()
        head.unlink()
        assert su.execute("SELECT ok FROM vecguard.audit_verify()").fetchone() == (False,)
        head.write_bytes(saved_head)
        shutil.chown(head, "postgres", "postgres")
    finally:
        log.write_bytes(original)
        shutil.chown(log, "postgres", "postgres")
    assert su.execute("SELECT ok FROM vecguard.audit_verify()").fetchone() == (True,)


def test_setting_reverted_by_failed_transaction(su):
    su.execute("SELECT vecguard.token_status()")  # library loaded, baseline taken
    su.execute("BEGIN")
    su.execute("SET LOCAL vecguard.jwt_leeway = 7")
    assert sqlstate(su, "SELECT 1 / 0") == "22012"  # ROLLBACK of an aborted block
    assert su.execute("SELECT current_setting('vecguard.jwt_leeway')").fetchone() == ("0",)
    su.execute("SET vecguard.claim_subject = 'email'")
    changes = [json.loads(r[9]) for r in audit_rows(su) if r[0] == "setting_changed"]
    leeway = [(c["old"], c["new"]) for c in changes if c.get("setting") == "vecguard.jwt_leeway"]
    assert ("0", "7") in leeway and ("7", "0") in leeway
    assert su.execute("SELECT ok FROM vecguard.audit_verify()").fetchone() == (True,)
