"""Start / stop the dashboard in the background (``make dashboard-up`` / ``dashboard-down``).

    python -m dashboard.ctl up [-- extra server args]   # pid in .run/dashboard.pid, log in .run/logs/dashboard.log
    python -m dashboard.ctl down
    python -m dashboard.ctl status

Process handling is infra/services.py's (``_spawn``, ``_stop_pid``), imported, not copied.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.services import _read_pid, _spawn, _stop_pid, log  # noqa: E402
from pipelines.config import load_config  # noqa: E402

PIDFILE = ROOT / ".run" / "dashboard.pid"
LOGFILE = ROOT / ".run" / "logs" / "dashboard.log"


def _url(extra: list[str]) -> tuple[str, str]:
    cfg = load_config()
    port = cfg.dashboard.port
    token = cfg.dashboard.token
    for i, arg in enumerate(extra[:-1]):
        if arg == "--port":
            port = int(extra[i + 1])
        elif arg == "--token":
            token = extra[i + 1]
    host = cfg.dashboard.host if cfg.dashboard.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{port}", token


def up(extra: list[str]) -> int:
    base, token = _url(extra)
    pid = _read_pid(PIDFILE)
    if pid is None:
        pid = _spawn([sys.executable, "-m", "dashboard.server", *extra], LOGFILE, PIDFILE)
        log(f"dashboard: started pid {pid}, log {LOGFILE.relative_to(ROOT)}")
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                if _read_pid(PIDFILE) is None:
                    print(f"error: the dashboard exited; see {LOGFILE}", file=sys.stderr)
                    print(LOGFILE.read_text()[-2000:], file=sys.stderr)
                    return 1
                if time.time() > deadline:
                    print(f"error: the dashboard did not answer on {base} in 30s; see {LOGFILE}", file=sys.stderr)
                    return 1
                time.sleep(0.3)
    else:
        log(f"dashboard: already running (pid {pid})")
    print(f"dashboard: {base}/?token={token}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    action, extra = (argv[0] if argv else "status"), [a for a in argv[1:] if a != "--"]
    if action == "up":
        return up(extra)
    if action == "down":
        _stop_pid(PIDFILE, "dashboard")
        return 0
    if action == "status":
        pid = _read_pid(PIDFILE)
        print(f"running (pid {pid})" if pid else "stopped")
        return 0
    print("usage: python -m dashboard.ctl up|down|status [-- server args]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
