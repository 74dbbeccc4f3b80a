"""pgbouncer sizing against the database's connection budget, and its configuration Secret.

Poolers in the Postgres operators (Zalando, CloudNativePG, Crunchy) are fixed-size shared
Deployments. Here, by default, every web pod runs its own pgbouncer, so the per-pod pool is the
budget divided over the most pods that can ever run at once: `replicas.max` plus the one rollout
surge pod. Scaling out to the maximum then cannot exhaust PostgreSQL, whatever the app's
concurrency. With pooling.mode pooler the same ini runs in a pgbouncer Deployment
(`builders.pooler`) and the budget is divided over its pods instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from djangoscale.budget import size_pool
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
# The pooler's ini ends by including this file, empty while the pod runs: its preStop hook
# writes the draining pool size into it and reloads pgbouncer (SIGHUP), so a terminating
# pooler pod keeps DRAINING_POOL_SIZE server connections, as a terminating sidecar does.
DRAIN_INI = "/tmp/pgbouncer-drain.ini"
INI_KEY = "pgbouncer.ini"
USERLIST_KEY = "userlist.txt"
DATABASE_URL_KEY = "DATABASE_URL"
# A server connection idle this long is closed (the pool refills on demand), and none lives
# longer than an hour, so a failover or a changed password reaches every connection.
SERVER_IDLE_TIMEOUT_SECONDS = 60
SERVER_LIFETIME_SECONDS = 3600
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
            # The app container reads SHOW POOLS (the budget guard) and shrinks the pool when
            # the pod terminates (`djangoscale prestop`) as the app's own user; the admin
            # console listens on the pod's loopback only, like the pool itself.
            f"admin_users = {credentials.user}",
            f"pool_mode = {ds.pgbouncer.pool_mode}",
            f"default_pool_size = {sizing.pool_size_per_pod}",
            "min_pool_size = 0",
            # A reserve pool would spend connections outside the budget.
            "reserve_pool_size = 0",
            f"max_db_connections = {sizing.pool_size_per_pod}",
            f"max_user_connections = {sizing.pool_size_per_pod}",
            f"max_client_conn = {sizing.max_client_conn_per_pod}",
            f"query_wait_timeout = {ds.server.timeout_seconds}",
            f"server_idle_timeout = {SERVER_IDLE_TIMEOUT_SECONDS}",
            f"server_lifetime = {SERVER_LIFETIME_SECONDS}",
            "server_reset_query = DISCARD ALL",
            # psycopg and Django send these; pgbouncer refuses unknown startup parameters.
            "ignore_startup_parameters = extra_float_digits,options",
            "log_connections = 0",
            "log_disconnections = 0",
            *([f"%include {DRAIN_INI}"] if ds.uses_pooler else []),
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


def pooler_name(ds: DjangoService) -> str:
    """The pooler's Deployment, Service, PDB and HPA; the Service's name is its host."""
    return f"{ds.name}-pooler"


def pgbouncer_host(ds: DjangoService) -> str:
    """Where the app's pods reach pgbouncer: their sidecar, or the pooler's Service."""
    return pooler_name(ds) if ds.uses_pooler else LISTEN_HOST


def secret_name(ds: DjangoService) -> str:
    return f"{ds.name}-database"


def build_database_secret(ds: DjangoService, credentials: DatabaseCredentials) -> dict[str, Any]:
    """The Secret the pods read: pgbouncer's config and the app's DATABASE_URL.

    Credentials live only here and in the user's Secret, never in a ConfigMap, args or status.
    """
    if ds.uses_pgbouncer or ds.uses_pooler:
        data = {
            INI_KEY: render_ini(ds, credentials),
            USERLIST_KEY: render_userlist(credentials),
            DATABASE_URL_KEY: database_url(credentials, pgbouncer_host(ds), LISTEN_PORT),
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
