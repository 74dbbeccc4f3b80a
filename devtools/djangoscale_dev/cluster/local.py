"""`LocalCluster`: bring the local control plane up in a directory, and take it down.

The order is the one a real cluster boots in: PKI, etcd, kube-apiserver (wait for /readyz),
controller-manager and scheduler, then the node(s): either the real node (containerd, kubelet,
kube-proxy: see `node.py`) or KWOK and its fake nodes. `up` returns only when the nodes are
Ready and the `default` service account exists, so a caller can create pods at once.
Everything the processes need (certs, kubeconfigs, KWOK's stages, etcd data, the node's
containerd root, logs, pids) is in the cluster directory, so `down` (or another shell) needs
nothing but that directory.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Self

from djangoscale_dev import DEFAULT_DIR
from djangoscale_dev.cluster import flags, nodeconfig, processes
from djangoscale_dev.cluster import node as node_module
from djangoscale_dev.cluster.api import ApiClient, ApiError
from djangoscale_dev.cluster.build import Binaries, ensure_binaries
from djangoscale_dev.cluster.pki import CLIENTS, PkiPaths, generate_pki

STATE_FILE = "state.json"
ADMIN_KUBECONFIG = "kubeconfig"
PORT_RACE_ATTEMPTS = 3
NodeKind = Literal["real", "kwok"]
NODE_KINDS: tuple[NodeKind, ...] = ("real", "kwok")


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClusterState:
    """What a running cluster's users need to know, saved as state.json in its directory."""

    dir: Path
    kubeconfig: Path
    server: str
    ports: flags.Ports
    nodes: list[str]
    binaries: Path
    node: NodeKind = "kwok"

    @property
    def host_address(self) -> str | None:
        """Where pods on the real node reach services that listen on this host."""
        return nodeconfig.GATEWAY if self.node == "real" else None

    def save(self) -> None:
        data = asdict(self)
        data.update(dir=str(self.dir), kubeconfig=str(self.kubeconfig), binaries=str(self.binaries))
        (self.dir / STATE_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        path = directory / STATE_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(
            dir=Path(data["dir"]),
            kubeconfig=Path(data["kubeconfig"]),
            server=data["server"],
            ports=flags.Ports(**data["ports"]),
            nodes=list(data["nodes"]),
            binaries=Path(data["binaries"]),
            node=data.get("node", "kwok"),
        )


def kubeconfig_document(server: str, pki: PkiPaths, identity: str, user: str) -> dict[str, Any]:
    """A kubeconfig with the certs embedded, so it works from any working directory."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "djangoscale-local",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki.cert(identity)),
                    "client-key-data": b64(pki.key(identity)),
                },
            }
        ],
        "contexts": [
            {
                "name": "djangoscale-local",
                "context": {"cluster": "djangoscale-local", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "djangoscale-local",
    }


def node_manifest(index: int) -> dict[str, Any]:
    """A fake node that KWOK manages (by annotation), with its own loopback pod CIDR."""
    name = f"kwok-node-{index}"
    cidr = flags.node_pod_cidr(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {flags.KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    }


def node_is_ready(node: dict[str, Any]) -> bool:
    """Ready=True and no NoSchedule/NoExecute taint left from before it was Ready."""
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = node.get("spec", {}).get("taints", [])
    return ready and not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints)


def kwok_config_text(stages_dir: Path) -> str:
    """KWOK's --config: the stage documents built alongside the kwok binary."""
    documents = [p.read_text().strip() for p in sorted(stages_dir.glob("*.yaml"))]
    if not documents:
        raise ClusterError(f"no KWOK stages in {stages_dir}")
    return "\n---\n".join(documents) + "\n"


CLUSTER_FILES = frozenset(
    {"pki", "etcd", "logs", "node", "kwok.yaml", ADMIN_KUBECONFIG, STATE_FILE, processes.PIDS_FILE}
)


def is_cluster_file(name: str) -> bool:
    """True for the names `up` writes in a cluster directory (and so may remove)."""
    return name in CLUSTER_FILES or name.endswith((".kubeconfig", "-certs"))


def _stderr(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


class LocalCluster:
    """A local control plane living in `dir`.

    >>> with LocalCluster(Path(".djangoscale/cluster")) as cluster:   # doctest: +SKIP
    ...     kubeconfig = cluster.up(nodes=2)
    """

    def __init__(
        self,
        dir: Path = DEFAULT_DIR,
        *,
        hpa_sync_period: str = "5s",
        hpa_downscale_stabilization: str = "30s",
        emit: Callable[[str], None] = _stderr,
    ) -> None:
        self.dir = Path(dir).resolve()
        self.hpa_sync_period = hpa_sync_period
        self.hpa_downscale_stabilization = hpa_downscale_stabilization
        self.emit = emit
        self.state: ClusterState | None = None

    # -- public API ---------------------------------------------------------------------

    def up(self, nodes: int = 1, timeout: float = 180.0, node: NodeKind = "kwok") -> Path:
        """Start the cluster (building the binaries first if needed); return the kubeconfig.

        `node="real"` runs one real node (kubelet, containerd, runc, CNI, kube-proxy);
        `node="kwok"` runs `nodes` fake nodes. If this directory already holds a running
        cluster, it is reused as it is.
        """
        if node not in NODE_KINDS:
            raise ValueError(f"node: {node!r} is not one of {', '.join(NODE_KINDS)}")
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if node == "real" and nodes != 1:
            raise ValueError("nodes: the real node is one node; use --node kwok for more")
        running = self.running()
        if running is not None:
            self.emit(f"already running in {self.dir}")
            self.state = running
            return running.kubeconfig
        if node == "real":
            self._take_down_abandoned_node()
            missing = node_module.missing_for_real_node()
            if missing is not None:
                raise ClusterError(missing)
        binaries = ensure_binaries(emit=self.emit)
        started = time.monotonic()
        for attempt in range(PORT_RACE_ATTEMPTS):
            self.down(quiet=True)
            self._reset_dir()
            try:
                self.state = self._start(
                    binaries, nodes, node, deadline=time.monotonic() + timeout
                )
                break
            except ClusterError as error:
                self.down(quiet=True)
                # A free port can be taken by someone else between our probe and the bind.
                if "address already in use" not in str(error) or attempt + 1 == PORT_RACE_ATTEMPTS:
                    raise
                self.emit("a port was taken meanwhile; starting again on other ports")
            except BaseException:
                self.down(quiet=True)
                raise
        assert self.state is not None
        self.emit(f"up in {time.monotonic() - started:.1f}s with {nodes} {node} node(s)")
        return self.state.kubeconfig

    def down(self, quiet: bool = False) -> list[str]:
        """Take the real node apart (if any), then stop every process this directory records;
        return what was stopped and removed."""
        stopped = node_module.teardown(self.dir, self.emit) if self.dir.is_dir() else []
        stopped += processes.stop_all(self.dir) if self.dir.is_dir() else []
        stopped += node_module.release_bridge(self.dir)
        state_file = self.dir / STATE_FILE
        if state_file.exists():
            state_file.unlink()
        if stopped and not quiet:
            self.emit(f"stopped {', '.join(stopped)}")
        self.state = None
        return stopped

    def _take_down_abandoned_node(self) -> None:
        abandoned = node_module.abandoned_node()
        if abandoned is None:
            return
        self.emit(f"taking down an abandoned real node (nothing of it runs): {abandoned}")
        removed = LocalCluster(abandoned, emit=self.emit).down(quiet=True)
        self.emit(f"removed {', '.join(removed) or 'nothing'}")

    def running(self) -> ClusterState | None:
        """The saved state if every recorded process is still alive, else None."""
        state = ClusterState.load(self.dir)
        entries = processes.recorded(self.dir)
        if state is None or not entries or not all(processes.is_ours(e) for e in entries):
            return None
        return state

    def load_image(self, archive: Path) -> list[str]:
        """Import an OCI or docker image archive into the real node's containerd, as `kind
        load` does; return the image names it holds. Pods use them with
        `imagePullPolicy: IfNotPresent` (or `Never`)."""
        state = self.state or ClusterState.load(self.dir)
        if state is None or state.node != "real":
            raise ClusterError(f"no real node runs in {self.dir} (`cluster up --node real`)")
        return node_module.import_image(nodeconfig.NodePaths(self.dir / "node"), Path(archive))

    def client(self) -> ApiClient:
        if self.state is None:
            raise ClusterError("cluster is not up")
        return ApiClient(self.state.kubeconfig)

    @property
    def kubeconfig(self) -> Path:
        if self.state is None:
            raise ClusterError("cluster is not up")
        return self.state.kubeconfig

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- steps ----------------------------------------------------------------------------

    def _reset_dir(self) -> None:
        """Fresh PKI and etcd data each time: a leftover from a crashed run must not leak in.
        Only what `up` itself writes is removed (so `--dir .` cannot wipe a checkout); old
        logs are kept one generation back for post-mortems."""
        self.dir.mkdir(parents=True, exist_ok=True)
        roots = nodeconfig.NodePaths(self.dir / "node").mount_roots
        mounted = [m for root in roots for m in node_module.mounts_under(root)]
        if mounted:
            raise ClusterError(f"{self.dir} still has mounts ({mounted[0]}); not removing it")
        for child in self.dir.iterdir():
            if not is_cluster_file(child.name):
                continue
            if child.name == "logs":
                previous = self.dir / "logs.previous"
                shutil.rmtree(previous, ignore_errors=True)
                child.rename(previous)
            elif child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _start(
        self, binaries: Binaries, nodes: int, kind: NodeKind, deadline: float
    ) -> ClusterState:
        ports = flags.Ports(*processes.free_ports(6))
        address = flags.LOOPBACK
        if kind == "real":
            # The bridge first: the apiserver listens on its gateway address.
            node_module.prepare_host(self.dir, binaries.k8s_local)
            address = nodeconfig.GATEWAY
        config = flags.ClusterConfig(
            dir=self.dir,
            ports=ports,
            hpa_sync_period=self.hpa_sync_period,
            hpa_downscale_stabilization=self.hpa_downscale_stabilization,
            apiserver_address=address,
        )
        serving_ips = (flags.LOOPBACK, address, flags.KUBERNETES_SERVICE_IP)
        pki = generate_pki(config.pki.root, apiserver_ips=tuple(dict.fromkeys(serving_ips)))
        for identity in CLIENTS:
            path = (
                self.dir / ADMIN_KUBECONFIG
                if identity.name == "admin"
                else config.kubeconfig(identity.name)
            )
            document = kubeconfig_document(config.server, pki, identity.name, identity.user)
            path.write_text(json.dumps(document, indent=2))
            path.chmod(0o600)
        self.state = ClusterState(
            dir=self.dir,
            kubeconfig=self.dir / ADMIN_KUBECONFIG,
            server=config.server,
            ports=ports,
            nodes=[],
            binaries=binaries.root,
        )

        k8s = binaries.k8s_local
        etcd = processes.start("etcd", k8s, flags.etcd_args(config), self.dir)
        self._wait(etcd, "etcd health", lambda: _etcd_healthy(ports.etcd_client), deadline)

        apiserver = processes.start("apiserver", k8s, flags.apiserver_args(config), self.dir)
        client = self.client()
        self._wait(apiserver, "apiserver /readyz", lambda: _readyz(client), deadline)

        for name, args in (
            ("controller-manager", flags.controller_manager_args(config)),
            ("scheduler", flags.scheduler_args(config)),
        ):
            processes.start(name, k8s, args, self.dir)
        if kind == "real":
            names = self._start_real_node(k8s, deadline)
        else:
            names = self._start_kwok(binaries, config, client, nodes)
        self._wait_all("nodes Ready", lambda: _nodes_ready(client, names), deadline)
        # Pods are refused until the namespace's service account exists (ServiceAccount
        # admission), so wait for the controller that makes it.
        self._wait_all(
            "default service account",
            lambda: _exists(client, "/api/v1/namespaces/default/serviceaccounts/default"),
            deadline,
        )
        state = ClusterState(
            dir=self.dir,
            kubeconfig=self.dir / ADMIN_KUBECONFIG,
            server=config.server,
            ports=ports,
            nodes=names,
            binaries=binaries.root,
            node=kind,
        )
        state.save()
        return state

    def _start_kwok(
        self, binaries: Binaries, config: flags.ClusterConfig, client: ApiClient, nodes: int
    ) -> list[str]:
        kwok_config = self.dir / "kwok.yaml"
        kwok_config.write_text(kwok_config_text(binaries.stages))
        processes.start("kwok", binaries.kwok, flags.kwok_args(config, kwok_config), self.dir)
        names = []
        for index in range(nodes):
            manifest = node_manifest(index)
            client.create("/api/v1/nodes", manifest)
            names.append(manifest["metadata"]["name"])
        return names

    def _start_real_node(self, k8s: Path, deadline: float) -> list[str]:
        ports = nodeconfig.NodePorts(*processes.free_ports(4))

        def wait(proc: processes.Started, what: str, check: Callable[[], bool]) -> None:
            self._wait(proc, what, check, deadline)

        node_module.start_processes(self.dir, k8s, ports, self.dir / ADMIN_KUBECONFIG, wait)
        return [nodeconfig.NODE_NAME]

    def _wait(
        self, proc: processes.Started, what: str, check: Callable[[], bool], deadline: float
    ) -> None:
        self.emit(f"waiting for {what}")
        while time.monotonic() < deadline:
            if not processes.is_ours(proc):
                raise ClusterError(
                    f"{proc.name} exited; last lines of {proc.log}:\n" + _tail(Path(proc.log))
                )
            if check():
                return
            time.sleep(0.2)
        raise ClusterError(
            f"timed out waiting for {what}; see {proc.log}:\n" + _tail(Path(proc.log))
        )

    def _wait_all(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        """Wait for `check` while watching that no started process died."""
        self.emit(f"waiting for {what}")
        while time.monotonic() < deadline:
            for entry in processes.recorded(self.dir):
                if not processes.is_ours(entry):
                    raise ClusterError(
                        f"{entry.name} exited; last lines of {entry.log}:\n"
                        + _tail(Path(entry.log))
                    )
            if check():
                return
            time.sleep(0.3)
        logs = "\n".join(
            f"--- {e.name}\n{_tail(Path(e.log), 10)}" for e in processes.recorded(self.dir)
        )
        raise ClusterError(f"timed out waiting for {what}\n{logs}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _etcd_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def _readyz(client: ApiClient) -> bool:
    try:
        return bool(client.get("/readyz") == "ok")
    except (ApiError, OSError):
        return False


def _nodes_ready(client: ApiClient, names: list[str]) -> bool:
    try:
        items = client.get("/api/v1/nodes")["items"]
    except (ApiError, OSError):
        return False
    ready = {n["metadata"]["name"] for n in items if node_is_ready(n)}
    return set(names) <= ready


def _exists(client: ApiClient, path: str) -> bool:
    try:
        client.get(path)
        return True
    except (ApiError, OSError):
        return False
