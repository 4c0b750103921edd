"""Sentiment pipeline benchmark: posts/s through the whole job (Kafka -> PyFlink -> model -> Kafka) and p99
post->sentiment latency, on the local MiniCluster.

Phase 1 (throughput): ``--n`` posts are written as a backlog, then counted out of `post-sentiment`:
posts/s = n / (last scored_at - first scored_at), i.e. the job's steady rate, without its start-up.
Phase 2 (latency): posts paced at ``--latency-rate`` for ``--latency-seconds``; the latency of a post is
``scored_at - produced_at`` (the producer's wall clock to the scoring UDF's). A read_committed consumer sees the
record only after the next checkpoint commits (``flink.checkpoint_interval_ms``), reported as ``commit_interval_ms``.

    python -m infra.bench.sentiment --bootstrap 127.0.0.1:9092 --out bench-results/sentiment.json
Without --bootstrap a private local broker is started on free ports. The result has the job's CPU seconds (JVM and
Python workers) per 1,000 posts of the drain and the load average, since the machine may be shared.

``--model-only``: the scorer alone (tokeniser + model, as the job's UDF calls it) on the replayed texts, in batches
of ``--batch`` posts (the job's Arrow batch), sentences/s per wall second and per CPU second; ``--precision``
picks a variant in the model directory as ``sentiment.precision`` does (``model_fp32.pt``, ``model_bf16.pt``,
``model_int8.pt``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from pipelines import kafka_util
from pipelines.config import ROOT, load_config
from pipelines.replay.fraud import ReplayOptions
from pipelines.replay.posts import PostsOptions, PostsReplay
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
                    now = int(time.time() * 1000)
                    r = s.decode(m.value())
                    if r["post_id"] in ids and r["post_id"] not in got:
                        got[r["post_id"]] = {**r, "_arrived_ms": now}
    finally:
        c.close()
    return list(got.values())


class ArrivalWatcher(threading.Thread):
    """First arrival (wall ms at this consumer) of each post's score on `topic`, read_committed as the dashboard
    reads it (so a score waits for the checkpoint that commits it), while the paced replay runs in the main thread
    (50 posts/s leaves the GIL mostly free)."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        # post_id -> (first arrival here, the scoring UDF's scored_at), to split a latency before/after the model
        self.first: dict[str, tuple[int, int]] = {}
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        from confluent_kafka import TopicPartition

        c = kafka_util.consumer(self.bootstrap, f"bench-live-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 5})
        md = c.list_topics(self.topic, timeout=10).topics[self.topic]
        c.assign([TopicPartition(self.topic, p, 0) for p in md.partitions])
        s = serde("sentiment_score")
        self.ready.set()
        try:
            while not self.stop.is_set():
                for m in c.consume(num_messages=1000, timeout=0.05):
                    if m.error() is None:
                        now = int(time.time() * 1000)
                        r = s.decode(m.value())
                        self.first.setdefault(r["post_id"], (now, r["scored_at"]))
        finally:
            c.close()


def start_fraud_load(cfg, bootstrap: str, run_dir: Path, rate: float):
    """The fraud job at its defaults with the fraud replay at `rate` on the live clock beside it, on the same
    broker, as under `make run`: the sentiment job's latency is what analysts get while transactions are scored.
    Returns (job, replay process, redis server)."""
    from infra import services
    from infra.bench.run import publish_bench_profiles
    from infra.jobrunner import RunningJob

    redis_srv = services.RedisServer(services.free_port(), run_dir / "redis")
    redis_srv.start()
    publish_bench_profiles(cfg, bootstrap, redis_srv.url)
    t = {k: f"bench-fraud-{k}-{uuid.uuid4().hex[:6]}" for k in ("tx", "labels", "scores", "decisions", "late", "dead")}
    kafka_util.ensure_topics(bootstrap, list(t.values()), cfg.kafka.partitions)
    (run_dir / "fraud").mkdir(parents=True, exist_ok=True)
    job = RunningJob("jobs/fraud_job.py", run_dir / "fraud", "--bootstrap", bootstrap, "--source-topic", t["tx"],
                     "--labels-topic", t["labels"], "--out-topic", t["scores"], "--decisions-topic", t["decisions"],
                     "--late-topic", t["late"], "--dead-topic", t["dead"], "--group-id", "bench-fraud-load",
                     env={"STREAMSCORE_REDIS__URL": redis_srv.url})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rep = subprocess.Popen([sys.executable, "-m", "pipelines.replay.fraud", "--bootstrap", bootstrap, "--topic",
                            t["tx"], "--clock", "live", "--rate", str(rate), "--loop", "--metrics-port", "0"],
                           cwd=ROOT, env={**env, "STREAMSCORE_TOPICS__LABELS": t["labels"]},
                           stdout=open(run_dir / "fraud-replay.out", "wb"), stderr=subprocess.STDOUT,
                           start_new_session=True)
    return job, rep, redis_srv


def bench_live(cfg, bootstrap: str, topics: dict, run_dir: Path, a, offset: int, sentiment_pid: int) -> dict:
    """sentiment_live_p99_ms: posts at `replay.posts_rate` stamped with the wall clock when sent (event time =
    produced_at), each post's latency its first arrival on the scores topic minus its event time, one that has not
    arrived `--live-settle` s after its phase counts as infinitely late; `--live-runs` consecutive phases of
    `--live-seconds` on the running job, with the fraud job and its replay at `replay.rate` (live clock) beside it
    after a `--live-warmup` s warm-up. Median, min and max of the phases' p99."""
    from infra.bench.run import _tree_cpu_seconds, percentiles, spread

    rate = cfg.replay.posts_rate
    job = rep = redis_srv = None
    out: dict = {"posts_rate": rate, "fraud_rate": cfg.replay.rate if a.with_fraud else 0,
                 "seconds_per_phase": a.live_seconds, "settle_s": a.live_settle, "warmup_s": a.live_warmup,
                 "phases": []}
    watcher = ArrivalWatcher(bootstrap, topics["sentiment"])
    watcher.start()
    watcher.ready.wait(30)
    try:
        if a.with_fraud:
            job, rep, redis_srv = start_fraud_load(cfg, bootstrap, run_dir, cfg.replay.rate)
            job.status(timeout=180)  # submitted and running before the warm-up counts
        t_end = time.time() + a.live_warmup
        warm = PostsReplay(cfg, PostsOptions(base=ReplayOptions(rate=rate, limit=int(rate * a.live_warmup),
                                                                id_offset=offset, labels=False,
                                                                progress_every_s=1e9), live_clock=True),
                           bootstrap=bootstrap, topic=topics["posts"])
        warm.run()
        time.sleep(max(0.0, t_end - time.time()))
        trees = {"sentiment_job": [sentiment_pid], "fraud_job": [job.proc.pid] if job else [],
                 "fraud_replay": [rep.pid] if rep else []}

        def cpu_now() -> dict[str, float]:
            # each process tree, and this process alone ("bench": the posts replay and the arrival watcher)
            return {**{k: _tree_cpu_seconds(v) for k, v in trees.items()}, "bench": time.process_time()}

        for i in range(a.live_runs):
            cpu0, t0 = cpu_now(), time.time()
            r = PostsReplay(cfg, PostsOptions(base=ReplayOptions(rate=rate, limit=int(rate * a.live_seconds),
                                                                 id_offset=offset + (i + 1) * 100_000, labels=False,
                                                                 progress_every_s=1e9), live_clock=True),
                            bootstrap=bootstrap, topic=topics["posts"])
            r.run()
            sent = {p["post_id"]: p["event_time"] for p in r.sent_posts}
            deadline = time.time() + a.live_settle
            while time.time() < deadline and not sent.keys() <= watcher.first.keys():
                time.sleep(0.5)
            first = dict(watcher.first)
            lat = np.array([first[k][0] - t if k in first else np.inf for k, t in sent.items()], dtype=np.float64)
            # Where the time went: event time -> the scoring UDF (source, decode, queues, the model), and the UDF
            # -> the consumer (the rest of the job, the sink, the broker).
            to_udf = np.array([first[k][1] - t for k, t in sent.items() if k in first], dtype=np.float64)
            after = np.array([first[k][0] - first[k][1] for k in sent if k in first], dtype=np.float64)
            row = {"sent": len(sent), "missing": int(np.isinf(lat).sum()), **percentiles(lat),
                   "to_scorer": percentiles(to_udf),
                   "after_scorer": percentiles(after),
                   "loadavg_1m": round(os.getloadavg()[0], 2),
                   # cores each process tree used over the phase and its settle time
                   "cores": {k: round((c - cpu0[k]) / (time.time() - t0), 2) for k, c in cpu_now().items()},
                   "fraud_job_alive": job.alive() if job else None}
            out["phases"].append(row)
            print(f"[bench-sentiment] live phase {i} {json.dumps(row, default=str)}", flush=True)
    finally:
        watcher.stop.set()
        if rep is not None:
            os.killpg(rep.pid, signal.SIGKILL)
            rep.wait(10)
        if job is not None:
            job.kill()
        if redis_srv is not None:
            redis_srv.stop()
    out["p99"] = spread([p["p99"] for p in out["phases"]])
    out["p50"] = spread([p["p50"] for p in out["phases"]])
    return out


def bench_model(cfg, a) -> dict:
    from pipelines.replay.posts import load_texts
    from udfs.sentiment import ModelSentimentScorer

    s = cfg.sentiment
    scorer = ModelSentimentScorer(cfg.path(s.model_dir), s.model_version, device=s.device, max_length=s.max_length,
                                  threads=a.threads or s.threads, batch_size=a.sub_batch,
                                  precision=a.precision or s.precision)
    texts = load_texts(cfg.path(cfg.replay.sentiment_dir))
    texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]  # a stream mixes both sets
    texts = (texts * (a.n // len(texts) + 1))[:a.n]
    scorer.predict(texts[:a.batch])  # warm-up: the TorchScript executor optimises on its first calls
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), a.batch):
        scorer.predict(texts[i:i + a.batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"model_sentences_per_s": round(len(texts) / wall, 1),
            "model_sentences_per_cpu_s": round(len(texts) / cpu, 1), "texts": len(texts), "batch": a.batch,
            "sub_batch": a.sub_batch, "model_version": scorer.version, "precision": scorer.precision,
            "threads": a.threads or s.threads or "torch default",
            "loadavg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--n", type=int, default=3000, help="posts in the throughput backlog")
    ap.add_argument("--latency-rate", type=float, default=100.0)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--scorer", choices=("model", "vader"), default=cfg.sentiment.scorer)
    ap.add_argument("--out", default="")
    ap.add_argument("--model-only", action="store_true", help="the scorer alone, no Kafka or Flink")
    ap.add_argument("--precision", choices=("artifact", "fp32", "bf16", "int8"), default=None,
                    help="--model-only: the model to run (default: sentiment.precision)")
    ap.add_argument("--batch", type=int, default=cfg.flink.arrow_batch_size, help="--model-only: posts per call")
    ap.add_argument("--sub-batch", type=int, default=64, help="--model-only: the scorer's padded sub-batch size")
    ap.add_argument("--threads", type=int, default=0, help="--model-only: torch threads (0: sentiment.threads)")
    ap.add_argument("--live-runs", type=int, default=3, help="live-clock phases (median, min and max of their p99)")
    ap.add_argument("--live-seconds", type=float, default=20.0, help="seconds per live-clock phase")
    ap.add_argument("--live-warmup", type=float, default=30.0, help="live-clock warm-up with the fraud load")
    ap.add_argument("--live-settle", type=float, default=20.0,
                    help="seconds after a phase before a post not yet scored counts as infinitely late")
    ap.add_argument("--no-fraud", dest="with_fraud", action="store_false",
                    help="live phases without the fraud job and replay beside the sentiment job")
    a = ap.parse_args(argv)
    if a.model_only:
        result = bench_model(cfg, a)
        print(json.dumps(result), flush=True)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0

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
        from infra.bench.run import _tree_cpu_seconds

        load0, cpu0 = os.getloadavg()[0], _tree_cpu_seconds([job.pid])
        bulk = replay(a.n, 0, 1_000_000)
        got = wait_scores(bootstrap, topics["sentiment"], {p["post_id"] for p in bulk.sent_posts}, 600)
        job_cpu = _tree_cpu_seconds([job.pid]) - cpu0
        load1 = os.getloadavg()[0]
        t = np.array([r["scored_at"] for r in got], dtype=np.int64)
        posts_per_s = len(got) / max((t.max() - t.min()) / 1000.0, 1e-3)
        n_lat = int(a.latency_rate * a.latency_seconds)
        paced = replay(n_lat, a.latency_rate, 2_000_000)
        lat_rec = wait_scores(bootstrap, topics["sentiment"], {p["post_id"] for p in paced.sent_posts}, 300)
        lat = np.array([r["scored_at"] - r["produced_at"] for r in lat_rec], dtype=np.float64)
        live = bench_live(cfg, bootstrap, topics, run_dir, a, 3_000_000, job.pid) if a.live_runs > 0 else None
        result = {"sentiment_posts_per_s": round(posts_per_s, 1),
                  "sentiment_live_p99_ms": live["p99"]["median"] if live else None,
                  "sentiment_live_p99_ms_min": live["p99"]["min"] if live else None,
                  "sentiment_live_p99_ms_max": live["p99"]["max"] if live else None,
                  "live": live,
                  "sentiment_p99_ms": round(float(np.percentile(lat, 99)), 1),
                  "sentiment_p50_ms": round(float(np.percentile(lat, 50)), 1),
                  "throughput_posts": len(got), "latency_posts": len(lat_rec), "latency_rate": a.latency_rate,
                  "scorer": a.scorer,
                  "commit_interval_ms": cfg.sentiment_checkpoint_interval_ms(),
                  "job_cpu_s_per_1k_posts": round(job_cpu / max(len(got), 1) * 1000, 2),
                  "loadavg_1m": [round(load0, 2), round(load1, 2)], "model": _model_meta(cfg, a.scorer),
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


def _model_meta(cfg, scorer: str) -> dict | None:
    if scorer != "model":
        return None
    try:
        from udfs.sentiment import artifact_precision, chosen_model, resolve_model_dir

        s = cfg.sentiment
        meta = json.loads((resolve_model_dir(cfg.path(s.model_dir), s.model_version) / "meta.json").read_text())
        precision, _, version = chosen_model(meta, s.precision)
        return {"version": version, "precision": precision, "artifact_precision": artifact_precision(meta),
                "threads": s.threads or "torch default", "single_thread_below": s.single_thread_below,
                "max_length": s.max_length}
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    sys.exit(main())
