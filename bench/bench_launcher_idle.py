"""What an idle app pod costs in CPU: `djangoscale serve` against plain gunicorn, side by side.

A node runs many app pods that wait for requests most of the time; with 200 of them on one
machine (the pooler bench, docs/scale.md) what each costs while idle adds up. This starts
`--pods` processes of the sample project each way, the same app and threads, lets them settle,
and reads their CPU (utime + stime of each process and those below it, from /proc) over
`--seconds`:

- `djangoscale serve`: the launcher with cherrypy and the env the Deployment gives a pod (its
  metrics flusher, pool supervisor and figures endpoint included);
- `gunicorn`: plain gunicorn, one gthread worker of the same threads, no metrics.

Both take the same one request first, so the app is loaded in each. Printed: CPU per pod in
% of a core each way, the ratio, and the threads per pod.

    .venv/bin/python bench/bench_launcher_idle.py [--pods 10] [--seconds 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "tests" / "tools")]

from djangoscale import spec  # noqa: E402
from tests.e2e.test_budget import SAMPLEAPP, serve_pod  # noqa: E402
from tests.e2e.test_pooler_mode import djangoservice  # noqa: E402
from tests.fixtures import services  # noqa: E402
from tests.fixtures.launcher import children_of, tree_cpu_seconds  # noqa: E402

# Nothing listens there: an idle pod never connects to its database.
NO_DATABASE = {"DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": "9", "DATABASE_NAME": "shop",
               "DATABASE_USER": "shop", "DATABASE_PASSWORD": "bench"}


def threads(root: int) -> int:
    """Threads of `root` and of every process below it."""
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{root}/task")) + sum(map(threads, children_of(root)))
    return 0


@contextlib.contextmanager
def gunicorn_pod(ds: spec.DjangoService, tmp: Path) -> Iterator[str]:
    port = services.free_port()
    with open(tmp / f"gunicorn-{port}.log", "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
             "--threads", str(ds.server.threads), "--bind", f"127.0.0.1:{port}",
             ds.wsgi_app],
            env={**os.environ, **NO_DATABASE, "PYTHONPATH": str(SAMPLEAPP),
                 "DJANGO_SETTINGS_MODULE": "sampleproject.settings"},
            cwd=SAMPLEAPP, stdout=output, stderr=subprocess.STDOUT)
    try:
        services.wait_for_port("127.0.0.1", port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        services.stop_process(process)


def measure(kind: str, pods: int, seconds: float, tmp: Path) -> tuple[float, float]:
    """(% of a core per pod, threads per pod) of `pods` idle pods of `kind`."""
    ds = spec.parse(djangoservice("pooler", 19))
    before = set(children_of(os.getpid()))
    with contextlib.ExitStack() as stack:
        for _ in range(pods):
            url = stack.enter_context(serve_pod(ds, NO_DATABASE, tmp) if kind == "djangoscale"
                                      else gunicorn_pod(ds, tmp))
            with contextlib.suppress(OSError):  # the app loaded; the answer does not matter
                urllib.request.urlopen(url + "/hello/", timeout=30).read()
        time.sleep(5)  # the last one's start is not idle
        roots = [pid for pid in children_of(os.getpid()) if pid not in before]

        def cpu_seconds() -> float:
            return sum(map(tree_cpu_seconds, roots))

        started, cpu = time.monotonic(), cpu_seconds()
        time.sleep(seconds)
        used = cpu_seconds() - cpu
        elapsed = time.monotonic() - started
        return 100 * used / elapsed / pods, sum(map(threads, roots)) / pods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"1-minute load at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as folder:
        for index in range(args.rounds):
            ours, ours_threads = measure("djangoscale", args.pods, args.seconds, Path(folder))
            plain, plain_threads = measure("gunicorn", args.pods, args.seconds, Path(folder))
            print(f"round {index + 1}: {args.pods} idle pods, {args.seconds:.0f} s: "
                  f"djangoscale serve {ours:.2f} % of a core a pod ({ours_threads:.0f} "
                  f"threads), gunicorn {plain:.2f} % ({plain_threads:.0f} threads), ratio "
                  f"{ours / plain if plain else float('inf'):.1f}x", flush=True)
    print(f"1-minute load at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
