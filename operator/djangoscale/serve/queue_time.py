"""How long a request waited before a thread took it: what queue-time autoscaling reads.

A server that queues ready requests for its thread pool (cheroot's queue, gunicorn gthread's
pool, waitress's task queue) stamps each one as it is queued (`time.perf_counter()`), and
the thread that takes it hands the stamp to `took_request` before the app runs; the
middleware reads it with `waited_seconds`. Servers that hand a request to its handler as they
accept it never call `took_request`, and their waits are in the kernel's backlog, which the
process cannot see.

An ingress that stamps `X-Request-Start` (nginx `t=${msec}`, Heroku `t=<microseconds>`)
shows the time spent before the pod too: the wait then runs from the ingress's stamp (a wall
clock: clocks that disagree by a little give a wait a little off; a stamp from the future
reads as no wait).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

from djangoscale.contract import REQUEST_START_HEADER

# A stamp further back than this is not a queue (a wrong clock or a wrong header): ignored.
MAX_CREDIBLE_WAIT_SECONDS: Final = 600.0
# Integer stamps are told apart by size: microseconds (Heroku), milliseconds, seconds.
MICROSECONDS_ABOVE: Final = 1e15
MILLISECONDS_ABOVE: Final = 1e12

_handler = threading.local()


def took_request(ready_at: float | None) -> None:
    """In the thread about to run a request: when (perf_counter) it was queued."""
    _handler.ready_at = ready_at


def request_start_seconds(header: str) -> float | None:
    """The Unix time in an `X-Request-Start` value (`t=` prefix optional), or None."""
    text = header.strip()
    if text.startswith("t="):
        text = text[2:]
    try:
        value = float(text)
    except ValueError:
        return None
    if "." not in text:
        if value > MICROSECONDS_ABOVE:
            return value / 1e6
        if value > MILLISECONDS_ABOVE:
            return value / 1e3
    return value


def waited_seconds(environ: dict[str, Any], now: float) -> float | None:
    """The wait of the request this thread is about to run (`now`: perf_counter), or None
    when neither the server nor an ingress marked when it arrived."""
    ready_at = getattr(_handler, "ready_at", None)
    _handler.ready_at = None  # a stamp is for one request (a kept connection queues again)
    in_pod = None if ready_at is None else max(0.0, now - ready_at)
    header = environ.get(REQUEST_START_HEADER)
    if header:
        started = request_start_seconds(header)
        if started is not None:
            since = time.time() - started
            if 0.0 <= since <= MAX_CREDIBLE_WAIT_SECONDS:
                return max(since, in_pod or 0.0)
            if since < 0.0:
                return in_pod or 0.0
    return in_pod
