"""`make bench`: end-to-end benchmarks, written with the machine and the settings to bench-results/.

Fraud job, end to end (producer -> Kafka -> PyFlink job -> Kafka), at the defaults of `make run` unless a figure's
name says otherwise:

* Latency on the live clock (`bench_live`): every transaction's event time is the wall clock when it is sent, as
  a card network's would be, so nothing the job waits for in event time is hidden by a compressed replay. Per run,
  a fresh job on fresh topics, a paced warm-up (2,000/s for `--warmup-seconds`, for the JIT, start-up and the
  label stream), then one phase per rate (10, 2,000 with their labels, 5,000 transactions/s, `--seconds` each).
  Two reads of the same job: the decision path (`fraud-decisions`, at-least-once, read uncommitted) and the record
  of truth (`fraud-scores`, exactly-once, read_committed: visible at each checkpoint's commit). Latency is a
  transaction's first arrival at the consumer minus its event time; every transaction sent counts, and one that
  has not arrived `settle_s` after the phase ended is infinitely late (so p99 is inf when more than 1% are
  missing). Both emit modes: on arrival (the default) and at the watermark. `--runs` (3) runs each; the summary
  gives median, min and max.
* Sustained throughput (`bench_drain`): a backlog is produced first, in compressed data time (so the producer
  does not compete with the job for the two cores), then the job starts and drains it. The rate is the output's
  between the 10% and 90% marks of the part after the first `--drain-warmup` events (the JIT and the state warmed
  up, as in a job that runs for days), beside the CPU seconds the job's processes spent per 10,000 events; the
  whole drain's 10-90% rate, start-up included, is `events_per_s_cold`. The headline drains run at the defaults
  of `make run` (flink.delivery_guarantee exactly-once, 2 s checkpoints, hashmap state, emit on arrival: the
  config's defaults, recorded in `settings`), `--runs` times. Variants run once each under their own names, with
  the settings they change in `overrides`: at-least-once with 30 s checkpoints (the pre-issue-25 headline), the
  reference scorer, 10% malformed records, emit at the watermark and the standalone cluster at parallelism 2.
  Compressed time is used for drains only; no latency figure comes from it.
* Start-up (`fraud_startup_s`): per default drain, the seconds from starting a cold job (a fresh JVM and Python
  workers) to its first score arriving in the output topic.

The scorer micro-benchmark (infra/bench/scorer.py) and the sentiment benchmark run too. The 1-minute load
average is sampled every 2 s; each measured window (a drain, a live phase) records its maximum as `load_avg_max`
and `overloaded` when that was above the core count, and the run's maximum is `machine.overloaded`. PNG plots
(infra/bench/plots.py) are written next to the JSON: throughput over time per drain, latency CDF per live rate. The last line
printed is one JSON object with the headline numbers and their settings. A benchmark reports; it never fails the
build.
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

ROOT = Path(__file__).resolve().parents[2]


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


class LoadSampler(threading.Thread):
    """The 1-minute load average every `every_s` seconds, so each measured window can say how loaded it was."""

    def __init__(self, every_s: float = 2.0):
        super().__init__(daemon=True)
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append((time.time(), os.getloadavg()[0]))
            if self.stop.wait(self.every_s):
                return

    def window(self, t0: float, t1: float) -> dict:
        return load_window(self.samples + [(time.time(), os.getloadavg()[0])], t0, t1)


def load_window(samples: list[tuple[float, float]], t0: float, t1: float, cores: int | None = None) -> dict:
    """Max 1-minute load average over the samples taken in [t0, t1] (the first one after t1 if none fell inside),
    and whether it was above the core count."""
    cores = cores or os.cpu_count() or 1
    inside = [v for t, v in samples if t0 <= t <= t1] or [v for t, v in samples if t > t1][:1]
    mx = round(max(inside), 2) if inside else None
    return {"load_avg_max": mx, "cores": cores, "overloaded": mx is not None and mx > cores}


LOAD = LoadSampler()


def _watch_scores(bootstrap: str, topic: str, read_committed: bool, out, stop) -> None:
    """Child process of ScoreWatcher: consume, stamp arrival, decode, send rows in chunks."""
    from pipelines import kafka_util
    from pipelines.serde import serde

    # As a decision reader would (pipelines/decisions.py): a fetch returns as soon as there is a record.
    consumer = kafka_util.consumer(bootstrap, f"bench-{topic}-{time.time_ns()}", read_committed=read_committed,
                                   **{"fetch.wait.max.ms": 5})
    consumer.subscribe([topic])
    s = serde("fraud_score")
    while not stop.is_set():
        rows = []
        for m in kafka_util.consume_ready(consumer, 1000, 0.05):
            if m.error() is None:
                now = int(time.time() * 1000)
                r = s.decode(m.value())
                rows.append((now, r["transaction_id"], r["produced_at"], r["scored_at"], m.timestamp()[1]))
        if rows:
            out.put(rows)
    consumer.close()


class ScoreWatcher(threading.Thread):
    """Keeps the first arrival of each transaction's score: (arrival wall ms, produced_at, scored_at, the broker's
    append time) by transaction id, and counts the copies after it (the at-least-once decision path can repeat a
    score). The consumer runs in its own process: in the producer's process, the GIL and the replay loop delayed
    arrivals by 60-230 ms (p50)."""

    def __init__(self, bootstrap: str, topic: str, read_committed: bool):
        super().__init__(daemon=True)
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        self._stop_child = ctx.Event()
        self._proc = ctx.Process(target=_watch_scores, args=(bootstrap, topic, read_committed, self._queue,
                                                              self._stop_child), daemon=True)
        self.first: dict[int, tuple[int, int, int, int]] = {}
        self.duplicates = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import queue

        self._proc.start()
        while not self.stop.is_set():
            try:
                rows = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            for arrival, txid, produced, scored, kafka_ts in rows:
                if txid in self.first:
                    self.duplicates += 1
                else:
                    self.first[txid] = (arrival, produced, scored, kafka_ts)
        self._stop_child.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

    def missing(self, ids: list[int]) -> int:
        first = self.first
        return sum(1 for i in ids if i not in first)


def latency_split(got: list[tuple[int, int, int, int]]) -> dict:
    """p50/p99 ms of each leg: producer -> scoring UDF (Kafka, decode, windows, joins), scoring UDF -> the broker's
    append time (encode, sink, broker), broker -> our consumer."""
    a = np.asarray(got, dtype=np.int64).reshape(-1, 4)
    legs = {"producer_to_scorer": a[:, 2] - a[:, 1], "scorer_to_kafka": a[:, 3] - a[:, 2],
            "kafka_to_consumer": a[:, 0] - a[:, 3]}
    return {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} if len(v) else None
            for k, v in legs.items()}


INF = float("inf")


def latencies(ids: list[int], first: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """Per transaction sent: first arrival minus its event time (= produced_at on the live clock), in ms; one that
    never arrived is infinitely late."""
    return np.array([first[i][0] - first[i][1] if i in first else INF for i in ids], dtype=np.float64)


def save_raw(path: Path, ids: list[int], first: dict[int, tuple[int, int, int, int]]) -> None:
    """Per transaction sent: its id and (arrival, produced_at, scored_at, broker append time) in wall ms; -1 for
    one that never arrived."""
    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.array([first.get(i, (-1, -1, -1, -1)) for i in ids], dtype=np.int64).reshape(-1, 4)
    np.savez_compressed(path, ids=np.asarray(ids, dtype=np.int64), arrival=times[:, 0], produced=times[:, 1],
                        scored=times[:, 2], kafka_ts=times[:, 3])


CDF_QUANTILES = [q / 2 for q in range(0, 200)] + [99.5, 99.9, 100.0]


def cdf_points(lat: np.ndarray) -> dict:
    """The latency CDF as (quantile %, ms) points for the plots; quantiles past the arrived fraction are inf."""
    if not len(lat):
        return {"q": [], "ms": []}
    qs = sorted(set(CDF_QUANTILES))
    return {"q": qs, "ms": [float(np.percentile(lat, q, method="higher")) for q in qs]}


def percentiles(lat: np.ndarray, qs=(50, 90, 99)) -> dict:
    """Percentiles that count missing events (inf) as the latest of all: `higher` picks a sample, never an
    interpolation between a finite sample and inf (which would be nan between two infs)."""
    if not len(lat):
        return {f"p{q}": None for q in qs} | {"max": None}
    out = {f"p{q}": float(np.percentile(lat, q, method="higher")) for q in qs}
    out["max"] = float(lat.max())
    return out


def spread(values: list) -> dict:
    """Median, min and max over runs (inf for a run with more than 1% missing stays inf; None: not measured)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def json_safe(x):
    """JSON has no infinity: an event that never arrived makes a percentile the string "inf"."""
    if isinstance(x, float) and x == INF:
        return "inf"
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


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


# Both reads of one job's output: the decision path (at-least-once, uncommitted) and the record of truth
# (flink.delivery_guarantee, exactly-once by default, read_committed).
PATHS = {"decision": ("decisions", False), "committed": ("scores", True)}


def publish_bench_profiles(cfg, bootstrap: str, redis_url: str) -> None:
    """The customer and terminal profiles of the first 30 days of the data set, in Redis and on the compacted
    profile topics `cprof`/`tprof`, as every benchmark's fraud job looks them up."""
    from pipelines import kafka_util
    from pipelines.features import build_profiles, load_transactions
    from pipelines.profiles import publish

    kafka_util.ensure_topics(bootstrap, ["cprof", "tprof"], cfg.kafka.partitions, compacted=["cprof", "tprof"])
    hist = load_transactions(cfg.path(cfg.replay.fraud_csv), nrows=300_000)
    customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 30 * 86_400_000)
    publish(cfg, customers, terminals, bootstrap=bootstrap, redis_url=redis_url, topics=("cprof", "tprof"))


def bench_live(emit: str, rates: list[float], seconds: float, workdir: Path, *, runs: int, warmup_s: float,
               settle_s: float = 20.0, raw_dir: Path | None = None) -> dict:
    """Latency on the live clock: each transaction's event time is the wall clock when it is sent. Per run, a
    fresh job at the defaults of `make run` (except `emit`) on fresh topics: a paced warm-up at 2,000/s, then one
    phase per rate. Per phase and read path, every transaction sent counts: its first arrival minus its event time,
    infinitely late if it has not arrived `settle_s` after the phase's last send. With `raw_dir`, each phase's
    per-transaction times are kept there (an .npz per run, rate and path) for looking into the tails."""
    from infra import services
    from pipelines import kafka_util
    from pipelines.config import load_config
    from infra.jobrunner import RunningJob
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    cfg = load_config()
    broker = services.KafkaBroker(services.free_port(), services.free_port(), workdir / "kafka")
    redis_srv = services.RedisServer(services.free_port(), workdir / "redis")
    broker.start()
    redis_srv.start()
    out: dict = {"emit": emit, "delivery_guarantee": cfg.flink.delivery_guarantee,
                 "checkpoint_interval_ms": cfg.flink.checkpoint_interval_ms, "warmup_s": warmup_s,
                 "seconds_per_rate": seconds, "settle_s": settle_s, "replay_linger_ms": cfg.replay.linger_ms,
                 "runs": []}
    try:
        b = broker.bootstrap
        publish_bench_profiles(cfg, b, redis_srv.url)
        for run in range(runs):
            t = {k: f"{k}-{emit}-{run}" for k in ("tx", "labels", "scores", "decisions", "late", "dead")}
            # The broker stamps each score as it appends it: the leg up to the topic, without our consumer's.
            kafka_util.ensure_topics(b, list(t.values()), cfg.kafka.partitions,
                                     extra_config={t["scores"]: {"message.timestamp.type": "LogAppendTime"},
                                                   t["decisions"]: {"message.timestamp.type": "LogAppendTime"}})
            env = {"STREAMSCORE_REDIS__URL": redis_srv.url, "STREAMSCORE_FRAUD__EMIT": emit}
            watchers = {path: ScoreWatcher(b, t[topic], read_committed=rc) for path, (topic, rc) in PATHS.items()}
            for w in watchers.values():
                w.start()
            live_times: dict[int, int] = {}
            phases = []
            run_dir = workdir / f"run-{run}"
            run_dir.mkdir(parents=True, exist_ok=True)
            with RunningJob("jobs/fraud_job.py", run_dir, "--bootstrap", b, "--source-topic", t["tx"],
                            "--labels-topic", t["labels"], "--out-topic", t["scores"], "--decisions-topic",
                            t["decisions"], "--late-topic", t["late"], "--dead-topic", t["dead"],
                            "--group-id", f"bench-{emit}-{run}", env=env) as job:
                def alive() -> None:
                    assert job.alive(), job.output()

                def replay(rate: float, n: int, skip: int):
                    return FraudReplay(cfg, ReplayOptions(rate=rate, limit=n, skip=skip, live=True, record_ids=True,
                                                          pace_labels=False, resume_labels=True,
                                                          progress_every_s=60),
                                       bootstrap=b, tx_topic=t["tx"], label_topic=t["labels"],
                                       live_times=live_times).run()

                # The warm-up pays for JVM and Python start-up, model loading and the JIT (C2 compiled for about
                # 60 s at 2,000/s), and brings the label stream in (labels come 7 days of data time later).
                warm = replay(2000, max(int(2000 * warmup_s), 4000), 0)
                skip = warm.sent
                wait_settled(lambda: len(watchers["decision"].first), at_least=0.999 * warm.sent, polls=3,
                             every_s=1.0, timeout_s=180, check=alive)
                for rate in rates:
                    n = max(int(rate * seconds), 50)
                    phase_t0 = time.time()
                    rep = replay(rate, n, skip)
                    skip += rep.sent
                    ids = rep.sent_ids
                    deadline = time.time() + settle_s
                    while time.time() < deadline and any(w.missing(ids) for w in watchers.values()):
                        alive()
                        time.sleep(0.5)
                    row: dict = {"rate": rate, "sent": len(ids), "labels_sent": rep.labels,
                                 **LOAD.window(phase_t0, time.time()),
                                 "producer_rate": round(rep.sent / max(rep.seconds, 1e-9), 1),
                                 "load_avg_1m": round(os.getloadavg()[0], 2)}
                    for path, w in watchers.items():
                        first = dict(w.first)
                        lat = latencies(ids, first)
                        got = [first[i] for i in ids if i in first]
                        row[path] = {**percentiles(lat), "arrived": len(got), "missing": len(ids) - len(got),
                                     "duplicates_so_far": w.duplicates, "latency_split_ms": latency_split(got),
                                     "cdf_ms": cdf_points(lat)}
                        if raw_dir is not None:
                            save_raw(raw_dir / f"{emit}-run{run}-{int(rate)}-{path}.npz", ids, first)
                    phases.append(row)
                    print(f"[bench] live emit={emit} run={run} {json.dumps(json_safe(row))}", flush=True)
            for w in watchers.values():
                w.stop.set()
            out["runs"].append({"run": run, "warmup_sent": warm.sent, "phases": phases})
    finally:
        redis_srv.stop()
        broker.stop()
    out["summary"] = {}
    for rate in rates:
        for path in PATHS:
            rows = [p[path] for r in out["runs"] for p in r["phases"] if p["rate"] == rate]
            out["summary"][f"{int(rate)}/s {path}"] = {q: spread([r[q] for r in rows]) for q in ("p50", "p99")}
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


def throughput_timeline(arrivals: list[float], t0: float, bin_s: float = 1.0) -> dict:
    """Output events per second in `bin_s` bins from the job's start (t0) to the last arrival, for the plots."""
    if not arrivals:
        return {"bin_s": bin_s, "t_s": [], "events_per_s": []}
    a = np.asarray(arrivals) - t0
    n = int(max(a.max(), 0) // bin_s) + 1
    counts = np.bincount(np.clip((a // bin_s).astype(int), 0, None), minlength=n)
    return {"bin_s": bin_s, "t_s": [round(i * bin_s, 2) for i in range(len(counts))],
            "events_per_s": [round(float(c) / bin_s, 1) for c in counts]}


def wait_drain(counter: "ArrivalCounter", expected: int, spans: dict[str, tuple[int, int]], pids: list[int],
               marks: dict[int, tuple[int, float]], *, alive: Callable[[], bool], timeout_s: float, idle_s: float,
               on_poll: Callable[[], None] | None = None) -> None:
    """Wait for a drain to finish, filling `marks` (output count -> (count when seen, CPU seconds of the `pids`
    trees then)) at each mark of `spans`. Stops at `expected` outputs, when `alive()` turns false, after
    `timeout_s`, or once output stalls: `idle_s` before every upper mark is seen, 10 s after (the last few events
    wait for a watermark that no later event moves). `on_poll` runs at each poll (e.g. to sample RSS)."""
    deadline = time.time() + timeout_s
    wanted = {m for span in spans.values() for m in span}
    while time.time() < deadline:
        got = len(counter.arrivals)
        for mark in wanted:
            if mark not in marks and got >= mark:
                marks[mark] = (got, _tree_cpu_seconds(pids))
        if on_poll is not None:
            on_poll()
        if got >= expected or not alive():
            break
        idle_limit = 10 if all(hi in marks for _, hi in spans.values()) else idle_s
        if counter.arrivals and time.time() - counter.arrivals[-1] > idle_limit:
            break
        time.sleep(0.5)


def run_sub_bench(module: str, out_file: Path, headline_key: str) -> tuple[dict | None, object, str]:
    """Run a sub-benchmark `python -m module --out out_file`; return (its JSON or None, its headline figure,
    the stderr tail when it failed)."""
    proc = subprocess.run([sys.executable, "-m", module, "--out", str(out_file)], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode == 0 and out_file.exists():
        res = json.loads(out_file.read_text())
        return res, res.get(headline_key), ""
    return None, None, proc.stderr[-2000:]


def shadow_model_dir(cfg, out: Path) -> Path:
    """A model folder for the shadow's cost: the production version of fraud.model_dir, and a copy of it under
    another version name as the registry's shadow (the same work per batch as any shadow of this architecture)."""
    import json
    import shutil

    from pipelines.models import Registry
    from udfs.scoring import resolve_model_dir

    src = resolve_model_dir(cfg)
    shutil.copytree(src, out / src.name)
    shadow = f"{src.name}-shadow"
    shutil.copytree(src, out / shadow)
    meta = json.loads((out / shadow / "meta.json").read_text())
    (out / shadow / "meta.json").write_text(json.dumps({**meta, "version": shadow}, indent=2) + "\n")
    (out / "LATEST").write_text(f"{src.name}\n")
    Registry(out).shadow(shadow)
    return out


def bench_drain(workdir: Path, variants: list[dict], n: int, warmup: int = 0) -> list[dict]:
    """For each variant ({"name", "env", "malformed_frac", "cluster"}): preload `warmup` + `n` transactions into
    fresh topics, start the job, and measure how fast it drains them (see drain_spans)."""
    from infra import services
    from pipelines import kafka_util
    from pipelines.config import load_config
    from pipelines.features import build_profiles, load_transactions
    from infra.jobrunner import RunningJob, job_env
    from pipelines.profiles import publish
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

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
            topics = {k: f"{k}-{i}" for k in ("tx", "labels", "scores", "decisions", "late", "dead")}
            kafka_util.ensure_topics(b, list(topics.values()), 4)
            rep = FraudReplay(cfg, ReplayOptions(rate=0, limit=warmup + n, malformed_frac=v.get("malformed_frac", 0.0),
                                                 progress_every_s=60),
                              bootstrap=b, tx_topic=topics["tx"], label_topic=topics["labels"]).run()
            expected = rep.sent  # malformed records come on top, and go to the dead-letter topic
            # The defaults of `make run` (the config's); a variant's overrides are recorded beside its figures.
            env = {"STREAMSCORE_REDIS__URL": redis_srv.url, **v.get("env", {})}
            args = ["--bootstrap", b, "--source-topic", topics["tx"], "--labels-topic", topics["labels"],
                    "--out-topic", topics["scores"], "--decisions-topic", topics["decisions"],
                    "--late-topic", topics["late"], "--dead-topic", topics["dead"],
                    "--group-id", f"drain-{i}"]
            counter = ArrivalCounter(b, topics["scores"])
            counter.start()
            row: dict = {"variant": v["name"], "overrides": v.get("env", {}) | (
                {"cluster_parallelism": 2} if v.get("cluster") else {}), "backlog": rep.sent,
                         "warmup_events": warmup, "malformed": rep.malformed}
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
                wait_drain(counter, expected, spans, pids, marks,
                           alive=(lambda: True) if job is None else job.alive, timeout_s=600, idle_s=120)
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
            row["throughput_timeline"] = throughput_timeline(arr, t0)
            row.update(LOAD.window(t0, time.time()))
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
    ap.add_argument("--rates", default="10,2000,5000", help="live-clock input rates, transactions/s")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per live-clock rate")
    ap.add_argument("--runs", type=int, default=3, help="runs of each figure (medians, min and max are reported)")
    # 400k: a drain's first 50-100k events run at half speed (the JIT, cold state), most of a 150k drain's 10-90%.
    ap.add_argument("--backlog", type=int, default=400_000, help="transactions per throughput (drain) run")
    # A job runs for days: its rate is measured after the JIT and the state have warmed up (in a 400k drain the
    # first 80k ran at 11k events/s and the last 80k at 24-29k). The whole drain's rate, start-up included, is
    # reported beside it as *_cold.
    ap.add_argument("--drain-warmup", type=int, default=200_000,
                    help="transactions drained before the throughput is measured (same backlog, same job)")
    ap.add_argument("--warmup-seconds", type=float, default=60.0,
                    help="live-clock input at 2,000 transactions/s before each latency run measures")
    ap.add_argument("--only", choices=["all", "live", "drain"], default="all")
    ap.add_argument("--emit", choices=["both", "arrival", "watermark"], default="both",
                    help="which emit modes the live-clock runs measure")
    ap.add_argument("--raw", action="store_true",
                    help="keep each live-clock phase's per-transaction times (.npz) beside the results")
    ap.add_argument("--skip-scorer", action="store_true")
    ap.add_argument("--skip-cluster", action="store_true", help="no standalone-cluster drain run")
    ap.add_argument("--skip-variants", action="store_true",
                    help="only the default drains (quick iterations): no at-least-once/reference/malformed/...")
    ap.add_argument("--quick", action="store_true",
                    help="short settings for iterating: backlog 120k (warm-up 40k), 10 s per rate, 20 s warm-up, "
                         "emit on arrival only, no variants, no scorer/sentiment benchmarks; runs stays 3")
    args = ap.parse_args(argv)
    if args.quick:
        args.backlog, args.drain_warmup, args.seconds, args.warmup_seconds = 120_000, 40_000, 10.0, 20.0
        args.emit, args.skip_variants, args.skip_scorer = "arrival", True, True
    out_dir = ROOT / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    from pipelines.config import load_config

    cfg = load_config()
    settings = {"emit": cfg.fraud.emit, "delivery_guarantee": cfg.flink.delivery_guarantee,
                "checkpoint_interval_ms": cfg.flink.checkpoint_interval_ms, "state_backend": cfg.flink.state_backend,
                "unaligned_checkpoints": cfg.flink.unaligned_checkpoints, "parallelism": cfg.flink.parallelism,
                "kafka_partitions": cfg.kafka.partitions, "execution_mode": cfg.fraud.execution_mode,
                "fraud_cpu_kernel": cfg.fraud.cpu_kernel, "scorer": cfg.fraud.scorer,
                "auto_watermark_interval_ms": cfg.flink.auto_watermark_interval_ms,
                "out_of_orderness_ms": cfg.fraud.out_of_orderness_ms, "fraud_bundle_time_ms": cfg.fraud.bundle_time_ms,
                "fraud_bundle_size": cfg.fraud.bundle_size, "buffer_timeout_ms": cfg.flink.buffer_timeout_ms,
                "replay_linger_ms": cfg.replay.linger_ms, "jvm_opts": cfg.flink.jvm_opts,
                "live_rates": args.rates, "seconds_per_rate": args.seconds, "runs": args.runs, "quick": args.quick,
                "warmup_seconds": args.warmup_seconds, "backlog": args.backlog, "drain_warmup": args.drain_warmup,
                "drain_delivery_guarantee": cfg.flink.delivery_guarantee,
                "drain_checkpoint_interval_ms": cfg.flink.checkpoint_interval_ms,
                "percentiles": "per transaction sent; one that never arrived counts as infinitely late "
                               "(numpy method 'higher')"}
    result: dict = {"machine": machine(), "settings": settings, "started": stamp}
    rates = [float(r) for r in args.rates.split(",")]
    if not LOAD.is_alive():
        LOAD.start()
    headline: dict = {}
    with tempfile.TemporaryDirectory(prefix="streamscore-bench-", dir=str(ROOT / ".run")
                                     if (ROOT / ".run").exists() else None) as tmp:
        tmp = Path(tmp)
        if args.only in ("all", "drain"):
            variants = [{"name": "native scorer"} for _ in range(args.runs)]
            variants += [{"name": "at-least-once, 30 s checkpoints",
                          "env": {"STREAMSCORE_FLINK__DELIVERY_GUARANTEE": "at-least-once",
                                  "STREAMSCORE_FLINK__CHECKPOINT_INTERVAL_MS": "30000"}}] if not args.skip_variants else []
            variants += [] if args.skip_variants else [
                         {"name": "reference scorer (numpy)", "env": {"STREAMSCORE_FRAUD__SCORER": "reference"}},
                         {"name": "native scorer, 10% malformed", "malformed_frac": 0.10},
                         {"name": "native scorer, emit at the watermark",
                          "env": {"STREAMSCORE_FRAUD__EMIT": "watermark"}}]
            if not args.skip_cluster and not args.skip_variants:
                variants.append({"name": "standalone cluster, parallelism 2", "cluster": True})
            if not args.skip_variants:  # the shadow's cost: every batch scored twice (issue 27), as many runs
                shadow_dir = shadow_model_dir(cfg, tmp / "shadow-models")
                variants += [{"name": "native scorer, with a shadow",
                              "env": {"STREAMSCORE_FRAUD__MODEL_DIR": str(shadow_dir)}} for _ in range(args.runs)]
            drains = bench_drain(tmp / "drain", variants, args.backlog, args.drain_warmup)
            result["fraud_drain"] = drains
            native = spread([d.get("events_per_s") for d in drains if d["variant"] == "native scorer"])
            cold = spread([d.get("events_per_s_cold") for d in drains if d["variant"] == "native scorer"])
            by_name = {d["variant"]: d for d in drains}
            headline["fraud_events_per_s"] = native["median"]
            headline["fraud_events_per_s_min"] = native["min"]
            headline["fraud_events_per_s_max"] = native["max"]
            headline["fraud_events_per_s_cold"] = cold["median"]
            shadowed = spread([d.get("events_per_s") for d in drains
                               if d["variant"] == "native scorer, with a shadow"])
            headline["fraud_events_per_s_shadow"] = shadowed["median"]
            headline["fraud_events_per_s_shadow_min"] = shadowed["min"]
            headline["fraud_events_per_s_shadow_max"] = shadowed["max"]
            startup = spread([d.get("first_score_after_s") for d in drains if d["variant"] == "native scorer"])
            headline["fraud_startup_s"] = startup["median"]
            headline["fraud_startup_s_min"] = startup["min"]
            headline["fraud_startup_s_max"] = startup["max"]
            for key, name in (("at_least_once_30s", "at-least-once, 30 s checkpoints"),
                              ("reference_scorer", "reference scorer (numpy)"),
                              ("10pct_malformed", "native scorer, 10% malformed"),
                              ("emit_watermark", "native scorer, emit at the watermark"),
                              ("cluster_p2", "standalone cluster, parallelism 2")):
                headline[f"fraud_events_per_s_{key}"] = by_name.get(name, {}).get("events_per_s")
        if args.only in ("all", "live"):
            raw_dir = out_dir / f"live-raw-{stamp}" if args.raw else None
            empty = {"summary": {}, "runs": []}
            arrival = (bench_live("arrival", rates, args.seconds, tmp / "live-arrival", runs=args.runs,
                                  warmup_s=args.warmup_seconds, raw_dir=raw_dir)
                       if args.emit in ("both", "arrival") else empty)
            wm_rates = [r for r in rates if r <= 2000]
            watermark = (bench_live("watermark", wm_rates, args.seconds, tmp / "live-watermark", runs=args.runs,
                                    warmup_s=min(args.warmup_seconds, 30.0), raw_dir=raw_dir)
                         if args.emit in ("both", "watermark") else empty)
            result["fraud_live"] = {"arrival": arrival, "watermark": watermark}

            def fig(res: dict, rate: int, path: str, q: str = "p99") -> dict:
                return res["summary"].get(f"{rate}/s {path}", {}).get(q, {"median": None, "min": None,
                                                                          "max": None})

            for key, res, rate, path in (("2k", arrival, 2000, "decision"), ("2k_committed", arrival, 2000, "committed"),
                                         ("10", arrival, 10, "decision"), ("10_committed", arrival, 10, "committed"),
                                         ("5k", arrival, 5000, "decision"), ("5k_committed", arrival, 5000, "committed"),
                                         ("2k_watermark", watermark, 2000, "decision"),
                                         ("10_watermark", watermark, 10, "decision")):
                f = fig(res, rate, path)
                headline[f"fraud_live_p99_ms_{key}"] = f["median"]
                headline[f"fraud_live_p99_ms_{key}_min"] = f["min"]
                headline[f"fraud_live_p99_ms_{key}_max"] = f["max"]
            headline["fraud_live_p50_ms_2k"] = fig(arrival, 2000, "decision", "p50")["median"]
    if args.only == "all" and not args.skip_scorer:
        subs = [("scorer", "native_speedup_b64")]
    else:
        subs = []
    if args.only == "all" and not args.quick:
        subs.append(("sentiment", "sentiment_posts_per_s"))
    for name, key in subs:
        res, value, err = run_sub_bench(f"infra.bench.{name}", out_dir / f"{name}-{stamp}.json", key)
        if res is not None:
            result[name] = res
            headline[key] = value
            if name == "sentiment":  # the live-clock figure of the analysts' path, with the fraud load beside it
                for k in ("sentiment_live_p99_ms", "sentiment_live_p99_ms_min", "sentiment_live_p99_ms_max"):
                    headline[k] = res.get(k)
        else:
            result[f"{name}_error"] = err
    whole = LOAD.window(time.mktime(time.strptime(stamp, "%Y%m%d-%H%M%S")), time.time())
    result["machine"]["load_avg_max_during_run"] = whole["load_avg_max"]
    result["machine"]["overloaded"] = whole["overloaded"]
    result["machine"]["overloaded_windows"] = (
        [d["variant"] for d in result.get("fraud_drain", []) if d.get("overloaded")]
        + [f"live {emit} run {r['run']} {p['rate']:g}/s" for emit, res in result.get("fraud_live", {}).items()
           for r in res.get("runs", []) for p in r["phases"] if p.get("overloaded")])
    headline["settings"] = {k: settings[k] for k in ("emit", "delivery_guarantee", "checkpoint_interval_ms",
                                                      "state_backend", "parallelism", "runs", "live_rates",
                                                      "backlog", "drain_warmup", "seconds_per_rate",
                                                      "warmup_seconds")}
    headline["machine"] = {k: result["machine"].get(k) for k in ("cpu", "cores", "load_avg_max_during_run",
                                                                 "overloaded")}
    result["headline"] = headline
    result = json_safe(result)
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    try:
        from infra.bench import plots

        for png in plots.write_plots(result, out_dir, f"bench-{stamp}"):
            print(f"[bench] plot {png}", flush=True)
    except Exception as e:  # noqa: BLE001 - a plot never fails the benchmark
        print(f"[bench] no plots: {e!r}", flush=True)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"[bench] results written to {shown}", flush=True)
    print(json.dumps(result["headline"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
