"""The benchmark's arithmetic, without a broker."""

from __future__ import annotations

from pipelines.bench import latency_split


def test_latency_split_legs_add_up_to_end_to_end():
    # (arrival, produced_at, scored_at, kafka timestamp) per score
    got = [(1000 + i, 100 + i, 700 + i, 760 + i) for i in range(100)]
    legs = latency_split(got)
    assert legs["producer_to_scorer"]["p50"] == 600
    assert legs["scorer_to_kafka"]["p50"] == 60
    assert legs["kafka_to_consumer"]["p50"] == 240
    assert sum(v["p50"] for v in legs.values()) == 900  # arrival - produced_at
    assert latency_split([]) == {"producer_to_scorer": None, "scorer_to_kafka": None, "kafka_to_consumer": None}


def test_wait_settled_needs_the_minimum_and_a_stable_count():
    from pipelines.bench import wait_settled

    seq = iter([1, 2, 2, 2, 5, 5, 5, 5, 5])
    assert wait_settled(lambda: next(seq), at_least=5, polls=2, every_s=0, timeout_s=10) == 5
    assert wait_settled(lambda: 1, at_least=5, polls=2, every_s=0.01, timeout_s=0.05) == 1  # gives up in time


def test_drain_rate_is_measured_after_the_warmup_and_cold_over_the_whole_drain():
    from pipelines.bench import drain_rate, drain_spans

    spans = drain_spans(600, 200)
    assert spans == {"warm": (240, 560), "cold": (60, 540)}
    assert drain_spans(400, 0)["warm"] == drain_spans(400, 0)["cold"] == (40, 360)
    # 200 slow events (100/s), then 400 fast ones (1,000/s)
    arrivals = [i / 100 for i in range(200)] + [2.0 + i / 1000 for i in range(400)]
    assert abs(drain_rate(arrivals, spans["warm"]) - 1000) < 5
    assert drain_rate(arrivals, spans["cold"]) < 400  # the slow start dominates the wall time
