"""One managed background process: a pid file, a log file, start, stop and liveness.

Every process our make targets and test fixtures run in the background goes through :class:`ManagedProcess`: the
Kafka broker, Redis, Prometheus, the standalone Flink cluster's JVMs, the jobs and producers of `make run`, the
dashboard and the lag exporter.

* ``start`` runs the command detached in a session (and so a process group) of its own, stdout and stderr appended
  to the log file, so `make` returning does not end it and ``stop`` can end the whole group: a Flink job's JVM and
  its Python workers, a shell script and what it started.
* The pid file records the pid *and* the process's create time (``{"pid": ..., "create_time": ...}``). A pid the
  kernel has given to another process since (pids are recycled) does not count as alive: its create time differs.
* ``stop`` sends SIGTERM to the process group, waits, then SIGKILLs what is left, members that outlived their
  leader included, and removes the pid file. Stopping a stopped process is a no-op.

No supervisor (honcho, circus, supervisord) is used: honcho runs a Procfile in the foreground, circus and supervisord
are daemons with their own control socket and config, whose own pid would need exactly this class; we need
"detached, one pid file, stop the group" and psutil (already a dependency) gives a safe liveness check.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

import psutil

ROOT = Path(__file__).resolve().parent.parent

# Two create times of one process agree to the clock tick (10 ms); another process with the same pid cannot.
_CREATE_TIME_SLACK_S = 0.05


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped; the message says why (and holds its log's tail)."""


def log(msg: str) -> None:
    print(f"[infra] {msg}", flush=True)


def site_packages() -> str:
    """This interpreter's site-packages: thread mode's embedded Python (pemja) imports from it via PYTHONPATH."""
    return next((p for p in sys.path if p.endswith("site-packages")), "")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the repo root first on PYTHONPATH, for a child that imports our packages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ManagedProcess:
    """A background process known by its pid file. Holds no state of its own beyond the two paths: any process
    (`make stop`, a test) that builds one with the same pid file controls the same process."""

    def __init__(self, name: str, pidfile: Path, logfile: Path):
        self.name = name
        self.pidfile = Path(pidfile)
        self.logfile = Path(logfile)

    @classmethod
    def under(cls, run_dir: Path, name: str) -> "ManagedProcess":
        """The layout every make target uses: <run_dir>/pids/<name>.pid and <run_dir>/logs/<name>.log."""
        return cls(name, Path(run_dir) / "pids" / f"{name}.pid", Path(run_dir) / "logs" / f"{name}.log")

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, {str(self.pidfile)!r})"

    # ------------------------------------------------------------------------------------------------ liveness
    def _recorded(self) -> tuple[int, float | None] | None:
        try:
            text = self.pidfile.read_text().strip()
        except OSError:
            return None
        try:
            rec = json.loads(text)
            if isinstance(rec, dict):
                return int(rec["pid"]), float(rec["create_time"])
            return int(rec), None  # a bare pid (a pid file from before create times were recorded)
        except (ValueError, KeyError, TypeError):
            return None

    def _process(self) -> psutil.Process | None:
        """The recorded process if it still runs: same pid, same create time, not a zombie."""
        rec = self._recorded()
        if rec is None:
            return None
        pid, created = rec
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            started = proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        if created is None:
            # No create time recorded: the process must be older than the pid file that names it.
            try:
                if started > self.pidfile.stat().st_mtime + 1.0:
                    return None
            except OSError:
                return None
        elif abs(started - created) > _CREATE_TIME_SLACK_S:
            return None  # the pid was recycled
        return proc

    @property
    def pid(self) -> int | None:
        """The pid if the recorded process is alive, else None."""
        proc = self._process()
        return proc.pid if proc is not None else None

    def running(self) -> bool:
        return self._process() is not None

    def _group(self) -> list[psutil.Process]:
        """The recorded process and every process of its group started after it (its session is its group), even
        when the leader has exited: a Flink TaskManager's Python workers outlive a killed JVM for a while."""
        rec = self._recorded()
        if rec is None:
            return []
        pid, created = rec
        leader = self._process()
        since = leader.create_time() if leader is not None else (created if created is not None else time.time())
        members = [leader] if leader is not None else []
        for p in psutil.process_iter(["pid"]):
            if p.pid == pid:
                continue
            try:
                if os.getpgid(p.pid) == pid and p.create_time() >= since - _CREATE_TIME_SLACK_S \
                        and p.status() != psutil.STATUS_ZOMBIE:
                    members.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return members

    # ------------------------------------------------------------------------------------------------ control
    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> int:
        """Starts `argv` detached, in a new session, unless the process runs already; returns its pid."""
        pid = self.pid
        if pid is not None:
            log(f"{self.name}: already running (pid {pid})")
            return pid
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as out:
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd, env=dict(env) if env is not None else None, start_new_session=True)
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:  # cannot happen for an unreaped child; keep a value anyway
            created = time.time()
        tmp = self.pidfile.with_name(self.pidfile.name + ".tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "create_time": created, "argv": list(argv)[:8]}) + "\n")
        tmp.replace(self.pidfile)
        log(f"{self.name}: started pid {proc.pid}, log {self.logfile}")
        return proc.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group, up to `timeout` seconds for it to end, then SIGKILL; removes the pid file."""
        members = self._group()
        if not members:
            self.pidfile.unlink(missing_ok=True)
            log(f"{self.name}: not running")
            return
        pid = self._recorded()[0]
        log(f"{self.name}: stopping pid {pid}" + (f" and {len(members) - 1} more of its group"
                                                  if len(members) > 1 else ""))
        self._signal(pid, members, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=timeout)
        if alive:
            log(f"{self.name}: {len(alive)} process(es) did not stop in {timeout:.0f}s, killing")
            self._signal(pid, alive, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=10)
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> int | None:
        """Hard crash, for fault tests: SIGKILL to the process (no shutdown hooks), then to whatever is left of its
        group. The pid file stays, as after a real crash. Returns the pid, or None if it was not running."""
        proc = self._process()
        if proc is None:
            return None
        log(f"{self.name}: kill -9 pid {proc.pid}")
        proc.kill()
        psutil.wait_procs([proc], timeout=10)
        rest = self._group()
        self._signal(proc.pid, rest, signal.SIGKILL)
        psutil.wait_procs(rest, timeout=10)
        return proc.pid

    @staticmethod
    def _signal(pgid: int, members: list[psutil.Process], sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for p in members:  # a member that left the group, or a group whose leader is gone
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass

    # ------------------------------------------------------------------------------------------------ start-up
    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.3) -> None:
        """Until `ready()` is true; a ServiceError with the log's tail when the process exits first or `timeout`
        passes. `what` names what was waited for (an address)."""
        deadline = time.time() + timeout
        while True:
            if not self.running():
                raise ServiceError(f"{self.name} exited during start-up; last lines of {self.logfile}:\n"
                                   f"{self.log_tail()}")
            if ready():
                return
            if time.time() > deadline:
                raise ServiceError(f"{self.name} did not answer on {what} within {timeout:.0f}s; last lines of "
                                   f"{self.logfile}:\n{self.log_tail()}")
            time.sleep(interval)

    def already_running(self, port: int, where: str, setting: str) -> bool:
        """Before a start: True (and says so) when the process runs already; a ServiceError when another process
        holds `port` (`setting` names how to pick another)."""
        pid = self.pid
        if pid is not None:
            log(f"{self.name}: already running on {where} (pid {pid})")
            return True
        if port_open(port):
            raise ServiceError(f"port {port} is taken by another process; set {setting}")
        return False

    def status(self) -> str:
        pid = self.pid
        return f"running (pid {pid})" if pid is not None else "stopped"


class Managed:
    """Base of a service object whose process is its `proc` (a ManagedProcess): liveness comes from there."""

    proc: ManagedProcess

    def running(self) -> bool:
        return self.proc.running()


def control(service, action: str) -> None:
    """A CLI's start / stop / status on a service object (start(), stop(), running(), optionally status())."""
    if action == "start":
        service.start()
    elif action == "stop":
        service.stop()
    elif hasattr(service, "status"):
        print(service.status())
    else:
        print("running" if service.running() else "stopped")


def run_main(body: Callable[[], int | None]) -> int:
    """A command line's body: a ServiceError becomes one line on stderr and exit status 1."""
    try:
        return body() or 0
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
