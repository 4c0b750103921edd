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
                                               "sentiment_flink_reporter_port": 19251,
                                               "prometheus_port": 19090, "sentiment_job_port": 19405,
                                               "posts_producer_port": 19406}})
    conf = render_config(cfg)
    targets = {sc["job_name"]: [t for s in sc["static_configs"] for t in s["targets"]] for sc in conf["scrape_configs"]}
    assert targets["lag-exporter"] == ["127.0.0.1:19404"]
    assert targets["flink"] == ["127.0.0.1:19249", "127.0.0.1:19251"]  # the two jobs' MiniClusters
    on_cluster = render_config(cfg, cluster=True)
    flink = next(sc for sc in on_cluster["scrape_configs"] if sc["job_name"] == "flink")["static_configs"]
    assert [(s["targets"], s["labels"]["component"]) for s in flink] == [
        (["127.0.0.1:19249", "127.0.0.1:19250"], "cluster"), (["127.0.0.1:19251"], "minicluster")]
    assert targets["prometheus"] == ["127.0.0.1:19090"]
    assert targets["producer"] == ["127.0.0.1:9401", "127.0.0.1:19406"]
    assert targets["job-workers"] == ["127.0.0.1:9402", "127.0.0.1:19405"]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(conf))
    promtool("check", "config", path)  # absolute rule paths resolve from anywhere


def test_scrape_targets_match_the_configured_ports() -> None:
    conf = yaml.safe_load((PROM / "prometheus.yml").read_text())
    m = Config().metrics
    targets = {t for sc in conf["scrape_configs"] for s in sc["static_configs"] for t in s["targets"]}
    ports = (m.producer_port, m.job_port, m.dashboard_port, m.lag_exporter_port, m.sentiment_job_port,
             m.posts_producer_port, m.flink_reporter_port, m.sentiment_flink_reporter_port, m.prometheus_port,
             m.quality_port)
    for port in ports:
        assert f"127.0.0.1:{port}" in targets
    assert len(targets) == len(ports), "a scrape target on a port no MetricsConfig key names"
    jobs = {sc["job_name"] for sc in conf["scrape_configs"]}
    assert {"flink", "lag-exporter", "prometheus"} <= jobs  # the alert rules name these jobs


def test_every_port_the_local_stack_serves_is_scraped_once() -> None:
    """`make run` (infra/stack.py): the two jobs and the two producers each get their own /metrics port, and
    Prometheus scrapes every one of them."""
    from infra import stack

    m = Config().metrics
    served = {}
    for p in stack.processes(Config()):
        if p.multiprocess_metrics:  # a Flink job: its Python workers serve metrics.job_port from the environment
            port = int(p.env.get("STREAMSCORE_METRICS__JOB_PORT", m.job_port))
        elif "--metrics-port" in p.argv:
            port = int(p.argv[p.argv.index("--metrics-port") + 1])
        else:
            port = {"fraud-producer": m.producer_port, "dashboard": m.dashboard_port,
                    "lag-exporter": m.lag_exporter_port, "quality": m.quality_port}[p.name]
        assert port not in served.values(), f"{p.name} and {served} share port {port}"
        served[p.name] = port
    expected = {"fraud-job": m.job_port, "fraud-producer": m.producer_port, "dashboard": m.dashboard_port,
                "lag-exporter": m.lag_exporter_port, "sentiment-job": m.sentiment_job_port,
                "posts-producer": m.posts_producer_port, "quality": m.quality_port}
    assert served == expected
    conf = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = [t for sc in conf["scrape_configs"] for s in sc["static_configs"] for t in s["targets"]]
    for name, port in served.items():
        assert targets.count(f"127.0.0.1:{port}") == 1, name


def test_flink_targets_are_what_make_run_starts() -> None:
    """The checked-in `flink` targets are infra/observability.py's for `make run` (a MiniCluster per job, each with
    its reporter port), and each of those is the port that job's MiniCluster is given (jobs/common.py, infra/stack.py
    for the sentiment job): a target nobody serves would keep FlinkJobDown/FlinkTargetDown firing."""
    from infra import stack
    from infra.observability import flink_targets
    from jobs.common import local_cluster_settings
    from pipelines.config import load_config

    conf = yaml.safe_load((PROM / "prometheus.yml").read_text())
    flink = next(sc for sc in conf["scrape_configs"] if sc["job_name"] == "flink")
    assert flink["static_configs"] == flink_targets(Config())
    served = {}
    for p in stack.processes(Config()):
        if p.name.endswith("-job"):
            job_cfg = load_config(environ={k: v for k, v in p.env.items() if k.startswith("STREAMSCORE_")})
            served[p.name] = local_cluster_settings(job_cfg)["metrics.reporter.prom.port"]
    scraped = {s["labels"]["service"]: s["targets"][0].rpartition(":")[2] for s in flink["static_configs"]}
    assert served == scraped


def test_every_alert_has_a_runbook_entry() -> None:
    """docs/operations.md has a section per alert (`## <AlertName>`) saying what it means, what to check, what to do."""
    text = (ROOT / "docs" / "operations.md").read_text()
    sections = {line[3:].strip() for line in text.splitlines() if line.startswith("## ")}
    alerts = {rule["alert"] for path in sorted((PROM / "rules").glob("*.yml"))
              for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule}
    assert alerts <= sections, f"alerts without a runbook entry: {sorted(alerts - sections)}"
    for alert in alerts:
        body = text.split(f"## {alert}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("Means", "Check", "Do"):
            assert f"**{part}**" in body, f"docs/operations.md {alert}: no **{part}**"


def _metric_label_names() -> set[str]:
    from prometheus_client.metrics import MetricWrapperBase

    from pipelines import metrics

    names = {label for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase)
             for label in obj._labelnames}
    # streamscore_model_info's keys (udfs/fraud_scoring.py, udfs/sentiment.py).
    return names | {"fraud_model_version", "fraud_scorer", "sentiment_model_version", "sentiment_scorer"}


def test_target_labels_do_not_overwrite_metric_labels() -> None:
    """A target label named like a label our metrics carry (`component`, `pipeline`, ...) would replace the metric's
    own value (fraud-job vs sentiment-job) in every series Prometheus stores."""
    taken = _metric_label_names()
    assert {"component", "topic", "reason", "pipeline"} <= taken
    for path in (PROM / "prometheus.yml", ROOT / "infra" / "docker" / "prometheus.yml"):
        for sc in yaml.safe_load(path.read_text())["scrape_configs"]:
            if sc["job_name"] == "flink":  # Flink's reporter series have no such labels
                continue
            for s in sc["static_configs"]:
                clash = set(s.get("labels", {})) & taken
                assert not clash, f"{path.name} {sc['job_name']}: target labels {clash} overwrite metric labels"


def test_alert_rules_only_use_exported_metrics() -> None:
    from tests.unit.test_grafana_dashboard import ALLOWED_NAMES, ALLOWED_PREFIXES, exported_names, metric_names

    exported = exported_names()
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in metric_names(rule["expr"]):
                    assert name in exported or name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES), (
                        f"{path.name}: {rule.get('alert')} uses {name}, which nothing exports")


def test_lag_exporter_watches_both_jobs_groups() -> None:
    """The lag exporter (`make run`, compose) watches the consumer groups the two jobs use by default."""
    import re

    from infra.lag_exporter import default_groups

    groups = default_groups(Config())
    assert Config().flink.group_id in groups and "streamscore-dashboard" in groups
    text = (ROOT / "jobs" / "sentiment_job.py").read_text()
    m = re.search(r'add_argument\("--group-id", default="([^"]+)"\)', text)
    assert m, "jobs/sentiment_job.py: no literal --group-id default"
    assert m.group(1) in groups
