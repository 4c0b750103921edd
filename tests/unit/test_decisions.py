"""The decision path's de-duplication (pipelines/decisions.py), without a broker."""

from pipelines.decisions import DecisionReader


def reader(remember: int) -> DecisionReader:
    r = DecisionReader.__new__(DecisionReader)  # no consumer: only the bookkeeping is under test
    from collections import OrderedDict

    r.remember, r.seen, r.duplicates, r.undecodable = remember, OrderedDict(), 0, []
    return r


def test_first_record_per_transaction_wins():
    r = reader(10)
    assert [r.first_time(i) for i in (1, 2, 1, 3, 2, 1)] == [True, True, False, True, False, False]
    assert r.duplicates == 3


def test_memory_is_bounded_to_the_most_recent_ids():
    r = reader(3)
    for i in range(100):
        assert r.first_time(i)
    assert len(r.seen) == 3 and r.first_time(99) is False and r.first_time(0) is True


def test_a_record_that_is_no_score_is_skipped_and_kept(monkeypatch):
    """Anyone who may write the topic can put bytes there: the reader skips them and keeps where they came from."""
    import pipelines.decisions as d
    from pipelines.serde import serde

    class Msg:
        def error(self):
            return None

        def value(self):
            return b"\xc3\x01garbage"

        def topic(self):
            return "fraud-decisions"

        def partition(self):
            return 0

        def offset(self):
            return 5

    monkeypatch.setattr(d.kafka_util, "consume_ready", lambda c, n, t: [Msg()])
    r = reader(10)
    r.serde, r.consumer = serde("fraud_score"), None
    assert r.poll(0) == []
    assert [(e.reason, e.topic, e.offset, e.raw) for e in r.undecodable] == [
        ("not-avro", "fraud-decisions", 5, b"\xc3\x01garbage")]
