"""No test module imports another: shared helpers live in tests/support/, so running or
moving one test file never drags another one's tests, fixtures or side effects along."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def is_test_module(name: str) -> bool:
    """``.test_x``/``.conftest`` (relative, from within tests/) or ``tests.test_x``/``tests.conftest``."""
    if name.startswith(".."):
        return False
    parts = name.removeprefix(".").split(".")
    if not name.startswith("."):
        if len(parts) != 2 or parts[0] != "tests":
            return False
        parts = parts[1:]
    return len(parts) == 1 and (parts[0].startswith("test_") or parts[0] == "conftest")


def imported_test_modules(path: Path) -> list[str]:
    """The test modules ``path`` imports, in the order it imports them."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            joint = "." if node.module else ""
            names = ([base] if node.module else []) + [f"{base}{joint}{a.name}" for a in node.names]
        else:
            continue
        found += [name for name in names if is_test_module(name)]
    return found


def test_no_test_module_imports_another() -> None:
    offenders = {
        path.name: imported
        for path in sorted(TESTS.glob("test_*.py"))
        if (imported := imported_test_modules(path))
    }
    assert offenders == {}, f"test modules importing test modules (use tests/support/): {offenders}"


def test_the_check_sees_each_way_of_importing(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "from .test_replay import get\n"
        "from . import test_monitoring\n"
        "from .conftest import TOKEN\n"
        "import tests.test_classify\n"
        "from tests.test_deploy import REPO\n"
        "from .support.http import get as fine\n"
        "from tests.support import cli\n"
        "from tests import test_http\n"
        "import json\n"
    )
    assert imported_test_modules(sample) == [
        ".test_replay",
        ".test_monitoring",
        ".conftest",
        "tests.test_classify",
        "tests.test_deploy",
        "tests.test_http",
    ]
