"""The lag exporter against the real broker: committed offsets, log-end offsets, lag, event-time lag, /metrics; and
the lag of the real fraud job's consumer group while the job is stopped and after it resumes from its checkpoint."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import TopicPartition

from infra import services
from pipelines import kafka_util, metrics
from pipelines.config import load_config
from infra.lag_exporter import LagExporter
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.pipeline_util import write_test_model

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


def test_clients_are_replaced_after_failing_for_a_while() -> None:
    """librdkafka#5301 can leave a client without any broker for good: after only failed Kafka requests for the
    watch's time, the exporter starts again with new clients (and counts it)."""
    resets = metrics.KAFKA_CLIENT_RESETS.labels("lag-exporter", "all")
    before = resets._value.get()
    exporter = LagExporter(f"127.0.0.1:{services.free_port()}", ["g"], {"fraud-scores": "fraud_score"}, timeout=1)
    exporter.watch = kafka_util.BrokerWatch(after_s=0.0)
    try:
        exporter.poll()
        first = exporter.admin
        assert resets._value.get() == before  # nothing to replace before the first failure
        exporter.poll()
        assert resets._value.get() == before + 1 and exporter.admin is not first
    finally:
        exporter.close()


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


# ---------------------------------------------------------------------------------------------------------------
# The lag of the real fraud job's consumer group while the job is stopped and after it resumes.

JOB_FIRST = 2_000        # transactions replayed at once before the job's first checkpoint
JOB_RATE = 200.0         # messages/s (transactions + labels) the background producer keeps sending throughout
JOB_STOPPED_S = 12       # how long the job stays down while production goes on
JOB_BUDGET_S = 420


class _PacedReplay(threading.Thread):
    """The replay after the first JOB_FIRST rows, paced, until told to stop."""

    def __init__(self, bootstrap: str, tx_t: str, lb_t: str):
        super().__init__(daemon=True, name="paced-replay")
        opts = ReplayOptions(rate=JOB_RATE, skip=JOB_FIRST, limit=200_000, label_delay_days=0.05)
        self.replay = FraudReplay(load_config(), opts, bootstrap=bootstrap, tx_topic=tx_t, label_topic=lb_t)
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.replay.run(stop=self.halt.is_set)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc


@pytest.mark.slow
@pytest.mark.timeout(JOB_BUDGET_S + 60)
def test_fraud_job_group_lag_rises_while_stopped_and_drains_after_restore(kafka_bootstrap, redis_url,
                                                                           topic_factory, tmp_path):
    """The exporter watches the fraud job's own consumer group. Its Kafka source commits offsets to the group when a
    checkpoint completes (`properties.commit.offsets.on.checkpoint`), so: while the job runs the lag stays small;
    killed while the producer goes on, the committed offsets freeze and the lag grows with every record produced;
    restarted with `--restore latest`, it reads the backlog, commits on its checkpoints, and the lag falls back to
    near zero while the producer still runs, and to exactly zero once the producer stops."""
    t0 = time.time()
    tx_t, lb_t, out_t = topic_factory("jl-tx"), topic_factory("jl-labels"), topic_factory("jl-scores")
    late_t, dead_t = topic_factory("jl-late"), topic_factory("jl-dead")
    group = f"g-{tx_t}"
    env = {"STREAMSCORE_REDIS__URL": redis_url,
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    args = ["--bootstrap", kafka_bootstrap, "--source-topic", tx_t, "--labels-topic", lb_t, "--out-topic", out_t,
            "--decisions-topic", topic_factory("jl-decisions"), "--late-topic", late_t, "--dead-topic", dead_t, "--group-id", group]
    exporter = LagExporter(kafka_bootstrap, [group], topics=[tx_t, lb_t], timeout=10)
    producer = _PacedReplay(kafka_bootstrap, tx_t, lb_t)
    jobs: list = []

    def left() -> float:
        return JOB_BUDGET_S - (time.time() - t0)

    def lag() -> tuple[int, dict[int, int]]:
        snap = exporter.poll()
        assert snap.errors == [], snap.errors
        committed = {p.partition: p.committed for p in snap.lags if p.group == group and p.topic == tx_t}
        return snap.lag(group, tx_t), committed

    def wait_lag(pred, what: str, job) -> int:
        while True:
            assert job.alive(), job.output()
            assert producer.error is None, producer.error
            n, committed = lag()
            if pred(n, committed):
                return n
            assert left() > 0, f"{what}: lag {n} (committed {committed}) after {time.time() - t0:.0f}s\n{job.output()}"
            time.sleep(1)

    try:
        rep = FraudReplay(load_config(), ReplayOptions(rate=0, limit=JOB_FIRST, label_delay_days=0.05),
                          bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t).run()
        assert rep.sent == JOB_FIRST and rep.errors == 0
        jobs.append(RunningJob("jobs/fraud_job.py", tmp_path, *args, env=env))
        # Running: the group commits on checkpoints and catches up with the first part.
        wait_lag(lambda n, c: n == 0 and len(c) == 4, "the job's first commits to cover the backlog", jobs[0])
        producer.start()
        time.sleep(5)
        running_lag = wait_lag(lambda n, c: True, "", jobs[0])

        # Stopped: the committed offsets freeze and the lag rises with what the producer keeps writing.
        jobs[0].kill()
        _, frozen = lag()
        stopped = []
        for _ in range(JOB_STOPPED_S // 2):
            time.sleep(2)
            n, committed = lag()
            assert committed == frozen, "a stopped job committed offsets"
            stopped.append(n)
        assert producer.is_alive() and producer.error is None, producer.error
        assert all(b >= a for a, b in zip(stopped, stopped[1:])) and stopped[-1] > stopped[0], \
            f"lag while stopped: {stopped}"
        assert stopped[-1] >= 0.3 * JOB_RATE / 2 * JOB_STOPPED_S, f"lag while stopped: {stopped}"
        assert metrics.CONSUMER_LAG.labels(group, tx_t, "0")._value.get() > 0

        # Resumed from the newest checkpoint, with the producer still going: the backlog is read and committed.
        jobs.append(RunningJob("jobs/fraud_job.py", tmp_path, *args, "--restore", "latest", env=env))
        peak = wait_lag(lambda n, c: c != frozen, "the restored job's first commit", jobs[1])
        near_zero = max(50, int(0.05 * max(peak, stopped[-1])))
        resumed = wait_lag(lambda n, c: n <= near_zero, f"the lag to fall to <= {near_zero} while producing", jobs[1])
        assert producer.is_alive(), "the producer ran out before the job caught up"

        # The producer stops: everything is read and committed, the lag is exactly zero on every partition.
        producer.halt.set()
        producer.join(60)
        assert producer.error is None, producer.error
        wait_lag(lambda n, c: n == 0, "the lag to reach 0 after the producer stopped", jobs[1])
        snap = exporter.poll()
        assert snap.partition_lag(group, tx_t) == {0: 0, 1: 0, 2: 0, 3: 0}
        assert snap.lag(group, lb_t) == 0
        assert metrics.CONSUMER_LAG.labels(group, tx_t, "0")._value.get() == 0
        out = (tmp_path / "fraud_job.out").read_text(errors="replace")
        assert "restoring from" in out and "chk-" in out, out[-3000:]
        print(f"lag running {running_lag}, while stopped {stopped}, after the restore's first commit {peak}, "
              f"then {resumed} (<= {near_zero}) with the producer on, 0 after it stopped; {time.time() - t0:.0f}s")
    finally:
        producer.halt.set()
        for job in jobs:
            job.kill()
        if producer.is_alive():
            producer.join(60)
        exporter.close()
