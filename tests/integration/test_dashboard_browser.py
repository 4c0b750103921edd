"""The real dashboard server against the real broker, seen through headless Chromium.

Fresh topics per test; a background thread produces real Avro FraudScore / SentimentTrend / DeadLetter / late
records while the page is open. The numbers on screen must move, and must end up equal to what the test reads back
from Kafka itself. A screenshot goes to docs/dashboard.png and to the test's tmp dir.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from dashboard import testkit
from pipelines import kafka_util
from pipelines.serde import serde

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1180", "--force-device-scale-factor=1", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def _texts(driver, testid: str) -> list[str]:
    """textContent of every element with this data-testid, read in one script (rows are re-rendered often)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(`[data-testid='${arguments[0]}']`)].map(e => e.textContent)", testid)


def _int(driver, testid: str) -> int | None:
    texts = _texts(driver, testid)
    text = texts[0].replace(",", "").strip() if texts else ""
    return int(text) if text.isdigit() else None


def _wait(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs Debian chromium + driver")
def test_dashboard_in_browser(kafka_bootstrap, topic_factory, tmp_path):
    from selenium.webdriver.common.by import By

    topics = {key: topic_factory(f"dash-{key.replace('_', '-')}", partitions=2)
              for key in ("fraud_scores", "sentiment_trends", "dead_letter", "late", "posts_late",
                          "post_sentiment", "transactions", "posts")}
    feeder = testkit.Feeder(kafka_bootstrap, topics)
    driver = None
    try:
        with testkit.run_server(kafka_bootstrap, tmp_path / "logs", topics=topics) as server:
            feeder.start()
            driver = _driver()
            driver.get(server.url)
            state = lambda: driver.find_element(By.ID, "connection-status").get_attribute("data-state")  # noqa
            _wait(lambda: state() == "connected", 30, "the page to connect")

            # The numbers move while records flow.
            first = _wait(lambda: _int(driver, "fraud-scores-total"), 60, "the first fraud scores on screen")
            _wait(lambda: (_int(driver, "fraud-scores-total") or 0) > first + 20, 30, "the fraud count to grow")
            seq1 = _int(driver, "snapshot-seq")
            _wait(lambda: (_int(driver, "dead-letter-total") or 0) >= 1, 60, "a dead letter on screen")
            _wait(lambda: len(_texts(driver, "decision-row")) >= 5, 60,
                  "review/decline rows")
            _wait(lambda: len(_texts(driver, "sentiment-topic"))
                  == len(testkit.POST_TOPICS), 30, "one sentiment line per topic")
            _wait(lambda: driver.find_element(By.ID, "latency-fraud-p99").text not in ("", "–"), 20, "latency")
            _wait(lambda: driver.find_element(By.ID, "events-out-rate").text not in ("", "–", "0.0"), 20,
                  "a non-zero out rate")
            _wait(lambda: driver.find_element(By.ID, "events-in-rate").text not in ("", "–", "0.0"), 20,
                  "a non-zero in rate")
            time.sleep(12)  # let the throughput line build up for the screenshot
            assert _int(driver, "snapshot-seq") > seq1, "snapshots stopped arriving"
            live = tmp_path / "dashboard.png"
            driver.save_screenshot(str(live))
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(live, ROOT / "docs" / "dashboard.png")

            feeder.stop.set()
            feeder.join(30)
            assert feeder.error is None, feeder.error

            # Everything produced is in Kafka now; the screen must converge to exactly what Kafka holds.
            counts = {key: len(kafka_util.read_topic(kafka_bootstrap, topics[key], idle=1.5))
                      for key in ("dead_letter", "late")}
            decoded = [serde("fraud_score").decode(m.value())
                       for m in kafka_util.read_topic(kafka_bootstrap, topics["fraud_scores"], idle=1.5)]
            assert len(decoded) == feeder.sent["fraud_scores"]
            assert counts["dead_letter"] == feeder.sent["dead_letter"] >= 1
            _wait(lambda: _int(driver, "fraud-scores-total") == len(decoded), 30,
                  f"{len(decoded)} fraud scores on screen")
            assert _int(driver, "dead-letter-total") == counts["dead_letter"]
            assert _int(driver, "late-transactions") == counts["late"]
            assert _int(driver, "decisions-review") == sum(r["decision"] == "REVIEW" for r in decoded)
            assert _int(driver, "decisions-decline") == sum(r["decision"] == "DECLINE" for r in decoded)
            rows = _texts(driver, "decision-row")
            assert rows and all(("REVIEW" in r or "DECLINE" in r) for r in rows)
            # Lag (log-end minus the dashboard group's committed offsets) drains to 0 once it caught up.
            _wait(lambda: _int(driver, "lag-total") == 0, 30, "the dashboard's own lag to reach 0")
            assert _int(driver, "sentiment-scores-total") == feeder.sent["post_sentiment"]
            driver.save_screenshot(str(tmp_path / "dashboard-final.png"))
            severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            assert not severe, severe

            # The server goes away: the page says so and keeps retrying with backoff.
            server.proc.terminate()
            server.proc.wait(15)
            _wait(lambda: state() == "disconnected", 15, "the disconnected state")
            assert "reconnecting in" in driver.find_element(By.ID, "connection-status").text
    finally:
        feeder.stop.set()
        if driver is not None:
            driver.quit()
