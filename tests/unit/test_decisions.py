"""The decision path's de-duplication (pipelines/decisions.py), without a broker."""

from pipelines.decisions import DecisionReader


def reader(remember: int) -> DecisionReader:
    r = DecisionReader.__new__(DecisionReader)  # no consumer: only the bookkeeping is under test
    from collections import OrderedDict

    r.remember, r.seen, r.duplicates = remember, OrderedDict(), 0
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
