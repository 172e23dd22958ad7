"""The import contracts of pyproject.toml hold, and would catch a wrong import.

``lint-imports`` runs in scripts/test too; here it also runs on a copy of the
package with one import that points upward, which must break the layers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: run scripts/setup --test")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "sidecar", tmp_path / "sidecar")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_hold_as_committed() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("domain/gaps.py", "from sidecar.adapters import http", "Layers:"),
        ("core/service.py", "from sidecar import compose", "Layers:"),
        ("adapters/capture.py", "from sidecar.metrics import families", "Layers:"),
        ("domain/verdict.py", "import sqlite3", "The domain is pure"),
        ("core/replay.py", "import aiohttp", "The core does no storage or HTTP"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, wrong_import: str, contract: str
) -> None:
    root = copy_of_the_package(tmp_path)
    target = root / "sidecar" / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    assert f"sidecar.{module.removesuffix('.py').replace('/', '.')}" in broken
