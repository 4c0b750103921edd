"""A cold start of the sentiment job while posts arrive on the live clock from the first second (issue 28).

The posts replay starts first, stamping each post with the wall clock when it is sent, and the job is started cold
(fresh JVM, Python worker, model load) right after it: the posts of the job's warm-up queue up in Kafka. None of the
posts sent in the first WINDOW_S seconds may land in the late topic, and every one of them must be scored once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.replay.fraud import ReplayOptions
from pipelines.replay.posts import PostsOptions, PostsReplay
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.integration.test_sentiment_job import decode_all, sentiment_model_dir  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

RATE = 20.0
WINDOW_S = 40


def test_cold_start_sends_no_live_post_to_late(kafka_bootstrap, topic_factory, tmp_path, sentiment_model_dir):  # noqa: F811
    cfg = load_config()
    posts_t, out_t, trends_t = topic_factory("posts"), topic_factory("sentiment"), topic_factory("trends")
    late_t, dead_t = topic_factory("posts-late"), topic_factory("dead")
    env = {"STREAMSCORE_SENTIMENT__MODEL_DIR": str(sentiment_model_dir), "STREAMSCORE_SENTIMENT__DEVICE": "cpu"}
    opts = PostsOptions(base=ReplayOptions(rate=RATE, limit=int(RATE * WINDOW_S), labels=False), live_clock=True)
    replay = PostsReplay(cfg, opts, bootstrap=kafka_bootstrap, topic=posts_t)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            replay.run()
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    sender = threading.Thread(target=produce, daemon=True)
    sender.start()
    t0 = time.time()
    with RunningJob("jobs/sentiment_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", posts_t,
                    "--out-topic", out_t, "--trends-topic", trends_t, "--late-topic", late_t,
                    "--dead-topic", dead_t, "--group-id", f"g-{posts_t}", env=env) as job:
        sender.join(WINDOW_S + 30)
        assert not sender.is_alive() and not errors, errors
        sent = {p["post_id"] for p in replay.sent_posts}
        assert len(sent) == int(RATE * WINDOW_S)
        deadline = time.time() + 90
        scores: list[dict] = []
        while time.time() < deadline:
            assert job.alive(), job.output()
            scores = decode_all(kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=20), "sentiment_score")
            if {s["post_id"] for s in scores} >= sent:
                break
            time.sleep(1)
        late = decode_all(kafka_util.read_topic(kafka_bootstrap, late_t, idle=2, timeout=20), "late_event")
        first_scored = min((s["scored_at"] for s in scores), default=None)
    print(f"cold start: {len(sent)} posts over {WINDOW_S}s; first score "
          f"{(first_scored / 1000 - t0) if first_scored else float('nan'):.1f}s after the job was started")
    assert not late, f"{len(late)} live posts of the cold start went to the late topic: " \
                     f"{sorted(e['event_id'] for e in late)[:10]}"
    got = Counter(s["post_id"] for s in scores)
    assert set(got) == sent and max(got.values()) == 1
