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
STATEFUL = {"kafka", "redis", "jobmanager", "taskmanager", "prometheus", "grafana", "dashboard", "lag-exporter",
            "posts-producer"}
ONE_SHOT = {"init", "sentiment-model"}
SUBMITTERS = {"job-submitter": ("streamscore-fraud", "jobs/fraud_job.py"),
              "sentiment-job-submitter": ("streamscore-sentiment", "jobs/sentiment_job.py")}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
PORT = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?(\d{1,5})(?:-(\d{1,5}))?:(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp))?$")
VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def _interpolate(value: str, environ=None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (a required one reads as "<VAR>" when unset)."""
    environ = os.environ if environ is None else environ

    def sub(m):
        if environ.get(m.group(1)):
            return environ[m.group(1)]
        return f"<{m.group(1)}>" if m.group(2) == "?" else (m.group(3) or "")
    return VAR.sub(sub, value)


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
    assert {"kafka", "redis", "jobmanager", "taskmanager", "job-submitter", "sentiment-job-submitter",
            "sentiment-model", "producer", "posts-producer", "lag-exporter", "dashboard", "prometheus",
            "grafana"} <= set(services)
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
            m = PORT.match(_interpolate(str(p), {}))
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
    # The jobs wait for the cluster and the broker to be healthy; the sentiment job also for its model.
    for name in SUBMITTERS:
        sub = services[name]["depends_on"]
        assert sub["taskmanager"]["condition"] == "service_healthy", name
        assert sub["kafka"]["condition"] == "service_healthy", name
    assert services["sentiment-job-submitter"]["depends_on"]["sentiment-model"]["condition"] == \
        "service_completed_successfully"
    # Producers and the lag exporter start once the topics exist.
    for name in ("producer", "posts-producer", "lag-exporter"):
        deps = services[name]["depends_on"]
        assert deps["init"]["condition"] == "service_completed_successfully", name
        assert deps["kafka"]["condition"] == "service_healthy", name
    # Whatever waits for a one-shot service to complete must not have it restart forever.
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name


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
    for name in ("sentiment-job-submitter", "posts-producer", "lag-exporter"):
        assert s[name]["environment"]["KAFKA_BOOTSTRAP"] == "kafka:9092", name
    assert s["producer"]["command"][-2:] == ["pipelines.replay.fraud", "--loop"]
    assert s["posts-producer"]["command"][:3] == ["python", "-m", "pipelines.replay.posts"]
    assert "--loop" in s["posts-producer"]["command"]
    assert s["lag-exporter"]["command"] == ["python", "-m", "infra.lag_exporter"]
    assert "pipelines.train.sentiment" in " ".join(s["sentiment-model"]["command"])
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


def test_job_submitters_submit_the_unchanged_job_files(compose):
    """Each submitter runs `python -m infra.flink_cluster --if-absent <pipeline.name> --wait N submit <job file>
    --restore latest`: the name is the one the job registers (so a restarted submitter finds the running job), the
    job file takes --restore, and the TaskManager has a slot for every job at the parallelism they are submitted at."""
    import ast

    s = compose["services"]
    for svc, (job_name, job_file) in SUBMITTERS.items():
        cmd = s[svc]["command"]
        assert cmd[:3] == ["python", "-m", "infra.flink_cluster"], svc
        assert cmd[cmd.index("--if-absent") + 1] == job_name, svc
        assert float(cmd[cmd.index("--wait") + 1]) > 0, svc
        assert cmd[cmd.index("submit") + 1:] == [job_file, "--restore", "latest"], svc
        tree = ast.parse((ROOT / job_file).read_text())
        names = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        assert names.get("JOB_NAME") == job_name, f"{job_file}: JOB_NAME is {names.get('JOB_NAME')}"
        assert '"--restore"' in (ROOT / job_file).read_text(), f"{job_file} takes no --restore"
        vols = {v.split(":")[0] for v in s[svc]["volumes"]}
        assert {"flink-checkpoints", "models"} <= vols, svc
    tm = s["taskmanager"]["command"]
    parallelism = 2  # infra.flink_cluster submit's default -p
    assert int(tm[tm.index("--slots") + 1]) >= parallelism * len(SUBMITTERS)


def test_every_metrics_endpoint_is_scraped(compose):
    """Prometheus scrapes each service that serves /metrics on the port that service serves."""
    s = compose["services"]
    prom = yaml.safe_load((ROOT / "infra" / "docker" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    from pipelines.config import MetricsConfig

    m = MetricsConfig()
    expected = {f"producer:{m.producer_port}", f"taskmanager:{m.job_port}", f"dashboard:{m.dashboard_port}",
                f"lag-exporter:{m.lag_exporter_port}", f"posts-producer:{m.posts_producer_port}",
                f"jobmanager:{m.flink_reporter_port}", f"taskmanager:{m.flink_reporter_port}"}
    assert expected <= targets
    pp = s["posts-producer"]["command"]
    assert int(pp[pp.index("--metrics-port") + 1]) == m.posts_producer_port
    # The healthchecks of the metrics-only services probe the port Prometheus scrapes.
    assert f":{m.posts_producer_port}/metrics" in " ".join(s["posts-producer"]["healthcheck"]["test"])
    assert f":{m.lag_exporter_port}/metrics" in " ".join(s["lag-exporter"]["healthcheck"]["test"])
    for t in targets:
        host = t.split(":")[0]
        assert host in s or host == "localhost", f"Prometheus scrapes {t}, which is no compose service"
