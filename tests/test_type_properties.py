"""Property test: no SQL path builds a `vector` or `halfvec` that cannot be read back.

For every SQL-callable function that returns one of these types, random inputs (valid and
invalid) are fed in. Each call must either
  - fail with an ERROR that carries a SQLSTATE (and leave the backend alive), or
  - return a value v with `v::text::<type>` identical to v (compared by the binary send
    form, bit for bit) and whose binary form, sent back as a parameter (the receive
    function), is again identical to v.
That is exactly what pg_dump and restore need, in text and binary COPY.

Reproducible: case i of function f draws from random.Random(f"{SEED}:{f}:{i}");
VECGUARD_PROP_SEED overrides the fixed seed and VECGUARD_PROP_CASES the cases per function.
"""

from __future__ import annotations

import os
import random
import struct

import psycopg
import pytest

SEED = os.environ.get("VECGUARD_PROP_SEED", "14")
CASES = int(os.environ.get("VECGUARD_PROP_CASES", "120"))
MAX_DIM = 16000

# Numbers chosen to sit on every boundary the two types have: float4 and half overflow,
# subnormals of both, signed zeros, and the spellings strtof accepts.
SPECIAL = ["0", "-0", "1", "-1", "0.5", "1e-46", "-1e-46", "1e-8", "6e-8", "65504", "65519", "65520",
           "-65520", "70000", "3e38", "-3e38", "3.4028235e38", "4e38", "1e39", "NaN", "Infinity",
           "-inf", "0x1p-24", "0x1.ffcp15", "1.5e-5", "1e-30"]


def number(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        return rng.choice(SPECIAL)
    if r < 0.5:
        return str(rng.randint(-70000, 70000))
    return repr(rng.uniform(-1, 1) * 10 ** rng.randint(-45, 40))


def dim(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.03:
        return 0
    if r < 0.06:
        return rng.choice([MAX_DIM, MAX_DIM + 1])
    return rng.randint(1, 12)


def literal(rng: random.Random, n: int | None = None) -> str:
    n = dim(rng) if n is None else n
    body = ",".join(number(rng) for _ in range(n))
    text = f"[{body}]"
    if rng.random() < 0.1:  # a malformed literal now and then
        i = rng.randrange(len(text) + 1)
        text = text[:i] + rng.choice(["", ",", "]", "[", " ", "x", "e", "-"]) + text[i:]
    return text


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def value_expr(rng: random.Random, typ: str, n: int | None = None) -> str:
    """A SQL expression of type `typ` that may itself fail (that is an allowed outcome)."""
    return f"{sql_str(literal(rng, n))}::{typ}"


def array_expr(rng: random.Random, n: int | None = None) -> str:
    n = dim(rng) if n is None else n
    if n > 20:
        return f"array_fill({number(rng)}::float8, ARRAY[{n}])"
    elems = []
    for _ in range(n):
        elems.append("NULL" if rng.random() < 0.02 else sql_str(number(rng)))
    arr = f"ARRAY[{','.join(elems)}]" if elems else "'{}'"
    if rng.random() < 0.03:
        arr = f"ARRAY[{arr}]"  # two dimensions
    return arr


def state_expr(rng: random.Random, n: int | None = None) -> str:
    """A float8[] aggregate state `{count, sum1, ..., sumN}`, well-formed or not."""
    def q(x: str) -> str:
        return x if x == "NULL" else sql_str(x)
    if rng.random() < 0.1:
        return rng.choice(["'{}'::float8[]", "'{0}'::float8[]", "'{{1,2}}'::float8[]"])
    n = dim(rng) if n is None or rng.random() < 0.2 else n
    if n > 20:
        return f"(ARRAY[1]::float8[] || array_fill(1::float8, ARRAY[{n + rng.choice([-1, 0, 1])}]))"
    if rng.random() < 0.6:
        count = str(rng.randint(1, 3))
        sums = [repr(rng.uniform(-100, 100)) for _ in range(n)]
    else:
        count = rng.choice(["0", "1", "2", "-1", "0.5", "1e308", "NaN", "Infinity", "NULL"])
        sums = [rng.choice([number(rng), "1e308", "-1e308", "NaN", "Infinity", "NULL"]) for _ in range(n)]
    return "ARRAY[" + ",".join(q(x) for x in [count] + sums) + "]::float8[]"


def typmod(rng: random.Random) -> str:
    return rng.choice(["", "", "", "(1)", "(2)", "(3)", "(16000)"])


def pair(rng: random.Random, typ: str) -> tuple[str, str]:
    n = dim(rng)
    m = n if rng.random() < 0.85 else dim(rng)
    return value_expr(rng, typ, n), value_expr(rng, typ, m)


def cases_for(typ: str) -> dict[str, callable]:
    other = "halfvec" if typ == "vector" else "vector"
    p = typ  # prefix of the internal functions
    return {
        "text_in": lambda r: f"{sql_str(literal(r))}::{typ}{typmod(r)}",
        "typmod_cast": lambda r: f"({value_expr(r, typ)})::{typ}{typmod(r)}",
        "from_other": lambda r: f"({value_expr(r, other)})::{typ}{typmod(r)}",
        "from_int4_array": lambda r: f"(SELECT array_agg(round(x)::int4) FROM unnest({array_expr(r)}::float8[]) x)::{typ}",
        "from_float4_array": lambda r: f"({array_expr(r)}::real[])::{typ}{typmod(r)}",
        "from_float8_array": lambda r: f"({array_expr(r)}::float8[])::{typ}{typmod(r)}",
        "from_numeric_array": lambda r: f"({array_expr(r)}::float8[]::numeric[])::{typ}{typmod(r)}",
        "add": lambda r: "({} + {})".format(*pair(r, typ)),
        "sub": lambda r: "({} - {})".format(*pair(r, typ)),
        "mul": lambda r: "({} * {})".format(*pair(r, typ)),
        "concat": lambda r: "({} || {})".format(*pair(r, typ)),
        "l2_normalize": lambda r: f"l2_normalize({value_expr(r, typ)})",
        "subvector": lambda r: "subvector({}, {}, {})".format(
            value_expr(r, typ), r.choice([r.randint(-3, 14), 2147483647, -2147483644, -2147483648]),
            r.choice([r.randint(-2, 14), 2147483647])),
        "avg_final": lambda r: f"{p}_avg({state_expr(r)})",
        "accum_then_avg": lambda r: (lambda n: f"{p}_avg({p}_accum({state_expr(r, n)}, {value_expr(r, typ, n)}))")(
            r.randint(1, 6)),
        "combine_then_avg": lambda r: (lambda n: f"{p}_avg({p}_combine({state_expr(r, n)}, {state_expr(r, n)}))")(
            r.randint(1, 6)),
        "avg_aggregate": lambda r: "(SELECT avg(v) FROM (VALUES ({}), ({}), ({})) t(v))".format(
            value_expr(r, typ, 3), value_expr(r, typ, 3), value_expr(r, typ, r.choice([3, 3, 2]))),
        "sum_aggregate": lambda r: "(SELECT sum(v) FROM (VALUES ({}), ({})) t(v))".format(*pair(r, typ)),
    }


def binary_dumper(conn: psycopg.Connection, typ: str) -> type:
    """A bytes subclass that psycopg sends as a binary parameter of type `typ`."""
    oid = conn.execute("SELECT %s::regtype::oid", [typ]).fetchone()[0]

    class Value(bytes):
        pass

    class Dumper(psycopg.adapt.Dumper):
        format = psycopg.pq.Format.BINARY

        def dump(self, obj):
            return bytes(obj)

    Dumper.oid = oid
    conn.adapters.register_dumper(Value, Dumper)
    return Value


def binary_input(rng: random.Random, typ: str) -> bytes:
    """A binary send form, valid or corrupted in one of the ways a client could corrupt it."""
    size = 4 if typ == "vector" else 2
    n = dim(rng)
    kind = rng.random()
    if typ == "vector":
        vals = b"".join(struct.pack(">f", rng.choice([rng.uniform(-1e3, 1e3), 0.0, -0.0, 3e38])) for _ in range(min(n, 20)))
    else:
        vals = b"".join(struct.pack(">H", rng.randrange(0, 0x10000) if rng.random() < 0.2
                                    else struct.unpack(">H", struct.pack(">e", rng.uniform(-100, 100)))[0])
                        for _ in range(min(n, 20)))
    if n > 20:
        vals = bytes(size * n)
    unused = 0 if kind < 0.9 else rng.choice([1, -1])
    data = struct.pack(">hh", n if n < 32768 else 32767, unused) + vals
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data) + 1)]
    if rng.random() < 0.05:
        data += b"\x00" * rng.randint(1, 3)
    return data


def check_value(conn, typ: str, expr: str, params=(), binary_type=None) -> str:
    """Runs one case; returns 'error', 'null' or 'value', failing on any broken invariant."""
    send = f"{typ}_send"
    query = (f"SELECT {send}(v), {send}(v::text::{typ}), v::text "
             f"FROM (SELECT {expr} AS v) s")
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.errors.QueryCanceled as e:
        pytest.fail(f"timeout: {expr[:300]}: {e}")
    except psycopg.Error as e:
        assert e.sqlstate, f"error without SQLSTATE for {expr[:300]}: {e}"
        assert not e.sqlstate.startswith("XX") or "expected state array" in str(e), \
            f"internal error for {expr[:300]}: {e.sqlstate} {e}"
        assert not conn.closed and conn.execute("SELECT 1").fetchone() == (1,), f"backend died: {expr[:300]}"
        return "error"
    if row[0] is None:
        return "null"
    sent, via_text, text = bytes(row[0]), bytes(row[1]), row[2]
    assert via_text == sent, f"{expr[:300]}: text round trip changed {text}"
    # Binary round trip: the send form back through the receive function.
    back = conn.execute(f"SELECT {send}(%b)", [binary_type(sent)]).fetchone()[0]
    assert bytes(back) == sent, f"{expr[:300]}: binary round trip changed {text}"
    return "value"


@pytest.fixture
def pconn(cluster, dbname):
    with cluster.connect(dbname, autocommit=True) as c:
        c.execute("SET statement_timeout = '20s'")
        yield c


@pytest.mark.parametrize("typ", ["vector", "halfvec"])
def test_every_function_result_round_trips(pconn, typ):
    binary_type = binary_dumper(pconn, typ)
    outcomes = {}
    for name, make in cases_for(typ).items():
        counts = {"error": 0, "null": 0, "value": 0}
        for i in range(CASES):
            rng = random.Random(f"{SEED}:{typ}:{name}:{i}")
            expr = make(rng)
            counts[check_value(pconn, typ, expr, binary_type=binary_type)] += 1
        outcomes[name] = counts
        # A generator that never produces a value (or never an error) tests nothing.
        assert counts["value"] > 0, f"{typ} {name}: no case produced a value: {counts}"
    print(typ, outcomes)
    assert sum(c["error"] for c in outcomes.values()) > 0


@pytest.mark.parametrize("typ", ["vector", "halfvec"])
def test_receive_accepts_only_values_that_round_trip(pconn, typ):
    binary_type = binary_dumper(pconn, typ)
    counts = {"error": 0, "null": 0, "value": 0}
    for i in range(CASES * 4):
        rng = random.Random(f"{SEED}:{typ}:recv:{i}")
        data = binary_input(rng, typ)
        mod = rng.choice(["", "", "(1)", "(3)"])
        counts[check_value(pconn, typ, f"%b::{typ}{mod}", [binary_type(data)], binary_type)] += 1
    assert counts["value"] > 0 and counts["error"] > 0, counts
