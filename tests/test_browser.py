"""A person's view: Debian's Chromium, headless, driven by Playwright, against a sidecar
replaying a pairing in real time. Screenshots land in test-artifacts/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import sync_playwright

from sidecar import testing as build
from sidecar.adapters.capture import encode_record

from .support.cli import sidecar_cli, wait_ready
from .support.config import TOKEN
from .support.paths import REPO

pytestmark = pytest.mark.services  # Chromium and a wa-sidecar process

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError("Debian's chromium is not installed; scripts/test installs it")
    return found


def pairing_capture(path: Path, start: float) -> None:
    records: list[tuple[float, str | None, Any]] = []
    for account in ("sales", "support"):
        records += [
            (start, account, build.connected()),
            (start + 1, account, build.offline_sync_completed()),
        ]
        records.append(
            (
                start + 2,
                account,
                build.message_event(build.text("before"), message_id=f"{account}-1"),
            )
        )
    # never paired: whatsmeow shows a QR code from the start
    records.append((start, "fresh", build.qr_with_code("2@made-up-fresh-code,for-the-test")))
    # whatsmeow rotates the QR; three codes so that, however late the page is, it sees one change
    records += [
        (start + 14, "sales", build.qr_with_code("2@made-up-first-code,for-the-test")),
        (start + 18, "sales", build.qr_with_code("2@made-up-second-code,for-the-test")),
        (start + 22, "sales", build.qr_with_code("2@made-up-third-code,for-the-test")),
        (start + 26, "sales", build.pair_status(success=True)),
        (start + 27, "sales", build.connected()),
        (start + 29, "sales", build.message_event(build.text("after"), message_id="sales-2")),
    ]
    records += [(start + k, None, None) for k in range(0, 60, 5)]
    records.sort(key=lambda r: r[0])
    path.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in records))


def open_logged_in(browser: Any, url: str, width: int, height: int) -> Any:
    """A new page at ``url``, logged in through its form as a person would."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("#login", state="visible")
    page.fill("#token", TOKEN)
    page.click("#login button")
    return page


def test_status_page_and_pair_page_in_a_real_browser(tmp_path: Path, tokens_file: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {
                    "listen": "127.0.0.1:0",
                    "event_streams": {"per_principal": 2, "total": 4},
                },
                "state_dir": str(tmp_path / "state"),
                "auth": {"tokens_file": str(tokens_file)},
                "accounts": [
                    {"id": "sales"},
                    {"id": "support"},
                    {"id": "shop", "source": "ingest"},
                    {"id": "fresh"},
                ],
            }
        )
    )
    capture = tmp_path / "pairing.jsonl"
    pairing_capture(capture, time.time() + 1)
    process = sidecar_cli(
        "replay", str(capture), "--config", str(config), "--speed", "1", "--linger", "60"
    )
    try:
        base = f"http://127.0.0.1:{wait_ready(process)}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
            # a wrong token is refused in words, and the form asks again
            # the narrowest phone the pages are made for
            wrong = browser.new_page(viewport={"width": 360, "height": 740})
            missing: list[str] = []
            wrong.on("response", lambda r: missing.extend([r.url] if r.status == 404 else []))
            wrong.goto(base + "/")
            wrong.fill("#token", "not-the-token")
            wrong.click("#login button")
            wrong.wait_for_selector("#login-refused", state="visible")
            assert "not accepted" in wrong.inner_text("#login-refused")
            wrong.fill("#token", TOKEN)
            wrong.click("#login button")
            wrong.wait_for_selector('tr[data-account="sales"]')
            assert wrong.is_hidden("#login-refused")
            # on a phone each account is a card: nothing runs off the side
            width = wrong.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"the status page is {width} px wide on a 360 px phone"
            assert missing == [], f"the page asked for what is not there: {missing}"
            wrong.screenshot(path=str(ARTIFACTS / "status-page-phone.png"), full_page=True)
            wrong.close()

            page = open_logged_in(browser, base + "/", 1000, 800)
            page.wait_for_selector('tr[data-account="sales"]')
            sales = page.inner_text('tr[data-account="sales"]')
            state, last_real, verdict = sales.split("\t")[1:4]
            assert (state, verdict) == ("Connected", "OK"), sales
            assert last_real.endswith(("just now", " s ago")), sales
            shop = page.inner_text('tr[data-account="shop"]')
            # the ingest account has not connected: its verdict is not an "OK"
            assert shop.split("\t")[1:] == [
                "Connecting",
                "never",
                "not judged while not connected",
                "details",
            ], shop
            # never paired: the row says how to pair it
            page.wait_for_function(
                "document.querySelector('tr[data-account=\"fresh\"]').innerText"
                ".includes('Waiting for a QR scan')"
            )
            fresh = page.inner_text('tr[data-account="fresh"] .step')
            assert fresh == (
                "not paired: pair it on the page /accounts/fresh/pair or with `wa-sidecar pair fresh --config CONFIG`"
            )
            link = page.get_attribute('tr[data-account="fresh"] .step a', "href")
            assert link == "/accounts/fresh/pair"  # the page it names is a link
            assert TOKEN not in page.url
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)

            # An ingest account's pair page (its session lives in another gateway, where
            # the pager's re-pair link leads too) says where it is re-paired, and offers
            # nothing here. Its stream stays open: the second of the token's two.
            elsewhere = open_logged_in(browser, base + "/accounts/shop/pair", 390, 844)
            elsewhere.wait_for_selector("#elsewhere", state="visible")
            assert "re-pair it there" in elsewhere.inner_text("#elsewhere")
            assert elsewhere.is_hidden("#confirm")
            assert elsewhere.is_hidden("#pairing")
            elsewhere.screenshot(path=str(ARTIFACTS / "pair-page-ingest.png"), full_page=True)

            page.click('tr[data-account="sales"] a')
            page.wait_for_selector("#confirm", state="visible")
            assert page.is_disabled("#start")
            page.check("#sure")
            page.click("#start")
            page.wait_for_selector("#qr svg", timeout=30_000)
            # the phone-number way is offered beside the QR; a replay has no session for it
            assert page.is_visible("#by-phone")
            page.fill("#phone", "0700 000 000")  # no country code: said so, nothing sent
            page.click("#by-phone button")
            page.wait_for_selector("#error", state="visible")
            assert "country code" in page.inner_text("#error")
            page.fill("#phone", "+1 555 0100")
            page.click("#by-phone button")
            page.wait_for_selector("#error", state="visible")
            assert "no live WhatsApp session" in page.inner_text("#error")
            first = page.inner_html("#qr")
            page.wait_for_function(
                "(first) => document.querySelector('#qr').innerHTML !== first && document.querySelector('#qr svg')",
                arg=first,
                timeout=30_000,
            )
            page.screenshot(path=str(ARTIFACTS / "pair-page-qr.png"), full_page=True)
            page.wait_for_selector("#paired", state="visible", timeout=30_000)
            assert "Paired" in page.inner_text("#paired")
            assert "android" in page.inner_text("#platform")
            page.wait_for_function(
                "document.querySelector('#first-message').textContent.includes('arrived')",
                timeout=30_000,
            )
            assert page.inner_html("#qr") == ""
            page.screenshot(path=str(ARTIFACTS / "pair-page-paired.png"), full_page=True)

            # A third pair page for the same token, over the cap of two streams: it says so
            # and offers no re-pair it could not show.
            second = open_logged_in(browser, base + "/accounts/support/pair", 390, 844)
            second.wait_for_selector("#error", state="visible")
            assert "too many event streams" in second.inner_text("#error")
            assert "close another pair page" in second.inner_text("#error")
            assert second.is_hidden("#confirm")
            second.screenshot(path=str(ARTIFACTS / "pair-page-too-many.png"), full_page=True)
            # an account the config does not have is said so, and nothing is offered
            elsewhere.close()
            unknown = open_logged_in(browser, base + "/accounts/nobody/pair", 390, 844)
            unknown.wait_for_selector("#error", state="visible")
            assert "no account" in unknown.inner_text("#error")
            assert unknown.is_hidden("#confirm")
            unknown.close()
            # never paired: the page offers to pair, not to log a device out
            fresh_page = open_logged_in(browser, base + "/accounts/fresh/pair", 360, 740)
            fresh_page.wait_for_selector("#qr svg")
            assert fresh_page.inner_text("h1") == "Pair fresh"
            assert fresh_page.inner_text("#start") == "Pair now"
            assert "no linked device yet" in fresh_page.inner_text("#confirm-text")
            assert fresh_page.is_hidden("#confirm")  # its QR code is there: nothing to start
            fresh_page.screenshot(path=str(ARTIFACTS / "pair-page-unpaired.png"), full_page=True)
            # the runbook, where the alerts lead, fits a phone: nothing runs off the side
            runbook = browser.new_page(viewport={"width": 360, "height": 740})
            runbook.goto(base + "/runbook")
            width = runbook.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"the runbook is {width} px wide on a 360 px phone"
            runbook.screenshot(path=str(ARTIFACTS / "runbook-phone.png"))
            browser.close()
    finally:
        process.terminate()
        process.communicate(timeout=15)
    audit = (tmp_path / "state" / "audit.log").read_text()
    assert '"action": "regenerate_qr"' in audit
    assert "made-up" not in audit
    for name in (
        "status-page.png",
        "pair-page-qr.png",
        "pair-page-paired.png",
        "pair-page-too-many.png",
        "pair-page-ingest.png",
        "status-page-phone.png",
        "pair-page-unpaired.png",
        "runbook-phone.png",
    ):
        assert (ARTIFACTS / name).stat().st_size > 5_000
