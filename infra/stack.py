"""`make run` / `make stop` / `make status`: the whole local pipeline, started in order and stopped in reverse.

Every step is idempotent: a second `up` leaves running parts alone and starts only what is missing. Processes run
detached in their own sessions with pid files under .run/pids and logs under .run/logs, so `down` can stop each
process group whole (a Flink job's JVM and Python workers included).

`up --cluster` (`make run CLUSTER=1`) runs the fraud job on the standalone Flink cluster of infra/flink_cluster.py
instead of a local MiniCluster: the cluster is started (`make cluster-up`) unless it runs already, and the unchanged
jobs/fraud_job.py is submitted with `flink run -d -p 2 -py` unless a job of that name runs there already. What was
started is written to .run/pids/fraud-job.cluster.json, so `down` cancels the job and stops the cluster only if
`up` started it (a cluster from `make cluster-up` stays up). Every other component runs as without --cluster.
"""

from __future__ import annotations

import argparse
import json
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
CLUSTER_STATE = PIDS / "fraud-job.cluster.json"
FRAUD_JOB = "jobs/fraud_job.py"
FRAUD_JOB_NAME = "streamscore-fraud"  # jobs/fraud_job.py JOB_NAME (pipeline.name): how the cluster lists it
CLUSTER_PARALLELISM = 2
LIVE_STATES = ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING")


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


def processes(cfg: Config, cluster: bool = False) -> list[Proc]:
    """The processes `up` starts, in order. `cluster`: the fraud job runs on the standalone cluster instead (see
    ClusterFraudJob), so it is not one of them."""
    py = sys.executable
    rate = os.environ.get("RATE", str(int(cfg.replay.rate)))
    procs = [] if cluster else [
        Proc("fraud-job", [py, FRAUD_JOB] if (ROOT / FRAUD_JOB).exists()
             else [py, "jobs/passthrough_job.py"], multiprocess_metrics=True)]
    procs += [
        Proc("fraud-producer", [py, "-m", "pipelines.replay.fraud", "--rate", rate, "--loop"],
             url=f"http://127.0.0.1:{cfg.metrics.producer_port}/metrics"),
    ]
    if (ROOT / "jobs" / "sentiment_job.py").exists():
        # Every process serves /metrics on its own port (infra/prometheus/prometheus.yml scrapes each): the sentiment
        # job's Python workers read metrics.job_port from the environment, so this job gets sentiment_job_port there;
        # likewise its MiniCluster's Flink reporter and REST endpoint (jobs/common.py local_cluster_settings).
        procs += [Proc("sentiment-job", [py, "jobs/sentiment_job.py"], multiprocess_metrics=True,
                       env={"STREAMSCORE_METRICS__JOB_PORT": str(cfg.metrics.sentiment_job_port),
                            "STREAMSCORE_METRICS__FLINK_REPORTER_PORT": str(cfg.metrics.sentiment_flink_reporter_port),
                            "STREAMSCORE_FLINK__LOCAL_REST_PORT": str(cfg.flink.sentiment_rest_port)}),
                  Proc("posts-producer", [py, "-m", "pipelines.replay.posts", "--rate",
                                          os.environ.get("POSTS_RATE", "50"), "--loop",
                                          "--metrics-port", str(cfg.metrics.posts_producer_port)],
                       url=f"http://127.0.0.1:{cfg.metrics.posts_producer_port}/metrics")]
    if (ROOT / "dashboard" / "server.py").exists():
        # The dashboard shows the fraud job's state and restart count from Flink's REST API: by default the fraud
        # job's MiniCluster (flink.local_rest_port); on the standalone cluster its JobManager.
        dash_args = ["--flink-rest", local_cluster(cfg).rest_url] if cluster else []
        procs.append(Proc("dashboard", [py, "-m", "dashboard.server", *dash_args],
                          url=f"http://{cfg.dashboard.host}:{cfg.dashboard.port}/?token={cfg.dashboard.token}"))
    if (ROOT / "infra" / "lag_exporter.py").exists():
        procs.append(Proc("lag-exporter", [py, "-m", "infra.lag_exporter"],
                          url=f"http://127.0.0.1:{cfg.metrics.lag_exporter_port}/metrics"))
    return procs


def local_cluster(cfg: Config):
    """The standalone cluster `make cluster-up` manages (same ports, dirs and reporter ports as
    `python -m infra.flink_cluster`), with the fraud job's multiprocess metrics folder for its Python workers."""
    from infra.flink_cluster import FlinkCluster

    p = cfg.metrics.flink_reporter_port
    return FlinkCluster(rest_port=int(os.environ.get("FLINK_REST_PORT", "8081")),
                        rpc_port=int(os.environ.get("FLINK_RPC_PORT", "6123")), prom_ports=f"{p}-{p + 1}",
                        env={"PROMETHEUS_MULTIPROC_DIR": str(METRICS / "fraud-job")})


class ClusterFraudJob:
    """The fraud job on the standalone Flink cluster (`make run CLUSTER=1`): cluster up, then `flink run -d -p 2
    -py jobs/fraud_job.py`. Its Python workers are the TaskManager's children and read the environment the
    TaskManager was started with (STREAMSCORE_* variables, PROMETHEUS_MULTIPROC_DIR)."""

    name = "fraud-job"

    def __init__(self, cfg: Config, cluster=None):
        self.cfg = cfg
        self.cluster = cluster if cluster is not None else local_cluster(cfg)

    @staticmethod
    def recorded() -> dict | None:
        try:
            return json.loads(CLUSTER_STATE.read_text())
        except (OSError, ValueError):
            return None

    def job_state(self) -> str | None:
        rec = self.recorded()
        if not rec or self.cluster.overview() is None:
            return None
        try:
            return self.cluster.job_state(rec["job_id"])
        except Exception:  # noqa: BLE001 - unknown job, REST error
            return None

    def running(self) -> bool:
        return self.job_state() in LIVE_STATES

    def submit_cmd(self) -> list[str]:
        """The `flink run` command line `start` runs (FlinkCluster.submit builds the same)."""
        return self.cluster.submit_cmd(FRAUD_JOB, [], CLUSTER_PARALLELISM)

    def start(self) -> None:
        local = Proc("fraud-job", [])
        if local.running():
            raise services.ServiceError(f"the fraud job runs on a local MiniCluster (pid {_read_pid(local.pidfile)}); "
                                        "`make stop` it first: two jobs would share the consumer group and "
                                        "transactional ids")
        prev = self.recorded() or {}
        started = not all(self.cluster.running().values())
        if started:
            folder = Path(self.cluster.env["PROMETHEUS_MULTIPROC_DIR"])
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.cluster.up()
        job_id = self.cluster.running_job(FRAUD_JOB_NAME)
        if job_id:
            log(f"fraud-job: already running on the cluster as {job_id}")
        else:
            job_id = self.cluster.submit(FRAUD_JOB, [], parallelism=CLUSTER_PARALLELISM)
        CLUSTER_STATE.parent.mkdir(parents=True, exist_ok=True)
        CLUSTER_STATE.write_text(json.dumps({
            "job_id": job_id, "rest_url": self.cluster.rest_url,
            "cluster_started": bool(started or (prev.get("cluster_started") and prev.get("rest_url")
                                                == self.cluster.rest_url))}) + "\n")

    def stop(self) -> None:
        rec = self.recorded()
        if rec is None:
            return
        if self.cluster.overview() is not None:
            try:
                if self.cluster.job_state(rec["job_id"]) in LIVE_STATES:
                    log(f"fraud-job: cancelling {rec['job_id']} on the cluster")
                    self.cluster.cancel(rec["job_id"], timeout=60)
            except Exception as exc:  # noqa: BLE001 - stop what we can
                log(f"fraud-job: could not cancel {rec['job_id']}: {exc}")
        if rec.get("cluster_started"):
            self.cluster.down()
        else:
            log(f"flink cluster at {self.cluster.rest_url}: left running (not started by `make run`)")
        CLUSTER_STATE.unlink(missing_ok=True)

    def status_line(self) -> str:
        rec = self.recorded() or {}
        state = self.job_state() or "DOWN"
        return (f"  {'fraud-job':17s} {self.cluster.rest_url + ' (cluster, p=' + str(CLUSTER_PARALLELISM) + ')':40s} "
                f"job {rec.get('job_id', '-')} {state}")


def cluster_mode(cfg: Config, cluster: bool, job: ClusterFraudJob | None = None) -> bool:
    """--cluster, or a fraud job that an earlier `up --cluster` started and that still runs there (a second `make run`
    without CLUSTER=1 must not start a local copy beside it)."""
    return cluster or (ClusterFraudJob.recorded() is not None and (job or ClusterFraudJob(cfg)).running())


def all_topics(cfg: Config) -> tuple[list[str], list[str]]:
    t = cfg.topics
    topics = [t.transactions, t.labels, t.customer_profiles, t.terminal_profiles, t.fraud_scores, t.fraud_decisions,
              t.late, t.dead_letter, t.posts, t.post_sentiment, t.sentiment_trends, t.posts_late, t.passthrough]
    return topics, [t.customer_profiles, t.terminal_profiles]


def _prometheus(action: str, cluster: bool = False) -> str | None:
    """`cluster`: the fraud job runs on the standalone cluster, so Prometheus scrapes its JobManager and TaskManager
    instead of the fraud job's MiniCluster (infra/observability.py render_config)."""
    try:
        from infra import observability
    except ImportError:
        return None
    cfg = load_config()
    if action == "start":
        observability.prometheus_start(cfg, cluster=cluster)
    elif hasattr(observability, f"prometheus_{action}"):
        getattr(observability, f"prometheus_{action}")(cfg)
    return f"http://127.0.0.1:{cfg.metrics.prometheus_port}"


def up(cfg: Config, cluster: bool = False) -> None:
    from pipelines import kafka_util

    cluster = cluster_mode(cfg, cluster)

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
    if cluster:
        ClusterFraudJob(cfg).start()
    for p in processes(cfg, cluster):
        p.start()
    prom = _prometheus("start", cluster=cluster)
    status(cfg, prom)


def down(cfg: Config) -> None:
    _prometheus("stop")
    for p in reversed(processes(cfg)):
        p.stop()
    ClusterFraudJob(cfg).stop()
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
    on_cluster = ClusterFraudJob.recorded() is not None
    if on_cluster:
        lines.append(ClusterFraudJob(cfg).status_line())
    for p in processes(cfg, cluster=on_cluster and not Proc("fraud-job", []).running()):
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
    ap.add_argument("--cluster", action="store_true",
                    help="up: run the fraud job on the standalone Flink cluster (parallelism 2), not a MiniCluster")
    args = ap.parse_args(argv)
    cfg = load_config()
    try:
        if args.action == "up":
            up(cfg, cluster=args.cluster)
        else:
            {"down": down, "status": status}[args.action](cfg)
    except services.ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
