"""The benchmark's arithmetic, without a broker."""

from __future__ import annotations

import numpy as np

from infra.bench.run import latency_split


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
    from infra.bench.run import wait_settled

    seq = iter([1, 2, 2, 2, 5, 5, 5, 5, 5])
    assert wait_settled(lambda: next(seq), at_least=5, polls=2, every_s=0, timeout_s=10) == 5
    assert wait_settled(lambda: 1, at_least=5, polls=2, every_s=0.01, timeout_s=0.05) == 1  # gives up in time


def test_drain_rate_is_measured_after_the_warmup_and_cold_over_the_whole_drain():
    from infra.bench.run import drain_rate, drain_spans

    spans = drain_spans(600, 200)
    assert spans == {"warm": (240, 560), "cold": (60, 540)}
    assert drain_spans(400, 0)["warm"] == drain_spans(400, 0)["cold"] == (40, 360)
    # 200 slow events (100/s), then 400 fast ones (1,000/s)
    arrivals = [i / 100 for i in range(200)] + [2.0 + i / 1000 for i in range(400)]
    assert abs(drain_rate(arrivals, spans["warm"]) - 1000) < 5
    assert drain_rate(arrivals, spans["cold"]) < 400  # the slow start dominates the wall time


def test_a_transaction_that_never_arrived_is_infinitely_late():
    from infra.bench.run import INF, json_safe, latencies, percentiles

    first = {i: (1000 + i, 1000, 0, 0) for i in range(98)}  # ids 98 and 99 never arrived
    lat = latencies(list(range(100)), first)
    assert np.isinf(lat).sum() == 2
    p = percentiles(lat)
    assert p["p50"] == 50 and p["p90"] == 90 and p["p99"] == INF and p["max"] == INF
    assert json_safe(p)["p99"] == "inf"
    # With 1 in 200 missing, p99 is still a real sample (never an interpolation towards inf, or nan).
    first = {i: (i, 0, 0, 0) for i in range(199)}
    p = percentiles(latencies(list(range(200)), first))
    assert p["p99"] == 198 and p["max"] == INF


def test_runs_are_summarised_by_median_min_and_max():
    from infra.bench.run import INF, spread

    assert spread([30.0, 10.0, 20.0]) == {"median": 20.0, "min": 10.0, "max": 30.0, "runs": [30.0, 10.0, 20.0]}
    assert spread([10.0, INF, 20.0])["max"] == INF and spread([10.0, INF, 20.0])["median"] == 20.0
    assert spread([None, None])["median"] is None



def test_a_window_is_flagged_when_its_load_was_above_the_core_count():
    from infra.bench.run import load_window

    samples = [(0.0, 0.5), (10.0, 2.5), (20.0, 1.0), (30.0, 3.0)]
    assert load_window(samples, 5, 25, cores=2) == {"load_avg_max": 2.5, "cores": 2, "overloaded": True}
    assert load_window(samples, 15, 25, cores=2)["overloaded"] is False
    assert load_window(samples, 21, 22, cores=2)["load_avg_max"] == 3.0  # none inside: the next sample


def test_throughput_timeline_counts_arrivals_per_second_from_the_job_start():
    from infra.bench.run import throughput_timeline

    tl = throughput_timeline([100.2, 100.5, 102.1, 102.2, 102.9], t0=100.0)
    assert tl["t_s"] == [0.0, 1.0, 2.0] and tl["events_per_s"] == [2.0, 0.0, 3.0]
    assert throughput_timeline([], 0)["t_s"] == []


def test_plots_are_written_from_a_result(tmp_path):
    from infra.bench.plots import write_plots
    from infra.bench.run import cdf_points, throughput_timeline

    lat = np.array([10.0, 20.0, 30.0, float("inf")])
    result = {"settings": {"backlog": 10}, "machine": {"cpu": "x", "cores": 2},
              "fraud_drain": [{"variant": "native scorer", "throughput_timeline": throughput_timeline([1.0, 2.5], 0)}],
              "fraud_live": {"arrival": {"runs": [{"run": 0, "phases": [
                  {"rate": 2000, "decision": {"cdf_ms": cdf_points(lat)}}]}]}}}
    assert cdf_points(lat)["ms"][-1] == float("inf")
    made = write_plots(result, tmp_path, "t")
    assert [p.name for p in made] == ["t-throughput.png", "t-latency-cdf.png"]
    assert all(p.stat().st_size > 1000 for p in made)


def test_the_shadow_drain_scores_a_copy_of_production_as_the_shadow(tmp_path):
    from infra.bench.run import shadow_model_dir
    from pipelines.config import load_config
    from pipelines.models import read_state
    from tests.pipeline_util import TEST_MODEL, write_test_model
    from udfs.scoring import ProductionScorer

    src = write_test_model(tmp_path / "src")
    cfg = load_config(environ={}).with_overrides({"fraud": {"model_dir": str(src)}})
    out = shadow_model_dir(cfg, tmp_path / "shadow")
    state = read_state(out)
    assert (state.production, state.shadow) == (TEST_MODEL, f"{TEST_MODEL}-shadow")
    ps = ProductionScorer(cfg.with_overrides({"fraud": {"model_dir": str(out)}}), kind="reference", background=False)
    assert ps.current().version == TEST_MODEL and ps.shadow_scorer.version == f"{TEST_MODEL}-shadow"
