"""Feature state is bounded: rows ahead of the watermark per key (fraud.max_rows_ahead) and idle keys
(fraud.state_ttl_ms).

The real broker, Redis and fraud job, on the live clock, one partition (so the test decides the watermark):
- A flood stamped a minute ahead at one terminal: the first max_rows_ahead transactions are scored, the rest are
  dead letters (too-many-ahead), counted in streamscore_dead_letters_total, and the job goes on scoring.
- A customer idle for longer than state_ttl_ms starts afresh: its next transaction sees no earlier one in any window
  (with the state kept it would see the first, which is well inside 30 days).
"""

from __future__ import annotations

import time

import pytest

from infra.services import free_port
from pipelines import kafka_util
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.pipeline_util import eventually, scrape, total, write_test_model

pytestmark = pytest.mark.integration

MAX_AHEAD = 5
FLOOD = 8
TTL_MS = 3000


def test_rows_ahead_are_bounded_and_idle_keys_expire(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    tx_t, lb_t, out_t = (topic_factory("bounded-tx", partitions=1), topic_factory("bounded-labels", partitions=1),
                         topic_factory("bounded-scores"))
    late_t, dead_t = topic_factory("bounded-late"), topic_factory("bounded-dead")
    port = free_port()
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MAX_ROWS_AHEAD": str(MAX_AHEAD),
           "STREAMSCORE_FRAUD__STATE_TTL_MS": str(TTL_MS), "STREAMSCORE_METRICS__JOB_PORT": str(port),
           # The label topic stays empty: idle after 1 s, so the feature functions' watermark follows the
           # transactions' (their timers fire) without waiting 30 s.
           "STREAMSCORE_FRAUD__IDLENESS_MS": "1000",
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    s, scores_serde = serde("transaction"), serde("fraud_score")
    producer = kafka_util.producer(kafka_bootstrap, **{"linger.ms": 0})
    got: dict[int, dict] = {}
    reader = kafka_util.consumer(kafka_bootstrap, f"r-{out_t}", read_committed=False)
    reader.subscribe([out_t])

    def send(txid: int, customer: int, terminal: int, ahead_ms: int = 0) -> None:
        t = int(time.time() * 1000) + ahead_ms
        producer.produce(tx_t, s.encode({"transaction_id": txid, "customer_id": customer, "terminal_id": terminal,
                                         "amount": 10.0, "event_time": t, "produced_at": t, "currency": "EUR"}),
                         key=str(customer).encode(), timestamp=t)
        producer.flush(10)

    def scored(*ids: int):
        def check():
            for m in reader.consume(num_messages=500, timeout=0.5):
                if m.error() is None:
                    rec = scores_serde.decode(m.value())
                    got[rec["transaction_id"]] = rec
            return all(i in got for i in ids)
        return check

    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                    "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", "", "--late-topic", late_t,
                    "--dead-topic", dead_t, "--group-id", f"g-{tx_t}", env=env) as job:
        send(1, customer=100, terminal=900)
        eventually(scored(1), 240, f"the first score\n{job.output()}")
        # The idle customer: its state must be gone once the watermark (moved by other keys) is TTL past it.
        for i in range(10):
            time.sleep(0.5)
            send(10 + i, customer=200 + i, terminal=901 + i)
        time.sleep(TTL_MS / 1000 + 6)  # past the TTL plus the out-of-orderness bound (5 s) on the live clock
        for i in range(10):
            send(30 + i, customer=300 + i, terminal=951 + i)  # moves the watermark past the expiry timers
            time.sleep(0.3)
        send(2, customer=100, terminal=900)
        # The flood: one terminal (and customer), stamped a minute ahead of the wall clock and of the watermark.
        for i in range(FLOOD):
            send(1000 + i, customer=500, terminal=999, ahead_ms=60_000)
        send(3, customer=101, terminal=902)  # the job goes on scoring
        eventually(scored(2, 3, *range(1000, 1000 + MAX_AHEAD)), 120, f"the scores\n{job.output()}")
        dead = kafka_util.read_topic(kafka_bootstrap, dead_t, expected=FLOOD - MAX_AHEAD, timeout=60, idle=30)
        eventually(lambda: total(scrape(port), "streamscore_dead_letters_total", reason="too-many-ahead")
                   == FLOOD - MAX_AHEAD, 30, "the too-many-ahead counter")
        time.sleep(3)
        scored()()
    reader.close()
    letters = [serde("dead_letter").decode(m.value()) for m in dead]
    assert sorted(int(d["key"]) for d in letters) == list(range(1000 + MAX_AHEAD, 1000 + FLOOD))
    assert {d["reason"] for d in letters} == {"too-many-ahead"}
    assert all(d["source_topic"] == tx_t and "terminal 999" in d["error"] for d in letters), letters
    assert not set(got) & set(range(1000 + MAX_AHEAD, 1000 + FLOOD))
    again = got[2]["features"]
    assert again["cust_cnt_30d"] == 1 and again["cust_secs_since_prev"] == -1, again
    assert got[2]["features"]["term_cnt_30d"] == 1, again
