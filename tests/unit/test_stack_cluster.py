"""`make run CLUSTER=1`: the make line, the `flink run` command line, and what `up --cluster` / `down` do to the
cluster (a recording stand-in for FlinkCluster here; the real cluster is exercised by the integration tests and by
`make run CLUSTER=1` itself)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infra import stack
from infra.flink_cluster import FlinkCluster, flink_home
from pipelines.config import Config

ROOT = Path(__file__).resolve().parents[2]


def make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("no make")
    # -o install -o model: print only the run recipe, never the install steps.
    return subprocess.run(["make", "-n", "--no-print-directory", "-o", "install", "-o", "model", "run", *args],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_make_run_cluster_passes_cluster_flag():
    assert "-m infra.stack up --cluster" in make_dry_run("CLUSTER=1")
    for plain in (make_dry_run(), make_dry_run("CLUSTER=0")):
        assert "-m infra.stack up" in plain and "--cluster" not in plain


def test_submit_command_line_is_flink_run_py_parallelism_2():
    cmd = stack.ClusterFraudJob(Config()).submit_cmd()
    assert cmd[:2] == ["bash", str(flink_home() / "bin" / "flink")]
    assert cmd[2:8] == ["run", "-m", "127.0.0.1:8081", "-d", "-p", "2"]
    assert cmd[-2:] == ["-py", str(ROOT / "jobs" / "fraud_job.py")]  # the unchanged job file, no job arguments


def test_job_name_matches_the_job():
    from jobs.fraud_job import JOB_NAME

    assert stack.FRAUD_JOB_NAME == JOB_NAME


def test_cluster_mode_leaves_the_local_job_out():
    names = [p.name for p in stack.processes(Config(), cluster=True)]
    assert "fraud-job" not in names and "fraud-producer" in names
    assert "fraud-job" in [p.name for p in stack.processes(Config())]


class RecordingCluster(FlinkCluster):
    """FlinkCluster with its process and REST side replaced by a record of the calls."""

    def __init__(self, tmp: Path, up_already: bool = False, job_running: bool = False):
        super().__init__(home=tmp / "fc", log_dir=tmp / "fc-logs",
                         env={"PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics" / "fraud-job")})
        self.calls: list[tuple] = []
        self.is_up = up_already
        self.job = "a" * 32 if job_running else None

    def running(self):
        return {"jobmanager": 1 if self.is_up else None, "taskmanager": 1 if self.is_up else None}

    def up(self, timeout=120.0):
        self.calls.append(("up",))
        self.is_up = True
        return self.rest_url

    def overview(self, timeout=2.0):
        return {"taskmanagers": 1} if self.is_up else None

    def running_job(self, name):
        self.calls.append(("running_job", name))
        return self.job

    def submit(self, job, args=None, *, parallelism=2, env=None, pyfs=None, timeout=180.0):
        self.calls.append(("submit", job, list(args or []), parallelism))
        self.job = "b" * 32
        return self.job

    def job_state(self, job_id):
        return "RUNNING" if job_id == self.job else "CANCELED"

    def cancel(self, job_id, timeout=60.0):
        self.calls.append(("cancel", job_id))
        self.job = None
        return "CANCELED"

    def down(self):
        self.calls.append(("down",))
        self.is_up = False


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "PIDS", tmp_path / "pids")
    monkeypatch.setattr(stack, "CLUSTER_STATE", tmp_path / "pids" / "fraud-job.cluster.json")
    return tmp_path


def test_up_starts_cluster_and_submits_then_down_cancels_and_stops_it(state):
    fc = RecordingCluster(state)
    job = stack.ClusterFraudJob(Config(), fc)
    job.start()
    assert fc.calls == [("up",), ("running_job", "streamscore-fraud"), ("submit", "jobs/fraud_job.py", [], 2)]
    assert (state / "metrics" / "fraud-job").is_dir()  # fresh multiprocess metrics folder for the workers
    assert job.recorded()["cluster_started"] is True and job.running()
    assert stack.cluster_mode(Config(), False, job)  # a later plain `make run` keeps the job on the cluster

    fc.calls.clear()
    job.start()  # idempotent: a second `make run CLUSTER=1` submits nothing
    assert ("submit", "jobs/fraud_job.py", [], 2) not in fc.calls
    assert job.recorded()["cluster_started"] is True

    stack.ClusterFraudJob(Config(), fc).stop()
    assert ("cancel", "b" * 32) in fc.calls and fc.calls[-1] == ("down",)
    assert job.recorded() is None and not stack.cluster_mode(Config(), False, job)


def test_down_leaves_a_cluster_it_did_not_start(state):
    fc = RecordingCluster(state, up_already=True, job_running=True)
    job = stack.ClusterFraudJob(Config(), fc)
    job.start()  # `make cluster-up` + `make cluster-submit` earlier: the running job is adopted, not resubmitted
    assert [c[0] for c in fc.calls] == ["up", "running_job"]
    assert job.recorded() == {"job_id": "a" * 32, "rest_url": fc.rest_url, "cluster_started": False}
    job.stop()
    assert ("cancel", "a" * 32) in fc.calls and ("down",) not in fc.calls


def test_refuses_while_a_local_job_runs(state):
    (state / "pids").mkdir()
    (state / "pids" / "fraud-job.pid").write_text(str(__import__("os").getpid()))
    fc = RecordingCluster(state)
    with pytest.raises(stack.services.ServiceError, match="local MiniCluster"):
        stack.ClusterFraudJob(Config(), fc).start()
    assert fc.calls == []


def test_stop_without_cluster_job_is_a_no_op(state):
    fc = RecordingCluster(state)
    stack.ClusterFraudJob(Config(), fc).stop()
    assert fc.calls == []
