"""How fast the operator brings 100 DjangoServices to Ready, and its peak memory.

Side by side in one run on the local control plane: (a) apply 100 DjangoServices and run the
operator until every one is Ready; (b) the floor: `kubectl apply --server-side` of the very
same children, rendered by `djangoscale render`, into a second namespace (no operator, no
status, nothing to wait for). The ratio (a)/(b) is the operator's overhead over a plain apply.

    .venv/bin/python bench/bench_operator_scale.py [--count 100] [--cluster-dir DIR]

Not a test: figures depend on the machine. Recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
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
        stamp = str(int(time.time()))
        ours, floor = f"bench-op-{stamp}", f"bench-floor-{stamp}"
        for namespace in (ours, floor):
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        names = [f"shop-{i:03d}" for i in range(args.count)]

        # (a) The operator: from the apply of the DjangoServices to every one Ready.
        started = time.monotonic()
        kube.apply(secret(ours))
        for name in names:
            kube.apply(djangoservice(ours, name=name, replicas={"min": 1, "max": 3}))
        log = directory / "bench-operator.log"
        with start_operator(kubeconfig, log, "-n", ours, resync_seconds=30) as operator:
            wait_for("all Ready", lambda: ready_names(kube, ours) == set(names), timeout=900)
            operator_seconds = time.monotonic() - started
            peak = peak_rss_mib(operator.pid)

        # (b) The floor: the same children, rendered, applied by kubectl in one call.
        credentials = DatabaseCredentials("127.0.0.1", 5432, "shop", "shop", "bench")
        children = []
        for name in names:
            body = djangoservice(floor, name=name, replicas={"min": 1, "max": 3})
            children += build_children(parse(body), credentials)
        rendered = directory / "bench-rendered.yaml"
        rendered.write_text(yaml.safe_dump_all(children))
        kubectl = shutil.which("kubectl")
        started = time.monotonic()
        if kubectl:
            subprocess.run(
                [kubectl, "--kubeconfig", str(kubeconfig), "apply", "--server-side",
                 "--field-manager", "bench", "-f", str(rendered)],
                check=True, stdout=subprocess.DEVNULL,
            )
            floor_tool = "kubectl apply --server-side"
        else:
            for child in children:
                kube.apply(child)
            floor_tool = "server-side apply, one request per object (no kubectl here)"
        floor_seconds = time.monotonic() - started

        print(f"{args.count} DjangoServices ({len(children)} children)")
        print(f"operator, apply to all Ready:     {operator_seconds:7.1f} s")
        print(f"floor, {floor_tool}: {floor_seconds:7.1f} s")
        print(f"ratio operator / floor:           {operator_seconds / floor_seconds:7.1f}x")
        print(f"operator peak RSS (VmHWM):        {peak:7.1f} MiB")
        for namespace in (ours, floor):
            kube.call("DELETE", f"/api/v1/namespaces/{namespace}")
    finally:
        if not reused:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
