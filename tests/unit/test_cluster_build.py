"""The binary cache key must change exactly when an input of the Go build changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from djangoscale_dev.cluster.build import BuildProgress, cache_key, cache_root, input_files


@pytest.fixture
def src(tmp_path: Path) -> Path:
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / "go.sum").write_text("")
    (tmp_path / "build.sh").write_text("#!/bin/sh\n")
    (tmp_path / "cmd").mkdir()
    (tmp_path / "cmd" / "main.go").write_text("package main\n")
    (tmp_path / "kwok").mkdir()
    (tmp_path / "kwok" / "go.mod").write_text("module y\n")
    (tmp_path / "README.md").write_text("notes\n")
    return tmp_path


def test_inputs_are_module_files_sources_and_script(src: Path) -> None:
    names = [p.relative_to(src).as_posix() for p in input_files(src)]
    assert names == ["build.sh", "cmd/main.go", "go.mod", "go.sum", "kwok/go.mod"]


def test_key_is_stable(src: Path) -> None:
    assert cache_key(src, "go1.26") == cache_key(src, "go1.26")


@pytest.mark.parametrize("path", ["go.mod", "cmd/main.go", "build.sh", "kwok/go.mod"])
def test_key_changes_with_each_input(src: Path, path: str) -> None:
    before = cache_key(src, "go1.26")
    (src / path).write_text((src / path).read_text() + "// changed\n")
    assert cache_key(src, "go1.26") != before


def test_key_ignores_non_inputs_and_follows_toolchain(src: Path) -> None:
    before = cache_key(src, "go1.26")
    (src / "README.md").write_text("other notes\n")
    assert cache_key(src, "go1.26") == before
    assert cache_key(src, "go1.27") != before


def test_key_changes_when_a_source_file_is_added(src: Path) -> None:
    before = cache_key(src, "go1.26")
    (src / "cmd" / "extra.go").write_text("package main\n")
    assert cache_key(src, "go1.26") != before


def test_cache_root_precedence(tmp_path: Path) -> None:
    assert cache_root({"DJANGOSCALE_CLUSTER_CACHE": "/x"}) == Path("/x")
    assert cache_root({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/djangoscale/cluster")
    assert cache_root({}) == Path.home() / ".cache" / "djangoscale" / "cluster"


def test_progress_counts_compiled_packages() -> None:
    messages: list[str] = []
    progress = BuildProgress(messages.append, interval=0)
    for line in [
        "==> k8s-local: 10 packages",
        "k8s.io/api/core/v1",
        "k8s.io/client-go/rest",
        "==> k8s-local built in 3s",
    ]:
        progress.feed(line + "\n")
    assert progress.done == 2 and progress.total == 10
    assert messages[0].startswith("k8s-local: compiled 1/10 packages")
    assert messages[-1] == "k8s-local built in 3s"


def _gen_replaces():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "cluster" / "gen-replaces.py"
    spec = importlib.util.spec_from_file_location("gen_replaces", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UPSTREAM_GOMOD = """module k8s.io/kubernetes
require (
\tk8s.io/api v0.0.0
\tk8s.io/klog/v2 v2.130.1
\tk8s.io/utils v0.0.0-20251002143259-bc988d571ff4
\tk8s.io/kubectl v0.0.0 // indirect
)
replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
)
"""


def test_gen_replaces_finds_staging_modules_only() -> None:
    gen = _gen_replaces()
    assert gen.staging_modules(UPSTREAM_GOMOD) == [
        "k8s.io/api",
        "k8s.io/kubectl",
        "k8s.io/sample-controller",
    ]
    assert gen.staging_version("v1.35.4") == "v0.35.4"
    with pytest.raises(ValueError):
        gen.staging_version("v0.35.4")


def test_gen_replaces_rewrites_its_block_in_place() -> None:
    gen = _gen_replaces()
    first = gen.rewrite("module x\n", gen.replace_block(["k8s.io/api"], "v1.35.4"))
    assert "k8s.io/api => k8s.io/api v0.35.4" in first
    second = gen.rewrite(first, gen.replace_block(["k8s.io/api"], "v1.36.0"))
    assert "v0.35.4" not in second and second.count("replace (") == 1


def test_checked_in_go_mod_matches_the_generator_output() -> None:
    gen = _gen_replaces()
    gomod = (Path(__file__).resolve().parents[1] / "cluster" / "go.mod").read_text()
    version = re.search(r"k8s\.io/kubernetes (v1\.\d+\.\d+)", gomod).group(1)
    replaced = re.findall(r"^\t(k8s\.io/\S+) => \1 (v0\.\d+\.\d+)$", gomod, re.MULTILINE)
    assert replaced, "no generated replace block in tests/cluster/go.mod"
    assert {v for _, v in replaced} == {gen.staging_version(version)}
