"""waitress: a pure-Python thread pool behind an asyncore loop.

waitress has no graceful stop of its own; on SIGTERM the launcher closes the listener in
the loop thread, waits for the requests in flight and their buffered output, then stops
the loop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

import waitress.channel
import waitress.server
import waitress.task
import waitress.wasyncore

from djangoscale.serve.app import load_wsgi, wrap
from djangoscale.serve.config import ProcessSettings, ServeConfig
from djangoscale.serve.drain import STATE
from djangoscale.serve.prefork import reuse_port_socket, serve_in_processes
from djangoscale.serve.queue_time import took_request


def _pending_output(server: Any) -> int:
    return sum(
        getattr(channel, "total_outbufs_len", 0) for channel in list(server._map.values())
    )


class DrainingTask(waitress.task.WSGITask):  # type: ignore[misc]
    def build_response_header(self) -> bytes:
        if STATE.draining:
            # As if the client had asked to close: waitress says `Connection: close` and
            # closes once the response is sent (an app may not set that header itself).
            self.request.headers["CONNECTION"] = "close"
        return bytes(super().build_response_header())


class DrainingChannel(waitress.channel.HTTPChannel):  # type: ignore[misc]
    """Once draining, every response closes its connection. A channel with a request ready
    waits in the task queue for a thread (`time_the_task_queue` stamps it): the
    thread that takes it hands the stamp on (`djangoscale.serve.queue_time`)."""

    task_class = DrainingTask
    ready_at: float | None = None

    def service(self) -> None:
        took_request(self.ready_at)
        super().service()


def time_the_task_queue(server: Any) -> None:
    """Stamp each channel as the loop queues it for a thread (one dispatcher serves every
    listener)."""
    dispatcher = server.task_dispatcher
    add_task = dispatcher.add_task

    def queue(channel: Any) -> None:
        channel.ready_at = time.perf_counter()
        add_task(channel)

    dispatcher.add_task = queue


def run(config: ServeConfig) -> int:
    return serve_in_processes(config, run_one_process)


def run_one_process(config: ServeConfig) -> int:
    app = wrap(load_wsgi(config.wsgi_app))
    where: dict[str, Any] = {"host": config.bind.host, "port": config.bind.port}
    if config.workers > 1:  # one listener per process (serve.prefork)
        where = {"sockets": [reuse_port_socket(config)]}
    server = waitress.server.create_server(
        app,
        **where,
        threads=config.threads,
        backlog=config.queue_size,
        connection_limit=max(config.queue_size, config.threads),
        channel_timeout=int(config.timeout),
        clear_untrusted_proxy_headers=True,
        ident="djangoscale",
    )
    server.channel_class = DrainingChannel
    time_the_task_queue(server)
    from djangoscale.serve.metrics import process_metrics

    if ProcessSettings.from_env().multiproc_dir:
        process_metrics().threads_total.set(config.threads)

    def stop_accepting() -> None:
        # Runs in the loop thread (a trigger thunk): closing the listener from the signal
        # handler instead would leave its fd in the select() being retried (EBADF).
        server.accepting = False
        server.close()

    def drain() -> None:
        server.trigger.pull_trigger(stop_accepting)
        deadline = time.monotonic() + config.timeout
        STATE.wait_idle(config.timeout)
        while _pending_output(server) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Then the idle kept connections, the trigger and all: waitress's loop runs while its
        # map holds a channel. (Not a KeyboardInterrupt in the main thread: one that lands in
        # a trigger thunk is swallowed by waitress's bare except, and the loop never ends.)
        server.trigger.pull_trigger(lambda: waitress.wasyncore.close_all(server._map))

    stopping: list[threading.Thread] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        if stopping:  # draining alone is not enough: the preStop hook begins that
            return
        STATE.begin_drain()
        stopping.append(threading.Thread(target=drain, name="djangoscale-drain", daemon=True))
        stopping[0].start()

    signal.signal(signal.SIGTERM, on_sigterm)
    from djangoscale.serve.metrics import flush_process_metrics

    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        flush_process_metrics()  # the drained requests, before the process exits
    return 0
