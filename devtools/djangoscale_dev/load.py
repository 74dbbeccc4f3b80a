"""`djangoscale load URL --rps 50,200,400,50 --step-seconds 60`: open-loop HTTP load in steps,
counting every request.

Open loop: request k of a step is due at `step start + k / rps` whatever earlier requests do.
A closed loop (N clients, each waiting for its answer before the next request) slows down with
the server and so hides the very overload an autoscaler must see; here a slow server shows as
more requests in flight and longer latencies, never as a lower offered rate. In-flight requests
are bounded all the same: a request that falls due while `max_in_flight` are outstanding is not
sent and counts as dropped, a failure like any other, so the generator's own limit is never a
quiet slowdown.

Every request ends in exactly one bucket: 2xx, another status, a socket error or timeout, or
dropped. Counts go to the request's step (by due time) and to per-second buckets: offered and
dropped by due time, answers by completion time (what a timeline shows as "served").

The generator always stops by itself: the profile bounds its time and request count, every
request has a timeout, and the whole run has a deadline past the last step. It loads loopback
and the benchmarking range 198.18.0.0/15 (where the local cluster puts pods and Services);
another address needs `--allow-remote`, since a load test belongs only on servers you own.

Only argparse at import time: the dispatcher imports this module to build the parser.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_RPS = "50,200,400,50"
DEFAULT_STEP_SECONDS = 60.0
DEFAULT_CONNECTIONS = 200
DEFAULT_MAX_IN_FLIGHT = 2000
DEFAULT_TIMEOUT = 10.0
# Bounds that keep a typo from becoming an hour-long flood.
MAX_RPS = 20_000.0
MAX_TOTAL_SECONDS = 3600.0
MAX_REQUESTS = 2_000_000
# A request sent this much after its due time counts as late: the generator could not keep
# the schedule (CPU-bound), which a reader of its figures must know.
LATE_SECONDS = 0.05
# `run` calls its every-second hook this long after each whole second of the run.
TICK_MARGIN = 0.02
# The benchmarking range (RFC 2544): the local cluster's pod and Service addresses live here.
TEST_NETWORK = ipaddress.ip_network("198.18.0.0/15")

OK, STATUS, ERROR, DROPPED = "ok", "status", "error", "dropped"


class LoadError(ValueError):
    """Bad input to the load generator; the message names the option."""


@dataclass(frozen=True)
class Step:
    rps: float
    seconds: float

    @property
    def requests(self) -> int:
        """Requests offered in the step: one every 1/rps seconds from its start."""
        return math.floor(self.rps * self.seconds + 1e-9)

    def due(self, k: int) -> float:
        """Seconds from the step's start at which request k is due."""
        return k / self.rps


def parse_rps(text: str) -> list[float]:
    """`50,200,400,50` -> [50.0, 200.0, 400.0, 50.0]; LoadError naming `--rps` otherwise."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise LoadError(f"--rps: {part.strip()!r} is not a number (e.g. 50,200,400,50)"
                            ) from None
        if not 0 < value <= MAX_RPS or not math.isfinite(value):
            raise LoadError(f"--rps: {part.strip()} must be above 0 and at most {MAX_RPS:g}")
        values.append(value)
    return values


def plan(rps: Sequence[float], step_seconds: float) -> list[Step]:
    """The steps, checked against the bounds that keep every run short and finite."""
    if not 0 < step_seconds <= MAX_TOTAL_SECONDS:
        raise LoadError(f"--step-seconds: {step_seconds:g} must be above 0 and at most "
                        f"{MAX_TOTAL_SECONDS:g}")
    steps = [Step(value, step_seconds) for value in rps]
    if not steps:
        raise LoadError("--rps: at least one step is needed")
    total_seconds = sum(step.seconds for step in steps)
    if total_seconds > MAX_TOTAL_SECONDS:
        raise LoadError(f"--step-seconds: {len(steps)} steps of {step_seconds:g} s last "
                        f"{total_seconds:g} s, more than {MAX_TOTAL_SECONDS:g} s")
    total = sum(step.requests for step in steps)
    if total > MAX_REQUESTS:
        raise LoadError(f"--rps: the profile offers {total} requests, more than {MAX_REQUESTS}")
    return steps


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least q% of values at or below
    it); None for no values. `values` must be sorted."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


@dataclass
class Tally:
    """Counts for one step or one second."""

    offered: int = 0
    dropped: int = 0
    late: int = 0
    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # answers other than 2xx
    errors: Counter[str] = field(default_factory=Counter)  # no answer: timeout, reset, ...
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only

    @property
    def sent(self) -> int:
        return self.offered - self.dropped

    @property
    def answered(self) -> int:
        return self.ok + sum(self.statuses.values())

    @property
    def completed(self) -> int:
        return self.answered + sum(self.errors.values())

    @property
    def failed(self) -> int:
        """Everything that was not a 2xx answer, dropped requests included."""
        return sum(self.statuses.values()) + sum(self.errors.values()) + self.dropped

    def percentiles(self) -> dict[str, float | None]:
        ordered = sorted(self.latencies)
        return {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}

    def summary(self) -> dict[str, Any]:
        return {
            "offered": self.offered, "sent": self.sent, "dropped": self.dropped,
            "late": self.late, "ok": self.ok,
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "errors": dict(sorted(self.errors.items())), "failed": self.failed,
            **{name: None if value is None else round(value * 1000, 2)
               for name, value in self.percentiles().items()},
        }


def classify(error: BaseException) -> str:
    """A short name for why a request got no answer."""
    import aiohttp

    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(error, aiohttp.ClientOSError | ConnectionError):
        return "socket"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "payload"
    if isinstance(error, aiohttp.ClientResponseError):
        return "protocol"
    return type(error).__name__


@dataclass
class Recorder:
    """Every request's outcome, by step and by second since the start (pure bookkeeping:
    times are arguments, so the arithmetic is tested without a server)."""

    steps: list[Step]
    by_step: list[Tally] = field(init=False)
    by_second: dict[int, Tally] = field(default_factory=dict)
    in_flight: int = 0
    max_lag: float = 0.0

    def __post_init__(self) -> None:
        self.by_step = [Tally() for _ in self.steps]

    def second(self, t: float) -> Tally:
        return self.by_second.setdefault(max(0, int(t)), Tally())

    def offer(self, step: int, due: float, lag: float, dropped: bool) -> None:
        """Request due at `due` s, sent `lag` s late (or dropped: too many in flight)."""
        self.max_lag = max(self.max_lag, lag)
        for tally in (self.by_step[step], self.second(due)):
            tally.offered += 1
            tally.dropped += dropped
            tally.late += not dropped and lag > LATE_SECONDS
        self.in_flight += not dropped

    def answer(self, step: int, done: float, status: int, latency: float) -> None:
        self.in_flight -= 1
        for tally in (self.by_step[step], self.second(done)):
            if 200 <= status < 300:
                tally.ok += 1
            else:
                tally.statuses[status] += 1
            tally.latencies.append(latency)

    def fail(self, step: int, done: float, kind: str) -> None:
        self.in_flight -= 1
        for tally in (self.by_step[step], self.second(done)):
            tally.errors[kind] += 1

    def total(self) -> Tally:
        whole = Tally()
        for tally in self.by_step:
            whole.offered += tally.offered
            whole.dropped += tally.dropped
            whole.late += tally.late
            whole.ok += tally.ok
            whole.statuses.update(tally.statuses)
            whole.errors.update(tally.errors)
            whole.latencies.extend(tally.latencies)
        return whole

    def step_at(self, t: float) -> int:
        """The index of the step running `t` s after the start (the last one after the end)."""
        end = 0.0
        for index, step in enumerate(self.steps):
            end += step.seconds
            if t < end:
                return index
        return len(self.steps) - 1

    def result(self, url: str, elapsed: float) -> dict[str, Any]:
        """Everything `--json` writes: settings, per step, per second, totals."""
        return {
            "url": url,
            "elapsed_seconds": round(elapsed, 3),
            "max_lag_ms": round(self.max_lag * 1000, 2),
            "steps": [{"rps": step.rps, "seconds": step.seconds, **tally.summary()}
                      for step, tally in zip(self.steps, self.by_step, strict=True)],
            "seconds": [{"second": second, **tally.summary()}
                        for second, tally in sorted(self.by_second.items())],
            "total": self.total().summary(),
        }


@dataclass(frozen=True)
class LoadSettings:
    url: str
    steps: list[Step]
    connections: int = DEFAULT_CONNECTIONS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    timeout: float = DEFAULT_TIMEOUT
    # False: a new connection per request, so a Service (kube-proxy picks a pod per
    # connection) spreads requests as an ingress does, also to pods added under load.
    keep_alive: bool = True

    @property
    def deadline_seconds(self) -> float:
        """The run ends by then whatever the server does: the steps, then one timeout."""
        return sum(step.seconds for step in self.steps) + self.timeout + 5.0


async def generate(settings: LoadSettings, recorder: Recorder,
                   started: Callable[[float], None] | None = None) -> float:
    """Offer the steps' requests on schedule; return the seconds the run took.

    `started(t0)` is called with the loop time of the start, for a sampler that reads
    `recorder` as the load runs.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    connector = (aiohttp.TCPConnector(limit=settings.connections, keepalive_timeout=30,
                                      ttl_dns_cache=300) if settings.keep_alive else
                 aiohttp.TCPConnector(limit=settings.connections, force_close=True,
                                      ttl_dns_cache=300))
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     auto_decompress=False) as session:
        # aiohttp resends a GET once when the server drops the connection; a load generator
        # that did so would send one offered request twice and hide the error. There is no
        # public switch (aio-libs/aiohttp#10790); aiohttp's own test client sets this one.
        session._retry_connection = False
        t0 = loop.time()
        if started is not None:
            started(t0)

        async def one(step: int) -> None:
            sent = loop.time()
            try:
                async with session.get(settings.url, allow_redirects=False) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                recorder.fail(step, loop.time() - t0, classify(error))
            except asyncio.CancelledError:  # Ctrl-C, or stuck past every timeout
                recorder.fail(step, loop.time() - t0, "cancelled")
                raise
            else:
                done = loop.time()
                recorder.answer(step, done - t0, status, done - sent)

        step_start = 0.0
        for index, step in enumerate(settings.steps):
            for k in range(step.requests):
                due = step_start + step.due(k)
                delay = t0 + due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                full = recorder.in_flight >= settings.max_in_flight
                recorder.offer(index, due, max(0.0, loop.time() - t0 - due), dropped=full)
                if not full:
                    task = loop.create_task(one(index))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            step_start += step.seconds
        # The schedule may end early when the last step's final request is due before its
        # end; the per-second and per-step figures still cover the whole step.
        remaining = t0 + step_start - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        if pending:
            # Every request has its own timeout; this bound only guards against a bug there.
            _, stuck = await asyncio.wait(set(pending), timeout=settings.timeout + 5.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        return loop.time() - t0


# -- the command ----------------------------------------------------------------------------------

def check_target(url: str, allow_remote: bool) -> None:
    """LoadError unless `url` is http(s) on loopback or the test range (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"URL: {url!r} is not an http:// or https:// URL with a host")
    if allow_remote:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise LoadError(f"URL: cannot resolve {parts.hostname}: {error}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not (address.is_loopback or address in TEST_NETWORK):
            raise LoadError(
                f"URL: {parts.hostname} resolves to {address}, outside loopback and "
                f"{TEST_NETWORK}; pass --allow-remote to load a server you own elsewhere")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="the URL every request GETs")
    parser.add_argument("--rps", default=DEFAULT_RPS,
                        help="requests per second of each step (default: %(default)s)")
    parser.add_argument("--step-seconds", type=float, default=DEFAULT_STEP_SECONDS,
                        help="length of every step (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                        help="keep-alive connections at most (default: %(default)s)")
    parser.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                        help="requests outstanding at most; one due beyond it is dropped and "
                        "counts as failed (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds per request before it counts as a timeout "
                        "(default: %(default)s)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write per-step, per-second and total counts to FILE")
    parser.add_argument("--allow-errors", action="store_true",
                        help="exit 0 even when requests failed")
    parser.add_argument("--allow-remote", action="store_true",
                        help="load an address outside loopback and 198.18.0.0/15")


def settings_from(args: argparse.Namespace) -> LoadSettings:
    check_target(args.url, args.allow_remote)
    if args.connections < 1:
        raise LoadError(f"--connections: {args.connections} must be at least 1")
    if args.max_in_flight < 1:
        raise LoadError(f"--max-in-flight: {args.max_in_flight} must be at least 1")
    if not 0 < args.timeout <= 300:
        raise LoadError(f"--timeout: {args.timeout:g} must be above 0 and at most 300")
    return LoadSettings(args.url, plan(parse_rps(args.rps), args.step_seconds),
                        args.connections, args.max_in_flight, args.timeout)


def closing_line(total: Tally, elapsed: float) -> str:
    p = total.percentiles()
    latency = " ".join(f"{name} {value * 1000:.1f} ms" for name, value in p.items()
                       if value is not None)
    return (f"{total.offered} offered, {total.sent} sent, {total.ok} ok, {total.failed} failed "
            f"in {elapsed:.1f} s" + (f"; {latency}" if latency else ""))


async def run(settings: LoadSettings, recorder: Recorder,
              every_second: Callable[[float], Awaitable[None]] | None = None) -> float:
    """The load; `every_second(elapsed)` runs about once a second while it does (a view, a
    sampler), in the same event loop. Returns the seconds the load took."""
    clock: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    task = loop.create_task(generate(settings, recorder, lambda t0: clock.update(t0=t0)))
    deadline = loop.time() + settings.deadline_seconds
    try:
        while not task.done():
            # Wake just past each whole second of the run, so the second before is complete.
            wake = 1.0
            if "t0" in clock:
                into = loop.time() - clock["t0"]
                wake = math.floor(into) + 1 + TICK_MARGIN - into
            await asyncio.wait({task}, timeout=min(wake, max(0.0, deadline - loop.time())))
            if not task.done() and loop.time() >= deadline:
                raise TimeoutError(f"the load ran past its {settings.deadline_seconds:g} s bound")
            if every_second is not None and "t0" in clock:
                await every_second(loop.time() - clock["t0"])
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


async def run_in_view(settings: LoadSettings, recorder: Recorder) -> float:
    """The load, with the live view of its own counters."""
    from djangoscale_dev.live import LiveView, load_snapshot

    with LiveView() as view:
        async def show(elapsed: float) -> None:
            view.show(load_snapshot(recorder, elapsed, settings.url))

        return await run(settings, recorder, show)


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except LoadError as error:
        print(f"djangoscale load: {error}", file=sys.stderr)
        return 2
    from djangoscale_dev.live import step_table

    recorder = Recorder(settings.steps)
    started = time.monotonic()
    try:
        if sys.stdout.isatty():
            elapsed = asyncio.run(run_in_view(settings, recorder))
        else:
            elapsed = asyncio.run(run(settings, recorder))
    except KeyboardInterrupt:
        elapsed = time.monotonic() - started
        print("interrupted: the counts below cover the requests offered so far")
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 120).print(step_table(recorder))
    total = recorder.total()
    print(closing_line(total, elapsed))
    if args.json:
        args.json.write_text(json.dumps(recorder.result(settings.url, elapsed), indent=1) + "\n")
        print(f"counts written to {args.json}")
    return 1 if total.failed and not args.allow_errors else 0
