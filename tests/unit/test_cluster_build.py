"""The binary cache key must change exactly when an input of the Go build changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from djangoscale.cluster.build import BuildProgress, cache_key, cache_root, input_files


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
    for line in ["==> k8s-local: 10 packages", "k8s.io/api/core/v1", "k8s.io/client-go/rest",
                 "==> k8s-local built in 3s"]:
        progress.feed(line + "\n")
    assert progress.done == 2 and progress.total == 10
    assert messages[0].startswith("k8s-local: compiled 1/10 packages")
    assert messages[-1] == "k8s-local built in 3s"
