"""Advice on `server.workers` and `server.threads` from what the pods measure.

A thread pool that is always full while the CPU idles means requests wait on I/O (the database,
an API): more threads would serve more. A process whose CPU is always busy cannot use more
threads (Python runs one thread at a time per process): more processes would. The operator
only says so in `status.recommendations`; it never writes the spec, which is the user's (and
a GitOps tool's) to change.
"""

from __future__ import annotations

from collections.abc import Mapping

from djangoscale.contract import SINGLE_THREADED_SERVERS
from djangoscale.spec import ServerSpec

# Threads busy on average (share of workers x maxThreads) that count as "always full".
BUSY_THREADS = 0.9
# CPU per worker process (share of one core) under which the CPU idles, and over which it is
# what limits the pod.
IDLE_CPU = 0.5
BUSY_CPU = 0.9


def _percent(share: float) -> str:
    """To the nearest 10 %, so status is not rewritten at every small change."""
    return f"{round(share * 10) * 10} %"


def recommendations(server: ServerSpec, usage: Mapping[str, tuple[float, float]]) -> list[str]:
    """`usage`: per pod, (threads busy on average, CPU cores used) over the stable window."""
    if not usage:
        return []
    busy = sum(b for b, _ in usage.values()) / len(usage)
    cores = sum(c for _, c in usage.values()) / len(usage)
    threads = busy / server.concurrency
    cpu = cores / server.workers
    if threads >= BUSY_THREADS and cpu < IDLE_CPU:
        if server.type in SINGLE_THREADED_SERVERS:
            raise_what = ("raise spec.server.workers, or use a threaded server "
                          "(gunicorn-gthread, cherrypy)")
        else:
            raise_what = "raise spec.server.maxThreads"
        return [f"threads are {_percent(threads)} busy while CPU is {_percent(cpu)} of each "
                f"worker's core: {raise_what} (requests wait on I/O, not on CPU)"]
    if cpu >= BUSY_CPU and threads < BUSY_THREADS:
        return [f"CPU is {_percent(cpu)} of each worker's core while threads are "
                f"{_percent(threads)} busy: more spec.server.workers and fewer threads "
                "(Python runs one thread at a time per process)"]
    return []
