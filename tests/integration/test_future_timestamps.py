"""A record stamped in the future never moves the watermark past the wall clock.

The broker accepts a record stamped up to log.message.timestamp.after.max.ms (an hour) ahead. Before the guard
(udfs/java WatermarkGuard in the source's WATERMARK), one such record moved its partition's watermark an hour on,
and every honest transaction of the next hour went to the late topic. The real broker, Redis and fraud job (one
partition, so that one record decides the watermark): a transaction stamped 5 minutes ahead (inside
fraud.max_future_ms, so scored) and one 30 minutes ahead (beyond it: a dead letter), then honest transactions
stamped now. Every honest one must be scored and none may be late.
"""

from __future__ import annotations

import time

import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration

HONEST = 50
MAX_FUTURE_MS = 600_000


def test_future_stamped_records_do_not_move_the_watermark(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    cfg = load_config()
    tx_t, lb_t, out_t = (topic_factory("future-tx", partitions=1), topic_factory("future-labels", partitions=1),
                         topic_factory("future-scores"))
    late_t, dead_t = topic_factory("future-late"), topic_factory("future-dead")
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MAX_FUTURE_MS": str(MAX_FUTURE_MS),
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    s = serde("transaction")
    producer = kafka_util.producer(kafka_bootstrap, **{"linger.ms": 0})

    def send(txid: int, ahead_ms: int = 0) -> None:
        t = int(time.time() * 1000) + ahead_ms
        producer.produce(tx_t, s.encode({"transaction_id": txid, "customer_id": 7, "terminal_id": 42, "amount": 12.5,
                                         "event_time": t, "produced_at": t, "currency": "EUR"}),
                         key=b"7", timestamp=t)
        producer.flush(10)

    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                    "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", "", "--late-topic", late_t,
                    "--dead-topic", dead_t, "--group-id", f"g-{tx_t}", env=env) as job:
        send(0)
        first = kafka_util.read_topic(kafka_bootstrap, out_t, expected=1, timeout=240, idle=240)
        assert len(first) == 1, job.output()
        send(1, ahead_ms=5 * 60_000)
        send(2, ahead_ms=30 * 60_000)
        time.sleep(2 * cfg.flink.auto_watermark_interval_ms / 1000 + 1)  # the watermark would have moved by now
        for txid in range(3, 3 + HONEST):
            send(txid)
        scores = kafka_util.read_topic(kafka_bootstrap, out_t, expected=2 + HONEST, timeout=120, idle=60)
        dead = kafka_util.read_topic(kafka_bootstrap, dead_t, expected=1, timeout=60, idle=30)
        late = kafka_util.read_topic(kafka_bootstrap, late_t, idle=3, timeout=10)
        output = job.output()
    ids = sorted(serde("fraud_score").decode(m.value())["transaction_id"] for m in scores)
    assert ids == [0, 1, *range(3, 3 + HONEST)], (ids, output)
    assert [serde("dead_letter").decode(m.value())["reason"] for m in dead] == ["future-timestamp"]
    assert late == [], [serde("late_event").decode(m.value()) for m in late]
