"""Local observability services: a real Prometheus server and the consumer-lag exporter.

    python -m infra.observability prometheus start|stop|status
    python -m infra.observability lag-exporter start|stop|status [--group G ...]
    python -m infra.observability prometheus config     # prints the config Prometheus would run with

Idempotent like infra/services.py, through pipelines/procs.py's ManagedProcess: pid files and data under ``run.dir``
(``.run/``), logs under ``.run/logs/``; the lag exporter's pid file is the one `make run` uses (``.run/pids``). Prometheus is Debian's ``/usr/bin/prometheus`` (installed with apt-get when missing and we are root),
listening on ``127.0.0.1:<metrics.prometheus_port>`` with its TSDB in ``.run/prometheus``. It runs
``infra/prometheus/prometheus.yml`` as is when the configured ports are the defaults, else a copy with the
configured ports written to ``.run/prometheus/prometheus.yml``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.services import ServiceError, log  # noqa: E402
from pipelines.config import Config, MetricsConfig, load_config  # noqa: E402
from pipelines.procs import Managed, ManagedProcess, child_env, control, http_ok, run_main  # noqa: E402

PROM_DIR = ROOT / "infra" / "prometheus"
PROM_TEMPLATE = PROM_DIR / "prometheus.yml"
RULES_DIR = PROM_DIR / "rules"
RUN = ROOT / ".run"  # run.dir's default
LOGS = RUN / "logs"
# infra/stack.py writes it while the fraud job runs on the standalone cluster (`make run CLUSTER=1`).
CLUSTER_JOB_RECORD = Path("pids") / "fraud-job.cluster.json"


# ---------------------------------------------------------------------------------------------------- config

def port_map(cfg: Config) -> dict[int, int]:
    """Default port in prometheus.yml -> the configured one (the `flink` job's targets: flink_targets)."""
    d, m = MetricsConfig(), cfg.metrics
    return {d.prometheus_port: m.prometheus_port, d.producer_port: m.producer_port, d.job_port: m.job_port,
            d.dashboard_port: m.dashboard_port, d.lag_exporter_port: m.lag_exporter_port,
            d.sentiment_job_port: m.sentiment_job_port, d.posts_producer_port: m.posts_producer_port,
            d.flink_reporter_port: m.flink_reporter_port,
            d.sentiment_flink_reporter_port: m.sentiment_flink_reporter_port, d.quality_port: m.quality_port}


def flink_targets(cfg: Config, cluster: bool = False) -> list[dict[str, Any]]:
    """The Flink reporters `make run` starts: each job's MiniCluster (one JVM, one port:
    metrics.flink_reporter_port for the fraud job, sentiment_flink_reporter_port for the sentiment job), or with
    `cluster` (`make run CLUSTER=1`) the standalone cluster's JobManager and TaskManager (flink_reporter_port and
    the next port, taken by whichever JVM binds first: `component: cluster`) in place of the fraud job's
    MiniCluster. The `service` label names the job either way."""
    m = cfg.metrics
    if cluster:
        fraud = [{"targets": [f"127.0.0.1:{m.flink_reporter_port}", f"127.0.0.1:{m.flink_reporter_port + 1}"],
                  "labels": {"service": "fraud-job", "component": "cluster"}}]
    else:
        fraud = [{"targets": [f"127.0.0.1:{m.flink_reporter_port}"],
                  "labels": {"service": "fraud-job", "component": "minicluster"}}]
    sentiment = [{"targets": [f"127.0.0.1:{m.sentiment_flink_reporter_port}"],
                  "labels": {"service": "sentiment-job", "component": "minicluster"}}]
    return fraud + sentiment


def render_config(cfg: Config, *, jobs: Iterable[str] | None = None, scrape_interval: str | None = None,
                  evaluation_interval: str | None = None, cluster: bool = False) -> dict[str, Any]:
    """prometheus.yml with the configured ports and absolute rule paths; `jobs` keeps only those scrape jobs;
    `cluster`: the fraud job runs on the standalone cluster (flink_targets)."""
    data = yaml.safe_load(PROM_TEMPLATE.read_text())
    ports = port_map(cfg)
    keep = set(jobs) if jobs is not None else None
    scrapes = []
    for sc in data.get("scrape_configs", []):
        if keep is not None and sc["job_name"] not in keep:
            continue
        if sc["job_name"] == "flink":
            sc["static_configs"] = flink_targets(cfg, cluster)
            scrapes.append(sc)
            continue
        for static in sc.get("static_configs", []):
            targets = []
            for t in static.get("targets", []):
                host, _, port = t.rpartition(":")
                targets.append(f"{host}:{ports.get(int(port), int(port))}")
            static["targets"] = targets
        scrapes.append(sc)
    data["scrape_configs"] = scrapes
    data["rule_files"] = [str((PROM_DIR / r).resolve()) if not Path(r).is_absolute() else r
                          for r in data.get("rule_files", [])]
    if scrape_interval:
        data["global"]["scrape_interval"] = scrape_interval
        data["global"]["scrape_timeout"] = scrape_interval
    if evaluation_interval:
        data["global"]["evaluation_interval"] = evaluation_interval
    return data


def ports_are_default(cfg: Config) -> bool:
    return all(k == v for k, v in port_map(cfg).items())


# ------------------------------------------------------------------------------------------------ prometheus

def ensure_prometheus_installed() -> str:
    exe = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if exe:
        return exe
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("prometheus: installing Debian's prometheus")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"], check=False,
                       env=env)
        if not shutil.which("prometheus"):
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"], check=True,
                           env=env)
        return shutil.which("prometheus") or "/usr/bin/prometheus"
    raise ServiceError("prometheus is not installed: `sudo apt-get install prometheus` (or `brew install "
                       "prometheus`, or a release from prometheus.io on PATH)")


def _http_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


@dataclass
class PrometheusServer(Managed):
    port: int
    data_dir: Path
    # None: infra/prometheus/prometheus.yml, or a generated copy in data_dir when ports differ from the defaults.
    config: dict[str, Any] | None = None
    log_dir: Path = LOGS
    retention: str = "2d"

    @classmethod
    def from_config(cls, cfg: Config, cluster: bool = False) -> "PrometheusServer":
        """`cluster`: the fraud job runs on the standalone cluster (`make run CLUSTER=1`), see flink_targets."""
        conf = None if ports_are_default(cfg) and not cluster else render_config(cfg, cluster=cluster)
        run = cfg.path(cfg.run.dir)
        return cls(cfg.metrics.prometheus_port, run / "prometheus", conf, log_dir=run / "logs")

    @property
    def proc(self) -> ManagedProcess:
        return ManagedProcess("prometheus", self.data_dir / "prometheus.pid", self.log_dir / "prometheus.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_file(self) -> Path:
        if self.config is None:
            return PROM_TEMPLATE
        path = self.data_dir / "prometheus.yml"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("# Generated by infra/observability.py from infra/prometheus/prometheus.yml; do not edit.\n"
                        + yaml.safe_dump(self.config, sort_keys=False))
        return path

    def start(self, timeout: float = 60.0) -> str:
        exe = ensure_prometheus_installed()
        if self.proc.already_running(self.port, self.url, "STREAMSCORE_METRICS__PROMETHEUS_PORT"):
            return self.url
        conf = self.config_file()
        check = subprocess.run([shutil.which("promtool") or "promtool", "check", "config", str(conf)],
                               capture_output=True, text=True) if shutil.which("promtool") else None
        if check is not None and check.returncode != 0:
            raise ServiceError(f"promtool rejects {conf}:\n{check.stdout}{check.stderr}")
        tsdb = self.data_dir / "data"
        tsdb.mkdir(parents=True, exist_ok=True)
        self.proc.start([exe, f"--config.file={conf}", f"--storage.tsdb.path={tsdb}",
                         f"--storage.tsdb.retention.time={self.retention}",
                         f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                         "--log.level=warn"])
        self.wait(timeout)
        log(f"prometheus: ready on {self.url} with {conf}")
        return self.url

    def wait(self, timeout: float = 60.0) -> None:
        self.proc.wait_ready(lambda: http_ok(f"{self.url}/-/ready"), timeout, self.url)

    def stop(self) -> None:
        self.proc.stop(timeout=20)

    def targets(self) -> list[dict[str, Any]]:
        """The active targets from /api/v1/targets (job, instance, health, lastError)."""
        data = _http_json(f"{self.url}/api/v1/targets?state=active")
        return [{"job": t["labels"].get("job"), "instance": t["labels"].get("instance"), "health": t["health"],
                 "lastError": t.get("lastError", "")} for t in data["data"]["activeTargets"]]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = _http_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        return data["data"]["result"]

    def status(self) -> str:
        if not self.running():
            return "stopped"
        try:
            ups = ", ".join(f"{t['job']}={t['health']}" for t in self.targets())
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            return f"running on {self.url} (pid {self.proc.pid}), API not answering: {exc}"
        return f"running on {self.url} (pid {self.proc.pid}); targets: {ups}"


# ---------------------------------------------------------------------------------------------- lag exporter

@dataclass
class LagExporterService(Managed):
    """infra/lag_exporter.py in the background: `make lag-exporter-up`, and `make run` (infra/stack.py) with the
    same pid file (<run.dir>/pids/lag-exporter.pid), so either's `stop` stops what the other started."""

    port: int
    bootstrap: str
    groups: list[str] = field(default_factory=list)
    interval: float = 5.0
    run_dir: Path = RUN

    @classmethod
    def from_config(cls, cfg: Config, groups: Iterable[str] = (), interval: float = 5.0) -> "LagExporterService":
        return cls(cfg.metrics.lag_exporter_port, cfg.kafka.bootstrap_servers, list(groups), interval,
                   cfg.path(cfg.run.dir))

    @property
    def proc(self) -> ManagedProcess:
        return ManagedProcess.under(self.run_dir, "lag-exporter")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def argv(self) -> list[str]:
        cmd = [sys.executable, "-m", "infra.lag_exporter", "--port", str(self.port), "--bootstrap",
               self.bootstrap, "--interval", str(self.interval)]
        for g in self.groups:
            cmd += ["--group", g]
        return cmd

    def start(self, timeout: float = 30.0) -> str:
        if self.proc.already_running(self.port, self.url, "STREAMSCORE_METRICS__LAG_EXPORTER_PORT"):
            return self.url
        self.proc.start(self.argv(), env=child_env())
        self.proc.wait_ready(lambda: http_ok(self.url), timeout, self.url)
        log(f"lag-exporter: ready on {self.url}")
        return self.url

    def stop(self) -> None:
        self.proc.stop(timeout=15)

    def status(self) -> str:
        return f"running on {self.url} (pid {self.proc.pid})" if self.running() else "stopped"


# ------------------------------------------------------------------------------------------- library entry points
# For infra/stack.py (`make run` / `make stop`).

def prometheus_start(cfg: Config | None = None, cluster: bool = False) -> str:
    return PrometheusServer.from_config(cfg or load_config(), cluster=cluster).start()


def prometheus_stop(cfg: Config | None = None) -> None:
    PrometheusServer.from_config(cfg or load_config()).stop()


def cluster_job_recorded(cfg: Config) -> bool:
    """The fraud job was put on the standalone cluster by `make run CLUSTER=1` (and not yet stopped)."""
    return (cfg.path(cfg.run.dir) / CLUSTER_JOB_RECORD).exists()


# ------------------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("service", choices=["prometheus", "lag-exporter"])
    ap.add_argument("action", nargs="?", default="start", choices=["start", "stop", "status", "config"])
    ap.add_argument("--group", action="append", default=[], help="lag-exporter: another consumer group to watch")
    ap.add_argument("--interval", type=float, default=5.0, help="lag-exporter: seconds between polls")
    ap.add_argument("--cluster", action="store_true",
                    help="prometheus: scrape the standalone cluster's Flink processes, not the fraud job's MiniCluster "
                         "(the default when `make run CLUSTER=1` runs the fraud job there)")
    args = ap.parse_args(argv)
    cfg = load_config()

    def body() -> int | None:
        if args.service == "prometheus":
            cluster = args.cluster or cluster_job_recorded(cfg)
            server = PrometheusServer.from_config(cfg, cluster=cluster)
            if args.action == "config":
                print(yaml.safe_dump(server.config or render_config(cfg, cluster=cluster), sort_keys=False), end="")
            else:
                control(server, args.action)
        else:
            svc = LagExporterService.from_config(cfg, args.group, args.interval)
            if args.action == "config":
                print(" ".join([svc.bootstrap, *svc.groups]))
            else:
                control(svc, args.action)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
