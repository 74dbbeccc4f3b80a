"""`build_image(context, tag)`: any Dockerfile context built with buildah, cached by its inputs.

The key is a hash of everything that decides the image: the context files that the build
sees (`.dockerignore` applied as Docker applies it), the Dockerfile, the build arguments, the
ids of the images it starts `FROM`, and how pip inside a `RUN` step reaches packages. The same
inputs give the same OCI archive back in a second; any change builds a new one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from djangoscale_dev.images.pip import PipAccess, host_pip_access
from djangoscale_dev.images.store import (
    BuildError,
    Emit,
    Store,
    cache_root,
    ensure_loaded,
    locked,
    normalized_reference,
    record_image,
    stderr_emit,
)

# Archives kept per tag: other checkouts on the machine may build other versions of it.
KEPT_ARCHIVES = 3
_ARG = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# An image reference with a tag: [registry[:port]/]name[/name...][:tag], names in lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = re.compile(
    rf"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?$"
)


def valid_tag(tag: str) -> bool:
    return _TAG.match(tag) is not None


@dataclass(frozen=True)
class IgnoreRule:
    text: str
    pattern: re.Pattern[str]
    exclude: bool

    def may_match_under(self, folder: str) -> bool:
        """Whether the rule could match something inside `folder` (component by component)."""
        wanted = self.text.split("/")
        for index, part in enumerate(folder.split("/")):
            if index >= len(wanted) or wanted[index] == "**":
                return index < len(wanted)
            if not fnmatch.fnmatchcase(part, wanted[index]):
                return False
        return True


def _clean(pattern: str) -> str:
    cleaned = posixpath.normpath(pattern.strip().lstrip("/"))
    return "" if cleaned == "." else cleaned


def _translate(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` stop at `/`, `**` crosses directories."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out += re.escape(pattern[i:])
                break
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    """The rules of a `.dockerignore`, in order (comments and blank lines dropped)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        cleaned = _clean(line if exclude else line[1:])
        if cleaned:
            rules.append(IgnoreRule(cleaned, _translate(cleaned), exclude))
    return rules


def ignored(path: str, rules: list[IgnoreRule]) -> bool:
    """Whether the context leaves `path` out. As Docker does: a rule matches a path or any
    of its parent folders, and the last rule that matches decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for rule in rules:
        if any(rule.pattern.match(prefix) for prefix in prefixes):
            result = rule.exclude
    return result


def context_files(context: Path) -> list[str]:
    """Paths (relative, POSIX) of the files and links a build of `context` can see."""
    ignore_file = context / ".dockerignore"
    rules = parse_dockerignore(ignore_file.read_text()) if ignore_file.is_file() else []
    found = []
    for folder, dirs, files in os.walk(context):
        base = Path(folder).relative_to(context).as_posix()
        prefix = "" if base == "." else base + "/"
        # A folder left out whole, with no `!` rule that could bring a child back, is skipped.
        dirs[:] = [
            d
            for d in dirs
            if not ignored(prefix + d, rules)
            or any(not rule.exclude and rule.may_match_under(prefix + d) for rule in rules)
        ]
        links = [d for d in dirs if (Path(folder) / d).is_symlink()]
        for name in sorted(files + links):
            relative = prefix + name
            if not ignored(relative, rules):
                found.append(relative)
        dirs[:] = sorted(d for d in dirs if d not in links)
    return sorted(found)


def digest_context(context: Path) -> str:
    """Hash of every visible file's path, mode and content (a link's target, not followed)."""
    digest = hashlib.sha256()
    for relative in context_files(context):
        path = context / relative
        digest.update(relative.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link\0" + os.readlink(path).encode() + b"\0")
            continue
        digest.update(f"{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def from_references(dockerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile starts `FROM`, with `ARG` defaults and build args applied;
    earlier stages (`FROM builder`) and `scratch` are left out."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    refs: list[str] = []
    text = re.sub(r"\\\n", " ", dockerfile)
    for raw in text.splitlines():
        words = raw.strip().split()
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        if instruction == "ARG" and not refs and len(words) > 1:
            name, _, default = words[1].partition("=")
            values[name] = build_args.get(name, default.strip("\"'"))
        elif instruction == "FROM":
            args = [w for w in words[1:] if not w.startswith("--")]
            if not args:
                continue
            image = _ARG.sub(lambda m: values.get(m.group(1) or m.group(2), ""), args[0])
            if len(args) >= 3 and args[1].upper() == "AS":
                stages.add(args[2].lower())
            if image.lower() not in stages and image != "scratch" and image not in refs:
                refs.append(image)
    return refs


def cache_key(
    context_digest: str,
    dockerfile: str,
    build_args: Mapping[str, str],
    base_ids: Mapping[str, str],
    pip: str,
) -> str:
    """Hash of the inputs of one image build; see the module docstring."""
    digest = hashlib.sha256()
    for part in (
        "context",
        context_digest,
        "dockerfile",
        dockerfile,
        "args",
        *(f"{k}={v}" for k, v in sorted(build_args.items())),
        "from",
        *(f"{k}={v}" for k, v in sorted(base_ids.items())),
        "pip",
        pip,
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def archive_name(tag: str) -> str:
    """A file name for the tag: `djangoscale/app-base:dev` -> `djangoscale_app-base_dev`."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", tag)


_PROGRESS_LINE = re.compile(r"^(\[\d+/\d+\] )?(STEP \d+/\d+|COMMIT |Successfully tagged)")


def _show_build_line(line: str) -> bool:
    """buildah's step lines (`[1/2] STEP 3/7: COPY ...` in a multi-stage build)."""
    return _PROGRESS_LINE.match(line) is not None


def _prune_archives(store: Store, slug: str, keep: Path) -> None:
    others = sorted(
        (p for p in store.archives.glob(f"{slug}-*.tar") if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[KEPT_ARCHIVES - 1 :]:
        old.unlink(missing_ok=True)
        old.with_suffix(".id").unlink(missing_ok=True)


def build_image(
    context: Path,
    tag: str,
    dockerfile: Path | None = None,
    build_args: Mapping[str, str] | None = None,
    emit: Emit = stderr_emit,
    *,
    pip: PipAccess | None = None,
    store: Store | None = None,
) -> Path:
    """Build `context` into an OCI archive named `tag` (or find it cached) and return its path.

    The store keeps the image under its full name too, so later builds can go `FROM` it.
    `pip` says how pip inside `RUN` steps reaches packages (default: as pip does on this
    machine, see `images.pip`).
    """
    context = context.resolve()
    dockerfile = (dockerfile or context / "Dockerfile").resolve()
    if not valid_tag(tag):
        raise BuildError(f"--tag {tag!r}: not an image name such as myapp:dev")
    if not context.is_dir():
        raise BuildError(f"CONTEXT {context}: not a folder")
    if not dockerfile.is_file():
        raise BuildError(f"--file {dockerfile}: no such Dockerfile")
    args = dict(build_args or {})
    store = store or Store(cache_root())
    store.prepare()
    pip = pip or host_pip_access(store.cache)
    text = dockerfile.read_text()
    base_ids = {ref: store.image_id(ref) or "" for ref in from_references(text, args)}
    key = cache_key(digest_context(context), text, args, base_ids, pip.identity)
    slug = archive_name(tag)
    archive = store.archives / f"{slug}-{key}.tar"
    with locked(store.cache / "locks" / f"{slug}-{key}.lock"):
        if archive.is_file():
            ensure_loaded(store, archive, tag)
            emit(f"{tag}: cached ({archive.name})")
            return archive
        emit(f"{tag}: building {dockerfile} in {context}")
        started = time.monotonic()
        command = ["bud", "--pull=false", "--file", str(dockerfile)]
        command += ["--tag", normalized_reference(tag)]
        for name, value in sorted(args.items()):
            command += ["--build-arg", f"{name}={value}"]
        for volume in pip.volumes:
            command += ["--volume", volume]
        store.stream([*command, str(context)], f"{slug}-{key}.log", emit, _show_build_line)
        record_image(store, tag, archive)
        _prune_archives(store, slug, archive)
        # vfs keeps whole copies of every layer: drop the images no tag names any more. One
        # that another build is using stays; that is no reason to fail this build.
        try:
            store.output("rmi", "--prune")
        except BuildError as error:
            emit(f"left unused images in the store: {error}")
        emit(f"{tag}: built in {time.monotonic() - started:.0f}s -> {archive}")
    return archive
