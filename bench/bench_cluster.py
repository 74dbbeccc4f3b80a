"""How long the local control plane takes: to build, and to come up with Ready nodes.

    .venv/bin/python bench/bench_cluster.py [--rounds 3]       # cached build, then `up` x rounds
    .venv/bin/python bench/bench_cluster.py --cold             # + a build with empty caches
    .venv/bin/python bench/bench_cluster.py --modules-cached   # + a build, Go modules kept

`--cold` builds into a fresh binary cache (DJANGOSCALE_CLUSTER_CACHE) with empty Go module and
build caches (GOMODCACHE, GOCACHE): it downloads every module and compiles the control plane,
several minutes on 2 cores. `--modules-cached` keeps the Go module cache. Both leave the
machine's own caches alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DJANGOSCALE = str(Path(sys.executable).parent / "djangoscale")


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def fresh_build(keep_modules: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="djangoscale-bench-cache-") as scratch:
        env = {"DJANGOSCALE_CLUSTER_CACHE": f"{scratch}/cluster", "GOCACHE": f"{scratch}/go-build"}
        if not keep_modules:
            env["GOMODCACHE"] = f"{scratch}/go-mod"
        try:
            return timed([DJANGOSCALE, "cluster", "build"], env)
        finally:
            # Go makes its module cache read-only.
            subprocess.run(["chmod", "-R", "u+w", scratch], check=False)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--modules-cached", action="store_true")
    args = parser.parse_args()

    if args.cold:
        print(f"build, empty Go module and build caches: {minutes(fresh_build(False))}")
    if args.modules_cached:
        print(f"build, Go module cache filled:           {minutes(fresh_build(True))}")
    cached = timed([DJANGOSCALE, "cluster", "build"])
    print(f"build, binaries cached:                  {cached:.1f} s")
    ups = []
    for _ in range(args.rounds):
        directory = Path(tempfile.mkdtemp(prefix="djangoscale-bench-up-"))
        try:
            ups.append(timed([DJANGOSCALE, "cluster", "up", "--dir", str(directory)]))
        finally:
            subprocess.run([DJANGOSCALE, "cluster", "down", "--dir", str(directory)],
                           check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(directory, ignore_errors=True)
    print(f"cluster up to Ready nodes, {args.rounds} rounds: {min(ups):.1f} - {max(ups):.1f} s "
          f"(median {statistics.median(ups):.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
