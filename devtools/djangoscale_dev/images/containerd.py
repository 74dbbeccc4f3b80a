"""Put a built image into a containerd, the way `kind load` does: `ctr images import`.

The kubelet finds images in containerd's `k8s.io` namespace under their full names
(`docker.io/djangoscale/app-base:dev`), which is the name the archives carry.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from djangoscale_dev.images.store import BuildError

# The containerd namespace of the CRI plugin, where the kubelet looks for images.
CRI_NAMESPACE = "k8s.io"


def import_command(archive: Path, socket: Path) -> list[str]:
    # --all-platforms: the archive's index names no platform, which ctr would filter out.
    return [
        "ctr", "--address", str(socket), "--namespace", CRI_NAMESPACE,
        "images", "import", "--all-platforms", str(archive),
    ]  # fmt: skip


def import_image(archive: Path, socket: Path) -> str:
    """Import an OCI archive into the containerd listening on `socket`; return ctr's report."""
    if shutil.which("ctr") is None:
        raise BuildError("ctr: not installed (scripts/setup.sh installs containerd)")
    if not socket.exists():
        raise BuildError(f"containerd socket {socket}: not there (is the node running?)")
    done = subprocess.run(import_command(archive, socket), capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"ctr images import {archive}: {done.stderr.strip()}")
    return done.stdout.strip()
