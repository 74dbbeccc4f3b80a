"""Django database connection hygiene that does not depend on the server.

Django closes a request's connection on `request_finished`, a signal sent only from the
request's own thread or greenlet. Code that queries from a thread or greenlet it spawned
itself never sends it, and under gevent every such greenlet keeps a connection of its own,
until the database runs out of connections. So the
launcher closes connections at the start and end of every request, and at the end of every
thread or greenlet started by hand.

Persistent connections (CONN_MAX_AGE > 0) are kept per thread, so a threaded server holds
at most one per thread. A greenlet lives for one connection of one client, so under gevent
the launcher closes every request's connections whatever CONN_MAX_AGE says.
"""

from __future__ import annotations

import functools
import select
import threading
from collections.abc import Callable
from typing import Any


def close_old_connections() -> None:
    """Django's close_old_connections, or nothing if this is not a Django app."""
    try:
        from django.db import close_old_connections as django_close
    except ImportError:
        return
    try:
        django_close()
    except Exception:  # settings not configured: not a Django app
        return


def close_all_connections() -> None:
    """Close this thread's (or greenlet's) connections whatever CONN_MAX_AGE says."""
    try:
        from django.db import connections
    except ImportError:
        return
    try:
        connections.close_all()
    except Exception:
        return


# The Django connection wrappers this thread (or greenlet) has connected, recorded from
# Django's connection_created signal: asking Django for them costs more than the poll.
_connected = threading.local()


def _remember_connected(sender: Any, connection: Any, **kwargs: Any) -> None:
    wrappers = getattr(_connected, "wrappers", None)
    if wrappers is None:
        wrappers = _connected.wrappers = set()
    wrappers.add(connection)


def track_connections() -> None:
    """Record the connections each thread opens (for `close_broken_connections`)."""
    try:
        from django.db.backends.signals import connection_created
    except ImportError:
        return
    connection_created.connect(_remember_connected, weak=False, dispatch_uid=__name__)


def close_broken_connections() -> None:
    """Close this thread's kept connections whose other end has hung up.

    An idle connection has nothing to read: if its socket is readable, PostgreSQL or the
    pod's pgbouncer (restarted) closed it, and the request would fail on it. One poll()
    instead of the round trip Django's CONN_HEALTH_CHECKS makes on every request.
    """
    wrappers = getattr(_connected, "wrappers", None)
    if not wrappers:
        return
    for wrapper in wrappers:
        raw = wrapper.connection
        if raw is None or wrapper.in_atomic_block:
            continue
        try:
            if peer_hung_up(raw.fileno()):
                wrapper.close()
        except Exception:  # already closed, or a driver without fileno(): leave it to Django
            continue


def peer_hung_up(fd: int) -> bool:
    """An idle connection's socket is readable only if the other end closed it."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def greenlets_patched() -> bool:
    """True if gevent has monkey-patched threading: thread-locals are then per greenlet."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("threading"))


def closing_connections(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a thread or greenlet body so it closes its own database connections."""
    if getattr(func, "__djangoscale_closing__", False):
        return func

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            close_all_connections()

    run.__djangoscale_closing__ = True  # type: ignore[attr-defined]
    return run


_installed = False


def install_spawn_hooks() -> None:
    """Close connections when any hand-started thread or gevent greenlet ends."""
    global _installed
    if _installed:
        return
    _installed = True
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        try:
            original_run(self)
        finally:
            close_all_connections()

    threading.Thread.run = run  # type: ignore[method-assign]

    try:
        import gevent
    except ImportError:
        return
    for name in ("spawn", "spawn_later", "spawn_raw"):
        original = getattr(gevent, name, None)
        if original is None:
            continue
        if name == "spawn_later":
            setattr(
                gevent,
                name,
                functools.wraps(original)(
                    lambda seconds, func, *a, _o=original, **k: _o(
                        seconds, closing_connections(func), *a, **k
                    )
                ),
            )
        else:
            setattr(
                gevent,
                name,
                functools.wraps(original)(
                    lambda func, *a, _o=original, **k: _o(closing_connections(func), *a, **k)
                ),
            )
