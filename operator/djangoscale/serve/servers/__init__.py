"""One adapter per server type: `run(config) -> exit code`, imported only when chosen."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from djangoscale.serve.config import ServeConfig

ADAPTERS: dict[str, str] = {
    "cherrypy": "djangoscale.serve.servers.cherrypy",
    "gunicorn-sync": "djangoscale.serve.servers.gunicorn",
    "gunicorn-gthread": "djangoscale.serve.servers.gunicorn",
    "gunicorn-gevent": "djangoscale.serve.servers.gunicorn",
    "bjoern": "djangoscale.serve.servers.bjoern",
    "waitress": "djangoscale.serve.servers.waitress",
    "granian": "djangoscale.serve.servers.granian",
}

EXTRAS: dict[str, str] = {
    "cherrypy": "serve",
    "gunicorn-sync": "gunicorn",
    "gunicorn-gthread": "gunicorn",
    "gunicorn-gevent": "gevent",
    "bjoern": "bjoern",
    "waitress": "waitress",
    "granian": "granian",
}


def runner_for(server: str) -> Callable[[ServeConfig], int]:
    try:
        module = importlib.import_module(ADAPTERS[server])
    except ImportError as error:
        raise SystemExit(
            f"server {server!r} is not installed ({error}); "
            f"pip install 'djangoscale[serve,{EXTRAS[server]}]'"
        ) from None
    return module.run  # type: ignore[no-any-return]
