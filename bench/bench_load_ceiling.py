"""The ceiling of `djangoscale load`: the highest rate one generator process offers on schedule.

A trivial HTTP server (aiohttp, one process, a fixed 2-byte answer, keep-alive) listens on
loopback; `djangoscale load` offers it rising steps, each a fresh run of the real command with
`--json`. A step is held when every request was sent and answered 2xx and at most 1 % went out
more than 50 ms late (the generator's own lateness, `late` in its counts); the ceiling is the
highest held step. Both processes share this machine's cores, so the figure is a floor of what
the generator alone can do.

    python bench/bench_load_ceiling.py [--rps 400,800,1200,1600,2000,2400] [--step-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = """
import sys
from aiohttp import web
async def answer(_):
    return web.Response(text="ok")
app = web.Application()
app.router.add_get("/", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
LATE_SHARE = 0.01


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"the trivial server did not listen on {port}")


def generator_cpu(port: int, rps: float, seconds: float) -> tuple[dict, float]:  # type: ignore[type-arg]
    """One `djangoscale load` run: its total counts and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "counts.json"
        subprocess.run(
            [sys.executable, "-m", "djangoscale.cli", "load", f"http://127.0.0.1:{port}/",
             "--rps", f"{rps:g}", "--step-seconds", f"{seconds:g}", "--json", str(out),
             "--allow-errors"],
            check=True, stdout=subprocess.DEVNULL)
        total = json.loads(out.read_text())["total"]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return total, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", default="400,800,1200,1600,2000,2400")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    held = 0.0
    cpu_per_request: list[float] = []
    try:
        wait_listening(port)
        print(f"{'offered RPS':>11} {'sent':>7} {'2xx':>7} {'failed':>6} {'late':>6} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10}  held")
        startup = generator_cpu(port, 1.0, 1.0)[1]  # interpreter, imports, one request
        for rps in (float(v) for v in args.rps.split(",")):
            total, cpu = generator_cpu(port, rps, args.step_seconds)
            per_request = (cpu - startup) / max(1, total["sent"]) * 1000
            cpu_per_request.append(per_request)
            ok = total["failed"] == 0 and total["ok"] == total["offered"]
            ok = ok and total["late"] <= LATE_SHARE * total["offered"]
            held = rps if ok else held
            print(f"{rps:>11g} {total['sent']:>7} {total['ok']:>7} {total['failed']:>6} "
                  f"{total['late']:>6} {total['p50']:>7} {total['p95']:>7} {total['p99']:>7}"
                  f" {per_request:>10.3f}  {'yes' if ok else 'no'}")
    finally:
        server.terminate()
        server.wait(10)
    busiest = cpu_per_request[-1] if cpu_per_request else float("nan")
    print(f"ceiling: {held:g} RPS held from one process ({os.cpu_count()} cores shared with "
          f"the server; load average {os.getloadavg()[0]:.1f}); generator CPU "
          f"{busiest:.3f} ms a request at the top step, {1000 / busiest:.0f} RPS a core")


if __name__ == "__main__":
    main()
