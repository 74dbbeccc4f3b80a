"""The cherrypy pool's grow/shrink decision, and the supervisor on a fake pool."""

from __future__ import annotations

from djangoscale.serve.pool import PoolLimits, PoolSnapshot, PoolSupervisor, pool_adjustment

LIMITS = PoolLimits(min_threads=100, max_threads=150, grow_step=10, idle_ticks_before_shrink=10)


def test_grows_when_connections_wait_and_no_thread_is_idle():
    assert pool_adjustment(PoolSnapshot(total=100, idle=0, queued=30), LIMITS, 0) == 30
    assert pool_adjustment(PoolSnapshot(total=100, idle=0, queued=1), LIMITS, 0) == 10


def test_never_grows_past_max():
    assert pool_adjustment(PoolSnapshot(total=145, idle=0, queued=500), LIMITS, 0) == 5
    assert pool_adjustment(PoolSnapshot(total=150, idle=0, queued=500), LIMITS, 0) == 0


def test_does_not_grow_while_threads_are_idle():
    assert pool_adjustment(PoolSnapshot(total=100, idle=3, queued=2), LIMITS, 0) == 0


def test_shrinks_only_after_idle_for_a_while_and_not_below_min():
    snap = PoolSnapshot(total=150, idle=80, queued=0)
    assert pool_adjustment(snap, LIMITS, 9) == 0
    assert pool_adjustment(snap, LIMITS, 10) == -25  # half of the 50 above min
    assert pool_adjustment(PoolSnapshot(total=101, idle=50, queued=0), LIMITS, 10) == -1
    assert pool_adjustment(PoolSnapshot(total=100, idle=100, queued=0), LIMITS, 99) == 0


class FakePool:
    def __init__(self, total: int, idle: int, queued: int) -> None:
        self._threads = [object()] * total
        self.idle, self.qsize = idle, queued
        self.grown = self.shrunk = 0

    def grow(self, n: int) -> None:
        self.grown += n
        self._threads += [object()] * n

    def shrink(self, n: int) -> None:
        self.shrunk += n


class FakeMetrics:
    def set_pool(self, total: int, busy: int, queued: int) -> None:
        self.last = (total, busy, queued)


def test_supervisor_grows_then_shrinks_after_idle_ticks():
    pool, metrics = FakePool(total=2, idle=0, queued=5), FakeMetrics()
    supervisor = PoolSupervisor(pool, PoolLimits(2, 10, grow_step=1, idle_ticks_before_shrink=3),
                                metrics=metrics)
    assert supervisor.tick() == 5 and pool.grown == 5
    assert metrics.last == (7, 2, 5)
    pool.idle, pool.qsize = 7, 0
    assert [supervisor.tick() for _ in range(3)] == [0, 0, -2]
    assert pool.shrunk == 2
