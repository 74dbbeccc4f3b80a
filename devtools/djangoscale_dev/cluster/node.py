"""The real node: containerd + runc + CNI bridge, a kubelet and kube-proxy, and its teardown.

`start` writes the configs (see `nodeconfig`), records what it is about to change outside the
cluster directory (iptables chains, kernel tunables, the bridge), then starts containerd,
imports the local pause image, and starts the kubelet and kube-proxy as recorded processes.

`teardown` undoes exactly that, in order: kubelet and kube-proxy stop (nothing restarts pods),
containerd kills and deletes every container (the shims exit with them), containerd stops,
any process still recorded in a container bundle is killed, every mount under the cluster
directory is unmounted (rootfs overlays, shm, volumes, and the pods' network namespaces, which
live under containerd's state dir; their veths go with them), kube-proxy
cleans its chains, the other KUBE-/CNI- chains that appeared since `up` are removed, and the
kernel tunables the kubelet set are put back; once the control plane has stopped, the bridge
goes (`release_bridge`). Nothing is matched by a broad name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from djangoscale_dev.cluster import nodeconfig, processes
from djangoscale_dev.cluster.flags import SERVICE_CLUSTER_IP_RANGE
from djangoscale_dev.cluster.nodeconfig import NodePaths, NodePorts
from djangoscale_dev.cluster.ociarchive import ImageFile, write_oci_archive

BUSYBOX = Path("/bin/busybox")
# Host commands the real node runs, and the Debian package that brings each.
HOST_COMMANDS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "umount": "mount",
}
SETUP_HINT = "scripts/setup.sh installs it"
# Set by the kubelet at start (protectKernelDefaults: false) or by the CNI bridge (forwarding).
HOST_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
)
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")
# Chains of kube-proxy, the kubelet and the CNI portmap plugin.
NODE_CHAIN_PREFIXES = ("KUBE-", "CNI-")
# Ours, under a prefix teardown removes (with the rules that jump to it).
SERVICE_GUARD_CHAIN = "KUBE-DJANGOSCALE-SVC-GUARD"
CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CNI_RESULTS_DIR = Path("/var/lib/cni/results")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
# Host directories that containerd (shim sockets), libcni and the kubelet create when missing,
# whatever their configuration says; `down` removes them again, when empty, if they did not
# exist before `up`.
HOST_DIRS = (
    Path("/run/containerd"),
    Path("/var/lib/cni"),
    CONTAINER_LOG_LINKS,
    Path("/var/log/pods"),
)
# The kubelet's device-plugin socket lives here whatever --root-dir says; if `up` made the
# directory, all of it is the kubelet's.
KUBELET_FIXED_DIR = Path("/var/lib/kubelet")
UNMOUNT_PASSES = 5
MOUNTINFO = Path("/proc/self/mountinfo")
# `up` makes the bridge a moment before it starts the first process; a node younger than this
# with nothing running is still starting, not abandoned.
ABANDONED_AFTER_SECONDS = 60.0


class NodeError(RuntimeError):
    pass


def missing_for_real_node(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """One line naming the first thing this host lacks for a real node, or None."""
    if os.geteuid() != 0:
        return "real node: needs root (mounts, network namespaces, iptables); or use --node kwok"
    for command, package in HOST_COMMANDS.items():
        if which(command) is None:
            return f"{command}: not installed (Debian package {package}; {SETUP_HINT})"
    for plugin in nodeconfig.CNI_PLUGINS:
        if not (nodeconfig.CNI_BIN_DIR / plugin).is_file():
            return (
                f"CNI plugin {plugin}: not in {nodeconfig.CNI_BIN_DIR} "
                f"(Debian package containernetworking-plugins; {SETUP_HINT})"
            )
    if not BUSYBOX.is_file():
        return f"{BUSYBOX}: not installed (Debian package busybox-static; {SETUP_HINT})"
    owner = bridge_owner()
    if owner is not None and abandoned_node() is None:
        return (
            f"another real node runs on this machine (bridge {nodeconfig.BRIDGE} of {owner}); "
            f"stop it with `djangoscale cluster down --dir {owner}`"
        )
    return None


def bridge_owner() -> str | None:
    """The cluster directory that made the bridge (kept as the link's alias), if it exists."""
    path = Path("/sys/class/net") / nodeconfig.BRIDGE
    if not path.exists():
        return None
    try:
        return (path / "ifalias").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def abandoned_node(now: Callable[[], float] = time.time) -> Path | None:
    """The cluster directory of a real node whose bridge is still up while none of its
    processes runs: its run was killed with no chance to take it down (a SIGKILLed test run, a
    stopped container). `up` takes such a node down first rather than refusing to start."""
    owner = bridge_owner()
    if owner is None or owner == "unknown":
        return None
    directory = Path(owner)
    paths = NodePaths(directory / "node")
    try:
        age = now() - paths.record.stat().st_mtime
    except OSError:
        age = float("inf")  # its directory is gone: nothing of it can be running
    if age < ABANDONED_AFTER_SECONDS:
        return None
    if any(processes.is_ours(entry) for entry in processes.recorded(directory)):
        return None
    return None if node_processes(paths) else directory


# -- start -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What existed before `up` touched the host, saved in the node directory."""

    cluster_dir: str
    binary: str
    sysctls: dict[str, str]
    chains: dict[str, dict[str, list[str]]]  # iptables tool -> table -> chain names
    new_dirs: list[str]  # of HOST_DIRS, those that did not exist

    def save(self, paths: NodePaths) -> None:
        paths.record.write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, paths: NodePaths) -> Record | None:
        if not paths.record.is_file():
            return None
        data = json.loads(paths.record.read_text())
        data.setdefault("new_dirs", [])
        return cls(**data)


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in HOST_SYSCTLS:
        path = Path("/proc/sys") / name
        if path.exists():
            values[name] = path.read_text().strip()
    return values


def chain_names(tool: str, table: str) -> list[str]:
    result = subprocess.run(
        [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return []
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("-N ")]


def all_chains() -> dict[str, dict[str, list[str]]]:
    return {tool: {table: chain_names(tool, table) for table in TABLES} for tool in IPTABLES}


def write_configs(paths: NodePaths, ports: NodePorts, kubeconfig: Path) -> None:
    for directory in (
        paths.socket_dir,
        paths.containerd_root,
        paths.containerd_state,
        paths.containerd_opt,
        paths.cni_conf_dir,
        paths.cni_ipam_dir,
        paths.kubelet_root,
        paths.pod_logs,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(nodeconfig.containerd_config(paths))
    conflist = paths.cni_conf_dir / f"10-{nodeconfig.CNI_NETWORK}.conflist"
    conflist.write_text(json.dumps(nodeconfig.cni_conflist(paths), indent=2))
    paths.kubelet_config.write_text(json.dumps(nodeconfig.kubelet_config(paths, ports), indent=2))
    paths.kube_proxy_config.write_text(
        json.dumps(nodeconfig.kube_proxy_config(ports, kubeconfig), indent=2)
    )
    write_oci_archive(
        paths.pause_archive,
        nodeconfig.PAUSE_IMAGE,
        [ImageFile(BUSYBOX, "bin/busybox")],
        entrypoint=["/bin/busybox", "sleep", "2147483647"],
    )


def create_bridge(cluster_dir: Path) -> None:
    """The pod bridge with the gateway address, made before the kubelet so `--node-ip` exists;
    its alias names the cluster directory that owns it."""
    bridge = nodeconfig.BRIDGE
    _run(["ip", "link", "add", bridge, "type", "bridge"])
    _run(["ip", "link", "set", bridge, "alias", str(cluster_dir)])
    gateway = f"{nodeconfig.GATEWAY}/{nodeconfig.GATEWAY_PREFIX}"
    _run(["ip", "addr", "add", gateway, "dev", bridge])
    _run(["ip", "link", "set", bridge, "up"])


def ctr(paths: NodePaths, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [
        "ctr",
        "--address",
        str(paths.containerd_socket),
        "--namespace",
        nodeconfig.CONTAINERD_NAMESPACE,
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(command)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def containerd_ready(paths: NodePaths) -> bool:
    return paths.containerd_socket.exists() and ctr(paths, "version", check=False).returncode == 0


def normalized_image_name(name: str) -> str:
    """The full reference a pod's `image:` means, as CRI resolves it: `shop:1` is
    `docker.io/library/shop:1`, `djangoscale/app` is `docker.io/djangoscale/app:latest`."""
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    last = name.rsplit("/", 1)[1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def import_image(paths: NodePaths, archive: Path) -> list[str]:
    """Import an OCI (or docker) archive into the node's containerd; return the image names.

    The pods' images come this way, as `kind load` does: a pod names one with
    `imagePullPolicy: Never` or `IfNotPresent` and the kubelet finds it here. An archive's
    short name (`djangoscale/app:dev`, as builders write it) is stored under the full name CRI
    looks up (`docker.io/djangoscale/app:dev`).
    """
    if not archive.is_file():
        raise NodeError(f"image archive not found: {archive}")
    if not containerd_ready(paths):
        raise NodeError(f"the real node's containerd is not running ({paths.containerd_socket})")
    # --all-platforms: an index that names no platform would otherwise be skipped.
    output = ctr(paths, "images", "import", "--all-platforms", str(archive)).stdout
    names = []
    for line in output.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "unpacking":
            continue
        name, full = words[1], normalized_image_name(words[1])
        if full != name:
            ctr(paths, "images", "tag", "--force", name, full)
            ctr(paths, "images", "rm", name)
        names.append(full)
    if not names:
        raise NodeError(f"{archive}: no named image in the archive (ctr said: {output.strip()})")
    return names


def image_names(paths: NodePaths) -> list[str]:
    return ctr(paths, "images", "ls", "-q").stdout.split()


def prepare_host(cluster_dir: Path, binary: Path) -> None:
    """Record the host's state, then make the pod bridge (the apiserver listens on its
    gateway)."""
    paths = NodePaths(cluster_dir / "node")
    paths.root.mkdir(parents=True, exist_ok=True)
    new_dirs = [str(d) for d in (*HOST_DIRS, KUBELET_FIXED_DIR) if not d.exists()]
    Record(str(cluster_dir), str(binary), read_sysctls(), all_chains(), new_dirs).save(paths)
    create_bridge(cluster_dir)
    for command in service_guard_commands():
        _run(command)


def service_guard_commands() -> list[list[str]]:
    """Refuse traffic to the Service range that kube-proxy has not translated (a Service it
    has not synced yet). Routed on, it would leave the host by the default route, and a
    connection made then keeps that path for its whole life (conntrack): the aggregator
    kept one to a new metrics Service and got 404 from whatever answered outside."""
    chain = SERVICE_GUARD_CHAIN
    return [
        ["iptables", "-w", "-N", chain],
        ["iptables", "-w", "-A", chain, "-d", SERVICE_CLUSTER_IP_RANGE,
         "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "REJECT"],
        # From the host (the apiserver, tests) and from pods.
        ["iptables", "-w", "-I", "OUTPUT", "-j", chain],
        ["iptables", "-w", "-I", "FORWARD", "-j", chain],
    ]


def start_processes(
    cluster_dir: Path, binary: Path, ports: NodePorts, kubeconfig: Path, wait: Callable[..., None]
) -> None:
    """Bring the node up on a prepared host; `wait(started, what, check)` polls."""
    paths = NodePaths(cluster_dir / "node")
    write_configs(paths, ports, kubeconfig)
    containerd_binary = shutil.which("containerd")
    assert containerd_binary is not None  # checked by missing_for_real_node
    containerd = processes.start(
        "containerd", Path(containerd_binary), nodeconfig.containerd_args(paths), cluster_dir
    )
    wait(containerd, "containerd", lambda: containerd_ready(paths))
    import_image(paths, paths.pause_archive)
    processes.start("kubelet", binary, nodeconfig.kubelet_args(paths, kubeconfig), cluster_dir)
    processes.start("kube-proxy", binary, nodeconfig.kube_proxy_args(paths), cluster_dir)


# -- teardown ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A container that containerd's shim runs, as its bundle directory describes it."""

    id: str
    sandbox: bool
    pids: tuple[int, ...]


def bundles(paths: NodePaths) -> list[Bundle]:
    found: list[Bundle] = []
    if not paths.task_bundles.is_dir():
        return found
    for directory in sorted(paths.task_bundles.iterdir()):
        spec = _read_json(directory / "config.json")
        annotations = spec.get("annotations") or {}
        pids = []
        for name in ("init.pid", "shim.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int((directory / name).read_text().strip()))
        found.append(
            Bundle(directory.name, annotations.get(CRI_CONTAINER_TYPE) == "sandbox", tuple(pids))
        )
    return found


def mounts_under(directory: Path, mountinfo: Path = MOUNTINFO) -> list[str]:
    """Mount points at or below `directory`, newest first (the order to unmount them)."""
    root = str(directory.resolve())
    points = []
    for line in mountinfo.read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return list(reversed(points))


def _unescape(field: str) -> str:
    return (
        field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def node_processes(paths: NodePaths) -> list[int]:
    """Live processes that belong to this node: a container's init or shim from its bundle, or
    a shim whose command line names this node's containerd socket."""
    socket = str(paths.containerd_socket)
    found = {pid for b in bundles(paths) for pid in b.pids if _alive(pid)}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in (
            cmdline
        ):
            found.add(int(entry.name))
    return sorted(found)


def teardown(cluster_dir: Path, emit: Callable[[str], None]) -> list[str]:
    """Undo what `start_processes` did; return a line per kind of thing removed."""
    paths = NodePaths(cluster_dir / "node")
    record = Record.load(paths)
    if record is None:
        return []
    removed: list[str] = []
    entries = {e.name: e for e in processes.recorded(cluster_dir)}
    for name in ("kube-proxy", "kubelet"):
        if name in entries and processes.stop(entries[name]):
            removed.append(name)
    found = bundles(paths)
    sandboxes = [b.id for b in found if b.sandbox]
    if "containerd" in entries and processes.is_ours(entries["containerd"]):
        for bundle in found:
            ctr(paths, "tasks", "kill", "--signal", "SIGKILL", bundle.id, check=False)
        for bundle in found:
            if bundle.pids:
                _wait_gone(bundle.pids[0], 10.0)
            ctr(paths, "tasks", "delete", "--force", bundle.id, check=False)
        for name in ctr(paths, "containers", "ls", "-q", check=False).stdout.split():
            ctr(paths, "containers", "delete", name, check=False)
        if found:
            removed.append(f"{len(found)} container(s)")
    if "containerd" in entries and processes.stop(entries["containerd"]):
        removed.append("containerd")
    leftovers = node_processes(paths)
    for pid in leftovers:
        _kill(pid)
    if leftovers:
        removed.append(f"{len(leftovers)} leftover container process(es)")
    unmounted = sum(unmount_all(root) for root in paths.mount_roots)
    if unmounted:
        removed.append(f"{unmounted} mount(s)")
    cleanup = subprocess.run(
        [record.binary, "kube-proxy", "--cleanup"], capture_output=True, text=True, check=False
    )
    if cleanup.returncode != 0:
        emit(f"kube-proxy --cleanup: {cleanup.stderr.strip()[-300:]}")
    chains = remove_new_chains(record.chains)
    if chains:
        removed.append(f"{chains} iptables chain(s)")
    _remove_cni_results(sandboxes)
    _remove_log_links(paths)
    shutil.rmtree(paths.socket_dir, ignore_errors=True)
    _remove_empty_dirs(nodeconfig.SOCKET_ROOT)
    for directory in record.new_dirs:
        if Path(directory) == KUBELET_FIXED_DIR:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            _remove_empty_dirs(Path(directory))
    restore_sysctls(record.sysctls)
    return removed


def release_bridge(cluster_dir: Path) -> list[str]:
    """Last step of `down`, once the control plane has stopped too: the apiserver listens on
    the bridge's address and, on its way out, calls itself there (10 s of timeout without
    it). The bridge's alias names its cluster directory, so this needs no record: an abandoned
    node whose directory is gone loses its bridge too."""
    removed = []
    if bridge_owner() == str(cluster_dir):
        _run(["ip", "link", "del", nodeconfig.BRIDGE])
        removed.append(f"bridge {nodeconfig.BRIDGE}")
    NodePaths(cluster_dir / "node").record.unlink(missing_ok=True)
    return removed


def unmount_all(cluster_dir: Path) -> int:
    count = 0
    for _ in range(UNMOUNT_PASSES):
        points = mounts_under(cluster_dir)
        if not points:
            break
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            count += 1
    left = mounts_under(cluster_dir)
    if left:
        raise NodeError(f"still mounted after teardown: {', '.join(left[:5])}")
    return count


def remove_new_chains(before: dict[str, dict[str, list[str]]]) -> int:
    """Remove KUBE-/CNI- chains that did not exist before `up`, and the rules jumping to them."""
    count = 0
    for tool in IPTABLES:
        for table in TABLES:
            known = set(before.get(tool, {}).get(table, []))
            listing = subprocess.run(
                [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout.splitlines()
            new = {
                line.split()[1]
                for line in listing
                if line.startswith("-N ")
                and line.split()[1].startswith(NODE_CHAIN_PREFIXES)
                and line.split()[1] not in known
            }
            if not new:
                continue
            for line in listing:
                words = shlex.split(line)  # comments are quoted
                if words[:1] == ["-A"] and words[1] not in new and _jump_target(words) in new:
                    subprocess.run([tool, "-w", "-t", table, "-D", *words[1:]], check=False)
            for chain in new:
                subprocess.run([tool, "-w", "-t", table, "-F", chain], check=False)
            for chain in new:
                subprocess.run([tool, "-w", "-t", table, "-X", chain], check=False)
                count += 1
    return count


def _jump_target(words: list[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in words and words.index(flag) + 1 < len(words):
            return words[words.index(flag) + 1]
    return None


def restore_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys") / name
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError:
            pass


def _remove_cni_results(sandboxes: list[str]) -> None:
    """libcni caches each attachment's result (our network's and the loopback's) by the
    sandbox id."""
    for sandbox in sandboxes:
        for path in CNI_RESULTS_DIR.glob(f"*-{sandbox}-*"):
            path.unlink(missing_ok=True)


def _remove_empty_dirs(root: Path) -> None:
    """Remove `root` and its subdirectories if they hold no file (deepest first)."""
    if not root.is_dir():
        return
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def _remove_log_links(paths: NodePaths) -> None:
    """The kubelet links each container's log into /var/log/containers; ours point into the
    node's pod log directory."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    root = str(paths.pod_logs.resolve()) + "/"
    for link in CONTAINER_LOG_LINKS.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(root):
            link.unlink()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    _wait_gone(pid, 5.0)


def _wait_gone(pid: int, timeout: float) -> bool:
    return _wait_until(lambda: not _alive(pid), timeout)


def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NodeError(f"{' '.join(command)}: {result.stderr.strip()}")
