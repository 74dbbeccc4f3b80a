"""Operator-wide background work over all DjangoServices, in place of per-object kopf daemons.

Why not kopf daemons or timers: kopf puts its finalizer on every object that has one, so that it
can stop the daemon before the object goes. With the operator stopped (a crash, or a
`helm uninstall` before the apps) nothing removes that finalizer, and the DjangoService, and
the namespace it is in, never finish deleting. Here each kind of work (the resync, RPS
collection, queue polling) is one loop, started by a startup handler and cancelled at cleanup
through the context. The loops read the objects from a kopf index: a watch kept in memory,
which needs no finalizer. The children go with their owner by garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import kopf

from djangoscale.contract import GROUP, PLURAL, VERSION

# (namespace, name) of a DjangoService.
ServiceKey = tuple[str, str]
T = TypeVar("T")


@kopf.index(GROUP, VERSION, PLURAL)
def djangoservices(body: kopf.Body, namespace: str | None, name: str,
                   **_: Any) -> dict[ServiceKey, dict[str, Any]]:
    """Every DjangoService's latest body, for the loops; the startup handlers receive it by
    this function's name."""
    return {(namespace or "default", name): dict(body)}


def latest(index: kopf.Index[ServiceKey, dict[str, Any]]) -> dict[ServiceKey, dict[str, Any]]:
    """One body per DjangoService that exists now (kopf drops deleted ones from the index)."""
    found: dict[ServiceKey, dict[str, Any]] = {}
    for key, store in list(index.items()):
        for body in store:
            found[key] = body
    return found


async def run_every(seconds: float, work: Callable[[], Awaitable[None]],
                    logger: logging.Logger, what: str, first_delay: float = 0.0,
                    active: Callable[[], Awaitable[bool]] | None = None) -> None:
    """`work()` every `seconds` until cancelled, in the rounds where `active()` says this
    operator is the one that works (kopf peering); a failed round is logged, the next runs."""
    await asyncio.sleep(first_delay)
    while True:
        try:
            if active is None or await active():
                await work()
        except Exception:  # one bad round must not end the loop for every object
            logger.exception("%s: round failed", what)
        await asyncio.sleep(seconds)


async def each(items: Iterable[T], work: Callable[[T], Awaitable[None]],
               logger: logging.Logger, what: str, concurrency: int | None = None,
               describe: Callable[[T], object] = lambda item: item) -> None:
    """`work(item)` for every item at once (at most `concurrency` at a time); one failure is
    logged, under `describe(item)` (a key, not a whole object), and does not stop the others."""
    semaphore = asyncio.Semaphore(concurrency) if concurrency else None

    async def one(item: T) -> None:
        try:
            if semaphore is None:
                await work(item)
            else:
                async with semaphore:
                    await work(item)
        except Exception:
            logger.exception("%s failed for %s", what, describe(item))

    await asyncio.gather(*(one(item) for item in items))
