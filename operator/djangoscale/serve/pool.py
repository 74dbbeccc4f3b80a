"""Growing and shrinking cheroot's thread pool.

cheroot's ThreadPool has `grow()` and `shrink()` but nothing calls them: the pool stays at
`minthreads` forever (https://github.com/cherrypy/cheroot/issues/190). A DjangoService's
cherrypy pool runs `threads` and may grow to `maxThreads` (100 to 150 by default); this
module is the part that grows them.
The decision is a pure function so it is tested without threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PoolSnapshot:
    total: int  # worker threads alive
    idle: int  # of which waiting for a connection
    queued: int  # accepted connections waiting for a thread


@dataclass(frozen=True)
class PoolLimits:
    min_threads: int
    max_threads: int
    grow_step: int = 10
    idle_ticks_before_shrink: int = 10  # ticks of surplus idle threads before shrinking


def pool_adjustment(snapshot: PoolSnapshot, limits: PoolLimits, idle_ticks: int) -> int:
    """How many threads to add (> 0) or remove (< 0) now.

    Grow as soon as connections wait and no thread is idle: waiting is what users feel.
    Shrink only after the surplus has been idle for a while, half of it at a time, never
    below the minimum, so a burst that comes back does not pay for thread start-up again.
    """
    if snapshot.queued > 0 and snapshot.idle == 0 and snapshot.total < limits.max_threads:
        wanted = max(snapshot.queued, limits.grow_step)
        return min(wanted, limits.max_threads - snapshot.total)
    surplus = min(snapshot.idle, snapshot.total - limits.min_threads)
    if snapshot.queued == 0 and surplus > 0 and idle_ticks >= limits.idle_ticks_before_shrink:
        return -max(surplus // 2, 1)
    return 0


def snapshot_of(pool: Any) -> PoolSnapshot:
    """Read cheroot's ThreadPool (cheroot.workers.threadpool.ThreadPool)."""
    return PoolSnapshot(total=len(pool._threads), idle=pool.idle, queued=pool.qsize)


class PoolSupervisor(threading.Thread):
    """Ticks every `interval` seconds: adjusts the pool and publishes its gauges."""

    def __init__(self, pool: Any, limits: PoolLimits, interval: float = 0.1, metrics: Any = None):
        super().__init__(name="djangoscale-pool-supervisor", daemon=True)
        self.pool = pool
        self.limits = limits
        self.interval = interval
        self.metrics = metrics
        self._stop_event = threading.Event()
        self._idle_ticks = 0

    def stop(self) -> None:
        self._stop_event.set()

    def tick(self) -> int:
        snap = snapshot_of(self.pool)
        surplus_idle = snap.queued == 0 and min(snap.idle, snap.total - self.limits.min_threads) > 0
        self._idle_ticks = self._idle_ticks + 1 if surplus_idle else 0
        change = pool_adjustment(snap, self.limits, self._idle_ticks)
        if change > 0:
            self.pool.grow(change)
        elif change < 0:
            self.pool.shrink(-change)
            self._idle_ticks = 0
        if self.metrics is not None:
            self.metrics.set_pool(
                total=len(self.pool._threads), busy=snap.total - snap.idle, queued=snap.queued
            )
        return change

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.tick()
            except Exception:  # a failed tick must not kill the supervisor
                continue
