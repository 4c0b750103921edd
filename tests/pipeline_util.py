"""Helpers for the tests that run the real pipeline (replay -> fraud job -> dashboard / lag exporter) and read its
/metrics endpoints over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from infra.services import free_port
from pipelines.features import FEATURE_NAMES
from udfs.scoring import random_mlp_weights, write_mlp_artifact

ROOT = Path(__file__).resolve().parent.parent
TEST_MODEL = "fraud-test"


def write_test_model(base: Path, seed: int = 3, *, version: str = TEST_MODEL, features=FEATURE_NAMES,
                     latest: bool = True) -> Path:
    """A model of the real artifact format with random weights (fast, deterministic); returns the model_dir. The
    tests are about features and plumbing, not model quality. ``latest``: LATEST names this version."""
    d = len(features)
    write_mlp_artifact(base / version, random_mlp_weights(d, seed=seed), features, [True] * d,
                       [1.0] * d, [2.0] * d, 10.0, version)
    if latest:
        (base / "LATEST").write_text(f"{version}\n")
    return base


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> list[Sample]:
    """Every sample of one /metrics endpoint, read over HTTP and parsed with prometheus_client's parser."""
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout).read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def select(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def total(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of the matching samples, None when there is none."""
    found = select(samples, name, **labels)
    return sum(s.value for s in found) if found else None


def eventually(check: Callable[[], object], timeout: float, what: str, every: float = 1.0):
    """Calls `check` until it returns something truthy; fails with its last value (or exception) after `timeout`."""
    deadline = time.time() + timeout
    last: object = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (OSError, AssertionError) as exc:
            last = exc
        if time.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")
        time.sleep(every)


@contextmanager
def lag_exporter(bootstrap: str, log_dir: Path, *, groups: list[str], env: dict[str, str] | None = None,
                 interval: float = 1.0) -> Iterator[tuple[subprocess.Popen, int]]:
    """`python -m infra.lag_exporter` as a subprocess on a free port; stopped (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "infra.lag_exporter", "--bootstrap", bootstrap, "--port", str(port),
           "--interval", str(interval)]
    for g in groups:
        cmd += ["--group", g]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"lag-exporter-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"lag exporter exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        return scrape(port)

    try:
        eventually(up, 60, f"lag exporter /metrics on port {port}", every=0.3)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
