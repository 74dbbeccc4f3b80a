"""Times of the real node: `cluster up` to node Ready, to the first pod Running, and `down`.

Each round starts a fresh cluster in a temp dir (binaries already built and cached), creates
one pod from the node's own pause image (no image pull), and takes it all down.

    .venv/bin/python bench/bench_real_node.py --rounds 3

Not a test: figures depend on the machine. Record them in tests/cluster/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "devtools")]

from djangoscale_dev.cluster import LocalCluster, nodeconfig  # noqa: E402

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "first"},
    "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "sleep",
                "image": nodeconfig.PAUSE_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sleep", "3600"],
            }
        ],
    },
}


def one_round() -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-real-node-") as directory:
        cluster = LocalCluster(Path(directory) / "cluster", emit=lambda _: None)
        started = time.monotonic()
        try:
            cluster.up(node="real")  # returns once the node is Ready
            ready = time.monotonic() - started
            api = cluster.client()
            api.create("/api/v1/namespaces/default/pods", POD)
            while api.get("/api/v1/namespaces/default/pods/first")["status"].get(
                "phase"
            ) != "Running":
                time.sleep(0.1)
            running = time.monotonic() - started
        finally:
            down_started = time.monotonic()
            cluster.down()
            down = time.monotonic() - down_started
    return ready, running, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [one_round() for _ in range(args.rounds)]
    for index, (ready, running, down) in enumerate(rounds, 1):
        print(f"round {index}: node Ready {ready:.1f}s, first pod Running {running:.1f}s, "
              f"down {down:.1f}s")
    columns = list(zip(*rounds, strict=True))
    print(
        "median: node Ready {:.1f}s, first pod Running {:.1f}s, down {:.1f}s".format(
            *(statistics.median(c) for c in columns)
        )
    )


if __name__ == "__main__":
    main()
