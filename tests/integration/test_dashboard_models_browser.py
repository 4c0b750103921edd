"""The models panel (issue 27) in headless Chromium against the real dashboard server and broker.

Real topics, real Avro: FraudScore records with the shadow fields (an A/B split: v1 decides the CONTROL arm, v3 the
CANDIDATE arm, v2 scores every record in the shadow) and model-quality snapshots for v1 (production) and v2
(shadow). The page must show both deciding versions with their counts, the A/B shares, the share of records the
shadow would decide otherwise at the configured thresholds, the mean score difference and the declines, and both
versions' quality side by side with "–" for a null. Hostile model-quality records (bytes that are no Avro, a corrupt
body, another record's bytes, a 200 kB version and stage of HTML, NaN) must be counted as undecodable or shown as
bounded text, and break nothing.
"""

from __future__ import annotations

import math
import random
import time

import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.serde import serde
from tests import dashboard_util as testkit
from tests.browser_util import HAVE_CHROMIUM
from tests.browser_util import as_int as _int
from tests.browser_util import login as _login
from tests.browser_util import texts as _texts
from tests.browser_util import wait as _wait

pytestmark = pytest.mark.integration

HTML = '<img src=x onerror="document.title=\'pwned\'">'
METRICS = ("auc_roc", "average_precision", "precision_review", "recall_review", "precision_decline",
           "recall_decline", "card_precision_at_100", "training_average_precision")


def _decide(score: float, review: float, decline: float) -> str:
    return "DECLINE" if score >= decline else "REVIEW" if score >= review else "APPROVE"


def _quality(version: str, stage: str, now: int, **metrics) -> dict:
    return {"model": "fraud", "version": version, "stage": stage, "window_start": now - 86_400_000,
            "window_end": now - 60_000, "labels": metrics.pop("labels", 5000), "frauds": metrics.pop("frauds", 42),
            **{k: metrics.get(k) for k in METRICS}, "updated_at": now}


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian chromium + driver")
def test_models_panel_production_against_shadow_and_quality(kafka_bootstrap, topic_factory, tmp_path):
    fraud = load_config(None).fraud
    review, decline = fraud.review_threshold, fraud.decline_threshold
    topics = {key: topic_factory(f"dash-models-{key.replace('_', '-')}", partitions=1)
              for key in ("fraud_scores", "model_quality", "sentiment_trends", "dead_letter", "late", "posts_late",
                          "post_sentiment", "transactions", "posts")}
    now = int(time.time() * 1000)
    fs, mq = serde("fraud_score"), serde("model_quality")
    p = kafka_util.producer(kafka_bootstrap)
    differ = declines_prod = declines_shadow = 0
    diffs = []
    for i in range(200):
        candidate = i % 5 == 4
        score = 0.3 if candidate else 0.1 + (i % 8) * 0.1
        shadow = score + 0.15 if (not candidate and i % 4 == 3) else score
        mine, theirs = _decide(score, review, decline), _decide(shadow, review, decline)
        if not candidate:
            differ += mine != theirs
            diffs.append(abs(score - shadow))
            declines_prod += mine == "DECLINE"
            declines_shadow += theirs == "DECLINE"
        rec = {**testkit.fraud_score(random.Random(i), i, now), "score": score, "decision": mine,
               "model_version": "v3" if candidate else "v1", "shadow_version": "v2", "shadow_score": shadow,
               "ab_arm": "CANDIDATE" if candidate else "CONTROL", "rule_set_version": 0, "rule": None}
        raw = fs.encode(rec)
        assert fs.decode(raw).get("shadow_score") == shadow  # the schema carries the shadow fields
        p.produce(topics["fraud_scores"], raw, key=str(i).encode())
    # Hostile model-quality records first: no Avro, a corrupt body, a FraudScore on the wrong topic, and a decodable
    # snapshot with a huge HTML version and stage and NaN / inf metrics.
    for bad in (b"not avro at all", mq.encode(_quality("v9", "shadow", now))[:14] + b"\xff" * 5, raw):
        p.produce(topics["model_quality"], bad, key=b"bad")
    huge = HTML + "x" * 200_000
    p.produce(topics["model_quality"], mq.encode(_quality(huge, huge, now, auc_roc=math.nan,
                                                          average_precision=math.inf)), key=b"huge")
    p.produce(topics["model_quality"], mq.encode(_quality("v1", "production", now - 5000, auc_roc=0.5)), key=b"v1")
    p.produce(topics["model_quality"], mq.encode(_quality(
        "v1", "production", now, auc_roc=0.8764, average_precision=0.5432, precision_review=0.2511,
        recall_review=0.7012, precision_decline=0.6123, recall_decline=0.3021, card_precision_at_100=None,
        training_average_precision=0.5811)), key=b"v1")
    p.produce(topics["model_quality"], mq.encode(_quality(
        "v2", "shadow", now, labels=4900, frauds=40, auc_roc=0.9012, average_precision=0.6104,
        training_average_precision=0.6233)), key=b"v2")
    assert p.flush(30) == 0

    n = 160
    differ_text = f"{100 * round(differ / n, 4):.1f} % ({differ})"
    mean_text = f"{round(sum(diffs) / n, 4):.4f}"
    assert differ > 0 and declines_shadow > declines_prod  # the data has something to show

    driver = None
    try:
        with testkit.run_server(kafka_bootstrap, tmp_path / "logs", topics=topics) as server:
            from tests.browser_util import driver as _driver
            driver = _driver()
            _login(driver, server.url, server.token)

            def rows(testid, *attrs):
                return driver.execute_script(
                    "return [...document.querySelectorAll(`[data-testid='${arguments[0]}']`)].map(r => "
                    "[...arguments[1].map(a => r.getAttribute(a)), ...[...r.children].map(c => c.textContent)])",
                    testid, list(attrs))

            _wait(lambda: [r[:1] + r[3:4] for r in rows("models-version-row", "data-version")] ==
                  [["v1", "160"], ["v3", "40"]], 60, "both deciding versions with all their records")
            v1 = rows("models-version-row", "data-version")[0]
            assert v1[2] == "production" and v1[4] == "80.0 %"
            ab = _texts(driver, "models-ab")[0]
            assert "CONTROL 80.0 % (v1)" in ab and "CANDIDATE 20.0 % (v3)" in ab, ab

            shadow = {(r[0], r[1]): r[2:] for r in rows("models-shadow-row", "data-deciding", "data-shadow")}
            assert set(shadow) == {("v1", "v2"), ("v3", "v2")}, shadow
            assert shadow[("v1", "v2")][2:6] == ["160", differ_text, mean_text,
                                                 f"{declines_prod} / {declines_shadow} of 160"], shadow
            assert shadow[("v3", "v2")][2:6] == ["40", "0.0 % (0)", "0.0000", "0 / 0 of 40"], shadow
            assert _texts(driver, "models-differ")[0] == differ_text
            note = _texts(driver, "models-note")[0]
            assert "configured thresholds" in note and f"{decline:.2f}" in note, note

            def quality():
                heads = _texts(driver, "models-quality-version")
                cells = driver.execute_script(
                    "const out = {}; for (const tr of document.querySelectorAll('#models-quality tbody tr')) "
                    "out[tr.dataset.metric] = [...tr.querySelectorAll('td.num')].map(td => td.textContent); "
                    "return out")
                return heads, cells

            _wait(lambda: quality()[0] == ["v1", "v2", huge[:64]], 30, "production, shadow, then the hostile one")
            _wait(lambda: quality()[1].get("auc_roc", [None])[0] == "0.876", 30, "v1's newest snapshot")
            heads, cells = quality()
            assert cells["stage"] == ["production", "shadow", huge[:64]]
            assert cells["labels"] == ["5,000", "4,900", "5,000"] and cells["frauds"] == ["42", "40", "42"]
            assert cells["auc_roc"] == ["0.876", "0.901", "–"]            # NaN shows as missing
            assert cells["average_precision"] == ["0.543", "0.610", "–"]  # inf too
            assert cells["card_precision_at_100"] == ["–", "–", "–"]      # null
            assert cells["training_average_precision"] == ["0.581", "0.623", "–"]
            assert cells["precision_review"][:2] == ["0.251", "–"] and cells["recall_decline"][:2] == ["0.302", "–"]

            _wait(lambda: _int(driver, "decode-errors") == 3, 30, "the three undecodable model-quality records")
            assert driver.execute_script("return document.querySelectorAll('img').length") == 0
            assert driver.title != "pwned"
            assert _texts(driver, "connection-status") == ["connected"]
            driver.find_element("id", "models-card").screenshot(str(tmp_path / "models.png"))
            severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            assert not severe, severe
    finally:
        if driver is not None:
            driver.quit()
