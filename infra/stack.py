"""`make run` / `make stop` / `make status`: the whole local pipeline, started in order and stopped in reverse.

Every step is idempotent: a second `up` leaves running parts alone and starts only what is missing. Processes run
detached in their own sessions with pid files under .run/pids and logs under .run/logs, so `down` can stop each
process group whole (a Flink job's JVM and Python workers included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import services  # noqa: E402
from infra.services import KafkaBroker, RedisServer, _read_pid, _spawn, _stop_pid, log  # noqa: E402
from pipelines.config import Config, load_config  # noqa: E402

PIDS = ROOT / ".run" / "pids"
LOGS = ROOT / ".run" / "logs"
METRICS = ROOT / ".run" / "metrics"


@dataclass
class Proc:
    name: str
    argv: list[str]
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    # A Flink job: its Python workers share their metric values through a folder emptied at each start
    # (prometheus_client multiprocess mode, see pipelines/metrics.py).
    multiprocess_metrics: bool = False

    @property
    def pidfile(self) -> Path:
        return PIDS / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return LOGS / f"{self.name}.log"

    def running(self) -> bool:
        return _read_pid(self.pidfile) is not None

    def start(self) -> None:
        if self.running():
            log(f"{self.name}: already running (pid {_read_pid(self.pidfile)})")
            return
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **self.env)
        if self.multiprocess_metrics:
            folder = METRICS / self.name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        pid = _spawn(self.argv, self.logfile, self.pidfile, env=env)
        time.sleep(0.5)
        if _read_pid(self.pidfile) is None:
            tail = self.logfile.read_text(errors="replace")[-2000:]
            raise services.ServiceError(f"{self.name} exited at once; log {self.logfile}:\n{tail}")
        log(f"{self.name}: started pid {pid}, log {self.logfile.relative_to(ROOT)}")

    def stop(self) -> None:
        _stop_pid(self.pidfile, self.name, timeout=30)


def processes(cfg: Config) -> list[Proc]:
    py = sys.executable
    rate = os.environ.get("RATE", str(int(cfg.replay.rate)))
    procs = [
        Proc("fraud-job", [py, "jobs/fraud_job.py"] if (ROOT / "jobs" / "fraud_job.py").exists()
             else [py, "jobs/passthrough_job.py"], multiprocess_metrics=True),
        Proc("fraud-producer", [py, "-m", "pipelines.replay_fraud", "--rate", rate, "--loop"],
             url=f"http://127.0.0.1:{cfg.metrics.producer_port}/metrics"),
    ]
    if (ROOT / "jobs" / "sentiment_job.py").exists():
        procs += [Proc("sentiment-job", [py, "jobs/sentiment_job.py"], multiprocess_metrics=True),
                  Proc("posts-producer", [py, "-m", "pipelines.replay_posts", "--rate",
                                          os.environ.get("POSTS_RATE", "50"), "--loop"])]
    if (ROOT / "dashboard" / "server.py").exists():
        procs.append(Proc("dashboard", [py, "-m", "dashboard.server"],
                          url=f"http://{cfg.dashboard.host}:{cfg.dashboard.port}/?token={cfg.dashboard.token}"))
    if (ROOT / "pipelines" / "lag_exporter.py").exists():
        procs.append(Proc("lag-exporter", [py, "-m", "pipelines.lag_exporter"],
                          url=f"http://127.0.0.1:{cfg.metrics.lag_exporter_port}/metrics"))
    return procs


def all_topics(cfg: Config) -> tuple[list[str], list[str]]:
    t = cfg.topics
    topics = [t.transactions, t.labels, t.customer_profiles, t.terminal_profiles, t.fraud_scores, t.late,
              t.dead_letter, t.posts, t.post_sentiment, t.sentiment_trends, t.posts_late, t.passthrough]
    return topics, [t.customer_profiles, t.terminal_profiles]


def _prometheus(action: str) -> str | None:
    try:
        from infra import observability
    except ImportError:
        return None
    cfg = load_config()
    getattr(observability, f"prometheus_{action}")(cfg) if hasattr(observability, f"prometheus_{action}") else None
    return f"http://127.0.0.1:{cfg.metrics.prometheus_port}"


def up(cfg: Config) -> None:
    from pipelines import kafka_util

    services.ensure_flink_jars(cfg)
    if cfg.kafka.bootstrap:
        services.wait_for_kafka(cfg.kafka.bootstrap, 30)
    else:
        KafkaBroker.from_config(cfg).start()
    if not cfg.redis.url:
        RedisServer.from_config(cfg).start()
    topics, compacted = all_topics(cfg)
    kafka_util.ensure_topics(cfg.kafka.bootstrap_servers, topics, cfg.kafka.partitions, compacted=compacted)
    log(f"topics ready: {', '.join(topics)}")
    if (ROOT / "pipelines" / "profiles.py").exists():
        import subprocess

        subprocess.run([sys.executable, "-m", "pipelines.profiles", "publish", "--if-missing"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    for p in processes(cfg):
        p.start()
    prom = _prometheus("start")
    status(cfg, prom)


def down(cfg: Config) -> None:
    _prometheus("stop")
    for p in reversed(processes(cfg)):
        p.stop()
    if not cfg.redis.url:
        RedisServer.from_config(cfg).stop()
    if not cfg.kafka.bootstrap:
        KafkaBroker.from_config(cfg).stop()


def status(cfg: Config, prom: str | None = None) -> None:
    k = KafkaBroker.from_config(cfg)
    r = RedisServer.from_config(cfg)
    lines = [
        "",
        "streamscore is running:",
        f"  Kafka (KRaft)     {cfg.kafka.bootstrap_servers:40s} {'up' if cfg.kafka.bootstrap or k.running() else 'DOWN'}",
        f"  Redis             {cfg.redis.redis_url:40s} {'up' if cfg.redis.url or r.running() else 'DOWN'}",
    ]
    for p in processes(cfg):
        state = f"pid {_read_pid(p.pidfile)}" if p.running() else "DOWN"
        lines.append(f"  {p.name:17s} {p.url or str(p.logfile.relative_to(ROOT)):40s} {state}")
    if prom:
        lines.append(f"  Prometheus        {prom:40s}")
    lines += ["", f"  logs: .run/logs/   topics: {cfg.topics.transactions} -> {cfg.topics.fraud_scores} "
                  f"(late: {cfg.topics.late}, dead letters: {cfg.topics.dead_letter})",
              "  stop everything:  make stop", ""]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=["up", "down", "status"])
    args = ap.parse_args(argv)
    cfg = load_config()
    try:
        {"up": up, "down": down, "status": status}[args.action](cfg)
    except services.ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
