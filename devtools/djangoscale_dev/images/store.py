"""The private buildah store and the cache folder that hold every image built here.

buildah keeps its images under `--root`/`--runroot`; both live in the cache folder so that no
system path is touched and every checkout on the machine shares one store. `vfs` needs no
kernel overlay support and `chroot` isolation no user namespaces, which is what this kind of
machine allows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

Emit = Callable[[str], None]

# Accept any image for the local transports we use (oci-archive, containers-storage); the
# system policy file may be missing or stricter, and nothing is pulled from a registry.
SIGNATURE_POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'
# Lines of a build's log kept for an error message.
LOG_TAIL_LINES = 40
# Seconds without a step line after which a build says it is still running.
HEARTBEAT_SECONDS = 15.0


def stderr_emit(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """$DJANGOSCALE_IMAGES_CACHE, else $XDG_CACHE_HOME/djangoscale/images, else ~/.cache/..."""
    env = os.environ if environ is None else environ
    if env.get("DJANGOSCALE_IMAGES_CACHE"):
        return Path(env["DJANGOSCALE_IMAGES_CACHE"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "djangoscale" / "images"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive file lock: two processes never build the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class BuildError(RuntimeError):
    """A build step failed; the message carries the tail of its log."""


@dataclass(frozen=True)
class Store:
    """One buildah store under `cache`: storage, run state, archives, logs."""

    cache: Path

    @property
    def storage(self) -> Path:
        return self.cache / "storage"

    @property
    def runroot(self) -> Path:
        return self.cache / "run"

    @property
    def archives(self) -> Path:
        return self.cache / "archives"

    @property
    def logs(self) -> Path:
        return self.cache / "logs"

    @property
    def policy(self) -> Path:
        return self.cache / "policy.json"

    def prepare(self) -> None:
        for folder in (self.storage, self.runroot, self.archives, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.policy.is_file():
            self.policy.write_text(SIGNATURE_POLICY)

    def command(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.storage),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
            *args,
        ]

    def environment(self) -> dict[str, str]:
        return dict(os.environ, BUILDAH_ISOLATION="chroot", STORAGE_DRIVER="vfs")

    def output(self, *args: str) -> str:
        """Run a short buildah command and return its stdout."""
        done = subprocess.run(
            self.command(*args), env=self.environment(), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BuildError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def image_id(self, reference: str) -> str | None:
        """The full id of a stored image, or None when the store does not hold it."""
        done = subprocess.run(
            self.command("inspect", "--type", "image", "--format", "{{.FromImageID}}", reference),
            env=self.environment(),
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() or None if done.returncode == 0 else None

    def stream(
        self, args: Sequence[str], log_name: str, emit: Emit, show: Callable[[str], bool]
    ) -> None:
        """Run a long buildah command, log all of it, print the lines `show` picks."""
        run_logged(self.command(*args), self.logs / log_name, emit, show, env=self.environment())


def run_logged(
    argv: Sequence[str],
    log_path: Path,
    emit: Emit,
    show: Callable[[str], bool],
    env: dict[str, str] | None = None,
) -> None:
    """Run a command with its output in `log_path`; raise with the log tail on failure.

    The lines `show` picks are printed as they come, and while none comes (a long `RUN`
    step) a line every HEARTBEAT_SECONDS says the step is still running.
    """
    started = time.monotonic()
    tail: list[str] = []
    current = ["started"]
    finished = threading.Event()

    def heartbeat() -> None:
        while not finished.wait(HEARTBEAT_SECONDS):
            emit(f"still at {current[0][:80]} ({time.monotonic() - started:.0f}s)")

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            list(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        ticker = threading.Thread(target=heartbeat, daemon=True)
        ticker.start()
        try:
            for line in proc.stdout:
                log.write(line)
                line = line.rstrip("\n")
                if show(line):
                    current[0] = line
                    emit(f"{line} ({time.monotonic() - started:.0f}s)")
                tail = (tail + [line])[-LOG_TAIL_LINES:]
            code = proc.wait()
        finally:
            finished.set()
            ticker.join()
    if code != 0:
        raise BuildError(
            f"{argv[0]} failed with exit code {code} (log: {log_path}):\n" + "\n".join(tail)
        )


def normalized_reference(tag: str) -> str:
    """The name containerd and the kubelet use for `tag`: `djangoscale/app-base:dev` is
    `docker.io/djangoscale/app-base:dev`, `busybox` is `docker.io/library/busybox:latest`."""
    name, _, digest = tag.partition("@")
    first, slash, rest = name.partition("/")
    if not slash:
        first, rest = "docker.io", f"library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        first, rest = "docker.io", name
    if ":" not in rest.rsplit("/", 1)[-1] and not digest:
        rest += ":latest"
    return f"{first}/{rest}" + (f"@{digest}" if digest else "")


def id_file(archive: Path) -> Path:
    return archive.with_suffix(".id")


def record_image(store: Store, tag: str, archive: Path) -> None:
    """Write the stored image `tag` to `archive` (an OCI archive under its full name) and
    note its id beside it. A temporary name renamed into place: a reader never sees half."""
    tag = normalized_reference(tag)
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    # Uncompressed layers: gzip would cost more CPU than the disk it saves on this machine.
    store.output(
        "push",
        "--quiet",
        "--disable-compression",
        "--signature-policy",
        str(store.policy),
        tag,
        f"oci-archive:{partial}:{tag}",
    )
    image_id = store.image_id(tag)
    if image_id is None:
        raise BuildError(f"{tag}: not in the store after the build")
    id_file(archive).write_text(image_id + "\n")
    partial.rename(archive)


def ensure_loaded(store: Store, archive: Path, tag: str) -> None:
    """Make the store hold `tag` as the archive has it (a wiped store, or another build that
    moved the tag, loads it again): later builds go `FROM` it."""
    tag = normalized_reference(tag)
    recorded = id_file(archive).read_text().strip() if id_file(archive).is_file() else None
    if recorded is not None and store.image_id(tag) == recorded:
        return
    pulled = store.output(
        "pull", "--quiet", "--signature-policy", str(store.policy), f"oci-archive:{archive}"
    )
    loaded = pulled.split()[-1]
    store.output("tag", loaded, tag)
    id_file(archive).write_text(loaded + "\n")
