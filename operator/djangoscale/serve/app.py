"""Loading the user's WSGI app and wrapping it in the launcher's middleware.

Servers that load the app in their own worker processes (gunicorn, granian) call
`create_application` there, after the fork, so every process has its own metrics files
and its own database connections.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from djangoscale.serve.hygiene import greenlets_patched, install_spawn_hooks, track_connections
from djangoscale.serve.middleware import DjangoscaleMiddleware

APP_ENV = "DJANGOSCALE_WSGI_APP"
CHECK_DB_ENV = "DJANGOSCALE_READY_CHECK_DB"
THREADS_ENV = "DJANGOSCALE_PROCESS_THREADS"  # slots per process, for djangoscale_threads_total
# "off": serve the user's app bare, without the launcher's middleware (no metrics, health,
# readiness or connection hygiene). For measuring what the middleware costs, never for a pod.
MIDDLEWARE_ENV = "DJANGOSCALE_MIDDLEWARE"


def load_wsgi(target: str) -> Any:
    """Import `module:attribute` (the current directory is importable, as with gunicorn)."""
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = module
    for part in (attribute or "application").split("."):
        app = getattr(app, part)
    return app


def middleware_enabled() -> bool:
    return os.environ.get(MIDDLEWARE_ENV, "on").lower() not in ("off", "0", "false", "no")


def wrap(app: Any) -> Any:
    if not middleware_enabled():
        return app
    from djangoscale.serve.metrics import MULTIPROC_ENV, process_metrics

    install_spawn_hooks()
    track_connections()
    metrics = process_metrics() if os.environ.get(MULTIPROC_ENV) else None
    if metrics is not None and os.environ.get(THREADS_ENV):
        metrics.threads_total.set(int(os.environ[THREADS_ENV]))
    check_db = os.environ.get(CHECK_DB_ENV, "").lower() in ("1", "true", "yes")
    return DjangoscaleMiddleware(
        app, metrics=metrics, check_database=check_db, close_every_request=greenlets_patched()
    )


def create_application() -> Any:
    """The wrapped app named by DJANGOSCALE_WSGI_APP (a factory for granian and gunicorn)."""
    return wrap(load_wsgi(os.environ[APP_ENV]))
