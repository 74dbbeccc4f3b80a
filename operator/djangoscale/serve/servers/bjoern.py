"""bjoern: single-threaded libev server, so several processes share the port (SO_REUSEPORT).

Each process serves one request at a time; `workers` is the concurrency. On SIGTERM the
parent (`djangoscale.serve.prefork`) passes it to every child, which stops listening and,
once its request in hand is answered, ends bjoern's loop with a SIGINT to itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import Any

from djangoscale.serve.app import load_wsgi, wrap
from djangoscale.serve.config import THREADS_ENV, ServeConfig, hand_down
from djangoscale.serve.drain import STATE
from djangoscale.serve.prefork import run_processes


def _child(config: ServeConfig) -> int:
    import bjoern

    hand_down({THREADS_ENV: "1"})
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
    return 0


def run(config: ServeConfig) -> int:
    return run_processes(config, _child)
