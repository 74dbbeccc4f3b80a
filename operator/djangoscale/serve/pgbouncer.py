"""The pod's pgbouncer, through its admin console: its figures on the launcher's metrics port
for the operator's budget guard, and its pool shrunk when the pod terminates.

pgbouncer knows how many server connections the pod holds; the operator cannot reach it (it
listens on the pod's loopback). The launcher runs beside it, so its metrics server asks the
admin console (`SHOW POOLS`) at each scrape and exports the sum. The app's user is one of
pgbouncer's admin_users, on the pod's loopback only. psycopg (or psycopg2) is
what Django's PostgreSQL backend already needs in the app's image; without either, or when
pgbouncer does not answer, the figures are left out and the operator counts the pod as not
reporting.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from djangoscale.contract import (
    PGBOUNCER_CLIENTS_WAITING,
    PGBOUNCER_MAX_WAIT,
    PGBOUNCER_SERVER_CONNECTIONS,
    PGBOUNCER_SERVERS_ACTIVE,
    PGBOUNCER_SERVERS_IDLE,
)
from djangoscale.serve.config import PgBouncerAdmin

log = logging.getLogger("djangoscale.serve")

# The admin console's virtual database.
ADMIN_DATABASE = "pgbouncer"
# A scrape must not hang on a stuck pgbouncer: the operator's own scrape times out at 2 s.
CONNECT_TIMEOUT_SECONDS = 1


@dataclass(frozen=True)
class PoolFigures:
    server_connections: int
    clients_waiting: int
    servers_active: int = 0
    servers_idle: int = 0
    # The longest any client of any pool has waited for a server connection (maxwait, plus
    # maxwait_us where pgbouncer has it).
    max_wait_seconds: float = 0.0


def pool_figures(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> PoolFigures:
    """SHOW POOLS summed over its pools: every `sv_*` column is a server connection in some
    state (active, idle, used, tested, login, and the cancel states of newer versions)."""
    servers = [i for i, name in enumerate(columns) if name.startswith("sv_")]
    at = {name: i for i, name in enumerate(columns)}
    total = clients = active = idle = 0
    max_wait = 0.0
    for row in rows:
        if row[at["database"]] == ADMIN_DATABASE:
            continue
        total += sum(int(row[i]) for i in servers)
        clients += int(row[at["cl_waiting"]])
        active += int(row[at["sv_active"]])
        idle += int(row[at["sv_idle"]])
        wait = float(row[at["maxwait"]])
        if "maxwait_us" in at:
            wait += int(row[at["maxwait_us"]]) / 1e6
        max_wait = max(max_wait, wait)
    return PoolFigures(total, clients, active, idle, max_wait)


def _admin(admin: PgBouncerAdmin, *statements: str) -> tuple[list[str], list[Any]]:
    """Run `statements` on the admin console; the last one's columns and rows."""
    args = {
        "host": admin.address.host, "port": admin.address.port, "dbname": ADMIN_DATABASE,
        "user": admin.user, "password": admin.password,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    }
    columns: list[str] = []
    rows: list[Any] = []
    try:
        import psycopg
    except ImportError:
        psycopg2: Any = importlib.import_module("psycopg2")
        conn = psycopg2.connect(**args)
        conn.autocommit = True  # the admin console has no transactions
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                    if cur.description:
                        columns, rows = [d[0] for d in cur.description], list(cur.fetchall())
        finally:
            conn.close()
        return columns, rows
    # prepare_threshold None: the admin console speaks only the simple query protocol.
    with psycopg.connect(**args, autocommit=True, prepare_threshold=None) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            if cur.description:
                columns, rows = [d.name for d in cur.description], list(cur.fetchall())
    return columns, rows


def shrink_pool(admin: PgBouncerAdmin, size: int) -> None:
    """Give server connections back: pgbouncer closes a pool's connections beyond `size` as
    their transactions end (within its 1/3 s maintenance tick), and opens no more."""
    _admin(admin, *(f"SET {setting} = {int(size)}" for setting in (
        "default_pool_size", "max_db_connections", "max_user_connections")))


def read_pools(admin: PgBouncerAdmin) -> PoolFigures | None:
    """The pod's figures now, or None if pgbouncer (or a PostgreSQL driver) is not there."""
    try:
        columns, rows = _admin(admin, "SHOW POOLS")
        return pool_figures(columns, rows)
    except ImportError:
        log.warning("no psycopg or psycopg2 in the image: pgbouncer figures not exported")
    except Exception as error:  # noqa: BLE001 (any driver error: leave the figures out)
        log.debug("SHOW POOLS on %s failed: %s", admin.address, error)
    return None


class PgBouncerCollector:
    """A prometheus_client collector: reads SHOW POOLS at each scrape of the top process."""

    def __init__(self, admin: PgBouncerAdmin) -> None:
        self.admin = admin

    def describe(self) -> list[Any]:
        return []  # no read at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        figures = read_pools(self.admin)
        if figures is None:
            return
        yield GaugeMetricFamily(
            PGBOUNCER_SERVER_CONNECTIONS,
            "Server connections the pod's pgbouncer holds (SHOW POOLS, all sv_* states)",
            value=figures.server_connections,
        )
        yield GaugeMetricFamily(
            PGBOUNCER_CLIENTS_WAITING,
            "Client connections waiting for a server connection in the pod's pgbouncer "
            "(SHOW POOLS cl_waiting)",
            value=figures.clients_waiting,
        )
        yield GaugeMetricFamily(
            PGBOUNCER_SERVERS_ACTIVE,
            "Server connections linked to a client now (SHOW POOLS sv_active)",
            value=figures.servers_active,
        )
        yield GaugeMetricFamily(
            PGBOUNCER_SERVERS_IDLE,
            "Server connections unused and ready for a client (SHOW POOLS sv_idle)",
            value=figures.servers_idle,
        )
        yield GaugeMetricFamily(
            PGBOUNCER_MAX_WAIT,
            "How long the oldest waiting client has waited for a server connection "
            "(SHOW POOLS maxwait + maxwait_us)",
            value=figures.max_wait_seconds,
        )
