"""A lone transaction is decided on arrival: nothing after it moves a watermark, and nothing needs to.

The fraud job runs with the defaults of `make run` (emit on arrival, exactly-once record of truth with 2 s
checkpoints, the at-least-once decision topic). Transactions are stamped with the wall clock as they are sent, one
at a time, each only after the one before was decided, with seconds of silence between them: the 3 a.m.
transaction at a single terminal. Each must reach the decision topic within 1 s of being sent (the acceptance line
of the real-time decisions issue; at the watermark the same transaction would wait for the 30 s idleness timeout),
and the record of truth must hold each of them once, after its checkpoint commits.
"""

from __future__ import annotations

import time

import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.decisions import DecisionReader
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration

LONE = 5


def test_lone_transaction_is_decided_within_a_second(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    cfg = load_config()
    assert cfg.fraud.emit == "arrival"
    tx_t, lb_t, out_t, dec_t = (topic_factory("lone-tx"), topic_factory("lone-labels"), topic_factory("lone-scores"),
                                topic_factory("lone-decisions"))
    late_t, dead_t = topic_factory("lone-late"), topic_factory("lone-dead")
    env = {"STREAMSCORE_REDIS__URL": redis_url,
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    s = serde("transaction")
    producer = kafka_util.producer(kafka_bootstrap, **{"linger.ms": 0})
    reader = DecisionReader(kafka_bootstrap, dec_t, f"lone-{dec_t}")

    def send(txid: int) -> int:
        now = int(time.time() * 1000)
        producer.produce(tx_t, s.encode({"transaction_id": txid, "customer_id": 7, "terminal_id": 42,
                                         "amount": 12.5, "event_time": now, "produced_at": now,
                                         "currency": "EUR"}), key=b"7", timestamp=now)
        producer.flush(10)
        return now

    def decided(txid: int, timeout: float) -> float | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for rec in reader.poll(0.05):
                if rec["transaction_id"] == txid:
                    return time.time() * 1000
        return None

    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                    "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", dec_t, "--late-topic",
                    late_t, "--dead-topic", dead_t, "--group-id", f"g-{tx_t}", env=env) as job:
        # The first transaction also waits for the job's start (JVM, Python workers, model): untimed.
        send(0)
        assert decided(0, 240) is not None, job.output()
        latencies = []
        for txid in range(1, LONE + 1):
            time.sleep(3)  # silence: no later event, no watermark movement, only the idle timeout (30 s) ahead
            sent = send(txid)
            got = decided(txid, 40)
            assert got is not None, f"transaction {txid} was never decided\n{job.output()}"
            latencies.append(got - sent)
        print(f"lone transactions, sent -> decided (ms): {[round(x) for x in latencies]}")
        deadline = time.time() + 60
        committed = []
        while time.time() < deadline and len(committed) < LONE + 1:
            committed = kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=10, read_committed=True)
        reader.close()
    ids = sorted(serde("fraud_score").decode(m.value())["transaction_id"] for m in committed)
    assert ids == list(range(LONE + 1)), ids
    assert max(latencies) <= 1000, f"decisions took {latencies} ms"
