"""A standalone Flink session cluster on this machine, from the Flink distribution that PyFlink ships.

    python -m infra.flink_cluster up [--rest-port 8081] [--slots 2]    # JobManager + one TaskManager
    python -m infra.flink_cluster status
    python -m infra.flink_cluster submit jobs/fraud_job.py [job args]  # flink run -d -p 2 -py ...; prints the job id
    python -m infra.flink_cluster cancel <job-id>
    python -m infra.flink_cluster down

The JobManager and the TaskManager run as separate JVMs (`jobmanager.sh` / `taskmanager.sh start-foreground`, which
exec the JVM), each started detached in its own session by pipelines/procs.py's ManagedProcess, so the pid files under
`.run/flink-cluster/pids` are the JVMs themselves and `down` can stop each process group whole: the TaskManager's
Python workers included. The config dir `.run/flink-cluster/conf` is the shipped conf with our settings on top.

The Python workers inherit the TaskManager's environment: PYTHONPATH is the repo root (so they import `pipelines`,
`udfs`, `jobs`), and every STREAMSCORE_* / KAFKA_BOOTSTRAP / REDIS_URL variable present at `up` reaches them (that is
how a job's UDFs find Redis and the model directory).

Ports and hosts default to the config's flink.cluster_* keys (FLINK_REST_PORT, FLINK_RPC_PORT, FLINK_JOBMANAGER_HOST,
FLINK_BIND_HOST); state and logs go under run.dir.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.services import ServiceError, log, port_open  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.procs import ManagedProcess, run_main, site_packages  # noqa: E402


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@dataclass
class FlinkCluster:
    """One JobManager and one TaskManager on loopback."""

    rest_port: int = 8081
    slots: int = 2
    # Where clients reach the JobManager. In containers: its service name.
    host: str = "127.0.0.1"
    # Where the JVMs listen and what a TaskManager calls itself (containers: 0.0.0.0 and the container's name).
    bind_host: str = "127.0.0.1"
    tm_host: str = "127.0.0.1"
    rpc_port: int = 6123
    prom_ports: str = "9249-9250"
    home: Path = ROOT / ".run" / "flink-cluster"
    log_dir: Path = ROOT / ".run" / "logs" / "flink-cluster"
    jm_memory: str = "1024m"
    tm_memory: str = "2048m"
    python: str = sys.executable
    # Extra variables for the JVMs (and so the TaskManager's Python workers), on top of os.environ.
    env: dict[str, str] = field(default_factory=dict)
    # Extra Flink settings (flat keys), on top of ours.
    conf: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------ paths
    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib"

    @property
    def pid_dir(self) -> Path:
        return self.home / "pids"

    def proc(self, role: str) -> ManagedProcess:
        """The JVM of `role` (jobmanager or taskmanager)."""
        return ManagedProcess(f"flink {role}", self.pid_dir / f"{role}.pid", self.log_dir / f"{role}.out")

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.rest_port}"

    # ------------------------------------------------------------------------------------------------ config
    def settings(self) -> dict[str, object]:
        base = flink_home() / "conf" / "config.yaml"
        import yaml

        s = _flatten(yaml.safe_load(base.read_text()) or {})
        ck = (self.home / "checkpoints").resolve()
        sp = (self.home / "savepoints").resolve()
        s.update({
            "jobmanager.rpc.address": self.host,
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.bind-host": self.bind_host,
            "taskmanager.bind-host": self.bind_host,
            "taskmanager.host": self.tm_host,
            "rest.address": self.host,
            "rest.bind-address": self.bind_host,
            "rest.port": self.rest_port,
            "taskmanager.numberOfTaskSlots": self.slots,
            "parallelism.default": min(2, self.slots),
            # Small enough for a 2-core box with Kafka, Redis and the rest beside it.
            "jobmanager.memory.process.size": self.jm_memory,
            "taskmanager.memory.process.size": self.tm_memory,
            "python.executable": self.python,
            "python.client.executable": self.python,
            "execution.checkpointing.dir": ck.as_uri(),
            "execution.checkpointing.savepoint-dir": sp.as_uri(),
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "state.backend.type": "hashmap",
            "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            "metrics.reporter.prom.port": self.prom_ports,
            "metrics.reporter.prom.host": self.bind_host,
            # The job's state as gauges (flink_jobmanager_job_runningState, ...): FlinkJobDown reads it.
            "metrics.job.status.enable": "STATE",
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 1000,
            "restart-strategy.fixed-delay.delay": "2 s",
            # No jar uploads or runs through the REST API (issue 24): `flink run` submits a job graph instead.
            "web.submit.enable": "false",
            "web.cancel.enable": "true",
            # The operators run in the TaskManager (why these options: FlinkConfig.jvm_opts).
            "env.java.opts.taskmanager": load_config().flink.jvm_opts,
        })
        s.update(self.conf)
        return s

    def write_config(self) -> Path:
        """The shipped conf dir (log4j files etc.) with config.yaml replaced by ours (flat keys)."""
        src = flink_home() / "conf"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and f.name != "config.yaml":
                shutil.copy2(f, self.conf_dir / f.name)
        (self.conf_dir / "masters").write_text(f"{self.host}:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text(f"{self.tm_host}\n")
        lines = ["# Written by infra/flink_cluster.py from pyflink/conf/config.yaml; edits are overwritten by `up`."]
        for k, v in self.settings().items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            lines.append(f"{k}: {json.dumps(str(v))}")
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        self._write_lib()
        return self.conf_dir

    def _write_lib(self) -> None:
        """pyflink/lib plus opt/flink-python: the JobManager and TaskManager need the Python operators on their
        classpath (the `flink` client adds that jar only to its own). Links, so the venv stays untouched."""
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        self.lib_dir.mkdir(parents=True)
        home = flink_home()
        for jar in [*sorted((home / "lib").glob("*.jar")), *sorted((home / "opt").glob("flink-python*.jar"))]:
            if not (self.lib_dir / jar.name).is_symlink():
                (self.lib_dir / jar.name).symlink_to(jar)

    def process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update({
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.pid_dir),
            # Workers import our packages from the checkout; in thread mode the TaskManager's embedded Python
            # (pemja) also needs the venv's site-packages.
            "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), site_packages(), env.get("PYTHONPATH", "")] if p),
            "PYFLINK_PYTHON": self.python,
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("JVM_ARGS", None)  # memory comes from the process sizes above
        return env

    # ------------------------------------------------------------------------------------------------ control
    def running(self) -> dict[str, int | None]:
        return {role: self.proc(role).pid for role in ("jobmanager", "taskmanager")}

    def overview(self, timeout: float = 2.0) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.rest_url}/overview", timeout=timeout) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def rest(self, path: str, method: str = "GET", timeout: float = 5.0) -> dict:
        req = urllib.request.Request(f"{self.rest_url}{path}", method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else {}

    def up(self, timeout: float = 120.0) -> str:
        pids = self.running()
        if all(pids.values()):
            log(f"flink-cluster: already running (jobmanager pid {pids['jobmanager']}, "
                f"taskmanager pid {pids['taskmanager']}) at {self.rest_url}")
            self.wait(timeout)
            return self.rest_url
        if pids["jobmanager"] is None:
            for port in (self.rest_port, self.rpc_port):
                if port_open(port):
                    raise ServiceError(f"port {port} is taken by another process; pick others with --rest-port/"
                                       f"--rpc-port")
        self.write_config()
        for role in ("jobmanager", "taskmanager"):
            if pids[role] is None:
                self.start_role(role)
        self.wait(timeout)
        log(f"flink-cluster: ready at {self.rest_url} ({self.slots} slots)")
        return self.rest_url

    def start_role(self, role: str) -> int:
        """Starts one JVM (`jobmanager` or `taskmanager`) with the config already written by `up`: how a
        supervisor replaces a TaskManager that died, while the JobManager (and its running jobs) stay up."""
        if not (self.conf_dir / "config.yaml").exists():
            raise ServiceError("flink cluster is not configured; run `up` first")
        proc = self.proc(role)
        if proc.running():
            raise ServiceError(f"flink {role} is already running (pid {proc.pid})")
        env = self.process_env()
        env["FLINK_LIB_DIR"] = str(self.lib_dir)
        return proc.start(["bash", str(flink_home() / "bin" / f"{role}.sh"), "start-foreground"], env=env)

    def kill(self, role: str) -> int | None:
        """Hard crash of one JVM, for fault tests: SIGKILL to the JVM (kill -9, no shutdown hooks), then to
        whatever is left of its process group (a TaskManager's Python workers, which would otherwise linger as
        orphans until they notice the broken connection). Returns the JVM's pid, or None if it was not running."""
        return self.proc(role).kill()

    def foreground(self, role: str) -> None:
        """Replaces this process with one JVM in the foreground (a container's main process)."""
        self.write_config()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.process_env()
        env["FLINK_LIB_DIR"] = str(self.lib_dir)
        script = str(flink_home() / "bin" / f"{role}.sh")
        os.execvpe("bash", ["bash", script, "start-foreground"], env)

    def wait(self, timeout: float = 120.0, local: bool = True) -> dict:
        """Until the REST API shows a TaskManager with all its slots. `local`: the JVMs are ours (pid files)."""
        deadline = time.time() + timeout
        ov = None
        while time.time() < deadline:
            for role, pid in (self.running().items() if local else ()):
                if pid is None:
                    raise ServiceError(f"flink {role} exited during start-up:\n{self.log_tail()}")
            ov = self.overview()
            if ov and ov.get("taskmanagers", 0) >= 1 and ov.get("slots-total", 0) >= (self.slots if local else 1):
                return ov
            time.sleep(0.5)
        raise ServiceError(f"flink cluster at {self.rest_url} not ready in {timeout:.0f}s (overview {ov})"
                           + (f"\n{self.log_tail()}" if local else ""))

    def down(self) -> None:
        for role in ("taskmanager", "jobmanager"):
            self.proc(role).stop(timeout=30)
        # The scripts' own pid bookkeeping (flink-console.sh appends to it).
        for f in self.pid_dir.glob("flink-*.pid") if self.pid_dir.exists() else []:
            f.unlink(missing_ok=True)

    def status(self) -> str:
        pids = self.running()
        ov = self.overview()
        lines = [f"flink cluster {self.rest_url}"]
        for role, pid in pids.items():
            lines.append(f"  {role:12s} {'pid ' + str(pid) if pid else 'DOWN'}")
        if ov:
            lines.append(f"  taskmanagers {ov.get('taskmanagers')}  slots {ov.get('slots-available')}/"
                         f"{ov.get('slots-total')} free  jobs running {ov.get('jobs-running')}")
            try:
                for j in self.rest("/jobs/overview").get("jobs", []):
                    lines.append(f"  job {j['jid']} {j['state']:10s} {j['name']}")
            except (urllib.error.URLError, OSError, ValueError):
                pass
        return "\n".join(lines)

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        if self.log_dir.exists():
            for f in sorted(self.log_dir.glob("*")):
                if f.is_file() and f.stat().st_size:
                    parts.append(f"--- {f.name} ---\n{f.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------------------------------------------ jobs
    def submit_cmd(self, job: str, args: list[str], parallelism: int = 2, pyfs: str | None = None) -> list[str]:
        cmd = ["bash", str(flink_home() / "bin" / "flink"), "run", "-m", self.address, "-d",
               "-p", str(parallelism), "-pyexec", self.python, "-pyclientexec", self.python]
        if pyfs:
            cmd += ["-pyfs", pyfs]
        return cmd + ["-py", str(Path(job).resolve()), *args]

    def submit(self, job: str, args: list[str] | None = None, *, parallelism: int = 2,
               env: dict[str, str] | None = None, pyfs: str | None = None, timeout: float = 180.0) -> str:
        """`flink run -d -p N -py job args` against this cluster; returns the job id once the job is RUNNING.

        The job file is the same one that runs on the MiniCluster: it sets no execution target, so `flink run`
        sends it here. A Table API job's `.wait()` blocks the client even when detached, so once the JobManager
        reports the job, the client (which owns nothing of the job) is ended.
        """
        if not self.write_config_if_missing():
            raise ServiceError("flink cluster is not configured; run `up` first")
        cmd = self.submit_cmd(job, list(args or []), parallelism, pyfs)
        penv = self.process_env()
        penv.update(env or {})
        # jobs/common.py sets the job's parallelism explicitly from flink.parallelism (which beats `-p`), so the
        # same number goes to the job's config too.
        penv["STREAMSCORE_FLINK__PARALLELISM"] = str(parallelism)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.log_dir / f"submit-{Path(job).stem}-{int(time.time() * 1000)}.out"
        log(f"flink-cluster: {' '.join(cmd[2:])}")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=penv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        job_id = None
        try:
            while time.time() < deadline:
                text = out_path.read_text(errors="replace")
                m = re.search(r"JobID ([0-9a-f]{32})", text)
                if m:
                    job_id = m.group(1)
                    break
                if proc.poll() is not None:
                    raise ServiceError(f"flink run exited {proc.returncode} without a job id:\n{text[-6000:]}")
                time.sleep(0.5)
            if job_id is None:
                raise ServiceError(f"no job id from flink run in {timeout:.0f}s:\n"
                                   f"{out_path.read_text(errors='replace')[-6000:]}")
            self.wait_job(job_id, {"RUNNING"}, timeout=max(deadline - time.time(), 10))
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 15)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait(5)
        log(f"flink-cluster: job {job_id} running (client output {out_path})")
        return job_id

    def write_config_if_missing(self) -> bool:
        if not (self.conf_dir / "config.yaml").exists():
            if self.overview() is None:
                return False
            self.write_config()
        return True

    def running_job(self, name: str) -> str | None:
        """The id of a RUNNING/RESTARTING/CREATED job named `name`, if any."""
        for j in self.rest("/jobs/overview").get("jobs", []):
            if j["name"] == name and j["state"] in ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING"):
                return j["jid"]
        return None

    def job_state(self, job_id: str) -> str:
        return self.rest(f"/jobs/{job_id}").get("state", "UNKNOWN")

    def wait_job(self, job_id: str, states: set[str], timeout: float = 60.0) -> str:
        deadline = time.time() + timeout
        state = "UNKNOWN"
        while time.time() < deadline:
            try:
                state = self.job_state(job_id)
            except (urllib.error.URLError, OSError, ValueError):
                state = "UNKNOWN"
            if state in states:
                return state
            if state in {"FAILED", "CANCELED", "FINISHED"} - states:
                raise ServiceError(f"job {job_id} is {state}:\n{self.exceptions(job_id)}")
            time.sleep(0.5)
        raise ServiceError(f"job {job_id} still {state} after {timeout:.0f}s")

    def exceptions(self, job_id: str) -> str:
        try:
            ex = self.rest(f"/jobs/{job_id}/exceptions?maxExceptions=3")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return str(exc)
        hist = ex.get("exceptionHistory", {}).get("entries", [])
        return "\n".join((e.get("stacktrace") or "")[:3000] for e in hist[:3]) or json.dumps(ex)[:3000]

    def cancel(self, job_id: str, timeout: float = 60.0) -> str:
        self.rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")
        return self.wait_job(job_id, {"CANCELED", "FINISHED", "FAILED"}, timeout)


def from_args(args: argparse.Namespace, cfg) -> FlinkCluster:
    p = cfg.metrics.flink_reporter_port
    in_container = args.bind != "127.0.0.1"
    run = cfg.path(cfg.run.dir)
    return FlinkCluster(rest_port=args.rest_port, slots=args.slots, rpc_port=args.rpc_port,
                        # One JVM per container: each takes the first port of the range.
                        prom_ports=f"{p}" if in_container else f"{p}-{p + 1}",
                        host=args.jobmanager_host, bind_host=args.bind,
                        tm_host=args.taskmanager_host or args.jobmanager_host,
                        home=run / "flink-cluster", log_dir=run / "logs" / "flink-cluster")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status", "submit", "cancel", "jobmanager", "taskmanager"],
                    help="jobmanager/taskmanager: run that one JVM in the foreground (containers)")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="submit: <job.py> [job args]; cancel: <job-id>")
    cfg = load_config()
    f = cfg.flink
    ap.add_argument("--rest-port", type=int, default=f.cluster_rest_port, help="flink.cluster_rest_port")
    ap.add_argument("--rpc-port", type=int, default=f.cluster_rpc_port, help="flink.cluster_rpc_port")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--jobmanager-host", default=f.cluster_host,
                    help="where clients and TaskManagers reach the JobManager (flink.cluster_host)")
    ap.add_argument("--taskmanager-host", default="", help="what the TaskManager calls itself (default: "
                                                             "--jobmanager-host)")
    ap.add_argument("--bind", default=f.cluster_bind_host,
                    help="listen address of the JVMs (0.0.0.0 in containers; flink.cluster_bind_host)")
    ap.add_argument("--if-absent", metavar="JOB_NAME", default="",
                    help="submit: do nothing when a job of this name is already running")
    ap.add_argument("--wait", type=float, default=0,
                    help="submit: first wait up to this many seconds for the cluster to have a free slot")
    ap.add_argument("-p", "--parallelism", type=int, default=2)
    ap.add_argument("--pyfs", default=None, help="ship these paths to the workers (flink run -pyfs)")
    args = ap.parse_args(argv)
    cluster = from_args(args, cfg)

    def body() -> int | None:
        if args.action == "up":
            cluster.up()
            print(cluster.status())
        elif args.action == "down":
            cluster.down()
        elif args.action == "status":
            print(cluster.status())
            return 0 if all(cluster.running().values()) else 3
        elif args.action in ("jobmanager", "taskmanager"):
            cluster.foreground(args.action)
        elif args.action == "submit":
            if not args.rest:
                ap.error("submit needs a job file")
            if args.wait:
                cluster.wait(args.wait, local=False)
            if args.if_absent and (jid := cluster.running_job(args.if_absent)):
                log(f"flink-cluster: {args.if_absent} already running as {jid}")
                print(jid)
                return 0
            print(cluster.submit(args.rest[0], args.rest[1:], parallelism=args.parallelism, pyfs=args.pyfs))
        elif args.action == "cancel":
            if len(args.rest) != 1:
                ap.error("cancel needs one job id")
            print(cluster.cancel(args.rest[0]))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
