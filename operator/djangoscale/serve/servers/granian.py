"""granian's WSGI interface: a Rust (hyper/tokio) front with a pool of Python threads.

`blocking_threads` is granian's name for the Python threads that run the app; the
`backpressure` bound plays the queue's role. granian loads the app in its own worker
processes, so the target is the launcher's factory, which wraps the user's app after the
fork.
"""

from __future__ import annotations

import os
import signal
import threading
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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_signals_to_default() -> None:
    """In a freshly forked worker: SIGTERM and SIGINT back to their default action.

    granian installs its main process's handlers before it forks the workers, so a worker
    inherits one that only flags the main loop's copy: a SIGTERM that reached a worker still
    loading the app was lost, and that worker then took new requests until granian killed it
    `workers_kill_timeout` later. With the default action it exits at once, before it has
    accepted anything; granian's worker handlers replace these before it serves."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_DFL)


def forward_stop_signals_to_main_thread() -> None:
    """In a freshly forked worker: a stop signal that lands on another thread reaches the
    main thread as well.

    Python runs a handler on the main thread only, and a granian worker's main thread sleeps
    on a lock until its handler runs. The kernel may deliver the pod's SIGTERM to any thread
    of the worker (a request's thread, a tokio thread); the main thread then slept on and the
    worker took new requests until granian killed it, in-flight ones with it (seen 3 times in
    20 under load). Every signal with a Python handler writes its number to the wakeup fd;
    a thread reads it and sends the signal once more to the main thread itself, which wakes
    it. Once per signal: that second delivery writes its number too."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(read_fd, True)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    main = threading.main_thread().ident
    assert main is not None

    def forward() -> None:
        forwarded: set[int] = set()
        while True:
            for number in os.read(read_fd, 64):
                if number in STOP_SIGNALS and number not in forwarded:
                    forwarded.add(number)
                    signal.pthread_kill(main, number)

    threading.Thread(target=forward, name="djangoscale-stop-signals", daemon=True).start()


def prepare_worker() -> None:
    stop_signals_to_default()
    forward_stop_signals_to_main_thread()


def run(config: ServeConfig) -> int:
    hand_down({APP_ENV: config.wsgi_app, THREADS_ENV: str(config.threads)})
    os.register_at_fork(after_in_child=prepare_worker)
    Server(FACTORY, **granian_settings(config)).serve()
    return 0
