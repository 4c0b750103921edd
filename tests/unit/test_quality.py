"""pipelines/quality.py: the join of scores and delayed labels, its bounds, the window, the metric functions against
an independent implementation, and the gauges and snapshots of one refresh (no broker: records are fed in)."""

from __future__ import annotations

import math
from itertools import groupby

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import metrics
from pipelines.config import Config
from pipelines.quality import DAY_MS, QualityService, QualityState, live_metrics, state_from_config
from pipelines.serde import serde

T0 = 1_525_132_800_000  # 2018-05-01 00:00 UTC


def state(**kw) -> QualityState:
    args = dict(label_delay_ms=7 * DAY_MS, margin_ms=DAY_MS, window_ms=7 * DAY_MS, max_pending_scores=1000,
                max_pending_labels=1000, max_window_labels=1000)
    return QualityState(**{**args, **kw})


def score(txid, et, s, version="A", customer=1, **extra):
    return {"transaction_id": txid, "event_time": et, "customer_id": customer, "score": s, "model_version": version,
            **extra}


def label(txid, y, tx_time=T0):
    return {"transaction_id": txid, "label": y, "tx_time": tx_time}


# ------------------------------------------------------------------------------------------------ the join


def test_score_then_label_and_label_then_score_join():
    st_ = state()
    assert st_.add_score(score(1, T0, 0.9)) == "stored"
    assert st_.add_label(label(1, 1)) == "joined"
    assert st_.add_label(label(2, 0)) == "pending"
    assert st_.add_score(score(2, T0 + 1, 0.2, customer=7)) == "joined"
    assert st_.windows["A"] == {1: (T0, 1, 1, 0.9), 2: (T0 + 1, 7, 0, 0.2)}
    assert not st_.scores and not st_.labels
    assert st_.counts.labels == {"joined": 2, "pending": 1}
    assert st_.counts.scores == {"stored": 1, "joined": 2}


def test_duplicates_and_invalid_labels_are_counted_not_joined():
    st_ = state()
    st_.add_score(score(1, T0, 0.9))
    assert st_.add_score(score(1, T0, 0.1)) == "duplicate"  # the first score stays
    st_.add_label(label(1, 1))
    assert st_.add_label(label(1, 1)) == "duplicate"
    assert st_.add_score(score(1, T0, 0.3)) == "duplicate"
    assert st_.add_label(label(3, 2)) == "invalid"
    assert st_.add_score(score(4, T0, float("nan"))) == "invalid"
    assert st_.windows["A"] == {1: (T0, 1, 1, 0.9)}


def test_each_version_gets_the_transactions_it_scored():
    st_ = state()
    st_.add_score(score(1, T0, 0.9, version="A", shadow_version="S", shadow_score=0.4))
    st_.add_score(score(2, T0, 0.8, version="B", shadow_version="S", shadow_score=0.3))  # A/B: B decided
    st_.add_score(score(3, T0, 0.7, version="A", shadow_version=None, shadow_score=None))
    for t in (1, 2, 3):
        st_.add_label(label(t, 1))
    assert {v: sorted((t, p[3]) for t, p in w.items()) for v, w in st_.windows.items()} == {
        "A": [(1, 0.9), (3, 0.7)], "B": [(2, 0.8)], "S": [(1, 0.4), (2, 0.3)]}


def test_scores_expire_after_the_label_delay_and_margin_of_event_time():
    st_ = state()
    st_.add_score(score(1, T0, 0.5))
    st_.add_score(score(2, T0 + 8 * DAY_MS - 1, 0.5))
    st_.expire()
    assert set(st_.scores) == {1, 2}  # 8 days - 1 ms: not yet
    st_.add_score(score(3, T0 + 8 * DAY_MS + 1, 0.5))
    st_.expire()
    assert set(st_.scores) == {2, 3} and st_.counts.scores["expired"] == 1
    assert st_.add_label(label(1, 1, T0)) == "pending"  # its score is gone: the label waits, then expires
    st_.expire()
    assert not st_.labels and st_.counts.labels["expired"] == 1


def test_a_label_waits_the_margin_for_its_score():
    st_ = state()
    st_.add_score(score(1, T0, 0.5))
    st_.add_label(label(9, 1, T0 + DAY_MS // 2))  # ahead of the scores: waits
    st_.add_score(score(2, T0 + DAY_MS, 0.5))
    st_.expire()
    assert 9 in st_.labels
    st_.add_score(score(3, T0 + 2 * DAY_MS, 0.5))
    st_.expire()
    assert 9 not in st_.labels


def test_the_clock_waits_for_every_scores_partition():
    """One partition read days ahead of another (a start reading the topics back) expires nothing of the other."""
    st_ = state()
    st_.assign([0, 1])
    st_.add_score(score(1, T0, 0.5), partition=0)
    st_.add_label(label(2, 1, T0 + DAY_MS))  # its score is in partition 1, not read yet
    st_.add_score(score(3, T0 + 20 * DAY_MS, 0.5), partition=0)
    st_.expire()
    assert st_.clock is None and 1 in st_.scores and 2 in st_.labels
    assert st_.add_score(score(2, T0 + DAY_MS, 0.7), partition=1) == "joined"
    assert st_.clock == T0 + DAY_MS
    st_.add_score(score(4, T0 + 10 * DAY_MS, 0.5), partition=1)
    st_.expire()
    assert 1 not in st_.scores and 3 in st_.scores  # now partition 1 is at day 10 too


def test_count_bounds_drop_the_oldest():
    st_ = state(max_pending_scores=3, max_pending_labels=2)
    for t, et in ((1, T0 + 5), (2, T0 + 1), (3, T0 + 3), (4, T0 + 4)):
        st_.add_score(score(t, et, 0.5))
    assert set(st_.scores) == {1, 3, 4}  # 2 was the oldest in event time
    for t in (10, 11, 12):
        st_.add_label(label(t, 0))
    assert list(st_.labels) == [11, 12]
    assert st_.counts.scores["expired"] == 1 and st_.counts.labels["expired"] == 1
    for i in range(5000):  # the expiry heap stays bounded too
        st_.add_score(score(100 + i, T0 + 10 + i, 0.5))
        st_.expire()
    assert len(st_._heap) <= 2 * len(st_.scores) + 1024


def test_window_is_event_time_back_from_the_newest_labelled_transaction():
    st_ = state(window_ms=2 * DAY_MS)
    for t, day in enumerate((0, 1, 2, 3, 3.5)):
        st_.add_score(score(t, T0 + int(day * DAY_MS), t / 10))
        st_.add_label(label(t, t % 2))
    w = st_.window("A")
    assert list(w["transaction_id"]) == [2, 3, 4]  # from day 3.5 - 2 = 1.5 on
    assert list(w["event_time"]) == sorted(w["event_time"])
    assert set(st_.windows["A"]) == {2, 3, 4}  # pruned
    capped = state(max_window_labels=2)
    for t in range(5):
        capped.add_score(score(t, T0 + t, 0.5))
        capped.add_label(label(t, 0))
    assert list(capped.window("A")["transaction_id"]) == [3, 4]


def test_window_start_day_boundary():
    st_ = state(window_ms=2 * DAY_MS)
    st_.add_score(score(1, T0, 0.5))
    st_.add_label(label(1, 0))
    st_.add_score(score(2, T0 + 2 * DAY_MS, 0.5))
    st_.add_label(label(2, 1))
    assert list(st_.window("A")["transaction_id"]) == [1, 2]  # exactly window_days back is in


def test_state_from_config():
    cfg = Config().with_overrides({"quality": {"window_days": 3, "expiry_margin_days": 0.5}})
    s = state_from_config(cfg)
    assert s.window_ms == 3 * DAY_MS and s.score_ttl_ms == int(7.5 * DAY_MS) and s.label_ttl_ms == DAY_MS // 2


# ------------------------------------------------------------------------------------------------ metrics


def naive_auc(y, s):
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def naive_ap(y, s):
    """sum over the distinct scores, highest first, of (recall_n - recall_{n-1}) * precision_n."""
    pairs = sorted(zip(s, y), key=lambda p: -p[0])
    total, tp, seen, ap, last_recall = sum(y), 0, 0, 0.0, 0.0
    for _, group in groupby(pairs, key=lambda p: p[0]):
        g = list(group)
        seen += len(g)
        tp += sum(lab for _, lab in g)
        recall = tp / total
        ap += (recall - last_recall) * (tp / seen)
        last_recall = recall
    return ap


def naive_card_precision(customer, et, y, s, k):
    days = {}
    for c, t, lab, sc in zip(customer, et, y, s):
        card = days.setdefault(t // DAY_MS, {}).setdefault(c, [-math.inf, 0])
        card[0], card[1] = max(card[0], sc), max(card[1], lab)
    out = []
    for cards in days.values():
        top = sorted(cards.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        out.append(sum(v[1] for _, v in top) / k)
    return sum(out) / len(out)


def check(y, s, customer, et, review=0.5, decline=0.9, k=100):
    got = live_metrics(np.array(y), np.array(s), np.array(customer), np.array(et), review, decline, k)
    n, frauds = len(y), sum(y)
    assert (got["labels"], got["frauds"]) == (n, frauds)
    both = 0 < frauds < n
    want = {"auc_roc": naive_auc(y, s) if both else math.nan, "average_precision": naive_ap(y, s) if both else math.nan,
            "card_precision_at_100": naive_card_precision(customer, et, y, s, k) if n else math.nan}
    for name, thr in (("review", review), ("decline", decline)):
        flagged = [lab for lab, sc in zip(y, s) if sc >= thr]
        want[f"precision_{name}"] = sum(flagged) / len(flagged) if flagged else math.nan
        want[f"recall_{name}"] = sum(flagged) / frauds if frauds else math.nan
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_metrics_on_a_small_example():
    y = [1, 0, 1, 0, 0, 1]
    s = [0.95, 0.6, 0.5, 0.5, 0.1, 0.92]
    check(y, s, [1, 2, 3, 1, 2, 3], [T0, T0, T0, T0 + DAY_MS, T0 + DAY_MS, T0 + DAY_MS], k=2)
    got = live_metrics(np.array(y), np.array(s), np.array([1] * 6), np.array([T0] * 6), 0.5, 0.9)
    assert got["precision_decline"] == 1.0 and got["recall_decline"] == pytest.approx(2 / 3)
    assert got["precision_review"] == 0.6 and got["recall_review"] == 1.0


def test_one_class_only_is_undefined():
    got = live_metrics(np.array([0, 0]), np.array([0.1, 0.2]), np.array([1, 2]), np.array([T0, T0]), 0.5, 0.9)
    assert math.isnan(got["auc_roc"]) and math.isnan(got["average_precision"]) and math.isnan(got["recall_review"])
    assert math.isnan(got["precision_review"]) and got["card_precision_at_100"] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.1, 0.5, 0.7, 0.9, 0.95, 1.0]),
                          st.integers(1, 6), st.integers(0, 3 * DAY_MS)), min_size=1, max_size=40),
       st.integers(1, 4))
def test_metrics_match_an_independent_implementation(rows, k):
    y, s, c, t = (list(x) for x in zip(*rows))
    check(y, s, c, [T0 + x for x in t], k=k)


# ------------------------------------------------------------------------------------------------ one refresh


class Msg:
    def __init__(self, topic, value):
        self._topic, self._value = topic, value

    def error(self):
        return None

    def topic(self):
        return self._topic

    def value(self):
        return self._value

    def partition(self):
        return 0

    def offset(self):
        return 0


def _fraud_score(txid, et, s, version):
    return serde("fraud_score").encode({
        "transaction_id": txid, "customer_id": txid % 3, "terminal_id": 1, "amount": 1.0, "event_time": et,
        "features": {}, "score": s, "decision": "APPROVE", "model_version": version, "produced_at": 0,
        "scored_at": 0})


def _label(txid, y, et):
    return serde("transaction_label").encode({"transaction_id": txid, "customer_id": txid % 3, "terminal_id": 1,
                                               "label": y, "tx_time": et, "label_time": et + 7 * DAY_MS,
                                               "produced_at": 0})


def _gauge(metric, **labels):
    for fam in metric.collect():
        for s in fam.samples:
            if s.name in (fam.name, f"{fam.name}_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_refresh_sets_gauges_and_snapshots_and_drops_a_version_that_changed_stage(tmp_path):
    import json

    from pipelines.models import Registry

    for v, ap in (("qa", 0.6), ("qb", None)):
        (tmp_path / v).mkdir()
        (tmp_path / v / "meta.json").write_text(json.dumps({"features": ["x"]}))
        if ap is not None:
            (tmp_path / v / "metrics.json").write_text(json.dumps({"models": {"mlp": {"average_precision": ap}}}))
    (tmp_path / "LATEST").write_text("qa\n")
    cfg = Config().with_overrides({"quality": {"ap_alert_fraction": 0.65}})
    svc = QualityService(cfg, bootstrap="127.0.0.1:1", scores_topic="s", labels_topic="l", quality_topic="q",
                         model_dir=str(tmp_path))
    try:
        rows = [(1, 0.9, 1), (2, 0.2, 0), (3, 0.7, 1), (4, 0.6, 0), (5, 0.95, 0)]
        svc.handle([Msg("s", _fraud_score(t, T0 + t, s, "qa")) for t, s, _ in rows]
                   + [Msg("s", _fraud_score(6, T0 + 6, 0.3, "qb")), Msg("s", b"junk"),
                      Msg("l", _label(6, 1, T0 + 6)), Msg("l", _label(7, 1, T0 + 7))]
                   + [Msg("l", _label(t, y, T0 + t)) for t, _, y in rows])
        snaps = svc.refresh()
        assert set(snaps) == {"qa", "qb"}
        a = snaps["qa"]
        want = live_metrics(np.array([y for *_, y in rows]), np.array([s for _, s, _ in rows]),
                            np.array([t % 3 for t, *_ in rows]), np.array([T0 + t for t, *_ in rows]), 0.5, 0.9)
        assert a["stage"] == "production" and a["labels"] == 5 and a["frauds"] == 2
        assert a["window_start"] == T0 + 1 and a["window_end"] == T0 + 6
        assert a["average_precision"] == want["average_precision"] and a["training_average_precision"] == 0.6
        assert snaps["qb"]["stage"] == "unregistered" and snaps["qb"]["auc_roc"] is None  # one class only
        assert snaps["qb"]["training_average_precision"] is None
        assert serde("model_quality").decode(serde("model_quality").encode(a)) == a
        lv = {"model": "fraud", "version": "qa", "stage": "production"}
        assert _gauge(metrics.LIVE_AVERAGE_PRECISION, **lv) == want["average_precision"]
        assert _gauge(metrics.LIVE_PRECISION, **lv, threshold="decline") == want["precision_decline"]
        assert _gauge(metrics.TRAINING_AVERAGE_PRECISION, **lv) == 0.6
        assert math.isnan(_gauge(metrics.LIVE_AUC_ROC, model="fraud", version="qb", stage="unregistered"))
        assert _gauge(metrics.QUALITY_AP_ALERT_FRACTION) == 0.65
        assert _gauge(metrics.QUALITY_UNDECODABLE, topic="s", reason="not-avro") >= 1
        assert _gauge(metrics.QUALITY_LABELS, result="pending") >= 1

        Registry(tmp_path, features=["x"]).promote("qb")
        svc.refresh()
        assert _gauge(metrics.LIVE_AVERAGE_PRECISION, **lv) is None  # the old stage's series are gone
        assert _gauge(metrics.LIVE_LABELS, model="fraud", version="qa", stage="archived") == 5
        assert _gauge(metrics.LIVE_LABELS, model="fraud", version="qb", stage="production") == 1
    finally:
        svc.consumer.close()
        svc.producer.producer.purge()
