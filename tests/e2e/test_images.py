"""The project's images, built here without Docker, start as the restricted profile runs them.

Each image runs under runc the way the kubelet would start it under the "restricted" Pod
Security Standard: its own numeric user (never root, never group 0 for pgbouncer), a
read-only root filesystem with /tmp the one writable place, no capabilities, no new
privileges. A second build of the same inputs is a cache hit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from djangoscale_dev.images import project
from djangoscale_dev.images.containerd import CRI_NAMESPACE, import_image
from djangoscale_dev.images.store import Store, cache_root, normalized_reference
from tests.fixtures.polling import wait_for

RUN_TIMEOUT = 120


@dataclass
class Built:
    archives: dict[str, Path]
    seconds: float
    messages: list[str]


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


def image_config(store: Store, tag: str) -> dict[str, Any]:
    text = store.output("inspect", "--type", "image", normalized_reference(tag))
    config: dict[str, Any] = json.loads(text)["OCIv1"]["config"]
    return config


@pytest.fixture(scope="module")
def store() -> Store:
    return Store(cache_root())


@pytest.fixture
def run_image(store: Store, tmp_path: Path) -> Iterator[Any]:
    """Run an image's entrypoint (with `args` for its command) under runc, as a restricted
    pod does: the image's numeric user, read-only root, a tmpfs /tmp, no capabilities."""
    containers: list[str] = []

    def run(tag: str, args: list[str] | None = None, command: list[str] | None = None) -> RunResult:
        config = image_config(store, tag)
        container = store.output("from", "--quiet", "--pull-never", normalized_reference(tag))
        containers.append(container)
        rootfs = store.output("mount", container)
        uid, _, gid = config["User"].partition(":")
        argv = command or (config.get("Entrypoint") or []) + (
            args if args is not None else config.get("Cmd") or []
        )
        bundle = tmp_path / f"bundle-{len(containers)}"
        bundle.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["process"].update(
            terminal=False,
            args=argv,
            env=config.get("Env") or [],
            cwd=config.get("WorkingDir") or "/",
            user={"uid": int(uid), "gid": int(gid or 0)},
            noNewPrivileges=True,
            capabilities={key: [] for key in spec["process"]["capabilities"]},
        )
        spec["mounts"].append(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        )  # fmt: skip
        (bundle / "config.json").write_text(json.dumps(spec))
        name = f"djangoscale-test-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(
            ["runc", "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle), name],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        return RunResult(done.returncode, done.stdout + done.stderr)

    yield run
    for container in containers:
        store.output("umount", container)
        store.output("rm", container)


EXPECTED_USERS = {
    project.OPERATOR: "10001:10001",
    project.APP_BASE: "10001:10001",
    project.SAMPLE_APP: "10001:10001",
    project.PGBOUNCER: "10002:10002",
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
    built: Built, store: Store, run_image: Any, tag: str
) -> None:
    assert image_config(store, tag)["User"] == EXPECTED_USERS[tag]
    # The numbers the process really gets, and a root filesystem it cannot write.
    result = run_image(tag, command=["sh", "-c", "id -u; id -g; touch /probe || echo read-only"])
    uid, gid = EXPECTED_USERS[tag].split(":")
    assert result.output.split()[:3] == [uid, gid, "read-only"], result.output
    assert uid != "0" and gid != "0"


def test_operator_entrypoint_starts(built: Built, run_image: Any) -> None:
    result = run_image(project.OPERATOR, args=["--help"])
    assert result.code == 0, result.output
    assert "usage: djangoscale run" in result.output


def test_app_base_has_every_server(built: Built, run_image: Any) -> None:
    servers = "import cheroot, gunicorn, gevent, waitress, granian, bjoern; print('servers ok')"
    result = run_image(project.APP_BASE, command=["python", "-c", servers])
    assert result.code == 0, result.output
    assert "servers ok" in result.output
    result = run_image(project.APP_BASE)  # its CMD: djangoscale serve --help
    assert result.code == 0, result.output
    assert "usage: djangoscale serve" in result.output


def test_sample_app_loads_its_wsgi_application(built: Built, run_image: Any) -> None:
    load = "import sampleproject.wsgi as w; print(type(w.application).__name__)"
    result = run_image(project.SAMPLE_APP, command=["python", "-c", load])
    assert result.code == 0, result.output
    assert "WSGIHandler" in result.output


def test_pgbouncer_entrypoint_starts(built: Built, run_image: Any) -> None:
    result = run_image(project.PGBOUNCER, args=["--version"])
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
        assert image_config(store, tag)["User"] == "10001:10001"  # app-base's user
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
