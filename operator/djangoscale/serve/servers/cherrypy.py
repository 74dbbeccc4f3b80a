"""cheroot's thread-pool server, the default server type.

Two things cheroot does not do on its own are done here: growing the pool from `threads`
toward `maxThreads` under load (cheroot issue #190, see `djangoscale.serve.pool`), and
answering 503 at once when the accepted queue is full instead of blocking the acceptor
for `accepted_queue_timeout` seconds (cheroot's default is 10 s, then 503).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.workers import threadpool

from djangoscale.serve.app import load_wsgi, wrap
from djangoscale.serve.config import ServeConfig
from djangoscale.serve.drain import STATE
from djangoscale.serve.hygiene import closing_connections
from djangoscale.serve.metrics import flush_process_metrics, process_metrics
from djangoscale.serve.pool import PoolLimits, PoolSupervisor
from djangoscale.serve.prefork import serve_in_processes
from djangoscale.serve.queue_time import took_request


class ClosingWorkerThread(threadpool.WorkerThread):
    """A pool thread that closes its persistent database connections when the pool shrinks
    (cheroot's threads override run(), so the hook on threading.Thread.run misses them)."""

    run = closing_connections(threadpool.WorkerThread.run)


class QueueTimedConnection(cheroot_server.HTTPConnection):
    """Hands the time it was queued to the pool thread that now serves it."""

    ready_at: float | None = None

    def communicate(self) -> bool:
        took_request(self.ready_at)
        return bool(super().communicate())  # type: ignore[no-untyped-call]


class ClosingThreadPool(threadpool.ThreadPool):
    def put(self, obj: Any) -> None:
        # A connection with a request ready (new, or kept and readable again) joins the queue.
        if isinstance(obj, QueueTimedConnection):
            obj.ready_at = time.perf_counter()
        super().put(obj)

    def _spawn_worker(self) -> threadpool.WorkerThread:
        # cheroot's own body, with our thread class (it names WorkerThread directly).
        worker = ClosingWorkerThread(self.server)  # type: ignore[no-untyped-call]
        worker.name = f"CP Server {worker.name!s}"
        worker.start()
        return worker


class DrainingServer(wsgi.Server):
    """Once draining, every response closes its connection (`Connection: close`): cheroot
    asks this property before keeping a connection for the next request."""

    @property
    def can_add_keepalive_connection(self) -> bool:
        if STATE.draining:
            return False
        return bool(super().can_add_keepalive_connection)


def build_server(config: ServeConfig, app: Any) -> wsgi.Server:
    server = DrainingServer(
        (config.bind.host, config.bind.port),
        app,
        numthreads=config.threads,
        max=config.max_threads,
        request_queue_size=config.queue_size,  # listen backlog
        timeout=int(config.timeout),
        shutdown_timeout=int(config.timeout),
        reuse_port=config.workers > 1,  # one listener per process (serve.prefork)
    )
    server.ConnectionClass = QueueTimedConnection
    # Bound the accepted queue and never wait on it: a full queue is a 503 now.
    server.requests = ClosingThreadPool(
        server,
        min=config.threads,
        max=config.max_threads,
        accepted_queue_size=config.queue_size,
        accepted_queue_timeout=0,
    )
    return server


def run(config: ServeConfig) -> int:
    return serve_in_processes(config, run_one_process)


def run_one_process(config: ServeConfig) -> int:
    app = wrap(load_wsgi(config.wsgi_app))
    server = build_server(config, app)
    server.prepare()
    supervisor = PoolSupervisor(
        server.requests,
        PoolLimits(min_threads=config.threads, max_threads=config.max_threads),
        metrics=process_metrics(),
    )
    supervisor.tick()  # publish the pool's gauges before the first scrape
    supervisor.start()
    stopper: list[threading.Thread] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        if stopper:
            return
        STATE.begin_drain()
        supervisor.stop()
        # server.stop() closes the listener, then lets the pool finish what it accepted
        # (shutdown_timeout); it blocks, so not in the signal handler.
        thread = threading.Thread(target=server.stop, name="djangoscale-drain")
        stopper.append(thread)
        thread.start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    try:
        server.serve()
    finally:
        supervisor.stop()
        for thread in stopper:
            thread.join(config.timeout + 5)
        flush_process_metrics()  # the drained requests, before the process exits
    return 0
