"""Runs our PyFlink jobs as real subprocesses on the local MiniCluster: used by the tests and the benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def job_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["STREAMSCORE_FLINK__LOG_DIR"] = str(tmp_path / "flink-logs")
    env["STREAMSCORE_FLINK__CHECKPOINT_DIR"] = str(tmp_path / "checkpoints")
    env["STREAMSCORE_FLINK__CHECKPOINT_INTERVAL_MS"] = env.get("STREAMSCORE_FLINK__CHECKPOINT_INTERVAL_MS", "1000")
    # Jobs in tests export no Prometheus endpoint of their own (ports would clash between tests), neither from
    # their Python workers nor from Flink's reporter; their MiniCluster's REST endpoint is on a random port unless
    # RunningJob gives it one.
    env["STREAMSCORE_METRICS__JOB_PORT"] = "0"
    env["STREAMSCORE_METRICS__FLINK_REPORTER_PORT"] = "0"
    env["STREAMSCORE_FLINK__LOCAL_REST_PORT"] = "0"
    env.update(extra or {})
    if env["STREAMSCORE_METRICS__JOB_PORT"] != "0":
        # A job that serves /metrics: its Python workers are several processes, and the one that binds the port
        # serves the values of all of them from this folder (pipelines/metrics.py); emptied at each start.
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prometheus-multiproc"))
    return env


def _fresh_metrics_dir(env: dict[str, str]) -> None:
    """Empties the multiprocess metrics folder before a job starts (values of an earlier run would add up)."""
    folder = env.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def _log_tail(tmp_path: Path, out: str) -> str:
    logs = sorted((tmp_path / "flink-logs").glob("*")) if (tmp_path / "flink-logs").exists() else []
    tail = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs[-2:])
    return f"{out[-5000:]}\n--- flink logs ---\n{tail}"


def run_job(script: str, tmp_path: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None):
    """Runs a bounded job to completion; fails with its output and logs if it does not finish cleanly."""
    full_env = job_env(tmp_path, env)
    _fresh_metrics_dir(full_env)
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\n{_log_tail(tmp_path, proc.stdout)}")
    return proc


class RunningJob:
    """An unbounded job in the background, in its own process group so it can be killed whole.

    Its MiniCluster's REST endpoint listens on a free loopback port (`rest_url`; or the
    STREAMSCORE_FLINK__LOCAL_REST_PORT given in `env`), so a test can read the job's state:

    - `num_restarts()`: how many times Flink has restarted the running job (its `numRestarts` metric, read from
      the REST API). 0 for a job that never failed; a test that requires "the job never restarts" asserts
      `job.num_restarts() == 0` after its traffic (a restart loop shows as a growing number). Waits up to
      `timeout` seconds for the job to be submitted; raises if the job or its endpoint is gone.
    - `status()`: the job's id, name, state (RUNNING, RESTARTING, ...) and restart count (pipelines/flink_rest.py).
    """

    def __init__(self, script: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
        from infra.services import free_port

        self.tmp_path = tmp_path
        self.log = open(tmp_path / f"{Path(script).stem}.out", "ab")
        env = dict(env or {})
        if env.get("STREAMSCORE_FLINK__LOCAL_REST_PORT", "0") == "0":
            env["STREAMSCORE_FLINK__LOCAL_REST_PORT"] = str(free_port())
        self.rest_url = f"http://127.0.0.1:{env['STREAMSCORE_FLINK__LOCAL_REST_PORT']}"
        full_env = job_env(tmp_path, env)
        _fresh_metrics_dir(full_env)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT,
                                     env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self, timeout: float = 120.0):
        """The job's pipelines.flink_rest.JobStatus, once its MiniCluster answers and lists it (up to `timeout`
        seconds: the JVM, the Python workers and the first job take a while to start)."""
        from pipelines.flink_rest import FlinkRestError, job_status

        deadline = time.time() + timeout
        while True:
            if not self.alive():
                raise AssertionError(f"the job exited ({self.proc.returncode})\n{self.output()}")
            try:
                st = job_status(self.rest_url)
                if st is not None:
                    return st
            except FlinkRestError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"no job on {self.rest_url} within {timeout:.0f}s\n{self.output()}")
            time.sleep(0.5)

    def num_restarts(self, timeout: float = 120.0) -> int:
        """How many times Flink restarted this job since it was submitted (its numRestarts metric)."""
        return self.status(timeout).restarts

    def output(self) -> str:
        self.log.flush()
        return _log_tail(self.tmp_path, (self.tmp_path / f"{Path(self.log.name).name}").read_text(errors="replace"))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
