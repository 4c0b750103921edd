"""Restarts are visible: the fraud job's local MiniCluster exports Flink's own metrics to Prometheus, a real
Prometheus scrapes them with our rules, and a restart loop fires FlinkJobRestartLoop within a minute.

The real broker, Redis, fraud job (RunningJob, as `make run` starts it but on free ports) and Prometheus
(infra/observability.py): a healthy fraud job fires no Flink alert. A job that fails every record
(restart_loop_job.py, on a MiniCluster set up by the same jobs/common.py) fires FlinkJobRestartLoop.
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from infra import observability, services
from pipelines import kafka_util
from pipelines.config import Config
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.integration.test_prometheus_server import _wait
from tests.pipeline_util import write_test_model

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists(),
                                 reason="prometheus is not installed (apt-get install prometheus)")]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _gauge(text: str, name: str, job_name: str) -> float | None:
    m = re.search(rf'^{name}{{[^}}]*job_name="{job_name}"[^}}]*}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_fraud_job_minicluster_exports_flink_metrics(kafka_bootstrap, redis_url, topic_factory, tmp_path,
                                                     run_dir):
    reporter = services.free_port()
    tx_t, lb_t, out_t = topic_factory("rep-tx"), topic_factory("rep-labels"), topic_factory("rep-scores")
    late_t, dead_t = topic_factory("rep-late"), topic_factory("rep-dead")
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_METRICS__FLINK_REPORTER_PORT": str(reporter),
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    cfg = Config().with_overrides({"metrics": {"flink_reporter_port": reporter,
                                               "prometheus_port": services.free_port()}})
    conf = observability.render_config(cfg, jobs=["flink"], scrape_interval="1s", evaluation_interval="1s")
    flink = conf["scrape_configs"][0]
    flink["static_configs"] = [s for s in flink["static_configs"] if s["labels"]["service"] == "fraud-job"]
    assert flink["static_configs"][0]["targets"] == [f"127.0.0.1:{reporter}"]
    server = observability.PrometheusServer(cfg.metrics.prometheus_port, run_dir / f"prom-{reporter}", conf,
                                            log_dir=run_dir / "logs")
    s = serde("transaction")
    producer = kafka_util.producer(kafka_bootstrap, **{"linger.ms": 5})

    def send(first: int, n: int) -> None:
        now = int(time.time() * 1000)
        for i in range(first, first + n):
            producer.produce(tx_t, s.encode({"transaction_id": i, "customer_id": i % 50, "terminal_id": i % 20,
                                             "amount": 10.0 + i % 300, "event_time": now, "produced_at": now,
                                             "currency": "EUR"}), key=str(i).encode())
        producer.flush(30)

    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                    "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", "", "--late-topic", late_t,
                    "--dead-topic", dead_t, "--group-id", f"g-{tx_t}", env=env) as job:
        send(0, 50)
        st = _wait(lambda: (x := job.status(timeout=180)).state == "RUNNING" and x, 180, "job RUNNING")
        assert st.name == "streamscore-fraud" and job.num_restarts() == 0
        # Flink's reporter in the MiniCluster's JVM: the job's state and restart count, by their real names.
        text = _wait(lambda: (t := _scrape(reporter)) and _gauge(t, "flink_jobmanager_job_runningState",
                                                                 "streamscore_fraud") == 1.0 and t, 60,
                     "reporter shows the job RUNNING")
        assert _gauge(text, "flink_jobmanager_job_numRestarts", "streamscore_fraud") == 0.0
        server.start(timeout=60)
        try:
            _wait(lambda: [t for t in server.targets() if t["health"] == "up"], 30, "flink target up")
            # A healthy job: FlinkJobDown's expression is false (not even pending) once the state was scraped.
            _wait(lambda: server.query('flink_jobmanager_job_runningState{service="fraud-job"} == 1'), 30,
                  "runningState in Prometheus")
            time.sleep(5)
            assert server.query('ALERTS{alertname=~"FlinkJobDown|FlinkJobRestartLoop|FlinkTargetDown"}') == []

            assert job.num_restarts() == 0
        finally:
            server.stop()


def test_restart_loop_fires_within_a_minute(tmp_path, run_dir):
    """A job that fails every record, on a MiniCluster set up by jobs/common.py like ours: its numRestarts rises
    in the reporter and in RunningJob.num_restarts(), and FlinkJobRestartLoop fires within a minute of its first
    restart (FlinkJobDown follows, the job never staying RUNNING)."""
    reporter = services.free_port()
    cfg = Config().with_overrides({"metrics": {"flink_reporter_port": reporter,
                                               "prometheus_port": services.free_port()}})
    conf = observability.render_config(cfg, jobs=["flink"], scrape_interval="1s", evaluation_interval="1s")
    flink = conf["scrape_configs"][0]
    flink["static_configs"] = [s for s in flink["static_configs"] if s["labels"]["service"] == "fraud-job"]
    server = observability.PrometheusServer(cfg.metrics.prometheus_port, run_dir / f"prom-{reporter}", conf,
                                            log_dir=run_dir / "logs")
    server.start(timeout=60)
    try:
        with RunningJob("tests/integration/restart_loop_job.py", tmp_path,
                        env={"STREAMSCORE_METRICS__FLINK_REPORTER_PORT": str(reporter)}) as job:
            st = _wait(lambda: (x := job.status(timeout=180)).restarts >= 1 and x, 180, "the first restart")
            # The job's start (REST, ms) is before its first restart: the alert is due within a minute of that.
            first = st.start_time_ms / 1000
            firing = _wait(lambda: server.query('ALERTS{alertname="FlinkJobRestartLoop",alertstate="firing"}'),
                           60, "FlinkJobRestartLoop firing")
            took = time.time() - first
            assert firing[0]["metric"]["job_name"] == "streamscore_restart_loop"
            assert firing[0]["metric"]["service"] == "fraud-job"
            assert job.num_restarts() >= 2
            assert _gauge(_scrape(reporter), "flink_jobmanager_job_numRestarts", "streamscore_restart_loop") >= 2
            assert took < 60, f"FlinkJobRestartLoop fired {took:.0f} s after the job started"
            print(f"FlinkJobRestartLoop fired {took:.0f} s after the job started")
    finally:
        server.stop()
