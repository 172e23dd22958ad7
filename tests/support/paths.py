"""Where the repository is: tests and helpers run files from it by path."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
