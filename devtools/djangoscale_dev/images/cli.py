"""`djangoscale cluster build-image` and `build-images`: build images here and load them into
the real node's containerd, as `kind load` does.

Only argparse at import time: `cluster.cli` imports this module to build its parser.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# The real node's containerd socket, under the cluster directory.
NODE_SOCKET = Path("node/containerd/containerd.sock")


def build_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--build-arg {text!r}: expected NAME=VALUE")
    return name, value


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], dir_default: Path
) -> None:
    one = sub.add_parser(
        "build-image",
        help="build a Dockerfile context without Docker and load it into the real node",
    )
    one.add_argument("context", type=Path, help="the build context (a folder)")
    one.add_argument("--tag", "-t", required=True, help="image name, e.g. myapp:dev")
    one.add_argument("--file", "-f", type=Path, help="the Dockerfile (default: CONTEXT/Dockerfile)")
    one.add_argument(
        "--build-arg",
        type=build_arg,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build argument (repeatable)",
    )
    every = sub.add_parser(
        "build-images",
        help="build the project's images (operator, app-base, sampleapp, pgbouncer) and load "
        "them into the real node",
    )
    for command in (one, every):
        command.add_argument(
            "--dir",
            type=Path,
            default=dir_default,
            help="cluster directory whose real node gets the images (default: %(default)s)",
        )


def _emit(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _load(archives: dict[str, Path], cluster_dir: Path) -> None:
    from djangoscale_dev.images.containerd import import_image

    socket = cluster_dir / NODE_SOCKET
    if not socket.exists():
        _emit(f"no real node running in {cluster_dir}: built only")
        return
    for tag, archive in archives.items():
        import_image(archive, socket)
        _emit(f"{tag}: loaded into the node's containerd")


def run(args: argparse.Namespace) -> int:
    from djangoscale_dev.images import project
    from djangoscale_dev.images.build import build_image, from_references
    from djangoscale_dev.images.store import BuildError

    try:
        if args.action == "build-images":
            archives = project.project_images(_emit)
        else:
            dockerfile = args.file or args.context / "Dockerfile"
            build_args = dict(args.build_arg)
            text = dockerfile.read_text() if dockerfile.is_file() else ""
            # An app image FROM the project's app-base gets it built (or found cached) first.
            wanted = set(from_references(text, build_args)) & {
                spec.tag for spec in project.PROJECT_IMAGES
            }
            if wanted:
                project.project_images(_emit, only=wanted)
            started = time.monotonic()
            archive = build_image(args.context, args.tag, args.file, build_args, _emit)
            _emit(f"{args.tag}: {time.monotonic() - started:.1f}s")
            archives = {args.tag: archive}
        _load(archives, args.dir)
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    for tag, archive in archives.items():
        print(f"{tag}\t{archive}")
    return 0
