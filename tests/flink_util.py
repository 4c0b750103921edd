"""Tests run jobs the way `make run` and `make bench` do: see infra/jobrunner.py.

`RunningJob(...).num_restarts()` is how many times Flink has restarted the running job (its `numRestarts` metric,
from the REST API of the job's MiniCluster, which RunningJob puts on a free loopback port, `job.rest_url`): a test
that requires "the job never restarts" asserts `job.num_restarts() == 0`. `job.status()` adds the job's state
(RUNNING, RESTARTING, ...) and id.
"""

from infra.services import free_port, port_open
from infra.jobrunner import RunningJob, job_env, run_job  # noqa: F401


def free_port_pair() -> int:
    """A port p with p+1 also free: the Prometheus reporter of a standalone cluster takes one port of the range per
    JVM."""
    for _ in range(50):
        p = free_port()
        if p < 65000 and not port_open(p + 1):
            return p
    raise RuntimeError("no two adjacent free ports")


def udf_classpath() -> str:
    """Our function jar plus the Flink jars PyFlink ships: enough to run a class's main() (the Java self-checks)."""
    import os
    from pathlib import Path

    import pyflink

    from infra.services import ensure_udf_jar

    lib = Path(pyflink.__file__).parent / "lib"
    return os.pathsep.join([str(ensure_udf_jar()), *map(str, sorted(lib.glob("flink-*.jar")))])
