"""The dashboard's aggregation (dashboard/state.py) and message handling, without a broker or a socket."""

from __future__ import annotations

import json
import random
import time

import pytest

from tests import dashboard_util as testkit
from dashboard.state import PANELS, DashboardState, percentile

T0 = 1_700_000_000.0


def score(score: float, decision: str, features: dict | None = None, produced: int = 0, scored: int = 100,
          tx: int = 1) -> dict:
    return {"transaction_id": tx, "customer_id": 1, "terminal_id": 2, "amount": 10.0, "event_time": 1,
            "features": features or {"amount": 10.0}, "profile_flags": 0, "score": score, "decision": decision,
            "model_version": "m", "produced_at": produced, "scored_at": scored}


def test_histogram_bins_and_decision_counts():
    st = DashboardState(bins=10, start=T0)
    for s, d in [(0.0, "APPROVE"), (0.05, "APPROVE"), (0.55, "REVIEW"), (0.95, "DECLINE"), (1.0, "DECLINE")]:
        st.add_fraud_score(score(s, d), now=T0)
    h = st.snapshot(T0)["histogram"]
    assert h["bins"] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]  # 1.0 falls in the last bin, not past it
    assert h["total"] == 5 and h["edges"][0] == 0.0 and h["edges"][-1] == 1.0
    assert h["decisions"] == {"APPROVE": 2, "REVIEW": 1, "DECLINE": 2}


def test_nan_score_is_counted_but_not_binned():
    st = DashboardState(start=T0)
    st.add_fraud_score(score(float("nan"), "APPROVE"), now=T0)
    snap = st.snapshot(T0)
    assert snap["histogram"]["total"] == 0 and snap["counts"]["fraud_scores"] == 1
    json.dumps(snap, allow_nan=False)  # the message must stay valid JSON


def test_latest_decisions_newest_first_bounded_and_only_review_decline():
    st = DashboardState(decisions=5, start=T0)
    for i in range(12):
        st.add_fraud_score(score(0.95 if i % 2 else 0.1, "DECLINE" if i % 2 else "APPROVE", tx=i), now=T0)
    latest = st.snapshot(T0)["decisions"]["latest"]
    assert [d["transaction_id"] for d in latest] == [11, 9, 7, 5, 3]
    assert all(d["decision"] == "DECLINE" for d in latest)
    assert st.snapshot(T0)["decisions"]["decline"] == 6


def test_top_features_use_z_scores_once_statistics_exist():
    st = DashboardState(min_stats=30, top_features=2, start=T0)
    rng = random.Random(1)
    for i in range(200):
        st.add_fraud_score(score(0.1, "APPROVE", {"amount": rng.gauss(50, 10), "count": rng.gauss(5, 1),
                                                   "risk": rng.gauss(0.1, 0.01)}), now=T0)
    # amount is large in absolute terms but ordinary; risk is tiny in absolute terms but 8 sigma away.
    st.add_fraud_score(score(0.97, "DECLINE", {"amount": 55.0, "count": 5.0, "risk": 0.18}), now=T0)
    top = st.snapshot(T0)["decisions"]["latest"][0]["top_features"]
    assert top[0]["name"] == "risk" and top[0]["z"] > 5
    assert len(top) == 2


def test_top_features_fall_back_to_absolute_value_while_statistics_are_young():
    st = DashboardState(min_stats=30, start=T0)
    st.add_fraud_score(score(0.6, "REVIEW", {"a": 0.5, "b": -300.0, "c": 20.0, "d": 1.0}), now=T0)
    top = st.snapshot(T0)["decisions"]["latest"][0]["top_features"]
    assert [f["name"] for f in top] == ["b", "c", "d"] and all(f["z"] is None for f in top)


def test_feature_statistics_are_bounded():
    st = DashboardState(max_features=4, start=T0)
    st.add_fraud_score(score(0.1, "APPROVE", {f"f{i}": float(i) for i in range(50)}), now=T0)
    assert len(st.feature_stats) == 4


def test_throughput_out_counts_per_second_and_in_from_offsets():
    st = DashboardState(series_seconds=10, start=T0)
    for k in range(30):  # 10/s over three seconds
        st.add_fraud_score(score(0.1, "APPROVE"), now=T0 + k / 10)
    st.add_sentiment_score({"label": "positive", "produced_at": 0, "scored_at": 5}, now=T0 + 2.5)
    st.observe_input_offsets("transactions", 1000, now=T0)
    st.observe_input_offsets("transactions", 1400, now=T0 + 2)  # 200/s
    st.observe_input_offsets("posts", 10, now=T0)
    st.observe_input_offsets("posts", 30, now=T0 + 2)           # 10/s
    tp = st.snapshot(T0 + 3.2)["throughput"]
    assert tp["in_rate"] == 210.0
    assert tp["out_rate"] == pytest.approx(31 / 3, abs=0.05)
    assert tp["t"][-3:] == [int(T0), int(T0) + 1, int(T0) + 2]
    assert tp["out"][-3:] == [10, 10, 11]
    assert len(tp["t"]) == len(tp["in"]) == len(tp["out"]) == 9


def test_throughput_series_is_bounded():
    st = DashboardState(series_seconds=5, start=T0)
    for k in range(100):
        st.add_fraud_score(score(0.1, "APPROVE"), now=T0 + k)
    assert len(st._out) <= 5


def test_latency_percentiles_per_pipeline_recent_window():
    st = DashboardState(latency_samples=100, start=T0)
    for ms in range(1, 1001):  # only the last 100 (901..1000 ms) are kept
        st.add_fraud_score(score(0.1, "APPROVE", produced=0, scored=ms), now=T0)
    st.add_sentiment_score({"label": "neutral", "produced_at": 100, "scored_at": 50}, now=T0)  # clock skew
    lat = st.snapshot(T0)["latency"]
    assert lat["fraud"]["samples"] == 100
    assert lat["fraud"]["p50"] == 0.95 and lat["fraud"]["p99"] == 0.999
    assert lat["sentiment"] == {"p50": 0.0, "p99": 0.0, "samples": 1}


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 100) == 4


def test_sentiment_trends_upsert_order_and_bounds():
    st = DashboardState(sentiment_windows=3, max_topics=2, start=T0)
    trend = lambda topic, start, mean: {"topic": topic, "window_start": start, "window_end": start + 60,  # noqa
                                        "count_negative": 1, "count_neutral": 2, "count_positive": 3,
                                        "mean_positivity": mean}
    for w, mean in [(0, 0.1), (60, 0.2), (120, 0.3), (180, 0.4)]:
        st.add_trend(trend("a", w, mean), now=T0)
    st.add_trend(trend("a", 120, 0.9), now=T0)   # a re-fired window replaces the earlier value
    st.add_trend(trend("a", 30, 0.5), now=T0)    # late and older than the rest: kept in order, oldest evicted
    s = st.snapshot(T0)["sentiment"]["topics"]["a"]
    assert s["t"] == [60, 120, 180]  # sorted, bounded; the late window 30 is the oldest and falls out
    assert s["mean"][s["t"].index(120)] == 0.9 and s["count"][0] == 6
    st.add_trend(trend("b", 0, 0.5), now=T0)
    st.add_trend(trend("c", 0, 0.5), now=T0)     # a third topic evicts the least recently updated ("a")
    assert set(st.snapshot(T0)["sentiment"]["topics"]) == {"b", "c"}


def test_counts_late_dead_letters_and_reason_cap():
    st = DashboardState(max_reasons=2, start=T0)
    st.add_late("transactions", now=T0)
    st.add_late("transactions", now=T0)
    st.add_late("posts", now=T0)
    for reason in ["not-avro", "not-avro", "negative-amount", "bad-id", "corrupt-avro"]:
        st.add_dead_letter({"reason": reason}, now=T0)
    st.add_dead_letter(None, now=T0)
    st.add_decode_error()
    c = st.snapshot(T0)["counts"]
    assert c["late_transactions"] == 2 and c["late_posts"] == 1 and c["dead_letters"] == 6
    assert c["dead_letter_reasons"] == {"not-avro": 2, "negative-amount": 1, "other": 3}
    assert c["decode_errors"] == 1


def test_lag_rows_and_total():
    st = DashboardState(start=T0)
    st.set_lag([{"topic": "t", "partition": 0, "high": 10, "committed": 4, "lag": 6},
                {"topic": "t", "partition": 1, "high": 3, "committed": None, "lag": 3}], now=T0)
    lag = st.snapshot(T0)["lag"]
    assert lag["total"] == 9 and len(lag["partitions"]) == 2 and lag["updated"] == T0


def test_snapshot_has_every_panel_and_is_json_with_realistic_records():
    st = DashboardState(start=T0)
    rng = random.Random(3)
    for i in range(500):
        st.add_fraud_score(testkit.fraud_score(rng, i), now=T0 + i / 100)
        st.add_sentiment_score(testkit.sentiment_score(rng, i), now=T0 + i / 100)
    for w in range(100):
        for topic in testkit.POST_TOPICS:
            st.add_trend(testkit.sentiment_trend(rng, topic, w * 60_000), now=T0)
    snap = st.snapshot(T0 + 6)
    assert set(snap) == set(PANELS)
    assert set(st.snapshot(T0 + 6, ["lag", "counts"])) == {"lag", "counts"}
    size = len(json.dumps(snap, separators=(",", ":"), allow_nan=False))
    assert size < 40_000, size  # what every client receives twice a second stays small


# ------------------------------------------------------------------------------------ client message handling

class _FakeWS:
    remote_address = ("127.0.0.1", 1)


def _dashboard():
    from dashboard.server import Dashboard, Settings
    from dashboard.source import SourceTopics
    from pipelines.config import TopicsConfig

    return Dashboard(Settings(host="127.0.0.1", port=1, token="t", allowed_origins=(), send_queue=3,
                              bootstrap="127.0.0.1:1", topics=SourceTopics.from_config(TopicsConfig())))


@pytest.mark.parametrize("raw, reason", [
    ("not json", "not-json"), ("[1, 2]", "no-type"), ('{"type": 3}', "no-type"), (b"\x00", "binary"),
    ('{"type": "launch"}', "unknown-type"), ('{"type": "subscribe"}', "bad-field"),
    ('{"type": "subscribe", "panels": ["nope"]}', "bad-field"), ('{"type": "ping", "id": {"a": 1}}', "bad-field"),
])
def test_bad_client_messages_get_error_frames(raw, reason):
    import asyncio

    from dashboard.server import Client

    async def go():
        client = Client(_FakeWS(), 3)
        reply = json.loads(_dashboard().handle_message(client, raw))
        assert reply["type"] == "error" and reply["reason"] == reason and reply["error"]

    asyncio.run(go())


def test_ping_and_subscribe():
    import asyncio

    from dashboard.server import Client

    async def go():
        d = _dashboard()
        client = Client(_FakeWS(), 3)
        assert json.loads(d.handle_message(client, '{"type": "ping", "id": 7}'))["id"] == 7
        reply = json.loads(d.handle_message(client, '{"type": "subscribe", "panels": ["lag", "counts"]}'))
        assert reply == {"type": "subscribed", "panels": ["counts", "lag"]}
        assert client.panels == {"lag", "counts"}
        snap = json.loads(client.queue[-1][1])  # a fresh snapshot of just those panels was queued
        assert snap["type"] == "snapshot" and set(snap["panels"]) == {"lag", "counts"}

    asyncio.run(go())


def test_client_queue_coalesces_when_full_and_flags_slow_clients():
    import asyncio

    from dashboard.server import Client

    async def go():
        client = Client(_FakeWS(), 3)
        assert not any(client.offer(f"u{i}".encode(), now=0.0) for i in range(3))
        assert client.offer_control(b"pong")
        assert client.offer(b"u3", now=1.0) and client.offer(b"u4", now=2.0)
        # Bounded: the newest queued update was replaced each time, control frames kept.
        assert [d for _, d in client.queue] == [b"u0", b"u1", b"u4", b"pong"]
        assert client.coalesced == 2 and client.full_since == 1.0
        assert client.too_slow(5.0, timeout=10) is None
        assert client.too_slow(11.5, timeout=10)[0] == "lagging"
        client.full_since, client.busy_since = None, 0.0
        assert client.too_slow(10.5, timeout=10)[0] == "stalled"
        for _ in range(20):
            client.offer_control(b"x")
        assert not client.offer_control(b"x")  # replies are bounded too

    asyncio.run(go())


def test_source_replaces_a_wedged_consumer(monkeypatch):
    """When its BrokerWatch says a client is wedged (librdkafka#5301), the dashboard's consumer thread closes it
    and carries on with a new one, and counts it."""
    import asyncio

    from dashboard import source
    from pipelines import kafka_util
    from pipelines.metrics import KAFKA_CLIENT_RESETS

    class Wedged(kafka_util.BrokerWatch):
        def wedged(self) -> bool:
            return True

    monkeypatch.setattr(kafka_util, "BrokerWatch", Wedged)
    resets = KAFKA_CLIENT_RESETS.labels("dashboard", "consumer")
    before = resets._value.get()
    loop = asyncio.new_event_loop()
    src = source.KafkaSource("127.0.0.1:1", source.SourceTopics({"fraud_score": "scores"}, {}), "g", loop,
                             asyncio.Queue(), lambda *a: None)
    src.threads = src.threads[:1]  # the consumer only
    src.start()
    try:
        deadline = time.time() + 20
        while resets._value.get() < before + 2 and time.time() < deadline:
            time.sleep(0.1)
        assert resets._value.get() >= before + 2
        assert src.threads[0].is_alive()
    finally:
        src.stop()
        loop.close()


def test_job_panel_shows_state_and_restarts():
    st = DashboardState(start=T0)
    assert st.snapshot(T0, ["job"])["job"]["state"] == "NOT WATCHED"
    st.set_job({"job_id": "ab", "name": "streamscore-fraud", "state": "RESTARTING", "restarts": 3}, now=T0)
    job = st.snapshot(T0, ["job"])["job"]
    assert (job["state"], job["restarts"], job["job_id"], job["updated"]) == ("RESTARTING", 3, "ab", T0)
    st.set_job(None, error="http://127.0.0.1:1/jobs/overview: refused", name="streamscore-fraud", now=T0 + 1)
    job = st.snapshot(T0 + 1, ["job"])["job"]
    assert job["state"] == "UNREACHABLE" and job["restarts"] is None and "refused" in job["error"]
    st.set_job(None, name="streamscore-fraud", now=T0 + 2)
    assert st.snapshot(T0 + 2, ["job"])["job"]["state"] == "NO JOB"


def test_dashboard_reads_the_job_from_flink_rest():
    """The server polls Flink's REST API (here a stand-in serving the two calls it makes) into the job panel; the
    newest live job of the name wins over an older finished one."""
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from dashboard.server import parse_args, settings_from
    from pipelines.config import Config

    class Rest(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/jobs/overview":
                body = {"jobs": [
                    {"jid": "old", "name": "streamscore-fraud", "state": "CANCELED", "start-time": 1},
                    {"jid": "j1", "name": "streamscore-fraud", "state": "RUNNING", "start-time": 2},
                    {"jid": "s1", "name": "streamscore-sentiment", "state": "RUNNING", "start-time": 3}]}
            elif self.path == "/jobs/j1/metrics?get=numRestarts":
                body = [{"id": "numRestarts", "value": "4"}]
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Rest)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        args = parse_args(["--flink-rest", f"http://127.0.0.1:{httpd.server_port}", "--job-interval", "0.1"])
        d = _dashboard()
        d.s = settings_from(args, Config())

        async def go():
            task = asyncio.create_task(d._job_loop())
            for _ in range(100):
                await asyncio.sleep(0.05)
                if d.state.job["state"] != "NOT WATCHED":
                    break
            task.cancel()

        asyncio.run(go())
        job = d.state.snapshot(T0, ["job"])["job"]
        assert (job["state"], job["restarts"], job["job_id"]) == ("RUNNING", 4, "j1")
    finally:
        httpd.shutdown()
    # Defaults: the fraud job's MiniCluster on loopback, or the configured JobManager; '' turns it off.
    assert settings_from(parse_args([]), Config()).flink_rest == f"http://127.0.0.1:{Config().flink.local_rest_port}"
    cluster = Config().with_overrides({"flink": {"jobmanager": "127.0.0.1:8081"}})
    assert settings_from(parse_args([]), cluster).flink_rest == "http://127.0.0.1:8081"
    assert settings_from(parse_args(["--flink-rest", ""]), Config()).flink_rest == ""


# ------------------------------------------------------------------------------------------- models (issue 27)

def shadowed(s: float, shadow: float | None, decision: str | None = None, version: str = "v1",
             shadow_version: str | None = "v2", arm: str | None = None) -> dict:
    d = decision or ("DECLINE" if s >= 0.9 else "REVIEW" if s >= 0.5 else "APPROVE")
    return {**score(s, d), "model_version": version, "shadow_version": shadow_version, "shadow_score": shadow,
            "ab_arm": arm, "rule_set_version": 0, "rule": None}


def quality(version: str, stage: str, **metrics) -> dict:
    rec = {"model": "fraud", "version": version, "stage": stage, "window_start": 1, "window_end": 2,
           "labels": 1000, "frauds": 20, "updated_at": 1_700_000_000_000}
    for k in ("auc_roc", "average_precision", "precision_review", "recall_review", "precision_decline",
              "recall_decline", "card_precision_at_100", "training_average_precision"):
        rec[k] = metrics.get(k)
    return rec


def test_models_versions_mix_and_old_records_without_shadow_fields():
    st = DashboardState(start=T0)
    for s, d in [(0.1, "APPROVE"), (0.2, "APPROVE"), (0.6, "REVIEW"), (0.95, "DECLINE")]:
        st.add_fraud_score(score(s, d), now=T0)  # a record written before the shadow fields: no such keys
    m = st.snapshot(T0)["models"]
    assert m["versions"] == [{"version": "m", "n": 4, "share": 1.0, "stage": None,
                              "decisions": {"APPROVE": 2, "REVIEW": 1, "DECLINE": 1}}]
    assert m["shadow"] == [] and m["ab"] == [] and m["quality"] == []
    assert m["thresholds"] == {"review": 0.5, "decline": 0.9, "source": "configured"}


def test_models_shadow_disagreement_mean_difference_and_declines():
    st = DashboardState(review_threshold=0.5, decline_threshold=0.9, models_last_n=4, start=T0)
    # (production, shadow): same decision, review -> decline, approve -> review, decline -> decline
    for s, sh in [(0.1, 0.2), (0.6, 0.95), (0.3, 0.55), (0.92, 0.99)]:
        st.add_fraud_score(shadowed(s, sh), now=T0)
    st.add_fraud_score(shadowed(0.1, float("nan")), now=T0)      # the shadow had no usable score
    st.add_fraud_score(shadowed(0.1, 0.1, decision="DECLINE"), now=T0)  # a hard rule declined it
    row, = st.snapshot(T0)["models"]["shadow"]
    assert (row["deciding"], row["shadow"], row["n"], row["differ"]) == ("v1", "v2", 5, 2)
    assert row["differ_share"] == 0.4
    assert row["mean_abs_diff"] == pytest.approx((0.1 + 0.35 + 0.25 + 0.07 + 0.0) / 5, abs=1e-4)
    assert row["otherwise"] == 1 and row["unscored"] == 1
    # The last 4 with a shadow score: (0.6, 0.95), (0.3, 0.55), (0.92, 0.99), (0.1, 0.1)
    assert (row["last_n"], row["declines_deciding"], row["declines_shadow"]) == (4, 1, 2)


def test_models_thresholds_are_the_configured_ones():
    st = DashboardState(review_threshold=0.3, decline_threshold=0.6, start=T0)
    st.add_fraud_score(shadowed(0.35, 0.45, decision="REVIEW"), now=T0)  # both review at 0.3/0.6
    st.add_fraud_score(shadowed(0.35, 0.65, decision="REVIEW"), now=T0)  # the shadow would decline
    row, = st.snapshot(T0)["models"]["shadow"]
    assert row["differ"] == 1 and row["declines_shadow"] == 1 and row["otherwise"] == 0


def test_models_ab_split_per_arm():
    st = DashboardState(start=T0)
    for i in range(10):
        cand = i % 5 == 0
        st.add_fraud_score(shadowed(0.1, None, version="v3" if cand else "v1", shadow_version=None,
                                    arm="CANDIDATE" if cand else "CONTROL"), now=T0)
    m = st.snapshot(T0)["models"]
    assert m["ab"] == [{"arm": "CONTROL", "n": 8, "share": 0.8, "versions": ["v1"]},
                       {"arm": "CANDIDATE", "n": 2, "share": 0.2, "versions": ["v3"]}]
    assert [(v["version"], v["n"]) for v in m["versions"]] == [("v1", 8), ("v3", 2)]
    assert m["shadow"] == []  # no shadow_version: nothing to compare


def test_models_window_forgets_old_records_and_bounds_versions():
    st = DashboardState(models_window_s=60, max_versions=3, start=T0)
    st.add_fraud_score(shadowed(0.1, 0.2, version="old"), now=T0)
    for i in range(50):  # 50 distinct versions in one second: at most 3 rows, the rest summed as "other"
        st.add_fraud_score(shadowed(0.1, 0.2, version=f"v{i}", shadow_version=f"s{i}"), now=T0 + 100)
    m = st.snapshot(T0 + 100)["models"]
    assert len(m["versions"]) == 3 and m["versions"][-1]["version"] == "other"
    assert sum(v["n"] for v in m["versions"]) == 50  # the record 100 s ago is out of the 60 s window
    assert len(m["shadow"]) <= 3 and all(k[0] != "old" for k in [(r["deciding"],) for r in m["shadow"]])
    assert sum(len(b) for b in st.models._mix.values()) <= 3 * 3 + 1
    assert len(st.models._mix) <= 60
    st.add_fraud_score(shadowed(0.1, 0.2), now=T0 + 1000)
    assert len(st.models._mix) == 1 and len(st.models._pairs) == 1


def test_models_quality_latest_per_version_production_first():
    st = DashboardState(max_versions=3, start=T0)
    st.add_model_quality(quality("v2", "shadow", auc_roc=0.91), now=T0)
    st.add_model_quality(quality("v1", "production", auc_roc=0.80), now=T0)
    st.add_model_quality(quality("v1", "production", auc_roc=0.85, average_precision=0.5), now=T0)
    m = st.snapshot(T0)["models"]
    assert [(q["version"], q["stage"], q["auc_roc"]) for q in m["quality"]] == [
        ("v1", "production", 0.85), ("v2", "shadow", 0.91)]
    assert m["quality"][0]["precision_review"] is None and m["quality"][0]["labels"] == 1000
    for i in range(5):
        st.add_model_quality(quality(f"a{i}", "archived"), now=T0)
    assert len(st.snapshot(T0)["models"]["quality"]) == 3
    assert st.snapshot(T0)["counts"]["model_quality"] == 8


def test_models_quality_hostile_values_are_bounded_and_json():
    st = DashboardState(start=T0)
    st.add_model_quality({**quality("x" * 100_000, "<b>" * 50_000, auc_roc=float("nan"),
                                    average_precision=float("inf")), "labels": "many"}, now=T0)
    st.add_model_quality({"stage": "production"}, now=T0)   # no version: not shown, counted
    st.add_model_quality(None, now=T0)
    m = st.snapshot(T0)["models"]
    q, = m["quality"]
    assert len(q["version"]) == 64 and len(q["stage"]) == 64
    assert q["auc_roc"] is None and q["average_precision"] is None and q["labels"] is None
    assert m["quality_rejected"] == 2
    json.dumps(st.snapshot(T0), allow_nan=False)


def test_dashboard_applies_model_quality_events_and_counts_undecodable_ones():
    import asyncio

    from dashboard.source import decode_message
    from pipelines.serde import serde

    d = _dashboard()
    good = serde("model_quality").encode(quality("v1", "production", auc_roc=0.9))
    events = [decode_message("model_quality", good, "mq", 0, 0), decode_message("model_quality", b"\xc3\x01junk", "mq", 0, 1),
              decode_message("model_quality", None, "mq", 0, 2)]
    assert [k for k, _ in events] == ["model_quality", "decode_error", "decode_error"]

    async def go():
        d.queue = asyncio.Queue()
        task = asyncio.create_task(d._apply_loop())
        await d.queue.put(events)
        while not d.queue.empty():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(go())
    snap = d.state.snapshot()
    assert [q["version"] for q in snap["models"]["quality"]] == ["v1"]
    assert snap["counts"]["decode_errors"] == 2 and snap["counts"]["model_quality"] == 1


def test_settings_take_the_fraud_thresholds():
    from dashboard.server import parse_args, settings_from
    from pipelines.config import load_config

    cfg = load_config(None)
    s = settings_from(parse_args(["--token", "a-long-enough-test-token-for-loopback"]), cfg)
    assert (s.review_threshold, s.decline_threshold) == (cfg.fraud.review_threshold, cfg.fraud.decline_threshold)
    from dashboard.server import Dashboard
    assert Dashboard(s).state.models.decline == cfg.fraud.decline_threshold


def test_models_hostile_score_fields_are_bounded():
    st = DashboardState(start=T0)
    st.add_fraud_score({**shadowed(0.1, 0.2, version="v" * 10_000, shadow_version="<b>" * 10_000), "ab_arm": "EVIL"},
                       now=T0)
    st.add_fraud_score({**shadowed(0.1, float("inf")), "score": "x"}, now=T0)
    m = st.snapshot(T0)["models"]
    assert len(m["versions"][0]["version"]) == 64 and m["ab"] == []
    assert len(m["shadow"][0]["shadow"]) == 64 and sum(r["unscored"] for r in m["shadow"]) == 1
    json.dumps(m, allow_nan=False)
