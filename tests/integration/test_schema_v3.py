"""A newer writer flows through the running job: producers upgraded to the v3 transaction schema before the job.

schemas/history/transaction.v3.avsc adds a nullable `merchant_category` (a union) and a `channel` enum with a
default symbol, and annotates the timestamps as timestamp-millis. The job's reader stays v2 (schemas/transaction.avsc)
and knows v3 by its fingerprint (serde's writer index, which the JVM decoder's avro-writers.tsv is built from): each
v3 record is resolved to v2 (the new fields skipped) and scored. Before the decoder read every Avro type, each such
record was a dead letter. The real broker, Redis and fraud job; v3, v2 and v1 writers interleaved; every
transaction must be scored once, nothing may be in the dead-letter topic, and the job must never fail over.
"""

from __future__ import annotations

import time

import pytest

from pipelines import kafka_util
from pipelines.serde import SCHEMA_DIR, AvroSerde, serde
from tests.flink_util import RunningJob
from tests.integration.test_poison_record import FAILOVER, RUNNING
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration

N = 450  # two v3 records, then one v2 or v1, in turn


def test_a_v3_writer_is_scored_by_the_running_job(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    tx_t, lb_t, out_t = topic_factory("v3-tx"), topic_factory("v3-labels"), topic_factory("v3-scores")
    late_t, dead_t = topic_factory("v3-late"), topic_factory("v3-dead")
    env = {"STREAMSCORE_REDIS__URL": redis_url,
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    writers = {"v3": AvroSerde("transaction", schema_path=SCHEMA_DIR / "history" / "transaction.v3.avsc"),
               "v2": serde("transaction"),
               "v1": AvroSerde("transaction", schema_path=SCHEMA_DIR / "history" / "transaction.v1.avsc")}
    assert len({w.fingerprint for w in writers.values()}) == 3
    producer = kafka_util.producer(kafka_bootstrap, **{"linger.ms": 5})
    sent: dict[str, list[int]] = {k: [] for k in writers}

    def record(i: int) -> tuple[str, bytes]:
        now = int(time.time() * 1000)
        tx = {"transaction_id": i, "customer_id": i % 40, "terminal_id": i % 15, "amount": 5.0 + i % 200,
              "event_time": now, "produced_at": now}
        version = "v3" if i % 3 else ("v2" if i % 2 else "v1")
        if version != "v1":
            tx["currency"] = "EUR"
        if version == "v3":
            tx["merchant_category"] = None if i % 4 == 0 else ["5411", "5812", "4829"][i % 3]
            tx["channel"] = ["UNKNOWN", "POS", "ONLINE", "ATM"][i % 4]
        return version, writers[version].encode(tx)

    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                    "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", "", "--late-topic", late_t,
                    "--dead-topic", dead_t, "--group-id", f"g-{tx_t}", env=env) as job:
        for i in range(N):
            version, raw = record(i)
            sent[version].append(i)
            producer.produce(tx_t, raw, key=str(i).encode())
            producer.poll(0)
            if i % 50 == 0:
                time.sleep(0.1)
        producer.flush(30)
        deadline = time.time() + 300
        scores: list[dict] = []
        while time.time() < deadline:
            assert job.alive(), job.output()
            msgs = kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=20, read_committed=True)
            scores = [serde("fraud_score").decode(m.value()) for m in msgs]
            if len({s["transaction_id"] for s in scores}) >= N:
                break
            time.sleep(1)
        dead = kafka_util.read_topic(kafka_bootstrap, dead_t, idle=2, timeout=15)
        assert job.alive(), job.output()
        logs = [p for p in (tmp_path / "flink-logs").glob("*") if p.is_file()] + [tmp_path / "fraud_job.out"]
        text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())

    reasons = [serde("dead_letter").decode(m.value())["reason"] for m in dead]
    assert not dead, f"{len(dead)} dead letters: {sorted(set(reasons))}"
    ids = [s["transaction_id"] for s in scores]
    assert sorted(ids) == list(range(N)), (f"{len(set(ids))} of {N} scored, {len(ids) - len(set(ids))} twice; "
                                           f"v3 missing: {sorted(set(sent['v3']) - set(ids))[:10]}")
    assert len(sent["v3"]) == 300 and len(sent["v2"]) == 75 and len(sent["v1"]) == 75
    by_id = {s["transaction_id"]: s for s in scores}
    for i in sent["v3"][:20]:
        assert by_id[i]["amount"] == 5.0 + i % 200 and by_id[i]["customer_id"] == i % 40, by_id[i]
    assert RUNNING.search(text), f"no state transitions in the job's logs ({[p.name for p in logs]})"
    failovers = [line[:300] for line in text.splitlines() if FAILOVER.search(line)]
    assert not failovers, "the job failed over:\n" + "\n".join(failovers[:20])
