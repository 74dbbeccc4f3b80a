"""gunicorn, run programmatically with the worker class the server type names.

gunicorn-sync is the plain baseline (one request per worker);
gunicorn-gthread is threads per worker; gunicorn-gevent is greenlets, made safe for the
database: gunicorn's gevent worker monkey-patches before the app is imported, so psycopg 3
sees the patched `select` and waits cooperatively (psycopg.waiting._is_select_patched), and
the launcher's spawn hooks close connections of greenlets that never see request_finished.
"""

from __future__ import annotations

import ctypes
import signal
from multiprocessing.sharedctypes import RawValue
from typing import Any

from gunicorn.app.base import BaseApplication

from djangoscale.serve.app import create_application
from djangoscale.serve.config import (
    APP_ENV,
    THREADS_ENV,
    ProcessSettings,
    ServeConfig,
    hand_down,
)
from djangoscale.serve.drain import DRAIN_SIGNAL, STATE

WORKER_CLASSES = {
    "gunicorn-sync": "sync",
    "gunicorn-gthread": "gthread",
    "gunicorn-gevent": "gevent",
}


def gunicorn_settings(config: ServeConfig) -> dict[str, Any]:
    """The gunicorn settings for a launcher config (pure, for tests)."""
    worker_class = WORKER_CLASSES[config.server]
    settings: dict[str, Any] = {
        "bind": [str(config.bind)],
        "workers": config.workers,
        "worker_class": worker_class,
        "backlog": config.queue_size,
        "timeout": max(int(config.timeout), 1),
        "graceful_timeout": max(int(config.timeout), 1),
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "preload_app": False,  # load Django after the fork: no connection shared by workers
    }
    if worker_class == "gthread":
        settings["threads"] = config.threads
    if worker_class == "gevent":
        settings["worker_connections"] = config.threads
    return settings


def slots_per_worker(config: ServeConfig) -> int:
    return 1 if config.server == "gunicorn-sync" else config.threads


def _post_worker_init(worker: Any) -> None:
    """Readiness turns false, and accepting stops, as soon as the worker is told to stop."""
    previous = signal.getsignal(signal.SIGTERM)
    kind = worker.__class__.__name__
    stop_accepting = None
    if kind == "GeventWorker":
        stop_accepting = _track_gevent_servers()
    elif kind == "ThreadWorker":
        _time_the_pool_queue(worker)
        # gthread closes its listeners only once its loop ends; until then (up to the
        # graceful timeout) new connections land in the backlog and are reset at exit.
        stop_accepting = lambda: [sock.close() for sock in worker.sockets]  # noqa: E731

    def on_sigterm(signum: int, frame: Any) -> None:
        STATE.begin_drain()
        if callable(previous):
            previous(signum, frame)
        if stop_accepting is not None:
            stop_accepting()

    signal.signal(signal.SIGTERM, on_sigterm)
    _close_connections_once_draining(worker)
    if worker.app.drain_begun.value:  # told before its handler was in place, or forked since
        STATE.begin_drain()


def _time_the_pool_queue(worker: Any) -> None:
    """gthread queues each connection with a request ready for its thread pool
    (`enqueue_req`, in the main thread); the pool thread runs `handle`: the gap is the
    request's queue time (`djangoscale.serve.queue_time`)."""
    import time

    from djangoscale.serve.queue_time import took_request

    enqueue, handle = worker.enqueue_req, worker.handle

    def enqueue_req(conn: Any) -> None:
        conn.djangoscale_ready_at = time.perf_counter()
        enqueue(conn)

    def timed_handle(conn: Any) -> Any:
        took_request(getattr(conn, "djangoscale_ready_at", None))
        return handle(conn)

    worker.enqueue_req, worker.handle = enqueue_req, timed_handle


def _close_connections_once_draining(worker: Any) -> None:
    """On the preStop hook's signal (which gunicorn's arbiter passes on to its workers),
    every response says `Connection: close` and the worker closes the connection after it:
    both read the response's should_close(). Idle kept connections are left to SIGTERM."""
    from gunicorn.http import wsgi as gunicorn_wsgi

    keep_unless_asked = gunicorn_wsgi.Response.should_close

    def should_close(response: Any) -> bool:
        return STATE.draining or bool(keep_unless_asked(response))

    gunicorn_wsgi.Response.should_close = should_close  # in this worker process only
    previous = signal.getsignal(DRAIN_SIGNAL)  # gunicorn's: reopen the log files

    def on_drain_signal(signum: int, frame: Any) -> None:
        STATE.begin_drain()
        if callable(previous):
            previous(signum, frame)

    signal.signal(DRAIN_SIGNAL, on_drain_signal)


def _track_gevent_servers() -> Any:
    """gunicorn's gevent worker notices SIGTERM only in its next 1 s sleep and keeps
    accepting until then; record its servers so the SIGTERM handler can close them at once.
    (post_worker_init runs before the worker's run() creates them.)"""
    import gevent
    from gunicorn.workers import ggevent

    servers: list[Any] = []

    class RecordingStreamServer(ggevent.StreamServer):  # type: ignore[misc]
        def start(self) -> None:
            servers.append(self)
            super().start()

    ggevent.StreamServer = RecordingStreamServer

    def stop_accepting() -> None:
        # Closing in a greenlet: gevent may not block inside a signal handler (gunicorn #1126).
        gevent.spawn(lambda: [server.close() for server in servers])

    return stop_accepting


def _worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it exits: its last requests' metrics reach the files first."""
    from djangoscale.serve.metrics import flush_process_metrics

    flush_process_metrics()


def _child_exit(server: Any, worker: Any) -> None:
    path = ProcessSettings.from_env().multiproc_dir
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]


def _when_ready(arbiter: Any) -> None:
    """The master notes the preStop hook's signal, in memory its workers share, before it
    passes the signal on. A worker still booting then would take it for gunicorn's "reopen
    the logs" and never drain, and one forked later (replacing a crashed one) would not get
    it at all; both read the note once their own handler is in place."""
    pass_on = arbiter.handle_usr1

    def handle_usr1() -> None:
        arbiter.app.drain_begun.value = True
        pass_on()

    arbiter.handle_usr1 = handle_usr1


class LauncherApplication(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        # Shared with the workers (an anonymous mapping they inherit at fork).
        self.drain_begun = RawValue(ctypes.c_bool, False)
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_settings(self.config).items():
            self.cfg.set(key, value)
        self.cfg.set("when_ready", _when_ready)
        self.cfg.set("post_worker_init", _post_worker_init)
        self.cfg.set("child_exit", _child_exit)
        self.cfg.set("worker_exit", _worker_exit)

    def load(self) -> Any:
        return create_application()


def run(config: ServeConfig) -> int:
    hand_down({APP_ENV: config.wsgi_app, THREADS_ENV: str(slots_per_worker(config))})
    LauncherApplication(config).run()
    return 0
