"""A throwaway PostgreSQL cluster on a loopback port, for tests that need a real server.

`pg_cluster()` runs the server binaries of the Debian `postgresql` package (`initdb`, `pg_ctl`; `.ci/run` installs
them): a fresh cluster in a temporary folder, trust authentication, listening on 127.0.0.1 only, durability off
(a test cluster is thrown away). initdb refuses to run as root, so as root the cluster belongs to the system user
`postgres` (the Debian package's) or, without it, `nobody`, and every server command runs through `runuser`.
Missing binaries are a test failure with the fix, never a skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from local_services import free_port
from psycopg import sql

SUPERUSER = "postgres"  # the cluster's superuser role, whichever OS user runs it
RUN_AS = ("postgres", "nobody")  # OS users that may own the cluster when the tests run as root
MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package `postgresql` "
           "(.ci/run does: apt-get install postgresql)")


def server_bindir() -> Path:
    """The folder of `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin, else
    PATH. Fails the test (not a skip) when there is none."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    pytest.fail(MISSING)


@dataclass(frozen=True)
class Cluster:
    port: int
    folder: Path

    def url(self, database: str, driver: str = "") -> str:
        """SQLAlchemy URL of ``database`` (``driver``: e.g. "psycopg" for ``postgresql+psycopg://``)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True)

    def create_database(self, name: str) -> str:
        """Create ``name`` and return its plain ``postgresql://`` URL."""
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def rows(self, database: str, query: str) -> list[tuple]:
        """Every row of ``query`` (a test's own constant SQL) on ``database``."""
        with self.connect(database) as conn:
            return conn.execute(query).fetchall()  # type: ignore[arg-type]


def _owner() -> str | None:
    """The OS user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in RUN_AS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.fail(f"running as root and none of the users {RUN_AS} exists to own a PostgreSQL cluster")


def _run(args: list[str], owner: str | None, cwd: Path) -> None:
    command = args if owner is None else ["runuser", "-u", owner, "--", *args]
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")


@contextmanager
def pg_cluster() -> Iterator[Cluster]:
    """Start a fresh cluster; stop it and delete its files on exit, also when the body fails."""
    bindir = server_bindir()
    owner = _owner()
    # Not under pytest's tmp folder: that one is private to root (0700), where the server's user cannot go.
    folder = Path(tempfile.mkdtemp(prefix="radiogenomics-pg-"))
    data = folder / "data"
    log = folder / "server.log"
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    port = free_port()
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
              "--no-sync", "--no-instructions"], owner, folder)
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
             owner, folder)
        yield Cluster(port=port, folder=folder)
    finally:
        _stop(bindir, data, owner, folder)
        shutil.rmtree(folder, ignore_errors=True)


def _stop(bindir: Path, data: Path, owner: str | None, folder: Path) -> None:
    """`pg_ctl stop -m fast`; the postmaster's pid file is the fallback (SIGQUIT: immediate shutdown)."""
    pid_file = data / "postmaster.pid"
    if not pid_file.is_file():
        return
    command = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"]
    if owner is not None:
        command = ["runuser", "-u", owner, "--", *command]
    subprocess.run(command, cwd=folder, capture_output=True, timeout=60, check=False)
    if pid_file.is_file():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
            time.sleep(1)
        except (OSError, ValueError, IndexError):
            pass
