"""granian's WSGI interface: a Rust (hyper/tokio) front with a pool of Python threads.

`blocking_threads` is granian's name for the Python threads that run the app; the
`backpressure` bound plays the queue's role. granian loads the app in its own worker
processes, so the target is the launcher's factory, which wraps the user's app after the
fork.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from granian.constants import Interfaces
from granian.server import Server

from djangoscale.serve.config import APP_ENV, THREADS_ENV, ServeConfig, hand_down

FACTORY = "djangoscale.serve.app:create_application"


def granian_settings(config: ServeConfig) -> dict[str, Any]:
    return {
        "address": config.bind.host,
        "port": config.bind.port,
        "interface": Interfaces.WSGI,
        "workers": config.workers,
        "blocking_threads": config.threads,
        "backlog": max(config.queue_size, config.threads),
        "backpressure": config.threads + config.queue_size,
        "workers_kill_timeout": max(int(config.timeout), 1),
        "factory": True,
        "log_access": False,
    }


def stop_signals_to_default() -> None:
    """In a freshly forked worker: SIGTERM and SIGINT back to their default action.

    granian installs its main process's handlers before it forks the workers, so a worker
    inherits one that only flags the main loop's copy: a SIGTERM that reached a worker still
    loading the app was lost, and that worker then took new requests until granian killed it
    `workers_kill_timeout` later. With the default action it exits at once, before it has
    accepted anything; granian's worker handlers replace these before it serves."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(config: ServeConfig) -> int:
    hand_down({APP_ENV: config.wsgi_app, THREADS_ENV: str(config.threads)})
    os.register_at_fork(after_in_child=stop_signals_to_default)
    Server(FACTORY, **granian_settings(config)).serve()
    return 0
