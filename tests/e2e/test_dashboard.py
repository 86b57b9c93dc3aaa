"""The dashboard in a real headless Chromium against a fleet of real processes: the admin
pastes a token, sees the workers, the gateway and the conversations, watches one
conversation's events and streamed text live, then a worker is killed (SIGKILL) and
the page shows the failover, without a reload; reloaded, it still shows the death,
from the fleet's history. A screenshot is kept in tests/artifacts/ (its path is
printed)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from broker.settings import Settings
from fleet.client import Conversation
from fleet.harness import LocalFleet
from tests.support import create_conversation, token

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
T = TypeVar("T")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium (Debian's chromium and chromium-driver), a fresh profile."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        pytest.fail(
            f"the dashboard test needs {', '.join(missing)}: "
            "apt-get install -y chromium chromium-driver",
            pytrace=False,
        )
    profile = tempfile.mkdtemp(prefix="fleet-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1500,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def until(what: str, probe: Callable[[], T | None], timeout: float = 20) -> T:
    """Poll the page (in a thread: WebDriver calls block) until ``probe`` finds something."""
    try:
        async with asyncio.timeout(timeout):
            while not (found := await asyncio.to_thread(probe)):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"the page never showed {what}") from None
    return found


def texts(driver: WebDriver, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


async def test_the_dashboard_shows_the_fleet_live_and_a_failover(
    settings: Settings, browser: WebDriver, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LocalFleet(settings, FLEET_ECHO_DELAY="0.05") as fleet:
        _, url = await fleet.gateway()
        workers = dict([await fleet.worker(), await fleet.worker()])  # process -> worker id
        await fleet.reaper()
        alice = token(settings, "alice")
        cids = [await create_conversation(url, alice, initial=f"hello {i}") for i in range(3)]
        admin = token(settings, "root", admin=True)

        await asyncio.to_thread(browser.get, f"{url}/dashboard")
        assert admin not in browser.page_source  # the page holds no secret of its own
        await asyncio.to_thread(browser.find_element(By.ID, "token").send_keys, admin)
        await asyncio.to_thread(browser.find_element(By.ID, "connect").click)

        # Both workers, alive; the three conversations, each with its owner.
        liveness = "#workers tbody td:nth-child(2)"
        await until(
            "two live workers",
            lambda: [t.split(" ")[0] for t in texts(browser, liveness)] == ["alive", "alive"],
        )
        rows = await until(
            "the conversations with their owners",
            lambda: owners(browser) if set(owners(browser)) >= set(cids) else None,
        )
        cid = cids[0]
        victim_id = rows[cid]
        victim = next(p for p, w in workers.items() if w == victim_id)

        # One conversation live: its events, then a streamed answer as it is written.
        await asyncio.to_thread(row(browser, cid).click)
        await until("its logged events", lambda: len(texts(browser, "#live-events div")) >= 4)
        async with Conversation(url, alice, cid) as chat:
            ack = await chat.send(" ".join(f"w{i}" for i in range(40)))
            shown = await until("the text being streamed", lambda: streaming(browser, "w3"))
            await chat.reply_to(ack.action_id, timeout=20)
        assert ack.action_id[:12] in shown

        # kill -9 the worker that owns it: the page says the conversation failed over.
        moved = sum(owner == victim_id for owner in rows.values())
        died = f"worker {victim_id} died (liveness lapsed): {moved} conversation(s) moved to others"
        await victim.kill()
        failover = await until(
            "the failover",
            lambda: next(
                iter(texts(browser, f'#timeline li.failover[data-conversation-id="{cid}"]')), None
            ),
            timeout=30,
        )
        survivor = next(w for w in workers.values() if w != victim_id)
        await until("the new owner", lambda: owners(browser).get(cid) == survivor)
        await until(
            "the death", lambda: any(died in t for t in texts(browser, "#timeline li.died"))
        )
        stored = await asyncio.to_thread(
            browser.execute_script, "return [sessionStorage.length, localStorage.length]"
        )

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "dashboard-failover.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(screenshot))
        with capsys.disabled():
            print(f"\ndashboard screenshot: {screenshot}")

        # Opened anew (the token is kept in this tab), the page still tells the death.
        await asyncio.to_thread(browser.refresh)
        await until(
            "the death, after a reload",
            lambda: died in " ".join(texts(browser, "#timeline li.died")),
        )
        joined = texts(browser, "#timeline li.joined")

    assert f"from {victim_id} (dead) to {survivor}" in failover
    assert stored == [1, 0]  # the token: in this tab's session only
    for worker_id in workers.values():
        assert any(t.endswith(f"worker {worker_id} joined") for t in joined), joined


def owners(driver: WebDriver) -> dict[str, str]:
    """Conversation id -> owner, as the conversations table shows them."""
    found = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, "#conversations tbody tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        found[cells[0].text] = cells[3].text.removesuffix(" (dead)")
    return found


def row(driver: WebDriver, cid: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'#conversations tr[data-conversation-id="{cid}"]')


def streaming(driver: WebDriver, word: str) -> str | None:
    """The live view's streamed text, once it shows ``word``."""
    shown: str = driver.find_element(By.ID, "live-stream").text
    return shown if shown.startswith("streaming") and word in shown else None
