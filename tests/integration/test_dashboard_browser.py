"""The real dashboard server against the real broker, seen through headless Chromium, fed by a test thread.

Fresh topics per test; a background thread produces real Avro FraudScore / SentimentTrend / DeadLetter / late
records for every panel (the sentiment ones included) while the page is open. The numbers on screen must move, and
must end up equal to what the test reads back from Kafka itself; then the server goes away and the page must say so.
Screenshots go to the test's tmp dir. test_dashboard_pipeline.py does the same with the real fraud job producing the
scores, and writes docs/dashboard.png.
"""

from __future__ import annotations

import time

import pytest

from tests import dashboard_util as testkit
from pipelines import kafka_util
from pipelines.serde import serde
from tests.browser_util import HAVE_CHROMIUM
from tests.browser_util import as_int as _int
from tests.browser_util import driver as _driver
from tests.browser_util import texts as _texts
from tests.browser_util import wait as _wait

pytestmark = pytest.mark.integration

@pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian chromium + driver")
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
            driver.save_screenshot(str(tmp_path / "dashboard.png"))

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
