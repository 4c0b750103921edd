"""Local observability services: a real Prometheus server and the consumer-lag exporter.

    python -m infra.observability prometheus start|stop|status
    python -m infra.observability lag-exporter start|stop|status [--group G ...]
    python -m infra.observability prometheus config     # prints the config Prometheus would run with

Idempotent like infra/services.py (whose helpers this reuses): pid files and data under ``.run/``, logs under
``.run/logs/``. Prometheus is Debian's ``/usr/bin/prometheus`` (installed with apt-get when missing and we are root),
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
import time
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

from infra.services import (ServiceError, _read_pid, _spawn, _stop_pid, log, port_open)  # noqa: E402
from pipelines.config import Config, MetricsConfig, load_config  # noqa: E402

PROM_DIR = ROOT / "infra" / "prometheus"
PROM_TEMPLATE = PROM_DIR / "prometheus.yml"
RULES_DIR = PROM_DIR / "rules"
RUN = ROOT / ".run"
LOGS = RUN / "logs"


# ---------------------------------------------------------------------------------------------------- config

def port_map(cfg: Config) -> dict[int, int]:
    """Default port in prometheus.yml -> the configured one (the `flink` job's targets: flink_targets)."""
    d, m = MetricsConfig(), cfg.metrics
    return {d.prometheus_port: m.prometheus_port, d.producer_port: m.producer_port, d.job_port: m.job_port,
            d.dashboard_port: m.dashboard_port, d.lag_exporter_port: m.lag_exporter_port,
            d.sentiment_job_port: m.sentiment_job_port, d.posts_producer_port: m.posts_producer_port,
            d.flink_reporter_port: m.flink_reporter_port,
            d.sentiment_flink_reporter_port: m.sentiment_flink_reporter_port}


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
    return fraud + (sentiment if (ROOT / "jobs" / "sentiment_job.py").exists() else [])


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
class PrometheusServer:
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
        return cls(cfg.metrics.prometheus_port, RUN / "prometheus", conf)

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "prometheus.pid"

    @property
    def logfile(self) -> Path:
        return self.log_dir / "prometheus.log"

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

    def running(self) -> bool:
        return _read_pid(self.pidfile) is not None

    def start(self, timeout: float = 60.0) -> str:
        exe = ensure_prometheus_installed()
        if self.running():
            log(f"prometheus: already running on {self.url} (pid {_read_pid(self.pidfile)})")
            return self.url
        if port_open(self.port):
            raise ServiceError(f"port {self.port} is taken; set STREAMSCORE_METRICS__PROMETHEUS_PORT")
        conf = self.config_file()
        check = subprocess.run([shutil.which("promtool") or "promtool", "check", "config", str(conf)],
                               capture_output=True, text=True) if shutil.which("promtool") else None
        if check is not None and check.returncode != 0:
            raise ServiceError(f"promtool rejects {conf}:\n{check.stdout}{check.stderr}")
        tsdb = self.data_dir / "data"
        tsdb.mkdir(parents=True, exist_ok=True)
        pid = _spawn([exe, f"--config.file={conf}", f"--storage.tsdb.path={tsdb}",
                      f"--storage.tsdb.retention.time={self.retention}",
                      f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                      "--log.level=warn"], self.logfile, self.pidfile)
        log(f"prometheus: started pid {pid} with {conf}, waiting for {self.url}")
        self.wait(timeout)
        log(f"prometheus: ready on {self.url}")
        return self.url

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.running():
                tail = self.logfile.read_text()[-3000:] if self.logfile.exists() else ""
                raise ServiceError(f"prometheus exited during start-up; last log lines:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise ServiceError(f"prometheus did not get ready on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        _stop_pid(self.pidfile, "prometheus", timeout=20)

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
            return f"running on {self.url} (pid {_read_pid(self.pidfile)}), API not answering: {exc}"
        return f"running on {self.url} (pid {_read_pid(self.pidfile)}); targets: {ups}"


# ---------------------------------------------------------------------------------------------- lag exporter

@dataclass
class LagExporterService:
    port: int
    bootstrap: str
    groups: list[str] = field(default_factory=list)
    interval: float = 5.0
    run_dir: Path = RUN / "lag-exporter"
    log_dir: Path = LOGS

    @classmethod
    def from_config(cls, cfg: Config, groups: Iterable[str] = (), interval: float = 5.0) -> "LagExporterService":
        return cls(cfg.metrics.lag_exporter_port, cfg.kafka.bootstrap_servers, list(groups), interval)

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "lag-exporter.pid"

    @property
    def logfile(self) -> Path:
        return self.log_dir / "lag-exporter.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def running(self) -> bool:
        return _read_pid(self.pidfile) is not None

    def start(self, timeout: float = 30.0) -> str:
        if self.running():
            log(f"lag-exporter: already running on {self.url} (pid {_read_pid(self.pidfile)})")
            return self.url
        if port_open(self.port):
            raise ServiceError(f"port {self.port} is taken; set STREAMSCORE_METRICS__LAG_EXPORTER_PORT")
        cmd = [sys.executable, "-m", "infra.lag_exporter", "--port", str(self.port), "--bootstrap",
               self.bootstrap, "--interval", str(self.interval)]
        for g in self.groups:
            cmd += ["--group", g]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                          if p))
        pid = _spawn(cmd, self.logfile, self.pidfile, env=env)
        log(f"lag-exporter: started pid {pid}, waiting for {self.url}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.running():
                tail = self.logfile.read_text()[-3000:] if self.logfile.exists() else ""
                raise ServiceError(f"lag-exporter exited during start-up; last log lines:\n{tail}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        log(f"lag-exporter: ready on {self.url}")
                        return self.url
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise ServiceError(f"lag-exporter did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        _stop_pid(self.pidfile, "lag-exporter", timeout=15)

    def status(self) -> str:
        return f"running on {self.url} (pid {_read_pid(self.pidfile)})" if self.running() else "stopped"


# ------------------------------------------------------------------------------------------- library entry points
# For infra/stack.py (`make run` / `make stop`): `prometheus_start(cfg)` and friends.

def prometheus_start(cfg: Config | None = None, cluster: bool = False) -> str:
    return PrometheusServer.from_config(cfg or load_config(), cluster=cluster).start()


def prometheus_stop(cfg: Config | None = None) -> None:
    PrometheusServer.from_config(cfg or load_config()).stop()


def prometheus_status(cfg: Config | None = None) -> str:
    return PrometheusServer.from_config(cfg or load_config()).status()


def lag_exporter_start(cfg: Config | None = None, groups: Iterable[str] = ()) -> str:
    return LagExporterService.from_config(cfg or load_config(), groups).start()


def lag_exporter_stop(cfg: Config | None = None) -> None:
    LagExporterService.from_config(cfg or load_config()).stop()


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
    try:
        if args.service == "prometheus":
            from infra.stack import cluster_mode

            server = PrometheusServer.from_config(cfg, cluster=cluster_mode(cfg, args.cluster))
            if args.action == "start":
                server.start()
            elif args.action == "stop":
                server.stop()
            elif args.action == "config":
                print(yaml.safe_dump(server.config or render_config(cfg, cluster=args.cluster), sort_keys=False),
                      end="")
            else:
                print(server.status())
        else:
            svc = LagExporterService.from_config(cfg, args.group, args.interval)
            if args.action == "start":
                svc.start()
            elif args.action == "stop":
                svc.stop()
            elif args.action == "config":
                print(" ".join([svc.bootstrap, *svc.groups]))
            else:
                print(svc.status())
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
