"""The fraud feature definition: the one reference implementation.

Training computes its inputs here, and the integration test compares the Flink SQL job's features against this
module, so every rule below is the contract the streaming job must keep. Pure pandas/numpy and vectorised: every
windowed aggregate is a pair of ``np.searchsorted`` calls over (group, time) keys sorted once, so the whole
three-month data set (872k rows) takes a few seconds.

Window semantics (Flink ``RANGE BETWEEN INTERVAL .. PRECEDING AND CURRENT ROW``): for a transaction at event time
``t`` a window of length ``W`` holds the group's rows with event time in ``[t - W, t]``: the row itself and every
row that shares its timestamp count, and so does a row exactly ``W`` earlier. :data:`LOWER_BOUND_INCLUSIVE` is the
one switch for the lower bound; set it to False to get ``(t - W, t]``.

Times are epoch milliseconds (UTC) throughout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60 * MS_PER_SECOND
MS_PER_HOUR = 60 * MS_PER_MINUTE
MS_PER_DAY = 24 * MS_PER_HOUR

# The single switch for the windows' lower bound: True = [t - W, t], False = (t - W, t].
LOWER_BOUND_INCLUSIVE = True

CUSTOMER_WINDOWS: dict[str, int] = {
    "5m": 5 * MS_PER_MINUTE,
    "1h": MS_PER_HOUR,
    "1d": MS_PER_DAY,
    "7d": 7 * MS_PER_DAY,
    "30d": 30 * MS_PER_DAY,
}
TERMINAL_WINDOWS: dict[str, int] = {
    "1d": MS_PER_DAY,
    "7d": 7 * MS_PER_DAY,
    "30d": 30 * MS_PER_DAY,
}
DEFAULT_LABEL_DELAY_DAYS = 7.0
# A missing or degenerate profile: ratio 1, z-score 0; std is floored at this value.
MIN_PROFILE_STD = 1.0


def _feature_names() -> list[str]:
    names: list[str] = []
    for w in CUSTOMER_WINDOWS:
        names += [f"cust_cnt_{w}", f"cust_sum_{w}", f"cust_mean_{w}"]
    names += ["cust_secs_since_prev", "amount", "amount_over_cust_mean", "amount_zscore", "cust_profile_missing"]
    names += [f"term_cnt_{w}" for w in TERMINAL_WINDOWS]
    for w in TERMINAL_WINDOWS:
        names += [f"term_risk_{w}", f"term_nlabels_{w}"]
    names += ["hour_of_day", "is_weekend", "is_night"]
    return names


FEATURE_NAMES: list[str] = _feature_names()

TX_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "amount", "event_time"]
LABEL_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "label", "tx_time", "label_time"]
PROFILE_COLUMNS = ["mean_amount", "std_amount", "tx_per_day", "n_tx", "first_seen", "as_of"]

_CSV_COLUMNS = {
    "TRANSACTION_ID": "transaction_id",
    "CUSTOMER_ID": "customer_id",
    "TERMINAL_ID": "terminal_id",
    "TX_AMOUNT": "amount",
    "TX_FRAUD": "tx_fraud",
    "TX_FRAUD_SCENARIO": "tx_fraud_scenario",
}


# ----------------------------------------------------------------------------------------------------------------
# Loading


def to_epoch_ms(value: int | str | pd.Timestamp | None) -> int | None:
    """Epoch ms from an int (taken as epoch ms), a date string or a Timestamp (naive = UTC)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def load_transactions(path: str | Path, start: int | str | pd.Timestamp | None = None,
                      end: int | str | pd.Timestamp | None = None, nrows: int | None = None) -> pd.DataFrame:
    """Reads the simulator's CSV (plain or .gz) into our column names.

    Columns: transaction_id, customer_id, terminal_id (int64), amount (float64), event_time (int64 epoch ms, from
    TX_DATETIME taken as UTC), tx_fraud and tx_fraud_scenario (int64, the ground truth). ``start``/``end`` keep
    rows with ``start <= event_time < end``; ``nrows`` reads only the first rows of the file. Sorted by
    (event_time, transaction_id).
    """
    raw = pd.read_csv(path, nrows=nrows, usecols=["TX_DATETIME", *_CSV_COLUMNS],
                      dtype={"TRANSACTION_ID": "int64", "CUSTOMER_ID": "int64", "TERMINAL_ID": "int64",
                             "TX_AMOUNT": "float64", "TX_FRAUD": "int64", "TX_FRAUD_SCENARIO": "int64"})
    times = pd.to_datetime(raw["TX_DATETIME"], format="%Y-%m-%d %H:%M:%S", utc=True)
    df = raw.rename(columns=_CSV_COLUMNS)
    df["event_time"] = times.dt.as_unit("ms").astype("int64")
    df = df[["transaction_id", "customer_id", "terminal_id", "amount", "event_time", "tx_fraud",
             "tx_fraud_scenario"]]
    lo, hi = to_epoch_ms(start), to_epoch_ms(end)
    if lo is not None:
        df = df[df["event_time"] >= lo]
    if hi is not None:
        df = df[df["event_time"] < hi]
    return df.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)


def make_labels(df: pd.DataFrame, delay_days: float = DEFAULT_LABEL_DELAY_DAYS) -> pd.DataFrame:
    """One label per transaction, known ``delay_days`` after it: label_time = event_time + delay.

    Takes the ground truth from ``tx_fraud`` (or ``label``). Columns follow the transaction-label Avro schema:
    transaction_id, customer_id, terminal_id, label, tx_time, label_time.
    """
    truth = df["tx_fraud"] if "tx_fraud" in df.columns else df["label"]
    delay = int(round(delay_days * MS_PER_DAY))
    return pd.DataFrame({
        "transaction_id": df["transaction_id"].to_numpy(np.int64),
        "customer_id": df["customer_id"].to_numpy(np.int64),
        "terminal_id": df["terminal_id"].to_numpy(np.int64),
        "label": truth.to_numpy(np.int64),
        "tx_time": df["event_time"].to_numpy(np.int64),
        "label_time": df["event_time"].to_numpy(np.int64) + delay,
    })


# ----------------------------------------------------------------------------------------------------------------
# Profiles


def _profiles(df: pd.DataFrame, key: str, history_start_ms: int, history_end_ms: int) -> pd.DataFrame:
    g = df.groupby(key, sort=True)["amount"]
    out = pd.DataFrame({
        "mean_amount": g.mean(),
        "std_amount": g.std(ddof=0),
        "n_tx": g.size().astype(np.int64),
        "first_seen": df.groupby(key, sort=True)["event_time"].min().astype(np.int64),
    })
    days = max((history_end_ms - history_start_ms) / MS_PER_DAY, 1.0 / 24)
    out["tx_per_day"] = out["n_tx"] / days
    out["as_of"] = np.int64(history_end_ms)
    return out.reset_index()[[key, *PROFILE_COLUMNS]]


def build_profiles(df: pd.DataFrame, history_end_ms: int | str | pd.Timestamp,
                   history_start_ms: int | str | pd.Timestamp | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer and terminal profiles from the transactions with event_time < history_end.

    Returns ``(customers, terminals)``: frames keyed by customer_id / terminal_id with mean_amount, std_amount
    (population std, 0 for a single transaction), tx_per_day (n_tx over the history's length in days; the
    history starts at ``history_start_ms`` or else at the first transaction kept), n_tx, first_seen (epoch ms)
    and as_of (= history_end).
    """
    end = to_epoch_ms(history_end_ms)
    hist = df[df["event_time"] < end]
    if history_start_ms is not None:
        start = to_epoch_ms(history_start_ms)
        hist = hist[hist["event_time"] >= start]
    else:
        start = int(hist["event_time"].min()) if len(hist) else end
    return (_profiles(hist, "customer_id", start, end), _profiles(hist, "terminal_id", start, end))


# ----------------------------------------------------------------------------------------------------------------
# Windowed aggregates


class _SortedEvents:
    """Events sorted by (group code, time) as one int64 key, for vectorised range counts and sums."""

    def __init__(self, codes: np.ndarray, times: np.ndarray, base: int, span: int):
        self.base, self.span = base, span
        keys = codes.astype(np.int64) * span + (times.astype(np.int64) - base)
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.codes = codes[self.order]
        self.times = times[self.order].astype(np.int64)

    def key(self, codes: np.ndarray, times: np.ndarray) -> np.ndarray:
        return codes.astype(np.int64) * self.span + (times.astype(np.int64) - self.base)

    def bounds(self, codes: np.ndarray, t: np.ndarray, window_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Index range [lo, hi) of each query's group events in [t - W, t] (or (t - W, t])."""
        lo = np.searchsorted(self.keys, self.key(codes, t - window_ms),
                             side="left" if LOWER_BOUND_INCLUSIVE else "right")
        hi = np.searchsorted(self.keys, self.key(codes, t), side="right")
        return lo, hi

    def grouped_cumsum(self, values: np.ndarray) -> np.ndarray:
        """Inclusive cumulative sums restarting at each group (small magnitudes, so window sums stay exact-ish)."""
        v = pd.Series(np.asarray(values)[self.order])
        return v.groupby(self.codes, sort=False).cumsum().to_numpy()

    def range_sum(self, cums: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum over [lo, hi) from grouped inclusive cumsums; lo and hi always lie in one group."""
        empty = hi <= lo
        hi_c = np.where(empty, 0, hi - 1)
        total = cums[hi_c]
        prev = np.where(lo > 0, lo - 1, 0)
        same_group = (lo > 0) & (self.codes[prev] == self.codes[np.where(empty, prev, hi_c)])
        total = total - np.where(same_group, cums[prev], 0)
        return np.where(empty, 0, total)


def _key_space(times: Iterable[np.ndarray], pad_ms: int, n_codes: int) -> tuple[int, int]:
    lo = min(int(t.min()) for t in times if len(t)) - pad_ms - 1
    hi = max(int(t.max()) for t in times if len(t)) + 1
    span = hi - lo + 1
    if (n_codes + 1) * span >= 2 ** 62:
        raise ValueError(f"{n_codes} groups over {span} ms do not fit an int64 sort key")
    return lo, span


def _customer_features(codes: np.ndarray, t: np.ndarray, amount: np.ndarray, out: dict[str, np.ndarray]) -> None:
    base, span = _key_space([t], max(CUSTOMER_WINDOWS.values()), int(codes.max()) + 1)
    ev = _SortedEvents(codes, t, base, span)
    cums = ev.grouped_cumsum(amount)
    for name, w in CUSTOMER_WINDOWS.items():
        lo, hi = ev.bounds(codes, t, w)
        cnt = (hi - lo).astype(np.float64)
        total = ev.range_sum(cums, lo, hi)
        out[f"cust_cnt_{name}"] = cnt
        out[f"cust_sum_{name}"] = total
        out[f"cust_mean_{name}"] = np.divide(total, cnt, out=np.zeros_like(total), where=cnt > 0)
    key = ev.key(codes, t)
    lo_eq = np.searchsorted(ev.keys, key, side="left")
    hi_eq = np.searchsorted(ev.keys, key, side="right")
    prev = np.maximum(lo_eq - 1, 0)
    has_prev = (lo_eq > 0) & (ev.codes[prev] == codes)
    secs = np.where(has_prev, (t - ev.times[prev]) / MS_PER_SECOND, -1.0)
    out["cust_secs_since_prev"] = np.where(hi_eq - lo_eq > 1, 0.0, secs).astype(np.float64)


def _terminal_features(term: np.ndarray, t: np.ndarray, labels: pd.DataFrame | None,
                       out: dict[str, np.ndarray]) -> None:
    pad = max(TERMINAL_WINDOWS.values())
    if labels is not None and len(labels):
        lt = labels["label_time"].to_numpy(np.int64)
        keep = (lt >= t.min() - pad) & (lt <= t.max())
        l_term = labels["terminal_id"].to_numpy(np.int64)[keep]
        lt = lt[keep]
        l_val = labels["label"].to_numpy(np.int64)[keep]
    else:
        l_term = np.empty(0, np.int64)
        lt = np.empty(0, np.int64)
        l_val = np.empty(0, np.int64)
    codes_all, _ = pd.factorize(np.concatenate([term, l_term]), sort=False)
    codes, l_codes = codes_all[: len(term)], codes_all[len(term):]
    base, span = _key_space([t, lt], pad, int(codes_all.max()) + 1)
    ev = _SortedEvents(codes, t, base, span)
    for name, w in TERMINAL_WINDOWS.items():
        lo, hi = ev.bounds(codes, t, w)
        out[f"term_cnt_{name}"] = (hi - lo).astype(np.float64)
    lab = _SortedEvents(l_codes, lt, base, span)
    cums = lab.grouped_cumsum(l_val) if len(lt) else np.empty(0, np.int64)
    for name, w in TERMINAL_WINDOWS.items():
        if len(lt):
            lo, hi = lab.bounds(codes, t, w)
            n = (hi - lo).astype(np.float64)
            frauds = lab.range_sum(cums, lo, hi).astype(np.float64)
        else:
            n = np.zeros(len(t))
            frauds = np.zeros(len(t))
        out[f"term_risk_{name}"] = np.divide(frauds, n, out=np.zeros_like(n), where=n > 0)
        out[f"term_nlabels_{name}"] = n


def _profile_features(df: pd.DataFrame, amount: np.ndarray, profiles: pd.DataFrame | None,
                      out: dict[str, np.ndarray]) -> None:
    n = len(df)
    if profiles is None or not len(profiles):
        mean = np.full(n, np.nan)
        std = np.full(n, np.nan)
    else:
        p = profiles.drop_duplicates("customer_id", keep="last").set_index("customer_id")
        idx = p.index.get_indexer(df["customer_id"].to_numpy(np.int64))
        found = idx >= 0
        mean = np.where(found, p["mean_amount"].to_numpy(np.float64)[np.maximum(idx, 0)], np.nan)
        std = np.where(found, p["std_amount"].to_numpy(np.float64)[np.maximum(idx, 0)], np.nan)
    profile_amount_features(amount, mean, std, out)


def profile_amount_features(amount: np.ndarray, mean: np.ndarray, std: np.ndarray,
                            out: dict[str, np.ndarray]) -> None:
    """The amount features from each row's own profile mean and std (NaN mean: no profile)."""
    missing = np.isnan(mean)
    std_eff = np.maximum(np.nan_to_num(std, nan=MIN_PROFILE_STD), MIN_PROFILE_STD)
    # A non-positive profile mean (impossible with positive amounts) falls back to the missing-profile ratio.
    ratio_ok = ~missing & (np.nan_to_num(mean, nan=0.0) > 0)
    out["amount"] = amount
    out["amount_over_cust_mean"] = np.where(ratio_ok, amount / np.where(ratio_ok, mean, 1.0), 1.0)
    out["amount_zscore"] = np.where(missing, 0.0, (amount - np.nan_to_num(mean)) / std_eff)
    out["cust_profile_missing"] = missing.astype(np.float64)


def counted_labels(tx: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame | None:
    """The labels that count toward terminal risk, as the job counts them (udfs/java TerminalWindows): a label
    counts only if its transaction is a row of ``tx`` at the label's terminal, and of several labels of one
    transaction only the earliest (by label time, then by order). Labels come from outside and may be crafted; a
    label for a transaction the job never scored there, or a repeat, must not move a terminal's risk.

    Labels without a transaction_id column are taken as they are (unit tests of the windows alone)."""
    if labels is None or not len(labels) or "transaction_id" not in labels.columns:
        return labels
    known = pd.MultiIndex.from_arrays([tx["transaction_id"].to_numpy(np.int64), tx["terminal_id"].to_numpy(np.int64)])
    keys = pd.MultiIndex.from_arrays([labels["transaction_id"].to_numpy(np.int64),
                                      labels["terminal_id"].to_numpy(np.int64)])
    lab = labels[keys.isin(known)].sort_values("label_time", kind="stable")
    return lab[~lab["transaction_id"].duplicated(keep="first")]


def compute_features(tx: pd.DataFrame, profiles: pd.DataFrame | None = None,
                     labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The feature rows for every transaction of ``tx``.

    ``tx``: transaction_id, customer_id, terminal_id, amount, event_time (epoch ms), in any order; the windows
    see every row of ``tx`` (so pass the history that should be visible, not just the rows to score).
    ``profiles``: customer profiles (customer_id, mean_amount, std_amount, ...), e.g. from :func:`build_profiles`.
    ``labels``: known labels (terminal_id, label, label_time), e.g. from :func:`make_labels`; None = none known.
    With a transaction_id column, only the labels the job counts count (:func:`counted_labels`).

    Returns a float64 frame with the columns :data:`FEATURE_NAMES` in order, one row per input row in the input's
    order, indexed by transaction_id.
    """
    missing_cols = [c for c in TX_COLUMNS if c not in tx.columns]
    if missing_cols:
        raise ValueError(f"transactions lack columns {missing_cols}")
    n = len(tx)
    out: dict[str, np.ndarray] = {}
    if n == 0:
        return pd.DataFrame({c: np.empty(0) for c in FEATURE_NAMES},
                            index=pd.Index(np.empty(0, np.int64), name="transaction_id"))
    t = tx["event_time"].to_numpy(np.int64)
    amount = tx["amount"].to_numpy(np.float64)
    cust_codes, _ = pd.factorize(tx["customer_id"].to_numpy(np.int64), sort=False)
    _customer_features(cust_codes, t, amount, out)
    _profile_features(tx, amount, profiles, out)
    _terminal_features(tx["terminal_id"].to_numpy(np.int64), t, counted_labels(tx, labels), out)
    hour = (t // MS_PER_HOUR) % 24
    dow = (t // MS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    out["hour_of_day"] = hour.astype(np.float64)
    out["is_weekend"] = (dow >= 5).astype(np.float64)
    out["is_night"] = (hour < 6).astype(np.float64)
    frame = pd.DataFrame({c: np.asarray(out[c], dtype=np.float64) for c in FEATURE_NAMES},
                         index=pd.Index(tx["transaction_id"].to_numpy(np.int64), name="transaction_id"))
    return frame


# ----------------------------------------------------------------------------------------------------------------
# As known at arrival


def arrival_window_features(cust_arrivals: Iterable[tuple[int, int, int, float]],
                            term_arrivals: Iterable[tuple[int, int, int, bool, int]]) -> pd.DataFrame:
    """The window aggregates the fraud job computes with ``fraud.emit = arrival``, from the order rows arrived in.

    A transaction at ``t`` sees every row of its key that arrived before it (and itself) with a time in
    ``[t - W, t]``: an out-of-order row that arrived earlier is in, a row that arrives later is not, whatever its
    time. For an input in time order this is :func:`compute_features`' RANGE semantics, except that of rows sharing a
    timestamp a transaction counts only those that arrived before it.

    ``cust_arrivals``: (customer_id, transaction_id, event_time, amount) in the order the customer function saw
    them; ``term_arrivals``: (terminal_id, transaction_id, time, is_tx, is_fraud) in the order the terminal function
    saw them (labels at their label time, is_tx False). Returns one row per transaction, indexed by transaction_id,
    with the job's raw columns (udfs/features_sql.py CUSTOMER_COLUMNS and TERMINAL_COLUMNS): ``cust_cnt_<w>``,
    ``cust_sum_<w>``, ``cust_same_ts``, ``cust_prev_ts`` (-1: none) and ``term_cnt|nlabels|nfraud_<w>``.
    A slow, obviously correct twin of udfs/java (WindowRows, CustomerWindows, TerminalWindows) for tests and audits.
    """
    import bisect

    cw = list(CUSTOMER_WINDOWS.items())
    tw = list(TERMINAL_WINDOWS.items())
    cust: dict[int, dict] = {}
    keys: dict[int, tuple[list[int], list[float]]] = {}
    for customer, txid, t, amount in cust_arrivals:
        times, amounts = keys.setdefault(customer, ([], []))
        at = bisect.bisect_right(times, t)
        times.insert(at, t)
        amounts.insert(at, amount)
        row: dict = {"cust_same_ts": 0, "cust_prev_ts": -1}
        for name, _ in cw:
            row[f"cust_cnt_{name}"] = 0
            row[f"cust_sum_{name}"] = 0.0
        for j in range(at, -1, -1):
            tj = times[j]
            if tj == t:
                row["cust_same_ts"] += 1
            elif row["cust_prev_ts"] < tj:
                row["cust_prev_ts"] = tj
            for name, w in cw:
                if tj >= t - w if LOWER_BOUND_INCLUSIVE else tj > t - w:
                    row[f"cust_cnt_{name}"] += 1
                    row[f"cust_sum_{name}"] += amounts[j]
        cust[txid] = row
    term: dict[int, dict] = {}
    # Per terminal, in time order (arrival order among equal times): times and [is_tx, is_fraud, txid, counts].
    tkeys: dict[int, tuple[list[int], list[list]]] = {}
    for terminal, txid, t, is_tx, is_fraud in term_arrivals:
        times, kinds = tkeys.setdefault(terminal, ([], []))
        at = bisect.bisect_right(times, t)
        same = [k for k in kinds if k[2] == txid]
        # A label counts if its transaction is in the window and no label of it came first; labels that arrived
        # before their transaction wait for it, and then the earliest of them counts (udfs/java TerminalWindows).
        counts = not is_tx and any(k[0] for k in same) and not any(not k[0] for k in same)
        times.insert(at, t)
        kinds.insert(at, [bool(is_tx), int(is_fraud), txid, counts])
        if not is_tx:
            continue
        if not any(k[0] or k[3] for k in same):
            waiting = [k for k in same if not k[0]]
            if waiting:
                waiting[0][3] = True
        row = {}
        for name, w in tw:
            inside = [kinds[j] for j in range(at + 1)
                      if (times[j] >= t - w if LOWER_BOUND_INCLUSIVE else times[j] > t - w)]
            row[f"term_cnt_{name}"] = sum(1 for k in inside if k[0])
            row[f"term_nlabels_{name}"] = sum(1 for k in inside if k[3])
            row[f"term_nfraud_{name}"] = sum(k[1] for k in inside if k[3])
        term[txid] = row
    ids = [i for i in cust if i in term]
    frame = pd.DataFrame([{**cust[i], **term[i]} for i in ids], index=pd.Index(ids, name="transaction_id"))
    return frame
