"""PostgreSQL from Debian's packages, started in a directory and stopped after: for the e2e
tests and for `djangoscale dev`, which runs one where the real node's pods reach it.

It runs as the `postgres` system user (root may not run it), listens on 127.0.0.1 (and any
address asked for) on a free port, and keeps its files in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def postgres_bin_dir() -> Path:
    """Where initdb and postgres are: DJANGOSCALE_PG_BIN, else `pg_config --bindir` when it
    holds the server, else the newest major under /usr/lib/postgresql (Debian installs the
    server there, versioned, and keeps it off PATH)."""
    if wanted := os.environ.get("DJANGOSCALE_PG_BIN"):
        return Path(wanted)
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                               check=True).stdout.strip()
        if found and (Path(found) / "postgres").exists():
            return Path(found)
    majors = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin")
         if (path / "postgres").exists()),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
    )
    return majors[-1] if majors else Path("/usr/lib/postgresql/bin")


PG_BIN = postgres_bin_dir()
SERVICE_USER = "postgres"
APP_DB, APP_USER, APP_PASSWORD = "app", "app", "app-password"
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def service_user_kwargs() -> dict[str, Any]:
    """Popen arguments that run the child as the service user (no wrapper process, so
    signals reach the service itself)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(SERVICE_USER)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "HOME": entry.pw_dir, "USER": SERVICE_USER},
    }


def give_to_service_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVICE_USER)
    for root, _dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def service_dir(tmpdir: str | Path, prefix: str) -> Path:
    """A directory the service user can reach: under `tmpdir` if it is traversable, else /tmp."""
    parent = Path(tmpdir)
    reachable = all(os.stat(p).st_mode & 0o001 for p in [parent, *parent.parents])
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent if reachable else None))
    os.chmod(path, 0o755)
    return path


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0
) -> None:
    """Signal a process (SIGTERM by default), then kill it if it outlives the timeout."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class Postgres:
    host: str
    port: int
    datadir: Path
    max_connections: int
    process: subprocess.Popen[bytes] = field(repr=False)

    def dsn(self, dbname: str = "postgres", user: str = SERVICE_USER) -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user}"

    def execute(self, sql: str, dbname: str = "postgres", autocommit: bool = True
                ) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=autocommit) as conn:
            cur = conn.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def server_connections(self, dbname: str = APP_DB) -> int:
        """Client backends connected to `dbname` now (this query's own connection excluded)."""
        rows = self.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            f"AND datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        return int(rows[0][0])


@contextlib.contextmanager
def postgres(
    tmpdir: str | Path,
    max_connections: int = 100,
    listen: tuple[str, ...] = ("127.0.0.1",),
    password_networks: tuple[str, ...] = (),
) -> Iterator[Postgres]:
    """A fresh cluster (trust auth on loopback) with database and role `app`; `listen` adds
    addresses (the real node's gateway), from where `password_networks` log in with a
    password (SCRAM), as pods do."""
    base = service_dir(tmpdir, "djangoscale-postgres-")
    datadir, sockets = base / "data", base / "sockets"
    sockets.mkdir(parents=True, exist_ok=True)
    give_to_service_user(base)
    subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(datadir), "-U", SERVICE_USER, "--auth=trust",
         "--no-sync", "-E", "UTF8", "--locale=C"],
        check=True,
        capture_output=True,
        cwd=base,
        **service_user_kwargs(),
    )
    with open(datadir / "pg_hba.conf", "a") as hba:
        hba.writelines(f"host all all {network} scram-sha-256\n" for network in password_networks)
    port = free_port()
    log = open(base / "postgres.log", "wb")  # noqa: SIM115 (closed when the server stops)
    process = subprocess.Popen(
        [str(PG_BIN / "postgres"), "-D", str(datadir), "-p", str(port), "-k", str(sockets),
         "-c", f"listen_addresses={','.join(listen)}", "-c", f"max_connections={max_connections}",
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "shared_buffers=64MB"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=base,
        **service_user_kwargs(),
    )
    server = Postgres("127.0.0.1", port, datadir, max_connections, process)
    try:
        _wait_until_accepting(server, process, base / "postgres.log")
        server.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
        server.execute(f"CREATE DATABASE {APP_DB} OWNER {APP_USER}")
        yield server
    finally:
        stop_process(process, 2)  # SIGINT: fast shutdown
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _wait_until_accepting(server: Postgres, process: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{log.read_text()[-2000:]}")
        try:
            psycopg.connect(server.dsn(), connect_timeout=1).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise TimeoutError(f"postgres not accepting:\n{log.read_text()[-2000:]}")


def migrate_sample_app(env: Mapping[str, str], sampleapp_dir: Path, python: str) -> None:
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=sampleapp_dir,
        env={**os.environ, **env},
        check=True,
    )
