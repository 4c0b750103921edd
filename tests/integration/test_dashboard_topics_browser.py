"""The per-topic view in headless Chromium against the real dashboard server and broker (issue 28).

Real topics, real Avro: posts with texts (one of them HTML that must show as text), their scores, and per-topic
trend windows on the wall clock, where one topic's newest window drops well below its last hour. The page must show
every topic's card with its volume, the three most negative and three most positive posts with their texts, and the
shift marker on that topic only; the HTML text must appear literally and create no element.
"""

from __future__ import annotations

import time

import pytest

from pipelines import kafka_util
from pipelines.serde import serde
from tests import dashboard_util as testkit
from tests.browser_util import HAVE_CHROMIUM
from tests.browser_util import login as _login
from tests.browser_util import texts as _texts
from tests.browser_util import wait as _wait

pytestmark = pytest.mark.integration

TOPICS = ("politics", "sports", "tech", "markets", "science")
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"> worst day ever'


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian chromium + driver")
def test_topic_cards_examples_and_shift_marker(kafka_bootstrap, topic_factory, tmp_path):
    from selenium.webdriver.common.by import By

    topics = {key: topic_factory(f"dash-topics-{key.replace('_', '-')}", partitions=1)
              for key in ("fraud_scores", "sentiment_trends", "dead_letter", "late", "posts_late",
                          "post_sentiment", "transactions", "posts")}
    now = int(time.time() * 1000)
    base = (now // 60_000 - 30) * 60_000
    p = kafka_util.producer(kafka_bootstrap)
    post, score, trend = serde("social_post"), serde("sentiment_score"), serde("sentiment_trend")
    expected = {}
    for ti, topic in enumerate(TOPICS):
        rows = []
        for i in range(12):
            pos = (i + 0.5) / 12.5
            neg = 1 - pos - 0.02
            pid = f"{topic}-{i}"
            text = HOSTILE if (topic == "politics" and i == 0) else f"{topic} post {i}"
            rows.append((pos - neg, text))
            p.produce(topics["posts"], post.encode({"post_id": pid, "author": "a", "text": text, "topic": topic,
                                                    "language": "en", "event_time": now, "produced_at": now}))
            p.produce(topics["post_sentiment"], score.encode({
                "post_id": pid, "topic": topic, "event_time": now, "label": "positive" if pos > neg else "negative",
                "p_negative": neg, "p_neutral": 0.02, "p_positive": pos, "model_version": "test",
                "produced_at": now, "scored_at": now}))
        rows.sort()
        expected[topic] = ([t for _, t in rows[:3]], [t for _, t in rows[::-1][:3]])
        p.flush(10)  # posts before their scores (one partition each, same order)
        for w in range(31):
            mean = 0.6 if not (topic == "politics" and w == 30) else 0.2  # politics drops by 0.4 now
            p.produce(topics["sentiment_trends"], trend.encode({
                "topic": topic, "window_start": base + w * 60_000, "window_end": base + (w + 1) * 60_000,
                "count_negative": 5 + ti, "count_neutral": 3, "count_positive": 7, "mean_positivity": mean}))
    assert p.flush(30) == 0

    driver = None
    try:
        with testkit.run_server(kafka_bootstrap, tmp_path / "logs", topics=topics) as server:
            from tests.browser_util import driver as _driver
            driver = _driver()
            _login(driver, server.url, server.token)
            _wait(lambda: len(_texts(driver, "topic-card")) == len(TOPICS), 60, "one card per topic")

            def card(topic, testid):
                return driver.execute_script(
                    "return [...document.querySelectorAll(`[data-testid='topic-card'][data-topic='${arguments[0]}']"
                    " [data-testid='${arguments[1]}']`)].map(e => e.querySelector('.txt').textContent)",
                    topic, testid)

            for topic, (neg, pos) in expected.items():
                _wait(lambda: card(topic, "example-negative") == neg, 30, f"{topic}'s most negative posts {neg}")
                assert card(topic, "example-positive") == pos
            assert HOSTILE in card("politics", "example-negative")
            assert driver.execute_script("return document.querySelectorAll('#topic-cards img').length") == 0
            assert driver.title != "pwned"
            marked = driver.execute_script(
                "return [...document.querySelectorAll(`[data-testid='shift-marker']`)]"
                ".map(e => [e.closest('[data-testid=topic-card]').dataset.topic, e.textContent])")
            assert marked == [["politics", "shift -0.40"]], marked
            vols = driver.execute_script(
                "return [...document.querySelectorAll('[data-testid=topic-card] .vol')].map(e => e.textContent)")
            assert vols == [f"{5 + TOPICS.index(t) + 10} posts/window" for t in sorted(TOPICS)], vols
            assert _texts(driver, "shift-threshold") == ["0.15"]
            driver.find_element(By.ID, "topic-cards").screenshot(str(tmp_path / "topic-cards.png"))
            severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            assert not severe, severe
    finally:
        if driver is not None:
            driver.quit()
