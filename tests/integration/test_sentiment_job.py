"""The sentiment job through the real broker and the real PyFlink job.

360 posts half a second apart in event time (exactly 3 one-minute windows from 2024-01-01 00:00 UTC), with
out-of-order posts (within the watermark bound: on time), late posts (sent after a tail of later posts has moved the
watermark past all of them) and malformed records. Every on-time post must get exactly one sentiment record; the
trend windows must count exactly the on-time posts per topic and minute, with the same labels as the score records;
late posts must be in the late topic once each, malformed records in the dead-letter topic.

The model is the trained artifact when there is one (`make train-sentiment`), else a tiny one built here from a
few hundred sentences (this test checks plumbing, not model quality).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.replay.fraud import ReplayOptions
from pipelines.replay.posts import EPOCH_MS, PostsOptions, PostsReplay
from pipelines.serde import serde
from tests.flink_util import RunningJob

pytestmark = pytest.mark.integration

N = 360
SPACING_MS = 500
TAIL = 240
MAIN_END = EPOCH_MS + N * SPACING_MS  # 3 minutes: a window boundary


@pytest.fixture(scope="module")
def sentiment_model_dir(tmp_path_factory):
    cfg = load_config()
    d = cfg.path(cfg.sentiment.model_dir)
    if (d / "LATEST").exists():
        return d
    from pipelines.train.sentiment import TrainConfig, train

    base = tmp_path_factory.mktemp("sentiment-model")
    train(TrainConfig(sst_train_n=150, tweet_train_n=150, eval_n=20),  # quantize: the job runs model_int8.pt
          data_dir=cfg.path(cfg.replay.sentiment_dir), model_dir=base, metrics_file=None, cache_dir=None,
          threads=1)
    return base


def decode_all(msgs, schema):
    s = serde(schema)
    return [s.decode(m.value()) for m in msgs]


def test_sentiment_job_scores_trends_late_dead(kafka_bootstrap, topic_factory, tmp_path, sentiment_model_dir):
    cfg = load_config()
    posts_t, out_t, trends_t = topic_factory("posts"), topic_factory("sentiment"), topic_factory("trends")
    late_t, dead_t = topic_factory("posts-late"), topic_factory("dead")
    env = {"STREAMSCORE_SENTIMENT__MODEL_DIR": str(sentiment_model_dir), "STREAMSCORE_SENTIMENT__DEVICE": "cpu"}
    with RunningJob("jobs/sentiment_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", posts_t,
                    "--out-topic", out_t, "--trends-topic", trends_t, "--late-topic", late_t,
                    "--dead-topic", dead_t, "--group-id", f"g-{posts_t}", env=env) as job:
        replay = None

        def main_windows_closed():
            # The tail is out: wait until the trends of the three main windows are visible (watermark past them).
            expected = N - len(replay.report.late_ids)
            deadline = time.time() + 150
            counted = 0
            while time.time() < deadline:
                assert job.alive(), job.output()
                trends = decode_all(kafka_util.read_topic(kafka_bootstrap, trends_t, idle=1, timeout=10), "sentiment_trend")
                counted = sum(t["count_negative"] + t["count_neutral"] + t["count_positive"]
                              for t in trends if t["window_end"] <= MAIN_END)
                if counted >= expected:
                    return
                time.sleep(1)
            raise AssertionError(f"trend windows counted {counted} of {expected} posts\n{job.output()}")

        opts = PostsOptions(base=ReplayOptions(rate=0, limit=N, out_of_order_frac=0.05, out_of_order_max_ms=2000,
                                               late_frac=0.03, late_at_end=True, malformed_frac=0.03, tail=TAIL,
                                               labels=False, seed=11),
                            spacing_ms=SPACING_MS, late_after_tail=True)
        replay = PostsReplay(cfg, opts, bootstrap=kafka_bootstrap, topic=posts_t)
        rep = replay.run(before_late=main_windows_closed)
        late_ids = set(rep.late_ids)
        assert rep.sent == N + TAIL and len(late_ids) >= 3 and rep.malformed >= 3 and rep.out_of_order_ids

        on_time = [p for p in replay.sent_posts if p["post_id"] not in late_ids]
        deadline = time.time() + 120
        while time.time() < deadline:
            scores = decode_all(kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30), "sentiment_score")
            if len({s["post_id"] for s in scores}) >= len(on_time):
                break
            assert job.alive(), job.output()
            time.sleep(1)
        late = decode_all(kafka_util.read_topic(kafka_bootstrap, late_t, idle=2, timeout=30), "late_event")
        dead = decode_all(kafka_util.read_topic(kafka_bootstrap, dead_t, idle=2, timeout=30), "dead_letter")
        trends = decode_all(kafka_util.read_topic(kafka_bootstrap, trends_t, idle=2, timeout=30), "sentiment_trend")

    # -- every on-time post exactly one sentiment record, nothing else
    got = Counter(s["post_id"] for s in scores)
    assert max(got.values()) == 1, "duplicate sentiment records"
    assert set(got) == {p["post_id"] for p in on_time}
    assert all(s["label"] in ("negative", "neutral", "positive") and s["scored_at"] >= s["produced_at"] > 0
               and abs(s["p_negative"] + s["p_neutral"] + s["p_positive"] - 1) < 1e-3 for s in scores)

    # -- late posts in the late topic, once each; malformed ones in the dead-letter topic
    late_got = Counter(e["event_id"] for e in late)
    assert set(late_got) == late_ids and max(late_got.values()) == 1
    assert all(e["event_time"] <= e["watermark"] and e["source_topic"] == posts_t for e in late)
    assert len(dead) == rep.malformed and all(d["source_topic"] == posts_t and d["reason"] for d in dead)

    # -- each post keeps its own topic (not the Kafka topic's name: the source's metadata columns are kafka_*)
    sent_topic = {p["post_id"]: p["topic"] for p in on_time}
    assert len(set(sent_topic.values())) > 1, "the replay sent one topic only"
    assert all(s["topic"] == sent_topic[s["post_id"]] for s in scores), "a score lost its post's topic"

    # -- trend windows == per-topic per-minute counts of the on-time posts, with the score records' labels
    main_scores = [s for s in scores if s["event_time"] < MAIN_END]
    expect = defaultdict(Counter)
    pos_sum = defaultdict(float)
    for s in main_scores:
        key = (s["topic"], s["event_time"] - s["event_time"] % 60_000)
        expect[key][s["label"]] += 1
        pos_sum[key] += s["p_positive"]
    windows = {(t["topic"], t["window_start"]): t for t in trends if t["window_end"] <= MAIN_END}
    assert Counter((t["topic"], t["window_start"]) for t in trends).most_common(1)[0][1] == 1, "duplicate windows"
    assert set(windows) == set(expect)
    assert {t for t, _ in windows} == {sent_topic[s["post_id"]] for s in main_scores}
    for key, t in windows.items():
        assert t["window_end"] - t["window_start"] == 60_000
        assert (t["count_negative"], t["count_neutral"], t["count_positive"]) == (
            expect[key]["negative"], expect[key]["neutral"], expect[key]["positive"]), key
        assert t["mean_positivity"] == pytest.approx(pos_sum[key] / sum(expect[key].values()), abs=1e-9)
    assert sum(sum(c.values()) for c in expect.values()) == N - len(late_ids)
