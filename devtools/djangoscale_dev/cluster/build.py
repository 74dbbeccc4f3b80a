"""Build the control-plane binaries once per change of their Go sources, and cache them.

A cold build of kube-apiserver & co. takes tens of minutes on two cores, so the result is kept
outside the repository (every checkout and CI run on the machine shares it), keyed by a hash of
everything that decides the binaries: the Go module files, the Go sources, the build script
and the Go toolchain version. A change to any of them builds into a new key; an unchanged
tree reuses the binaries in a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from djangoscale_dev import DATA_DIR

BINARIES = ("k8s-local", "kwok")
BUILD_SCRIPT = "build.sh"
# Files under tests/cluster that decide what gets built.
INPUT_PATTERNS = ("go.mod", "go.sum", "*.go", BUILD_SCRIPT, "kwok/go.mod", "kwok/go.sum")


@dataclass(frozen=True)
class Binaries:
    """Paths of a finished build."""

    root: Path

    @property
    def k8s_local(self) -> Path:
        return self.root / "k8s-local"

    @property
    def kwok(self) -> Path:
        return self.root / "kwok"

    @property
    def stages(self) -> Path:
        """KWOK's stage YAMLs, copied by build.sh from the kwok version that was built."""
        return self.root / "stages"

    def complete(self) -> bool:
        return all((self.root / name).is_file() for name in BINARIES) and self.stages.is_dir()


def source_dir() -> Path:
    """The Go module to build: $DJANGOSCALE_CLUSTER_SRC, or the package's `data/cluster`."""
    override = os.environ.get("DJANGOSCALE_CLUSTER_SRC")
    if override:
        return Path(override).resolve()
    return DATA_DIR / "cluster"


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """$DJANGOSCALE_CLUSTER_CACHE, else $XDG_CACHE_HOME/djangoscale/cluster, else ~/.cache/..."""
    env = os.environ if environ is None else environ
    if env.get("DJANGOSCALE_CLUSTER_CACHE"):
        return Path(env["DJANGOSCALE_CLUSTER_CACHE"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "djangoscale" / "cluster"


def input_files(src: Path) -> list[Path]:
    """The files whose content decides the build, in a stable order."""
    found: set[Path] = set()
    for pattern in INPUT_PATTERNS:
        if "*" in pattern:
            found.update(p for p in src.rglob(pattern) if p.is_file())
        elif (src / pattern).is_file():
            found.add(src / pattern)
    return sorted(found, key=lambda p: p.relative_to(src).as_posix())


def cache_key(src: Path, toolchain: str) -> str:
    """Hash of the toolchain and every input file's path and content."""
    digest = hashlib.sha256()
    digest.update(f"toolchain\0{toolchain}\0".encode())
    for path in input_files(src):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def go_toolchain(go: str = "go") -> str:
    """`go env GOVERSION GOOS GOARCH`, which decides the binaries as much as the sources do."""
    out = subprocess.run(
        [go, "env", "GOVERSION", "GOOS", "GOARCH"], check=True, capture_output=True, text=True
    ).stdout
    return " ".join(out.split())


class BuildProgress:
    """Turns build.sh's output (`go build -v` package lines) into a one-line progress report."""

    TOTAL = re.compile(r"^==> (\S+): (\d+) packages")
    STEP = re.compile(r"^==> ")

    def __init__(self, emit: Callable[[str], None], interval: float = 5.0) -> None:
        self.emit = emit
        self.interval = interval
        self.target = ""
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if match := self.TOTAL.match(line):
            self.target, self.total, self.done = match.group(1), int(match.group(2)), 0
            return
        if self.STEP.match(line):
            self.emit(line[4:])
            return
        if line and " " not in line:  # go build -v prints one import path per line
            self.done += 1
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self.emit(self.status())

    def status(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        shown = f"{self.done}/{self.total}" if self.total else str(self.done)
        return f"{self.target}: compiled {shown} packages ({elapsed // 60}m{elapsed % 60:02d}s)"


def _stderr(message: str) -> None:
    print(f"[cluster build] {message}", file=sys.stderr, flush=True)


def run_build(src: Path, out: Path, emit: Callable[[str], None] = _stderr) -> None:
    """Run build.sh into `out`, reporting progress; raise with the log tail on failure."""
    progress = BuildProgress(emit)
    log_path = out.with_suffix(".log")
    tail: list[str] = []
    env = dict(os.environ, BUILD_VERBOSE="1")
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            ["bash", str(src / BUILD_SCRIPT), str(out)],
            cwd=src,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            progress.feed(line)
            tail = (tail + [line.rstrip("\n")])[-40:]
        code = proc.wait()
    if code != 0:
        raise RuntimeError(
            f"build.sh failed with exit code {code} (log: {log_path}):\n" + "\n".join(tail)
        )


def ensure_binaries(
    src: Path | None = None,
    cache: Path | None = None,
    emit: Callable[[str], None] = _stderr,
) -> Binaries:
    """Return cached binaries for the current sources, building them first if needed.

    A file lock keeps two concurrent callers (say, two pytest sessions) from building the
    same key twice; the build goes to a temporary folder renamed into place when complete.
    """
    src = src or source_dir()
    cache = cache or cache_root()
    key = cache_key(src, go_toolchain())
    binaries = Binaries(cache / key)
    if binaries.complete():
        return binaries
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binaries.complete():
            return binaries
        emit(
            f"building the control plane from {src} into {binaries.root} "
            "(about 5 minutes on 2 cores with an empty Go build cache)"
        )
        started = time.monotonic()
        staging = cache / f"{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        run_build(src, staging, emit)
        shutil.rmtree(binaries.root, ignore_errors=True)
        staging.rename(binaries.root)
        emit(f"built in {time.monotonic() - started:.0f}s")
    return binaries
