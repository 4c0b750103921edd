"""Issue 24: the dashboard refuses to start on a non-loopback address with the default (or an empty) token, and
still starts on loopback with it. No broker needed: the refusal comes before any connection."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infra.services import free_port
from pipelines.config import ROOT


def _start(*args: str, env_token: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_DASHBOARD__")}
    if env_token is not None:
        env["STREAMSCORE_DASHBOARD__TOKEN"] = env_token
    return subprocess.run([sys.executable, "-m", "dashboard.server", "--port", str(free_port()), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_default_token_on_a_reachable_address_is_refused(host):
    proc = _start("--host", host)  # the config's default token, change-me
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to serve" in proc.stderr and "default token" in proc.stderr


def test_empty_token_is_refused():
    proc = _start("--host", "0.0.0.0", env_token="")
    assert proc.returncode == 2 and "token" in proc.stderr


def test_settings_accept_default_on_loopback_and_real_token_anywhere():
    from dashboard.server import parse_args, settings_from
    from pipelines.config import load_config

    cfg = load_config(environ={})
    assert settings_from(parse_args(["--host", "127.0.0.1"]), cfg).host == "127.0.0.1"
    assert settings_from(parse_args(["--host", "0.0.0.0", "--token", "a-long-real-token"]), cfg).host == "0.0.0.0"
