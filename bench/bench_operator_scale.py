"""How fast the operator brings 100 DjangoServices to Ready, against two floors, and its memory.

Every round on the local control plane times three things from the same point, the first
object sent to the API server, each into a fresh namespace:

- operator: the operator already running (started and idle before the clock), the
  DjangoServices applied one by one as a user's script would, until every one is Ready at its
  generation;
- floor, sequential: the very same children (rendered by the operator's builders: Secret,
  Deployment, Service, PDB, HPA each) in one `kubectl apply --server-side`, which sends them
  one after another; nothing to wait for;
- floor, parallel: the same children applied by PARALLEL_APPLIES concurrent server-side
  applies, the fastest a client on this machine gets them in.

`--rounds` rounds (3 by default); medians and every round are printed. The memory is the
operator process's own peak RSS (VmHWM of `djangoscale run`, read from /proc at the end of
each round), not this script's.

    .venv/bin/python bench/bench_operator_scale.py [--count 100] [--rounds 3] [--cluster-dir DIR]

Not a test: figures depend on the machine. Recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from djangoscale.builders import build_children  # noqa: E402
from djangoscale.builders.pgbouncer import DatabaseCredentials  # noqa: E402
from djangoscale.spec import crd, parse  # noqa: E402
from djangoscale_dev.cluster import LocalCluster  # noqa: E402
from tests.e2e.helpers import djangoservice, secret, start_operator  # noqa: E402
from tests.e2e.test_operator_scale import ready_names  # noqa: E402
from tests.fixtures.polling import wait_for  # noqa: E402

PARALLEL_APPLIES = 8


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children_of(namespace: str, names: list[str]) -> list[dict[str, Any]]:
    credentials = DatabaseCredentials("127.0.0.1", 5432, "shop", "shop", "bench")
    children: list[dict[str, Any]] = []
    for name in names:
        body = djangoservice(namespace, name=name, replicas={"min": 1, "max": 3})
        children += build_children(parse(body), credentials)
    return children


def one_round(kube: Any, kubeconfig: Path, directory: Path, names: list[str],
              tag: str) -> dict[str, float]:
    ours, sequential, parallel = (f"bench-{kind}-{tag}" for kind in ("op", "seq", "par"))
    for namespace in (ours, sequential, parallel):
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube.apply(secret(ours))
    figures: dict[str, float] = {}

    log = directory / f"bench-operator-{tag}.log"
    with start_operator(kubeconfig, log, "-n", ours, resync_seconds=30) as operator:
        time.sleep(3)  # started and idle: its startup is not what is timed
        started = time.monotonic()
        for name in names:
            kube.apply(djangoservice(ours, name=name, replicas={"min": 1, "max": 3}))
        wait_for("all Ready", lambda: ready_names(kube, ours) == set(names), timeout=900)
        figures["operator"] = time.monotonic() - started
        figures["rss"] = peak_rss_mib(operator.process.pid)

    rendered = directory / f"bench-rendered-{tag}.yaml"
    rendered.write_text(yaml.safe_dump_all(children_of(sequential, names)))
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit("kubectl not found: the sequential floor is `kubectl apply`")
    started = time.monotonic()
    subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "apply", "--server-side",
                    "--field-manager", "bench", "-f", str(rendered)],
                   check=True, stdout=subprocess.DEVNULL)
    figures["sequential"] = time.monotonic() - started

    children = children_of(parallel, names)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_APPLIES) as pool:
        list(pool.map(kube.apply, children))
    figures["parallel"] = time.monotonic() - started
    figures["children"] = len(children)
    for namespace in (ours, sequential, parallel):
        kube.call("DELETE", f"/api/v1/namespaces/{namespace}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster-dir", type=Path, default=None)
    args = parser.parse_args()

    directory = args.cluster_dir or Path(tempfile.mkdtemp(prefix="djangoscale-bench-"))
    cluster = LocalCluster(directory)
    reused = cluster.running() is not None
    kubeconfig = cluster.up(nodes=2)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    from djangoscale.k8s import KubernetesApi

    kube = KubernetesApi(str(kubeconfig))

    try:
        kube.apply(crd())
        names = [f"shop-{i:03d}" for i in range(args.count)]
        rounds = []
        for index in range(args.rounds):
            rounds.append(one_round(kube, kubeconfig, directory, names,
                                    f"{int(time.time())}-{index}"))
            r = rounds[-1]
            print(f"round {index + 1}: operator {r['operator']:.1f} s, sequential floor "
                  f"{r['sequential']:.1f} s, parallel floor {r['parallel']:.1f} s, "
                  f"operator peak RSS {r['rss']:.1f} MiB", flush=True)

        def median(key: str) -> float:
            return statistics.median(r[key] for r in rounds)

        print(f"\n{args.count} DjangoServices ({int(rounds[0]['children'])} children), "
              f"median of {len(rounds)} rounds, load average {os.getloadavg()[0]:.1f}")
        print(f"operator, first apply to all Ready:           {median('operator'):7.1f} s")
        print(f"floor, kubectl apply --server-side:           {median('sequential'):7.1f} s")
        print(f"floor, {PARALLEL_APPLIES} parallel server-side applies:        "
              f"{median('parallel'):7.1f} s")
        print(f"ratio operator / sequential floor:            "
              f"{median('operator') / median('sequential'):7.1f}x")
        print(f"ratio operator / parallel floor:              "
              f"{median('operator') / median('parallel'):7.1f}x")
        print(f"operator peak RSS (VmHWM of djangoscale run): {median('rss'):7.1f} MiB")
    finally:
        if not reused:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
