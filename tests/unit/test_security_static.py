"""Issue 24, the static half (no Docker engine or cluster needed): what docker-compose.yml, the image, the Flink
cluster settings and the k8s manifests lock down by default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.test_compose import VAR, _interpolate

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s" / "fraud-flinkdeployment.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _required(value: str) -> set[str]:
    """The variables `value` requires (${VAR:?...}): compose refuses to start while one is unset."""
    return {m.group(1) for m in VAR.finditer(value) if m.group(2) == "?"}


def test_every_published_port_binds_loopback(compose):
    published = {}
    for name, svc in compose["services"].items():
        for p in svc.get("ports", []):
            assert isinstance(p, str), f"{name}: long-form port {p!r}: give it host_ip 127.0.0.1 or use the short form"
            # Unset, the one variable that widens publishing is loopback.
            assert _interpolate(p, {}).startswith("127.0.0.1:"), f"{name}: {p!r} is published beyond 127.0.0.1"
            assert p.startswith("${STREAMSCORE_PUBLISH_HOST:-127.0.0.1}:"), f"{name}: {p!r}"
            published[name] = p
    # Flink's REST port, Prometheus and the lag exporter are not published at all.
    for name in ("jobmanager", "taskmanager", "prometheus", "lag-exporter"):
        assert name not in published, f"{name} publishes {published.get(name)}"
    assert "kafka" in published and "dashboard" in published


def test_no_service_runs_as_root(compose):
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image's last USER is root"
    for name, svc in compose["services"].items():
        user = str(svc.get("user", ""))
        assert user, f"{name}: no user (the image's default may be root)"
        uid = user.split(":")[0]
        assert uid not in ("0", "root") and uid.isdigit(), f"{name} runs as {user!r}"
        if svc.get("build") or svc.get("image", "").startswith("streamscore"):
            assert uid == users[-1].split(":")[0], f"{name}: {user} is not the image's user {users[-1]}"


def test_models_volume_is_read_only_except_for_the_trainers(compose):
    writers = {"init", "sentiment-model"}
    for name, svc in compose["services"].items():
        for v in svc.get("volumes", []):
            parts = v.split(":") if isinstance(v, str) else [v.get("source"), v.get("target")]
            if parts[0] != "models":
                continue
            assert name != "dashboard", "the dashboard mounts the models volume"
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
            assert ro or name in writers, f"{name} mounts the models volume read-write"
    assert not any(str(v).startswith("models:") for v in compose["services"]["dashboard"].get("volumes", []))
    assert not any(str(v).startswith("models:") for v in compose["x-app"].get("volumes", []))


def test_flink_web_submission_is_off(compose):
    text = (ROOT / "infra" / "flink_cluster.py").read_text()
    assert re.search(r'"web\.submit\.enable":\s*"false"', text), "infra/flink_cluster.py enables web submission"
    assert not re.search(r'"web\.submit\.enable":\s*"true"', text)
    k8s = [d for d in yaml.safe_load_all(K8S.read_text()) if d and d["kind"] == "FlinkDeployment"]
    assert k8s and all(str(d["spec"]["flinkConfiguration"]["web.submit.enable"]) == "false" for d in k8s)
    assert not compose["services"]["jobmanager"].get("ports"), "compose publishes the Flink REST port"


def test_redis_needs_a_password(compose):
    redis = compose["services"]["redis"]
    cmd = " ".join(redis["command"])
    assert "requirepass" in cmd
    assert "--protected-mode no" not in cmd
    env = redis["environment"]
    assert _required(env["REDISCLI_AUTH"]) == {"REDIS_PASSWORD"}, "the Redis password must have no default"
    # The password is not in redis-server's arguments: it reads its config from stdin.
    assert "redis-server -" in cmd and "--requirepass" not in cmd
    # The clients get it as configuration (pipelines/config.py redis.password), not in the URL.
    app = compose["x-app"]["environment"]
    assert _required(app["STREAMSCORE_REDIS__PASSWORD"]) == {"REDIS_PASSWORD"}
    for name, svc in compose["services"].items():
        for k, v in (svc.get("environment") or {}).items():
            if k == "REDIS_URL":
                assert "@" not in v, f"{name}: a password in REDIS_URL"


def test_grafana_has_no_default_admin_and_no_anonymous_access(compose):
    env = compose["services"]["grafana"]["environment"]
    assert _required(env["GF_SECURITY_ADMIN_PASSWORD"]) == {"GRAFANA_ADMIN_PASSWORD"}
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    # Grafana's provisioning files enable no anonymous access either.
    for f in (ROOT / "infra").rglob("grafana*.ini"):
        assert not re.search(r"^\s*enabled\s*=\s*true", f.read_text(), re.M), f


def test_dashboard_token_has_no_default(compose):
    env = compose["services"]["dashboard"]["environment"]
    assert _required(env["STREAMSCORE_DASHBOARD__TOKEN"]) == {"DASHBOARD_TOKEN"}
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def test_k8s_pods_run_locked_down(k8s_docs):
    dep = next(d for d in k8s_docs if d["kind"] == "FlinkDeployment")
    pod = dep["spec"]["podTemplate"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and int(psc["runAsUser"]) != 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        # Writable places a read-only root needs are volumes.
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/opt/flink/log"} <= mounts
        # No secret as a literal env value.
        for e in c.get("env", []):
            assert not re.search(r"PASSWORD$|TOKEN$|SECRET$", e["name"]), f"{e['name']} is a literal env value"


def test_k8s_network_policy_selects_the_job_pods(k8s_docs):
    dep = next(d for d in k8s_docs if d["kind"] == "FlinkDeployment")
    pols = [d for d in k8s_docs if d["kind"] == "NetworkPolicy"]
    assert pols, "no NetworkPolicy"
    pol = pols[0]
    assert pol["apiVersion"] == "networking.k8s.io/v1"
    assert pol["spec"]["podSelector"]["matchLabels"] == {"app": dep["metadata"]["name"]}
    assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # Only named peers get in: no rule without a `from`.
    assert all(rule.get("from") for rule in pol["spec"]["ingress"])
