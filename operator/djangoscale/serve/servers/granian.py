"""granian's WSGI interface: a Rust (hyper/tokio) front with a pool of Python threads.

`blocking_threads` is granian's name for the Python threads that run the app; the
`backpressure` bound plays the queue's role. granian loads the app in its own worker
processes, so the target is the launcher's factory, which wraps the user's app after the
fork.
"""

from __future__ import annotations

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


def run(config: ServeConfig) -> int:
    hand_down({APP_ENV: config.wsgi_app, THREADS_ENV: str(config.threads)})
    Server(FACTORY, **granian_settings(config)).serve()
    return 0
