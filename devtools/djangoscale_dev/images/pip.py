"""How pip inside a build's `RUN` step reaches packages.

A `RUN` step inherits nothing of this machine's pip setup: not the environment (PIP_CERT,
PIP_INDEX_URL, ...), not /etc/pip.conf, not the CA bundle that the machine's egress proxy
needs. So pip's configuration is passed in deliberately, as a pip.conf bind-mounted over
/etc/pip.conf for the `RUN` steps only (`buildah bud --volume`): nothing of it lands in the
image, and the Dockerfile stays the one users build with Docker.

- The project's images install offline (`no-index` plus a wheelhouse built on the host, where
  pip works as configured): every build of the same inputs installs the same wheels, without
  the network, and bjoern (no wheel on PyPI) is compiled once on the host instead of needing
  a compiler in the image.
- Any other context gets the host's own index settings and CA bundle.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

WHEELS_MOUNT = "/run/djangoscale/wheels"
CA_MOUNT = "/run/djangoscale/pip-ca.pem"
# Settings of the host's pip that a build may use as they are (paths are mounted, not passed).
PASSED_SETTINGS = ("index-url", "extra-index-url", "trusted-host", "default-timeout", "timeout")
_CONFIG_LINE = re.compile(r"^[^.]*\.([\w-]+)='(.*)'$")


@dataclass(frozen=True)
class PipAccess:
    """`buildah bud --volume` arguments, and a text that changes whenever what pip reaches
    changes (part of the image's cache key)."""

    volumes: tuple[str, ...]
    identity: str


def _write_conf(cache: Path, text: str) -> Path:
    folder = cache / "pip"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pip-{hashlib.sha256(text.encode()).hexdigest()[:16]}.conf"
    if not path.is_file():
        path.write_text(text)
    return path


def offline_pip_access(cache: Path, wheelhouse: Path, wheelhouse_key: str) -> PipAccess:
    """pip installs from the wheelhouse only, never from an index."""
    conf = _write_conf(cache, f"[global]\nno-index = true\nfind-links = {WHEELS_MOUNT}\n")
    return PipAccess(
        volumes=(f"{conf}:/etc/pip.conf:ro", f"{wheelhouse}:{WHEELS_MOUNT}:ro"),
        identity=f"offline wheelhouse {wheelhouse_key}",
    )


def parse_pip_config(listing: str) -> dict[str, str]:
    """Settings from `pip config list` (`:env:.cert='...'`, `global.cert='...'`); for a
    setting given twice the first line wins: pip lists the environment, which overrides its
    files, first."""
    settings: dict[str, str] = {}
    for line in listing.splitlines():
        if match := _CONFIG_LINE.match(line.strip()):
            settings.setdefault(match.group(1), match.group(2))
    return settings


def host_pip_config(settings: dict[str, str]) -> tuple[str, tuple[str, ...], str]:
    """pip.conf text, volumes and identity for the host's settings."""
    lines = ["[global]"]
    volumes: list[str] = []
    identity = ""
    cert = settings.get("cert")
    if cert and Path(cert).is_file():
        lines.append(f"cert = {CA_MOUNT}")
        volumes.append(f"{cert}:{CA_MOUNT}:ro")
        identity += hashlib.sha256(Path(cert).read_bytes()).hexdigest()
    lines += [f"{name} = {settings[name]}" for name in PASSED_SETTINGS if name in settings]
    text = "\n".join(lines) + "\n"
    return text, tuple(volumes), text + identity


def host_pip_access(cache: Path) -> PipAccess:
    """pip reaches the index as pip on this machine does: its index settings and CA bundle."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    text, volumes, identity = host_pip_config(parse_pip_config(listing))
    conf = _write_conf(cache, text)
    return PipAccess(volumes=(f"{conf}:/etc/pip.conf:ro", *volumes), identity=identity)
