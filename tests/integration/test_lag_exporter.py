"""The lag exporter against the real broker: committed offsets, log-end offsets, lag, event-time lag, /metrics."""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
from confluent_kafka import TopicPartition

from infra import services
from pipelines import kafka_util, metrics
from pipelines.lag_exporter import LagExporter
from pipelines.serde import serde

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    p = kafka_util.producer(bootstrap)
    for partition, n in counts.items():
        for i in range(n):
            p.produce(topic, value=f"v{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def _consume(c, n: int, positions: dict[int, int], timeout: float = 30.0) -> None:
    got = 0
    deadline = time.time() + timeout
    while got < n and time.time() < deadline:
        for m in c.consume(num_messages=n - got, timeout=0.5):
            if m.error() is None:
                positions[m.partition()] = m.offset() + 1
                got += 1
    assert got == n, f"consumed {got} of {n}"


def _commit(c, topic: str, positions: dict[int, int]) -> None:
    c.commit(offsets=[TopicPartition(topic, p, off) for p, off in positions.items()], asynchronous=False)


def test_lag_follows_commits_and_production(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory("lag", partitions=2)
    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, {0: 60, 1: 40})

    c = kafka_util.consumer(kafka_bootstrap, group)
    tps = [TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)]
    c.assign(tps)
    positions = {0: 0, 1: 0}
    exporter = LagExporter(kafka_bootstrap, [group, f"never-committed-{uuid.uuid4().hex[:6]}"], timeout=10)
    try:
        _consume(c, 30, positions)
        _commit(c, topic, positions)
        snap = exporter.poll()
        assert snap.errors == []
        assert snap.lag(group, topic) == 100 - 30
        assert snap.end_offsets[(topic, 0)] == 60 and snap.end_offsets[(topic, 1)] == 40
        assert sum(p.committed for p in snap.lags if p.topic == topic) == 30
        assert metrics.CONSUMER_LAG.labels(group, topic, "0")._value.get() == 60 - positions[0]

        # The consumer stops reading while production goes on: the lag rises by what was produced.
        c.pause(c.assignment())
        _produce(kafka_bootstrap, topic, {0: 25, 1: 25})
        snap = exporter.poll()
        assert snap.lag(group, topic) == 70 + 50
        assert snap.end_offsets[(topic, 0)] == 85

        # It catches up and commits: the lag falls to zero.
        c.resume(c.assignment())
        _consume(c, 120, positions)
        _commit(c, topic, positions)
        snap = exporter.poll()
        assert snap.lag(group, topic) == 0
        assert snap.partition_lag(group, topic) == {0: 0, 1: 0}
    finally:
        c.close()
        exporter.close()


def _score(event_time_ms: int, tx: int) -> dict:
    now = int(time.time() * 1000)
    return {"transaction_id": tx, "customer_id": 1, "terminal_id": 2, "amount": 10.0, "event_time": event_time_ms,
            "features": {"f": 1.0}, "profile_flags": 0, "score": 0.1, "decision": "APPROVE",
            "model_version": "test", "produced_at": now, "scored_at": now}


def test_event_time_lag_from_transactional_output(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory("scores", partitions=2)
    codec = serde("fraud_score")
    now_ms = int(time.time() * 1000)
    # Written the way Flink's exactly-once sink writes: in a transaction, so each partition ends in a commit marker.
    p = kafka_util.producer(kafka_bootstrap, **{"transactional.id": f"lag-test-{uuid.uuid4().hex[:8]}"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, value=codec.encode(_score(now_ms - 120_000 + i * 1000, i)), partition=0)
    p.produce(topic, value=codec.encode(_score(now_ms - 30_000, 99)), partition=1)
    p.produce(topic, value=b"not avro", partition=1)  # an undecodable record is counted, not fatal
    p.commit_transaction(30)

    missing = f"missing-{uuid.uuid4().hex[:8]}"
    exporter = LagExporter(kafka_bootstrap, [], {topic: "fraud_score", missing: "sentiment_score"}, timeout=10)
    try:
        snap = exporter.poll()
        assert snap.newest_event_ms[topic] == now_ms - 30_000
        assert 29.0 <= snap.event_time_lag_s[topic] <= 60.0
        assert missing not in snap.event_time_lag_s
        assert snap.errors == ["decode"]
        # Nothing new: the tails are not read again, the lag keeps growing with the clock.
        snap2 = exporter.poll()
        assert snap2.errors == []
        assert snap2.event_time_lag_s[topic] >= snap.event_time_lag_s[topic]
        assert metrics.EVENT_TIME_LAG_SECONDS.labels(topic)._value.get() == pytest.approx(
            snap2.event_time_lag_s[topic])
    finally:
        exporter.close()


def test_broker_down_is_counted_not_fatal() -> None:
    before = metrics.LAG_EXPORTER_ERRORS.labels(stage="metadata")._value.get()
    exporter = LagExporter(f"127.0.0.1:{services.free_port()}", ["g"], {"fraud-scores": "fraud_score"}, timeout=1)
    try:
        snap = exporter.poll()
    finally:
        exporter.close()
    assert snap.errors == ["metadata"] and snap.lags == []
    assert metrics.LAG_EXPORTER_ERRORS.labels(stage="metadata")._value.get() == before + 1


def test_metrics_endpoint_serves_the_gauges(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory("lag-http", partitions=1)
    group = f"lag-http-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, {0: 7})
    c = kafka_util.consumer(kafka_bootstrap, group)
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    finally:
        c.close()
    exporter = LagExporter(kafka_bootstrap, [group], timeout=10)
    port = services.free_port()
    metrics.serve(port)
    try:
        assert exporter.poll().errors == []
    finally:
        exporter.close()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert f'streamscore_consumer_lag{{group="{group}",partition="0",topic="{topic}"}} 5.0' in body
    assert f'streamscore_consumer_committed_offset{{group="{group}",partition="0",topic="{topic}"}} 2.0' in body
    assert f'streamscore_log_end_offset{{partition="0",topic="{topic}"}} 7.0' in body
    assert "streamscore_lag_exporter_poll_seconds_count" in body
