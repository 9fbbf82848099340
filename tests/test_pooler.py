"""vecguard identity behind PgBouncer in transaction pooling mode.

The threat: with `pool_mode = transaction` PgBouncer hands a server connection to a client
for one transaction only; the next transaction of the same client may run on another server
connection, and the next client may run on this one. Whatever a client leaves behind in the
*session* of a server connection is inherited by strangers. A session-level
`SET vecguard.jwt = '<token>'` is exactly such a leftover: the next client on that server
connection, sending no token at all, is then authorized as the previous client, and row
level security hands it the previous client's tenant's rows. PgBouncer's
`server_reset_query` (DISCARD ALL) would clear it, but PgBouncer only runs it in session
pooling mode (unless `server_reset_query_always = 1`), so nothing clears it here.

vecguard's answer (`vecguard.token_scope = transaction`, the default): an identity lives for
one transaction only. `SET LOCAL vecguard.jwt`, `set_config('vecguard.jwt', tok, true)` and
`vecguard.login(tok)` inside a transaction are the allowed forms; they vanish at COMMIT or
ROLLBACK, before PgBouncer gives the server connection to anyone else. A session-level token
is refused with SQLSTATE 28000: at `SET vecguard.jwt` itself, and for the ways a SET cannot
be intercepted (set_config(..., false), PGOPTIONS) at the next statement that resolves the
identity. `vecguard.token_scope = session` (superuser-only, e.g. per database for
applications that own their connections) restores session tokens, and with them the leak
that test_session_scope_leaks_through_pooler demonstrates.

The tests run a real PgBouncer (Debian's `pgbouncer`) in front of the test cluster, as the
ordinary LOGIN role `pooler_app` (no superuser, no BYPASSRLS).
"""

import os
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import jwt as pyjwt
import psycopg
import pytest

from pgbouncer import PgBouncer, pgbouncer_binary

ROLE = "pooler_app"
KID = "pool1"
SECRET = "pooler-s3cret-pooler-s3cret-pooler-42"
TENANTS = ["t0", "t1", "t2", "t3", "t4"]
ROWS = {t: 10 * (k + 1) for k, t in enumerate(TENANTS)}  # 10, 20, 30, 40, 50: counts tell tenants apart
N_CLIENTS = 50
SERVER_CONNS = 4
N_TRANSACTIONS = 10_000
TABLE = "pooled_docs"

ROWS_QUERY = (f"SELECT pg_backend_pid(), (SELECT json_object_agg(tenant_id, n) FROM "
              f"(SELECT tenant_id, count(*) AS n FROM {TABLE} GROUP BY tenant_id) s)")


def make_token(tenant, exp_in=600):
    claims = {"sub": f"user-{tenant}", "tenant_id": tenant, "exp": int(time.time()) + exp_in}
    return pyjwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": KID})


def expected(tenant_claim):
    tenants = [tenant_claim] if isinstance(tenant_claim, str) else tenant_claim
    return {t: ROWS[t] for t in tenants}


def sqlstate_of(conn, query, params=None, in_tx=False):
    """The SQLSTATE `query` fails with (None if it succeeds), on an autocommit connection.

    in_tx: run it inside BEGIN ... ROLLBACK instead of as a statement of its own.
    """
    if in_tx:
        conn.execute("BEGIN")
    try:
        conn.execute(query, params)
    except psycopg.Error as e:
        return e.sqlstate
    finally:
        if in_tx:
            conn.execute("ROLLBACK")
    return None


def rows_seen(conn):
    pid, counts = conn.execute(ROWS_QUERY).fetchone()
    return pid, counts or {}


def prepare_database(cluster, db, session_scope=False):
    """Role, a protected table of 5 tenants (10..50 rows each) and an HS256 key in `db`."""
    with cluster.connect(db) as su:
        su.execute(f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} LOGIN;
              END IF;
            END $$""")
        su.execute(f"CREATE TABLE {TABLE} (id serial PRIMARY KEY, tenant_id text NOT NULL, body text)")
        for t, n in ROWS.items():
            su.execute(f"INSERT INTO {TABLE} (tenant_id, body) "
                       f"SELECT %s, 'doc ' || i FROM generate_series(1, %s) i", [t, n])
        su.execute(f"GRANT SELECT ON {TABLE} TO {ROLE}")
        su.execute("SELECT vecguard.add_key(%s, 'HS256', %s)", [KID, SECRET])
        su.execute(f"SELECT vecguard.protect('{TABLE}', tenant => 'tenant_id')")
        # vecguard's library is loaded now: is token_scope a setting of this build?
        has_scope = su.execute("SELECT current_setting('vecguard.token_scope', true)").fetchone()[0] is not None
        if session_scope and has_scope:
            su.execute(f"ALTER DATABASE {db} SET vecguard.token_scope = 'session'")
        has_login = su.execute("SELECT 1 FROM pg_proc WHERE proname = 'login' "
                               "AND pronamespace = 'vecguard'::regnamespace").fetchone() is not None
    return {"has_scope": has_scope, "has_login": has_login}


@pytest.fixture(scope="module")
def pooler(cluster, dbname):
    """PgBouncer (transaction pooling, 4 server connections per pool) in front of:

    * `vg`   -> dbname, the default pool of 4 server connections (test 1);
    * `vg1`  -> dbname, a pool of 1, so that two clients surely share one server connection;
    * `fresh` -> dbname, a pool of 1 whose server connection has not loaded vecguard yet;
    * `leak` -> a second database with `vecguard.token_scope = 'session'`, pool of 1.
    """
    if pgbouncer_binary() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("pgbouncer is not installed (scripts/setup.sh installs it)")
        pytest.skip("pgbouncer is not installed")
    info = prepare_database(cluster, dbname)
    leakdb = f"{dbname}_session"
    cluster.sql(f"DROP DATABASE IF EXISTS {leakdb} WITH (FORCE)")
    cluster.sql(f"CREATE DATABASE {leakdb}")
    cluster.sql("CREATE EXTENSION vecguard", dbname=leakdb)
    leak_info = prepare_database(cluster, leakdb, session_scope=True)
    bouncer = PgBouncer(
        cluster,
        databases={"vg": {"dbname": dbname},
                   "vg1": {"dbname": dbname, "pool_size": 1},
                   "fresh": {"dbname": dbname, "pool_size": 1},
                   "leak": {"dbname": leakdb, "pool_size": 1}},
        users=[ROLE, "postgres"],
        pool_mode="transaction",
        default_pool_size=SERVER_CONNS,
        max_client_conn=N_CLIENTS + 50,
    )
    try:
        bouncer.start()
        yield {"bouncer": bouncer, "db": dbname, "leakdb": leakdb, **info,
               "leak_has_scope": leak_info["has_scope"]}
    finally:
        bouncer.destroy()
        cluster.sql(f"DROP DATABASE IF EXISTS {leakdb} WITH (FORCE)")


# ----------------------------------------------------------------------------- test 1

def test_transaction_scoped_tokens_never_cross_clients(pooler):
    """50 clients, 4 server connections, 10,000 transactions, tenants interleaved.

    Each transaction sets its identity with a transaction-scoped form (SET LOCAL,
    vecguard.login(tok), set_config(..., true), in rotation), reads the protected table and
    commits; every fourth transaction sends no token at all. Every server connection thus
    serves a stream of different clients and tenants. Must hold for every transaction: it
    sees exactly its own tenants' rows (all of them, nothing else), and a transaction
    without a token sees nothing (an identity left behind by the previous client would show
    up there).
    """
    bouncer = pooler["bouncer"]
    tokens = [(t, make_token(t)) for t in TENANTS]
    tokens += [(c, make_token(c)) for c in (["t1", "t3"], ["t0", "t4"])]  # array claims
    forms = ["set_local", "login", "set_config_local"] if pooler["has_login"] else ["set_local", "set_config_local"]
    per_client = N_TRANSACTIONS // N_CLIENTS

    stats = {"transactions": 0, "with_token": 0, "without_token": 0, "foreign_rows": 0,
             "missing_rows": 0, "rows_without_token": 0, "errors": 0}
    forms_used = Counter()
    clients_per_pid = defaultdict(set)
    first_errors = []
    lock = threading.Lock()
    barrier = threading.Barrier(N_CLIENTS)

    def client(c):
        local = Counter()
        pids = defaultdict(int)
        errors = []
        used = Counter()
        with bouncer.connect("vg", ROLE) as conn:
            barrier.wait(timeout=30)
            for j in range(per_client):
                k = c * 7 + j  # interleave tenants across clients and within a client
                no_token = j % 4 == 3
                claim, tok = tokens[k % len(tokens)]
                form = forms[(c + j) % len(forms)]
                try:
                    with conn.transaction():
                        if not no_token:
                            if form == "set_local":
                                conn.execute(f"SET LOCAL vecguard.jwt = '{tok}'")
                            elif form == "login":
                                conn.execute("SELECT vecguard.login(%s)", [tok])
                            else:
                                conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [tok])
                        pid, counts = rows_seen(conn)
                except psycopg.Error as e:
                    local["errors"] += 1
                    if len(errors) < 3:
                        errors.append(f"client {c} tx {j} ({form}): {e.sqlstate} {e}")
                    continue
                local["transactions"] += 1
                pids[pid] += 1
                if no_token:
                    local["without_token"] += 1
                    local["rows_without_token"] += sum(counts.values())
                else:
                    used[form] += 1
                    local["with_token"] += 1
                    want = expected(claim)
                    local["foreign_rows"] += sum(n for t, n in counts.items() if t not in want)
                    local["missing_rows"] += sum(n - counts.get(t, 0) for t, n in want.items())
        with lock:
            for key, v in local.items():
                stats[key] += v
            for pid in pids:
                clients_per_pid[pid].add(c)
            forms_used.update(used)
            first_errors.extend(errors)

    t0 = time.monotonic()
    with ThreadPoolExecutor(N_CLIENTS) as pool:
        for f in [pool.submit(client, c) for c in range(N_CLIENTS)]:
            f.result(timeout=120)
    elapsed = time.monotonic() - t0

    servers = [s for s in bouncer.admin("SHOW SERVERS") if s["database"] == "vg"]
    print(f"\n[pooler] {stats['transactions']} transactions in {elapsed:.1f}s "
          f"({stats['with_token']} with token {dict(forms_used)}, {stats['without_token']} without); "
          f"{N_CLIENTS} clients over {len(clients_per_pid)} server connections "
          f"(clients per server connection: {sorted(len(v) for v in clients_per_pid.values())}); "
          f"foreign rows {stats['foreign_rows']}, missing rows {stats['missing_rows']}, "
          f"rows without token {stats['rows_without_token']}, errors {stats['errors']}")
    assert first_errors == [], first_errors[:5]
    assert stats["transactions"] == N_TRANSACTIONS
    assert stats["foreign_rows"] == 0
    assert stats["missing_rows"] == 0
    assert stats["rows_without_token"] == 0
    # the pooling really happened: few server connections, each shared by many clients
    assert 1 <= len(clients_per_pid) <= SERVER_CONNS and len(servers) <= SERVER_CONNS
    assert max(len(v) for v in clients_per_pid.values()) > 1
    if not pooler["has_login"]:
        pytest.fail("vecguard.login() does not exist in this build: only SET LOCAL and "
                    "set_config(..., true) were exercised")
    assert forms_used["login"] > 0


# ----------------------------------------------------------------------------- test 2

def test_session_level_token_refused(pooler, cluster):
    """Every way to leave a token in the session of a pooled server connection fails (28000).

    Runs on the `vg1` pool (one server connection), so that two clients are sure to share it.
    """
    bouncer = pooler["bouncer"]
    tok = make_token("t2")
    with bouncer.connect("vg1", ROLE) as a, bouncer.connect("vg1", ROLE) as b:
        try:
            # (vecguard.tenant() first: the setting exists once the backend has loaded vecguard)
            assert a.execute("SELECT vecguard.tenant() IS NULL, current_setting('vecguard.token_scope', true)"
                             ).fetchone() == (True, "transaction"), "vecguard.token_scope missing or not 'transaction'"
            # 1. SET without LOCAL: refused at once, in autocommit and inside a transaction
            assert sqlstate_of(a, f"SET vecguard.jwt = '{tok}'") == "28000"
            assert sqlstate_of(a, f"SET SESSION vecguard.jwt = '{tok}'", in_tx=True) == "28000"
            assert rows_seen(b)[1] == {}
            assert rows_seen(a)[1] == {}

            # 2. set_config(..., false): the setting is not intercepted, its use is
            state = sqlstate_of(a, "SELECT set_config('vecguard.jwt', %s, false)", [tok])
            assert state in (None, "28000")
            if state is None:
                assert sqlstate_of(a, f"SELECT tenant_id FROM {TABLE}") == "28000"
                assert sqlstate_of(a, "SELECT vecguard.tenant()") == "28000"
                # the other client now on that same server connection, with no token of its own,
                # must not be served as t2 either (refused, or nothing)
                state_b = sqlstate_of(b, f"SELECT tenant_id FROM {TABLE}")
                if state_b is None:
                    assert rows_seen(b)[1] == {}
                print(f"\n[pooler] set_config(.., false): next client on that server connection "
                      f"-> {state_b or 'no error, 0 rows'}")
                a.execute("RESET vecguard.jwt")
            assert rows_seen(b)[1] == {}

            # 3. vecguard.login(tok, local => false): a session-level login, refused as well
            if pooler["has_login"]:
                state = sqlstate_of(a, "SELECT vecguard.login(%s, false)", [tok])
                if state is None:
                    state = sqlstate_of(a, f"SELECT tenant_id FROM {TABLE}")
                    a.execute("RESET vecguard.jwt")
                assert state == "28000"
                # an invalid token is refused by login() itself
                bad = make_token("t2", exp_in=-600)
                assert sqlstate_of(a, "SELECT vecguard.login(%s)", [bad], in_tx=True) == "28000"
                # and login() + the allowed forms inside one transaction work
                with a.transaction():
                    a.execute("SELECT vecguard.login(%s)", [tok])
                    assert rows_seen(a)[1] == {"t2": ROWS["t2"]}
                assert rows_seen(b)[1] == {}
            assert rows_seen(b)[1] == {}
        finally:
            for c in (a, b):
                if not c.closed and c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    c.execute("RESET vecguard.jwt")

    # 4. SET as the very first statement of a server connection that has not loaded vecguard
    #    yet (no hook can see it: it becomes a placeholder that vecguard adopts when it loads)
    with bouncer.connect("fresh", ROLE) as f, bouncer.connect("fresh", ROLE) as g:
        state = sqlstate_of(f, f"SET vecguard.jwt = '{tok}'")
        assert state in (None, "28000")
        if state is None:
            state_next = sqlstate_of(g, f"SELECT tenant_id FROM {TABLE}")
            print(f"\n[pooler] SET on a backend without vecguard loaded: accepted; the next "
                  f"client's query on that server connection -> {state_next or 'no error'}")
            assert state_next == "28000"
            assert sqlstate_of(g, "SELECT vecguard.tenant()") == "28000"
            f.execute("RESET vecguard.jwt")
        assert rows_seen(g)[1] == {}

    # 5. PGOPTIONS (the startup packet; PgBouncer does not forward `options`, so directly)
    with cluster.connect(pooler["db"], user=ROLE, options=f"-c vecguard.jwt={tok}") as d:
        assert sqlstate_of(d, f"SELECT tenant_id FROM {TABLE}") == "28000"
        assert sqlstate_of(d, "SELECT vecguard.tenant()") == "28000"
    assert pooler["has_login"], "vecguard.login() does not exist in this build"


# ----------------------------------------------------------------------------- test 3

def test_session_scope_leaks_through_pooler(pooler):
    """Why session tokens are refused by default: under token_scope = session they leak.

    The `leak` database has `ALTER DATABASE ... SET vecguard.token_scope = 'session'`, and a
    PgBouncer pool of ONE server connection. Client A sets a session-level token for tenant
    t2 and goes idle; client B, a different client that sends no token at all, gets the same
    server connection for its next transaction and is served as t2. PgBouncer's
    server_reset_query (DISCARD ALL) would have removed A's token, but in transaction mode
    PgBouncer does not run it (server_reset_query_always = 0, the default); only an explicit
    DISCARD ALL / RESET on that server connection ends the leak.
    """
    bouncer = pooler["bouncer"]
    tok = make_token("t2")
    with bouncer.connect("leak", ROLE) as a, bouncer.connect("leak", ROLE) as b:
        scope = a.execute("SELECT vecguard.tenant() IS NULL, "
                          "current_setting('vecguard.token_scope', true)").fetchone()[1]
        if pooler["leak_has_scope"]:
            assert scope == "session"
        else:  # a build without token_scope: session tokens are simply always allowed
            assert scope is None
        assert rows_seen(b)[1] == {}  # before A: nothing

        a.execute(f"SET vecguard.jwt = '{tok}'")  # session level, allowed under 'session'
        pid_a, seen_a = rows_seen(a)
        assert seen_a == {"t2": ROWS["t2"]}

        # B never sent a token, yet it is t2 now: same server connection, A's session state
        pid_b, seen_b = rows_seen(b)
        tenant_b = b.execute("SELECT vecguard.tenant()").fetchone()[0]
        leak_rows = sum(seen_b.values())
        print(f"\n[pooler] token_scope=session: client B (no token) on server pid {pid_b} "
              f"(A's: {pid_a}) sees {seen_b} -> {leak_rows} leaked rows, vecguard.tenant() = {tenant_b!r}")
        assert pid_b == pid_a
        assert seen_b == {"t2": ROWS["t2"]} and leak_rows == ROWS["t2"]
        assert tenant_b == "t2"

        # a transaction-scoped token of B's own wins for its transaction only ...
        with b.transaction():
            b.execute(f"SET LOCAL vecguard.jwt = '{make_token('t0')}'")
            assert rows_seen(b)[1] == {"t0": ROWS["t0"]}
        # ... and A's session token is back underneath at COMMIT
        assert rows_seen(b)[1] == {"t2": ROWS["t2"]}

        # what server_reset_query would do in session pooling mode: DISCARD ALL ends it
        b.execute("DISCARD ALL")
        assert rows_seen(b)[1] == {}
        assert rows_seen(a)[1] == {}  # A's token is gone too: it was never A's, but the connection's
