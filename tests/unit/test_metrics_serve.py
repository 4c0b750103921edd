"""pipelines/metrics.py serve(): the bind address comes from the config, and several processes of one job share one
endpoint through prometheus_client's multiprocess mode (the way a PyFlink job's Python workers do)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from infra.services import free_port

ROOT = Path(__file__).resolve().parents[2]

# One "worker": counts, observes, sets the model info, serves the port (first come binds, the others skip), then
# reports and waits until told to stop, like a Python worker that keeps running.
WORKER = textwrap.dedent("""
    import sys, time
    from pipelines import metrics
    n, port = int(sys.argv[1]), int(sys.argv[2])
    metrics.DEAD_LETTERS.labels("unit-job", "not-avro").inc(n)
    metrics.SCORER_BATCH_SIZE.labels("m", "reference").observe(n)
    metrics.MODEL_INFO.info({"fraud_model_version": "v-unit", "fraud_scorer": "ReferenceScorer"})
    metrics.serve(port)
    print("multiprocess" if metrics.multiprocess_mode() else "single", flush=True)
    sys.stdin.read()
""")


def _scrape(url: str, timeout: float = 20.0) -> str:
    deadline = time.time() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def _start(n: int, port: int, env: dict[str, str]) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(n), str(port)], cwd=ROOT, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    line = p.stdout.readline().strip()
    assert line in ("multiprocess", "single"), line + p.stdout.read() if p.poll() is not None else line
    return p


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def test_workers_of_one_job_share_one_endpoint(tmp_path):
    port = free_port()
    env = _env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    procs = [_start(n, port, env) for n in (3, 5, 7)]
    try:
        body = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        for p in procs:
            p.communicate("", timeout=20)
    # The first worker bound the port; the sum covers all three, including the two that skipped.
    assert re.search(r'^streamscore_dead_letters_total\{component="unit-job",reason="not-avro"\} 15\.0$', body, re.M)
    assert re.search(r'^streamscore_scorer_batch_size_count\{backend="reference",model="m"\} 3\.0$', body, re.M)
    assert re.search(r'^streamscore_scorer_batch_size_sum\{backend="reference",model="m"\} 15\.0$', body, re.M)
    # The Info series survives multiprocess mode, once, with no pid label.
    info = re.findall(r"^streamscore_model_info\{(.*)\} 1\.0$", body, re.M)
    assert info == ['fraud_model_version="v-unit",fraud_scorer="ReferenceScorer"'], info


def test_single_process_and_bind_host_from_config():
    port = free_port()
    # 0.0.0.0 from the environment: the endpoint answers on an address other than the loopback one it used to be.
    p = _start(4, port, _env(STREAMSCORE_METRICS__HOST="0.0.0.0"))
    try:
        addrs = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
        other = next((a for a in addrs if ":" not in a and not a.startswith("127.")), None)
        body = _scrape(f"http://{other or '127.0.0.1'}:{port}/metrics")
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    finally:
        p.communicate("", timeout=20)
    assert re.search(r'^streamscore_model_info\{fraud_model_version="v-unit",fraud_scorer="ReferenceScorer"\} 1\.0$',
                     body, re.M)
    assert 'streamscore_dead_letters_total{component="unit-job",reason="not-avro"} 4.0' in body
    if listening:
        assert "0.0.0.0:" in listening, listening


def test_default_bind_is_loopback():
    port = free_port()
    p = _start(1, port, _env())
    try:
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert "streamscore_dead_letters_total" in _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        p.communicate("", timeout=20)
    if listening:
        assert f"127.0.0.1:{port}" in listening, listening
