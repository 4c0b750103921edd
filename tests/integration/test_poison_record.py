"""Poison records do not take fraud scoring down: they are dead letters, and the job keeps running.

The issue: a crafted 50-byte Transaction (valid single-object header and fingerprint, then a `currency` length
that is a 10-byte varint near Long.MAX_VALUE) made AvroDecoder.need() overflow, ByteBuffer.wrap threw
IndexOutOfBoundsException out of the SQL function, and the job restarted 65 times in 70 s without scoring one of
the 4,000 transactions sent after it. Amounts the checks let through but the float32 scorer rejects (finite doubles
that are infinite as float32, subnormals) failed the job the same way.

The real broker, Redis and fraud job: good transactions, then the poison records, then more good ones. Every good
one must be scored, each poison record must be in the dead-letter topic with its reason, its raw bytes and where it
came from (topic, partition, offset), and the job must never have failed over (its logs: no task or job switched
from RUNNING to FAILED, FAILING or RESTARTING, no restore).
"""

from __future__ import annotations

import re
import struct
import time

import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.serde import MARKER, _varint_bytes, serde
from tests.flink_util import RunningJob
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration

GOOD_BEFORE = 200
GOOD_AFTER = 300
FAILOVER = re.compile(r"switched from (state )?RUNNING to (FAILED|FAILING|RESTARTING|CANCELING)"
                      r"|to RESTARTING|Restoring job|Recovering the job|restart-strategy: restarting", re.I)
RUNNING = re.compile(r"switched from (state )?\w+ to RUNNING")


def crafted_50_bytes() -> bytes:
    """The issue's record: a Transaction whose currency length is a 10-byte varint near Long.MAX_VALUE."""
    s = serde("transaction")
    body = b"".join(_varint_bytes(v) for v in (900_000_001, 7, 42))
    body += struct.pack("<d", 12.5)
    body += _varint_bytes(1_522_540_831_000) + _varint_bytes(1_700_000_000_000)
    raw = MARKER + s.fingerprint + body + _varint_bytes(2**63 - 8) + b"EUR"
    raw += b"X" * (50 - len(raw))
    assert len(raw) == 50 and len(_varint_bytes(2**63 - 8)) == 10
    return raw


def test_poison_records_are_dead_letters_and_the_job_keeps_scoring(kafka_bootstrap, redis_url, topic_factory,
                                                                   tmp_path):
    cfg = load_config()
    tx_t, lb_t, out_t = topic_factory("poison-tx"), topic_factory("poison-labels"), topic_factory("poison-scores")
    late_t, dead_t = topic_factory("poison-late"), topic_factory("poison-dead")
    env = {"STREAMSCORE_REDIS__URL": redis_url,
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    s = serde("transaction")
    producer = kafka_util.producer(kafka_bootstrap, **{"linger.ms": 5})
    delivered: dict[bytes, tuple[int, int]] = {}  # key -> (partition, offset)

    def on_delivery(err, msg):
        assert err is None, err
        delivered[msg.key()] = (msg.partition(), msg.offset())

    def tx(txid: int, **change) -> bytes:
        now = int(time.time() * 1000)
        return s.encode({"transaction_id": txid, "customer_id": txid % 50, "terminal_id": txid % 20,
                         "amount": 10.0 + txid % 300, "event_time": now, "produced_at": now, "currency": "EUR",
                         **change})

    def send(topic: str, key: bytes, value: bytes) -> None:
        producer.produce(topic, value, key=key, on_delivery=on_delivery)
        producer.poll(0)

    def scored_ids(expected: int, timeout: float) -> set[int]:
        deadline = time.time() + timeout
        ids: set[int] = set()
        while time.time() < deadline:
            assert job.alive(), job.output()
            msgs = kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=20, read_committed=True)
            ids = {serde("fraud_score").decode(m.value())["transaction_id"] for m in msgs}
            if len(ids) >= expected:
                return ids
            time.sleep(1)
        return ids

    max_amount = cfg.fraud.max_amount
    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                    "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", "", "--late-topic", late_t,
                    "--dead-topic", dead_t, "--group-id", f"g-{tx_t}", env=env) as job:
        for i in range(GOOD_BEFORE):
            send(tx_t, str(i).encode(), tx(i))
        producer.flush(30)
        got = scored_ids(GOOD_BEFORE, 300)
        assert got == set(range(GOOD_BEFORE)), f"only {len(got)} scored before the poison\n{job.output()}"

        now = int(time.time() * 1000)
        poison = {  # key -> (topic, raw bytes, reason)
            b"poison-crafted-50": (tx_t, crafted_50_bytes(), "corrupt-avro"),
            b"poison-negative-length": (tx_t, tx(900_000_002, currency="EUR")[:-4] + _varint_bytes(-5) + b"EUR",
                                        "corrupt-avro"),
            b"poison-float32-inf": (tx_t, tx(900_000_003, amount=3.5e38), "bad-amount"),
            b"poison-subnormal": (tx_t, tx(900_000_004, amount=1e-40), "bad-amount"),
            b"poison-over-max": (tx_t, tx(900_000_005, amount=max_amount * 2), "amount-too-large"),
            b"poison-truncated-label": (lb_t, serde("transaction_label").encode(
                {"transaction_id": 1, "customer_id": 1, "terminal_id": 1, "label": 1, "tx_time": now,
                 "label_time": now, "produced_at": now})[:-3], "corrupt-avro"),
        }
        for key, (topic, raw, _) in poison.items():
            send(topic, key, raw)
        producer.flush(30)
        for i in range(GOOD_BEFORE, GOOD_BEFORE + GOOD_AFTER):
            send(tx_t, str(i).encode(), tx(i))
            if i % 50 == 0:
                time.sleep(0.1)  # the later ones spread over a few seconds, as a live stream
        producer.flush(30)

        total = GOOD_BEFORE + GOOD_AFTER
        got = scored_ids(total, 240)
        missing = sorted(set(range(total)) - got)
        assert not missing, f"{len(missing)} good transactions not scored, first {missing[:10]}\n{job.output()}"
        assert not got - set(range(total)), "a poison record was scored"
        dead_msgs = kafka_util.read_topic(kafka_bootstrap, dead_t, expected=len(poison), idle=2, timeout=60)
        assert job.alive(), job.output()
        logs = [p for p in (tmp_path / "flink-logs").glob("*") if p.is_file()] + [tmp_path / "fraud_job.out"]
        text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())

    dead = {d["key"]: d for d in (serde("dead_letter").decode(m.value()) for m in dead_msgs)}
    assert len(dead_msgs) == len(poison) and set(dead) == set(poison), sorted(dead)
    for key, (topic, raw, reason) in poison.items():
        d = dead[key]
        assert d["reason"] == reason, (key, d["reason"], d["error"])
        assert d["error"] and "internal-error" not in d["reason"], (key, d["error"])
        assert d["payload"] == raw, key
        assert d["source_topic"] == topic and (d["source_partition"], d["source_offset"]) == delivered[key], key
    assert "EOF" in dead[b"poison-crafted-50"]["error"], dead[b"poison-crafted-50"]["error"]

    # The job never failed over: its logs show it running (so the check can see transitions at all) and no task
    # or job ever left RUNNING for FAILED / FAILING / RESTARTING, and no restore from a checkpoint.
    assert RUNNING.search(text), f"no state transitions in the job's logs ({[p.name for p in logs]})"
    failovers = [line[:300] for line in text.splitlines() if FAILOVER.search(line)]
    assert not failovers, "the job failed over:\n" + "\n".join(failovers[:20])
    assert "IndexOutOfBoundsException" not in text
