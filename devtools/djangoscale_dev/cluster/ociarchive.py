"""Write a one-layer OCI image archive from files on the host, with no image builder.

The real node's sandbox (pause) image is one static binary that sleeps forever; this makes it
from Debian's busybox-static in a few milliseconds, in the format `ctr images import` reads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"


@dataclass(frozen=True)
class ImageFile:
    source: Path
    path: str  # inside the image, without a leading slash
    mode: int = 0o755


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _entry(name: str, *, data: bytes | None = None, mode: int = 0o755) -> tuple[
    tarfile.TarInfo, bytes | None
]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 0
    if data is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data)
    return info, data


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def write_oci_archive(
    target: Path,
    name: str,
    files: list[ImageFile],
    *,
    entrypoint: list[str],
    user: str = "65535:65535",
) -> Path:
    """An OCI image layout as a tar at `target`, tagged `name` (a full, normalized reference)."""
    layer_members = []
    directories: set[str] = set()
    for item in files:
        parts = item.path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory not in directories:
                directories.add(directory)
                layer_members.append(_entry(directory))
        layer_members.append(_entry(item.path, data=item.source.read_bytes(), mode=item.mode))
    layer_tar = _tar_bytes(layer_members)
    layer_digest, layer = _blob(gzip.compress(layer_tar, mtime=0))
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {CONTAINERD_NAME_ANNOTATION: name, REF_NAME_ANNOTATION: name},
            }
        ],
    }
    members = [
        _entry("oci-layout", data=b'{"imageLayoutVersion":"1.0.0"}', mode=0o644),
        _entry("index.json", data=json.dumps(index).encode(), mode=0o644),
        _entry("blobs"),
        _entry("blobs/sha256"),
    ]
    for digest, data in (
        (layer_digest, layer),
        (config_digest, config_bytes),
        (manifest_digest, manifest_bytes),
    ):
        members.append(_entry(f"blobs/sha256/{digest.split(':')[1]}", data=data, mode=0o644))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_tar_bytes(members))
    return target
