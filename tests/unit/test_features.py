"""The fraud feature reference: hand-made frames, ties, window edges, profiles, and a brute-force cross-check."""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import features as F
from pipelines.features import CUSTOMER_WINDOWS, FEATURE_NAMES, MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE, TERMINAL_WINDOWS

T0 = 1_522_540_800_000  # 2018-04-01 00:00:00 UTC, a Sunday


def tx(rows):
    """rows: (transaction_id, customer_id, terminal_id, amount, event_time)."""
    return pd.DataFrame(rows, columns=F.TX_COLUMNS).astype(
        {"transaction_id": "int64", "customer_id": "int64", "terminal_id": "int64", "amount": "float64",
         "event_time": "int64"})


def labels(rows):
    """rows: (terminal_id, label, label_time)."""
    return pd.DataFrame(rows, columns=["terminal_id", "label", "label_time"]).astype("int64")


def test_feature_names_order():
    assert FEATURE_NAMES[:3] == ["cust_cnt_5m", "cust_sum_5m", "cust_mean_5m"]
    assert FEATURE_NAMES[12:15] == ["cust_cnt_30d", "cust_sum_30d", "cust_mean_30d"]
    assert FEATURE_NAMES[15:20] == ["cust_secs_since_prev", "amount", "amount_over_cust_mean", "amount_zscore",
                                    "cust_profile_missing"]
    assert FEATURE_NAMES[-3:] == ["hour_of_day", "is_weekend", "is_night"]
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 15 + 5 + 3 + 6 + 3


@pytest.mark.parametrize("java_class,windows", [("CustomerWindows", CUSTOMER_WINDOWS),
                                                ("TerminalWindows", TERMINAL_WINDOWS)])
def test_java_functions_use_the_reference_windows(java_class, windows):
    """The job's windows (udfs/java) are written as Java constants: they must be the reference's, in its order."""
    src = (Path(__file__).resolve().parents[2] / "udfs" / "java" / "io" / "streamscore" / "udfs"
           / f"{java_class}.java").read_text()
    body = re.search(r"WINDOWS_MS\s*=\s*\{([^}]*)\}", src).group(1)
    java_ms = [math.prod(int(f.strip().rstrip("L").replace("_", "")) for f in term.split("*"))
               for term in body.split(",")]
    assert java_ms == list(windows.values())


def test_ties_count_together_and_secs_since_prev():
    df = tx([
        (1, 7, 1, 10.0, T0),
        (2, 7, 1, 20.0, T0 + 60_000),
        (3, 7, 2, 30.0, T0 + 60_000),  # same timestamp as 2
        (4, 7, 1, 40.0, T0 + 90_000),
        (5, 8, 1, 5.0, T0 + 90_000),  # other customer
    ])
    f = F.compute_features(df)
    assert list(f.columns) == FEATURE_NAMES
    assert list(f.index) == [1, 2, 3, 4, 5]
    # Rows 2 and 3 share a timestamp: both see each other.
    assert f.loc[2, "cust_cnt_5m"] == f.loc[3, "cust_cnt_5m"] == 3
    assert f.loc[2, "cust_sum_5m"] == f.loc[3, "cust_sum_5m"] == 60.0
    assert f.loc[2, "cust_mean_5m"] == 20.0
    assert f.loc[1, "cust_cnt_5m"] == 1 and f.loc[1, "cust_sum_5m"] == 10.0
    assert f.loc[4, "cust_cnt_1h"] == 4 and f.loc[4, "cust_sum_1h"] == 100.0
    assert f.loc[5, "cust_cnt_30d"] == 1 and f.loc[5, "cust_mean_30d"] == 5.0
    # secs since prev: -1 first, 0 on a tie, else the gap to the latest strictly earlier row.
    assert f.loc[1, "cust_secs_since_prev"] == -1.0
    assert f.loc[2, "cust_secs_since_prev"] == 0.0
    assert f.loc[3, "cust_secs_since_prev"] == 0.0
    assert f.loc[4, "cust_secs_since_prev"] == 30.0
    assert f.loc[5, "cust_secs_since_prev"] == -1.0
    # Terminal counts include the row and its ties.
    assert f.loc[4, "term_cnt_1d"] == 4  # 1, 2, 4 and customer 8's row 5 at the same time
    assert f.loc[5, "term_cnt_1d"] == 4
    assert f.loc[3, "term_cnt_1d"] == 1


def test_input_order_is_kept():
    df = tx([(3, 1, 1, 3.0, T0 + 2000), (1, 1, 1, 1.0, T0), (2, 1, 1, 2.0, T0 + 1000)])
    f = F.compute_features(df)
    assert list(f.index) == [3, 1, 2]
    assert list(f["cust_cnt_5m"]) == [3, 1, 2]
    assert list(f["cust_sum_5m"]) == [6.0, 1.0, 3.0]
    assert list(f["cust_secs_since_prev"]) == [1.0, -1.0, 1.0]


@pytest.mark.parametrize("name,width", list(CUSTOMER_WINDOWS.items()))
def test_customer_window_boundary_is_closed(name, width):
    df = tx([(1, 1, 1, 1.0, T0), (2, 1, 1, 2.0, T0 + width), (3, 1, 1, 4.0, T0 + width + 1)])
    f = F.compute_features(df)
    assert F.LOWER_BOUND_INCLUSIVE
    assert f.loc[2, f"cust_cnt_{name}"] == 2  # exactly t - W is inside
    assert f.loc[2, f"cust_sum_{name}"] == 3.0
    assert f.loc[3, f"cust_cnt_{name}"] == 2  # 1 ms past the window's start drops row 1
    assert f.loc[3, f"cust_sum_{name}"] == 6.0


def test_lower_bound_switch(monkeypatch):
    monkeypatch.setattr(F, "LOWER_BOUND_INCLUSIVE", False)
    df = tx([(1, 1, 1, 1.0, T0), (2, 1, 1, 2.0, T0 + MS_PER_HOUR)])
    f = F.compute_features(df, labels=labels([(1, 1, T0), (1, 0, T0 + MS_PER_DAY)]))
    assert f.loc[2, "cust_cnt_1h"] == 1 and f.loc[2, "cust_sum_1h"] == 2.0
    assert f.loc[2, "cust_cnt_1d"] == 2


@pytest.mark.parametrize("name,width", list(TERMINAL_WINDOWS.items()))
def test_terminal_windows_and_risk(name, width):
    df = tx([(1, 1, 9, 1.0, T0), (2, 2, 9, 1.0, T0 + width), (3, 3, 9, 1.0, T0 + width + 1), (4, 4, 8, 1.0, T0)])
    lab = labels([
        (9, 1, T0),  # exactly t - W for row 2
        (9, 0, T0 + width),  # at t for row 2: known
        (9, 1, T0 + width + 1),  # at t for row 3, in the future for row 2
        (8, 1, T0 + width),  # another terminal
    ])
    f = F.compute_features(df, labels=lab)
    assert f.loc[2, f"term_cnt_{name}"] == 2
    assert f.loc[3, f"term_cnt_{name}"] == 2
    assert f.loc[2, f"term_nlabels_{name}"] == 2 and f.loc[2, f"term_risk_{name}"] == 0.5
    assert f.loc[3, f"term_nlabels_{name}"] == 2 and f.loc[3, f"term_risk_{name}"] == 0.5
    assert f.loc[1, f"term_nlabels_{name}"] == 1 and f.loc[1, f"term_risk_{name}"] == 1.0
    assert f.loc[4, f"term_nlabels_{name}"] == 0 and f.loc[4, f"term_risk_{name}"] == 0.0


def test_no_labels_means_zero_risk():
    f = F.compute_features(tx([(1, 1, 1, 1.0, T0)]), labels=None)
    for w in TERMINAL_WINDOWS:
        assert f.loc[1, f"term_risk_{w}"] == 0.0 and f.loc[1, f"term_nlabels_{w}"] == 0.0
    f2 = F.compute_features(tx([(1, 1, 1, 1.0, T0)]), labels=labels([]))
    pd.testing.assert_frame_equal(f, f2)


def test_profiles_and_missing_profile():
    df = tx([(1, 1, 1, 30.0, T0), (2, 2, 1, 30.0, T0), (3, 3, 1, 30.0, T0), (4, 4, 1, 30.0, T0)])
    prof = pd.DataFrame({"customer_id": [1, 2, 4], "mean_amount": [20.0, 20.0, 0.0],
                         "std_amount": [5.0, 0.2, 0.0], "tx_per_day": [1.0, 1.0, 1.0]})
    f = F.compute_features(df, profiles=prof)
    assert f.loc[1, "amount"] == 30.0
    assert f.loc[1, "amount_over_cust_mean"] == 1.5
    assert f.loc[1, "amount_zscore"] == 2.0
    assert f.loc[2, "amount_zscore"] == 10.0  # std floored at 1.0
    assert f.loc[3, "amount_over_cust_mean"] == 1.0 and f.loc[3, "amount_zscore"] == 0.0
    assert f.loc[3, "cust_profile_missing"] == 1.0
    assert f.loc[1, "cust_profile_missing"] == 0.0 and f.loc[4, "cust_profile_missing"] == 0.0
    assert f.loc[4, "amount_over_cust_mean"] == 1.0  # a zero mean falls back to the neutral ratio
    assert (F.compute_features(df)["cust_profile_missing"] == 1.0).all()


def test_calendar_features():
    # 2018-04-01 was a Sunday; 2018-04-02 a Monday.
    df = tx([(1, 1, 1, 1.0, T0 + 5 * MS_PER_HOUR + 59 * MS_PER_MINUTE),
             (2, 1, 1, 1.0, T0 + MS_PER_DAY + 6 * MS_PER_HOUR),
             (3, 1, 1, 1.0, T0 - 1)])  # Saturday 23:59:59.999
    f = F.compute_features(df)
    assert list(f["hour_of_day"]) == [5.0, 6.0, 23.0]
    assert list(f["is_weekend"]) == [1.0, 0.0, 1.0]
    assert list(f["is_night"]) == [1.0, 0.0, 0.0]


def test_build_profiles_and_make_labels():
    df = tx([(1, 1, 5, 10.0, T0), (2, 1, 6, 30.0, T0 + MS_PER_DAY), (3, 2, 5, 7.0, T0 + MS_PER_DAY),
             (4, 1, 5, 1000.0, T0 + 4 * MS_PER_DAY)])
    cust, term = F.build_profiles(df, T0 + 2 * MS_PER_DAY)
    c1 = cust.set_index("customer_id").loc[1]
    assert c1["mean_amount"] == 20.0 and c1["std_amount"] == 10.0 and c1["n_tx"] == 2
    assert c1["first_seen"] == T0 and c1["as_of"] == T0 + 2 * MS_PER_DAY
    assert c1["tx_per_day"] == 1.0  # 2 transactions over the 2-day history
    assert set(term["terminal_id"]) == {5, 6}
    assert term.set_index("terminal_id").loc[5, "n_tx"] == 2
    df["tx_fraud"] = [0, 1, 0, 1]
    lab = F.make_labels(df, 7)
    assert list(lab.columns) == F.LABEL_COLUMNS
    assert list(lab["label_time"] - lab["tx_time"]) == [7 * MS_PER_DAY] * 4
    assert list(lab["label"]) == [0, 1, 0, 1]


def test_load_transactions(tmp_path):
    path = tmp_path / "tx.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,"
                 "TX_FRAUD,TX_FRAUD_SCENARIO\n"
                 "0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0\n"
                 "1,2018-04-01 00:02:10,4961,3412,81.51,130,0,1,2\n"
                 "2,2018-04-02 00:00:00,2,1,1.5,86400,1,0,0\n")
    df = F.load_transactions(path)
    assert list(df.columns[:5]) == F.TX_COLUMNS
    assert df["event_time"].tolist() == [T0 + 31_000, T0 + 130_000, T0 + MS_PER_DAY]
    assert df["tx_fraud"].tolist() == [0, 1, 0] and df["tx_fraud_scenario"].tolist() == [0, 2, 0]
    assert len(F.load_transactions(path, start="2018-04-01 00:01:00")) == 2
    assert len(F.load_transactions(path, end="2018-04-02")) == 2
    assert len(F.load_transactions(path, nrows=1)) == 1


def brute_force(df: pd.DataFrame, prof: pd.DataFrame, lab: pd.DataFrame) -> pd.DataFrame:
    """O(n^2) python loops over plain tuples: the spec written out literally."""
    rows = list(df.itertuples(index=False))
    labs = list(lab.itertuples(index=False))
    pmap = {r.customer_id: (r.mean_amount, r.std_amount) for r in prof.itertuples(index=False)}
    out = []
    for r in rows:
        t = r.event_time
        feat = {}
        for name, w in CUSTOMER_WINDOWS.items():
            amts = [o.amount for o in rows if o.customer_id == r.customer_id and t - w <= o.event_time <= t]
            feat[f"cust_cnt_{name}"] = len(amts)
            feat[f"cust_sum_{name}"] = sum(amts)
            feat[f"cust_mean_{name}"] = sum(amts) / len(amts)
        others = [o for o in rows if o.customer_id == r.customer_id and o.transaction_id != r.transaction_id
                  and o.event_time <= t]
        if not others:
            secs = -1.0
        elif any(o.event_time == t for o in others):
            secs = 0.0
        else:
            secs = (t - max(o.event_time for o in others)) / 1000
        feat["cust_secs_since_prev"] = secs
        feat["amount"] = r.amount
        if r.customer_id in pmap:
            m, s = pmap[r.customer_id]
            feat["amount_over_cust_mean"] = r.amount / m
            feat["amount_zscore"] = (r.amount - m) / max(s, 1.0)
            feat["cust_profile_missing"] = 0.0
        else:
            feat["amount_over_cust_mean"] = 1.0
            feat["amount_zscore"] = 0.0
            feat["cust_profile_missing"] = 1.0
        for name, w in TERMINAL_WINDOWS.items():
            feat[f"term_cnt_{name}"] = sum(1 for o in rows if o.terminal_id == r.terminal_id
                                           and t - w <= o.event_time <= t)
        for name, w in TERMINAL_WINDOWS.items():
            known = [x.label for x in labs if x.terminal_id == r.terminal_id and t - w <= x.label_time <= t]
            feat[f"term_risk_{name}"] = sum(known) / len(known) if known else 0.0
            feat[f"term_nlabels_{name}"] = len(known)
        ts = pd.Timestamp(t, unit="ms", tz="UTC")
        feat["hour_of_day"] = ts.hour
        feat["is_weekend"] = float(ts.dayofweek >= 5)
        feat["is_night"] = float(ts.hour < 6)
        out.append(feat)
    return pd.DataFrame(out, index=pd.Index(df["transaction_id"].to_numpy(), name="transaction_id"))[FEATURE_NAMES]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_rows(seed):
    rng = np.random.default_rng(seed)
    n = 300
    # Times on a coarse grid (so ties and exact window edges are common) over ~40 days, some 1 ms off the grid.
    grid = rng.integers(0, 40 * 24 * 12, n) * 5 * MS_PER_MINUTE
    jitter = np.where(rng.random(n) < 0.15, rng.integers(-1, 2, n), 0)
    df = tx(list(zip(rng.permutation(n) + 100, rng.integers(0, 6, n), rng.integers(0, 5, n),
                     np.round(rng.gamma(2.0, 30.0, n), 2), T0 + grid + jitter)))
    prof = pd.DataFrame({"customer_id": [0, 1, 2, 3], "mean_amount": [50.0, 60.0, 0.5, 70.0],
                         "std_amount": [10.0, 0.3, 2.0, 25.0], "tx_per_day": 1.0})
    lab = pd.DataFrame({"terminal_id": rng.integers(0, 5, 2 * n),
                        "label": (rng.random(2 * n) < 0.3).astype(np.int64),
                        "label_time": T0 + rng.integers(0, 40 * 24 * 12, 2 * n) * 5 * MS_PER_MINUTE})
    got = F.compute_features(df, profiles=prof, labels=lab)
    want = brute_force(df, prof, lab)
    assert (want["cust_secs_since_prev"] == 0.0).any(), "the random frame should contain ties"
    pd.testing.assert_frame_equal(got, want.astype(np.float64), check_exact=False, rtol=1e-9, atol=1e-9)


def test_fast_enough_and_consistent_on_larger_frame():
    rng = np.random.default_rng(5)
    n = 200_000
    df = tx(list(zip(np.arange(n), rng.integers(0, 5000, n), rng.integers(0, 10000, n),
                     np.round(rng.gamma(2.0, 30.0, n), 2), T0 + np.sort(rng.integers(0, 90 * MS_PER_DAY, n)))))
    df["tx_fraud"] = (rng.random(n) < 0.01).astype(np.int64)
    f = F.compute_features(df, labels=F.make_labels(df))
    assert f.shape == (n, len(FEATURE_NAMES))
    assert np.isfinite(f.to_numpy()).all()
    assert (f["cust_cnt_5m"] <= f["cust_cnt_1h"]).all() and (f["cust_cnt_7d"] <= f["cust_cnt_30d"]).all()
    assert (f["term_cnt_1d"] >= 1).all()
    assert math.isclose(f["amount"].sum(), df["amount"].sum())
