"""The project's own images, built from the repository's Dockerfiles on the local base.

Every Dockerfile here takes `ARG BASE_IMAGE` with a public default, so a user builds it with
Docker as always; on this machine the same file is built with BASE_IMAGE set to the local
Debian + Python base, and pip installs offline from a wheelhouse built on the host.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from djangoscale_dev import DATA_DIR
from djangoscale_dev.images.base import BASE_TAG, ensure_base
from djangoscale_dev.images.build import build_image
from djangoscale_dev.images.pip import PipAccess, offline_pip_access
from djangoscale_dev.images.store import BuildError, Emit, Store, cache_root, locked, stderr_emit

OPERATOR = "djangoscale/operator:dev"
APP_BASE = "djangoscale/app-base:dev"
SAMPLE_APP = "djangoscale/sampleapp:dev"
PGBOUNCER = "djangoscale/pgbouncer:dev"
# wrk in a pod: load from inside the cluster, to a Service's ClusterIP.
LOAD_CLIENT = "djangoscale/wrk:dev"
# The project's extras that the images install: the operator, and every server the launcher runs.
PROJECT_EXTRAS = "operator,serve,gunicorn,gevent,waitress,granian,bjoern"
# pip and the build backend of pyproject.toml, for installs from the source tree.
BUILD_REQUIREMENTS = ("pip", "setuptools>=68", "wheel")
# Wheels that the image's Python (Debian's 3.11.2) needs and a newer host Python does not:
# redis wants async-timeout before 3.11.3 (an environment marker pip evaluates on the host).
IMAGE_PYTHON_EXTRAS = ("async-timeout>=4.0.3",)
SAMPLE_REQUIREMENTS = Path("tests/sampleapp/requirements.txt")
# The Python of the base image (Debian bookworm's python3): wheels must fit it.
IMAGE_PYTHON = (3, 11)


def project_root() -> Path:
    """The repository: the root Dockerfile's context, and the folder that holds `docker/`
    (reached through the package's `data/docker` link; a link to the repository itself
    would make every tool that follows links walk it forever)."""
    return (DATA_DIR / "docker").resolve().parent


def wheelhouse_key(root: Path) -> str:
    """Hash of what decides the wheels: the project's metadata, the sample app's
    requirements, and the host's Python and platform that build them."""
    digest = hashlib.sha256()
    for part in (
        (root / "pyproject.toml").read_bytes(),
        (root / SAMPLE_REQUIREMENTS).read_bytes(),
        PROJECT_EXTRAS.encode(),
        " ".join(BUILD_REQUIREMENTS + IMAGE_PYTHON_EXTRAS).encode(),
        f"{sys.implementation.cache_tag} {platform.machine()} {platform.libc_ver()}".encode(),
    ):
        digest.update(part + b"\0")
    return digest.hexdigest()[:16]


def ensure_wheelhouse(store: Store, emit: Emit = stderr_emit) -> PipAccess:
    """Wheels of every third-party package the images install, built by the host's pip."""
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise BuildError(
            "the wheels for the images' Python 3.11 are built by the host's Python, which is "
            f"{platform.python_version()}: run with a Python 3.11"
        )
    root = project_root()
    key = wheelhouse_key(root)
    wheels = store.cache / "wheels" / key
    with locked(store.cache / "locks" / f"wheels-{key}.lock"):
        if not wheels.is_dir():
            emit(f"wheelhouse: pip wheel on the host into {wheels}")
            started = time.monotonic()
            partial = wheels.with_name(key + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--wheel-dir",
                    str(partial),
                    *BUILD_REQUIREMENTS,
                    *IMAGE_PYTHON_EXTRAS,
                    f"{root}[{PROJECT_EXTRAS}]",
                    "-r",
                    str(root / SAMPLE_REQUIREMENTS),
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise BuildError(f"pip wheel failed:\n{done.stderr[-4000:]}")
            # The images install the project from their own source tree, never this wheel.
            for own in partial.glob("djangoscale-*.whl"):
                own.unlink()
            partial.rename(wheels)
            emit(
                f"wheelhouse: {len(list(wheels.iterdir()))} wheels in "
                f"{time.monotonic() - started:.0f}s"
            )
    return offline_pip_access(store.cache, wheels, key)


@dataclass(frozen=True)
class ImageSpec:
    """One project image: its tag, context and Dockerfile (relative to the repository)."""

    tag: str
    context: str
    dockerfile: str
    build_args: Callable[[str], dict[str, str]] = field(default=lambda base: {"BASE_IMAGE": base})


PROJECT_IMAGES = (
    ImageSpec(OPERATOR, ".", "Dockerfile"),
    # Every wheel comes from the wheelhouse, so the builder stage needs no compiler.
    ImageSpec(
        APP_BASE,
        ".",
        "docker/app-base/Dockerfile",
        lambda base: {"BASE_IMAGE": base, "BUILD_PACKAGES": ""},
    ),
    ImageSpec(SAMPLE_APP, "tests/sampleapp", "docker/sampleapp/Dockerfile", lambda base: {}),
    ImageSpec(PGBOUNCER, "docker/pgbouncer", "docker/pgbouncer/Dockerfile"),
    ImageSpec(LOAD_CLIENT, "docker/wrk", "docker/wrk/Dockerfile"),
)


def project_images(
    emit: Emit = stderr_emit,
    store: Store | None = None,
    only: set[str] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Build (or find cached) the project's images, in dependency order; tag -> OCI archive.
    With `only`, those tags and the images they start FROM. `timings` gets the seconds each
    step took (the base, the wheelhouse, each image)."""
    store = store or Store(cache_root())
    timings = {} if timings is None else timings
    root = project_root()
    started = time.monotonic()
    base = ensure_base(store, emit)
    timings[BASE_TAG] = time.monotonic() - started
    started = time.monotonic()
    pip = ensure_wheelhouse(store, emit)
    timings["wheelhouse"] = time.monotonic() - started
    wanted = set(only) if only is not None else {spec.tag for spec in PROJECT_IMAGES}
    if SAMPLE_APP in wanted:
        wanted.add(APP_BASE)
    archives: dict[str, Path] = {}
    for spec in PROJECT_IMAGES:
        if spec.tag not in wanted:
            continue
        started = time.monotonic()
        archives[spec.tag] = build_image(
            root / spec.context,
            spec.tag,
            root / spec.dockerfile,
            spec.build_args(base),
            emit,
            pip=pip,
            store=store,
        )
        timings[spec.tag] = time.monotonic() - started
        emit(f"{spec.tag}: {timings[spec.tag]:.1f}s")
    return archives
