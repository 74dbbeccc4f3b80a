"""`djangoscale load`: the open-loop schedule's arithmetic, percentiles and error accounting,
and the generator itself against a small in-process server on loopback."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from djangoscale_dev import load
from djangoscale_dev.load import LoadError, LoadSettings, Recorder, Step


def test_steps_offer_rate_times_seconds_requests_one_every_period() -> None:
    assert Step(50, 60).requests == 3000
    assert Step(3.3, 10).requests == 33  # 3.3 * 10 is 32.999... in floating point
    assert Step(0.5, 3).requests == 1
    step = Step(400, 60)
    assert [step.due(k) for k in (0, 1, 400)] == [0.0, 0.0025, 1.0]
    assert sum(s.requests for s in load.plan(load.parse_rps("50,200,400,50"), 60)) == 42000


@pytest.mark.parametrize(("rps", "seconds", "field"), [
    ("50,abc", 60, "--rps: 'abc' is not a number"),
    ("0", 60, "--rps: 0 must be above 0"),
    ("-5", 60, "--rps: -5 must be above 0"),
    ("50", 0, "--step-seconds: 0 must be above 0"),
    ("50,50,50", 1500, "--step-seconds: 3 steps of 1500 s last 4500 s"),
    ("20000,20000", 60, "--rps: the profile offers 2400000 requests"),
])
def test_a_bad_profile_is_refused_naming_the_option(rps: str, seconds: float, field: str) -> None:
    with pytest.raises(LoadError, match=field):
        load.plan(load.parse_rps(rps), seconds)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [load.percentile(values, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert load.percentile([7.0], 99) == 7.0
    assert load.percentile([1.0, 2.0], 50) == 1.0
    assert load.percentile([], 50) is None


def test_every_request_lands_in_one_bucket_by_step_and_by_second() -> None:
    recorder = Recorder([Step(4, 1), Step(2, 1)])
    # step 1: due at 0, .25, .5, .75; the last one is dropped (too many in flight)
    for due in (0.0, 0.25, 0.5):
        recorder.offer(0, due, lag=0.0, dropped=False)
    recorder.offer(0, 0.75, lag=0.2, dropped=True)
    recorder.answer(0, done=0.1, status=200, latency=0.1)
    recorder.answer(0, done=0.9, status=503, latency=0.65)
    recorder.fail(0, done=1.3, kind="timeout")  # completes in the second second
    # step 2: one late send answered, one reset
    recorder.offer(1, 1.0, lag=0.08, dropped=False)
    recorder.offer(1, 1.5, lag=0.0, dropped=False)
    recorder.answer(1, done=1.2, status=200, latency=0.12)
    recorder.fail(1, done=1.6, kind="socket")

    first, second = recorder.by_step
    assert (first.offered, first.sent, first.dropped, first.ok) == (4, 3, 1, 1)
    assert first.statuses == {503: 1} and first.errors == {"timeout": 1}
    assert first.failed == 3 and first.completed == first.sent
    assert (second.offered, second.late, second.ok, dict(second.errors)) == (2, 1, 1, {"socket": 1})
    assert recorder.in_flight == 0
    # offered by due time, answers by completion time
    assert recorder.by_second[0].offered == 4 and recorder.by_second[1].offered == 2
    assert recorder.by_second[0].ok == 1 and recorder.by_second[1].ok == 1
    assert recorder.by_second[1].errors == {"timeout": 1, "socket": 1}
    total = recorder.total()
    assert (total.offered, total.ok, total.failed, total.late) == (6, 2, 4, 1)
    assert total.percentiles() == {"p50": 0.12, "p95": 0.65, "p99": 0.65}
    result = recorder.result("http://127.0.0.1/", 2.0)
    assert result["total"]["statuses"] == {"503": 1}
    assert result["steps"][0]["p95"] == 650.0
    assert [s["second"] for s in result["seconds"]] == [0, 1]
    assert recorder.step_at(0.99) == 0 and recorder.step_at(1.0) == 1
    assert recorder.step_at(7) == 1


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://127.0.0.1/", "not an http:// or https:// URL"),
    ("http:///path", "not an http:// or https:// URL"),
    ("http://192.0.2.7/", "resolves to 192.0.2.7, outside loopback"),
])
def test_only_loopback_and_the_test_range_are_loaded_unless_allowed(url: str,
                                                                    message: str) -> None:
    with pytest.raises(LoadError, match=message):
        load.check_target(url, allow_remote=False)
    load.check_target("http://127.0.0.1:8000/", allow_remote=False)
    load.check_target("http://198.19.4.5/", allow_remote=False)
    load.check_target("http://192.0.2.7/", allow_remote=True)


class Counted:
    """A loopback server that counts what it served and answers as `handler` says."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.delay, self.status, self.served = delay, status, 0

    async def handle(self, _: web.Request) -> web.Response:
        self.served += 1
        await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="x")

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/"

    async def __aexit__(self, *_: object) -> None:
        await self.runner.cleanup()


async def test_the_generator_offers_each_step_on_schedule_and_the_server_sees_each() -> None:
    async with (server := Counted()) as url:
        recorder = Recorder([Step(20, 1), Step(60, 1)])
        elapsed = await load.generate(LoadSettings(url, recorder.steps), recorder)
    assert [t.offered for t in recorder.by_step] == [20, 60]
    assert recorder.total().ok == server.served == 80
    assert recorder.total().failed == 0
    assert 2.0 <= elapsed < 5.0  # the profile's length (plus a busy machine's slack)


async def test_a_slow_server_fills_the_in_flight_bound_and_the_rest_are_dropped() -> None:
    # Open loop: 50 requests due within the first second while none has finished (each takes
    # 2 s); the bound lets 10 out and counts the other 40 as dropped, none silently delayed.
    async with (server := Counted(delay=2.0)) as url:
        recorder = Recorder([Step(50, 1)])
        await load.generate(LoadSettings(url, recorder.steps, max_in_flight=10), recorder)
    total = recorder.total()
    assert (total.offered, total.sent, total.dropped, total.ok) == (50, 10, 40, 10)
    assert server.served == 10 and total.failed == 40


async def test_timeouts_and_statuses_are_failures_by_kind() -> None:
    async with Counted(delay=1.0) as slow_url, Counted(status=503) as failing_url:
        slow = Recorder([Step(5, 1)])
        await load.generate(LoadSettings(slow_url, slow.steps, timeout=0.3), slow)
        failing = Recorder([Step(5, 1)])
        await load.generate(LoadSettings(failing_url, failing.steps), failing)
    assert slow.total().errors == {"timeout": 5} and slow.total().ok == 0
    assert failing.total().statuses == {503: 5} and failing.total().failed == 5
    assert load.closing_line(failing.total(), 1.0).startswith("5 offered, 5 sent, 0 ok, 5 failed")


def test_the_command_refuses_bad_options_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    load.configure(parser)
    args = parser.parse_args(["http://127.0.0.1:9/", "--rps", "10", "--connections", "0"])
    assert load.main(args) == 2
    assert "--connections: 0 must be at least 1" in capsys.readouterr().err


def test_the_command_exits_1_on_failures_unless_allowed(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, every request is refused.
    parser = argparse.ArgumentParser()
    load.configure(parser)
    out = tmp_path / "counts.json"
    argv = ["http://127.0.0.1:9/", "--rps", "10", "--step-seconds", "0.5", "--json", str(out)]
    assert load.main(parser.parse_args(argv)) == 1
    counts = json.loads(out.read_text())["total"]
    assert counts["offered"] == 5 and counts["errors"] == {"connect": 5}
    assert load.main(parser.parse_args([*argv, "--allow-errors"])) == 0


async def test_the_every_second_hook_runs_just_past_each_whole_second() -> None:
    ticks: list[float] = []

    async def hook(elapsed: float) -> None:
        ticks.append(elapsed)

    async with Counted() as url:
        recorder = Recorder([Step(20, 3)])
        await load.run(LoadSettings(url, recorder.steps), recorder, hook)
    # One tick per whole second, never before it (so the second before is complete); how
    # long after it a tick comes depends on the machine's load, so that is not asserted. The
    # run ends just after 3 s (in-flight answers, closing the session): a third tick may come.
    assert 2 <= len(ticks) <= 3, ticks
    assert all(tick >= second for second, tick in enumerate(ticks, start=1)), ticks
    assert len({int(tick) for tick in ticks}) == len(ticks), ticks
