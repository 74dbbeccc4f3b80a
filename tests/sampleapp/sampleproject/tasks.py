"""Tasks of uneven length, and an optional trace of what each worker held and when.

With SAMPLEPROJECT_TASK_TRACE set to a directory, every worker process appends one line per
event to `<dir>/<pid>.trace`: `received`, `started` and `done`, each with the task id, the
worker's hostname and a wall-clock time. The tests read them to see how many messages each
worker held at once (received but not done) and which tasks ran, without polling the broker.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import shared_task, signals

TRACE_DIR = os.environ.get("SAMPLEPROJECT_TASK_TRACE")
_lock = threading.Lock()


def _trace(event: str, task_id: str | None, hostname: str | None) -> None:
    if not TRACE_DIR:
        return
    line = f"{event} {task_id} {hostname} {time.time():.6f}\n"
    with _lock, open(os.path.join(TRACE_DIR, f"{os.getpid()}.trace"), "a") as handle:
        handle.write(line)


@signals.task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    _trace("received", request.id, request.hostname)


@signals.task_prerun.connect
def _started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    _trace("started", task_id, task.request.hostname)


@signals.task_postrun.connect
def _done(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    _trace("done", task_id, task.request.hostname)


@shared_task
def work(milliseconds: int) -> int:
    """Sleep (an I/O wait, as most tasks are: a query, an HTTP call) for `milliseconds`."""
    time.sleep(milliseconds / 1000)
    return milliseconds


@shared_task
def count_items() -> int:
    """A task that touches the database; Celery's Django fixup closes the connection after it."""
    from sampleproject.shop.models import Item

    return Item.objects.count()
