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


def fraud_job(tmp_path, bootstrap: str, topic_factory, prefix: str, env: dict, *, tx: str, labels: str, out: str,
              dead: str | None = None) -> RunningJob:
    """The fraud job on a test's own topics, with fresh decision and late topics (and dead-letter topic, unless
    given) named after `prefix`; its group id is derived from the transactions topic."""
    return RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", bootstrap, "--source-topic", tx,
                      "--labels-topic", labels, "--out-topic", out, "--decisions-topic", topic_factory(f"{prefix}-dec"),
                      "--late-topic", topic_factory(f"{prefix}-late"),
                      "--dead-topic", dead or topic_factory(f"{prefix}-dead"), "--group-id", f"g-{tx}", env=env)


def labelled_replay(cfg, bootstrap: str, tx: str, labels: str):
    """A FraudReplay factory on a test's topics, as the swap, shadow and control tests replay: each transaction's id
    recorded, its label a day after it, labels resumed by a second replay of the same topics."""
    from pipelines.replay.fraud import FraudReplay, ReplayOptions

    def make(**kw) -> FraudReplay:
        return FraudReplay(cfg, ReplayOptions(label_delay_days=1.0, record_ids=True, resume_labels=True, **kw),
                           bootstrap=bootstrap, tx_topic=tx, label_topic=labels)
    return make


class PacedSender:
    """A replay run in a background thread, so that a test can change the job while its transactions flow."""

    def __init__(self, replay):
        import threading

        self._replay, self.report = replay, None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.report = self._replay.run()

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float):
        """The replay's report once it has sent everything; fails if it is still sending after `timeout`."""
        self._thread.join(timeout)
        assert not self._thread.is_alive() and self.report is not None, f"the replay still sending after {timeout}s"
        return self.report


def wait_scored(job: RunningJob, bootstrap: str, topic: str, n: int, what: str, timeout: float = 300) -> None:
    """Waits until `topic` holds `n` records (transactional markers count too: a lower bound on the time), failing
    at once with the job's output if it died."""
    from pipelines import kafka_util
    from tests.pipeline_util import eventually

    def check():
        assert job.alive(), job.output()
        return sum(kafka_util.end_offsets(bootstrap, topic).values()) >= n
    eventually(check, timeout, what)


def committed_scores(job: RunningJob, bootstrap: str, topic: str, n: int, timeout: float = 240,
                     read_timeout: float = 30) -> list:
    """The committed (read_committed) records of `topic` once there are at least `n`, failing at once with the
    job's output if it died."""
    from pipelines import kafka_util
    from tests.pipeline_util import eventually

    def all_committed():
        assert job.alive(), job.output()
        msgs = kafka_util.read_topic(bootstrap, topic, idle=1, timeout=read_timeout, read_committed=True)
        return msgs if len(msgs) >= n else None
    return eventually(all_committed, timeout, f"{n} committed scores", every=2)
