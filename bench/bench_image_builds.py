"""Cold and cached build times of the project's images (`djangoscale cluster build-images`).

Cold: an empty image cache (a fresh folder, so the shared ~/.cache/djangoscale/images is left
alone): debootstrap of the Debian + Python base, the host's wheelhouse, then each image.
Cached: the same call again, every input unchanged.

    python bench/bench_image_builds.py [--cache DIR]

Printed: one row per step with its cold and cached seconds, and the totals.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from djangoscale_dev.images.project import project_images
from djangoscale_dev.images.store import Store


def timed(store: Store) -> tuple[dict[str, float], float]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    project_images(lambda message: print(f"  {message}", file=sys.stderr), store, None, timings)
    return timings, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="cache folder (default: a new temporary one)")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="djangoscale-images-"))
    store = Store(cache)
    try:
        cold, cold_total = timed(store)
        cached, cached_total = timed(store)
    finally:
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"{'step':40} {'cold s':>8} {'cached s':>9}")
    for step in cold:
        print(f"{step:40} {cold[step]:8.1f} {cached[step]:9.1f}")
    print(f"{'total':40} {cold_total:8.1f} {cached_total:9.1f}")


if __name__ == "__main__":
    main()
