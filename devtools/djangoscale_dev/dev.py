"""`djangoscale dev`: the whole product on one machine, in one command.

Starts the local control plane unless a kubeconfig is given, installs the CRD, runs the operator,
applies the example and prints the objects as they converge. Once the example is Ready, it
offers load steps to its Service with a live view and writes a PNG timeline (`dev_load`;
`--no-load` skips that), then goes on printing until Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
import time
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
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("-f", "--filename", type=Path, default=EXAMPLE, help="objects to apply")
    parser.add_argument(
        "--once", action="store_true", help="exit once the DjangoServices are Ready (for tests)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="with --once: give up after")
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


def apply_documents(path: Path) -> list[dict[str, Any]]:
    kube = _kube()

    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
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
    print("starting the local control plane (the first run builds it from Go modules)...")
    return str(cluster.up(nodes=args.nodes)), cluster


def main(args: argparse.Namespace) -> int:
    kubeconfig, cluster = start_cluster(args)
    os.environ["KUBECONFIG"] = kubeconfig
    print(f"kubeconfig: {kubeconfig}  (export KUBECONFIG={kubeconfig} to use kubectl)")
    operator = None
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
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
        services = apply_documents(args.filename)
        print(f"applied {args.filename}")
        deadline = time.monotonic() + args.timeout
        previous: list[str] = []
        loaded = args.no_load or not services
        while not stopping:
            lines, ready = summary_lines(services)
            if lines != previous:
                print(time.strftime("%H:%M:%S"), *lines, sep="\n")
                previous = lines
            if ready and not loaded:
                loaded = True
                run_load(args, services[0], args.dir.parent)
            if args.once and ready:
                return 0
            if args.once and time.monotonic() > deadline:
                print("timed out waiting for Ready", file=sys.stderr)
                return 1
            if operator.poll() is not None:
                print(f"the operator exited with {operator.returncode}", file=sys.stderr)
                return 1
            time.sleep(2)
        return 0
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
