"""`djangoscale cluster up|down|status|build`: the local control plane from a shell.

Only argparse at import time: the dispatcher imports this module to build the parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from djangoscale_dev import DEFAULT_DIR
from djangoscale_dev.images import cli as images_cli


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="build (if needed) and start the cluster, print the kubeconfig")
    down = sub.add_parser("down", help="stop every process the cluster started")
    status = sub.add_parser("status", help="print the kubeconfig if the cluster is running")
    sub.add_parser("build", help="build (or find cached) binaries and print their folder")
    load = sub.add_parser(
        "load", help="import an OCI or docker image archive into the real node's containerd"
    )
    load.add_argument("archive", type=Path, help="image archive (e.g. from `buildah push`)")
    images_cli.add_commands(sub, DEFAULT_DIR)
    for command in (up, down, status, load):
        command.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIR,
            help="cluster directory: PKI, kubeconfig, data, logs, pids (default: %(default)s)",
        )
    up.add_argument(
        "--node",
        choices=("real", "kwok"),
        default="real",
        help="real: one kubelet + containerd + runc + CNI + kube-proxy node that runs pods; "
        "kwok: fake nodes, for hundreds of pods (default: %(default)s)",
    )
    up.add_argument("--nodes", type=int, default=1, help="fake nodes with --node kwok (default: 1)")
    up.add_argument(
        "--hpa-sync-period",
        default="5s",
        help="kube-controller-manager --horizontal-pod-autoscaler-sync-period "
        "(default: %(default)s; upstream: 15s)",
    )
    up.add_argument(
        "--hpa-downscale-stabilization",
        default="30s",
        help="--horizontal-pod-autoscaler-downscale-stabilization "
        "(default: %(default)s; upstream: 5m0s)",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds to wait for the cluster once built (default: %(default)s)",
    )


def main(args: argparse.Namespace) -> int:
    if args.action in ("build-image", "build-images"):
        return images_cli.run(args)
    if args.action == "build":
        from djangoscale_dev.cluster.build import ensure_binaries

        print(ensure_binaries().root)
        return 0

    from djangoscale_dev.cluster.local import LocalCluster

    cluster = LocalCluster(
        args.dir,
        hpa_sync_period=getattr(args, "hpa_sync_period", "5s"),
        hpa_downscale_stabilization=getattr(args, "hpa_downscale_stabilization", "30s"),
    )
    if args.action == "up":
        from djangoscale_dev.cluster.local import ClusterError

        try:
            kubeconfig = cluster.up(nodes=args.nodes, timeout=args.timeout, node=args.node)
        except (ClusterError, ValueError) as error:
            print(f"cluster up: {error}", file=sys.stderr)
            return 1
        print(kubeconfig)
        return 0
    if args.action == "load":
        from djangoscale_dev.cluster.local import ClusterError
        from djangoscale_dev.cluster.node import NodeError

        try:
            names = cluster.load_image(args.archive)
        except (ClusterError, NodeError) as error:
            print(f"cluster load: {error}", file=sys.stderr)
            return 1
        print("\n".join(names))
        return 0
    if args.action == "down":
        cluster.down()
        return 0
    state = cluster.running()
    if state is None:
        print(f"no cluster running in {cluster.dir}")
        return 1
    print(state.kubeconfig)
    if state.host_address is not None:
        print(f"pods reach services on this host at {state.host_address}")
    return 0
