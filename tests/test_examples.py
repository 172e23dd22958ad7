"""The shipped examples stay valid and in step with the script that makes them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sidecar.config import load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_capture_is_what_its_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_quiet_session", EXAMPLES / "make_quiet_session.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (EXAMPLES / "quiet-session.jsonl").read_text()
    assert committed == module.render(), "run: python examples/make_quiet_session.py"


def test_example_config_is_valid() -> None:
    loaded = load_config(EXAMPLES / "config.yaml", environ={"WA_SIDECAR_TOKENS": "x"})
    assert [a.id for a in loaded.config.accounts] == ["sales", "support"]
