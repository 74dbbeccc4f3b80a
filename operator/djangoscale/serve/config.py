"""The launcher's settings: flags, their environment variables and their defaults.

The one place `djangoscale serve` reads its settings from the environment (`from_environ`).
The operator's Deployment builder passes the DjangoService spec to the pod through exactly
the variables of `djangoscale.contract.SERVE_ENV`; `tests/unit/test_contract.py` ties both.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

from djangoscale.contract import SERVE_ENV, SERVER_TYPES, SINGLE_THREADED_SERVERS

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


def from_environ(wsgi_app: str, env: Mapping[str, str] | None = None) -> ServeConfig:
    return resolve({"wsgi_app": wsgi_app}, os.environ if env is None else env)
