import gzip
import json
import random

import pytest

from pipelines.replay.fraud import CSV_COLUMNS, CsvRowError, iter_csv, malformed_value, MALFORMED_KINDS, CsvTransaction
from pipelines.serde import DecodeError, check_transaction, serde
from tests.replay_util import RecordingProducer

HEADER = ",".join(CSV_COLUMNS)


def write(tmp_path, lines):
    p = tmp_path / "tx.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join([HEADER, *lines]) + "\n")
    return p


def test_malformed_rows_reported_with_line_numbers(tmp_path):
    p = write(tmp_path, [
        "0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0",
        "1,2018-04-01 00:02:10,4961,3412,not-a-number,130,0,0,0",
        "2,2018-04-01 00:07:56,2,1365,146.00,476,0,0",
        "3,2018-04-01 00:09:29,4128,8737,-5,569,0,0,0",
        "4,2018-04-01 00:10:34,927,9906,50.99,634,0,1,2",
    ])
    errors: list[CsvRowError] = []
    rows = list(iter_csv(p, errors.append))
    assert [r.transaction_id for r in rows] == [0, 4]
    assert [(e.line, e.reason) for e in errors] == [(3, "bad-value"), (4, "column-count"), (5, "bad-amount")]
    assert rows[1].fraud == 1 and rows[1].scenario == 2
    assert rows[0].event_time == 1522540831000


def test_bad_header(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(CsvRowError, match="header"):
        list(iter_csv(p))


def test_every_injected_malformed_kind_is_rejected_by_decode_or_rules():
    tx = CsvTransaction(2, 5, 6, 7, 10.0, 1522540831000, 0, 0)
    rng = random.Random(1)
    now = 1_700_000_000_000
    for kind in MALFORMED_KINDS:
        raw = malformed_value(kind, tx, rng, now)
        try:
            rec = serde("transaction").decode(raw)
        except DecodeError:
            continue
        assert check_transaction(rec, now, 86_400_000) is not None, kind


def test_resumed_replays_send_the_labels_of_one_replay(tmp_path, monkeypatch):
    """A replay that skips the rows an earlier one sent (resume_labels) sends the labels the earlier one left
    unsent: the two together send exactly what one replay of both ranges does (the benchmark's phases rely on it)."""
    from pipelines.replay import fraud as replay_fraud
    from pipelines.config import load_config
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    lines = [f"{i},2018-04-01 {i // 60:02d}:{i % 60:02d}:00,{i % 7},{i % 5},{10 + i}.00,{i * 60},{i % 2},{i % 2},0"
             for i in range(600)]
    csv = write(tmp_path, lines)

    def run(**opts):
        prod = RecordingProducer()
        monkeypatch.setattr(replay_fraud.kafka_util, "producer", lambda *a, **k: prod)
        FraudReplay(load_config(), ReplayOptions(rate=0, label_delay_days=0.05, **opts), bootstrap="unused:1",
                    tx_topic="tx", label_topic="lb", csv_path=str(csv)).run()
        label = serde("transaction_label")
        return ([label.decode(v)["transaction_id"] for t, v, _ in prod.sent if t == "lb"],
                [serde("transaction").decode(v)["transaction_id"] for t, v, _ in prod.sent if t == "tx"])

    whole_labels, whole_tx = run(limit=500)
    first_labels, first_tx = run(limit=250)
    rest_labels, rest_tx = run(limit=250, skip=250, resume_labels=True)
    assert first_tx + rest_tx == whole_tx == list(range(500))
    assert first_labels + rest_labels == whole_labels
    assert len(whole_labels) == 500 - 72  # labels come 72 minutes (72 rows here) after their transaction
    # Without resume_labels the second replay's label stream starts over, label_delay_days later.
    assert run(limit=250, skip=250)[0][0] == 250


def test_paced_replay_keeps_its_rate_with_fewer_sleeps(tmp_path, monkeypatch):
    """A paced replay sleeps only once it is pace_slack_ms ahead: the rate over the run is still the target, with a
    sleep per few messages instead of one per message; the producer batches for replay.linger_ms."""
    from pipelines.replay import fraud as replay_fraud
    from pipelines.config import load_config
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    csv = write(tmp_path, [f"{i},2018-04-01 00:{i // 60:02d}:{i % 60:02d},{i % 7},{i % 5},10.00,{i},0,0,0"
                           for i in range(400)])
    prod = RecordingProducer()
    confs = []
    monkeypatch.setattr(replay_fraud.kafka_util, "producer", lambda *a, **k: confs.append(k) or prod)
    sleeps = []
    real_sleep = replay_fraud.time.sleep
    monkeypatch.setattr(replay_fraud.time, "sleep", lambda s: sleeps.append(s) or real_sleep(s))
    cfg = load_config(environ={"STREAMSCORE_REPLAY__PACE_SLACK_MS": "4"})
    rep = FraudReplay(cfg, ReplayOptions(rate=1000, labels=False), bootstrap="unused:1", tx_topic="tx",
                      csv_path=str(csv)).run()
    assert rep.sent == 400 and len(prod.sent) == 400
    assert 0.39 <= rep.seconds < 0.6  # 400 messages at 1,000/s
    assert len(sleeps) <= 400 / 4  # a message is due every 1 ms: at most one sleep per 4 ms of schedule
    assert confs[0]["linger.ms"] == cfg.replay.linger_ms


def test_paced_replay_schedule_starts_after_the_skipped_rows(tmp_path, monkeypatch):
    """Skipping rows takes time (two seconds for the 120k a benchmark phase skips); a schedule timed from before
    them would send that long's worth of messages at once when the first row is due."""
    import time

    from pipelines.replay import fraud as replay_fraud
    from pipelines.config import load_config
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    csv = write(tmp_path, [f"{i},2018-04-01 00:{i // 60:02d}:{i % 60:02d},{i % 7},{i % 5},10.00,{i},0,0,0"
                           for i in range(300)])
    stamps = []

    class Stamping(RecordingProducer):
        def produce(self, *a, **k):
            stamps.append(time.perf_counter())

    monkeypatch.setattr(replay_fraud.kafka_util, "producer", lambda *a, **k: Stamping())
    real_iter = replay_fraud.iter_csv

    def slow_skip(*a, **k):
        for i, row in enumerate(real_iter(*a, **k)):
            if i == 200:
                time.sleep(0.3)  # the skipped rows took a while
            yield row

    monkeypatch.setattr(replay_fraud, "iter_csv", slow_skip)
    FraudReplay(load_config(), ReplayOptions(rate=500, skip=200, labels=False), bootstrap="unused:1", tx_topic="tx",
                csv_path=str(csv)).run()
    assert len(stamps) == 100
    assert stamps[50] - stamps[0] >= 0.09  # 50 messages at 500/s: 0.1 s, not a burst


def test_consume_ready_returns_what_is_fetched_without_waiting_out_the_timeout():
    from pipelines.kafka_util import consume_ready

    class Stub:
        def __init__(self, queued):
            self.queued = list(queued)
            self.calls = []

        def poll(self, timeout):
            self.calls.append(("poll", timeout))
            return self.queued.pop(0) if self.queued else None

        def consume(self, n, timeout):
            self.calls.append(("consume", n, timeout))
            out, self.queued = self.queued[:n], self.queued[n:]
            return out

    c = Stub(["a", "b", "c"])
    assert consume_ready(c, 2, 0.05) == ["a", "b"]
    assert c.calls == [("poll", 0.05), ("consume", 1, 0)]  # only the first message may be waited for
    assert consume_ready(c, 10, 0.05) == ["c"]
    assert consume_ready(c, 10, 0.05) == []
    assert consume_ready(Stub(["x", "y"]), 1, 0.05) == ["x"]


def test_tracked_producer_reports_what_it_could_not_deliver():
    """No broker answers: drain waits for librdkafka's message timeout, then names the failures and what the
    client saw, instead of a bare flush count."""
    from pipelines import kafka_util
    from pipelines.metrics import PRODUCE_ERRORS

    before = PRODUCE_ERRORS.labels("unit-test", "nowhere")._value.get()
    out = kafka_util.TrackedProducer("127.0.0.1:1", "unit-test", **{"message.timeout.ms": 1500,
                                                                    "statistics.interval.ms": 200})
    for i in range(3):
        out.produce("nowhere", b"k", b"v%d" % i, 0)
    with pytest.raises(kafka_util.ProduceError, match=r"3 delivery errors .*timed out.*0 undelivered.*brokers"):
        out.drain(progress_every_s=0.5)
    assert out.errors == 3
    assert PRODUCE_ERRORS.labels("unit-test", "nowhere")._value.get() - before == 3


def test_tracked_producer_reset_moves_queued_messages_to_a_new_producer():
    """The librdkafka#5301 workaround's mechanics: queued (never sent) messages leave the wedged producer through
    purge and are produced again, in order, by a new one; none is counted as an error."""
    from pipelines import kafka_util
    from pipelines.metrics import KAFKA_CLIENT_RESETS

    before = KAFKA_CLIENT_RESETS.labels("unit-test", "producer")._value.get()
    out = kafka_util.TrackedProducer("127.0.0.1:1", "unit-test", **{"message.timeout.ms": 1500})
    first = out.producer
    for i in range(5):
        out.produce("nowhere", b"k", b"v%d" % i, 1000 + i)
    assert out.reset() == 5
    assert out.producer is not first  # len() would count its pending error events too
    assert out.errors == 0 and out.resets == 1
    assert KAFKA_CLIENT_RESETS.labels("unit-test", "producer")._value.get() - before == 1
    with pytest.raises(kafka_util.ProduceError, match=r"^5 delivery errors"):  # the five, once each
        out.drain(progress_every_s=0.5)


def _stats(*sources: str) -> str:
    return json.dumps({"brokers": {f"b{i}": {"source": s, "state": "DOWN"} for i, s in enumerate(sources)}})


def test_broker_watch_wedged_only_after_a_while_without_a_broker():
    """librdkafka#5301 leaves a client with no configured or learned broker (a plain outage keeps the bootstrap
    broker listed, DOWN); the internal and logical entries do not count as brokers."""
    from pipelines.kafka_util import BrokerWatch

    now = [100.0]
    w = BrokerWatch(after_s=15, clock=lambda: now[0])
    w.on_stats(_stats("configured", "internal"))
    now[0] += 60
    assert not w.wedged()  # an outage: the bootstrap broker is still listed
    w.on_stats(_stats("internal", "logical"))
    now[0] += 14
    assert not w.wedged()
    now[0] += 1
    assert w.wedged()
    w.on_stats(_stats("learned"))
    assert not w.wedged()


def test_broker_watch_counts_only_failures_in_a_row():
    from pipelines.kafka_util import BrokerWatch

    now = [0.0]
    w = BrokerWatch(after_s=15, clock=lambda: now[0])
    w.note(ok=False)
    now[0] += 10
    w.note(ok=True)
    w.note(ok=False)
    now[0] += 10
    assert not w.wedged()
    now[0] += 5
    assert w.wedged()


def test_live_replay_stamps_every_event_with_the_wall_clock(tmp_path, monkeypatch):
    """On the live clock a transaction's event time, produced_at and Kafka timestamp are the wall clock when it is
    sent (not the data's 2018 time); its label comes due in data order and is stamped when sent, with tx_time the
    live time its transaction went out with; and the ids sent are recorded in order."""
    import time

    from pipelines.replay import fraud as replay_fraud
    from pipelines.config import load_config
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    lines = [f"{i},2018-04-01 {i // 60:02d}:{i % 60:02d}:00,{i % 7},{i % 5},{10 + i}.00,{i * 60},{i % 2},{i % 2},0"
             for i in range(300)]
    csv = write(tmp_path, lines)
    prod = RecordingProducer()
    monkeypatch.setattr(replay_fraud.kafka_util, "producer", lambda *a, **k: prod)
    before = int(time.time() * 1000)
    rep = FraudReplay(load_config(), ReplayOptions(rate=0, limit=200, label_delay_days=0.05, live=True,
                                                   record_ids=True),
                      bootstrap="unused:1", tx_topic="tx", label_topic="lb", csv_path=str(csv)).run()
    after = int(time.time() * 1000)
    tx = [(serde("transaction").decode(v), ts) for t, v, ts in prod.sent if t == "tx"]
    labels = [(serde("transaction_label").decode(v), ts) for t, v, ts in prod.sent if t == "lb"]
    assert rep.sent_ids == [r["transaction_id"] for r, _ in tx] == list(range(200))
    sent_at = {}
    for r, ts in tx:
        assert before <= r["event_time"] == r["produced_at"] == ts <= after
        sent_at[r["transaction_id"]] = r["event_time"]
    assert len(labels) == 200 - 72
    for r, ts in labels:
        assert r["label_time"] == r["produced_at"] == ts and r["tx_time"] == sent_at[r["transaction_id"]]
        assert r["tx_time"] <= r["label_time"]


def test_live_replay_refuses_injected_disorder():
    import pytest

    from pipelines.config import load_config
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    with pytest.raises(ValueError):
        FraudReplay(load_config(), ReplayOptions(live=True, out_of_order_frac=0.1))
