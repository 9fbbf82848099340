"""A throwaway PostgreSQL cluster for cluster-level tests, demos and benchmarks.

Each Cluster owns a data directory, a port and a Unix socket directory of its own, so it
never touches a system service. When run as root the server runs as the `postgres` user
(Postgres refuses to run as root); as an ordinary user it runs as that user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


def pg_bindir() -> Path:
    """The bin directory of the PostgreSQL whose pg_config is first on PATH (or PG_CONFIG)."""
    pg_config = os.environ.get("PG_CONFIG", "/usr/bin/pg_config")
    out = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def pg_major() -> int:
    """The major version of that PostgreSQL (15, 18, ...)."""
    pg_config = os.environ.get("PG_CONFIG", "/usr/bin/pg_config")
    out = subprocess.run([pg_config, "--version"], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[1].split(".")[0])


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class Cluster:
    """initdb + pg_ctl around one data directory."""

    def __init__(self, base: Path | None = None, port: int | None = None, conf: dict | None = None,
                 bindir: Path | None = None, initdb_args: list[str] | None = None):
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="vecguard-pg-"))
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.data = self.base / "data"
        self.sockdir = self.base
        self.port = port or free_port()
        self.log = self.base / "server.log"
        self.bindir = Path(bindir) if bindir else pg_bindir()
        self.initdb_args = list(initdb_args or [])
        self.conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockdir}'",
            "port": str(self.port),
            "fsync": "off",
            "shared_buffers": "512MB",
            "maintenance_work_mem": "1GB",
            "max_parallel_workers_per_gather": "2",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "log_min_messages": "warning",
            # An autovacuum ANALYZE that starts right after a test loads its table holds a
            # snapshot in that database, and the test's own VACUUM then cannot remove the
            # rows it just deleted. Tests that assert what VACUUM removed need it off.
            "autovacuum": "off",
        }
        self.conf.update(conf or {})

    # -- lifecycle ------------------------------------------------------------------------
    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(_as_server_user([str(self.bindir / args[0]), *args[1:]]),
                              check=check, capture_output=True, text=True)

    def init(self) -> "Cluster":
        if not (self.data / "PG_VERSION").exists():
            self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                     *self.initdb_args)
            self.write_conf()
        return self

    def write_conf(self) -> None:
        lines = "".join(f"{k} = {v}\n" for k, v in self.conf.items())
        conf = self.data / "postgresql.auto.conf"
        text = conf.read_text() if conf.exists() else ""
        self._write_as_server(conf, text + lines)
        hba = self.data / "pg_hba.conf"
        extra = "local replication all trust\nhost replication all 127.0.0.1/32 trust\n"
        if "replication all 127.0.0.1/32" not in hba.read_text():
            self._write_as_server(hba, hba.read_text() + extra)

    def _write_as_server(self, path: Path, text: str) -> None:
        path.write_text(text)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def start(self) -> "Cluster":
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill9(self) -> None:
        """Kills the postmaster with SIGKILL (a crash), then waits for its children to go."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # let orphaned backends notice the dead postmaster and exit

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # -- access ---------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.sockdir} port={self.port} dbname={dbname} user={user}"

    def connect(self, dbname: str = "postgres", user: str = "postgres", **kw) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname, user), autocommit=kw.pop("autocommit", True), **kw)

    def sql(self, query: str, dbname: str = "postgres"):
        with self.connect(dbname) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None

    def psql_hint(self, dbname: str = "postgres") -> str:
        return f"psql -h {self.sockdir} -p {self.port} -U postgres {dbname}"
