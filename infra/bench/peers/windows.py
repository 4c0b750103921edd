"""The window arithmetic the benchmark peers share: sorted lists of event times with prefix sums, `bisect` for the
window bounds. Pure functions on plain lists, so a peer can keep the lists wherever its state lives (Python dicts
in single_consumer, Quix's RocksDB state store in quix). Column order: single_consumer.peer.RAW_COLUMNS."""

from __future__ import annotations

import bisect

from pipelines.features import CUSTOMER_WINDOWS, LOWER_BOUND_INCLUSIVE, TERMINAL_WINDOWS

CW = list(CUSTOMER_WINDOWS.items())
TW = list(TERMINAL_WINDOWS.items())


def lo_bound(times, t: int, w: int) -> int:
    """The first index in the window [t - w, t] (or (t - w, t], as pipelines.features defines the bound)."""
    return bisect.bisect_left(times, t - w) if LOWER_BOUND_INCLUSIVE else bisect.bisect_right(times, t - w)


def insert_cum(times: list, cums: list, t: int, x) -> int:
    """Inserts the time t with the value x after any equal time; keeps cums the running sums. Returns the index."""
    at = bisect.bisect_right(times, t)
    times.insert(at, t)
    cums.insert(at, (cums[at - 1] if at else 0) + x)
    for j in range(at + 1, len(cums)):  # only for a row older than the newest (rare in time order)
        cums[j] += x
    return at


def customer_columns(times: list, cums: list, t: int, amount: float) -> list:
    """Adds a transaction to its customer's lists; returns cust_same_ts, cust_prev_ts and cnt/sum per window."""
    at = insert_cum(times, cums, t, amount)
    first_same = bisect.bisect_left(times, t, 0, at + 1)
    row = [at + 1 - first_same, times[first_same - 1] if first_same > 0 else -1]
    total = cums[at]
    for _, w in CW:
        lo = lo_bound(times, t, w)
        row += [at + 1 - lo, total - (cums[lo - 1] if lo else 0.0)]
    return row


def terminal_columns(tx_times: list, label_times, label_cums, t: int) -> list:
    """Adds a transaction to its terminal's times; returns cnt, nlabels, nfraud per terminal window (labels with a
    label time in the window, up to t)."""
    tat = bisect.bisect_right(tx_times, t)
    tx_times.insert(tat, t)
    lhi = bisect.bisect_right(label_times, t) if label_times else 0
    row: list = []
    for _, w in TW:
        lo = lo_bound(tx_times, t, w)
        llo = lo_bound(label_times, t, w) if label_times else 0
        n = lhi - llo
        fr = (label_cums[lhi - 1] - (label_cums[llo - 1] if llo else 0)) if n > 0 else 0
        row += [tat + 1 - lo, n, fr]
    return row
