"""The real dashboard server against the real broker, seen through headless Chromium, fed by a test thread.

Fresh topics per test; a background thread produces real Avro FraudScore / SentimentTrend / DeadLetter / late
records for every panel (the sentiment ones included) while the page is open. The numbers on screen must move, and
must end up equal to what the test reads back from Kafka itself; then the server goes away and the page must say so.
Screenshots go to the test's tmp dir. test_dashboard_pipeline.py does the same with the real fraud job producing the
scores.

The browser logs in through the login form (issue 24): the token must never appear in a URL it visited or requested
(the pages' URLs, DevTools' network log, the resource timing entries), nor in its storage or readable cookies. A
WebSocket from another origin, or without the session cookie, is refused.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from tests import dashboard_util as testkit
from pipelines import kafka_util
from pipelines.serde import serde
from tests.browser_util import HAVE_CHROMIUM
from tests.browser_util import as_int as _int
from tests.browser_util import driver as _driver
from tests.browser_util import login as _login
from tests.browser_util import texts as _texts
from tests.browser_util import wait as _wait

pytestmark = pytest.mark.integration
TOKEN = "browser-test-token-0123456789"


def _visited_urls(driver) -> list[str]:
    """Every URL the browser requested or navigated to, from DevTools' network log (redirects included) and the
    page's resource timing entries."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(params["request"]["url"])
            if params.get("redirectResponse"):
                urls.append(params["redirectResponse"]["url"])
        elif msg.get("method") in ("Network.webSocketCreated", "Page.frameNavigated"):
            urls.append(params.get("url") or params.get("frame", {}).get("url", ""))
    urls += driver.execute_script("return performance.getEntries().map(e => e.name)")
    return urls


def _storage(driver) -> str:
    return driver.execute_script(
        "const all = {}; for (const s of [localStorage, sessionStorage]) for (let i = 0; i < s.length; i++) "
        "all[s.key(i)] = s.getItem(s.key(i)); return JSON.stringify(all) + ' ' + document.cookie")


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian chromium + driver")
def test_dashboard_in_browser(kafka_bootstrap, topic_factory, tmp_path):
    from selenium.webdriver.common.by import By

    topics = {key: topic_factory(f"dash-{key.replace('_', '-')}", partitions=2)
              for key in ("fraud_scores", "sentiment_trends", "dead_letter", "late", "posts_late",
                          "post_sentiment", "transactions", "posts")}
    feeder = testkit.Feeder(kafka_bootstrap, topics)
    driver = None
    try:
        with testkit.run_server(kafka_bootstrap, tmp_path / "logs", topics=topics, token=TOKEN) as server:
            feeder.start()
            driver = _driver(performance_log=True)
            seen = []
            driver.get(server.url)  # no session: the server sends the browser to the login page
            _wait(lambda: driver.find_elements(By.ID, "login-form"), 30, "the login page")
            seen.append(driver.current_url)
            assert driver.current_url == server.url + "login"
            field = driver.find_element(By.ID, "token")
            assert field.get_attribute("type") == "password"
            field.send_keys("not-the-token-0123456789")
            driver.find_element(By.ID, "login-submit").click()
            _wait(lambda: driver.find_element(By.ID, "login-error").text == "wrong token", 30, "the wrong-token note")
            seen.append(driver.current_url)
            _login(driver, server.url, TOKEN)
            seen.append(driver.current_url)
            assert driver.current_url == server.url
            state = lambda: driver.find_element(By.ID, "connection-status").get_attribute("data-state")  # noqa
            _wait(lambda: state() == "connected", 30, "the page to connect")
            cookies = {c["name"]: c for c in driver.get_cookies()}
            session = cookies["streamscore_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/"
            assert TOKEN not in session["value"]

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
            severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
                      and "/login - Failed to load resource: the server responded with a status of 401" not in
                      e.get("message", "")]  # the wrong token typed on purpose above
            assert not severe, severe

            # The token was never in a URL, nor in the page's storage or readable cookies, nor in the server log.
            seen.append(driver.current_url)
            urls = seen + _visited_urls(driver)
            assert any(u.endswith("/login") for u in urls) and any(u.endswith("/ws") for u in urls), urls
            assert not [u for u in urls if TOKEN in u or "token=" in u], urls
            assert TOKEN not in _storage(driver) and "streamscore_session" not in _storage(driver)
            assert TOKEN not in server.log.read_text()

            # The server goes away: the page says so and keeps retrying with backoff.
            server.proc.terminate()
            server.proc.wait(15)
            _wait(lambda: state() == "disconnected", 15, "the disconnected state")
            assert "reconnecting in" in driver.find_element(By.ID, "connection-status").text
    finally:
        feeder.stop.set()
        if driver is not None:
            driver.quit()


class _OtherOrigin(http.server.BaseHTTPRequestHandler):
    """A page on another port of the same host: the same site (the browser sends the SameSite=Strict cookie), but
    another origin."""

    def do_GET(self):
        body = b"<!doctype html><title>other origin</title><p>another origin</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


OPEN_WS = """
const done = arguments[arguments.length - 1];
const ws = new WebSocket(arguments[0]);
ws.onopen = () => { ws.close(); done("open"); };
ws.onclose = (ev) => done("refused " + ev.code);
"""


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian chromium + driver")
def test_websocket_from_another_origin_or_without_the_cookie_is_refused(tmp_path):
    from selenium.webdriver.common.by import By

    from infra.services import free_port

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtherOrigin)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    driver = None
    try:
        with testkit.run_server(f"127.0.0.1:{free_port()}", tmp_path / "logs", token=TOKEN) as server:
            driver = _driver()
            driver.set_script_timeout(30)
            ws = server.ws_url
            # Not logged in: the login page's own origin, but no cookie.
            driver.get(server.url + "login")
            assert driver.execute_async_script(OPEN_WS, ws).startswith("refused")
            assert server.metrics()['streamscore_dashboard_rejected_total{reason="no-session"}'] >= 1
            _login(driver, server.url, TOKEN)
            assert driver.execute_async_script(OPEN_WS, ws) == "open"  # logged in, same origin
            # Another origin on the same host: Chromium sends the cookie (same site), the Origin check refuses.
            driver.get(f"http://127.0.0.1:{other.server_address[1]}/")
            assert driver.execute_async_script(OPEN_WS, ws).startswith("refused")
            assert server.metrics()['streamscore_dashboard_rejected_total{reason="origin"}'] >= 1
            # Logged out: the cookie is gone and so is the session.
            driver.get(server.url + "logout")
            _wait(lambda: driver.find_elements(By.ID, "login-form"), 30, "the login page after logging out")
            assert driver.execute_async_script(OPEN_WS, ws).startswith("refused")
            assert "streamscore_session" not in {c["name"] for c in driver.get_cookies()}
    finally:
        other.shutdown()
        if driver is not None:
            driver.quit()
