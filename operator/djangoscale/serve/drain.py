"""Per-process drain state: readiness, requests in flight, and waiting for them to finish.

A pod being deleted runs its preStop hook first (`djangoscale prestop`), which sends
DRAIN_SIGNAL to the server process recorded in the pid file: from then on readiness answers
503 and every response says `Connection: close`, so a client whose keep-alive connection is
still routed to this pod (conntrack keeps an established flow on its endpoint after the
endpoint is removed) reconnects, to another pod, after the answer it got. Then SIGTERM: no
new connection may be accepted, and every request already accepted must finish. Each server
adapter closes its own listener; this object is what they share to know when the last
request has gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Not SIGUSR2 (gunicorn's master re-executes itself on it); gunicorn passes SIGUSR1 on to its
# workers after reopening its logs.
DRAIN_SIGNAL = signal.SIGUSR1


class DrainState:
    def __init__(self) -> None:
        self._draining = False
        self._in_flight = 0
        self._waiting = 0  # threads in wait_idle: only they need the notification
        # An RLock: begin_drain may run in a signal handler, in a thread inside request_*.
        # The hot path takes it directly (a C call), not through the Condition's methods.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # Called once, in the thread that finished the last request, when draining and idle
        # (bjoern: only then may its loop stop, after the response has been written).
        self._on_idle: Callable[[], None] | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def ready(self) -> bool:
        return not self._draining

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin_drain(self) -> None:
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            if self._in_flight == 0 and self._waiting:
                self._cond.notify_all()
            idle_callback = self._take_idle_callback()
        if idle_callback is not None:
            idle_callback()

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Run `callback` once draining has begun and no request is in flight: now if that
        is already so, else when the last request in flight finishes."""
        with self._lock:
            self._on_idle = callback
            idle_callback = self._take_idle_callback()
        if idle_callback is not None:
            idle_callback()

    def _take_idle_callback(self) -> Callable[[], None] | None:
        if not (self._draining and self._in_flight == 0 and self._on_idle):
            return None
        callback, self._on_idle = self._on_idle, None
        return callback

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight; False if the timeout passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            try:
                while self._in_flight > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1
        return True


# One per process: the middleware and the server adapter of that process share it.
STATE = DrainState()


def pid_file(port: int) -> Path:
    """Where `djangoscale serve` on `port` records its pid for the preStop hook."""
    return Path(tempfile.gettempdir()) / f"djangoscale-serve-{port}.pid"


def record_pid(port: int) -> None:
    pid_file(port).write_text(f"{os.getpid()}\n")


def forget_pid(port: int) -> None:
    """At exit: a pid file left behind could name an unrelated process later."""
    with contextlib.suppress(FileNotFoundError):
        pid_file(port).unlink()


def signal_drain(port: int) -> int | None:
    """Send DRAIN_SIGNAL to the server recorded for `port`; its pid, or None if there is
    no such server (no pid file, or a stale one)."""
    try:
        pid = int(pid_file(port).read_text().strip())
        os.kill(pid, DRAIN_SIGNAL)
    except (OSError, ValueError):
        return None
    return pid


def drain_on_signal(state: DrainState = STATE) -> None:
    """Begin draining on DRAIN_SIGNAL (what the preStop hook sends)."""

    def on_drain_signal(signum: int, frame: Any) -> None:
        state.begin_drain()

    signal.signal(DRAIN_SIGNAL, on_drain_signal)
