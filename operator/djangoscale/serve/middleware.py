"""The WSGI middleware every server type runs: health, readiness, metrics, DB hygiene.

Putting these in WSGI rather than in each server keeps the servers interchangeable: a pod
behaves the same to the kubelet, the autoscaler and the database whichever server the
DjangoService chose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from djangoscale.serve.drain import STATE, DrainState
from djangoscale.serve.hygiene import (
    close_all_connections,
    close_broken_connections,
    close_old_connections,
)
from djangoscale.serve.queue_time import waited_seconds

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def database_ready() -> bool:
    """One round trip to the database (through the pooler when there is one)."""
    try:
        from django.db import connection
    except ImportError:
        return True
    close_broken_connections()  # a restarted pgbouncer is not an unready pod
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False
    finally:
        close_old_connections()


def django_closes_connections(app: Any) -> bool:
    """True if `app` is Django's own WSGI handler and Django's `close_old_connections`
    receivers are connected: then Django runs that cleanup itself at the start of the
    request (`request_started`, sent by the handler) and at its end (`request_finished`,
    sent by the response's close(), which the server calls in the request's own thread or
    greenlet), and the middleware need not run it again."""
    try:
        from django.core import signals
        from django.core.handlers.wsgi import WSGIHandler
        from django.db import close_old_connections as django_close
    except ImportError:
        return False
    if not isinstance(app, WSGIHandler):
        return False
    target = id(django_close)
    try:
        return all(
            any(receiver[0][0] == target for receiver in signal.receivers)
            for signal in (signals.request_started, signals.request_finished)
        )
    except (AttributeError, IndexError, TypeError):  # a Django whose signals look different
        return False


class _ClosingResponse:
    """Runs `on_close` once, after the server has closed the app's response."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class DjangoscaleMiddleware:
    def __init__(
        self,
        app: WSGIApp,
        metrics: Any = None,
        state: DrainState = STATE,
        check_database: bool = False,
        close_every_request: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.state = state
        self.check_database = check_database
        # Connection hygiene at the start and end of each request, unless Django's own
        # signal handlers already do it (threads and greenlets started by hand are covered
        # by hygiene.install_spawn_hooks either way).
        self.hygiene = not django_closes_connections(app)
        # Under gevent a persistent connection would outlive its greenlet (hygiene.py).
        self.close_every_request = close_every_request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            return self._plain(start_response, "200 OK", b"ok\n")
        if path == READY_PATH:
            return self._readiness(start_response)
        return self._serve(environ, start_response)

    @staticmethod
    def _plain(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
        start_response(
            status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    def _readiness(self, start_response: StartResponse) -> list[bytes]:
        if self.state.draining:
            return self._plain(start_response, "503 Service Unavailable", b"draining\n")
        if self.check_database and not database_ready():
            return self._plain(start_response, "503 Service Unavailable", b"database\n")
        return self._plain(start_response, "200 OK", b"ready\n")

    def _serve(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        waited = waited_seconds(environ, started)
        method = environ.get("REQUEST_METHOD", "GET")
        status: list[str] = []
        self.state.request_started()
        if self.metrics is not None:
            self.metrics.request_started()

        def record_status(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status[:] = [status_line]
            if exc_info is not None:
                return start_response(status_line, headers, exc_info)
            return start_response(status_line, headers)

        hygiene, close_every_request = self.hygiene, self.close_every_request

        def finish() -> None:
            # End-of-request hygiene: this runs in the request's own thread or greenlet.
            if close_every_request:
                close_all_connections()
            elif hygiene:
                close_old_connections()
            if self.metrics is not None:
                self.metrics.request_finished(
                    method, status[0] if status else "500", time.perf_counter() - started,
                    waited,
                )
            self.state.request_finished()

        if hygiene:
            close_old_connections()
        if not close_every_request:  # kept connections exist only outside gevent
            close_broken_connections()
        try:
            body = self.app(environ, record_status)
        except BaseException:
            status[:] = ["500"]
            if not hygiene:  # the response Django closes never came: clean up here
                close_old_connections()
            finish()
            raise
        return _ClosingResponse(body, finish)
