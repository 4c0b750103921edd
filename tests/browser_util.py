"""Headless Chromium (Debian's chromium + chromium-driver, driven by selenium) for the dashboard browser tests."""

from __future__ import annotations

import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HAVE_CHROMIUM = CHROMIUM.exists() and CHROMEDRIVER.exists()


def driver(performance_log: bool = False):
    """Headless Chromium; with `performance_log`, its DevTools network events are kept for
    ``get_log("performance")``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    if performance_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1180", "--force-device-scale-factor=1", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def login(drv, base_url: str, token: str, timeout: float = 30.0) -> None:
    """Opens the dashboard at `base_url` (which redirects to /login), types the token into the login form and waits
    for the dashboard page."""
    from selenium.webdriver.common.by import By

    drv.get(base_url)
    wait(lambda: drv.find_elements(By.ID, "login-form"), timeout, "the login page")
    drv.find_element(By.ID, "token").send_keys(token)
    drv.find_element(By.ID, "login-submit").click()
    wait(lambda: drv.find_elements(By.ID, "connection-status"), timeout, "the dashboard page after the login")


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
