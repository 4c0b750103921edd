"""`make run`, then the dashboard in headless Chromium: at least five topics, each with trend windows that end
within the last ten minutes of the wall clock (the replays run on the live clock under `make run`), read from
`sentiment-trends` and shown on the topic cards; then `make stop`.

The whole stack runs under a temporary run.dir (STREAMSCORE_RUN__DIR) with every port free and private, against
the session's broker and Redis (so `make stop` manages neither), and default topic names. The screenshot is kept
in the test's tmp dir; with DASHBOARD_SCREENSHOT=<path> (how the README's image is made:
`DASHBOARD_SCREENSHOT=docs/img/dashboard.png python -m pytest tests/integration/test_make_run_dashboard.py`)
it is also written there."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from infra.services import free_port
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.serde import serde
from tests.browser_util import HAVE_CHROMIUM
from tests.browser_util import texts as _texts
from tests.browser_util import wait as _wait

ROOT = Path(__file__).resolve().parents[2]
TEN_MIN_MS = 10 * 60_000

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.skipif(shutil.which("make") is None, reason="no make"),
              pytest.mark.skipif(not HAVE_CHROMIUM, reason="no chromium")]

PORT_KEYS = ("STREAMSCORE_DASHBOARD__PORT", "STREAMSCORE_FLINK__LOCAL_REST_PORT",
             "STREAMSCORE_FLINK__SENTIMENT_REST_PORT", "STREAMSCORE_METRICS__PRODUCER_PORT",
             "STREAMSCORE_METRICS__JOB_PORT", "STREAMSCORE_METRICS__DASHBOARD_PORT",
             "STREAMSCORE_METRICS__LAG_EXPORTER_PORT", "STREAMSCORE_METRICS__SENTIMENT_JOB_PORT",
             "STREAMSCORE_METRICS__POSTS_PRODUCER_PORT", "STREAMSCORE_METRICS__PROMETHEUS_PORT")


def recent_windows(bootstrap: str, topic: str, since_ms: int) -> dict[str, int]:
    """Each sentiment topic's newest window end on `topic` among windows ending after `since_ms`."""
    from confluent_kafka import TopicPartition

    c = kafka_util.consumer(bootstrap, f"make-run-check-{secrets.token_hex(4)}")
    s = serde("sentiment_trend")
    newest: dict[str, int] = {}
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        idle = 0
        while idle < 4:
            msgs = c.consume(num_messages=5000, timeout=0.5)
            idle = idle + 1 if not msgs else 0
            for m in msgs:
                if m.error() is None:
                    r = s.decode(m.value())
                    if r["window_end"] > since_ms:
                        newest[r["topic"]] = max(newest.get(r["topic"], 0), r["window_end"])
    finally:
        c.close()
    return newest


def test_make_run_dashboard_shows_five_topics_with_recent_windows(kafka_bootstrap, redis_url, tmp_path):
    cfg = load_config()
    run_dir = tmp_path / "run"
    token = secrets.token_urlsafe(24)
    env = dict(os.environ, STREAMSCORE_RUN__DIR=str(run_dir), KAFKA_BOOTSTRAP=kafka_bootstrap, REDIS_URL=redis_url,
               STREAMSCORE_KAFKA__DATA_DIR=str(tmp_path / "kafka"), STREAMSCORE_DASHBOARD__TOKEN=token,
               **{k: str(free_port()) for k in PORT_KEYS})
    port = env["STREAMSCORE_DASHBOARD__PORT"]

    def make(target: str, timeout: float) -> str:
        r = subprocess.run(["make", "--no-print-directory", target], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == 0, f"make {target}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
        return r.stdout + r.stderr

    driver = None
    try:
        make("run", 600)
        trends = cfg.topics.sentiment_trends
        # A one-minute window closes once the watermark passes its end (out-of-orderness later): within about two
        # minutes of the jobs' start on the live clock.
        newest = _wait(lambda: (lambda w: w if len(w) >= 5 else None)(
            recent_windows(kafka_bootstrap, trends, int(time.time() * 1000) - TEN_MIN_MS)),
            480, "five topics with trend windows ending in the last ten minutes")
        from tests.browser_util import driver as _driver

        from tests.browser_util import login

        driver = _driver()
        login(driver, f"http://127.0.0.1:{port}/", token)

        def shown() -> list[str] | None:
            cards = driver.execute_script(
                "return [...document.querySelectorAll('[data-testid=topic-card]')]"
                ".filter(c => c.querySelector('.vol').textContent).map(c => c.dataset.topic)")
            return [t for t in cards if t in newest] if len(set(cards) & newest.keys()) >= 5 else None

        topics = _wait(shown, 120, "five topic cards with windows")
        now = int(time.time() * 1000)
        assert all(now - newest[t] <= TEN_MIN_MS for t in topics), (now, newest)
        assert _texts(driver, "connection-status")
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            dest = ROOT / os.environ["DASHBOARD_SCREENSHOT"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, dest)
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        if driver is not None:
            driver.quit()
        make("stop", 180)
