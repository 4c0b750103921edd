"""Sentiment pipeline benchmark: posts/s through the whole job (Kafka -> PyFlink -> model -> Kafka) and p99
post->sentiment latency, on the local MiniCluster.

Phase 1 (throughput): ``--n`` posts are written as a backlog, then counted out of `post-sentiment`:
posts/s = n / (last scored_at - first scored_at), i.e. the job's steady rate, without its start-up.
Phase 2 (latency): posts paced at ``--latency-rate`` for ``--latency-seconds``; the latency of a post is
``scored_at - produced_at`` (the producer's wall clock to the scoring UDF's). A read_committed consumer sees the
record only after the next checkpoint commits (``flink.checkpoint_interval_ms``), reported as ``commit_interval_ms``.

    python -m pipelines.bench_sentiment --bootstrap 127.0.0.1:9092 --out bench-results/sentiment.json
Without --bootstrap a private local broker is started on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from pipelines import kafka_util
from pipelines.config import ROOT, load_config
from pipelines.replay_fraud import ReplayOptions
from pipelines.replay_posts import PostsOptions, PostsReplay
from pipelines.serde import serde


def wait_scores(bootstrap: str, topic: str, ids: set[str], timeout: float) -> list[dict]:
    c = kafka_util.consumer(bootstrap, f"bench-{uuid.uuid4().hex[:8]}")
    from confluent_kafka import TopicPartition

    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    s = serde("sentiment_score")
    got: dict[str, dict] = {}
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and not ids <= got.keys():
            for m in c.consume(num_messages=5000, timeout=0.5):
                if m.error() is None:
                    r = s.decode(m.value())
                    if r["post_id"] in ids:
                        got[r["post_id"]] = r
    finally:
        c.close()
    return list(got.values())


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--n", type=int, default=3000, help="posts in the throughput backlog")
    ap.add_argument("--latency-rate", type=float, default=100.0)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--scorer", choices=("model", "vader"), default=cfg.sentiment.scorer)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)

    broker = None
    run_dir = Path(tempfile.mkdtemp(prefix="bench-sentiment-"))
    bootstrap = a.bootstrap
    if not bootstrap:
        from infra import services

        broker = services.KafkaBroker(services.free_port(), services.free_port(), run_dir / "kafka")
        broker.start(timeout=120)
        bootstrap = broker.bootstrap
    sfx = uuid.uuid4().hex[:8]
    topics = {k: f"bench-{k}-{sfx}" for k in ("posts", "sentiment", "trends", "late", "dead")}
    kafka_util.ensure_topics(bootstrap, topics.values(), partitions=cfg.kafka.partitions)
    env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMSCORE_FLINK__LOG_DIR=str(run_dir / "logs"),
               STREAMSCORE_FLINK__CHECKPOINT_DIR=str(run_dir / "chk"), STREAMSCORE_METRICS__JOB_PORT="0")
    log = open(run_dir / "job.out", "wb")
    job = subprocess.Popen([sys.executable, str(ROOT / "jobs/sentiment_job.py"), "--bootstrap", bootstrap,
                            "--source-topic", topics["posts"], "--out-topic", topics["sentiment"],
                            "--trends-topic", topics["trends"], "--late-topic", topics["late"],
                            "--dead-topic", topics["dead"], "--group-id", f"bench-{sfx}", "--scorer", a.scorer],
                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def replay(n: int, rate: float, offset: int) -> PostsReplay:
            # Event time follows the wall clock (1 ms apart in a backlog), so no phase lands behind the watermark.
            spacing = max(1, int(1000 / rate)) if rate > 0 else 1
            r = PostsReplay(cfg, PostsOptions(base=ReplayOptions(rate=rate, limit=n, id_offset=offset, rebase=True,
                                                                 labels=False, progress_every_s=1e9),
                                              spacing_ms=spacing),
                            bootstrap=bootstrap, topic=topics["posts"])
            r.run()
            return r

        warm = replay(50, 0, 0)  # waits for the job to start and the model to load
        if len(wait_scores(bootstrap, topics["sentiment"], {p["post_id"] for p in warm.sent_posts}, 300)) < 50:
            raise RuntimeError(f"job did not score the warm-up posts; see {run_dir / 'job.out'}")
        bulk = replay(a.n, 0, 1_000_000)
        got = wait_scores(bootstrap, topics["sentiment"], {p["post_id"] for p in bulk.sent_posts}, 600)
        t = np.array([r["scored_at"] for r in got], dtype=np.int64)
        posts_per_s = len(got) / max((t.max() - t.min()) / 1000.0, 1e-3)
        n_lat = int(a.latency_rate * a.latency_seconds)
        paced = replay(n_lat, a.latency_rate, 2_000_000)
        lat_rec = wait_scores(bootstrap, topics["sentiment"], {p["post_id"] for p in paced.sent_posts}, 300)
        lat = np.array([r["scored_at"] - r["produced_at"] for r in lat_rec], dtype=np.float64)
        result = {"sentiment_posts_per_s": round(posts_per_s, 1),
                  "sentiment_p99_ms": round(float(np.percentile(lat, 99)), 1),
                  "sentiment_p50_ms": round(float(np.percentile(lat, 50)), 1),
                  "throughput_posts": len(got), "latency_posts": len(lat_rec), "latency_rate": a.latency_rate,
                  "scorer": a.scorer, "commit_interval_ms": cfg.flink.checkpoint_interval_ms,
                  "cpus": os.cpu_count()}
        print(json.dumps(result), flush=True)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.wait(30)
        log.close()
        kafka_util.delete_topics(bootstrap, topics.values())
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
