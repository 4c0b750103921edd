"""The unchanged sentiment job on a standalone Flink cluster (JobManager + TaskManager as separate JVMs) at parallelism 2.

Like tests/integration/test_flink_cluster.py for the fraud job: a cluster from infra/flink_cluster.py on free ports,
`flink run -d -p 2 -py jobs/sentiment_job.py` against the session's broker, a few hundred posts replayed by
pipelines/replay/posts.py into a 4-partition topic, and every post must have exactly one record in the output topic,
read with read_committed. The scorer is the trained model when there is one (`make train-sentiment`), else VADER
(`sentiment.scorer`): this test checks the cluster plumbing, not the model. The TaskManager's Python workers read
their config from the TaskManager's environment, so the scorer and the /metrics port are set there; the test also
scrapes that port, which shows that a per-process STREAMSCORE_METRICS__JOB_PORT (what `make run` gives this job)
reaches the workers. Bounded: it fails with the cluster's logs five minutes after the cluster starts, and the cluster
is stopped in a finally. It took 207 s from cluster start (236 s with the broker) with VADER on a 2-core machine at a
load average of 11-16, most of it the PyFlink client building the job (100 s) and the Python workers starting.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.flink_cluster import FlinkCluster
from infra.services import free_port
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.replay.fraud import ReplayOptions
from pipelines.replay.posts import PostsOptions, PostsReplay
from pipelines.serde import serde
from tests.flink_util import free_port_pair, job_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 400
BUDGET_S = 300
LIVE = ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING")


def scorer_env() -> dict[str, str]:
    cfg = load_config()
    model_dir = cfg.path(cfg.sentiment.model_dir)
    if (model_dir / "LATEST").exists():
        return {"STREAMSCORE_SENTIMENT__SCORER": "model", "STREAMSCORE_SENTIMENT__MODEL_DIR": str(model_dir),
                "STREAMSCORE_SENTIMENT__DEVICE": "cpu", "STREAMSCORE_SENTIMENT__THREADS": "1"}
    return {"STREAMSCORE_SENTIMENT__SCORER": "vader"}


def scrape(port: int) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_sentiment_job_on_standalone_cluster_parallelism_2(kafka_bootstrap, topic_factory, tmp_path):
    t0 = time.time()
    cfg = load_config()
    posts_t, out_t, trends_t = topic_factory("posts"), topic_factory("sentiment"), topic_factory("trends")
    late_t, dead_t = topic_factory("posts-late"), topic_factory("dead")

    # What the TaskManager's Python workers (the scoring UDF) and the job client read from the environment.
    metrics_port = free_port()
    env = job_env(tmp_path, {"STREAMSCORE_KAFKA__BOOTSTRAP": kafka_bootstrap,
                             "STREAMSCORE_METRICS__JOB_PORT": str(metrics_port), **scorer_env()})
    (tmp_path / "prometheus-multiproc").mkdir()  # job_env's PROMETHEUS_MULTIPROC_DIR, empty
    prom = free_port_pair()
    cluster = FlinkCluster(rest_port=free_port(), rpc_port=free_port(), slots=2, prom_ports=f"{prom}-{prom + 1}",
                           home=tmp_path / "flink-cluster", log_dir=tmp_path / "flink-cluster-logs", env=env)
    job_id = None

    def fail(msg: str) -> None:
        details = cluster.exceptions(job_id) if job_id else ""
        raise AssertionError(f"{msg}\n--- job exceptions ---\n{details}\n--- cluster logs ---\n"
                             f"{cluster.log_tail(3000)}")

    try:
        cluster.up(timeout=120)
        ov = cluster.overview()
        assert ov["taskmanagers"] == 1 and ov["slots-total"] == 2
        job_id = cluster.submit("jobs/sentiment_job.py",
                                ["--bootstrap", kafka_bootstrap, "--source-topic", posts_t, "--out-topic", out_t,
                                 "--trends-topic", trends_t, "--late-topic", late_t, "--dead-topic", dead_t,
                                 "--group-id", f"g-{posts_t}"],
                                parallelism=2, env=env, timeout=180)
        detail = cluster.rest(f"/jobs/{job_id}")
        assert detail["name"] == "streamscore-sentiment"
        vertices = detail["vertices"]
        assert {v["parallelism"] for v in vertices} == {2}, [(v["name"][:40], v["parallelism"]) for v in vertices]

        opts = PostsOptions(base=ReplayOptions(rate=0, limit=N, labels=False, seed=5), spacing_ms=500)
        replay = PostsReplay(cfg, opts, bootstrap=kafka_bootstrap, topic=posts_t)
        rep = replay.run()
        assert rep.sent == N and not rep.late_ids and rep.malformed == 0
        sent = {p["post_id"] for p in replay.sent_posts}
        assert len(sent) == N

        got: Counter = Counter()
        dec = serde("sentiment_score")
        while True:
            if time.time() - t0 > BUDGET_S:
                fail(f"after {BUDGET_S}s only {len(set(got) & sent)} of {N} posts scored")
            state = cluster.job_state(job_id)
            if state not in LIVE:
                fail(f"job is {state}")
            if sum(kafka_util.end_offsets(kafka_bootstrap, out_t).values()) >= N:
                msgs = kafka_util.read_topic(kafka_bootstrap, out_t, idle=2, timeout=60, read_committed=True)
                scores = [dec.decode(m.value()) for m in msgs]
                got = Counter(s["post_id"] for s in scores)
                if len(set(got) & sent) >= N:
                    break
            time.sleep(3)
        elapsed = time.time() - t0

        dups = {k: v for k, v in got.items() if v > 1}
        assert not dups, f"{len(dups)} posts scored more than once, e.g. {list(dups.items())[:5]}"
        assert set(got) == sent, f"unexpected post ids {sorted(set(got) - sent)[:10]}"
        assert all(s["label"] in ("negative", "neutral", "positive") for s in scores)
        assert kafka_util.read_topic(kafka_bootstrap, dead_t, idle=1, timeout=10, read_committed=True) == []
        assert cluster.job_state(job_id) == "RUNNING"

        # The workers on the cluster serve the job's metrics on the port their environment names.
        m = scrape(metrics_port)
        out = sum(v for (name, labels), v in m.items() if name == "streamscore_events_out_total"
                  and ("component", "sentiment-job") in labels and ("topic", cfg.topics.post_sentiment) in labels)
        assert out >= N, f"streamscore_events_out_total for the sentiment job is {out}"
        print(f"standalone cluster, parallelism 2: {N} posts scored exactly once in {elapsed:.0f}s from cluster "
              f"start ({env['STREAMSCORE_SENTIMENT__SCORER']} scorer)")
    finally:
        if job_id:
            try:
                cluster.cancel(job_id, timeout=30)
            except Exception:
                pass
        cluster.down()
    assert all(v is None for v in cluster.running().values())
