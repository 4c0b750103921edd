"""`make bench-peers`: streamscore and the peers on the same workload, in one run, on one broker and Redis.

For each system: a drain (a backlog of `--backlog` transactions with their labels produced first in compressed
data time, then the system started cold and timed on its output between the 10% and 90% marks of the part after
`--warmup` events: events/s, CPU seconds of its process tree per 10,000 events, peak RSS of the tree), then on the
live clock (event time = the wall clock when sent) a paced warm-up at 2,000 tx/s and a `--seconds` phase at
2,000 tx/s: p99 of first arrival minus event time over every transaction sent, one that has not arrived 20 s
after the phase counted as infinitely late. streamscore runs at the defaults of `make run` (its latency is read on
the decision topic, as `make bench`'s headline). Each system's load average over each window is recorded.

Peers (infra/bench/peers/*/README.md): single_consumer (one confluent-kafka consumer with numpy), quix (Quix
Streams, state in its store), pyflink_sql (a plain PyFlink job: Flink SQL OVER windows, pandas scoring UDF).

The last line is one JSON object: each system's events/s and live p99, and ratio_vs_<peer> = streamscore's
events/s over the peer's. With --docs the results JSON is also written to docs/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

STREAMSCORE_LATE = ("kept up to fraud.out_of_orderness_ms behind the watermark (emit on arrival scores every event); "
                    "beyond it routed to the late topic with the reason (kept, not scored)")
PEERS = ("quix", "pyflink_sql", "single_consumer")


def peer_module(system: str):
    """The peer's module, or None when it is not implemented. Each declares LATE (what it does with late events)
    and SETTINGS (its delivery guarantee, scorer and whatever else its figures depend on)."""
    import importlib

    try:
        return importlib.import_module(f"infra.bench.peers.{system}.peer")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(f"infra.bench.peers.{system}"):
            return None
        raise


def late_semantics(system: str):
    if system == "streamscore":
        return STREAMSCORE_LATE
    mod = peer_module(system)
    return getattr(mod, "LATE", None) if mod else None


class Proc:
    """A system under test as processes: pids for CPU and RSS, stop()."""

    def __init__(self, pids, stop, alive, output=lambda: ""):
        self.pids, self.stop, self.alive, self.output = pids, stop, alive, output


def start(system: str, b: str, redis_url: str, t: dict, workdir: Path) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    if system == "streamscore":
        from infra.jobrunner import RunningJob

        job = RunningJob("jobs/fraud_job.py", workdir, "--bootstrap", b, "--source-topic", t["tx"],
                         "--labels-topic", t["labels"], "--out-topic", t["scores"], "--decisions-topic",
                         t["decisions"], "--late-topic", t["late"], "--dead-topic", t["dead"],
                         "--group-id", f"peers-{t['tx']}", env={"STREAMSCORE_REDIS__URL": redis_url})
        return Proc([job.proc.pid], job.kill, job.alive, job.output)
    if system in PEERS:
        # Every peer is a module infra/bench/peers/<system>/peer.py with the same command line, so adding one
        # needs no change here beyond its name in PEERS.
        log = open(workdir / "peer.log", "w")
        p = subprocess.Popen([sys.executable, "-m", f"infra.bench.peers.{system}.peer", "--bootstrap", b,
                              "--tx-topic", t["tx"], "--labels-topic", t["labels"], "--out-topic", t["scores"],
                              "--redis-url", redis_url, "--group-id", f"peers-{t['tx']}"],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)

        def stop():
            import psutil

            try:  # a PyFlink peer has a JVM below it: kill the whole group
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                psutil.Process(p.pid).kill()
            log.close()

        return Proc([p.pid], stop, lambda: p.poll() is None, lambda: (workdir / "peer.log").read_text()[-3000:])
    raise ValueError(system)


def out_topic(system: str, t: dict) -> str:
    return t["decisions"] if system == "streamscore" else t["scores"]


def tree_rss(pids) -> int:
    import psutil

    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
    return total


def drain(system: str, cfg, b: str, redis_url: str, i: int, n: int, warmup: int, workdir: Path) -> dict:
    from infra.bench.run import LOAD, ArrivalCounter, drain_rate, drain_spans, wait_drain
    from pipelines import kafka_util
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    t = {k: f"{k}-{system}-drain-{i}" for k in ("tx", "labels", "scores", "decisions", "late", "dead")}
    kafka_util.ensure_topics(b, list(t.values()), cfg.kafka.partitions)
    rep = FraudReplay(cfg, ReplayOptions(rate=0, limit=warmup + n, progress_every_s=60), bootstrap=b,
                      tx_topic=t["tx"], label_topic=t["labels"]).run()
    counter = ArrivalCounter(b, out_topic(system, t))
    counter.start()
    spans = drain_spans(rep.sent, warmup)
    marks: dict[int, tuple[int, float]] = {}
    peak = 0
    t0 = time.time()
    proc = start(system, b, redis_url, t, workdir / f"drain-{system}-{i}")
    try:
        def sample_rss():
            nonlocal peak
            peak = max(peak, tree_rss(proc.pids))

        wait_drain(counter, rep.sent, spans, proc.pids, marks, alive=proc.alive, timeout_s=900, idle_s=180,
                   on_poll=sample_rss)
    finally:
        counter.stop.set()
        out = proc.output()
        proc.stop()
    arr = counter.arrivals
    row = {"backlog": rep.sent, "warmup_events": warmup, "scored": len(arr),
           "first_score_after_s": round(arr[0] - t0, 1) if arr else None, "peak_rss_mib": round(peak / 2**20, 1),
           **LOAD.window(t0, time.time())}
    lo, hi = spans["warm"]
    if len(arr) >= hi > lo and lo in marks and hi in marks:
        row["events_per_s"] = drain_rate(arr, (lo, hi))
        row["cpu_s_per_10k_events"] = round((marks[hi][1] - marks[lo][1]) / max(marks[hi][0] - marks[lo][0], 1)
                                            * 1e4, 2)
    else:
        row["events_per_s"] = None
        row["error"] = out[-1500:]
    print(f"[bench-peers] drain {system} {row}", flush=True)
    return row


def live(system: str, cfg, b: str, redis_url: str, rate: float, seconds: float, warmup_s: float,
         workdir: Path) -> dict:
    from infra.bench.run import LOAD, ScoreWatcher, latencies, percentiles, wait_settled
    from pipelines import kafka_util
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    t = {k: f"{k}-{system}-live" for k in ("tx", "labels", "scores", "decisions", "late", "dead")}
    kafka_util.ensure_topics(b, list(t.values()), cfg.kafka.partitions)
    watcher = ScoreWatcher(b, out_topic(system, t), read_committed=False)
    watcher.start()
    live_times: dict[int, int] = {}
    proc = start(system, b, redis_url, t, workdir / f"live-{system}")

    def replay(r, n, skip):
        return FraudReplay(cfg, ReplayOptions(rate=r, limit=n, skip=skip, live=True, record_ids=True,
                                              pace_labels=False, resume_labels=True, progress_every_s=60),
                           bootstrap=b, tx_topic=t["tx"], label_topic=t["labels"], live_times=live_times).run()

    try:
        warm = replay(rate, int(rate * warmup_s), 0)
        wait_settled(lambda: len(watcher.first), at_least=0.999 * warm.sent, polls=3, every_s=1.0, timeout_s=180)
        t0 = time.time()
        rep = replay(rate, int(rate * seconds), warm.sent)
        ids = rep.sent_ids
        deadline = time.time() + 20
        while time.time() < deadline and watcher.missing(ids):
            time.sleep(0.5)
        lat = latencies(ids, dict(watcher.first))
        row = {"rate": rate, "sent": len(ids), "missing": int(watcher.missing(ids)), **percentiles(lat),
               **LOAD.window(t0, time.time())}
    finally:
        watcher.stop.set()
        proc.stop()
    print(f"[bench-peers] live {system} {row}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    from infra import services
    from infra.bench.run import LOAD, json_safe, machine
    from pipelines import kafka_util
    from pipelines.config import load_config
    from pipelines.features import build_profiles, load_transactions
    from pipelines.profiles import publish

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--backlog", type=int, default=300_000, help="transactions measured per drain")
    ap.add_argument("--warmup", type=int, default=100_000, help="transactions drained before measuring")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of the 2,000 tx/s live phase")
    ap.add_argument("--warmup-seconds", type=float, default=30.0, help="live warm-up at 2,000 tx/s")
    ap.add_argument("--systems", default=",".join(("streamscore",) + PEERS))
    ap.add_argument("--docs", action="store_true", help="also write the results JSON into docs/bench/")
    args = ap.parse_args(argv)
    cfg = load_config()
    if not LOAD.is_alive():
        LOAD.start()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t_start = time.time()
    systems = args.systems.split(",")
    unknown = [s for s in systems if s != "streamscore" and s not in PEERS]
    if unknown:
        ap.error(f"unknown systems {unknown}: choose from streamscore,{','.join(PEERS)}")
    missing = [s for s in systems if s != "streamscore" and not peer_module(s)]
    if missing:
        print(f"[bench-peers] not implemented, skipped: {missing}", flush=True)
        systems = [s for s in systems if s not in missing]
    result: dict = {"machine": machine(), "started": stamp,
                    "settings": {"backlog": args.backlog, "warmup": args.warmup, "live_rate": 2000,
                                 "live_seconds": args.seconds, "live_warmup_seconds": args.warmup_seconds,
                                 "streamscore": {"delivery_guarantee": cfg.flink.delivery_guarantee,
                                                 "checkpoint_interval_ms": cfg.flink.checkpoint_interval_ms,
                                                 "state_backend": cfg.flink.state_backend, "emit": cfg.fraud.emit,
                                                 "parallelism": cfg.flink.parallelism, "scorer": cfg.fraud.scorer},
                                 **{s: getattr(peer_module(s), "SETTINGS", None) for s in systems
                                    if s != "streamscore" and peer_module(s)}},
                    "systems": {}}
    with tempfile.TemporaryDirectory(prefix="streamscore-peers-") as tmp:
        tmp = Path(tmp)
        broker = services.KafkaBroker(services.free_port(), services.free_port(), tmp / "kafka")
        redis_srv = services.RedisServer(services.free_port(), tmp / "redis")
        broker.start()
        redis_srv.start()
        try:
            b = broker.bootstrap
            kafka_util.ensure_topics(b, ["cprof", "tprof"], cfg.kafka.partitions, compacted=["cprof", "tprof"])
            hist = load_transactions(cfg.path(cfg.replay.fraud_csv), nrows=300_000)
            customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 30 * 86_400_000)
            publish(cfg, customers, terminals, bootstrap=b, redis_url=redis_srv.url, topics=("cprof", "tprof"))
            for i, s in enumerate(systems):
                d = drain(s, cfg, b, redis_srv.url, i, args.backlog, args.warmup, tmp)
                lv = live(s, cfg, b, redis_srv.url, 2000, args.seconds, args.warmup_seconds, tmp)
                result["systems"][s] = {"drain": d, "live_2k": lv, "late_events": late_semantics(s)}
        finally:
            redis_srv.stop()
            broker.stop()
    whole = LOAD.window(t_start, time.time())
    result["machine"].update(load_avg_max_during_run=whole["load_avg_max"], overloaded=whole["overloaded"])
    ss = result["systems"].get("streamscore", {}).get("drain", {}).get("events_per_s")
    line: dict = {}
    for s in ("streamscore", *PEERS):
        r = result["systems"].get(s)
        line[f"{s}_events_per_s"] = r["drain"].get("events_per_s") if r else None
        line[f"{s}_live_p99_ms_2k"] = r["live_2k"].get("p99") if r else None
    for s, key in (("quix", "ratio_vs_quix"), ("pyflink_sql", "ratio_vs_pyflink_sql"),
                   ("single_consumer", "ratio_vs_single_consumer")):
        peer = line[f"{s}_events_per_s"]
        line[key] = round(ss / peer, 2) if ss and peer else None
    line["not_implemented"] = [s for s in PEERS if not peer_module(s)]
    line["not_run"] = [s for s in PEERS if peer_module(s) and s not in result["systems"]]
    line["overloaded"] = whole["overloaded"]
    result["summary"] = line
    result = json_safe(result)
    out_dir = ROOT / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    (out_dir / f"peers-{stamp}.json").write_text(text)
    if args.docs:
        (ROOT / "docs" / "bench" / f"peers-{stamp}.json").write_text(text)
    print(f"[bench-peers] results written to {args.out}/peers-{stamp}.json", flush=True)
    print(json.dumps(json_safe(line)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
