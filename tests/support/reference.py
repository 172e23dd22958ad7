"""docs/reference.md as data: the rows of the table under each heading, so that a test
can hold every name the reference lists against the names the code has."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import REPO

REFERENCE = REPO / "docs" / "reference.md"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_SEPARATOR_ROW = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_NAME = re.compile(r"^`([^`]+)`$")
_BACKTICKED = re.compile(r"`([^`]+)`")


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a reference table: the backticked name in its first cell, the rest."""

    name: str
    cells: tuple[str, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Reference:
    """The reference's tables, by the heading they stand under (its text, without ``#``)."""

    tables: dict[str, list[Row]]

    @classmethod
    def read(cls, path: Path = REFERENCE) -> Reference:
        return cls.parse(path.read_text(encoding="utf-8"))

    @classmethod
    def parse(cls, text: str) -> Reference:
        tables: dict[str, list[Row]] = {}
        heading: str | None = None
        table_line = 0  # 0: not in a table; 1: the header row was read; 2: in the body
        for number, line in enumerate(text.splitlines(), start=1):
            if match := _HEADING.match(line):
                heading = match.group(2)
                if heading in tables:
                    raise ValueError(f"line {number}: heading {heading!r} appears twice")
                tables[heading] = []
                table_line = 0
                continue
            if not line.startswith("|"):
                table_line = 0
                continue
            if table_line == 0:
                table_line = 1  # the header row
                continue
            if table_line == 1:
                if not _SEPARATOR_ROW.match(line):
                    raise ValueError(f"line {number}: a table's second row must be |---|")
                table_line = 2
                continue
            if heading is None:
                raise ValueError(f"line {number}: a table before the first heading")
            first, *rest = (cell.strip() for cell in _CELL_SEPARATOR.split(line.strip())[1:-1])
            name = _NAME.match(first)
            if name is None:
                raise ValueError(f"line {number}: the first cell must be one `name`, not {first!r}")
            tables[heading].append(Row(name.group(1), tuple(rest), number))
        return cls(tables)

    def rows(self, heading: str) -> list[Row]:
        """The rows of the table(s) right under ``heading`` (up to the next heading)."""
        if heading not in self.tables:
            raise AssertionError(f"docs/reference.md has no heading {heading!r}")
        rows = self.tables[heading]
        if not rows:
            raise AssertionError(f"docs/reference.md: no table under {heading!r}")
        return rows

    def names(self, heading: str) -> list[str]:
        return [row.name for row in self.rows(heading)]


def backticked(cell: str) -> list[str]:
    """The backticked names in a cell, in order."""
    return _BACKTICKED.findall(cell)


def drift(section: str, code: Iterable[str], doc: Iterable[str]) -> str | None:
    """What differs between the names the code has and those the reference lists under
    ``section``: each name missing from either side, and names listed twice. None if none."""
    code_names, doc_names = set(code), list(doc)
    problems = []
    if missing := sorted(code_names - set(doc_names)):
        problems.append(f"in the code but not in docs/reference.md: {missing}")
    if extra := sorted(set(doc_names) - code_names):
        problems.append(f"in docs/reference.md but not in the code: {extra}")
    if twice := sorted(name for name, n in Counter(doc_names).items() if n > 1):
        problems.append(f"listed more than once: {twice}")
    return f"{section!r}: " + "; ".join(problems) if problems else None


def json_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Every key of a JSON object as a path: nested objects ``a.b``, lists of objects
    ``a[].b`` (keys of every element)."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}{key}"
            yield path
            yield from json_paths(item, f"{path}.")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield from json_paths(item, prefix.removesuffix(".") + "[].")
