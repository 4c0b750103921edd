"""The job of benchmark peer (b) (infra/bench/peers/pyflink_sql): a plain PyFlink job, Flink SQL OVER windows and a
pandas scoring UDF, what a Flink team writes instead of streamscore's fraud job. Not part of the product: `make
bench-peers` runs it through ``python -m infra.bench.peers.pyflink_sql.peer`` (the peer's command line).

    python jobs/bench_peer_sql_job.py --bootstrap HOST:PORT --tx-topic tx --labels-topic labels \
        --out-topic scores --redis-url redis://... [--group-id G]

The environment, jars, Kafka source and sink tables are the fraud job's own (jobs.common): the same MiniCluster
settings, the raw-value Kafka tables with a watermark of fraud.out_of_orderness_ms on the record timestamp (our
producers set it to the event time). Then everything is SQL:

    Kafka raw bytes -> pandas UDF: decode + validate (udfs.routing, the pandas decoder; undecodable records dropped)
      -> UNION ALL of transactions (is_tx = 1) and labels (is_label = 1, at their label time)
      -> three RANGE OVER views partitioned by terminal (1d, 7d, 30d): transactions, labels, frauds
      -> the transactions only -> six OVER views partitioned by customer (5m, 1h, 1d, 7d, 30d: count and sum;
         a zero-width window: rows sharing the millisecond) and LAG (the previous transaction's time)
      -> pandas UDF: profiles from Redis (pipelines.profiles.ProfileStore), udfs.fraud_scoring.derive_features,
         the numpy reference scorer, FraudScore Avro (pipelines.serde.BatchEncoder)
      -> Kafka sink (raw bytes, at-least-once)

Flink SQL takes one window spec per SELECT, so every window is a view over the one before (each keeps rowtime).
An OVER window emits a row once the watermark passes its time: every score waits at least out_of_orderness of
event time, and a row behind the watermark is dropped silently by the OVER operator (only Flink's
numLateRecordsDropped metric sees it). infra/bench/peers/pyflink_sql/README.md says where the results differ from
streamscore's.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.common import create_envs, create_kafka_source, kafka_sink_ddl  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.features import CUSTOMER_WINDOWS, TERMINAL_WINDOWS  # noqa: E402
from udfs.features_sql import FINAL_COLUMNS, sql_type  # noqa: E402

JOB_NAME = "bench-peer-pyflink-sql"
DELIVERY = "at-least-once"

# The SQL interval of each window width (pipelines.features holds the widths in ms).
_UNITS = ((86_400_000, "DAY"), (3_600_000, "HOUR"), (60_000, "MINUTE"), (1000, "SECOND"))


def sql_interval(ms: int) -> str:
    for unit_ms, unit in _UNITS:
        if ms % unit_ms == 0:
            return f"INTERVAL '{ms // unit_ms}' {unit}"
    raise ValueError(f"no SQL interval for {ms} ms")


def _over(key: str, width_ms: int) -> str:
    return (f"OVER (PARTITION BY {key} ORDER BY rowtime RANGE BETWEEN {sql_interval(width_ms)} PRECEDING AND "
            f"CURRENT ROW)")


TX_FIELDS = ["transaction_id", "customer_id", "terminal_id", "amount", "event_time", "produced_at"]


def feature_views(tx_view: str, label_view: str) -> tuple[list[str], str]:
    """(CREATE VIEW statements, the final view with udfs.features_sql.FINAL_COLUMNS + rowtime). `tx_view` has
    TX_FIELDS + rowtime, `label_view` (transaction_id, customer_id, terminal_id, label, label_time, rowtime)."""
    stmts = [
        f"CREATE TEMPORARY VIEW s_union AS "
        f"SELECT {', '.join(TX_FIELDS)}, 1 AS is_tx, 0 AS is_label, 0 AS is_fraud, rowtime FROM {tx_view} "
        f"UNION ALL SELECT transaction_id, customer_id, terminal_id, CAST(0 AS DOUBLE) AS amount, "
        f"label_time AS event_time, CAST(0 AS BIGINT) AS produced_at, 0 AS is_tx, 1 AS is_label, "
        f"label AS is_fraud, rowtime FROM {label_view}"]
    prev, cols = "s_union", [*TX_FIELDS, "is_tx", "is_label", "is_fraud"]
    for name, w in TERMINAL_WINDOWS.items():
        over = _over("terminal_id", w)
        view = f"s_term_{name}"
        stmts.append(f"CREATE TEMPORARY VIEW {view} AS SELECT {', '.join(cols)}, "
                     f"CAST(SUM(is_tx) {over} AS BIGINT) AS term_cnt_{name}, "
                     f"CAST(SUM(is_label) {over} AS BIGINT) AS term_nlabels_{name}, "
                     f"CAST(SUM(is_fraud) {over} AS BIGINT) AS term_nfraud_{name}, rowtime FROM {prev}")
        cols += [f"term_cnt_{name}", f"term_nlabels_{name}", f"term_nfraud_{name}"]
        prev = view
    cols = [c for c in cols if c not in ("is_tx", "is_label", "is_fraud")]
    stmts.append(f"CREATE TEMPORARY VIEW s_term AS SELECT {', '.join(cols)}, rowtime FROM {prev} WHERE is_tx = 1")
    prev = "s_term"
    for name, w in CUSTOMER_WINDOWS.items():
        over = _over("customer_id", w)
        view = f"s_cust_{name}"
        stmts.append(f"CREATE TEMPORARY VIEW {view} AS SELECT {', '.join(cols)}, "
                     f"COUNT(*) {over} AS cust_cnt_{name}, SUM(amount) {over} AS cust_sum_{name}, "
                     f"rowtime FROM {prev}")
        cols += [f"cust_cnt_{name}", f"cust_sum_{name}"]
        prev = view
    # The rows of the customer sharing this millisecond (RANGE counts them together), and the previous transaction's
    # time: when two share the millisecond, derive_features takes 0 s since the previous, so LAG's pick among them
    # does not matter.
    stmts.append(f"CREATE TEMPORARY VIEW s_cust_same AS SELECT {', '.join(cols)}, "
                 f"COUNT(*) OVER (PARTITION BY customer_id ORDER BY rowtime RANGE BETWEEN INTERVAL '0' SECOND "
                 f"PRECEDING AND CURRENT ROW) AS cust_same_ts, rowtime FROM {prev}")
    cols.append("cust_same_ts")
    stmts.append(f"CREATE TEMPORARY VIEW s_final AS SELECT {', '.join(cols)}, "
                 f"COALESCE(LAG(event_time) OVER (PARTITION BY customer_id ORDER BY rowtime), CAST(-1 AS BIGINT)) "
                 f"AS cust_prev_ts, CAST(0 AS BIGINT) AS ingest_ms, "
                 f"rowtime FROM s_cust_same")
    return stmts, "s_final"


def score_udf(redis_url: str):
    """The scoring step as a pandas UDF over FINAL_COLUMNS: one Redis lookup per batch, the job's feature
    derivation, the numpy reference scorer, FraudScore records."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class Score(ScalarFunction):
        def open(self, function_context):
            from pipelines.profiles import ProfileStore
            from pipelines.serde import BatchEncoder
            from udfs.scoring import ReferenceScorer, resolve_model_dir

            self.cfg = load_config()
            self.scorer = ReferenceScorer(resolve_model_dir(self.cfg))
            self.names = list(self.scorer.features)
            self.profiles = ProfileStore(redis_url, max_amount=self.cfg.fraud.max_amount)
            self.encoder = BatchEncoder("fraud_score")

        def eval(self, *series):
            import numpy as np
            import pandas as pd

            from udfs.fraud_scoring import derive_features

            n = len(series[0])
            # The planner passes a constant column (ingest_ms) as a scalar.
            c = {name: s.to_numpy() if isinstance(s, pd.Series) else np.full(n, s)
                 for name, s in zip(FINAL_COLUMNS, series)}
            cust = self.profiles.lookup("customer", c["customer_id"])
            term = self.profiles.lookup("terminal", c["terminal_id"])
            feats = derive_features(c, cust.mean, cust.std)
            cols = [np.ascontiguousarray(feats[k], dtype=np.float32) for k in self.names]
            scores = np.asarray(self.scorer.score(cols), dtype=np.float64)
            review, decline = self.cfg.fraud.review_threshold, self.cfg.fraud.decline_threshold
            decision = np.where(scores >= decline, 2, np.where(scores >= review, 1, 0))
            flags = (cust.missing.astype(np.int64) | (term.missing.astype(np.int64) << 1)
                     | (cust.invalid.astype(np.int64) << 2) | (term.invalid.astype(np.int64) << 3))
            out = self.encoder.encode({
                "transaction_id": c["transaction_id"], "customer_id": c["customer_id"],
                "terminal_id": c["terminal_id"], "amount": c["amount"], "event_time": c["event_time"],
                "features": (self.names, np.stack([feats[k] for k in self.names], axis=1)),
                "profile_flags": flags, "score": scores, "decision": decision, "model_version": self.scorer.version,
                "produced_at": c["produced_at"], "scored_at": np.full(n, int(time.time() * 1000), np.int64)}, n)
            return pd.Series(out)

    types = [DataTypes.DOUBLE() if sql_type(col) == "DOUBLE" else DataTypes.BIGINT() for col in FINAL_COLUMNS]
    return udf(Score(), input_types=types, result_type=DataTypes.BYTES(), func_type="pandas")


def decoded_view(t_env, cfg, *, source: str, kind: str, view: str) -> None:
    """`view`: the decoded, valid records of `source` (a jobs.common Kafka table) with its record time as rowtime.
    Records that fail to decode or validate are dropped (this peer has no dead-letter topic)."""
    from udfs.routing import KINDS, _decode_udf

    f = cfg.fraud
    t_env.create_temporary_function(f"decode_{view}", _decode_udf(kind, f.max_future_ms, JOB_NAME, f.max_amount,
                                                                  f.min_event_time_ms))
    fields = ", ".join(f"d.`{name}` AS `{name}`" for name in KINDS[kind].fields)
    t_env.execute_sql(f"CREATE TEMPORARY VIEW {view} AS SELECT {fields}, rowtime FROM (SELECT decode_{view}(`value`) "
                      f"AS d, kafka_ts AS rowtime FROM {source}) WHERE d.reason IS NULL")


def build(t_env, cfg, args):
    for table, topic in (("tx_source", args.tx_topic), ("label_source", args.labels_topic)):
        create_kafka_source(t_env, cfg, table=table, topic=topic, group_id=args.group_id, bootstrap=args.bootstrap)
    t_env.execute_sql(kafka_sink_ddl(cfg, table="scores_sink", topic=args.out_topic, bootstrap=args.bootstrap,
                                     guarantee=DELIVERY))
    decoded_view(t_env, cfg, source="tx_source", kind="transaction", view="tx_v")
    decoded_view(t_env, cfg, source="label_source", kind="transaction_label", view="label_v")
    stmts, final = feature_views("tx_v", "label_v")
    for s in stmts:
        t_env.execute_sql(s)
    t_env.create_temporary_function("score_fraud", score_udf(args.redis_url))
    args_sql = ", ".join(f"CAST({c} AS {sql_type(c)})" for c in FINAL_COLUMNS)
    scores = t_env.sql_query(f"SELECT ENCODE(CAST(transaction_id AS STRING), 'UTF-8') AS `key`, "
                             f"score_fraud({args_sql}) AS `value` FROM {final}")
    st = t_env.create_statement_set()
    st.add_insert("scores_sink", scores)
    return st


def run(args: argparse.Namespace) -> int:
    cfg = load_config()
    # Checkpoints in a folder of this run (the harness kills the process group, so a kill -9 may leave it in /tmp).
    ckpt = Path(tempfile.mkdtemp(prefix="streamscore-peer-sql-"))
    atexit.register(shutil.rmtree, ckpt, True)
    extra = {"python.fn-execution.bundle.size": str(cfg.fraud.bundle_size),
             "python.fn-execution.arrow.batch.size": str(cfg.fraud.bundle_size),
             "python.fn-execution.bundle.time": str(cfg.fraud.bundle_time_ms),
             "execution.checkpointing.dir": ckpt.as_uri(),
             # Beside a running streamscore: any free REST port, and no Prometheus reporter.
             "rest.port": "0", "rest.bind-port": "0", "metrics.reporters": "none"}
    _, t_env = create_envs(cfg, job_name=JOB_NAME, extra=extra, execution_mode=cfg.fraud.execution_mode)
    build(t_env, cfg, args).execute().wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--tx-topic", required=True)
    ap.add_argument("--labels-topic", required=True)
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--group-id", default=f"pyflink-sql-peer-{time.time_ns()}")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
