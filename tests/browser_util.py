"""Headless Chromium (Debian's chromium + chromium-driver, driven by selenium) for the dashboard browser tests."""

from __future__ import annotations

import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HAVE_CHROMIUM = CHROMIUM.exists() and CHROMEDRIVER.exists()


def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1180", "--force-device-scale-factor=1", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def texts(drv, testid: str) -> list[str]:
    """textContent of every element with this data-testid, read in one script (rows are re-rendered often)."""
    return drv.execute_script(
        "return [...document.querySelectorAll(`[data-testid='${arguments[0]}']`)].map(e => e.textContent)", testid)


def as_int(drv, testid: str) -> int | None:
    found = texts(drv, testid)
    text = found[0].replace(",", "").strip() if found else ""
    return int(text) if text.isdigit() else None


def wait(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
