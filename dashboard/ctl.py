"""Start / stop the dashboard in the background (``make dashboard-up`` / ``dashboard-down``).

    python -m dashboard.ctl up [-- extra server args]   # pid in .run/pids/dashboard.pid, log in .run/logs/dashboard.log
    python -m dashboard.ctl down
    python -m dashboard.ctl status

The pid file is the one `make run` gives the dashboard (pipelines/procs.py's layout under run.dir), so `make stop`
stops a dashboard that `make dashboard-up` started, and `dashboard-down` one that `make run` started.
"""

from __future__ import annotations

import ssl
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.config import Config, load_config  # noqa: E402
from pipelines.procs import ManagedProcess, ServiceError, child_env, http_ok, log  # noqa: E402


def process(cfg: Config) -> ManagedProcess:
    return ManagedProcess.under(cfg.path(cfg.run.dir), "dashboard")


def _url(cfg: Config, extra: list[str]) -> tuple[str, str]:
    port = cfg.dashboard.port
    token = cfg.dashboard.token
    for i, arg in enumerate(extra[:-1]):
        if arg == "--port":
            port = int(extra[i + 1])
        elif arg == "--token":
            token = extra[i + 1]
    host = cfg.dashboard.host if cfg.dashboard.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"{'https' if cfg.dashboard.tls_cert else 'http'}://{host}:{port}", token


def _healthy(cfg: Config, base: str) -> bool:
    """/healthz answers; under TLS the server must present exactly the configured certificate (which may be
    self-signed), the host name unchecked since this is our own process on the address we started it on."""
    if not cfg.dashboard.tls_cert:
        return http_ok(f"{base}/healthz", timeout=1)
    ctx = ssl.create_default_context(cafile=str(cfg.path(cfg.dashboard.tls_cert)))
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=1, context=ctx) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def up(cfg: Config, extra: list[str]) -> int:
    base, token = _url(cfg, extra)
    proc = process(cfg)
    if proc.running():
        log(f"dashboard: already running (pid {proc.pid})")
    else:
        proc.start([sys.executable, "-m", "dashboard.server", *extra], env=child_env())
        try:
            proc.wait_ready(lambda: _healthy(cfg, base), 30, base)
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    # Never the token itself (issue 24): it would land in terminals, logs and CI output. The browser logs in at
    # /login with it; no URL carries it.
    print(f"dashboard: {base}/ (log in at {base}/login with dashboard.token / STREAMSCORE_DASHBOARD__TOKEN"
          f"{', set' if token else ', NOT SET'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    action, extra = (argv[0] if argv else "status"), [a for a in argv[1:] if a != "--"]
    cfg = load_config()
    if action == "up":
        return up(cfg, extra)
    if action == "down":
        process(cfg).stop()
        return 0
    if action == "status":
        print(process(cfg).status())
        return 0
    print("usage: python -m dashboard.ctl up|down|status [-- server args]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
