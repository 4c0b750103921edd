"""The first job: Kafka `transactions` -> decode and validate -> Kafka `transactions-decoded`.

It proves the whole chain (producer, broker, Flink Kafka connector, Python decode, transactional sink). Bad records
go to `dead-letter`. Run locally with ``python jobs/passthrough_job.py`` or on a cluster with
``flink run -py jobs/passthrough_job.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyflink.common import Row  # noqa: E402
from pyflink.datastream import MapFunction  # noqa: E402

from jobs.common import create_envs, create_kafka_source, kafka_sink_ddl  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from udfs.routing import KINDS, add_counters, kv_type, route_table, to_kv_table  # noqa: E402


class EncodeTransaction(MapFunction):
    def open(self, runtime_context):
        from pipelines.serde import serde

        self.serde = serde("transaction")
        self.fields = KINDS["transaction"].fields

    def map(self, row):
        rec = {f: row[i] for i, f in enumerate(self.fields) if f != "ingest_ms"}
        rec["currency"] = "EUR"
        return Row(str(rec["customer_id"]).encode(), self.serde.encode(rec))


def build(t_env, cfg, *, bootstrap: str, source_topic: str, out_topic: str, dead_topic: str, group_id: str,
          bounded: bool = False):
    create_kafka_source(t_env, cfg, table="tx_source", topic=source_topic, group_id=group_id, bootstrap=bootstrap,
                        bounded=bounded)
    t_env.execute_sql(kafka_sink_ddl(cfg, table="tx_out", topic=out_topic, bootstrap=bootstrap,
                                     txn_prefix=f"{group_id}-out"))
    t_env.execute_sql(kafka_sink_ddl(cfg, table="dead_out", topic=dead_topic, bootstrap=bootstrap,
                                     txn_prefix=f"{group_id}-dead"))
    routes = route_table(t_env, source_table="tx_source", kind="transaction", view="tx_v",
                         limits=cfg.fraud, component="passthrough-job", with_late=False)
    ok = t_env.to_data_stream(t_env.from_path("tx_v"))  # the kind's fields, then rowtime
    encoded = ok.map(EncodeTransaction(), output_type=kv_type()).name("encode-transaction")
    stmts = t_env.create_statement_set()
    stmts.add_insert("tx_out", to_kv_table(t_env, encoded))
    stmts.add_insert("dead_out", routes.dead)
    add_counters(t_env, stmts, routes.counted)
    return stmts


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default=cfg.kafka.bootstrap_servers)
    ap.add_argument("--source-topic", default=cfg.topics.transactions)
    ap.add_argument("--out-topic", default=cfg.topics.passthrough)
    ap.add_argument("--dead-topic", default=cfg.topics.dead_letter)
    ap.add_argument("--group-id", default="streamscore-passthrough")
    ap.add_argument("--bounded", action="store_true", help="stop at the end offsets seen at start")
    args, _ = ap.parse_known_args(argv)
    env, t_env = create_envs(cfg, job_name="streamscore-passthrough")
    stmts = build(t_env, cfg, bootstrap=args.bootstrap, source_topic=args.source_topic, out_topic=args.out_topic,
                  dead_topic=args.dead_topic, group_id=args.group_id, bounded=args.bounded)
    stmts.execute().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
