"""The README's first steps, walked as a newcomer takes them, on a fresh ``./data``.

Each test is one stretch of the first hour: the commands the docs give, pasted as
written (tests/support/walk.py says the one change: the port). They check what a
newcomer sees: the commands exit 0, the main job says the example accounts are not
paired and how to pair them, a re-pair while WhatsApp is unreachable backs off and
says when it tries again, and the demo tells its story without touching the main
job's state. WhatsApp is unreachable here: neonize's own dial fails, as it would
behind a firewall.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .support.cli import SidecarProcess, wait_ready
from .support.http import get
from .support.polling import wait_for
from .support.scrapes import parse, sample
from .support.walk import Checkout, checkout, readme_command

pytestmark = pytest.mark.services

MAIN_JOB = "./scripts/run"
PAIRING_STEP = "not paired: pair it on the page /accounts/{0}/pair or with `wa-sidecar pair {0} --config CONFIG`"


@pytest.fixture
def newcomer(tmp_path: Path) -> Checkout:
    return checkout(tmp_path)


def stop(process: SidecarProcess) -> tuple[int, str]:
    """SIGTERM, as Ctrl-C or systemd would stop it: the exit code and the log."""
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return process.returncode, out + err


def pairing_view(newcomer: Checkout, account: str) -> dict[str, object]:
    """The first event of the pair page's stream: what the page shows."""
    request = urllib.request.Request(
        f"{newcomer.base}/api/whatsapp/accounts/{account}/pair/events",
        headers={"Authorization": f"Bearer {newcomer.token()}"},
    )
    with urllib.request.urlopen(request, timeout=10) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data:"):
                view: dict[str, object] = json.loads(line[len("data:") :])
                return view
    raise AssertionError("the pair stream ended without an event")


def reconnects(newcomer: Checkout, account: str) -> float:
    scrape = parse(get(f"{newcomer.base}/metrics"))
    value = sample(scrape, "whatsapp_reconnects_total", account=account)
    assert value is not None
    return value


def test_the_commands_the_docs_give_work_as_pasted(newcomer: Checkout) -> None:
    """check-config as the README and the example config's own comment give it, with
    and without the script (no token needed to check a config), and pair."""
    checked = newcomer.run("./scripts/run check-config --config examples/config.yaml")
    assert checked.returncode == 0, checked.stderr
    assert "examples/config.yaml: OK (2 accounts)" in checked.stdout
    assert (newcomer.root / "data" / "api-token").stat().st_mode & 0o777 == 0o600

    comment = next(
        line
        for line in (newcomer.root / "examples" / "config.yaml").read_text().splitlines()
        if "check-config" in line
    )
    assert "wa-sidecar check-config --config examples/config.yaml" in comment
    bare = newcomer.run(".venv/bin/wa-sidecar check-config --config examples/config.yaml")
    assert bare.returncode == 0, bare.stderr

    code, said = newcomer.run_in_terminal(readme_command("pair", "sales"))
    assert code != 0, said
    assert "cannot reach WhatsApp" in said
    assert "Traceback" not in said


def test_the_main_job_says_how_to_pair_and_a_repair_while_offline_backs_off(
    newcomer: Checkout,
) -> None:
    main = newcomer.start(MAIN_JOB)
    try:
        wait_ready(main, timeout=60)
        token = newcomer.token()
        for account in ("sales", "support"):
            health = get(f"{newcomer.base}/api/whatsapp/accounts/{account}/health", token)
            assert health["nextStep"] == PAIRING_STEP.format(account)
            assert health["isDegraded"] is False
        assert "WhatsApp accounts" in get(f"{newcomer.base}/")
        wait_for(
            lambda: "account=sales cannot reach WhatsApp" in "".join(main.output()),
            timeout=30,
            what="the reason a connection fails, in the log",
        )

        # the README's second terminal: pair while the main job runs
        code, said = newcomer.run_in_terminal(readme_command("pair", "sales"))
        assert code != 0, said
        assert "cannot reach WhatsApp" in said

        # the pair page's button, while WhatsApp cannot be reached
        request = urllib.request.Request(
            f"{newcomer.base}/api/whatsapp/regenerate-qr/sales",
            method="POST",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "pairing"
        before = reconnects(newcomer, "sales")
        time.sleep(20)
        tries = reconnects(newcomer, "sales") - before
        # the capped backoff (2 s, 4 s, 8 s, ...): a handful, not one every 200 ms
        assert 1 <= tries <= 6, tries
        # a phone code cannot come before WhatsApp answers: said so, not "start a re-pair"
        code_request = urllib.request.Request(
            f"{newcomer.base}/api/whatsapp/accounts/sales/pair-code",
            method="POST",
            data=json.dumps({"phone": "+12025550100"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(code_request, timeout=10)
        assert refused.value.code == 409
        assert "cannot reach WhatsApp yet" in json.loads(refused.value.read())["error"]
        view = pairing_view(newcomer, "sales")
        now_ms = time.time() * 1000
        assert view["qrSvg"] is None
        assert view["status"] == "disconnected"
        next_attempt = view["nextAttemptMs"]
        assert isinstance(next_attempt, int)
        assert now_ms - 1000 < next_attempt < now_ms + 300_000
    finally:
        code, log = stop(main)
    assert code == 0, log
    assert log.count(f"account=sales has no paired device: {PAIRING_STEP.format('sales')}") == 1
    assert "re-pair started by" in log
    assert "Traceback" not in log


def test_the_demo_tells_its_story_and_leaves_the_main_jobs_state_alone(
    newcomer: Checkout,
) -> None:
    main = newcomer.start(MAIN_JOB)
    wait_ready(main, timeout=60)
    code, log = stop(main)
    assert code == 0, log

    demo = newcomer.start(
        readme_command("replay", "examples/quiet-session.jsonl", "--linger", "600")
    )
    try:
        wait_ready(demo, timeout=60)
        started = time.monotonic()
        metrics = f"{newcomer.base}/metrics"
        wait_for(
            lambda: (
                sample(parse(get(metrics)), "whatsapp_session_degraded", account="sales") == 1.0
            ),
            timeout=60,
            what="sales to turn degraded in the demo",
        )
        took = time.monotonic() - started
        # the README: "about 25 seconds in (11:25 capture time)"
        assert 15 < took < 45, took
        scrape = parse(get(metrics))
        assert sample(scrape, "whatsapp_session_degraded", account="support") == 0.0
        health = get(f"{newcomer.base}/api/whatsapp/accounts/sales/health", newcomer.token())
        assert health["reasons"] == ["silence_with_protocol_traffic"]
        assert health["nextStep"] is None or "pair" not in str(health["nextStep"])
    finally:
        code, log = stop(demo)
    assert code == 0, log
    assert "verdict: degraded (silence_with_protocol_traffic)" in log

    # the live state dir holds no message of the capture, and the main job shows none
    live = newcomer.root / "data" / "example"
    with sqlite3.connect(f"file:{live / 'messages.sqlite3'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    main = newcomer.start(MAIN_JOB)
    try:
        wait_ready(main, timeout=60)
        health = get(f"{newcomer.base}/api/whatsapp/accounts/sales/health", newcomer.token())
        assert health["lastRealMessageMs"] is None
        assert health["messages"] == {"real": 0, "protocol": 0, "other": 0}
    finally:
        code, log = stop(main)
    assert code == 0, log

    # and a replay pointed at the live state dir is refused, leaving it as it was
    refused = newcomer.run(
        "./scripts/run replay examples/quiet-session.jsonl --config examples/config.yaml"
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "live" in refused.stderr
