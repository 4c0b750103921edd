"""`make dashboard-up` and `make lag-exporter-up`, then `make stop`: no process of ours is left.

Everything runs under a temporary run.dir (STREAMSCORE_RUN__DIR) on free ports against the test broker, so a
`make run` in this checkout is not touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pipelines.procs import ManagedProcess, http_ok
from infra.services import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("make") is None, reason="no make")]


def ours(run_dir: Path, since: float) -> list[psutil.Process]:
    """Processes started since `since` whose environment names this test's run dir (what make's targets started)."""
    found = []
    for p in psutil.process_iter(["pid", "create_time", "cmdline"]):
        try:
            if p.info["create_time"] < since or p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("STREAMSCORE_RUN__DIR") == str(run_dir):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_make_stop_stops_what_dashboard_up_and_lag_exporter_up_started(kafka_bootstrap, tmp_path):
    run_dir = tmp_path / "run"
    port, lag_port = free_port(), free_port()
    env = dict(os.environ, STREAMSCORE_RUN__DIR=str(run_dir), KAFKA_BOOTSTRAP=kafka_bootstrap,
               # An external Redis and broker: `make stop` must not manage them; nothing here uses Redis.
               REDIS_URL="redis://127.0.0.1:1/0", STREAMSCORE_KAFKA__DATA_DIR=str(tmp_path / "kafka"),
               STREAMSCORE_DASHBOARD__PORT=str(port), STREAMSCORE_DASHBOARD__TOKEN="t0ken",
               STREAMSCORE_METRICS__DASHBOARD_PORT=str(free_port()),
               STREAMSCORE_METRICS__LAG_EXPORTER_PORT=str(lag_port),
               STREAMSCORE_METRICS__PROMETHEUS_PORT=str(free_port()))
    since = time.time() - 1

    def make(target: str) -> str:
        r = subprocess.run(["make", "--no-print-directory", target], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"make {target}:\n{r.stdout}\n{r.stderr}"
        return r.stdout + r.stderr

    try:
        out = make("dashboard-up")
        assert f"http://127.0.0.1:{port}/" in out
        make("lag-exporter-up")
        dash, lag = ManagedProcess.under(run_dir, "dashboard"), ManagedProcess.under(run_dir, "lag-exporter")
        assert dash.running() and lag.running()  # one pid file each, where `make run` keeps them
        assert http_ok(f"http://127.0.0.1:{port}/healthz") and http_ok(f"http://127.0.0.1:{lag_port}/metrics")
        started = {p.pid for p in ours(run_dir, since)}
        assert {dash.pid, lag.pid} <= started

        make("stop")
        assert not dash.pidfile.exists() and not lag.pidfile.exists()
        deadline = time.time() + 10
        while (left := ours(run_dir, since)) and time.time() < deadline:
            time.sleep(0.2)
        assert left == [], [p.cmdline() for p in left]
        assert "dashboard: not running" in make("stop")  # a second stop is a no-op
    finally:
        for p in ours(run_dir, since):  # never leave a process behind, whatever failed
            p.kill()
