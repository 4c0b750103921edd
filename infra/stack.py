"""`make run` / `make stop` / `make status`: the whole local pipeline, started in order and stopped in reverse.

Every step is idempotent: a second `up` leaves running parts alone and starts only what is missing. Processes run
detached in their own sessions (pipelines/procs.py's ManagedProcess) with pid files under <run.dir>/pids and logs
under <run.dir>/logs (run.dir: .run), so `down` can stop each process group whole (a Flink job's JVM and Python
workers included). The dashboard and the lag exporter have the pid files that `make dashboard-up` and `make
lag-exporter-up` use, so `down` (`make stop`) stops whatever started them, and it also stops Prometheus (`make
prometheus-up`) and the standalone cluster (`make cluster-up`).

`up --cluster` (`make run CLUSTER=1`) runs the fraud job on the standalone Flink cluster of infra/flink_cluster.py
instead of a local MiniCluster: the cluster is started (`make cluster-up`) unless it runs already, and the unchanged
jobs/fraud_job.py is submitted with `flink run -d -p 2 -py` unless a job of that name runs there already. What was
started is written to .run/pids/fraud-job.cluster.json; `down` cancels the job, then stops the cluster's JVMs.
Every other component runs as without --cluster.

`up --secure` (`make run SECURE=1`) runs the broker as infra/services.py SecuredKafkaBroker (SASL_SSL, SCRAM users,
least-privilege ACLs; storage and secrets in `<kafka.data_dir>-secured`) and gives each process its own principal
(SECURE_ROLES) through the config's kafka section in its environment, the password by file. Not with --cluster yet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import observability, services  # noqa: E402
from infra.flink_cluster import FlinkCluster  # noqa: E402
from infra.services import KafkaBroker, RedisServer, log  # noqa: E402
from pipelines.config import Config, load_config  # noqa: E402
from pipelines.procs import Managed, ManagedProcess, child_env, run_main  # noqa: E402

# run.dir's layout; main() points these at the configured run.dir.
RUN = ROOT / ".run"
PIDS = RUN / "pids"
LOGS = RUN / "logs"
METRICS = RUN / "metrics"
CLUSTER_STATE = PIDS / observability.CLUSTER_JOB_RECORD.name


def use_run_dir(cfg: Config) -> None:
    global RUN, PIDS, LOGS, METRICS, CLUSTER_STATE
    RUN = cfg.path(cfg.run.dir)
    PIDS, LOGS, METRICS = RUN / "pids", RUN / "logs", RUN / "metrics"
    CLUSTER_STATE = RUN / observability.CLUSTER_JOB_RECORD
FRAUD_JOB = "jobs/fraud_job.py"
FRAUD_JOB_NAME = "streamscore-fraud"  # jobs/fraud_job.py JOB_NAME (pipeline.name): how the cluster lists it
CLUSTER_PARALLELISM = 2
LIVE_STATES = ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING")


@dataclass
class Proc(Managed):
    name: str
    argv: list[str]
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    # A Flink job: its Python workers share their metric values through a folder emptied at each start
    # (prometheus_client multiprocess mode, see pipelines/metrics.py).
    multiprocess_metrics: bool = False

    @property
    def proc(self) -> ManagedProcess:
        return ManagedProcess(self.name, PIDS / f"{self.name}.pid", LOGS / f"{self.name}.log")

    def start(self) -> None:
        if self.running():
            log(f"{self.name}: already running (pid {self.proc.pid})")
            return
        env = child_env({"PYTHONUNBUFFERED": "1", **self.env})
        if self.multiprocess_metrics:
            folder = METRICS / self.name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        self.proc.start(self.argv, env=env)
        time.sleep(0.5)
        if not self.running():
            raise services.ServiceError(f"{self.name} exited at once; log {self.proc.logfile}:\n"
                                        f"{self.proc.log_tail(2000)}")

    def stop(self) -> None:
        self.proc.stop(timeout=30)


# `up --secure`: the Kafka principal (infra/services.py KAFKA_ROLES) each process runs as.
SECURE_ROLES = {"fraud-job": "fraud-job", "fraud-producer": "replay", "sentiment-job": "sentiment-job",
                "posts-producer": "replay", "dashboard": "dashboard", "lag-exporter": "lag-exporter",
                "quality": "quality"}


def secured_broker(cfg: Config) -> services.SecuredKafkaBroker | None:
    """The secured broker when `up --secure` started it (its pid file says so), else None."""
    broker = services.SecuredKafkaBroker.from_config(cfg)
    return broker if broker.running() else None


def processes(cfg: Config, cluster: bool = False,
              secure: services.SecuredKafkaBroker | None = None) -> list[Proc]:
    """The processes `up` starts, in order. `cluster`: the fraud job runs on the standalone cluster instead (see
    ClusterFraudJob), so it is not one of them. `secure`: each runs as its SECURE_ROLES principal of that broker."""
    py = sys.executable
    procs = [] if cluster else [Proc("fraud-job", [py, FRAUD_JOB], multiprocess_metrics=True)]
    # Every process serves /metrics on its own port (infra/prometheus/prometheus.yml scrapes each): the sentiment
    # job's Python workers read metrics.job_port from the environment, so this job gets sentiment_job_port there;
    # likewise its MiniCluster's Flink reporter and REST endpoint (jobs/common.py local_cluster_settings).
    sentiment_env = {"STREAMSCORE_METRICS__JOB_PORT": str(cfg.metrics.sentiment_job_port),
                     "STREAMSCORE_METRICS__FLINK_REPORTER_PORT": str(cfg.metrics.sentiment_flink_reporter_port),
                     "STREAMSCORE_FLINK__LOCAL_REST_PORT": str(cfg.flink.sentiment_rest_port)}
    # The dashboard shows the fraud job's state and restart count from Flink's REST API: by default the fraud
    # job's MiniCluster (flink.local_rest_port); on the standalone cluster its JobManager.
    dash_args = ["--flink-rest", local_cluster(cfg).rest_url] if cluster else []
    lag = observability.LagExporterService.from_config(cfg)
    procs += [
        Proc("fraud-producer", [py, "-m", "pipelines.replay.fraud", "--rate", str(cfg.replay.rate), "--loop"],
             url=f"http://127.0.0.1:{cfg.metrics.producer_port}/metrics"),
        Proc("sentiment-job", [py, "jobs/sentiment_job.py"], multiprocess_metrics=True, env=sentiment_env),
        Proc("posts-producer", [py, "-m", "pipelines.replay.posts", "--rate", str(cfg.replay.posts_rate), "--loop",
                                "--metrics-port", str(cfg.metrics.posts_producer_port)],
             url=f"http://127.0.0.1:{cfg.metrics.posts_producer_port}/metrics"),
        # The same pid files as `make dashboard-up` (dashboard/ctl.py) and `make lag-exporter-up`.
        Proc("dashboard", [py, "-m", "dashboard.server", *dash_args],
             # The login page, never the token (issue 24): the browser types dashboard.token into it.
             url=(f"{'https' if cfg.dashboard.tls_cert else 'http'}://{cfg.dashboard.host}:{cfg.dashboard.port}"
                  f"/login")),
        Proc(lag.proc.name, lag.argv(), url=lag.url),
        # Live model quality from the delayed labels (pipelines/quality.py): gauges on metrics.quality_port,
        # snapshots on topics.model_quality.
        Proc("quality", [py, "-m", "pipelines.quality"], url=f"http://127.0.0.1:{cfg.metrics.quality_port}/metrics"),
    ]
    if secure is not None:
        for p in procs:
            p.env = {**p.env, **secure.principal_env(SECURE_ROLES[p.name])}
    return procs


def local_cluster(cfg: Config):
    """The standalone cluster `make cluster-up` manages (same ports, dirs and reporter ports as
    `python -m infra.flink_cluster`), with the fraud job's multiprocess metrics folder for its Python workers."""
    p = cfg.metrics.flink_reporter_port
    return FlinkCluster(rest_port=cfg.flink.cluster_rest_port, rpc_port=cfg.flink.cluster_rpc_port,
                        prom_ports=f"{p}-{p + 1}", home=RUN / "flink-cluster", log_dir=LOGS / "flink-cluster",
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
            raise services.ServiceError(f"the fraud job runs on a local MiniCluster (pid {local.proc.pid}); "
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
              t.late, t.dead_letter, t.posts, t.post_sentiment, t.sentiment_trends, t.posts_late, t.passthrough,
              t.model_quality]
    return topics, [t.customer_profiles, t.terminal_profiles, t.model_quality]


def up(cfg: Config, cluster: bool = False, secure: bool = False) -> None:
    import os

    from pipelines import kafka_util

    cluster = cluster_mode(cfg, cluster)
    if secure and (cluster or cfg.kafka.bootstrap):
        raise services.ServiceError("--secure runs the local secured broker: not with --cluster nor KAFKA_BOOTSTRAP")

    services.ensure_flink_jars(cfg)
    broker = None
    if cfg.kafka.bootstrap:
        services.wait_for_kafka(cfg.kafka.bootstrap, 30)
    elif secure:
        if KafkaBroker.from_config(cfg).running():
            raise services.ServiceError("the plaintext broker runs on kafka.port: `make stop` first")
        broker = services.SecuredKafkaBroker.from_config(cfg)
        broker.start()
        # This process creates the topics as the admin (kafka_util's clients read the config's kafka section).
        os.environ.update(broker.principal_env(services.KAFKA_ADMIN))
    else:
        if secured_broker(cfg) is not None:
            raise services.ServiceError("the secured broker runs on kafka.port: `make run SECURE=1`, or `make stop`")
        KafkaBroker.from_config(cfg).start()
    if not cfg.redis.url:
        RedisServer.from_config(cfg).start()
    topics, compacted = all_topics(cfg)
    kafka_util.ensure_topics(cfg.kafka.bootstrap_servers, topics, cfg.kafka.partitions, compacted=compacted)
    # The fraud job's control topic (pipelines/rules.py): one partition, compacted, each rule set under its own key.
    kafka_util.ensure_topics(cfg.kafka.bootstrap_servers, [cfg.topics.fraud_control], 1,
                             compacted=[cfg.topics.fraud_control])
    log(f"topics ready: {', '.join(topics)}")
    subprocess.run([sys.executable, "-m", "pipelines.profiles", "publish", "--if-missing"], cwd=ROOT,
                   env=child_env(broker.principal_env("replay") if broker else None), check=True)
    if cluster:
        ClusterFraudJob(cfg).start()
    for p in processes(cfg, cluster, secure=broker):
        p.start()
    # `cluster`: Prometheus scrapes the standalone cluster's JobManager and TaskManager instead of the fraud job's
    # MiniCluster (infra/observability.py render_config).
    observability.PrometheusServer.from_config(cfg, cluster=cluster).start()
    status(cfg)


def down(cfg: Config) -> None:
    """Stops everything any make target started under run.dir: `make run`'s processes (the dashboard and lag
    exporter of `make dashboard-up` / `make lag-exporter-up` share their pid files), Prometheus, the cluster job and
    the standalone cluster (`make cluster-up` too), then Redis and Kafka."""
    observability.PrometheusServer.from_config(cfg).stop()
    for p in reversed(processes(cfg)):
        p.stop()
    ClusterFraudJob(cfg).stop()
    local_cluster(cfg).down()
    if not cfg.redis.url:
        RedisServer.from_config(cfg).stop()
    if not cfg.kafka.bootstrap:
        KafkaBroker.from_config(cfg).stop()
        services.SecuredKafkaBroker.from_config(cfg).stop()


def status(cfg: Config) -> None:
    k = secured_broker(cfg) or KafkaBroker.from_config(cfg)
    r = RedisServer.from_config(cfg)
    lines = [
        "",
        "streamscore is running:",
        f"  Kafka (KRaft)     {cfg.kafka.bootstrap_servers:40s} {'up' if cfg.kafka.bootstrap or k.running() else 'DOWN'}"
        f"{' (SASL_SSL, ACLs)' if isinstance(k, services.SecuredKafkaBroker) else ''}",
        f"  Redis             {cfg.redis.redis_url:40s} {'up' if cfg.redis.url or r.running() else 'DOWN'}",
    ]
    on_cluster = ClusterFraudJob.recorded() is not None
    if on_cluster:
        lines.append(ClusterFraudJob(cfg).status_line())
    for p in processes(cfg, cluster=on_cluster and not Proc("fraud-job", []).running()):
        pid = p.proc.pid
        lines.append(f"  {p.name:17s} {p.url or str(p.proc.logfile):40s} {f'pid {pid}' if pid else 'DOWN'}")
    prom = observability.PrometheusServer.from_config(cfg)
    lines.append(f"  Prometheus        {prom.url:40s} {f'pid {prom.proc.pid}' if prom.running() else 'DOWN'}")
    lines += ["", f"  logs: {LOGS}/   topics: {cfg.topics.transactions} -> {cfg.topics.fraud_scores} "
                  f"(late: {cfg.topics.late}, dead letters: {cfg.topics.dead_letter})",
              "  stop everything:  make stop", ""]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--cluster", action="store_true",
                    help="up: run the fraud job on the standalone Flink cluster (parallelism 2), not a MiniCluster")
    ap.add_argument("--secure", action="store_true",
                    help="up: the SASL_SSL broker with ACLs, each process as its own principal")
    args = ap.parse_args(argv)
    cfg = load_config()
    use_run_dir(cfg)

    def body() -> int | None:
        if args.action == "up":
            up(cfg, cluster=args.cluster, secure=args.secure)
        else:
            {"down": down, "status": status}[args.action](cfg)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
