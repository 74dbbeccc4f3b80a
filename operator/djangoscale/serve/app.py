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

from djangoscale.serve.config import APP_ENV, ProcessSettings
from djangoscale.serve.hygiene import greenlets_patched, install_spawn_hooks, track_connections
from djangoscale.serve.middleware import DjangoscaleMiddleware


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


def wrap(app: Any) -> Any:
    settings = ProcessSettings.from_env()
    if not settings.middleware:
        return app
    from djangoscale.serve.metrics import process_metrics

    install_spawn_hooks()
    track_connections()
    metrics = process_metrics() if settings.multiproc_dir else None
    if metrics is not None and settings.threads:
        metrics.threads_total.set(settings.threads)
    return DjangoscaleMiddleware(
        app, metrics=metrics, check_database=settings.check_db,
        close_every_request=greenlets_patched(),
    )


def create_application() -> Any:
    """The wrapped app the launcher handed down (a factory for granian and gunicorn)."""
    wsgi_app = ProcessSettings.from_env().wsgi_app
    if wsgi_app is None:
        raise RuntimeError(f"{APP_ENV} is not set: start the server with `djangoscale serve`")
    return wrap(load_wsgi(wsgi_app))
