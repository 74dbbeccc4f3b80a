"""Shutdown of the operator's daemons: `pause` ends early when stopped and leaves no task for kopf
to reap; a closed scraper opens no session a collector still mid-round would leak."""

from __future__ import annotations

import asyncio
import time

from djangoscale.context import PAUSE_STEP_SECONDS, pause


class Stopped:
    def __init__(self) -> None:
        self.flag = False

    def __bool__(self) -> bool:
        return self.flag


async def test_pause_waits_its_seconds_and_leaves_no_task_behind() -> None:
    before = asyncio.all_tasks()
    started = time.monotonic()
    await pause(Stopped(), 0.3)  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 0.3 + PAUSE_STEP_SECONDS
    assert asyncio.all_tasks() == before


async def test_pause_ends_within_a_step_once_stopped() -> None:
    stopped = Stopped()
    asyncio.get_running_loop().call_later(0.1, setattr, stopped, "flag", True)
    started = time.monotonic()
    await pause(stopped, 30)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.1 + PAUSE_STEP_SECONDS + 0.2


async def test_a_closed_scraper_reads_nothing_and_opens_no_session() -> None:
    from djangoscale.autoscaling.collector import Scraper

    scraper = Scraper()
    await scraper.close()
    assert await scraper.pod_total("127.0.0.1", 9) is None
    assert await scraper.prometheus_rates("http://127.0.0.1:9", "up") is None
    assert scraper._session is None
