"""Image building without Docker: the apt mirror, `.dockerignore`, and the cache key, which
must change with each input of a build and not otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from djangoscale_dev.images import store as store_module
from djangoscale_dev.images.base import (
    MirrorNotFound,
    apt_mirror,
    mirror_from_list,
    mirror_from_sources,
)
from djangoscale_dev.images.build import (
    build_image,
    cache_key,
    context_files,
    digest_context,
    from_references,
    ignored,
    parse_dockerignore,
    valid_tag,
)
from djangoscale_dev.images.pip import host_pip_config, parse_pip_config
from djangoscale_dev.images.store import BuildError, Store, normalized_reference

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_comes_from_the_paragraph_that_serves_the_suite() -> None:
    assert mirror_from_sources(DEBIAN_SOURCES) == "http://deb.debian.org/debian"


def test_mirror_skips_commented_uris_disabled_and_source_paragraphs() -> None:
    text = """\
Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb
# URIs: http://commented.example/debian
URIs:
 http://mirror.example/debian
Suites: bookworm
"""
    assert mirror_from_sources(text) == "http://mirror.example/debian"


def test_no_mirror_for_another_suite() -> None:
    assert mirror_from_sources(DEBIAN_SOURCES, suite="trixie") is None


def test_mirror_from_one_line_sources_list() -> None:
    text = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian bookworm main
"""
    assert mirror_from_list(text) == "http://mirror.example/debian"


def test_apt_mirror_reads_sources_d_then_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://list.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://list.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    assert apt_mirror(tmp_path) == "http://deb.debian.org/debian"


def test_apt_mirror_missing_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    with pytest.raises(MirrorNotFound, match="sources.list.d/\\*.sources or sources.list"):
        apt_mirror(tmp_path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pyproject.toml", False),
        ("operator/djangoscale/cli.py", False),
        ("operator/djangoscale/__pycache__/cli.cpython-311.pyc", True),
        (".venv/bin/python", True),
        ("tests/unit/test_x.py", True),
        ("docs/index.md", True),
        ("docker/app-base/Dockerfile", False),
        ("x.egg-info/PKG-INFO", True),
    ],
)
def test_dockerignore_allow_list(path: str, expected: bool) -> None:
    rules = parse_dockerignore(
        "# only these\n*\n!pyproject.toml\n!operator/\n!/docker\n**/__pycache__\n*.egg-info\n"
    )
    assert ignored(path, rules) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # `*` stops at a folder
        ("**/*.md", "docs/a/README.md", True),
        ("docs", "docs/a/README.md", True),  # a folder takes its contents along
        ("doc?", "docs", True),
        ("[a-c]*.txt", "b.txt", True),
        ("[!a-c]*.txt", "b.txt", False),
        ("./build/", "build/out.o", True),
    ],
)
def test_dockerignore_patterns(pattern: str, path: str, expected: bool) -> None:
    assert ignored(path, parse_dockerignore(pattern)) is expected


def test_dockerignore_last_matching_rule_wins() -> None:
    rules = parse_dockerignore("logs\n!logs/keep.log\nlogs/keep.log\n")
    assert ignored("logs/keep.log", rules)
    assert ignored("logs/keep.log", parse_dockerignore("logs\n!logs/keep.log\n")) is False


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "views.py").write_text("x = 1\n")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "big.bin").write_bytes(b"\0" * 10)
    (tmp_path / "notes.md").write_text("notes\n")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "a.txt").write_text("a\n")
    (tmp_path / "keep" / "b.txt").write_text("b\n")
    (tmp_path / "Dockerfile").write_text("FROM base\n")
    (tmp_path / ".dockerignore").write_text("cache\n*.md\nkeep\n!keep/a.txt\n")
    return tmp_path


def test_context_files_honour_dockerignore(context: Path) -> None:
    assert context_files(context) == [
        ".dockerignore",
        "Dockerfile",
        "app/views.py",
        "keep/a.txt",
    ]


def test_context_digest_ignores_ignored_files(context: Path) -> None:
    before = digest_context(context)
    (context / "cache" / "big.bin").write_bytes(b"\1" * 10)
    (context / "notes.md").write_text("other notes\n")
    (context / "keep" / "b.txt").write_text("changed\n")
    (context / "cache" / "new.bin").write_bytes(b"new")
    assert digest_context(context) == before


@pytest.mark.parametrize(
    "change",
    [
        lambda c: (c / "app" / "views.py").write_text("x = 2\n"),
        lambda c: (c / "keep" / "a.txt").write_text("changed\n"),
        lambda c: (c / "app" / "new.py").write_text(""),
        lambda c: (c / "app" / "views.py").chmod(0o755),
        lambda c: (c / "app" / "views.py").rename(c / "app" / "other.py"),
        lambda c: (c / "app" / "link").symlink_to("views.py"),
        lambda c: (c / ".dockerignore").write_text("cache\n"),
    ],
)
def test_context_digest_changes_with_each_visible_file(context: Path, change: object) -> None:
    before = digest_context(context)
    change(context)  # type: ignore[operator]
    assert digest_context(context) != before


KEY_INPUTS: dict[str, object] = {
    "context_digest": "c1",
    "dockerfile": "FROM base\n",
    "build_args": {"BASE_IMAGE": "debian"},
    "base_ids": {"debian": "sha256:1"},
    "pip": "offline wheelhouse w1",
}


def test_cache_key_is_stable() -> None:
    assert cache_key(**KEY_INPUTS) == cache_key(**dict(KEY_INPUTS))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("context_digest", "c2"),
        ("dockerfile", "FROM base\nUSER 1\n"),
        ("build_args", {"BASE_IMAGE": "other"}),
        ("build_args", {"BASE_IMAGE": "debian", "EXTRA": ""}),
        ("base_ids", {"debian": "sha256:2"}),
        ("pip", "offline wheelhouse w2"),
    ],
)
def test_cache_key_changes_with_each_input(name: str, value: object) -> None:
    changed = dict(KEY_INPUTS, **{name: value})
    assert cache_key(**changed) != cache_key(**KEY_INPUTS)  # type: ignore[arg-type]


def test_cache_key_ignores_build_arg_order() -> None:
    one = dict(KEY_INPUTS, build_args={"A": "1", "B": "2"})
    two = dict(KEY_INPUTS, build_args={"B": "2", "A": "1"})
    assert cache_key(**one) == cache_key(**two)  # type: ignore[arg-type]


def test_from_references_apply_args_and_skip_stages() -> None:
    dockerfile = """\
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS builder
RUN true
FROM --platform=linux/amd64 $BASE_IMAGE
COPY --from=builder /opt /opt
FROM builder AS again
FROM scratch
FROM \\
  djangoscale/app-base:dev
"""
    assert from_references(dockerfile, {}) == ["python:3.11-slim", "djangoscale/app-base:dev"]
    assert from_references(dockerfile, {"BASE_IMAGE": "local/base:1"})[0] == "local/base:1"


def test_root_dockerfile_takes_the_base_image_as_an_argument() -> None:
    text = (Path(__file__).parents[2] / "Dockerfile").read_text()
    assert from_references(text, {}) == ["python:3.11.14-slim-bookworm"]
    assert from_references(text, {"BASE_IMAGE": "djangoscale/debian-python:bookworm"}) == [
        "djangoscale/debian-python:bookworm"
    ]


@pytest.mark.parametrize(
    ("tag", "full"),
    [
        ("djangoscale/app-base:dev", "docker.io/djangoscale/app-base:dev"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("myapp:1", "docker.io/library/myapp:1"),
        ("ghcr.io/cloudnative-pg/pgbouncer:1.24.1", "ghcr.io/cloudnative-pg/pgbouncer:1.24.1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
    ],
)
def test_archives_carry_the_name_the_kubelet_looks_up(tag: str, full: str) -> None:
    assert normalized_reference(tag) == full


def test_build_pip_gets_the_hosts_ca_and_index_not_its_paths(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    listing = (
        f":env:.cert='{ca}'\n:env:.find-links='/opt/wheels'\n"
        "global.index-url='https://pypi.example/simple'\nglobal.cert='/elsewhere.crt'\n"
    )
    settings = parse_pip_config(listing)
    assert settings["cert"] == str(ca)  # the environment overrides the file
    text, volumes, identity = host_pip_config(settings)
    assert "cert = /run/djangoscale/pip-ca.pem" in text
    assert "index-url = https://pypi.example/simple" in text
    assert "find-links" not in text
    assert volumes == (f"{ca}:/run/djangoscale/pip-ca.pem:ro",)
    ca.write_text("-----BEGIN CERTIFICATE-----\nother\n")
    assert host_pip_config(settings)[2] != identity


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("myapp:dev", True),
        ("djangoscale/app-base:dev", True),
        ("localhost:5000/team/app:1.2.3", True),
        ("app", True),
        ("MyApp:dev", False),
        ("my app:dev", False),
        ("app:", False),
        ("app:-x", False),
    ],
)
def test_tags_are_checked_before_a_build(tag: str, valid: bool) -> None:
    assert valid_tag(tag) is valid


def test_a_bad_tag_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="--tag 'My App': not an image name"):
        build_image(tmp_path, "My App", store=Store(tmp_path / "cache"))


def test_a_quiet_step_still_prints_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "HEARTBEAT_SECONDS", 0.2)
    messages: list[str] = []
    script = "echo 'STEP 1/2: RUN slow'; sleep 1; echo noise; echo 'STEP 2/2: USER 1'"
    store_module.run_logged(
        ["sh", "-c", script], tmp_path / "build.log", messages.append,
        show=lambda line: line.startswith("STEP"),
    )  # fmt: skip
    assert messages[0].startswith("STEP 1/2: RUN slow")
    last = next(i for i, m in enumerate(messages) if m.startswith("STEP 2/2: USER 1"))
    assert any(m.startswith("still at STEP 1/2: RUN slow") for m in messages[1:last]), messages
    # A slow machine may tick once more before the process has exited: it names the last step.
    assert all(m.startswith("still at STEP 2/2: USER 1") for m in messages[last + 1:]), messages
    assert "noise" in (tmp_path / "build.log").read_text()


def test_a_failed_command_raises_with_its_log_tail(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"exit code 3 \(log: .*\):\nbroken here"):
        store_module.run_logged(
            ["sh", "-c", "echo broken here; exit 3"], tmp_path / "b.log", print, lambda _: False
        )
