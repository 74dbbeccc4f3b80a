"""What measuring queue time costs in requests per second: the same server with and without it.

One `djangoscale serve` of the sample project (cherrypy, 1 worker, 8 threads, metrics on, as
in a pod) is loaded with wrk on `/hello/` (the cheapest view, where a per-request cost shows
most), in rounds that alternate the server with the measurement and the same server without
it (the pool queue's stamps, the thread's hand-over and the middleware's histogram turned
off in that process). Each round starts a fresh server for each; the medians of the rounds
are compared, and so is each round's own pair (which cancels a drift in the machine's load).

    .venv/bin/python bench/bench_queue_time_cost.py --rounds 7 --seconds 5

On 2 shared cores the rounds vary by far more than 2 %, so the script also times, in one
process, what the measurement adds to each request (the pool's stamp, the thread's hand-over,
the middleware's read and the histogram's buffered count: best of 5 batches) and prints it as
a share of a request's time at the median RPS without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.fixtures.launcher import SAMPLE_WSGI, SAMPLEAPP, get, launcher_env, serve_argv  # noqa: E402
from tests.fixtures.services import free_port  # noqa: E402

# Both servers start through this script, so they differ only in the measurement.
WITH, WITHOUT = "--serve-with-queue-time", "--serve-without-queue-time"
WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("JSON{\\"requests\\": %d, \\"seconds\\": %f, \\"errors\\": %d}\\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout))
end
"""


def serve(measured: bool, argv: list[str]) -> None:
    """`djangoscale serve`, with the queue-time measurement taken out of this process unless
    `measured`."""
    from djangoscale import cli

    if not measured:
        unmeasure()
    cli.main(argv)


def unmeasure() -> None:
    from cheroot import server as cheroot_server
    from cheroot.workers import threadpool

    from djangoscale.serve import middleware
    from djangoscale.serve.servers import cherrypy

    middleware.waited_seconds = lambda environ, now: None  # type: ignore[assignment]
    cherrypy.QueueTimedConnection = cheroot_server.HTTPConnection  # type: ignore[misc]
    cherrypy.ClosingThreadPool.put = threadpool.ThreadPool.put  # type: ignore[method-assign]


def wait_serving(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get("127.0.0.1", port, "/hello/", 1.0).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not answer within {timeout} s")


def measurement_microseconds(calls: int = 100_000, repeat: int = 5) -> float:
    """What queue-time measurement adds to one request, in one process (best of `repeat`)."""
    import timeit

    from prometheus_client import CollectorRegistry

    from djangoscale.serve.metrics import Metrics
    from djangoscale.serve.queue_time import took_request, waited_seconds

    metrics = Metrics(registry=CollectorRegistry())
    environ: dict[str, Any] = {}

    class Connection:
        ready_at: float | None = None

    connection = Connection()

    def with_it() -> None:
        connection.ready_at = time.perf_counter()  # the pool's stamp
        took_request(connection.ready_at)  # the thread's hand-over
        metrics.request_started()
        metrics.request_finished("GET", "200 OK", 0.001,
                                 waited_seconds(environ, time.perf_counter()))

    def without_it() -> None:
        metrics.request_started()
        metrics.request_finished("GET", "200 OK", 0.001, None)

    best = {name: min(timeit.repeat(func, number=calls, repeat=repeat)) / calls * 1e6
            for name, func in (("with", with_it), ("without", without_it))}
    metrics.flush()
    return best["with"] - best["without"]


def one_round(measured: bool, seconds: int, connections: int, log_dir: Path) -> dict[str, Any]:
    port, metrics_port = free_port(), free_port()
    argv = serve_argv("cherrypy", port, metrics_port, SAMPLE_WSGI, workers=1, threads=8,
                      max_threads=8, queue_size=256)
    argv = [sys.executable, str(Path(__file__).resolve()), WITH if measured else WITHOUT,
            *argv[3:]]
    log = open(log_dir / f"serve-{port}.log", "wb")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(argv, cwd=SAMPLEAPP, env=launcher_env({}), stdout=log,
                               stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_serving(port)
        script = log_dir / "done.lua"
        script.write_text(WRK_SCRIPT)
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
             f"http://127.0.0.1:{port}/hello/"],
            capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("JSON"))
        figures: dict[str, Any] = json.loads(line[4:])
        figures["rps"] = figures["requests"] / figures["seconds"]
        return figures
    finally:
        process.terminate()
        process.wait(15)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in (WITH, WITHOUT):
        serve(sys.argv[1] == WITH, sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="djs-queue-time-"))
    rps: dict[bool, list[float]] = {True: [], False: []}
    for index in range(args.rounds):
        # Alternate which goes first, so a drift in the machine's load falls on both.
        for measured in ((True, False) if index % 2 == 0 else (False, True)):
            figures = one_round(measured, args.seconds, args.connections, log_dir)
            if figures["errors"]:
                print(f"round {index + 1}: {figures['errors']} errors", file=sys.stderr)
            rps[measured].append(figures["rps"])
            label = "with" if measured else "without"
            print(f"round {index + 1} {label:>7} queue time: {figures['rps']:8.0f} RPS",
                  flush=True)
            time.sleep(0.5)
    with_median = statistics.median_low(rps[True])
    without_median = statistics.median_low(rps[False])
    cost = (without_median - with_median) / without_median * 100
    print(f"\ncherrypy 1 x 8 threads, /hello/, wrk -c{args.connections} {args.seconds} s, "
          f"{args.rounds} rounds (1-minute load {os.getloadavg()[0]:.1f} at the end):")
    print(f"  without queue time: median {without_median:.0f} RPS "
          f"({', '.join(f'{v:.0f}' for v in rps[False])})")
    print(f"  with queue time:    median {with_median:.0f} RPS "
          f"({', '.join(f'{v:.0f}' for v in rps[True])})")
    print(f"  cost: {cost:.1f} % of RPS (medians)")
    # Each round ran both servers back to back: its ratio cancels a drift in the machine's
    # load that the medians of the two series do not.
    paired = [(w - m) / w * 100 for m, w in zip(rps[True], rps[False], strict=True)]
    print(f"  cost per round: median {statistics.median_low(paired):.1f} % "
          f"({', '.join(f'{v:.1f}' for v in paired)})")
    added = measurement_microseconds()
    share = added / (1e6 / without_median) * 100
    print(f"  in one process: the measurement adds {added:.2f} us a request, {share:.2f} % of "
          f"a request's {1e6 / without_median:.0f} us at {without_median:.0f} RPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
