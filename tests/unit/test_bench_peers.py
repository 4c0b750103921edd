"""The benchmark peers compute what streamscore computes: each peer's features and scores on a sample of the
replay data against the pandas reference (pipelines.features) and the numpy reference scorer, so a fast but wrong
peer cannot win `make bench-peers`. No broker: the peers' per-record cores are fed the records in event-time order
(labels at their label time, before a transaction of the same millisecond), as the replay sends them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines import features as F

N_ROWS = 120_000  # about 12 days of the data set: the 7-day label delay brings labels into every terminal window


@pytest.fixture(scope="module")
def sample():
    from pipelines.config import load_config

    cfg = load_config()
    path = cfg.path(cfg.replay.fraud_csv)
    if not path.exists():
        pytest.skip(f"no data set at {path}")
    df = F.load_transactions(path, nrows=N_ROWS)
    df = df.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)
    mid = int(df["event_time"].iloc[len(df) // 3])
    customers, _ = F.build_profiles(df, mid)
    labels = F.make_labels(df)
    labels = labels[labels["label_time"] <= int(df["event_time"].max())]
    return df, customers, labels


def _events(df: pd.DataFrame, labels: pd.DataFrame) -> list[tuple[str, dict]]:
    tx = [("tx", {"transaction_id": int(r.transaction_id), "customer_id": int(r.customer_id),
                  "terminal_id": int(r.terminal_id), "amount": float(r.amount), "event_time": int(r.event_time),
                  "produced_at": 0}, int(r.event_time), 1) for r in df.itertuples()]
    lab = [("label", {"transaction_id": int(r.transaction_id), "terminal_id": int(r.terminal_id),
                      "label": int(r.label), "label_time": int(r.label_time)}, int(r.label_time), 0)
           for r in labels.itertuples()]
    return [(k, rec) for k, rec, _, _ in sorted(tx + lab, key=lambda e: (e[2], e[3]))]


def _comparable(df: pd.DataFrame) -> np.ndarray:
    """Rows whose customer and terminal have no other transaction in the same millisecond: there the reference's
    RANGE windows count all of them and an on-arrival system only those that came first (documented in
    pipelines.features.arrival_window_features)."""
    c = df.duplicated(["customer_id", "event_time"], keep=False)
    t = df.duplicated(["terminal_id", "event_time"], keep=False)
    return ~(c | t).to_numpy()


def _profile_lookup(customers: pd.DataFrame):
    p = customers.set_index("customer_id")

    def lookup(ids: np.ndarray):
        idx = p.index.get_indexer(ids)
        found = idx >= 0
        mean = np.where(found, p["mean_amount"].to_numpy()[np.maximum(idx, 0)], np.nan)
        std = np.where(found, p["std_amount"].to_numpy()[np.maximum(idx, 0)], np.nan)
        return mean, std

    return lookup


def check_against_reference(df: pd.DataFrame, customers: pd.DataFrame, labels: pd.DataFrame, rows: list):
    """A peer's raw window rows, one per transaction in order: every feature and score equals the pandas reference
    and the numpy reference scorer on the comparable rows. Returns (feats, ok, scorer, want) for further checks."""
    from infra.bench.peers.single_consumer.peer import features_for

    c, feats = features_for(rows, _profile_lookup(customers))
    assert list(c["transaction_id"]) == list(df["transaction_id"])
    ref = F.compute_features(df, customers, labels)
    ok = _comparable(df)
    assert ok.mean() > 0.99, "the sample should be nearly free of same-millisecond ties"
    assert (ref["term_nlabels_7d"].to_numpy()[ok] > 0).mean() > 0.3, "labels must reach the terminal windows"
    for name in F.FEATURE_NAMES:
        np.testing.assert_allclose(feats[name][ok], ref[name].to_numpy()[ok], rtol=1e-9, atol=1e-6, err_msg=name)

    from pipelines.config import load_config
    from udfs.scoring import ModelNotFoundError, ReferenceScorer, resolve_model_dir

    try:
        scorer = ReferenceScorer(resolve_model_dir(load_config()))
    except (ModelNotFoundError, FileNotFoundError) as e:
        pytest.skip(f"no model: {e}")
    got = scorer.score([np.ascontiguousarray(feats[k][ok], dtype=np.float32) for k in scorer.features])
    want = scorer.score([np.ascontiguousarray(ref[k].to_numpy()[ok], dtype=np.float32) for k in scorer.features])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    return feats, ok, scorer, want


def test_single_consumer_peer_matches_the_pandas_reference(sample):
    from infra.bench.peers.single_consumer.peer import WindowState

    df, customers, labels = sample
    state = WindowState()
    rows = []
    for kind, rec in _events(df, labels):
        if kind == "label":
            state.label(rec)
        else:
            row: list = []
            state.transaction(rec, row)
            rows.append(row)
    check_against_reference(df, customers, labels, rows)


def test_wait_drain_marks_and_stops():
    """The one drain wait of make bench and make bench-peers: marks at each span bound, stop at the expected
    count (and when the system dies)."""
    import os
    import time
    from types import SimpleNamespace

    from infra.bench.run import drain_spans, wait_drain

    counter = SimpleNamespace(arrivals=[time.time()] * 100)
    spans = drain_spans(100, 0)
    marks: dict = {}
    polls = []
    t0 = time.time()
    wait_drain(counter, 100, spans, [os.getpid()], marks, alive=lambda: True, timeout_s=30, idle_s=30,
               on_poll=lambda: polls.append(1))
    assert time.time() - t0 < 5 and polls
    assert {m for span in spans.values() for m in span} <= set(marks)
    assert all(got == 100 and cpu >= 0 for got, cpu in marks.values())
    counter.arrivals = [time.time()] * 10
    t0 = time.time()
    wait_drain(counter, 100, spans, [os.getpid()], {}, alive=lambda: False, timeout_s=30, idle_s=30)
    assert time.time() - t0 < 5
