"""A real Prometheus server scraping the real lag exporter (both started by infra/observability.py)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from infra import observability, services
from pipelines.config import Config

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists(),
                                 reason="prometheus is not installed (apt-get install prometheus)")]


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except OSError as exc:  # the API may refuse a connection for a moment
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last})")


def test_prometheus_scrapes_the_lag_exporter(kafka_bootstrap: str, run_dir: Path) -> None:
    cfg = Config().with_overrides({"metrics": {"lag_exporter_port": services.free_port(),
                                               "prometheus_port": services.free_port()}})
    exporter = observability.LagExporterService(cfg.metrics.lag_exporter_port, kafka_bootstrap,
                                                groups=["prom-test-group"], interval=1.0,
                                                run_dir=run_dir / "lag-exporter")
    conf = observability.render_config(cfg, jobs=["prometheus", "lag-exporter"], scrape_interval="1s",
                                       evaluation_interval="1s")
    # The rules are loaded for real: a broken rule file would make the server refuse to start.
    assert conf["rule_files"] and all(Path(p).parent.is_dir() for p in conf["rule_files"])
    server = observability.PrometheusServer(cfg.metrics.prometheus_port, run_dir / "prometheus", conf,
                                            log_dir=run_dir / "logs")
    exporter.start()
    try:
        exporter.start()  # idempotent
        server.start(timeout=60)
        server.start()  # idempotent
        assert server.running()

        def lag_exporter_up():
            targets = {t["job"]: t for t in server.targets()}
            return targets.get("lag-exporter", {}).get("health") == "up" and targets

        targets = _wait(lag_exporter_up, 45, "lag-exporter target up")
        assert targets["lag-exporter"]["instance"] == f"127.0.0.1:{cfg.metrics.lag_exporter_port}"

        # The exporter's own series reached the TSDB: it polled the broker at least once, successfully.
        result = _wait(lambda: server.query("streamscore_lag_exporter_poll_seconds_count > 0"), 30,
                       "poll count in Prometheus")
        assert result[0]["metric"]["job"] == "lag-exporter"
        assert _wait(lambda: server.query("streamscore_lag_exporter_last_success_timestamp_seconds > 0"), 30,
                     "last success timestamp")
        # Our alert rules were loaded and are evaluated.
        rules = observability._http_json(f"{server.url}/api/v1/rules")["data"]["groups"]
        names = {r["name"] for g in rules for r in g["rules"]}
        assert {"ConsumerLagGrowing", "FraudLatencyP99OverSLO", "FlinkJobDown"} <= names
        assert "running on" in server.status()
    finally:
        for f in (exporter.proc.logfile, server.proc.logfile):  # shown by pytest when the test fails
            print(f"--- {f}\n" + (f.read_text()[-4000:] if f.exists() else "(no log)"))
        server.stop()
        exporter.stop()
    assert not server.running() and not exporter.running()
    assert not services.port_open(cfg.metrics.prometheus_port)
    server.stop()  # idempotent
