"""Views shaped like the story's traffic: a query, a ~50 ms query, a long one, and no query
at all."""

from __future__ import annotations

import threading
import time

from django.db import connection
from django.http import HttpRequest, JsonResponse

from sampleproject.shop.models import Item

# Longer than any pod's grace period in the tests, short enough not to leak a query forever.
HOLD_SECONDS_AT_MOST = 120.0


def items(request: HttpRequest) -> JsonResponse:
    rows = list(Item.objects.order_by("id").values("name", "price_cents"))
    return JsonResponse({"count": len(rows), "items": rows})


def slow(request: HttpRequest) -> JsonResponse:
    """~50 ms spent in the database, holding a connection: the view the benchmark loads."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.05), pg_backend_pid()")
        _, backend = cursor.fetchone()
    return JsonResponse({"slept_ms": 50, "backend_pid": backend})


def hold(request: HttpRequest) -> JsonResponse:
    """Holds a server connection `?s=` seconds (bounded) in one statement: a request that a
    terminating pod's pgbouncer cannot take its connection back from until it ends."""
    seconds = min(float(request.GET.get("s", "1")), HOLD_SECONDS_AT_MOST)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s), pg_backend_pid()", [seconds])
        _, backend = cursor.fetchone()
    return JsonResponse({"held_s": seconds, "backend_pid": backend})


def hello(request: HttpRequest) -> JsonResponse:
    """CPU-light: no database, a few microseconds of Python."""
    return JsonResponse({"hello": "world"})


def sleep(request: HttpRequest) -> JsonResponse:
    """Sleeps `?s=` seconds outside the database (bounded): a request to be in flight."""
    seconds = min(float(request.GET.get("s", "1")), 10.0)
    time.sleep(seconds)
    return JsonResponse({"slept": seconds})


def spawn_query(request: HttpRequest) -> JsonResponse:
    """Queries from a greenlet (under gevent) or thread it starts itself and joins.

    That greenlet never sees request_finished: without the launcher's hooks its
    connection stays open for as long as the greenlet's locals live.
    """
    result: dict[str, int] = {}

    def work() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            result["pid"] = cursor.fetchone()[0]

    try:
        import gevent.monkey

        patched = gevent.monkey.is_module_patched("threading")
    except ImportError:
        patched = False
    if patched:
        import gevent

        gevent.spawn(work).join()
    else:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    return JsonResponse({"backend_pid": result.get("pid"), "greenlet": patched})
