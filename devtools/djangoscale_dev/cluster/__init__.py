"""A real Kubernetes control plane on loopback, for end-to-end tests and `djangoscale dev`.

There is no Docker engine and no download of release binaries where this project is built,
so kind, k3d, minikube and setup-envtest are out. Instead kube-apiserver,
kube-controller-manager, kube-scheduler, an embedded etcd and KWOK (a fake kubelet) are built
from Go modules in `tests/cluster/`, cached outside the repository, and started here as
detached processes on free loopback ports.

Importing this package is cheap: the heavy parts (`cryptography`) load only when used.
"""

from __future__ import annotations

from djangoscale_dev.cluster.apiservice import register_local_apiservice
from djangoscale_dev.cluster.local import ClusterState, LocalCluster

__all__ = ["ClusterState", "LocalCluster", "register_local_apiservice"]
