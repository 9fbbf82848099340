"""Space reuse in hnsw indexes with key columns (issue 13, item 1): VACUUM repairs the
tenant lists and the tenant directory around deleted elements and frees their slots, and
inserts of any tenant reuse them. The per-backend caches of element keys and group members
follow the slots that change hands, so a reused slot answers with its new keys at once and
never with its old ones, and every answer stays exactly the caller's rows.
"""
import re

import numpy as np
import pytest

from test_hnsw import lit, rewrite_round

DIM = 16
TENANTS = 8


@pytest.fixture
def db(cluster, dbname):
    with cluster.connect(dbname) as conn:
        conn.autocommit = True
        yield conn


def index_bytes(conn, index):
    return conn.execute("SELECT pg_relation_size(%s)", [index]).fetchone()[0]


def checked(conn, index):
    out = conn.execute("SELECT vecguard.hnsw_check(%s)", [index]).fetchone()[0]
    assert out.startswith("ok:"), out
    return {k: int(v) for v, k in re.findall(
        r"(\d+) (live elements|deleted|free slots|unreachable in their group|unreachable)", out)}, out


def rows_of(conn, table):
    return {r[0]: (r[1], r[2], np.array(r[3].strip("[]").split(","), dtype=np.float64))
            for r in conn.execute(f"SELECT id, tenant_id, clearance, embedding::text FROM {table}")}


def top(conn, table, tenant, clearance, q, k=10):
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET hnsw.ef_search = 100")
    try:
        return [r[0] for r in conn.execute(
            f"SELECT id FROM {table} WHERE tenant_id = %s AND clearance <= %s "
            f"ORDER BY embedding <-> %s::vector LIMIT {k}", [tenant, clearance, lit(q)])]
    finally:
        conn.execute("RESET enable_seqscan")


def truth(rows, tenant, clearance, q, k=10):
    ids = [i for i, (t, c, _) in rows.items() if t == tenant and c <= clearance]
    ids.sort(key=lambda i: (float(np.sum((rows[i][2] - q) ** 2)), i))
    return ids[:k]


def make(db, table, n, rng):
    db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, tenant_id int NOT NULL, clearance int NOT NULL, "
               f"embedding vector({DIM})) WITH (autovacuum_enabled = false)")
    with db.cursor().copy(f"COPY {table} (id, tenant_id, clearance, embedding) FROM STDIN") as cp:
        for i in range(n):
            cp.write_row((i, i % TENANTS, i % 3, lit(rng.random(DIM, dtype=np.float32))))
    db.execute(f"CREATE INDEX {table}_idx ON {table} USING hnsw (tenant_id, embedding vector_l2_ops, clearance)")


def test_update_rounds_keep_a_bounded_size_and_exact_tenant_answers(db):
    """A fifth of the rows get new vectors each round, and half of those a new tenant, then
    VACUUM, ten times: the index stays within 1.3x of its first size (it used to grow by
    every version), hnsw_check passes with every live element reachable in the global graph
    and in its group, and each tenant's top 10 holds only its rows, at recall >= 0.9."""
    rng = np.random.default_rng(1301)
    n = 4000
    make(db, "ku", n, rng)
    db.execute("VACUUM ku")
    first = index_bytes(db, "ku_idx")
    sizes = []
    for r in range(10):
        rewrite_round(db, "ku", DIM, n, r,
                      f", tenant_id = CASE WHEN id %% 2 = 0 THEN (tenant_id + 1) %% {TENANTS} ELSE tenant_id END")
        sizes.append(index_bytes(db, "ku_idx"))
    print(f"index bytes: build {first}, after each round {sizes}")
    assert max(sizes) <= first * 1.3, (first, sizes)
    counts, out = checked(db, "ku_idx")
    assert counts["live elements"] == n and counts["unreachable"] == 0, out
    assert counts["unreachable in their group"] == 0, out
    rows = rows_of(db, "ku")
    hits = need = 0
    for t in range(TENANTS):
        for q in rng.random((5, DIM), dtype=np.float32):
            got = top(db, "ku", t, 1, q)
            want = truth(rows, t, 1, q)
            assert len(got) == len(want) == 10
            assert all(rows[i][0] == t and rows[i][1] <= 1 for i in got), "a row of another tenant or clearance"
            hits += len(set(got) & set(want))
            need += len(want)
    print(f"recall@10 over {TENANTS} tenants: {hits / need:.3f}")
    assert hits / need >= 0.9


def test_a_reused_slot_answers_with_its_new_keys_in_a_warm_backend(db, cluster, dbname):
    """One backend scans tenant 1 until its caches know every element of the group. All of
    tenant 1 is deleted and vacuumed, and as many rows of tenant 2 take the freed slots
    (the index does not grow). The same backend then finds exactly tenant 2's rows, new ones
    included, and nothing for tenant 1; a member-list scan (a condition beyond the tenant)
    agrees. Without the metapage generation its cache would still give the slots tenant 1's
    keys."""
    rng = np.random.default_rng(1302)
    n = 2400
    make(db, "kw", n, rng)
    with cluster.connect(dbname) as warm:
        warm.autocommit = True
        qs = rng.random((6, DIM), dtype=np.float32)
        for q in qs:
            top(warm, "kw", 1, 2, q, k=400)
            top(warm, "kw", 1, 0, q, k=400)
        size = index_bytes(db, "kw_idx")
        db.execute("DELETE FROM kw WHERE tenant_id = 1")
        db.execute("VACUUM kw")
        counts, out = checked(db, "kw_idx")
        freed = counts["free slots"]
        assert freed >= 250, out
        with db.cursor().copy("COPY kw (id, tenant_id, clearance, embedding) FROM STDIN") as cp:
            for i in range(n, n + n // TENANTS):
                cp.write_row((i, 2, i % 3, lit(rng.random(DIM, dtype=np.float32))))
        counts, out = checked(db, "kw_idx", )
        assert counts["free slots"] <= freed - 250, ("inserts did not reuse the freed slots", freed, out)
        assert index_bytes(db, "kw_idx") == size
        rows = rows_of(db, "kw")
        for q in qs:
            assert top(warm, "kw", 1, 2, q) == [], "tenant 1 has no rows left"
            for clearance in (2, 0):
                got = top(warm, "kw", 2, clearance, q, k=20)
                want = truth(rows, 2, clearance, q, k=20)
                assert all(rows[i][0] == 2 and rows[i][1] <= clearance for i in got)
                assert len(set(got) & set(want)) >= 19, (clearance, got, want)
        # Every tenant-2 row, the new ones in reused slots included, through the index.
        want = sorted(i for i, (t, c, _) in rows.items() if t == 2 and c <= 1)
        got = sorted(top(warm, "kw", 2, 1, qs[0], k=len(want) + 50))
        assert got == want


def test_a_tenant_whose_rows_all_go_keeps_its_group_and_comes_back(db):
    """Every row of tenant 3 is deleted and vacuumed: its group keeps its directory entry
    (nothing else of it), scans for it return nothing, and rows inserted for it later are
    found. The other tenants' slots are freed and reused meanwhile."""
    rng = np.random.default_rng(1303)
    n = 1600
    make(db, "kg", n, rng)
    db.execute("DELETE FROM kg WHERE tenant_id = 3 OR id % 4 = 1")
    db.execute("VACUUM kg")
    counts, out = checked(db, "kg_idx")
    assert counts["free slots"] > 0 and counts["deleted"] <= 40, out
    q = rng.random(DIM, dtype=np.float32)
    assert top(db, "kg", 3, 2, q) == []
    new = rng.random((30, DIM), dtype=np.float32)
    with db.cursor() as cur:
        cur.executemany("INSERT INTO kg VALUES (%s, 3, 0, %s)", [(n + i, lit(v)) for i, v in enumerate(new)])
    got = top(db, "kg", 3, 2, new[5], k=40)
    assert sorted(got) == list(range(n, n + 30))
    assert got[0] == n + 5
    db.execute("VACUUM kg")
    counts, out = checked(db, "kg_idx")
    assert counts["unreachable"] == 0 and counts["unreachable in their group"] == 0, out


def test_inserts_after_vacuum_never_land_on_directory_pages(db):
    """Twelve groups of 1,000+ rows have enough pivots to overflow the directory's bucket
    page, and the build puts the overflow pages after the elements. After a VACUUM moves the
    insert page back, inserts look forward for a freed slot or room: they must skip the
    directory pages (an insert that placed its element on the page of its group's entry
    waited for its own lock, forever, in the churn bench)."""
    rng = np.random.default_rng(1304)
    n, groups = 12600, 12
    db.execute("CREATE TABLE kd (id int PRIMARY KEY, tenant_id int NOT NULL, embedding vector(8)) "
               "WITH (autovacuum_enabled = false)")
    with db.cursor().copy("COPY kd (id, tenant_id, embedding) FROM STDIN") as cp:
        for i in range(n):
            cp.write_row((i, i % groups, lit(rng.random(8, dtype=np.float32))))
    db.execute("CREATE INDEX kd_idx ON kd USING hnsw (tenant_id, embedding vector_l2_ops)")
    db.execute("DELETE FROM kd WHERE id % 4 = 0")
    db.execute("VACUUM kd")
    db.execute("SET statement_timeout = '120s'")
    with db.cursor().copy("COPY kd (id, tenant_id, embedding) FROM STDIN") as cp:
        for i in range(n, n + 6000):
            cp.write_row((i, i % groups, lit(rng.random(8, dtype=np.float32))))
    db.execute("RESET statement_timeout")
    db.execute("VACUUM kd")
    counts, out = checked(db, "kd_idx")
    assert counts["live elements"] == n - n // 4 + 6000, out
    assert counts["unreachable"] == 0 and counts["unreachable in their group"] == 0, out
    q = rng.random(8, dtype=np.float32)
    got = [r[0] for r in db.execute(
        "SELECT id FROM kd WHERE tenant_id = 5 ORDER BY embedding <-> %s::vector LIMIT 10", [lit(q)])]
    assert len(got) == 10 and all(i % groups == 5 for i in got)
