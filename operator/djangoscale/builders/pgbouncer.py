"""pgbouncer sizing against the database's connection budget, and its configuration Secret.

Poolers in the Postgres operators (Zalando, CloudNativePG, Crunchy) are fixed-size shared
Deployments. Here every web pod runs its own pgbouncer, so the per-pod pool is the budget divided
over the most pods that can ever run at once: `replicas.max` plus the one rollout surge pod.
Scaling out to the maximum then cannot exhaust PostgreSQL, whatever the app's concurrency.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from djangoscale.builders.labels import child_metadata
from djangoscale.spec import DjangoService

# Where the app reaches its sidecar.
LISTEN_HOST = "127.0.0.1"
# Where pgbouncer listens: the pod's own addresses too, since the kubelet's tcpSocket startup
# probe connects to the pod IP, never to the pod's loopback (on 127.0.0.1 alone the sidecar
# never starts). The Service publishes only the app's ports; clients still need credentials.
LISTEN_ADDR = "*"
LISTEN_PORT = 6432
CONFIG_DIR = "/etc/pgbouncer"
INI_KEY = "pgbouncer.ini"
USERLIST_KEY = "userlist.txt"
DATABASE_URL_KEY = "DATABASE_URL"
# Client connections beyond the app's concurrency: health checks, management commands.
CLIENT_HEADROOM = 10
# Keys the user's database Secret must hold.
CREDENTIAL_KEYS = ("host", "port", "dbname", "user", "password")
# Characters pgbouncer's connection strings and our env need no quoting for.
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.\-]+$")


class CredentialsError(ValueError):
    """The user's database Secret is missing keys or holds values we cannot use."""


@dataclass(frozen=True)
class DatabaseCredentials:
    host: str
    port: int
    dbname: str
    user: str
    password: str

    @classmethod
    def from_secret_data(cls, data: dict[str, str], secret_name: str) -> DatabaseCredentials:
        """Parse a Secret's `data` (base64 values), naming the key at fault."""
        decoded = {}
        missing = [key for key in CREDENTIAL_KEYS if key not in data]
        if missing:
            raise CredentialsError(
                f"Secret {secret_name} has no key(s) {', '.join(missing)} "
                f"(needs {', '.join(CREDENTIAL_KEYS)})"
            )
        for key in CREDENTIAL_KEYS:
            try:
                decoded[key] = base64.b64decode(data[key]).decode("utf-8")
            except (ValueError, UnicodeDecodeError) as error:
                raise CredentialsError(f"Secret {secret_name} key {key}: not UTF-8") from error
        for key in ("host", "dbname", "user"):
            if not _SAFE_WORD.match(decoded[key]):
                raise CredentialsError(
                    f"Secret {secret_name} key {key}: must be letters, digits, '.', '_' or '-'"
                )
        if "\n" in decoded["password"] or '"' in decoded["password"]:
            raise CredentialsError(f"Secret {secret_name} key password: no newlines or quotes")
        try:
            port = int(decoded["port"])
        except ValueError as error:
            raise CredentialsError(f"Secret {secret_name} key port: not a number") from error
        if not 1 <= port <= 65535:
            raise CredentialsError(f"Secret {secret_name} key port: must be 1..65535")
        return cls(decoded["host"], port, decoded["dbname"], decoded["user"], decoded["password"])

    @classmethod
    def placeholder(cls) -> DatabaseCredentials:
        """What `render` shows without access to the cluster's Secret."""
        return cls("DB_HOST", 5432, "DB_NAME", "DB_USER", "DB_PASSWORD")


@dataclass(frozen=True)
class PoolSizing:
    pool_size_per_pod: int
    max_client_conn_per_pod: int
    max_pods: int
    # Django's native pool lives in each worker process; pgbouncer's is one per pod.
    pool_size_per_process: int

    @property
    def connections_at_max(self) -> int:
        return self.pool_size_per_pod * self.max_pods


def pool_size_per_pod(budget: int, max_pods: int) -> int:
    return budget // max_pods


def size_pool(ds: DjangoService) -> PoolSizing:
    """Per-pod pool and client limits; the spec was validated to fit the budget."""
    assert ds.database is not None
    # Web pods and Celery worker pods share one budget, each pod with its own pool.
    max_pods = ds.max_pods
    workers = ds.server.workers
    # Worker pods run the same pgbouncer config: it must take the busiest pod's clients.
    busiest = max([ds.server.concurrency] + [group.concurrency for group in ds.workers])
    clients = ds.pgbouncer.max_client_conn or busiest + CLIENT_HEADROOM
    if ds.uses_django_pool:
        # A process never needs more connections than threads it runs.
        per_process = min(
            pool_size_per_pod(ds.database.pool_budget, max_pods * workers), ds.server.max_threads
        )
        return PoolSizing(per_process * workers, clients, max_pods, per_process)
    if ds.pgbouncer.pool_size is not None:
        pool = ds.pgbouncer.pool_size
    else:
        # A pod never needs more server connections than requests it can run at once.
        pool = min(pool_size_per_pod(ds.database.pool_budget, max_pods), ds.server.concurrency)
    return PoolSizing(pool, clients, max_pods, pool)


def render_ini(ds: DjangoService, credentials: DatabaseCredentials) -> str:
    sizing = size_pool(ds)
    return "\n".join(
        [
            "[databases]",
            f"{credentials.dbname} = host={credentials.host} port={credentials.port} "
            f"dbname={credentials.dbname}",
            "",
            "[pgbouncer]",
            f"listen_addr = {LISTEN_ADDR}",
            f"listen_port = {LISTEN_PORT}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {CONFIG_DIR}/{USERLIST_KEY}",
            f"pool_mode = {ds.pgbouncer.pool_mode}",
            f"default_pool_size = {sizing.pool_size_per_pod}",
            "min_pool_size = 0",
            # A reserve pool would spend connections outside the budget.
            "reserve_pool_size = 0",
            f"max_db_connections = {sizing.pool_size_per_pod}",
            f"max_user_connections = {sizing.pool_size_per_pod}",
            f"max_client_conn = {sizing.max_client_conn_per_pod}",
            f"query_wait_timeout = {ds.server.timeout_seconds}",
            "server_idle_timeout = 60",
            "server_lifetime = 3600",
            "server_reset_query = DISCARD ALL",
            # psycopg and Django send these; pgbouncer refuses unknown startup parameters.
            "ignore_startup_parameters = extra_float_digits,options",
            "log_connections = 0",
            "log_disconnections = 0",
            "",
        ]
    )


def render_userlist(credentials: DatabaseCredentials) -> str:
    return f'"{credentials.user}" "{credentials.password}"\n'


def database_url(credentials: DatabaseCredentials, host: str, port: int) -> str:
    return (
        f"postgres://{quote(credentials.user, safe='')}:{quote(credentials.password, safe='')}"
        f"@{host}:{port}/{quote(credentials.dbname, safe='')}"
    )


def secret_name(ds: DjangoService) -> str:
    return f"{ds.name}-database"


def build_database_secret(ds: DjangoService, credentials: DatabaseCredentials) -> dict[str, Any]:
    """The Secret the pods read: pgbouncer's config and the app's DATABASE_URL.

    Credentials live only here and in the user's Secret, never in a ConfigMap, args or status.
    """
    if ds.uses_pgbouncer:
        data = {
            INI_KEY: render_ini(ds, credentials),
            USERLIST_KEY: render_userlist(credentials),
            DATABASE_URL_KEY: database_url(credentials, LISTEN_HOST, LISTEN_PORT),
        }
    else:
        data = {DATABASE_URL_KEY: database_url(credentials, credentials.host, credentials.port)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(ds, secret_name(ds), component="database"),
        "type": "Opaque",
        # `data`, not `stringData`: server-side apply then compares like for like (no drift).
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def config_checksum(secret: dict[str, Any]) -> str:
    """A digest of the Secret's contents: in the pod template, a change rolls the pods."""
    payload = json.dumps(secret["data"], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()
