"""A replay's state never where a live run reads it (issue 19): the first run of a
state_dir marks it, and a run of the other kind refuses it with an error that says
what to do, before it touches anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from sidecar.adapters.state_kind import MARKER, StateDirTaken, claim
from sidecar.cli import EXIT_USAGE, main

from .support.paths import REPO


def test_the_first_run_marks_the_state_dir_and_the_same_kind_may_come_back(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    claim(state, "replay")
    assert (state / MARKER).read_text() == "replay\n"
    assert stat.S_IMODE(os.stat(state / MARKER).st_mode) == 0o600
    claim(state, "replay")  # a second replay into its own state
    with pytest.raises(StateDirTaken, match=r"holds a replay's state: a live run there"):
        claim(state, "live")


def test_a_replay_refuses_a_live_runs_state_dir_and_leaves_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    claim(state, "live")
    (state / "state.sqlite3").write_bytes(b"a live run's state")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(state), "accounts": [{"id": "sales"}]}))
    capture = REPO / "examples" / "quiet-session.jsonl"
    assert main(["replay", str(capture), "--config", str(config)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "holds a live run's state (wa-sidecar run or pair)" in err
    assert "examples/demo.yaml" in err
    assert sorted(p.name for p in state.iterdir()) == [MARKER, "state.sqlite3"]
    assert (state / "state.sqlite3").read_bytes() == b"a live run's state"


def test_the_readmes_demo_and_main_job_use_different_state_dirs() -> None:
    """The README's first commands: the main job runs examples/config.yaml, the demo
    replays with examples/demo.yaml; same accounts, different state."""
    live = yaml.safe_load((REPO / "examples" / "config.yaml").read_text())
    demo = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    assert live["state_dir"] != demo["state_dir"]
    assert [a["id"] for a in live["accounts"]] == [a["id"] for a in demo["accounts"]]
    readme = (REPO / "README.md").read_text()
    assert "replay examples/quiet-session.jsonl --config examples/demo.yaml" in readme
