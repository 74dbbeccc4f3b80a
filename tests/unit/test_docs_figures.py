"""The docs check: every measured figure in README.md and docs/*.md names its command."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import check_docs_figures

ROOT = Path(__file__).resolve().parents[2]


def problems(text: str) -> list[str]:
    return [problem.text for problem in check_docs_figures.check("doc.md", text, ROOT)]


def test_the_repositorys_docs_have_no_untagged_or_orphaned_figure() -> None:
    found = [str(p) for doc in check_docs_figures.DOCS
             for p in check_docs_figures.check(doc, (ROOT / doc).read_text())]
    assert found == []


@pytest.mark.parametrize("figure", ["1916 RPS", "p95 111 ms", "324 us", "1.1x", "about 45 s",
                                    "5.8-6.4 s", "77 MiB", "8-9 %", "51 -> 57 us"])
def test_a_figure_without_a_command_fails(figure: str) -> None:
    assert problems(f"# Title\n\nIt reached {figure} on this machine.\n") == [
        f"figure {figure.removeprefix('about ').removeprefix('p95 ')!r} names no command"]


def test_a_command_under_the_same_heading_tags_its_figures() -> None:
    assert problems("# A\n\n    .venv/bin/python bench/bench_servers.py --rounds 3\n\n"
                    "1916 RPS.\n") == []
    # ... but not those under the next heading.
    assert problems("# A\n\n`bench/bench_servers.py`\n\n# B\n\n1916 RPS.\n") == [
        "figure '1916 RPS' names no command"]


@pytest.mark.parametrize(("tag", "expected"), [
    ("`bench/bench_nothing.py`", "names bench/bench_nothing.py, which does not exist"),
    ("`bench/bench_servers.py --no-such-flag`",
     "passes --no-such-flag to bench/bench_servers.py, which does not define it"),
    ("`pytest -s tests/e2e/test_serve.py::test_nothing_here`",
     "names tests/e2e/test_serve.py::test_nothing_here, which that file does not define"),
])
def test_an_orphaned_tag_fails(tag: str, expected: str) -> None:
    assert problems(f"# A\n\nMeasured by {tag}: 1916 RPS.\n") == [expected]


def test_settings_and_code_are_not_figures() -> None:
    assert problems("# A\n\n<!-- settings: defaults -->\n\n| x | 60 s |\n\n"
                    "```yaml\ntimeout: 60 s\n```\n") == []
    # The marker covers the next block only.
    assert problems("# A\n\n<!-- settings: defaults -->\n\n60 s.\n\n20 s.\n") == [
        "figure '20 s' names no command"]
