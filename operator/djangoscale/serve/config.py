"""The launchers' settings: flags, their environment variables and their defaults.

The one module of the processes in the user's image (`djangoscale serve`, its server
processes, `djangoscale worker`) that reads or sets environment variables:
- `ServeConfig`: `djangoscale serve`'s flags over the variables of
  `djangoscale.contract.SERVE_ENV`, which the operator's Deployment builder writes
  (`tests/unit/test_contract.py` ties both);
- `ProcessSettings`: what a serving process reads, handed down by the launcher to the server
  processes it starts (`hand_down`), which load the app after their own fork;
- `WorkerSettings`: `djangoscale worker`'s defaults from the worker container's env;
- `PgBouncerAdmin`: where the pod's pgbouncer answers SHOW POOLS, with which credentials.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from djangoscale.contract import (
    DATABASE_PASSWORD_ENV,
    DATABASE_USER_ENV,
    MULTIPROC_DIR_ENV,
    PGBOUNCER_ADDRESS_ENV,
    POOLER_STATS_ADDRESS_ENV,
    SERVE_ENV,
    SERVER_TYPES,
    SINGLE_THREADED_SERVERS,
    WORKER_HEALTH_BIND_ENV,
)

# flag dest -> environment variable the Deployment sets
ENV_VARS: dict[str, str] = dict(SERVE_ENV)


class ConfigError(ValueError):
    """A flag or environment variable has a value the launcher cannot run with."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServeConfig:
    """Everything one `djangoscale serve` run needs, validated once."""

    wsgi_app: str
    server: str = "cherrypy"
    workers: int = 1
    threads: int = 10
    max_threads: int = 10
    queue_size: int = 100
    timeout: float = 30.0
    bind: Address = Address("0.0.0.0", 8000)
    metrics_bind: Address | None = Address("0.0.0.0", 9100)

    @property
    def max_concurrency(self) -> int:
        """Requests one pod can run at once: the bound on its database connections."""
        if self.server in SINGLE_THREADED_SERVERS:
            return self.workers
        return self.workers * max(self.threads, self.max_threads)


_DEFAULT = ServeConfig(wsgi_app="")
# The defaults as the environment would spell them; max_threads 0 means: same as threads.
DEFAULTS: dict[str, str] = {
    "server": _DEFAULT.server,
    "workers": str(_DEFAULT.workers),
    "threads": str(_DEFAULT.threads),
    "max_threads": "0",
    "queue_size": str(_DEFAULT.queue_size),
    "timeout": str(_DEFAULT.timeout),
    "bind": str(_DEFAULT.bind),
    "metrics_bind": str(_DEFAULT.metrics_bind),
}


def parse_address(text: str) -> Address:
    """`HOST:PORT` (or `[v6]:PORT`) to an Address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    number = int(port)
    if not 0 <= number <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return Address(host, number)


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Declare the flags; values not given on the command line are resolved later."""
    parser.add_argument("wsgi_app", help="WSGI application, e.g. mysite.wsgi:application")
    parser.add_argument("--server", choices=SERVER_TYPES, help="server type (DJANGOSCALE_SERVER)")
    parser.add_argument("--workers", help="worker processes (DJANGOSCALE_WORKERS)")
    parser.add_argument("--threads", help="threads per worker (DJANGOSCALE_THREADS)")
    parser.add_argument(
        "--max-threads", help="cherrypy: grow the pool up to this (DJANGOSCALE_MAX_THREADS)"
    )
    parser.add_argument(
        "--queue-size", help="listen backlog / accepted queue bound (DJANGOSCALE_QUEUE_SIZE)"
    )
    parser.add_argument(
        "--timeout", help="request and graceful-drain timeout, seconds (DJANGOSCALE_TIMEOUT)"
    )
    parser.add_argument("--bind", help="HOST:PORT to serve on (DJANGOSCALE_BIND)")
    parser.add_argument(
        "--metrics-bind", help="HOST:PORT for /metrics, or 'off' (DJANGOSCALE_METRICS_BIND)"
    )


def resolve(args: argparse.Namespace | Mapping[str, object], env: Mapping[str, str]) -> ServeConfig:
    """Flags win over environment variables, which win over defaults."""
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)

    def pick(name: str) -> str:
        value = given.get(name)
        if value is not None:
            return str(value)
        return env.get(ENV_VARS[name]) or DEFAULTS[name]

    server = pick("server")
    if server not in SERVER_TYPES:
        raise ConfigError(f"unknown server type {server!r}; one of {', '.join(SERVER_TYPES)}")
    workers = _positive_int("workers", pick("workers")) or 1
    threads = _positive_int("threads", pick("threads")) or 1
    max_threads = _positive_int("max-threads", pick("max_threads")) or threads
    if max_threads < threads:
        raise ConfigError(f"max-threads ({max_threads}) must be >= threads ({threads})")
    queue_size = _positive_int("queue-size", pick("queue_size")) or 1
    try:
        timeout = float(pick("timeout"))
    except ValueError:
        raise ConfigError(f"timeout must be a number, got {pick('timeout')!r}") from None
    if timeout <= 0:
        raise ConfigError("timeout must be > 0")
    metrics_text = pick("metrics_bind")
    metrics_off = metrics_text.lower() in ("off", "none", "")
    metrics_bind = None if metrics_off else parse_address(metrics_text)
    wsgi_app = str(given.get("wsgi_app") or "")
    if ":" not in wsgi_app:
        raise ConfigError(f"WSGI_APP must be module:attribute, got {wsgi_app!r}")
    return ServeConfig(
        wsgi_app=wsgi_app,
        server=server,
        workers=workers,
        threads=threads,
        max_threads=max_threads,
        queue_size=queue_size,
        timeout=timeout,
        bind=parse_address(pick("bind")),
        metrics_bind=metrics_bind,
    )


def from_args(args: argparse.Namespace) -> ServeConfig:
    """`djangoscale serve`'s configuration: its flags over the process environment."""
    return resolve(args, os.environ)


# Variables the launcher sets for the server processes it starts (not part of the pod's
# contract: nothing outside the launcher writes them, except tests and benchmarks).
APP_ENV = "DJANGOSCALE_WSGI_APP"
THREADS_ENV = "DJANGOSCALE_PROCESS_THREADS"  # slots per process, for djangoscale_threads_total
CHECK_DB_ENV = "DJANGOSCALE_READY_CHECK_DB"
# "off": serve the user's app bare, without the launcher's middleware (no metrics, health,
# readiness or connection hygiene). For measuring what the middleware costs, never for a pod.
MIDDLEWARE_ENV = "DJANGOSCALE_MIDDLEWARE"
FLUSH_INTERVAL_ENV = "DJANGOSCALE_METRICS_FLUSH_INTERVAL"  # to override it (tests)
_FALSE = ("off", "0", "false", "no")
_TRUE = ("1", "true", "yes")


@dataclass(frozen=True)
class ProcessSettings:
    """What one serving process reads, once, from what its launcher handed down."""

    wsgi_app: str | None = None
    threads: int | None = None
    middleware: bool = True
    check_db: bool = False
    multiproc_dir: str | None = None  # where every process writes its metrics, if anywhere
    flush_interval: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProcessSettings:
        env = os.environ if env is None else env
        threads, flush = env.get(THREADS_ENV), env.get(FLUSH_INTERVAL_ENV)
        return cls(
            wsgi_app=env.get(APP_ENV) or None,
            threads=int(threads) if threads else None,
            middleware=env.get(MIDDLEWARE_ENV, "on").lower() not in _FALSE,
            check_db=env.get(CHECK_DB_ENV, "").lower() in _TRUE,
            multiproc_dir=env.get(MULTIPROC_DIR_ENV) or None,
            flush_interval=float(flush) if flush else None,
        )


def hand_down(values: Mapping[str, str]) -> None:
    """Set variables for the server processes this launcher starts (and for what it runs
    later itself): the way a setting reaches a process that re-imports the app."""
    os.environ.update(values)


@dataclass(frozen=True)
class WorkerSettings:
    """`djangoscale worker`'s defaults from the worker container's env (flags win)."""

    loglevel: str = "INFO"
    health_bind: str = ""  # HOST:PORT of /healthz; empty: none

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        return cls(
            loglevel=env.get("CELERY_LOGLEVEL") or cls.loglevel,
            health_bind=env.get(WORKER_HEALTH_BIND_ENV) or cls.health_bind,
        )


@dataclass(frozen=True)
class PgBouncerAdmin:
    """The pod's pgbouncer admin console: the app's own user is one of its stats_users."""

    address: Address
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PgBouncerAdmin | None:
        """None unless the Deployment runs a pgbouncer sidecar (and the credentials are set)."""
        env = os.environ if env is None else env
        address, user = env.get(PGBOUNCER_ADDRESS_ENV), env.get(DATABASE_USER_ENV)
        if not address or not user:
            return None
        return cls(parse_address(address), user, env.get(DATABASE_PASSWORD_ENV, ""))

    @classmethod
    def figures_from_env(cls, env: Mapping[str, str] | None = None) -> PgBouncerAdmin | None:
        """Where the launcher reads SHOW POOLS for its metrics: the pod's sidecar, or else
        the pooler's Service (pooling.mode pooler). None without either."""
        env = os.environ if env is None else env
        sidecar = cls.from_env(env)
        if sidecar is not None:
            return sidecar
        return cls.from_env({**env, PGBOUNCER_ADDRESS_ENV: env.get(POOLER_STATS_ADDRESS_ENV, "")})
