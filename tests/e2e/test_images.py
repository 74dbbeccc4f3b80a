"""The project's images, built here without Docker, start as the restricted profile runs them.

Each image runs under runc the way the kubelet would start it under the "restricted" Pod
Security Standard: its own numeric user (never root, never group 0 for pgbouncer), a
read-only root filesystem with /tmp the one writable place, no capabilities, no new
privileges. A second build of the same inputs is a cache hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from djangoscale import spec
from djangoscale.builders.deployment import SECRET_FILE_GROUP, SECRET_FILE_MODE
from djangoscale.builders.pgbouncer import (
    CONFIG_DIR,
    INI_KEY,
    LISTEN_PORT,
    USERLIST_KEY,
    DatabaseCredentials,
    render_ini,
    render_userlist,
)
from djangoscale_dev.cluster.processes import free_port, free_ports
from djangoscale_dev.images import project
from djangoscale_dev.images.containerd import CRI_NAMESPACE, import_image
from djangoscale_dev.images.store import Store, cache_root, id_file, normalized_reference
from tests.fixtures.polling import wait_for

RUN_TIMEOUT = 120


@dataclass
class Built:
    archives: dict[str, Path]
    seconds: float
    messages: list[str]

    def image(self, tag: str) -> str:
        """The id of the image built for `tag`: what a test runs even if another build on
        the machine moves the tag meanwhile."""
        return id_file(self.archives[tag]).read_text().strip()


@pytest.fixture(scope="module")
def built() -> Built:
    messages: list[str] = []

    def emit(message: str) -> None:
        messages.append(message)
        print(f"[images] {message}", flush=True)

    started = time.monotonic()
    archives = project.project_images(emit)
    return Built(archives, time.monotonic() - started, messages)


@dataclass(frozen=True)
class RunResult:
    code: int
    output: str


def image_config(store: Store, image: str) -> dict[str, Any]:
    text = store.output("inspect", "--type", "image", image)
    config: dict[str, Any] = json.loads(text)["OCIv1"]["config"]
    return config


@pytest.fixture(scope="module")
def store() -> Store:
    return Store(cache_root())


class Runc:
    """Runs an image under runc as a restricted pod runs it: the image's numeric user, a
    read-only root, a tmpfs /tmp (the pods' emptyDir), no capabilities, no new privileges."""

    def __init__(self, store: Store, folder: Path) -> None:
        self.store = store
        self.folder = folder
        self.containers: list[str] = []
        self.started: list[tuple[str, subprocess.Popen[str]]] = []

    def bundle(
        self,
        image: str,
        argv: list[str] | None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        binds: dict[str, Path] | None = None,
        host_network: bool = False,
        fs_group: int | None = None,
    ) -> Path:
        config = image_config(self.store, image)
        container = self.store.output("from", "--quiet", "--pull-never", image)
        self.containers.append(container)
        rootfs = self.store.output("mount", container)
        uid, _, gid = config["User"].partition(":")
        command = argv or (config.get("Entrypoint") or []) + (
            args if args is not None else config.get("Cmd") or []
        )
        bundle = self.folder / f"bundle-{len(self.containers)}"
        bundle.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["process"].update(
            terminal=False,
            args=command,
            env=(config.get("Env") or []) + [f"{k}={v}" for k, v in (env or {}).items()],
            cwd=config.get("WorkingDir") or "/",
            user={"uid": int(uid), "gid": int(gid or 0)}
            | ({"additionalGids": [fs_group]} if fs_group is not None else {}),
            noNewPrivileges=True,
            capabilities={key: [] for key in spec["process"]["capabilities"]},
        )
        spec["mounts"].append(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        )  # fmt: skip
        for destination, source in (binds or {}).items():
            spec["mounts"].append(
                {"destination": destination, "type": "bind", "source": str(source),
                 "options": ["rbind", "ro"]}
            )  # fmt: skip
        if host_network:
            namespaces = spec["linux"]["namespaces"]
            spec["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    def command(self, bundle: Path, name: str) -> list[str]:
        return ["runc", "--root", str(self.folder / "runc"), "run", "--bundle", str(bundle), name]

    def run(
        self, image: str, args: list[str] | None = None, command: list[str] | None = None
    ) -> RunResult:
        """Run to completion: the entrypoint with `args`, or `command` instead."""
        bundle = self.bundle(image, command, args)
        done = subprocess.run(
            self.command(bundle, f"djangoscale-test-{uuid.uuid4().hex[:8]}"),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        return RunResult(done.returncode, done.stdout + done.stderr)

    def start(self, image: str, **options: Any) -> tuple[str, subprocess.Popen[str]]:
        """Start the image's own command in the background, on the host's network."""
        bundle = self.bundle(image, None, host_network=True, **options)
        name = f"djangoscale-test-{uuid.uuid4().hex[:8]}"
        process = subprocess.Popen(
            self.command(bundle, name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.started.append((name, process))
        return name, process

    def signal(self, name: str, signal: str) -> None:
        runc = ["runc", "--root", str(self.folder / "runc")]
        subprocess.run([*runc, "kill", name, signal], capture_output=True)

    def close(self) -> None:
        for name, process in self.started:
            if process.poll() is None:
                self.signal(name, "KILL")
                process.wait(timeout=30)
            runc = ["runc", "--root", str(self.folder / "runc")]
            subprocess.run([*runc, "delete", "--force", name], capture_output=True)
        for container in self.containers:
            self.store.output("umount", container)
            self.store.output("rm", container)


@pytest.fixture
def runc(store: Store, tmp_path: Path) -> Iterator[Runc]:
    runner = Runc(store, tmp_path)
    try:
        yield runner
    finally:
        runner.close()


EXPECTED_USERS = {
    project.OPERATOR: "10001:10001",
    project.APP_BASE: "10001:10001",
    project.SAMPLE_APP: "10001:10001",
    project.PGBOUNCER: "10002:10002",
    project.LOAD_CLIENT: "65534:65534",
}


def test_every_project_image_is_built_into_an_archive_under_its_full_name(built: Built) -> None:
    assert set(built.archives) == set(EXPECTED_USERS)
    for tag, archive in built.archives.items():
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            assert member is not None
            index = json.load(member)
        names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert names == [normalized_reference(tag)]


@pytest.mark.parametrize("tag", sorted(EXPECTED_USERS))
def test_image_runs_as_its_numeric_non_root_user(
    built: Built, store: Store, runc: Runc, tag: str
) -> None:
    assert image_config(store, built.image(tag))["User"] == EXPECTED_USERS[tag]
    # The numbers the process really gets, and a root filesystem it cannot write.
    result = runc.run(
        built.image(tag), command=["sh", "-c", "id -u; id -g; touch /probe || echo read-only"]
    )
    uid, gid = EXPECTED_USERS[tag].split(":")
    assert result.output.split()[:3] == [uid, gid, "read-only"], result.output
    assert uid != "0" and gid != "0"


def test_operator_entrypoint_starts(built: Built, runc: Runc) -> None:
    result = runc.run(built.image(project.OPERATOR), args=["--help"])
    assert result.code == 0, result.output
    assert "usage: djangoscale run" in result.output


def test_app_base_has_every_server(built: Built, runc: Runc) -> None:
    servers = "import cheroot, gunicorn, gevent, waitress, granian, bjoern; print('servers ok')"
    result = runc.run(built.image(project.APP_BASE), command=["python", "-c", servers])
    assert result.code == 0, result.output
    assert "servers ok" in result.output
    result = runc.run(built.image(project.APP_BASE))  # its CMD: djangoscale serve --help
    assert result.code == 0, result.output
    assert "usage: djangoscale serve" in result.output


def test_sample_app_loads_its_wsgi_application(built: Built, runc: Runc) -> None:
    load = "import sampleproject.wsgi as w; print(type(w.application).__name__)"
    result = runc.run(built.image(project.SAMPLE_APP), command=["python", "-c", load])
    assert result.code == 0, result.output
    assert "WSGIHandler" in result.output


def test_pgbouncer_entrypoint_starts(built: Built, runc: Runc) -> None:
    result = runc.run(built.image(project.PGBOUNCER), args=["--version"])
    assert result.code == 0, result.output
    assert "PgBouncer 1.18" in result.output


def test_second_build_is_a_cache_hit(built: Built) -> None:
    messages: list[str] = []
    started = time.monotonic()
    again = project.project_images(messages.append)
    seconds = time.monotonic() - started
    print(f"cold or first: {built.seconds:.1f}s, cached: {seconds:.1f}s")
    assert again == built.archives
    assert not any("building" in message for message in messages), messages
    assert sum("cached" in message for message in messages) == len(EXPECTED_USERS)


CONTAINERD_CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
# Only the image store and runc are used here; the kubelet's CRI plugin is the node's business.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
"""


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A private containerd (Debian's, as the real node runs), stopped by its pid; its socket."""
    root = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))  # a socket path stays short
    (root / "config.toml").write_text(CONTAINERD_CONFIG.format(root=root))
    with (tmp_path / "containerd.log").open("w") as log:
        process = subprocess.Popen(
            ["containerd", "--config", str(root / "config.toml")], stdout=log, stderr=log
        )
    socket = root / "containerd.sock"
    try:
        wait_for(
            "containerd to answer",
            lambda: (
                subprocess.run(
                    ["ctr", "--address", str(socket), "version"], capture_output=True
                ).returncode
                == 0
            ),
            timeout=30,
        )
        yield socket
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_archive_imports_into_containerd_and_runs_as_its_user(
    built: Built, containerd: Path
) -> None:
    report = import_image(built.archives[project.PGBOUNCER], containerd)
    full = normalized_reference(project.PGBOUNCER)
    assert full in report
    ctr = ["ctr", "--address", str(containerd), "--namespace", CRI_NAMESPACE]
    listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True)
    assert full in listed.stdout.split()
    ran = subprocess.run(
        [*ctr, "run", "--rm", "--read-only", full, f"t-{uuid.uuid4().hex[:8]}", "id"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert ran.stdout.startswith("uid=10002(pgbouncer) gid=10002(pgbouncer)"), ran.stderr


def test_build_image_command_builds_a_users_app_from_app_base(
    built: Built, store: Store, tmp_path: Path
) -> None:
    """The README's three-line app image, through `djangoscale cluster build-image`: pip in its
    RUN step reaches the package index as pip on this machine does (index settings, CA)."""
    context = tmp_path / "app"
    context.mkdir()
    (context / "requirements.txt").write_text("six==1.16.0\n")
    (context / "build-id.txt").write_text(uuid.uuid4().hex)  # a new image every run
    (context / "Dockerfile").write_text(
        "FROM djangoscale/app-base:dev\nCOPY . .\n"
        "RUN pip install --no-cache-dir -r requirements.txt\n"
    )
    tag = "djangoscale-test/app:dev"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "djangoscale"), "cluster", "build-image", str(context),
         "--tag", tag, "--dir", str(tmp_path / "no-cluster")],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    archive = Path(done.stdout.split("\t")[1].strip())
    try:
        assert "no real node running" in done.stderr
        assert image_config(store, normalized_reference(tag))["User"] == "10001:10001"
        container = store.output("from", "--quiet", "--pull-never", normalized_reference(tag))
        try:
            ran = store.output(
                "run", container, "--", "python", "-c", "import six; print(six.__version__)"
            )
        finally:
            store.output("rm", container)
        assert ran == "1.16.0"
    finally:
        archive.unlink(missing_ok=True)
        archive.with_suffix(".id").unlink(missing_ok=True)
        store.output("rmi", normalized_reference(tag))


SAMPLE_SERVICE = {
    "apiVersion": "djangoscale.io/v1alpha1",
    "kind": "DjangoService",
    "metadata": {"name": "shop", "namespace": "web", "uid": "1234", "generation": 1},
    "spec": {
        "image": project.SAMPLE_APP,
        "wsgiApp": "sampleproject.wsgi:application",
        "replicas": {"min": 1, "max": 4},
        "database": {"secretName": "shop-db", "maxConnections": 20},
        "pgbouncer": {"enabled": True, "poolMode": "transaction", "image": project.PGBOUNCER},
    },
}


def answers(host: str, port: int, path: str) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except (OSError, urllib.error.URLError):
        return None


def test_sample_app_serves_and_drains_on_sigterm(built: Built, runc: Runc) -> None:
    """The image's own command, the launcher, serves the project on a read-only root as
    10001, and exits 0 on SIGTERM as the kubelet sends it."""
    port, metrics = free_ports(2)
    name, process = runc.start(
        built.image(project.SAMPLE_APP),
        env={
            "DJANGOSCALE_BIND": f"127.0.0.1:{port}",
            "DJANGOSCALE_METRICS_BIND": f"127.0.0.1:{metrics}",
        },
    )
    assert wait_for(
        "/healthz",
        lambda: answers("127.0.0.1", port, "/healthz") or process.poll() is not None,
        timeout=120,
    )
    assert process.poll() is None, process.stdout.read() if process.stdout else ""
    assert answers("127.0.0.1", port, "/hello/") == (200, b'{"hello": "world"}')
    # The launcher publishes its counters a moment after the request (each process flushes
    # every quarter of a second): poll rather than read once.
    wait_for(
        "the request in the launcher's metrics",
        lambda: b"djangoscale_requests_total"
        in (answers("127.0.0.1", metrics, "/metrics") or (0, b""))[1],
        timeout=30,
    )
    runc.signal(name, "TERM")
    assert process.wait(timeout=60) == 0


def test_pgbouncer_listens_with_the_operators_config_as_its_user(
    built: Built, runc: Runc, tmp_path: Path
) -> None:
    """pgbouncer starts on a read-only root as 10002:10002 with the config the operator
    renders, its Secret's files mounted as the kubelet mounts them: read-only at the same
    path, owned by root and the pod's fsGroup, mode 0440."""
    port = free_port()
    credentials = DatabaseCredentials("127.0.0.1", 5432, "shop", "shop", "not-secret")
    ini = render_ini(spec.parse(SAMPLE_SERVICE), credentials)
    ini = ini.replace(f"listen_port = {LISTEN_PORT}", f"listen_port = {port}")
    config = tmp_path / "pgbouncer-config"
    config.mkdir()
    (config / INI_KEY).write_text(ini)
    (config / USERLIST_KEY).write_text(render_userlist(credentials))
    for path in (config / INI_KEY, config / USERLIST_KEY):
        os.chown(path, 0, SECRET_FILE_GROUP)
        path.chmod(SECRET_FILE_MODE)
    name, process = runc.start(
        built.image(project.PGBOUNCER), binds={CONFIG_DIR: config}, fs_group=SECRET_FILE_GROUP
    )

    def listening() -> bool:
        if process.poll() is not None:
            return True
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2):
            return True
        return False

    assert wait_for("pgbouncer to listen", listening, timeout=60)
    assert process.poll() is None, process.stdout.read() if process.stdout else ""
    runc.signal(name, "INT")
    process.wait(timeout=60)
