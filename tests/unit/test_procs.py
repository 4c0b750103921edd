"""pipelines/procs.py: a managed process's pid file, liveness (create time checked), group stop and kill."""

from __future__ import annotations

import json
import os
import sys
import time

import psutil
import pytest

from pipelines.procs import ManagedProcess, ServiceError

# A parent that starts a child and both sleep: stop must end the whole group, not only the pid in the file.
FAMILY = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "print('up', flush=True); time.sleep(60)")


def _children_of_group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def test_start_records_pid_and_create_time_and_stop_ends_the_group(tmp_path):
    proc = ManagedProcess.under(tmp_path, "family")
    pid = proc.start([sys.executable, "-c", FAMILY])
    rec = json.loads(proc.pidfile.read_text())
    assert rec["pid"] == pid and abs(rec["create_time"] - psutil.Process(pid).create_time()) < 0.05
    assert os.getpgid(pid) == pid  # a session (and group) of its own
    deadline = time.time() + 20
    while len(_children_of_group(pid)) < 2:
        assert time.time() < deadline, proc.log_tail()
        time.sleep(0.1)
    assert proc.running() and proc.pid == pid
    assert proc.start([sys.executable, "-c", FAMILY]) == pid  # idempotent
    proc.stop(timeout=10)
    assert not proc.pidfile.exists() and not proc.running()
    assert _children_of_group(pid) == []
    proc.stop()  # stopping a stopped process is a no-op
    assert "up" in proc.logfile.read_text()


def test_a_recycled_pid_is_not_alive(tmp_path):
    proc = ManagedProcess.under(tmp_path, "other")
    proc.pidfile.parent.mkdir(parents=True)
    me = psutil.Process()
    # This test's own pid, but with another create time: the pid file's process is gone, its pid reused.
    proc.pidfile.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time() - 3600}))
    assert not proc.running() and proc.pid is None
    proc.pidfile.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))
    assert proc.running()
    # A bare pid (an older pid file) counts only for a process older than the file.
    proc.pidfile.write_text(str(me.pid))
    assert proc.running()
    os.utime(proc.pidfile, (me.create_time() - 3600, me.create_time() - 3600))
    assert not proc.running()


def test_garbage_pidfile_is_not_running(tmp_path):
    proc = ManagedProcess.under(tmp_path, "junk")
    assert not proc.running()
    proc.pidfile.parent.mkdir(parents=True)
    proc.pidfile.write_text("not a pid")
    assert not proc.running()
    proc.stop()
    assert not proc.pidfile.exists()


def test_kill_leaves_the_pidfile_and_wait_ready_reports_an_exit(tmp_path):
    proc = ManagedProcess.under(tmp_path, "victim")
    pid = proc.start([sys.executable, "-c", FAMILY])
    assert proc.kill() == pid
    assert not proc.running() and proc.pidfile.exists() and _children_of_group(pid) == []
    assert proc.kill() is None

    quick = ManagedProcess.under(tmp_path, "quick")
    quick.start([sys.executable, "-c", "print('bad config', flush=True); raise SystemExit(3)"])
    with pytest.raises(ServiceError, match="exited during start-up(.|\n)*bad config"):
        quick.wait_ready(lambda: False, 10, "nowhere")
