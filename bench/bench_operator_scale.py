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

Once all are Ready, the operator's cost at rest: the next full resync round (every
DjangoService reconciled again; the operator logs "resync: N DjangoServices in X s"), its wall
time and the CPU the operator process used in it (utime + stime from /proc), then the CPU it
uses over IDLE_SECONDS after it (the collector and the watches only), and its RSS then.

    .venv/bin/python bench/bench_operator_scale.py [--count 100] [--rounds 3] [--cluster-dir DIR]
        [--resync-seconds 30] [--floors sequential parallel]

1,000 DjangoServices (one round, the parallel floor only; `kubectl apply` of 5,000 children one
after another takes as long again):

    .venv/bin/python bench/bench_operator_scale.py --count 1000 --rounds 1 --floors parallel \
        --resync-seconds 120

Not a test: figures depend on the machine. Recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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
# Seconds of the operator at rest measured after a resync round.
IDLE_SECONDS = 20
PROGRESS_SECONDS = 30
RESYNC_LINE = re.compile(r"resync: (\d+) DjangoServices in ([\d.]+) s")


class CpuSampler(threading.Thread):
    """The operator process's CPU seconds (utime + stime), sampled every 0.5 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.done.wait(0.5):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), self.cpu_seconds()))

    def at(self, moment: float) -> float:
        """CPU seconds at the sample nearest `moment`."""
        return min(self.samples, key=lambda sample: abs(sample[0] - moment))[1]


class Progress(threading.Thread):
    """Every PROGRESS_SECONDS: DjangoServices applied, their Deployments, how many are Ready,
    the operator's RSS and CPU (% of a core) since the last line, the resync rounds logged."""

    def __init__(self, kube: Any, namespace: str, pid: int, log: Path, started: float) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace, self.log, self.started = kube, namespace, log, started
        self.cpu = CpuSampler(pid)
        self.applied = 0
        self.done = threading.Event()

    def resync_rounds(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = RESYNC_LINE.findall(self.log.read_text(errors="replace"))
        return found

    def run(self) -> None:
        before = self.cpu.cpu_seconds()
        while not self.done.wait(PROGRESS_SECONDS):
            with contextlib.suppress(Exception):  # a slow API answer skips a line, no more
                now = self.cpu.cpu_seconds()
                deployments = len(self.kube.list("apps/v1", "Deployment", self.namespace,
                                                 "app.kubernetes.io/component=web"))
                print(f"  {time.monotonic() - self.started:6.0f} s: {self.applied} applied, "
                      f"{deployments} Deployments, "
                      f"{len(ready_names(self.kube, self.namespace))} Ready, operator RSS "
                      f"{rss_mib(self.cpu.pid):.0f} MiB, CPU "
                      f"{100 * (now - before) / PROGRESS_SECONDS:.0f} %, resync rounds "
                      f"{self.resync_rounds()}", flush=True)
                before = now


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def resync_and_idle(pid: int, log: Path, count: int, resync_seconds: float
                    ) -> dict[str, float]:
    """The next full resync round's wall time and CPU, then the CPU at rest after it."""
    sampler = CpuSampler(pid)
    sampler.start()
    seen = len(RESYNC_LINE.findall(log.read_text(errors="replace")))
    deadline = time.monotonic() + resync_seconds + 1800

    def next_round() -> tuple[float, float] | None:
        rounds = RESYNC_LINE.findall(log.read_text(errors="replace"))[seen:]
        full = [(int(n), float(s)) for n, s in rounds if int(n) == count]
        return (time.monotonic(), full[0][1]) if full else None

    found = None
    while found is None and time.monotonic() < deadline:
        time.sleep(0.2)
        found = next_round()
    if found is None:
        raise SystemExit("no full resync round logged")
    ended, took = found
    resync_cpu = sampler.at(ended) - sampler.at(ended - took)
    time.sleep(IDLE_SECONDS)
    idle_cpu = sampler.cpu_seconds() - sampler.at(ended)
    sampler.done.set()
    return {"resync_wall": took, "resync_cpu": resync_cpu,
            "idle_cpu_percent": 100 * idle_cpu / (time.monotonic() - ended),
            "idle_rss": rss_mib(pid)}


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
              tag: str, resync_seconds: float, floors: list[str],
              give_up_after: float) -> dict[str, float]:
    ours, sequential, parallel = (f"bench-{kind}-{tag}" for kind in ("op", "seq", "par"))
    for namespace in (ours, sequential, parallel):
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube.apply(secret(ours))
    figures: dict[str, float] = {}

    log = directory / f"bench-operator-{tag}.log"
    with start_operator(kubeconfig, log, "-n", ours,
                        resync_seconds=int(resync_seconds)) as operator:
        time.sleep(3)  # started and idle: its startup is not what is timed
        started = time.monotonic()
        progress = Progress(kube, ours, operator.process.pid, log, started)
        progress.start()
        for name in names:
            kube.apply(djangoservice(ours, name=name, replicas={"min": 1, "max": 3}))
            progress.applied += 1
        try:
            wait_for("all Ready", lambda: ready_names(kube, ours) == set(names),
                     timeout=give_up_after)
        except AssertionError:  # wait_for's "timed out waiting for ..."
            print(f"not all Ready after {give_up_after:.0f} s: {len(ready_names(kube, ours))}"
                  f" of {len(names)}; resync rounds so far: {progress.resync_rounds()}",
                  flush=True)
            figures["ready_at_give_up"] = len(ready_names(kube, ours))
        else:
            figures["operator"] = time.monotonic() - started
            figures.update(resync_and_idle(operator.process.pid, log, len(names),
                                           resync_seconds))
        progress.done.set()
        figures["rss"] = peak_rss_mib(operator.process.pid)

    figures["children"] = len(children_of(sequential, names))
    if "sequential" in floors:
        figures["sequential"] = sequential_floor(kubeconfig, directory, sequential, names, tag)
    if "parallel" in floors:
        children = children_of(parallel, names)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(PARALLEL_APPLIES) as pool:
            list(pool.map(kube.apply, children))
        figures["parallel"] = time.monotonic() - started
    for namespace in (ours, sequential, parallel):
        kube.call("DELETE", f"/api/v1/namespaces/{namespace}")
    return figures


def sequential_floor(kubeconfig: Path, directory: Path, namespace: str, names: list[str],
                     tag: str) -> float:
    rendered = directory / f"bench-rendered-{tag}.yaml"
    rendered.write_text(yaml.safe_dump_all(children_of(namespace, names)))
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit("kubectl not found: the sequential floor is `kubectl apply`")
    started = time.monotonic()
    subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "apply", "--server-side",
                    "--field-manager", "bench", "-f", str(rendered)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster-dir", type=Path, default=None)
    parser.add_argument("--resync-seconds", type=float, default=30)
    parser.add_argument("--floors", nargs="+", choices=["sequential", "parallel"],
                        default=["sequential", "parallel"])
    parser.add_argument("--give-up-after", type=float, default=3600,
                        help="seconds to wait for all Ready before printing what was reached")
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
                                    f"{int(time.time())}-{index}", args.resync_seconds,
                                    args.floors, args.give_up_after))
            print(f"round {index + 1}: " + ", ".join(
                f"{key} {value:.1f}" for key, value in rounds[-1].items()), flush=True)

        def median(key: str) -> float:
            """Over the rounds that reached it (nan where none did, e.g. all Ready)."""
            values = [r[key] for r in rounds if key in r]
            return statistics.median(values) if values else float("nan")

        print(f"\n{args.count} DjangoServices ({int(rounds[0]['children'])} children), "
              f"median of {len(rounds)} rounds, load average {os.getloadavg()[0]:.1f}")
        print(f"operator, first apply to all Ready:           {median('operator'):7.1f} s")
        if "sequential" in args.floors:
            print(f"floor, kubectl apply --server-side:           "
                  f"{median('sequential'):7.1f} s")
            print(f"ratio operator / sequential floor:            "
                  f"{median('operator') / median('sequential'):7.1f}x")
        if "parallel" in args.floors:
            print(f"floor, {PARALLEL_APPLIES} parallel server-side applies:        "
                  f"{median('parallel'):7.1f} s")
            print(f"ratio operator / parallel floor:              "
                  f"{median('operator') / median('parallel'):7.1f}x")
        print(f"operator peak RSS (VmHWM of djangoscale run): {median('rss'):7.1f} MiB")
        print(f"full resync round, wall time:                 {median('resync_wall'):7.1f} s")
        print(f"full resync round, operator CPU:              {median('resync_cpu'):7.1f} s")
        print(f"at rest after it, operator CPU:               "
              f"{median('idle_cpu_percent'):7.1f} % of a core")
        print(f"at rest, operator RSS:                        {median('idle_rss'):7.1f} MiB")
    finally:
        if not reused:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
