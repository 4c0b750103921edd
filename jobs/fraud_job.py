"""The fraud job: `transactions` + `transaction-labels` -> features -> score -> `fraud-scores`.

    Kafka (raw bytes, per-partition watermarks on the record time)
      -> Java function: decode + validate (udfs/java AvroDecoder); SQL splits off dead letters, and late events by
         comparing each event's own time with CURRENT_WATERMARK (SQL would drop them silently further on)
      -> Flink SQL over two Java process table functions (udfs/java): per terminal over transactions and labels,
         then per customer, each computing all its windows as an event arrives (fraud.emit = arrival) or once the
         watermark passes its time (fraud.emit = watermark)
      -> pandas UDF: profile lookup (Redis), derived features, batched scoring (C++ scorer by default)
      -> Kafka `fraud-decisions` (at-least-once: visible at once, the decision path) and `fraud-scores` (the record
         of truth: flink.delivery_guarantee, exactly-once by default, committed on checkpoints)

Local MiniCluster: ``python jobs/fraud_job.py``; a cluster: ``flink run -py jobs/fraud_job.py``.
``--restore latest`` resumes from the newest retained checkpoint (after a crash).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.common import create_envs, create_kafka_source, kafka_sink_ddl, restore_settings  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from udfs.features_sql import (DROPPED_VIEW, FINAL_COLUMNS, UNKNOWN_LABELS_VIEW, feature_views,  # noqa: E402
                                register_functions, sql_type)
from udfs.fraud_scoring import make_udf, make_unknown_label_counter  # noqa: E402
from udfs.routing import add_counters, dropped_row_udf, route_table  # noqa: E402

JOB_NAME = "streamscore-fraud"


def build(t_env, cfg, args):
    bootstrap = args.bootstrap
    create_kafka_source(t_env, cfg, table="tx_source", topic=args.source_topic, group_id=args.group_id,
                        bootstrap=bootstrap)
    create_kafka_source(t_env, cfg, table="label_source", topic=args.labels_topic, group_id=args.group_id,
                        bootstrap=bootstrap)
    for table, topic in (("scores_sink", args.out_topic), ("late_sink", args.late_topic),
                         ("dead_sink", args.dead_topic)):
        t_env.execute_sql(kafka_sink_ddl(cfg, table=table, topic=topic, bootstrap=bootstrap,
                                         txn_prefix=f"{args.group_id}-{table}"))
    if args.decisions_topic:
        # A transactional sink publishes at the checkpoint's commit: the decision path does not wait for it.
        t_env.execute_sql(kafka_sink_ddl(cfg, table="decisions_sink", topic=args.decisions_topic,
                                         bootstrap=bootstrap, guarantee="at-least-once"))

    common = dict(limits=cfg.fraud, component="fraud-job")
    tx = route_table(t_env, source_table="tx_source", kind="transaction", view="tx_v", **common)
    lb = route_table(t_env, source_table="label_source", kind="transaction_label", view="label_v", **common)
    register_functions(t_env, cfg.fraud.emit)
    stmts, final = feature_views("tx_v", "label_v")
    for s in stmts:
        t_env.execute_sql(s)

    # Labels come from outside and may be crafted: one whose transaction the job never scored at that terminal
    # (unknown, routed away as late), or a repeat, does not count toward the terminal's risk above (udfs/java
    # TerminalWindows); here they are counted.
    t_env.create_temporary_function("count_unknown_labels", make_unknown_label_counter())
    unknown = t_env.sql_query(
        f"SELECT count_unknown_labels(terminal_id, label_time, unknown_labels, duplicate_labels) AS n "
        f"FROM {UNKNOWN_LABELS_VIEW}")

    # Rows over a key's bound of rows ahead of the watermark (fraud.max_rows_ahead) were not added: dead letters.
    t_env.create_temporary_function("dropped_row", dropped_row_udf(
        "fraud-job", {"transaction": args.source_topic, "transaction_label": args.labels_topic},
        cfg.fraud.max_rows_ahead))
    dropped = t_env.sql_query(
        f"SELECT ENCODE(CAST(transaction_id AS STRING), 'UTF-8') AS `key`, dropped_row(kind, key_kind, key_id, "
        f"transaction_id, event_time) AS `value` FROM {DROPPED_VIEW}")

    t_env.create_temporary_function("score_fraud", make_udf(bootstrap, args.dead_topic))
    args_sql = ", ".join(f"CAST({c} AS {sql_type(c)})" for c in FINAL_COLUMNS)
    scores = t_env.sql_query(
        f"SELECT ENCODE(CAST(transaction_id AS STRING), 'UTF-8') AS `key`, score_fraud({args_sql}) AS `value` "
        f"FROM {final}")
    st = t_env.create_statement_set()
    st.add_insert("scores_sink", scores)
    if args.decisions_topic:
        st.add_insert("decisions_sink", scores)
    st.add_insert("late_sink", tx.late.union_all(lb.late))
    st.add_insert("dead_sink", tx.dead.union_all(lb.dead).union_all(dropped))
    add_counters(t_env, st, unknown, tx.counted, lb.counted)
    return st


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    t = cfg.topics
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=cfg.kafka.bootstrap_servers)
    ap.add_argument("--source-topic", default=t.transactions)
    ap.add_argument("--labels-topic", default=t.labels)
    ap.add_argument("--out-topic", default=t.fraud_scores)
    ap.add_argument("--decisions-topic", default=t.fraud_decisions,
                    help="at-least-once copy of the scores for the decision path; '' for none")
    ap.add_argument("--late-topic", default=t.late)
    ap.add_argument("--dead-topic", default=t.dead_letter)
    ap.add_argument("--group-id", default=cfg.flink.group_id)
    ap.add_argument("--restore", default="", help="'latest' or a checkpoint path to resume from")
    args, _ = ap.parse_known_args(argv)
    extra = {"python.fn-execution.bundle.size": str(cfg.fraud.bundle_size),
             "python.fn-execution.arrow.batch.size": str(cfg.fraud.bundle_size),
             "python.fn-execution.bundle.time": str(cfg.fraud.bundle_time_ms),
             **restore_settings(cfg, JOB_NAME, args.restore)}
    env, t_env = create_envs(cfg, job_name=JOB_NAME, extra=extra, execution_mode=cfg.fraud.execution_mode)
    build(t_env, cfg, args).execute().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
