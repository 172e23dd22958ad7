"""Files a generator script in the repository writes are committed: each test checks
that the committed ones are what the script writes now (as `python -m monitoring
--check` does for the rules and dashboards)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .paths import REPO


def assert_up_to_date(script: Path) -> None:
    """Every file ``script``'s ``render()`` makes equals the committed one."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, text in module.render().items():
        assert path.read_text() == text, f"stale {path.name}: run python {script.relative_to(REPO)}"
