"""Issue 27 acceptance: the live-quality metrics after a replay of the shared data equal an offline computation of the
same metrics on the same (label, score) pairs, within 1e-9.

The real fraud job (MiniCluster, exactly-once record of truth) scores about ten days of the shared fraud data, sent
as fast as it goes on the data's own (compressed) clock, with its labels fraud.label_delay_days (7) of event time
after each transaction: the labels of the first three days or so come. Version A decides the first N1 transactions;
then B is promoted (the registry, as `make promote` does) and decides the rest, so both versions have labelled
transactions and the stages differ (A archived, B production). `python -m pipelines.quality` runs as a real process
beside the job with a 2.5-day window (shorter than the labelled span: the window cuts) and a 1 s refresh.

The test reads the committed fraud-scores itself and the labels the replay produced, joins them by transaction id,
keeps the pairs within the window of the newest labelled transaction, and computes per version AUC ROC and AP
(sklearn), precision and recall at the review and decline thresholds (numpy) and card precision@100 (a plain Python
loop, independent of the service's pandas one). The service's final snapshot on model-quality and the gauges it
serves on /metrics must equal those within 1e-9, with the label and fraud counts, window bounds, stages and
training AP exact.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from infra.services import free_port
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.models import Registry
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import committed_scores, fraud_job, wait_scored
from tests.pipeline_util import ROOT, eventually, scrape, select, total, write_test_model

pytestmark = pytest.mark.integration

N1 = 15_000   # scored by A (about a day and a half of the data)
N = 100_000   # in all (about ten days): the labels of the first three days or so are sent
WINDOW_DAYS = 2.5
DAY_MS = 86_400_000
A, B = "fraud-quality-a", "fraud-quality-b"
TRAINING_AP = {A: 0.5, B: 0.375}
KEYS = ("auc_roc", "average_precision", "precision_review", "recall_review", "precision_decline", "recall_decline",
        "card_precision_at_100")


def _model(base, version, seed):
    write_test_model(base, seed, version=version, latest=False)
    (base / version / "metrics.json").write_text(json.dumps({"models": {"mlp": {
        "average_precision": TRAINING_AP[version]}}, "rows": {"test": 1}}))


def card_precision(customer, et, y, s, k=100):
    days: dict[int, dict[int, list]] = {}
    for c, t, lab, sc in zip(customer, et, y, s):
        card = days.setdefault(int(t) // DAY_MS, {}).setdefault(int(c), [-math.inf, 0])
        card[0], card[1] = max(card[0], float(sc)), max(card[1], int(lab))
    per_day = [sum(v[1] for _, v in sorted(cards.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]) / k
               for cards in days.values()]
    return sum(per_day) / len(per_day)


def offline(pairs, review, decline):
    """pairs: (event_time, customer_id, label, score) of one version in the window."""
    et, cust, y, s = (np.array(c) for c in zip(*pairs))
    both = 0 < y.sum() < len(y)
    out = {"labels": len(y), "frauds": int(y.sum()), "window_start": int(et.min()),
           "auc_roc": roc_auc_score(y, s) if both else math.nan,
           "average_precision": average_precision_score(y, s) if both else math.nan,
           "card_precision_at_100": card_precision(cust, et, y, s)}
    for name, thr in (("review", review), ("decline", decline)):
        flagged = s >= thr
        out[f"precision_{name}"] = (y[flagged].sum() / flagged.sum()) if flagged.any() else math.nan
        out[f"recall_{name}"] = y[flagged].sum() / y.sum() if y.sum() else math.nan
    return out


def same(got, want) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return got is None or (isinstance(got, float) and math.isnan(got))
    return got is not None and abs(got - want) <= 1e-9


def test_live_quality_equals_offline_metrics_on_the_same_pairs(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    cfg = load_config()
    base = tmp_path / "models"
    _model(base, A, seed=3)
    _model(base, B, seed=11)
    (base / "LATEST").write_text(f"{A}\n")

    tx_t, lb_t, out_t = topic_factory("lq-tx"), topic_factory("lq-labels"), topic_factory("lq-scores")
    q_t = topic_factory("lq-quality", compacted=True)
    job_port, q_port = free_port(), free_port()
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(base),
           "STREAMSCORE_FRAUD__REGISTRY_POLL_MS": "200", "STREAMSCORE_METRICS__JOB_PORT": str(job_port)}

    def replay(**kw) -> FraudReplay:
        return FraudReplay(cfg, ReplayOptions(rate=0, label_delay_days=cfg.fraud.label_delay_days,
                                              resume_labels=True, **kw),
                           bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t)

    q_log = open(tmp_path / "quality.out", "wb")
    q_env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMSCORE_QUALITY__WINDOW_DAYS": str(WINDOW_DAYS),
             "STREAMSCORE_QUALITY__REFRESH_S": "1"}
    quality = subprocess.Popen([sys.executable, "-m", "pipelines.quality", "--bootstrap", kafka_bootstrap,
                                "--scores-topic", out_t, "--labels-topic", lb_t, "--quality-topic", q_t,
                                "--model-dir", str(base), "--group", f"g-{q_t}", "--metrics-port", str(q_port)],
                               cwd=ROOT, env=q_env, stdout=q_log, stderr=subprocess.STDOUT)

    def quality_output() -> str:
        q_log.flush()
        return (tmp_path / "quality.out").read_text(errors="replace")[-3000:]

    try:
        with fraud_job(tmp_path, kafka_bootstrap, topic_factory, "lq", env, tx=tx_t, labels=lb_t, out=out_t) as job:
            first = replay(limit=N1).run()
            assert first.sent == N1
            wait_scored(job, kafka_bootstrap, out_t, N1, f"the first {N1} transactions scored by {A}")
            Registry(base).promote(B)
            # The job looks at the registry at a batch: the rest, sent now, is what it swaps on (the first of it
            # may still go to A; each pair is grouped by the version its record names).
            rest = replay(skip=N1, limit=N - N1).run()
            assert rest.sent == N - N1
            eventually(lambda: total(scrape(job_port), "streamscore_model_swaps_total", result="swapped") == 1, 60,
                       "the job swapped to B", every=0.5)

            msgs = committed_scores(job, kafka_bootstrap, out_t, N, timeout=300, read_timeout=60)

        # -- the offline computation on the pairs the test reads itself
        scores = {}
        for m in msgs:
            r = serde("fraud_score").decode(m.value())
            assert r["transaction_id"] not in scores, "a duplicate on the exactly-once topic"
            scores[r["transaction_id"]] = r
        labels = [serde("transaction_label").decode(m.value())
                  for m in kafka_util.read_topic(kafka_bootstrap, lb_t, expected=first.labels + rest.labels,
                                                 idle=2, timeout=60)]
        assert len(labels) == first.labels + rest.labels > 20_000
        pairs: dict[str, list] = {}
        for lab in labels:
            r = scores[lab["transaction_id"]]  # every labelled transaction was scored
            pairs.setdefault(r["model_version"], []).append((r["event_time"], r["customer_id"], lab["label"],
                                                             r["score"]))
        end = max(p[0] for ps in pairs.values() for p in ps)
        start = end - int(WINDOW_DAYS * DAY_MS)
        in_window = {v: [p for p in ps if p[0] >= start] for v, ps in pairs.items()}
        assert all(len(in_window[v]) > 1000 for v in (A, B)), {v: len(ps) for v, ps in in_window.items()}
        assert min(p[0] for ps in pairs.values() for p in ps) < start, "the window must cut something off"
        f = cfg.fraud
        want = {v: offline(ps, f.review_threshold, f.decline_threshold) for v, ps in in_window.items()}
        print({v: {k: w[k] for k in ("labels", "frauds", "auc_roc", "average_precision")} for v, w in want.items()})

        # -- the service's final snapshots: the newest per version on model-quality, once they hold every pair
        def final_snapshots():
            assert quality.poll() is None, quality_output()
            newest = {}
            for m in kafka_util.read_topic(kafka_bootstrap, q_t, idle=1, timeout=30):
                s = serde("model_quality").decode(m.value())
                assert m.key().decode() == s["version"]
                newest[s["version"]] = s
            ok = set(newest) == set(want) and all(
                newest[v]["labels"] == want[v]["labels"] and newest[v]["window_end"] == end for v in want)
            return newest if ok else None
        snaps = eventually(final_snapshots, 180, "snapshots over every labelled pair", every=2)

        for v, w in want.items():
            s = snaps[v]
            assert (s["model"], s["frauds"], s["window_start"]) == ("fraud", w["frauds"], w["window_start"]), v
            assert s["training_average_precision"] == TRAINING_AP[v]
            for k in KEYS:
                assert same(s[k], w[k]), f"{v} {k}: service {s[k]!r}, offline {w[k]!r}"
        assert snaps[A]["stage"] == "archived" and snaps[B]["stage"] == "production"

        # -- and the gauges on /metrics
        samples = scrape(q_port)
        for v, w in want.items():
            lv = {"model": "fraud", "version": v, "stage": snaps[v]["stage"]}

            def gauge(name, **extra):
                found = select(samples, name, **lv, **extra)
                assert len(found) == 1, (name, v, extra, found)
                return found[0].value
            assert gauge("streamscore_model_live_labels") == w["labels"]
            assert gauge("streamscore_model_live_frauds") == w["frauds"]
            assert gauge("streamscore_model_training_average_precision") == TRAINING_AP[v]
            for name, key in (("auc_roc", "auc_roc"), ("average_precision", "average_precision"),
                              ("card_precision_at_100", "card_precision_at_100")):
                assert same(gauge(f"streamscore_model_live_{name}"), w[key]), (v, name)
            for thr in ("review", "decline"):
                assert same(gauge("streamscore_model_live_precision", threshold=thr), w[f"precision_{thr}"])
                assert same(gauge("streamscore_model_live_recall", threshold=thr), w[f"recall_{thr}"])
        assert total(samples, "streamscore_quality_labels_total", result="joined") == len(labels)
        assert total(samples, "streamscore_quality_ap_alert_fraction") == cfg.quality.ap_alert_fraction
        assert total(samples, "streamscore_quality_undecodable_total") is None
    finally:
        if quality.poll() is None:
            quality.terminate()
            try:
                quality.wait(20)
            except subprocess.TimeoutExpired:
                quality.kill()
                quality.wait(5)
        q_log.close()
