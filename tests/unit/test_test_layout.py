"""The suite's own layout. tests/unit and tests/e2e have no __init__.py (rootdir-relative
imports), so pytest imports each test file by its basename: two files with one basename break
the collection of a whole-suite run (`make test`) while each directory alone still passes."""

from __future__ import annotations

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_has_a_basename_of_its_own():
    by_name = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if not (path.parent / "__init__.py").exists():
            by_name[path.name].append(str(path.relative_to(TESTS)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert shared == {}
