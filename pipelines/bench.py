"""`make bench`: end-to-end benchmarks, written with the machine and the settings to bench-results/.

Fraud job, end to end (producer -> Kafka -> PyFlink job -> Kafka):

* Latency at fixed input rates: the producer sends for a fixed time while a consumer of `fraud-scores` stamps each
  score's arrival; latency is arrival minus the producer's `produced_at`. Two delivery modes: exactly-once output
  becomes visible when a checkpoint commits the Kafka transaction, so its latency floor is the checkpoint interval;
  at-least-once output (keyed by transaction id, for idempotent readers) is visible at once. Rates are of
  transactions, with their labels on top; a paced warm-up (`--warmup-seconds`) comes first, for the JIT.
* Sustained throughput: a backlog is produced first (so the producer does not compete with the job for the two
  cores), then the job starts and drains it. The rate is the output's between the 10% and 90% marks of the part after
  the first `--drain-warmup` events (the JIT and the state warmed up, as in a job that runs for days), beside the
  CPU seconds the job's processes spent per 10,000 events (less sensitive to a noisy machine than wall time); the
  whole drain's 10-90% rate, start-up included, comes beside it as `events_per_s_cold`. Measured
  for the native and the reference scorer, with 10% malformed records, and on the standalone cluster at
  parallelism 2.

The scorer micro-benchmark (pipelines/bench_scorer.py) and, when present, the sentiment benchmark run too. The
last line printed is one JSON object with the headline numbers. A benchmark reports; it never fails the build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    import psutil

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import pyflink  # noqa: F401
    from importlib.metadata import version

    return {"hostname": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "apache_flink": version("apache-flink"), "torch": version("torch"), "kernel": platform.release(),
            "load_avg_at_start": os.getloadavg()}


def _watch_scores(bootstrap: str, topic: str, read_committed: bool, out, stop) -> None:
    """Child process of ScoreWatcher: consume, stamp arrival, decode, send rows in chunks."""
    from pipelines import kafka_util
    from pipelines.serde import serde

    # Up to 20 ms for 16 KB per fetch: a fetch per record or two cost the shared broker CPU the job needs.
    consumer = kafka_util.consumer(bootstrap, f"bench-{topic}-{time.time_ns()}", read_committed=read_committed,
                                   **{"fetch.wait.max.ms": 20, "fetch.min.bytes": 16384})
    consumer.subscribe([topic])
    s = serde("fraud_score")
    while not stop.is_set():
        rows = []
        for m in kafka_util.consume_ready(consumer, 1000, 0.05):
            if m.error() is None:
                now = int(time.time() * 1000)
                r = s.decode(m.value())
                rows.append((now, r["produced_at"], r["scored_at"], m.timestamp()[1]))
        if rows:
            out.put(rows)
    consumer.close()


class ScoreWatcher(threading.Thread):
    """Records (arrival wall ms, produced_at, scored_at, the broker's append time) per score. The consumer runs in
    its own process: in the producer's process, the GIL and the replay loop delayed arrivals by 60-230 ms (p50)."""

    def __init__(self, bootstrap: str, topic: str, read_committed: bool):
        super().__init__(daemon=True)
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        self._stop_child = ctx.Event()
        self._proc = ctx.Process(target=_watch_scores, args=(bootstrap, topic, read_committed, self._queue,
                                                              self._stop_child), daemon=True)
        self.samples: list[tuple[int, int, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import queue

        self._proc.start()
        while not self.stop.is_set():
            try:
                self.samples.extend(self._queue.get(timeout=0.1))
            except queue.Empty:
                pass
        self._stop_child.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

    def window(self, t0: int, t1: int) -> list[tuple[int, int, int, int]]:
        return [x for x in list(self.samples) if t0 <= x[1] < t1]


def latency_split(got: list[tuple[int, int, int, int]]) -> dict:
    """p50/p99 ms of each leg: producer -> scoring UDF (Kafka, decode, windows, joins), scoring UDF -> the broker's
    append time (encode, sink, broker), broker -> our consumer."""
    a = np.asarray(got, dtype=np.int64).reshape(-1, 4)
    legs = {"producer_to_scorer": a[:, 2] - a[:, 1], "scorer_to_kafka": a[:, 3] - a[:, 2],
            "kafka_to_consumer": a[:, 0] - a[:, 3]}
    return {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} if len(v) else None
            for k, v in legs.items()}


def wait_settled(count: Callable[[], int], *, polls: int, every_s: float, timeout_s: float, at_least: float = 0,
                 check: Callable[[], None] = lambda: None) -> int:
    """Polls `count` until it is at least `at_least` and unchanged for `polls` polls in a row (the output has
    settled), or `timeout_s` passed; `check` runs before each poll (to fail fast on a dead job). Returns the count."""
    deadline = time.time() + timeout_s
    last, stable = -1, 0
    while True:
        check()
        cur = count()
        stable = stable + 1 if cur == last else 0
        last = cur
        if (cur >= at_least and stable >= polls) or time.time() >= deadline:
            return cur
        time.sleep(every_s)


def bench_fraud(rates: list[float], seconds: float, delivery: str, checkpoint_ms: int, model_env: dict,
                workdir: Path, warmup_s: float = 90.0) -> dict:
    from infra import services
    from pipelines import kafka_util
    from pipelines.config import load_config
    from pipelines.features import build_profiles, load_transactions
    from pipelines.jobrunner import RunningJob
    from pipelines.profiles import publish
    from pipelines.replay_fraud import FraudReplay, ReplayOptions

    cfg = load_config()
    broker = services.KafkaBroker(services.free_port(), services.free_port(), workdir / "kafka")
    redis_srv = services.RedisServer(services.free_port(), workdir / "redis")
    broker.start()
    redis_srv.start()
    out: dict = {"delivery": delivery, "checkpoint_interval_ms": checkpoint_ms, "warmup_s": warmup_s, "rates": []}
    try:
        b = broker.bootstrap
        topics = ["tx", "labels", "scores", "late", "dead", "cprof", "tprof"]
        # The broker stamps each score as it appends it: "arrival in fraud-scores", without our consumer's delay.
        kafka_util.ensure_topics(b, topics, 4, compacted=["cprof", "tprof"],
                                 extra_config={"scores": {"message.timestamp.type": "LogAppendTime"}})
        hist = load_transactions(cfg.path(cfg.replay.fraud_csv), nrows=300_000)
        customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 30 * 86_400_000)
        publish(cfg, customers, terminals, bootstrap=b, redis_url=redis_srv.url, topics=("cprof", "tprof"))
        env = {"STREAMSCORE_REDIS__URL": redis_srv.url, "STREAMSCORE_FLINK__DELIVERY_GUARANTEE": delivery,
               "STREAMSCORE_FLINK__CHECKPOINT_INTERVAL_MS": str(checkpoint_ms), **model_env}
        watcher = ScoreWatcher(b, "scores", read_committed=delivery == "exactly-once")
        watcher.start()
        with RunningJob("jobs/fraud_job.py", workdir, "--bootstrap", b, "--source-topic", "tx", "--labels-topic",
                        "labels", "--out-topic", "scores", "--late-topic", "late", "--dead-topic", "dead",
                        "--group-id", "bench", env=env) as job:
            # Warm-up at 2,000 transactions/s: the first minute pays for JVM and Python start-up, model loading
            # and the JIT (C2 compiled for about 60 s at 2,000/s, taking a third of a core from the job).
            warm = FraudReplay(cfg, ReplayOptions(rate=2000, limit=max(int(2000 * warmup_s), 4000), rebase=False,
                                                  pace_labels=False, progress_every_s=60),
                               bootstrap=b, tx_topic="tx", label_topic="labels").run()
            skip = warm.sent
            # The warm-up runs at about the job's capacity, so it ends with a backlog: let the job catch up (all but
            # the last rows, which wait for a later watermark) before a phase measures, or the first phase's
            # latencies are the warm-up's queue.
            def alive() -> None:
                assert job.alive(), job.output()

            wait_settled(lambda: len(watcher.samples), at_least=0.999 * warm.sent, polls=3, every_s=1.0,
                         timeout_s=180, check=alive)
            for rate in rates:
                n = int(rate * seconds) if rate else 120_000
                t0 = int(time.time() * 1000)
                # The rate is of transactions; their labels come on top, as they would live (one per transaction,
                # label_delay_days later), and resume_labels carries the label stream on from the previous phase.
                rep = FraudReplay(cfg, ReplayOptions(rate=rate, limit=n, skip=skip, progress_every_s=30,
                                                     pace_labels=False, resume_labels=True),
                                  bootstrap=b, tx_topic="tx", label_topic="labels").run()
                t1 = int(time.time() * 1000)
                skip += n
                wait_settled(lambda: len(watcher.window(t0, t1 + 1)), polls=4, every_s=0.5, timeout_s=120)
                got = watcher.window(t0, t1 + 1)
                lat = np.array([x[0] - x[1] for x in got], dtype=np.float64)
                lat_topic = np.array([x[3] - x[1] for x in got], dtype=np.float64)
                arrivals = np.array(sorted(x[0] for x in got), dtype=np.int64)
                span_s = (arrivals[-1] - arrivals[0]) / 1000 if len(arrivals) > 1 else float("nan")
                row = {"target_rate": rate or "unthrottled", "sent": rep.sent,
                       "producer_rate": round(rep.sent / max(rep.seconds, 1e-9), 1), "scored": len(got),
                       "output_events_per_s": round(len(got) / span_s, 1) if span_s == span_s and span_s else None,
                       "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
                       "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
                       "latency_to_topic_p50_ms": round(float(np.percentile(lat_topic, 50)), 1) if len(lat) else None,
                       "latency_to_topic_p99_ms": round(float(np.percentile(lat_topic, 99)), 1) if len(lat) else None,
                       "latency_split_ms": latency_split(got), "load_avg_1m": round(os.getloadavg()[0], 2)}
                out["rates"].append(row)
                print(f"[bench] fraud {delivery} {row}", flush=True)
        watcher.stop.set()
    finally:
        redis_srv.stop()
        broker.stop()
    return out


class ArrivalCounter(threading.Thread):
    """Counts records arriving in a topic, with their arrival times (no decoding: it shares the cores)."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        from pipelines import kafka_util

        self.consumer = kafka_util.consumer(bootstrap, f"bench-count-{time.time_ns()}", read_committed=False)
        self.consumer.subscribe([topic])
        self.arrivals: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            msgs = self.consumer.consume(5000, 0.2)
            now = time.time()
            self.arrivals.extend(now for m in msgs if m.error() is None)
        self.consumer.close()


def _tree_cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def drain_spans(total: int, warmup: int) -> dict[str, tuple[int, int]]:
    """The output index ranges a drain's rates are taken over: "warm", the 10-90% of the part after the first
    `warmup` events (the job running as it would for days), and "cold", the 10-90% of the whole drain, start-up
    included."""
    n = total - warmup
    return {"warm": (warmup + int(0.1 * n), warmup + int(0.9 * n)), "cold": (int(0.1 * total), int(0.9 * total))}


def drain_rate(arrivals: list[float], span: tuple[int, int]) -> float:
    """Events per second over output indexes [lo, hi): (hi - lo) events between the lo-th and the last one's
    arrival."""
    lo, hi = span
    return round((hi - lo) / max(arrivals[hi - 1] - arrivals[lo], 1e-9), 1)


def bench_drain(workdir: Path, variants: list[dict], n: int, warmup: int = 0) -> list[dict]:
    """For each variant ({"name", "env", "malformed_frac", "cluster"}): preload `warmup` + `n` transactions into
    fresh topics, start the job, and measure how fast it drains them (see drain_spans)."""
    from infra import services
    from pipelines import kafka_util
    from pipelines.config import load_config
    from pipelines.features import build_profiles, load_transactions
    from pipelines.jobrunner import RunningJob, job_env
    from pipelines.profiles import publish
    from pipelines.replay_fraud import FraudReplay, ReplayOptions

    cfg = load_config()
    broker = services.KafkaBroker(services.free_port(), services.free_port(), workdir / "kafka")
    redis_srv = services.RedisServer(services.free_port(), workdir / "redis")
    broker.start()
    redis_srv.start()
    results = []
    try:
        b = broker.bootstrap
        kafka_util.ensure_topics(b, ["cprof", "tprof"], 4, compacted=["cprof", "tprof"])
        hist = load_transactions(cfg.path(cfg.replay.fraud_csv), nrows=300_000)
        customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 30 * 86_400_000)
        publish(cfg, customers, terminals, bootstrap=b, redis_url=redis_srv.url, topics=("cprof", "tprof"))
        for i, v in enumerate(variants):
            topics = {k: f"{k}-{i}" for k in ("tx", "labels", "scores", "late", "dead")}
            kafka_util.ensure_topics(b, list(topics.values()), 4)
            rep = FraudReplay(cfg, ReplayOptions(rate=0, limit=warmup + n, malformed_frac=v.get("malformed_frac", 0.0),
                                                 progress_every_s=60),
                              bootstrap=b, tx_topic=topics["tx"], label_topic=topics["labels"]).run()
            expected = rep.sent  # malformed records come on top, and go to the dead-letter topic
            env = {"STREAMSCORE_REDIS__URL": redis_srv.url, "STREAMSCORE_FLINK__DELIVERY_GUARANTEE": "at-least-once",
                   "STREAMSCORE_FLINK__CHECKPOINT_INTERVAL_MS": "30000", **v.get("env", {})}
            args = ["--bootstrap", b, "--source-topic", topics["tx"], "--labels-topic", topics["labels"],
                    "--out-topic", topics["scores"], "--late-topic", topics["late"], "--dead-topic", topics["dead"],
                    "--group-id", f"drain-{i}"]
            counter = ArrivalCounter(b, topics["scores"])
            counter.start()
            row: dict = {"variant": v["name"], "backlog": rep.sent, "warmup_events": warmup,
                         "malformed": rep.malformed}
            spans = drain_spans(expected, warmup)
            t0 = time.time()
            cluster = job = None
            marks: dict[int, tuple[int, float]] = {}  # output count -> (count when seen, job CPU seconds then)
            try:
                if v.get("cluster"):
                    from infra.flink_cluster import FlinkCluster

                    penv = job_env(workdir / f"drain-{i}", env)
                    prom = services.free_port()
                    cluster = FlinkCluster(rest_port=services.free_port(), rpc_port=services.free_port(), slots=2,
                                           prom_ports=f"{prom}-{prom + 1}", home=workdir / f"cluster-{i}",
                                           log_dir=workdir / f"cluster-{i}-logs", env=penv)
                    cluster.up(timeout=120)
                    pids = [p for p in cluster.running().values() if p]
                    t0 = time.time()
                    cluster.submit("jobs/fraud_job.py", args, parallelism=2, env=penv, timeout=180)
                else:
                    (workdir / f"drain-{i}").mkdir(parents=True, exist_ok=True)
                    job = RunningJob("jobs/fraud_job.py", workdir / f"drain-{i}", *args, env=env)
                    pids = [job.proc.pid]
                deadline = time.time() + 600
                while time.time() < deadline:
                    got = len(counter.arrivals)
                    for mark in {i for span in spans.values() for i in span}:
                        if mark not in marks and got >= mark:
                            marks[mark] = (got, _tree_cpu_seconds(pids))
                    if got >= expected or (job is not None and not job.alive()):
                        break
                    # The last few events wait for a watermark that no later event moves: stop once output stalls.
                    idle_limit = 10 if all(hi in marks for _, hi in spans.values()) else 120
                    if counter.arrivals and time.time() - counter.arrivals[-1] > idle_limit:
                        break
                    time.sleep(0.5)
            finally:
                counter.stop.set()
                if job is not None:
                    job.kill()
                if cluster is not None:
                    cluster.down()
            arr = counter.arrivals
            row["scored"] = len(arr)
            row["first_score_after_s"] = round(arr[0] - t0, 1) if arr else None
            for name, (lo, hi) in spans.items():
                suffix = "" if name == "warm" else "_cold"
                if len(arr) >= hi > lo and lo in marks and hi in marks:
                    row[f"events_per_s{suffix}"] = drain_rate(arr, (lo, hi))
                    row[f"cpu_s_per_10k_events{suffix}"] = round((marks[hi][1] - marks[lo][1])
                                                                 / max(marks[hi][0] - marks[lo][0], 1) * 1e4, 2)
            if len(arr) >= 100:
                k = len(arr) // 10
                row["deciles_events_per_s"] = [round(k / max(arr[(d + 1) * k - 1] - arr[d * k], 1e-9), 1)
                                               for d in range(10)]
            row["load_avg_after"] = round(os.getloadavg()[0], 2)
            results.append(row)
            print(f"[bench] drain {row}", flush=True)
    finally:
        redis_srv.stop()
        broker.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--rates", default="2000,5000,0", help="events/s; 0 = unthrottled (sustained throughput)")
    ap.add_argument("--seconds", type=float, default=20.0)
    # 400k: a drain's first 50-100k events run at half speed (the JIT, cold state), most of a 150k drain's 10-90%.
    ap.add_argument("--backlog", type=int, default=400_000, help="transactions per throughput (drain) run")
    # A job runs for days: its rate is measured after the JIT and the state have warmed up, as the latency runs
    # are (in a 400k drain the first 80k ran at 11k events/s and the last 80k at 24-29k). The whole drain's rate,
    # start-up included, is reported beside it as *_cold.
    ap.add_argument("--drain-warmup", type=int, default=200_000,
                    help="transactions drained before the throughput is measured (same backlog, same job)")
    # 90 s: three 20 s phases at 2,000/s after a 60 s warm-up had p99 509, 278 and 191 ms (unaligned checkpoints:
    # 335, 199, 213), so a minute left the first phase still warming up.
    ap.add_argument("--warmup-seconds", type=float, default=90.0,
                    help="paced input (2,000 transactions/s) before the latency runs measure")
    ap.add_argument("--skip-scorer", action="store_true")
    ap.add_argument("--skip-cluster", action="store_true", help="no standalone-cluster drain run")
    args = ap.parse_args(argv)
    out_dir = ROOT / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    from pipelines.config import load_config

    cfg = load_config()
    result: dict = {"machine": machine(), "settings": {"rates": args.rates, "seconds_per_rate": args.seconds,
                                                       "parallelism": cfg.flink.parallelism,
                                                       "execution_mode": cfg.fraud.execution_mode,
                                                       "fraud_cpu_kernel": cfg.fraud.cpu_kernel,
                                                       "auto_watermark_interval_ms": cfg.flink.auto_watermark_interval_ms,
                                                       "bundle_time_ms": cfg.flink.bundle_time_ms,
                                                       "fraud_bundle_size": cfg.fraud.bundle_size,
                                                       "jvm_opts": cfg.flink.jvm_opts,
                                                       "buffer_timeout_ms": cfg.flink.buffer_timeout_ms},
                    "started": stamp}
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="streamscore-bench-", dir=str(ROOT / ".run")
                                     if (ROOT / ".run").exists() else None) as tmp:
        tmp = Path(tmp)
        variants = [{"name": "native scorer"},
                    {"name": "reference scorer (numpy)", "env": {"STREAMSCORE_FRAUD__SCORER": "reference"}},
                    {"name": "native scorer, 10% malformed", "malformed_frac": 0.10}]
        if not args.skip_cluster:
            variants.append({"name": "standalone cluster, parallelism 2", "cluster": True})
        drains = bench_drain(tmp / "drain", variants, args.backlog, args.drain_warmup)
        w = args.warmup_seconds
        al = bench_fraud(rates, args.seconds, "at-least-once", 2000, {}, tmp / "alo", w)
        eo = bench_fraud([2000.0], args.seconds, "exactly-once", 200, {}, tmp / "eo", w)
        # The changelog uploads only what changed since the last checkpoint (a probe: p99 5.5 s against 10.4 s).
        eo_changelog = bench_fraud([2000.0], args.seconds, "exactly-once", 200,
                                   {"STREAMSCORE_FLINK__STATE_CHANGELOG": "true"}, tmp / "eo-changelog", w)
        # Incremental checkpoints: the heap backend snapshots all 30 days of window state every time.
        eo_rocks = bench_fraud([2000.0], args.seconds, "exactly-once", 200,
                               {"STREAMSCORE_FLINK__STATE_BACKEND": "rocksdb"}, tmp / "eo-rocksdb", w)
    result["settings"]["backlog"] = args.backlog
    result["settings"]["drain_warmup"] = args.drain_warmup
    result["settings"]["warmup_seconds"] = args.warmup_seconds
    result["fraud"] = {"throughput_drain": drains, "at_least_once": al, "exactly_once": eo,
                       "exactly_once_changelog": eo_changelog,
                       "exactly_once_rocksdb_incremental": eo_rocks}
    headline = {}
    by_name = {d["variant"]: d for d in drains}
    headline["fraud_events_per_s"] = by_name.get("native scorer", {}).get("events_per_s")
    headline["fraud_events_per_s_cold"] = by_name.get("native scorer", {}).get("events_per_s_cold")
    headline["fraud_events_per_s_reference_scorer"] = by_name.get("reference scorer (numpy)", {}).get("events_per_s")
    headline["fraud_events_per_s_10pct_malformed"] = by_name.get("native scorer, 10% malformed", {}).get("events_per_s")
    headline["fraud_events_per_s_cluster_p2"] = by_name.get("standalone cluster, parallelism 2", {}).get("events_per_s")
    unthrottled = [r["output_events_per_s"] for r in al["rates"] if r["target_rate"] == "unthrottled"]
    headline["fraud_events_per_s_with_live_producer"] = unthrottled[0] if unthrottled else None
    at2k = [r["latency_p99_ms"] for r in al["rates"] if r["target_rate"] == 2000.0]
    headline["fraud_p99_ms"] = at2k[0] if at2k else None
    # The same scores, up to the broker's append time (the consumer's own delay left out).
    at2k_topic = [r["latency_to_topic_p99_ms"] for r in al["rates"] if r["target_rate"] == 2000.0]
    headline["fraud_p99_ms_to_topic"] = at2k_topic[0] if at2k_topic else None
    headline["fraud_p99_ms_exactly_once"] = eo["rates"][0]["latency_p99_ms"] if eo["rates"] else None
    headline["fraud_p99_ms_exactly_once_changelog"] = (eo_changelog["rates"][0]["latency_p99_ms"]
                                                       if eo_changelog["rates"] else None)
    headline["fraud_p99_ms_exactly_once_rocksdb"] = (eo_rocks["rates"][0]["latency_p99_ms"] if eo_rocks["rates"]
                                                     else None)
    if not args.skip_scorer:
        scorer_out = out_dir / f"scorer-{stamp}.json"
        proc = subprocess.run([sys.executable, "-m", "pipelines.bench_scorer", "--out", str(scorer_out)],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode == 0 and scorer_out.exists():
            result["scorer"] = json.loads(scorer_out.read_text())
            headline["native_speedup_b64"] = result["scorer"].get("native_speedup_b64")
        else:
            result["scorer_error"] = proc.stderr[-2000:]
    if (ROOT / "pipelines" / "bench_sentiment.py").exists():
        sent_out = out_dir / f"sentiment-{stamp}.json"
        proc = subprocess.run([sys.executable, "-m", "pipelines.bench_sentiment", "--out", str(sent_out)],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode == 0 and sent_out.exists():
            result["sentiment"] = json.loads(sent_out.read_text())
            headline["sentiment_posts_per_s"] = result["sentiment"].get("sentiment_posts_per_s")
        else:
            result["sentiment_error"] = proc.stderr[-2000:]
    result["headline"] = headline
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench] results written to {path.relative_to(ROOT)}", flush=True)
    print(json.dumps(headline), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
