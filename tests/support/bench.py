"""Running a benchmark's short version the way CI does, for the smoke tests."""

from __future__ import annotations

import subprocess
import sys

from .paths import REPO


def run_smoke(module: str, timeout: float) -> str:
    """``python -m MODULE --smoke`` from the repository root; its stdout, once it exited 0."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
