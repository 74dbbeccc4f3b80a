"""`djangoscale dev`: the whole product on one machine, in one command.

Without a kubeconfig it runs on the real node (`dev_real`): images built and loaded, PostgreSQL,
the operator installed by the chart, the example applied with the sample app. Once the example
is Ready it offers load steps to its Service with a live view as the HPA scales, and writes a
PNG timeline (`dev_load`; `--no-load` skips that); Ctrl-C tears everything down. Against
$KUBECONFIG's cluster, or with `--node kwok` (or where the real node cannot run), the operator
runs on this host instead and nothing loads (KWOK's pods do not serve).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from djangoscale_dev import DATA_DIR, DEFAULT_DIR
from djangoscale_dev.dev_load import configure_load, run_load

if TYPE_CHECKING:
    from djangoscale.k8s import KubernetesApi

EXAMPLE = DATA_DIR / "examples" / "dev.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="use this cluster instead of starting the local one (default: $KUBECONFIG)",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument(
        "--node", choices=("real", "kwok"), default="real",
        help="without --kubeconfig: real: the real node (kubelet, containerd), the chart's "
        "operator, PostgreSQL, the sample app, load and the live view; kwok: fake nodes and "
        "the operator on this host (nothing serves, so no load) (default: %(default)s)")
    parser.add_argument("--nodes", type=int, default=2, help="fake nodes with --node kwok")
    parser.add_argument("-f", "--filename", type=Path, default=EXAMPLE, help="objects to apply")
    parser.add_argument(
        "--once", action="store_true",
        help="run through once and exit (tests, CI): once Ready, the load steps and the "
        "scale-down after them, then tear down; exit 1 if a request failed")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="with --once: give up waiting for Ready after this many seconds")
    configure_load(parser)


@functools.cache
def _kube() -> KubernetesApi:
    """The product's API layer, on the cluster of $KUBECONFIG (`main` sets it)."""
    from djangoscale.k8s import KubernetesApi

    return KubernetesApi(os.environ.get("KUBECONFIG"))


def install_crd() -> None:
    kube = _kube()
    from djangoscale.spec import crd

    kube.apply(crd())
    name = crd()["metadata"]["name"]
    for _ in range(120):
        live = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name) or {}
        conditions = (live.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        time.sleep(0.5)
    raise RuntimeError(f"CRD {name} not Established")


def apply_documents(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply every object; return the DjangoServices among them."""
    kube = _kube()
    for document in documents:
        kube.apply(document)
    return [doc for doc in documents if doc["kind"] == "DjangoService"]


def summary_lines(services: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """One line per DjangoService and per child; True when every DjangoService is Ready."""
    kube = _kube()
    from djangoscale.spec import GROUP, VERSION

    lines, all_ready = [], True
    for service in services:
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        live = kube.get(f"{GROUP}/{VERSION}", "DjangoService", namespace, name) or {}
        status = live.get("status", {})
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c["type"] == "Ready"), {}
        )
        all_ready &= ready.get("status") == "True" and status.get(
            "observedGeneration"
        ) == live.get("metadata", {}).get("generation")
        lines.append(
            f"djangoservice/{name}: Ready={ready.get('status', '?')} "
            f"({ready.get('reason', '-')}: {ready.get('message', '-')}) "
            f"pool/pod={status.get('database', {}).get('poolSizePerPod', '-')}"
        )
        deployment = kube.get("apps/v1", "Deployment", namespace, name)
        if deployment:
            d = deployment.get("status", {})
            lines.append(
                f"  deployment/{name}: {d.get('readyReplicas', 0)}/{d.get('replicas', 0)} ready"
            )
        hpa = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, name)
        if hpa:
            h = hpa.get("status", {})
            lines.append(
                f"  hpa/{name}: {hpa['spec']['minReplicas']}..{hpa['spec']['maxReplicas']}, "
                f"desired {h.get('desiredReplicas', '-')}"
            )
    return lines, all_ready


def metrics_api_flags(cluster: Any) -> list[str]:
    """On the local cluster, serve custom.metrics.k8s.io to its HPA controller; against a
    cluster of your own, the chart's APIService does that and the dev operator serves none."""
    if cluster is None:
        return ["--metrics-api-port", "-1"]
    import socket

    from djangoscale_dev.registration import register_metrics_apiservice

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cert, key = register_metrics_apiservice(cluster.client(), cluster.dir, port)
    print(f"metrics API (custom.metrics.k8s.io) on 127.0.0.1:{port}")
    return ["--metrics-api-port", str(port), "--metrics-api-cert-file", str(cert),
            "--metrics-api-key-file", str(key)]


def start_cluster(args: argparse.Namespace) -> tuple[str, Any]:
    if args.kubeconfig:
        return args.kubeconfig, None
    from djangoscale_dev.cluster.local import LocalCluster

    cluster = LocalCluster(args.dir)
    print("starting the local control plane with KWOK fake nodes (the first run builds it "
          "from Go modules)...")
    return str(cluster.up(nodes=args.nodes)), cluster


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.kubeconfig or args.node == "kwok":
        return run_host_operator(args)
    from djangoscale_dev.cluster.node import missing_for_real_node
    from djangoscale_dev.dev_real import real_node_lock

    # Checked under the lock: a real node that another run holds is a wait, not a reason.
    with real_node_lock():
        waited = time.monotonic() - started
        missing = missing_for_real_node()
        if missing is None:
            if waited >= 1:
                print(f"waited {waited:.0f}s for the real node lock; times below start now")
            return run_real_node(args, time.monotonic(), waited)
    print(f"the real node cannot run here ({missing}): using KWOK fake nodes, where no pod "
          "serves, so nothing loads or scales")
    return run_host_operator(args)


def run_real_node(args: argparse.Namespace, started: float, waited: float) -> int:
    """The real node, the chart's operator, PostgreSQL, the example, the load (`dev_real`).
    What each part took goes to dev-setup.json beside the timeline."""
    from djangoscale_dev.dev_real import DevError, RealNodeStack, real_node_documents

    print("using the real node: pods run in containerd, the load goes through the Service")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with RealNodeStack(args.dir, emit=_say) as stack:
            kubeconfig = stack.up()
            os.environ["KUBECONFIG"] = str(kubeconfig)
            print(f"kubeconfig: {kubeconfig}  (export KUBECONFIG={kubeconfig} to use kubectl)")
            services = apply_documents(real_node_documents(args.filename, stack.database))
            print(f"applied {args.filename} with the sample app and pgbouncer images built here")
            stack.wait_for_operator()
            setup = {"lock_wait": round(waited, 1), **stack.timings,
                     "until_operator_ready": round(time.monotonic() - started, 1)}
            (args.dir.parent / "dev-setup.json").write_text(json.dumps(setup, indent=2) + "\n")
            return converge(args, services, alive=lambda: None, started=started)
    except KeyboardInterrupt:
        return 0
    except DevError as error:
        print(f"dev: {error}", file=sys.stderr)
        return 1


def _say(message: str) -> None:
    print(message, flush=True)


def _interrupt(*_: Any) -> None:
    """SIGTERM stops `dev` as Ctrl-C does: the PNG is written, then everything is torn down."""
    raise KeyboardInterrupt


def converge(args: argparse.Namespace, services: list[dict[str, Any]],
             alive: Callable[[], str | None], started: float) -> int:
    """Print the objects as they converge; once Ready, run the load (unless --no-load). With
    --once, return when done: 1 if a request failed or the deadline passed."""
    deadline = time.monotonic() + args.timeout
    previous: list[str] = []
    loaded = args.no_load or not services
    failed = 0
    while True:
        lines, ready = summary_lines(services)
        if lines != previous:
            print(time.strftime("%H:%M:%S"), *lines, sep="\n")
            previous = lines
        if ready and not loaded:
            loaded = True
            summary = run_load(args, services[0], args.dir.parent, started=started)
            failed = int((summary or {}).get("requests", {}).get("failed", 0))
        if args.once and ready:
            return 1 if failed else 0
        if args.once and time.monotonic() > deadline:
            print("timed out waiting for Ready", file=sys.stderr)
            return 1
        why = alive()
        if why is not None:
            print(why, file=sys.stderr)
            return 1
        time.sleep(2)


def run_host_operator(args: argparse.Namespace) -> int:
    """The operator on this host, against $KUBECONFIG's cluster or the local one with KWOK."""
    started = time.monotonic()
    kubeconfig, cluster = start_cluster(args)
    os.environ["KUBECONFIG"] = kubeconfig
    print(f"kubeconfig: {kubeconfig}  (export KUBECONFIG={kubeconfig} to use kubectl)")
    operator = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        install_crd()
        print("CRD installed; starting the operator")
        log_path = args.dir.parent / "operator.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"operator log: {log_path}")
        operator = subprocess.Popen(
            [sys.executable, "-m", "djangoscale.cli", "run", "--liveness-port", "0",
             "--metrics-port", "0", "--bind", "127.0.0.1", *metrics_api_flags(cluster)],
            env={**os.environ, "DJANGOSCALE_RESYNC_SECONDS": "10"},
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        services = apply_documents(
            [doc for doc in yaml.safe_load_all(args.filename.read_text()) if doc])
        print(f"applied {args.filename}")
        running = operator

        def alive() -> str | None:
            code = running.poll()
            return None if code is None else f"the operator exited with {code}"

        return converge(args, services, alive, started)
    except KeyboardInterrupt:
        return 0
    finally:
        if operator is not None and operator.poll() is None:
            operator.terminate()
            try:
                operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                operator.kill()
        if cluster is not None:
            print("stopping the local control plane")
            cluster.down()
