"""infra/k8s/fraud-flinkdeployment.yaml: valid YAML, a FlinkDeployment for the Flink Kubernetes Operator that runs the
PyFlink fraud job with checkpoints on a volume, parallelism, resources and savepoint upgrades."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "infra" / "k8s" / "fraud-flinkdeployment.yaml"


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


@pytest.fixture(scope="module")
def deployment(docs) -> dict:
    found = [d for d in docs if d.get("kind") == "FlinkDeployment"]
    assert len(found) == 1
    return found[0]


def test_every_document_is_a_kubernetes_object(docs):
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d


def test_flinkdeployment_header(deployment):
    assert deployment["apiVersion"] == "flink.apache.org/v1beta1"
    spec = deployment["spec"]
    assert spec["image"] and ":" in spec["image"]
    assert spec["flinkVersion"].startswith("v2_")


def test_pyflink_job(deployment):
    job = deployment["spec"]["job"]
    assert job["jarURI"] == "local:///opt/flink/opt/flink-python-2.3.0.jar"
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    args = job["args"]
    assert args[args.index("-py") + 1] == "/opt/streamscore/jobs/fraud_job.py"
    assert int(job["parallelism"]) >= 2
    assert job["upgradeMode"] == "savepoint"
    assert (ROOT / "jobs" / "fraud_job.py").exists()


def test_checkpoints_on_a_mounted_volume(deployment, docs):
    spec = deployment["spec"]
    conf = spec["flinkConfiguration"]
    ck = conf["execution.checkpointing.dir"]
    assert ck.startswith(("file:///", "s3://", "s3a://"))
    assert conf["execution.checkpointing.savepoint-dir"]
    assert conf["execution.checkpointing.interval"]
    if ck.startswith("file:///"):
        path = ck[len("file://"):]
        pod = spec["podTemplate"]["spec"]
        mounts = pod["containers"][0]["volumeMounts"]
        mount = next(m for m in mounts if path.startswith(m["mountPath"]))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        claim = volume["persistentVolumeClaim"]["claimName"]
        pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim)
        # JobManager and TaskManager pods both write checkpoint files there.
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_resources(deployment):
    spec = deployment["spec"]
    for role in ("jobManager", "taskManager"):
        res = spec[role]["resource"]
        assert float(res["cpu"]) > 0 and res["memory"].endswith(("m", "g", "Mi", "Gi"))
    slots = int(spec["flinkConfiguration"]["taskmanager.numberOfTaskSlots"])
    replicas = int(spec["taskManager"].get("replicas", 1))
    assert slots * replicas >= int(spec["job"]["parallelism"])


def test_services_by_name(deployment):
    env = {e["name"]: e["value"] for e in deployment["spec"]["podTemplate"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_BOOTSTRAP"] == "kafka:9093"  # SASL_SSL (issue 24)
    assert env["REDIS_URL"].startswith("redis://redis:")
    # The job file sets its parallelism from its config, which must match the deployment's.
    assert int(env["STREAMSCORE_FLINK__PARALLELISM"]) == int(deployment["spec"]["job"]["parallelism"])


def test_taskmanager_jvm_options_are_the_configs(deployment):
    """The manifest cannot read our config: its TaskManager JVM options are written out and must stay the same."""
    from pipelines.config import FlinkConfig

    assert deployment["spec"]["flinkConfiguration"]["env.java.opts.taskmanager"] == FlinkConfig().jvm_opts
