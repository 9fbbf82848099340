"""SQL-level tests of the pgvector-compatible `vector` type against a live cluster."""

import io
import struct

import numpy as np
import psycopg
import pytest
from psycopg import sql


def sqlstate_of(conn, query, params=None):
    """Runs a query that must fail; returns (sqlstate, message) and checks the backend lives."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    assert conn.execute("SELECT 1").fetchone() == (1,), "backend must survive a bad input"
    return info.value.sqlstate, info.value.diag.message_primary


@pytest.mark.parametrize(
    "literal,state,message",
    [
        ("[1,2", "22P02", 'invalid input syntax for type vector: "[1,2"'),
        ("[]", "22000", "vector must have at least 1 dimension"),
        ("[a]", "22P02", 'invalid input syntax for type vector: "[a]"'),
        ("[1,,2]", "22P02", 'invalid input syntax for type vector: "[1,,2]"'),
        ("1,2", "22P02", 'invalid input syntax for type vector: "1,2"'),
        ("[1] x", "22P02", 'invalid input syntax for type vector: "[1] x"'),
        ("[NaN]", "22000", "NaN not allowed in vector"),
        ("[Infinity]", "22000", "infinite value not allowed in vector"),
        ("[-Infinity]", "22000", "infinite value not allowed in vector"),
        ("[1e39]", "22003", '"1e39" is out of range for type vector'),
    ],
)
def test_bad_text_input(conn, literal, state, message):
    assert sqlstate_of(conn, "SELECT %s::vector", [literal]) == (state, message)


def test_too_many_dimensions(conn):
    lit = "[" + ",".join(["1"] * 16001) + "]"
    assert sqlstate_of(conn, "SELECT %s::vector", [lit]) == (
        "54000", "vector cannot have more than 16000 dimensions")
    assert conn.execute("SELECT vector_dims(%s::vector)", ["[" + ",".join(["1"] * 16000) + "]"]).fetchone() == (16000,)
    assert sqlstate_of(conn, "SELECT '[1]'::vector(16001)")[0] == "22023"
    assert sqlstate_of(conn, "SELECT '[1]'::vector(0)")[0] == "22023"


def test_text_output_and_whitespace(conn):
    rows = conn.execute(
        "SELECT ' [ 1 , 2.5,-3e-7 ,1e20 ] '::vector::text, '[0.1]'::vector::text, '[-0]'::vector::text").fetchone()
    assert rows == ("[1,2.5,-3e-07,1e+20]", "[0.1]", "[-0]")


def test_typmod_enforced_on_insert(conn):
    conn.execute("CREATE TABLE typmod_t (v vector(3))")
    conn.execute("INSERT INTO typmod_t VALUES ('[1,2,3]')")
    assert sqlstate_of(conn, "INSERT INTO typmod_t VALUES ('[1,2]')") == ("22000", "expected 3 dimensions, not 2")
    assert sqlstate_of(conn, "INSERT INTO typmod_t VALUES (ARRAY[1,2,3,4])") == ("22000", "expected 3 dimensions, not 4")
    assert sqlstate_of(conn, "UPDATE typmod_t SET v = '[1]'") == ("22000", "expected 3 dimensions, not 1")
    assert conn.execute("SELECT count(*) FROM typmod_t").fetchone() == (1,)
    assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = 'typmod_t'::regclass AND attname = 'v'").fetchone() == ("vector(3)",)


def test_casts(conn):
    q = ("SELECT ARRAY[1,2,3]::vector::text, ARRAY[1.5,2,3]::real[]::vector::text, "
         "ARRAY[1.5,2,3]::float8[]::vector::text, ARRAY[1.25,2,3]::numeric[]::vector::text, "
         "'[1,2,3]'::vector::real[]")
    assert conn.execute(q).fetchone() == ("[1,2,3]", "[1.5,2,3]", "[1.5,2,3]", "[1.25,2,3]", [1.0, 2.0, 3.0])
    # assignment casts from arrays into a vector column
    conn.execute("CREATE TABLE cast_t (v vector(2))")
    conn.execute("INSERT INTO cast_t VALUES (ARRAY[1,2]), (ARRAY[1.5,2.5]::float8[]), (ARRAY[3,4]::real[])")
    assert conn.execute("SELECT count(*) FROM cast_t").fetchone() == (3,)
    assert sqlstate_of(conn, "SELECT ARRAY[1,NULL,3]::vector") == ("22004", "array must not contain nulls")
    assert sqlstate_of(conn, "SELECT ARRAY[[1,2],[3,4]]::vector") == ("22000", "array must be 1-D")
    assert sqlstate_of(conn, "SELECT ARRAY[]::int[]::vector") == ("22000", "vector must have at least 1 dimension")
    assert sqlstate_of(conn, "SELECT ARRAY[1e300]::float8[]::vector") == ("22000", "infinite value not allowed in vector")
    assert sqlstate_of(conn, "SELECT ARRAY[1,2,3]::vector(2)") == ("22000", "expected 2 dimensions, not 3")


def test_operators_and_functions(conn):
    row = conn.execute(
        "SELECT '[1,2]'::vector <-> '[4,6]', '[1,2]'::vector <#> '[3,4]', '[1,0]'::vector <=> '[0,1]', "
        "'[1,2]'::vector <+> '[4,6]', l2_distance('[0,0]'::vector, '[3,4]'), inner_product('[1,2]'::vector, '[3,4]'), "
        "cosine_distance('[1,1]'::vector, '[2,2]'), l1_distance('[1,2]'::vector, '[3,5]'), "
        "vector_dims('[1,2,3]'::vector), vector_norm('[3,4]'), l2_normalize('[3,4]'::vector)::text, "
        "subvector('[1,2,3,4,5]'::vector, 2, 3)::text, "
        "('[1,2]'::vector + '[3,4]')::text, ('[1,2]'::vector - '[3,4]')::text, "
        "('[1,2]'::vector * '[3,4]')::text, ('[1,2]'::vector || '[3]')::text").fetchone()
    assert row[:4] == (5.0, -11.0, 1.0, 7.0)
    assert row[4:6] == (5.0, 11.0)
    assert abs(row[6]) < 1e-7
    assert row[7:] == (5.0, 3, 5.0, "[0.6,0.8]", "[2,3,4]", "[4,6]", "[-2,-2]", "[3,8]", "[1,2,3]")
    # cosine with a zero vector is NaN, as in pgvector
    assert np.isnan(conn.execute("SELECT '[0,0]'::vector <=> '[1,1]'").fetchone()[0])
    assert sqlstate_of(conn, "SELECT '[1,2]'::vector <-> '[1,2,3]'") == ("22000", "different vector dimensions 2 and 3")
    assert sqlstate_of(conn, "SELECT '[3e38]'::vector + '[3e38]'") == ("22003", "value out of range: overflow")


def test_btree_order_distinct_group_unique(conn):
    conn.execute("CREATE TABLE bt (v vector)")
    conn.execute("INSERT INTO bt VALUES ('[2,1]'), ('[1,2]'), ('[1,2]'), ('[1,2,0]'), ('[1]')")
    assert [r[0] for r in conn.execute("SELECT v::text AS t FROM bt ORDER BY bt.v")] == ["[1]", "[1,2]", "[1,2]", "[1,2,0]", "[2,1]"]
    assert conn.execute("SELECT count(DISTINCT v) FROM bt").fetchone() == (4,)
    assert conn.execute("SELECT count(*) FROM (SELECT v FROM bt GROUP BY v) s").fetchone() == (4,)
    assert sqlstate_of(conn, "CREATE UNIQUE INDEX ON bt (v)")[0] == "23505"
    conn.execute("DELETE FROM bt WHERE ctid IN (SELECT ctid FROM bt WHERE v = '[1,2]' LIMIT 1)")
    conn.execute("CREATE UNIQUE INDEX bt_v ON bt (v)")
    assert sqlstate_of(conn, "INSERT INTO bt VALUES ('[2,1]')")[0] == "23505"


def test_copy_binary_round_trip(conn):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((500, 37)).astype(np.float32)
    conn.execute("CREATE TABLE src (id int, v vector(37))")
    with conn.cursor().copy("COPY src FROM STDIN") as cp:
        for i, row in enumerate(data):
            cp.write_row((i, "[" + ",".join(repr(float(x)) for x in row) + "]"))
    buf = io.BytesIO()
    with conn.cursor().copy("COPY src TO STDOUT (FORMAT binary)") as cp:
        for chunk in cp:
            buf.write(chunk)
    conn.execute("CREATE TABLE dst (id int, v vector(37))")
    with conn.cursor().copy("COPY dst FROM STDIN (FORMAT binary)") as cp:
        cp.write(buf.getvalue())
    assert conn.execute("SELECT count(*) FROM src s JOIN dst d USING (id) WHERE s.v = d.v").fetchone() == (500,)
    # the values survive bit-exactly through text and binary
    got = conn.execute("SELECT v::real[] FROM dst ORDER BY id").fetchall()
    assert np.array_equal(np.array([g[0] for g in got], dtype=np.float32), data)


def _binary_param(conn, payload: bytes):
    """Sends `payload` as a binary-format parameter of type vector; returns the PGresult."""
    oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]
    res = conn.pgconn.exec_params(b"SELECT $1::text", [payload], [oid], [1])
    return res


def test_binary_recv_rejects_bad_messages(conn):
    ok = struct.pack(">hh3f", 3, 0, 1.0, 2.0, 3.0)
    res = _binary_param(conn, ok)
    assert res.status == psycopg.pq.ExecStatus.TUPLES_OK
    assert res.get_value(0, 0) == b"[1,2,3]"
    cases = [
        (struct.pack(">hh3f", 3, 1, 1.0, 2.0, 3.0), "22000", b"expected unused to be 0, not 1"),
        (struct.pack(">hh2f", 3, 0, 1.0, 2.0), "08P01", b"insufficient data left in message"),
        (struct.pack(">hh", 0, 0), "22000", b"vector must have at least 1 dimension"),
        (struct.pack(">hh", -5, 0), "22000", b"vector must have at least 1 dimension"),
        (struct.pack(">hhf", 1, 0, float("nan")), "22000", b"NaN not allowed in vector"),
    ]
    for payload, state, message in cases:
        res = _binary_param(conn, payload)
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode() == state
        assert res.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) == message
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_aggregates_under_parallel_query(conn):
    rng = np.random.default_rng(7)
    data = rng.standard_normal((60000, 8)).astype(np.float32)
    conn.execute("CREATE TABLE agg (v vector(8))")
    with conn.cursor().copy("COPY agg FROM STDIN") as cp:
        for row in data:
            cp.write_row(("[" + ",".join(repr(float(x)) for x in row) + "]",))
    conn.execute("ANALYZE agg")
    for setting in ["parallel_setup_cost = 0", "parallel_tuple_cost = 0",
                    "min_parallel_table_scan_size = 0", "max_parallel_workers_per_gather = 2"]:
        conn.execute("SET " + setting)
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) SELECT avg(v), sum(v) FROM agg"))
    assert "Partial Aggregate" in plan and "Workers Launched: 2" in plan, plan
    avg, total = conn.execute("SELECT avg(v)::real[], sum(v)::real[] FROM agg").fetchone()
    assert np.allclose(avg, data.astype(np.float64).mean(axis=0), atol=1e-5)
    assert np.allclose(total, data.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-2)
    assert conn.execute("SELECT avg(v) FROM agg WHERE false").fetchone() == (None,)
    assert sqlstate_of(conn, "SELECT avg(v) FROM (VALUES ('[1]'::vector), ('[1,2]')) t(v)") == (
        "22000", "expected 1 dimensions, not 2")
