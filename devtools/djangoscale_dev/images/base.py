"""The Debian base image: a debootstrap root filesystem from the machine's own apt mirror.

No registry is reachable for `FROM python:...`, but the Debian mirror that apt uses is. So the
base of every image built here is Debian `bookworm` with its python3 (3.11, the version the
public base of the root Dockerfile has), made by debootstrap and committed with buildah.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from djangoscale_dev.images.store import (
    BuildError,
    Emit,
    Store,
    ensure_loaded,
    locked,
    normalized_reference,
    record_image,
    run_logged,
    stderr_emit,
)

SUITE = "bookworm"
BASE_TAG = "djangoscale/debian-python:bookworm"
# Debian's python3 for the Python images, with venv (the images install into a venv) and the
# CA certificates a public python image carries.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Image config of the public Debian and Python images: a PATH with sbin, a UTF-8 locale.
IMAGE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
)
# Left out of the image: package caches debootstrap leaves behind.
PRUNED = ("var/cache/apt/archives", "var/lib/apt/lists")
APT_DIR = Path("/etc/apt")


class MirrorNotFound(RuntimeError):
    """No apt source of the machine names a Debian mirror for the suite."""


def deb822_paragraphs(text: str) -> list[dict[str, str]]:
    """Fields of each paragraph of a deb822 `.sources` file (comments dropped, folded lines
    joined)."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                paragraphs.append(current)
            current, last = {}, ""
            continue
        if raw[0] in " \t" and last:
            current[last] += " " + raw.strip()
            continue
        name, _, value = raw.partition(":")
        last = name.strip().lower()
        current[last] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def mirror_from_sources(text: str, suite: str = SUITE) -> str | None:
    """The first `deb` URI of a deb822 sources file that serves `suite` itself."""
    for fields in deb822_paragraphs(text):
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def mirror_from_list(text: str, suite: str = SUITE) -> str | None:
    """The first `deb URI SUITE ...` line of a one-line-style sources.list."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and words[1] == suite:
            return words[0]
    return None


def apt_mirror(apt_dir: Path = APT_DIR, suite: str = SUITE) -> str:
    """The Debian mirror apt uses on this machine for `suite`, read from its sources."""
    candidates = sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for path in candidates:
        if mirror := mirror_from_sources(path.read_text(), suite):
            return mirror
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file() and (mirror := mirror_from_list(path.read_text(), suite)):
            return mirror
    raise MirrorNotFound(
        f"no apt source in {apt_dir}/sources.list.d/*.sources or sources.list serves "
        f"Debian {suite}: debootstrap needs that mirror"
    )


def debootstrap_version() -> str:
    done = subprocess.run(["debootstrap", "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def base_key(mirror: str, tool_version: str) -> str:
    """Hash of what decides the root filesystem: mirror, suite, packages, debootstrap."""
    text = "\0".join([mirror, SUITE, *PACKAGES, *IMAGE_ENV, *PRUNED, tool_version])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_base(store: Store, emit: Emit = stderr_emit) -> str:
    """Make sure the store holds the base image, from its cached archive or built afresh;
    return its tag."""
    if shutil.which("debootstrap") is None or shutil.which("buildah") is None:
        raise BuildError("debootstrap and buildah are needed (scripts/setup.sh installs them)")
    store.prepare()
    mirror = apt_mirror()
    key = base_key(mirror, debootstrap_version())
    archive = store.archives / f"debian-python-{key}.tar"
    with locked(store.cache / "locks" / f"debian-python-{key}.lock"):
        if archive.is_file():
            ensure_loaded(store, archive, BASE_TAG)
            return BASE_TAG
        emit(f"base image: debootstrap {SUITE} from {mirror} (about 2 minutes)")
        work = store.cache / "tmp" / f"debian-python-{key}"
        shutil.rmtree(work, ignore_errors=True)
        rootfs = work / "rootfs"
        run_logged(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                mirror,
            ],
            store.logs / f"debian-python-{key}.log",
            emit,
            show=lambda line: (
                line.startswith("I: Retrieving Packages")
                or line.startswith("I: Installing core")
                or line.startswith("I: Base system installed")
            ),
        )
        for pruned in PRUNED:
            for entry in (rootfs / pruned).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tarball = work / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "-cf", str(tarball), "."],
            check=True,
        )
        container = store.output("from", "--quiet", "scratch")
        try:
            store.output("add", "--quiet", container, str(tarball), "/")
            config = ["config", "--cmd", "/bin/bash"]
            for env in IMAGE_ENV:
                config += ["--env", env]
            store.output(*config, container)
            store.output("commit", "--quiet", container, normalized_reference(BASE_TAG))
        finally:
            store.output("rm", container)
        record_image(store, BASE_TAG, archive)
        shutil.rmtree(work, ignore_errors=True)
        emit(f"base image {BASE_TAG} ready")
    return BASE_TAG
