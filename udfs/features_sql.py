"""The rolling features as Flink SQL: a chain of OVER windows, one window per SELECT.

Flink accepts one window spec per SELECT, so each view selects from the previous one and keeps `rowtime`.
RANGE windows count every row with the same rowtime together, which is the rule pipelines/features.py (the
independent pandas reference) implements too. Joining separate OVER queries back on the event id gave silently
wrong numbers in our probes, hence the chain.
"""

from __future__ import annotations

CUSTOMER_WINDOWS = {"5m": "INTERVAL '5' MINUTE", "1h": "INTERVAL '1' HOUR", "1d": "INTERVAL '1' DAY",
                    "7d": "INTERVAL '7' DAY", "30d": "INTERVAL '30' DAY"}
TERMINAL_WINDOWS = {"1d": "INTERVAL '1' DAY", "7d": "INTERVAL '7' DAY", "30d": "INTERVAL '30' DAY"}

TX_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "amount", "event_time", "produced_at", "ingest_ms"]


def _range(partition: str, interval: str) -> str:
    return f"PARTITION BY {partition} ORDER BY rowtime RANGE BETWEEN {interval} PRECEDING AND CURRENT ROW"


def feature_views(tx_view: str, label_view: str) -> tuple[list[str], str]:
    """Returns (CREATE VIEW statements, name of the final view). `tx_view` has TX_COLUMNS + rowtime;
    `label_view` has (transaction_id, customer_id, terminal_id, label, tx_time, label_time, rowtime)."""
    stmts: list[str] = []
    prev = tx_view
    carried = list(TX_COLUMNS)

    def add(name: str, select: str, window: str, new_cols: list[str]) -> None:
        nonlocal prev
        cols = ", ".join(carried)
        stmts.append(f"CREATE TEMPORARY VIEW {name} AS SELECT {cols}, {select}, rowtime FROM {prev} "
                     f"WINDOW w AS ({window})")
        carried.extend(new_cols)
        prev = name

    for w, interval in CUSTOMER_WINDOWS.items():
        add(f"f_cust_{w}", f"COUNT(amount) OVER w AS cust_cnt_{w}, SUM(amount) OVER w AS cust_sum_{w}",
            _range("customer_id", interval), [f"cust_cnt_{w}", f"cust_sum_{w}"])
    # Rows sharing this row's timestamp (a zero-width RANGE), to make "previous transaction" well defined.
    add("f_cust_same", "COUNT(amount) OVER w AS cust_same_ts", _range("customer_id", "INTERVAL '0' SECOND"),
        ["cust_same_ts"])
    add("f_cust_prev", "COUNT(amount) OVER w AS cust_rows2, MIN(event_time) OVER w AS cust_prev_min",
        "PARTITION BY customer_id ORDER BY rowtime ROWS BETWEEN 1 PRECEDING AND CURRENT ROW",
        ["cust_rows2", "cust_prev_min"])

    # Labels join the terminal windows as rows of their own (is_tx = 0), at their label time: the handbook's
    # terminal risk "as known at t", with the label delay built into the data rather than into the query.
    tx_cols = ", ".join(carried)
    label_exprs = {"transaction_id": "transaction_id", "customer_id": "customer_id", "terminal_id": "terminal_id",
                   "event_time": "label_time"}
    label_cols = ", ".join(f"{label_exprs[c]} AS {c}" if c in label_exprs else f"CAST(NULL AS {t}) AS {c}"
                           for c, t in _carried_types(carried))
    stmts.append(
        f"CREATE TEMPORARY VIEW f_union AS "
        f"SELECT {tx_cols}, 1 AS is_tx, 0 AS is_label, 0 AS is_fraud, rowtime FROM {prev} "
        f"UNION ALL SELECT {label_cols}, 0 AS is_tx, 1 AS is_label, label AS is_fraud, rowtime FROM {label_view}")
    prev = "f_union"
    carried.extend(["is_tx", "is_label", "is_fraud"])
    for w, interval in TERMINAL_WINDOWS.items():
        add(f"f_term_{w}", f"SUM(is_tx) OVER w AS term_cnt_{w}, SUM(is_label) OVER w AS term_nlabels_{w}, "
                           f"SUM(is_fraud) OVER w AS term_nfraud_{w}",
            _range("terminal_id", interval), [f"term_cnt_{w}", f"term_nlabels_{w}", f"term_nfraud_{w}"])
    keep = [c for c in carried if c not in ("is_tx", "is_label", "is_fraud")]
    stmts.append(f"CREATE TEMPORARY VIEW f_final AS SELECT {', '.join(keep)} FROM {prev} WHERE is_tx = 1")
    return stmts, "f_final"


def _carried_types(cols: list[str]) -> list[tuple[str, str]]:
    out = []
    for c in cols:
        if c == "amount" or c.startswith("cust_sum_"):
            out.append((c, "DOUBLE"))
        else:
            out.append((c, "BIGINT"))
    return out


FINAL_COLUMNS = (TX_COLUMNS
                 + [f"cust_{k}_{w}" for w in CUSTOMER_WINDOWS for k in ("cnt", "sum")]
                 + ["cust_same_ts", "cust_rows2", "cust_prev_min"]
                 + [f"term_{k}_{w}" for w in TERMINAL_WINDOWS for k in ("cnt", "nlabels", "nfraud")])
