"""Several server processes on one port (SO_REUSEPORT), each loading the app itself.

For servers that have no process manager of their own (cherrypy, waitress, bjoern): one
Python process is one GIL, so a pod with two cores serves a database view about twice as
fast with two processes (docs/benchmarks.md). The kernel spreads new connections over the
processes' listeners. The parent only supervises: on SIGTERM it passes the signal to every
child, each drains as a single-process server would, and the parent waits for them up to
the timeout; a child that dies while serving is replaced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from djangoscale.serve.config import ProcessSettings, ServeConfig
from djangoscale.serve.drain import DRAIN_SIGNAL, STATE, drain_on_signal


def reuse_port_socket(config: ServeConfig) -> socket.socket:
    """A listening socket on the bind address that other processes may bind as well."""
    family = socket.AF_INET6 if ":" in config.bind.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((config.bind.host, config.bind.port))
    sock.listen(config.queue_size)
    return sock


def _drain_when_orphaned(parent: int) -> None:
    """Ask Linux for a SIGTERM when the parent dies (SIGKILL, OOM), so a child drains and
    exits rather than keep serving the port unsupervised. Elsewhere: nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def _spawn(config: ServeConfig, child: Callable[[ServeConfig], int]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        # Not the parent's handlers (they signal the children): Python's own until the
        # child's server sets its drain (bjoern's loop ends on KeyboardInterrupt).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        drain_on_signal()  # not the parent's, which passes it on
        _drain_when_orphaned(parent)
        code = 1
        try:
            code = child(config)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never return into the parent's code
    return pid


def run_processes(config: ServeConfig, child: Callable[[ServeConfig], int]) -> int:
    """Keep `config.workers` processes running `child(config)` until SIGTERM, then drain."""
    children = {_spawn(config, child) for _ in range(config.workers)}
    stopping = False

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        STATE.begin_drain()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_drain_signal(signum: int, frame: Any) -> None:
        STATE.begin_drain()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, DRAIN_SIGNAL)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    signal.signal(DRAIN_SIGNAL, on_drain_signal)
    deadline: float | None = None
    failed = False

    while children:
        if stopping and deadline is None:
            deadline = time.monotonic() + config.timeout
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if deadline is not None and time.monotonic() > deadline:
                for left in children:
                    os.kill(left, signal.SIGKILL)
            time.sleep(0.05)
            continue
        children.discard(pid)
        if ProcessSettings.from_env().multiproc_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        if not stopping:
            if os.waitstatus_to_exitcode(status) != 0:
                failed = True
            children.add(_spawn(config, child))  # keep `workers` processes serving
    return 1 if failed and not stopping else 0


def serve_in_processes(config: ServeConfig, one_process: Callable[[ServeConfig], int]) -> int:
    """One worker runs in this process; more are forked and supervised."""
    if config.workers > 1:
        return run_processes(config, one_process)
    return one_process(config)
