"""A throwaway PgBouncer in front of a test Cluster (see pgcluster.py).

Each PgBouncer owns a temporary directory with its config, auth file, log and pid file, and
listens on 127.0.0.1 on a free port (no Unix socket). PgBouncer refuses to run as root, so
as root it runs as the `postgres` user, like the server. It runs in the foreground as our
child, in a process group of its own, and `stop()` ends exactly that process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from pgcluster import _as_server_user, free_port


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


class PgBouncer:
    """pgbouncer <config> as a child process.

    `databases` maps a PgBouncer database name to extra connection settings for it, e.g.
    {"app": {"dbname": "t1"}, "app1": {"dbname": "t1", "pool_size": 1}}; host and port of the
    cluster are filled in. Every pool is per (database name, user): two names for the same
    database give two independent pools.
    """

    def __init__(self, cluster, databases: dict[str, dict], users: list[str], **settings):
        self.cluster = cluster
        self.binary = pgbouncer_binary()
        if self.binary is None:
            raise FileNotFoundError("pgbouncer")
        self.dir = Path(tempfile.mkdtemp(prefix="vecguard-pgbouncer-"))
        self.port = free_port()
        self.config = self.dir / "pgbouncer.ini"
        self.log = self.dir / "pgbouncer.log"
        self.pidfile = self.dir / "pgbouncer.pid"
        self.proc: subprocess.Popen | None = None
        db_lines = []
        for name, opts in databases.items():
            opts = {"host": "127.0.0.1", "port": cluster.port, **opts}
            db_lines.append(f"{name} = " + " ".join(f"{k}={v}" for k, v in opts.items()))
        conf = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",  # the cluster trusts 127.0.0.1 too; users must be in auth_file
            "auth_file": self.dir / "userlist.txt",
            "admin_users": "postgres",
            "pool_mode": "transaction",
            "default_pool_size": 4,
            "min_pool_size": 0,
            "reserve_pool_size": 0,
            "max_client_conn": 200,
            "server_reset_query": "DISCARD ALL",  # PgBouncer's default; session mode only
            "server_reset_query_always": 0,
            "query_wait_timeout": 30,
            "logfile": self.log,
            "pidfile": self.pidfile,
            "log_connections": 0,
            "log_disconnections": 0,
        }
        conf.update(settings)
        text = "[databases]\n" + "\n".join(db_lines) + "\n\n[pgbouncer]\n"
        text += "".join(f"{k} = {v}\n" for k, v in conf.items())
        self.config.write_text(text)
        (self.dir / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in users))
        if os.geteuid() == 0:
            for p in [self.dir, self.config, self.dir / "userlist.txt"]:
                shutil.chown(p, "postgres", "postgres")

    def start(self, timeout: float = 15.0) -> "PgBouncer":
        self.proc = subprocess.Popen(_as_server_user([self.binary, str(self.config)]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("pgbouncer", "postgres"), autocommit=True,
                                     connect_timeout=2) as c:
                    c.execute("SHOW VERSION")
                return self
            except psycopg.Error:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log_tail()}")
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (immediate shutdown) to our process group; SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig, wait in [(signal.SIGINT, timeout), (signal.SIGKILL, 5.0)]:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def dsn(self, dbname: str, user: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def connect(self, dbname: str, user: str, autocommit: bool = True, **kw) -> psycopg.Connection:
        # Transaction pooling cannot keep server-side prepared statements (PgBouncer < 1.21):
        # never let psycopg prepare.
        return psycopg.connect(self.dsn(dbname, user), autocommit=autocommit,
                               prepare_threshold=None, connect_timeout=10, **kw)

    def admin(self, command: str) -> list[dict]:
        """A SHOW command on the admin console, rows as dicts."""
        with psycopg.connect(self.dsn("pgbouncer", "postgres"), autocommit=True) as c:
            cur = c.execute(command)
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
