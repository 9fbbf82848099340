"""SQL-level tests of pgvector's distances on the built-in `bit` type and binary_quantize."""

import random

import numpy as np
import psycopg
import pytest
from pgvector import Bit
from pgvector.psycopg import register_vector


def sqlstate_of(conn, query, params=None):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    assert conn.execute("SELECT 1").fetchone() == (1,), "backend must survive a bad input"
    return info.value.sqlstate, info.value.diag.message_primary


def one(conn, query, params=None):
    return conn.execute(query, params).fetchone()[0]


def ref_hamming(a: str, b: str) -> float:
    return float(sum(x != y for x, y in zip(a, b)))


def ref_jaccard(a: str, b: str) -> float:
    ab = sum(x == y == "1" for x, y in zip(a, b))
    aa, bb = a.count("1"), b.count("1")
    return 1.0 if ab == 0 else 1.0 - ab / (aa + bb - ab)


def test_pgvector_values(conn):
    row = conn.execute(
        "SELECT hamming_distance('111', '110'), hamming_distance('111', '000'), hamming_distance('', ''), "
        "'111'::bit(3) <~> '100', jaccard_distance('1111', '1110'), jaccard_distance('1111', '0000'), "
        "jaccard_distance('', ''), '1100'::bit(4) <%> '1000', hamming_distance('111', '000'::varbit(4))"
    ).fetchone()
    assert row == (1.0, 3.0, 0.0, 2.0, 0.25, 1.0, 1.0, 0.5, 3.0)


def test_length_errors(conn):
    assert sqlstate_of(conn, "SELECT hamming_distance('111', '00')") == ("22000", "different bit lengths 3 and 2")
    assert sqlstate_of(conn, "SELECT jaccard_distance('1111', '000')") == ("22000", "different bit lengths 4 and 3")
    assert sqlstate_of(conn, "SELECT '1'::bit(1) <~> '11'::bit(2)") == ("22000", "different bit lengths 1 and 2")
    assert sqlstate_of(conn, "SELECT '1'::varbit <%> '00'::varbit") == ("22000", "different bit lengths 1 and 2")


def test_random_lengths_against_reference(conn):
    """Awkward lengths around the kernels' word and vector widths, stored in a table so long
    values are TOASTed and compressed, compared with Python's bit counting."""
    rng = random.Random(14)
    conn.execute("CREATE TABLE bits (id int, a varbit, b varbit)")
    cases = []
    lengths = list(range(0, 70)) + [127, 128, 129, 511, 512, 513, 1023, 1025, 4096, 8191, 65535, 100003]
    for i, n in enumerate(lengths):
        density = rng.choice([0.0, 0.02, 0.5, 0.98, 1.0])
        a = "".join("1" if rng.random() < density else "0" for _ in range(n))
        b = "".join(rng.choice("01") for _ in range(n)) if rng.random() < 0.8 else a
        cases.append((i, a, b))
    with conn.cursor().copy("COPY bits FROM STDIN") as cp:
        for row in cases:
            cp.write_row(row)
    got = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, a <~> b, a <%> b, hamming_distance(b, a), jaccard_distance(b, a) FROM bits")}
    for i, a, b in cases:
        h, j = ref_hamming(a, b), ref_jaccard(a, b)
        assert got[i] == (h, j, h, j), (len(a), got[i], h, j)


def test_binary_quantize(conn):
    assert one(conn, "SELECT binary_quantize('[1,0,-1,0.5,1e-45,-0,3,2,-5]'::vector)::text") == "100110110"
    rng = np.random.default_rng(3)
    for dim in [1, 7, 8, 9, 63, 64, 65, 1536]:
        v = rng.standard_normal(dim).astype(np.float32)
        lit = "[" + ",".join(repr(float(x)) for x in v) + "]"
        expected = "".join("1" if x > 0 else "0" for x in v)
        assert one(conn, "SELECT binary_quantize(%s::vector)::text", [lit]) == expected
        # the result is a well-formed bit string: it round-trips and compares like one
        assert one(conn, f"SELECT binary_quantize(%s::vector) = %s::bit({dim})", [lit, expected]) is True
        assert one(conn, "SELECT length(binary_quantize(%s::vector))", [lit]) == dim
    # re-rank pattern: hamming on the quantized column, then exact distance
    conn.execute("CREATE TABLE bq (id int, v vector(16))")
    data = rng.standard_normal((200, 16)).astype(np.float32)
    with conn.cursor().copy("COPY bq FROM STDIN") as cp:
        for i, row in enumerate(data):
            cp.write_row((i, "[" + ",".join(repr(float(x)) for x in row) + "]"))
    q = "[" + ",".join(repr(float(x)) for x in data[17]) + "]"
    top = one(conn, "SELECT id FROM (SELECT id, v FROM bq ORDER BY binary_quantize(v)::bit(16) <~> "
                    "binary_quantize(%s::vector) LIMIT 20) c ORDER BY v <-> %s::vector LIMIT 1", [q, q])
    assert top == 17


def test_pgvector_python_bit(conn):
    register_vector(conn)
    conn.execute("CREATE TABLE bit_client (id int, b bit(9))")
    conn.execute("INSERT INTO bit_client VALUES (1, %s), (2, %s)", (Bit("101010101"), Bit("111111111")))
    assert one(conn, "SELECT id FROM bit_client ORDER BY b <~> %s LIMIT 1", (Bit("101010100"),)) == 1
    assert one(conn, "SELECT id FROM bit_client ORDER BY b <%%> %s LIMIT 1", (Bit("111111110"),)) == 2
