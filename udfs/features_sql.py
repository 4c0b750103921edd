"""The rolling features in Flink SQL: one RANGE OVER window per key, with a Java aggregate for all its sub-windows.

Flink accepts one window spec per SELECT, and a chain of one OVER operator per window (5 customer windows, the
previous transaction, 3 terminal windows) cost a keyed exchange, a state lookup and timers per window: the JVM spent
80% of the job's CPU there (JFR, 2 cores). So each key gets a single 30-day RANGE window, and a Java aggregate
(udfs/java: CustomerWindows, TerminalWindows) computes every shorter window in one pass over the rows the long
window already holds. RANGE windows count every row with the same rowtime together and include a row exactly W
earlier: the rule pipelines/features.py (the independent pandas reference) implements too.

Joining separate OVER queries back on the event id gave silently wrong numbers in our probes; each view selects
from the previous one and keeps `rowtime`.
"""

from __future__ import annotations

CUSTOMER_WINDOWS = {"5m": "INTERVAL '5' MINUTE", "1h": "INTERVAL '1' HOUR", "1d": "INTERVAL '1' DAY",
                    "7d": "INTERVAL '7' DAY", "30d": "INTERVAL '30' DAY"}
TERMINAL_WINDOWS = {"1d": "INTERVAL '1' DAY", "7d": "INTERVAL '7' DAY", "30d": "INTERVAL '30' DAY"}
LONGEST = "INTERVAL '30' DAY"  # the OVER range; must equal the longest window in the Java aggregates

TX_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "amount", "event_time", "produced_at", "ingest_ms"]
CUSTOMER_COLUMNS = ([f"cust_{k}_{w}" for w in CUSTOMER_WINDOWS for k in ("cnt", "sum")]
                    + ["cust_same_ts", "cust_prev_ts"])
TERMINAL_COLUMNS = [f"term_{k}_{w}" for w in TERMINAL_WINDOWS for k in ("cnt", "nlabels", "nfraud")]
FINAL_COLUMNS = TX_COLUMNS + CUSTOMER_COLUMNS + TERMINAL_COLUMNS
# Label rows that found no transaction of theirs in the terminal window: (terminal_id, label_time, unknown_labels),
# one row per label row of a (terminal, label time) that has any; see TerminalWindows.
UNKNOWN_LABELS_VIEW = "f_unknown_labels"

JAVA_FUNCTIONS = {"customer_windows": "io.streamscore.udfs.CustomerWindows",
                  "terminal_windows": "io.streamscore.udfs.TerminalWindows"}


def register_functions(t_env) -> None:
    """The Java aggregates, from the jar jobs.common.connector_jars() puts on `pipeline.jars`."""
    for name, cls in JAVA_FUNCTIONS.items():
        t_env.execute_sql(f"CREATE TEMPORARY FUNCTION IF NOT EXISTS {name} AS '{cls}' LANGUAGE JAVA")


def _range(partition: str) -> str:
    return f"PARTITION BY {partition} ORDER BY rowtime RANGE BETWEEN {LONGEST} PRECEDING AND CURRENT ROW"


def sql_type(col: str) -> str:
    return "DOUBLE" if col == "amount" or col.startswith("cust_sum_") else "BIGINT"


def feature_views(tx_view: str, label_view: str) -> tuple[list[str], str]:
    """Returns (CREATE VIEW statements, name of the final view with FINAL_COLUMNS). `tx_view` has TX_COLUMNS +
    rowtime; `label_view` has (transaction_id, customer_id, terminal_id, label, tx_time, label_time, rowtime).

    The terminal window comes first, over the narrow transaction and label rows: an OVER operator keeps every row
    of its 30 days in state (and a heap-backend checkpoint copies them all), so the wide rows go to the customer
    window, which holds transactions only."""
    tx = ", ".join(TX_COLUMNS)
    # Labels join the terminal window as rows of their own (is_tx = 0) at their label time: the handbook's terminal
    # risk "as known at t", with the label delay built into the data rather than into the query.
    label_exprs = {"transaction_id": "transaction_id", "customer_id": "customer_id", "terminal_id": "terminal_id",
                   "event_time": "label_time"}
    label_cols = ", ".join(f"{label_exprs[c]} AS {c}" if c in label_exprs else f"CAST(NULL AS {sql_type(c)}) AS {c}"
                           for c in TX_COLUMNS)
    term_fields = ", ".join(f"tw.{col.split('_', 1)[1]} AS {col}" for col in TERMINAL_COLUMNS)
    cust_fields = ", ".join(f"cw.{col.split('_', 1)[1]} AS {col}" for col in CUSTOMER_COLUMNS)
    with_term = ", ".join(TX_COLUMNS + TERMINAL_COLUMNS)
    stmts = [
        f"CREATE TEMPORARY VIEW f_union AS "
        f"SELECT {tx}, 1 AS is_tx, 0 AS is_label, 0 AS is_fraud, rowtime FROM {tx_view} "
        f"UNION ALL SELECT {label_cols}, 0 AS is_tx, 1 AS is_label, label AS is_fraud, rowtime FROM {label_view}",
        f"CREATE TEMPORARY VIEW f_term_agg AS SELECT {tx}, is_tx, "
        f"terminal_windows(event_time, is_tx, is_label, is_fraud, transaction_id) OVER w AS tw, rowtime FROM f_union "
        f"WINDOW w AS ({_range('terminal_id')})",
        f"CREATE TEMPORARY VIEW f_term AS SELECT {tx}, {term_fields}, rowtime FROM f_term_agg WHERE is_tx = 1",
        f"CREATE TEMPORARY VIEW {UNKNOWN_LABELS_VIEW} AS SELECT terminal_id, event_time AS label_time, "
        f"tw.unknown_labels AS unknown_labels FROM f_term_agg WHERE is_tx = 0 AND tw.unknown_labels > 0",
        f"CREATE TEMPORARY VIEW f_cust_agg AS SELECT {with_term}, customer_windows(event_time, amount) OVER w AS cw, "
        f"rowtime FROM f_term WINDOW w AS ({_range('customer_id')})",
        f"CREATE TEMPORARY VIEW f_final AS SELECT {with_term}, {cust_fields} FROM f_cust_agg",
    ]
    return stmts, "f_final"
