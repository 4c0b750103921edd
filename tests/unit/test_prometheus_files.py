"""promtool validates the Prometheus config and alert rules, and runs the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.config import Config

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "infra" / "prometheus"
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    p = subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{p.stdout}\n{p.stderr}"
    return p


@needs_promtool
def test_check_config() -> None:
    out = promtool("check", "config", PROM / "prometheus.yml")
    assert "1 rule files found" in out.stdout + out.stderr


@needs_promtool
def test_check_rules() -> None:
    promtool("check", "rules", *sorted((PROM / "rules").glob("*.yml")))


@needs_promtool
def test_rule_unit_tests() -> None:
    promtool("test", "rules", *sorted((PROM / "tests").glob("*.yml")))


@needs_promtool
def test_generated_config_with_other_ports(tmp_path: Path) -> None:
    from infra.observability import render_config

    cfg = Config().with_overrides({"metrics": {"lag_exporter_port": 19404, "flink_reporter_port": 19249,
                                               "prometheus_port": 19090}})
    conf = render_config(cfg)
    targets = {sc["job_name"]: [t for s in sc["static_configs"] for t in s["targets"]] for sc in conf["scrape_configs"]}
    assert targets["lag-exporter"] == ["127.0.0.1:19404"]
    assert targets["flink"] == ["127.0.0.1:19249", "127.0.0.1:19250"]
    assert targets["prometheus"] == ["127.0.0.1:19090"]
    assert targets["producer"] == ["127.0.0.1:9401"]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(conf))
    promtool("check", "config", path)  # absolute rule paths resolve from anywhere


def test_scrape_targets_match_the_configured_ports() -> None:
    conf = yaml.safe_load((PROM / "prometheus.yml").read_text())
    m = Config().metrics
    targets = {t for sc in conf["scrape_configs"] for s in sc["static_configs"] for t in s["targets"]}
    for port in (m.producer_port, m.job_port, m.dashboard_port, m.lag_exporter_port, m.flink_reporter_port,
                 m.flink_reporter_port + 1, m.prometheus_port):
        assert f"127.0.0.1:{port}" in targets
    jobs = {sc["job_name"] for sc in conf["scrape_configs"]}
    assert {"flink", "lag-exporter", "prometheus"} <= jobs  # the alert rules name these jobs


def test_alert_rules_only_use_exported_metrics() -> None:
    from tests.unit.test_grafana_dashboard import ALLOWED_NAMES, ALLOWED_PREFIXES, exported_names, metric_names

    exported = exported_names()
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in metric_names(rule["expr"]):
                    assert name in exported or name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES), (
                        f"{path.name}: {rule.get('alert')} uses {name}, which nothing exports")
