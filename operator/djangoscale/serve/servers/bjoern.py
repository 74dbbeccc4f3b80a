"""bjoern: single-threaded libev server, so several processes share the port (SO_REUSEPORT).

Each process serves one request at a time; `workers` is the concurrency. On SIGTERM the
parent passes it to every child, which stops listening and, once its request in hand is
answered, ends bjoern's loop with a SIGINT to itself; the parent waits for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from typing import Any

from djangoscale.serve.app import THREADS_ENV, load_wsgi, wrap
from djangoscale.serve.config import ServeConfig
from djangoscale.serve.drain import STATE


def _child(config: ServeConfig) -> None:
    import bjoern

    os.environ[THREADS_ENV] = "1"
    app = wrap(load_wsgi(config.wsgi_app))
    sock = bjoern.listen(
        app, config.bind.host, config.bind.port, reuse_port=True, listen_backlog=config.queue_size
    )

    def stop_listening(signum: int, frame: Any) -> None:
        # shutdown() (not close: libev still watches the fd) takes the socket out of LISTEN:
        # new connects are refused at once, nothing more is taken from the backlog.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        STATE.begin_drain()
        # bjoern's loop stops on SIGINT, but its response write and its SIGINT watcher can be
        # due in the same loop turn: a SIGINT sent with a request in hand could end the process
        # before the response is written. So SIGINT comes only once the response is closed
        # (after its last byte was sent): at once if idle, else from the request's end.
        STATE.when_drained(lambda: os.kill(os.getpid(), signal.SIGINT))

    signal.signal(signal.SIGTERM, stop_listening)
    try:
        bjoern.run()
    except KeyboardInterrupt:
        pass
    finally:
        from djangoscale.serve.hygiene import close_all_connections
        from djangoscale.serve.metrics import flush_process_metrics

        close_all_connections()
        flush_process_metrics()  # the child ends in os._exit: atexit would not run


def _spawn(config: ServeConfig) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _child(config)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def run(config: ServeConfig) -> int:
    children = {_spawn(config) for _ in range(config.workers)}
    stopping = False

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        STATE.begin_drain()
        # Each child stops listening at once and ends its loop when its request is done.
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    deadline: float | None = None
    failed = False
    from djangoscale.serve.metrics import MULTIPROC_ENV

    while children:
        if stopping and deadline is None:
            deadline = time.monotonic() + config.timeout
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if deadline is not None and time.monotonic() > deadline:
                for child in children:
                    os.kill(child, signal.SIGKILL)
            time.sleep(0.05)
            continue
        children.discard(pid)
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        if not stopping:
            if os.waitstatus_to_exitcode(status) != 0:
                failed = True
            children.add(_spawn(config))  # keep `workers` processes serving
    return 1 if failed and not stopping else 0
