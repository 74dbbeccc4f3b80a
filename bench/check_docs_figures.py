"""Every measured figure in README.md and docs/*.md names the command that prints it.

A figure is a number with a unit of measurement (RPS, ms, us, s, MiB, %, a ratio like 1.1x).
It is tagged when a paragraph, table or command under the same heading names a script of
this repository that prints it: `bench/NAME.py [--flag ...]` or
`tests/.../test_NAME.py[::test_name]` (run with `pytest -s`). The check fails on a figure with
no tag, on a tag whose script does not exist, on a `--flag` the script does not define, and on
a `::test_name` the test file does not define. Code blocks (commands, YAML) are not prose and
are skipped; their lines still tag what follows. Numbers that are settings, not measurements
(defaults, bounds, configured windows) sit in a block marked `<!-- settings: WHY -->`, or
right after a block that is only that marker.

    .venv/bin/python bench/check_docs_figures.py          # exit 1 and one line per problem
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

NUMBER = r"(?<![\w.\-/])~?\d+(?:[.,]\d+)?(?:\s?(?:-|->|–|to)\s?~?\d+(?:[.,]\d+)?)?"
FIGURE = re.compile(
    NUMBER + r"(?:\s?(?:RPS|ms|us|µs|MiB|GiB|%)|x|\ss)(?![\w-])"
)
TAG = re.compile(
    r"(?P<path>(?:bench|tests)/[\w/.-]+\.py)(?:::(?P<test>\w+))?(?P<args>(?:[ \t]+[^\s`|]+)*)"
)
HEADING = re.compile(r"^#{1,6} ")
SETTINGS = re.compile(r"<!-- settings: \S.*?-->")


@dataclass(frozen=True)
class Problem:
    doc: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def tag_problems(path: str, test: str | None, args: str, root: Path = ROOT) -> list[str]:
    """What is wrong with one tag: its script, its test name, its flags."""
    script = root / path
    if not script.is_file():
        return [f"names {path}, which does not exist"]
    source = script.read_text()
    found = []
    if test and not re.search(rf"^(?:async )?def {test}\b", source, re.MULTILINE):
        found.append(f"names {path}::{test}, which that file does not define")
    for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", args):
        if flag not in source:
            found.append(f"passes {flag} to {path}, which does not define it")
    return found


def blocks(lines: list[str]) -> list[tuple[int, list[str], bool]]:
    """(first line number, lines, is code) for each paragraph, table or code block."""
    found: list[tuple[int, list[str], bool]] = []
    current: list[str] = []
    start, code, fenced = 0, False, False

    def close() -> None:
        nonlocal current
        if current:
            found.append((start, current, code))
        current = []

    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if fenced:
                current.append(line)
                close()
                fenced = False
                continue
            close()
            start, code, fenced = number, True, True
            current.append(line)
            continue
        if fenced:
            current.append(line)
            continue
        if not line.strip():
            close()
            continue
        indented = line.startswith("    ") and not current
        if not current:
            start, code = number, indented
        elif HEADING.match(line):
            close()
            start, code = number, False
        current.append(line)
        if HEADING.match(line):
            close()
    close()
    return found


def sections(text: str) -> list[list[tuple[int, list[str], bool]]]:
    """The blocks under each heading (the text before the first heading is a section too)."""
    found: list[list[tuple[int, list[str], bool]]] = [[]]
    for block in blocks(text.splitlines()):
        if HEADING.match(block[1][0]):
            found.append([])
        else:
            found[-1].append(block)
    return found


def check(doc: str, text: str, root: Path = ROOT) -> list[Problem]:
    problems: list[Problem] = []
    for section in sections(text):
        tagged = False
        settings_next = False  # the previous block was only a settings marker
        untagged: list[Problem] = []
        for start, block, code in section:
            joined = "\n".join(block)
            for match in TAG.finditer(joined):
                line = start + joined[:match.start()].count("\n")
                for problem in tag_problems(match["path"], match["test"], match["args"] or "",
                                            root):
                    problems.append(Problem(doc, line, problem))
                tagged = True
            settings = settings_next or bool(SETTINGS.search(joined))
            settings_next = bool(SETTINGS.fullmatch(joined.strip()))
            if code or settings:
                continue
            for offset, line_text in enumerate(block):
                # Links and inline code are names, not figures (`--workers 2`, `cheroot#190`).
                prose = re.sub(r"`[^`]*`|\]\([^)]*\)", "", line_text)
                for figure in FIGURE.finditer(prose):
                    untagged.append(Problem(doc, start + offset,
                                            f"figure {figure.group(0)!r} names no command"))
        if not tagged:
            problems.extend(untagged)
    return sorted(problems, key=lambda p: p.line)


def main() -> int:
    problems = [p for doc in DOCS for p in check(doc, (ROOT / doc).read_text())]
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s): tag each figure with the bench/ script or test "
              "that prints it, next to it")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
