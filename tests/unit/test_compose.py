"""docker-compose.yml: `docker compose config -q` when the compose plugin works here, and always a structural check
(no Docker engine needed): every service has an image or a build, ports are well-formed, stateful services have
healthchecks, depends_on names existing services with valid conditions, and mounted local paths exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
STATEFUL = {"kafka", "redis", "jobmanager", "taskmanager", "prometheus", "grafana", "dashboard"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
PORT = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?(\d{1,5})(?:-(\d{1,5}))?:(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp))?$")
VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: str) -> str:
    return VAR.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_plugin() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed here; "
                                                  "the structural checks below still run")
def test_docker_compose_config_is_valid():
    proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_service_has_an_image_or_build(compose):
    services = compose["services"]
    assert {"kafka", "redis", "jobmanager", "taskmanager", "job-submitter", "producer", "dashboard",
            "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: no image and no build"
        build = svc.get("build")
        if build:
            ctx = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert ctx.is_dir(), f"{name}: build context {ctx} missing"
            if isinstance(build, dict) and build.get("dockerfile"):
                assert (ctx / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"


def test_ports_are_well_formed(compose):
    seen: dict[str, str] = {}
    for name, svc in compose["services"].items():
        for p in svc.get("ports", []):
            m = PORT.match(str(p))
            assert m, f"{name}: bad port mapping {p!r}"
            for g in (1, 2, 3, 4):
                if m.group(g):
                    assert 0 < int(m.group(g)) < 65536, f"{name}: port out of range in {p!r}"
            host = m.group(1)
            assert host not in seen, f"host port {host} published by both {seen.get(host)} and {name}"
            seen[host] = name


def test_stateful_services_have_healthchecks(compose):
    for name in STATEFUL:
        hc = compose["services"][name].get("healthcheck")
        assert hc and hc.get("test"), f"{name}: no healthcheck"
        assert hc["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must start with CMD/CMD-SHELL"


def test_depends_on_names_existing_services(compose):
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
        for dep, spec in items:
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert dep != name
            if spec:
                assert spec.get("condition", "service_started") in CONDITIONS, f"{name} -> {dep}: {spec}"
                if spec.get("condition") == "service_healthy":
                    assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no check"
    # The job waits for the cluster and the broker to be healthy.
    sub = services["job-submitter"]["depends_on"]
    assert sub["taskmanager"]["condition"] == "service_healthy"
    assert sub["kafka"]["condition"] == "service_healthy"


def test_mounted_local_paths_exist(compose):
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for v in svc.get("volumes", []):
            src = (v.get("source") if isinstance(v, dict) else _interpolate(v).split(":")[0])
            if src in named:
                continue
            assert src.startswith((".", "/")), f"{name}: volume {src!r} is neither a named volume nor a path"
            path = (ROOT / src).resolve()
            assert path.exists(), f"{name}: mounted path {src} ({path}) does not exist"


def test_services_reach_each_other_by_name(compose):
    s = compose["services"]
    for name in ("jobmanager", "taskmanager", "job-submitter", "producer", "dashboard"):
        env = s[name]["environment"]
        assert env["KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
    assert "infra.flink_cluster" in " ".join(s["job-submitter"]["command"])
    assert "jobs/fraud_job.py" in s["job-submitter"]["command"]
    assert s["producer"]["command"][-2:] == ["pipelines.replay_fraud", "--loop"]
    assert s["dashboard"]["command"][-1] == "dashboard.server"


def test_metrics_endpoints_are_reachable_from_prometheus(compose):
    """Prometheus runs in its own container: every service it scrapes must serve /metrics on all interfaces, and the
    job's Python workers need an empty folder to share their values in (pipelines/metrics.py)."""
    s = compose["services"]
    prom = yaml.safe_load((ROOT / "infra" / "docker" / "prometheus.yml").read_text())
    scraped = {t.split(":")[0] for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    for name in sorted(scraped & set(s) - {"prometheus", "jobmanager"}):
        assert s[name]["environment"]["STREAMSCORE_METRICS__HOST"] == "0.0.0.0", name
    tm = s["taskmanager"]
    assert tm["environment"]["STREAMSCORE_METRICS__JOB_PORT"] == "9402"
    assert tm["environment"]["PROMETHEUS_MULTIPROC_DIR"] in tm["tmpfs"]


def test_dockerfile_builds_what_the_services_need():
    text = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "openjdk-17-jre-headless" in text
    assert "-r requirements.txt -c constraints.txt" in text
    assert "pip install -q --no-build-isolation ./cpp_ext" in text
    assert "flink-jars" in text
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repo"


def test_compose_configs_point_at_services():
    prom = yaml.safe_load((ROOT / "infra" / "docker" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "jobmanager:9249" in targets and "taskmanager:9249" in targets
    assert not any(t.startswith("127.0.0.1") for t in targets)
    ds = yaml.safe_load((ROOT / "infra" / "docker" / "grafana" / "datasources" / "prometheus.yml").read_text())
    host = yaml.safe_load((ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == host["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
