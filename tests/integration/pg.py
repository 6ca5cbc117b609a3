"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a private socket, stop by PID."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# The cluster listens only on a unix socket inside its own temp dir: no TCP port to collide
# with, nothing reachable from outside, and never the system cluster's /var/run/postgresql.
_PORT = 5432  # only names the socket file (.s.PGSQL.5432) inside the private dir


class PgError(RuntimeError):
    """The test cluster could not be set up; the message carries the server log's tail."""


def pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/N/bin (Debian's layout), or $PG_BINDIR."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(re.search(r"/(\d+)/bin/", p).group(1)),  # type: ignore[union-attr]
    )
    if not found:
        raise PgError("PostgreSQL server binaries not found: apt-get install postgresql")
    return Path(found[-1]).parent


class PgCluster:
    """initdb + postgres as the `postgres` OS user when run as root (initdb refuses root).

    The constructor does no I/O; `start()` builds and starts the cluster, `stop()` sends the
    postmaster (by its PID) an immediate shutdown and removes the directory.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self._bindir = bindir
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    @property
    def socket_dir(self) -> Path:
        assert self.dir is not None, "start() first"
        return self.dir / "sock"

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        url = f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={_PORT}"
        if schema is not None:
            # libpq `options`: every connection of this URL starts in the schema.
            url += f"&options=-csearch_path%3D{schema}"
        return url

    def _run_as(self) -> dict[str, Any]:
        return {"user": self._user, "group": self._user} if self._user else {}

    def start(self, timeout_s: float = 30.0) -> None:
        bindir = self._bindir or pg_bindir()
        self._user = "postgres" if os.geteuid() == 0 else None
        # /tmp, not pytest's tmp_path: a unix socket path must stay under ~107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="rw-pg-"))
        data, sock = self.dir / "data", self.dir / "sock"
        sock.mkdir()
        if self._user:
            pw = pwd.getpwnam(self._user)
            for p in (self.dir, sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "--username=postgres", "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-sync"],
            capture_output=True, **self._run_as(),
        )
        if init.returncode != 0:
            self._cleanup()
            raise PgError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
        log = open(self.dir / "postgres.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-k", str(sock), "-p", str(_PORT),
             "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=40"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._run_as(),
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self._cleanup()
                raise PgError(f"postgres exited with {self.proc.returncode}: {tail}")
            if self._ready():
                return
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise PgError(f"postgres not ready after {timeout_s} s: {tail}")

    def _ready(self) -> bool:
        assert self.dir is not None
        pidfile = self.dir / "data" / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return False
        # Line 8 of postmaster.pid is the server's status; "ready" once it accepts connections.
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def log_tail(self) -> str:
        if self.dir is None:
            return ""
        try:
            return (self.dir / "postgres.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=_PORT, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self) -> str:
        """A fresh database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self) -> str:
        """A fresh, empty schema in the default database: as isolated as a database for
        unqualified table names, and far cheaper than copying template1 for every test."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE SCHEMA "{name}"')
        return self.url("postgres", name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Immediate shutdown: the cluster is thrown away, so no checkpoint is worth waiting for.
            os.kill(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
