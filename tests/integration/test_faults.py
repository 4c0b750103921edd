"""Fault tests for the fraud job on the local MiniCluster: every input must still be scored exactly once (output read
with read_committed) after (a) the job process is killed mid-stream and restarted with `--restore latest`, and (b) the
Kafka broker is restarted mid-stream on the same port while the producer and the job keep going.

Each test is bounded in time and stops what it started; N = 20,000 transactions plus a tail that moves the watermark
past them. The first 5,000 go out at once; once the job has scored some of them (and, for the kill, completed a
checkpoint), the other 15,000 and the tail are replayed at a steady rate in the background and the fault is injected
while they are flowing. (A job's start-up takes one to two minutes on a loaded 2-core machine, so a single paced
replay would have ended before the job even ran.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from jobs.common import latest_checkpoint
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES
from pipelines.replay_fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob, job_env
from udfs.scoring import random_mlp_weights, write_mlp_artifact

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 20_000
TAIL = 2_000
FIRST = 5_000
RATE = 800.0  # messages/s (transactions + labels) for the second part: about 40 s of replay, the fault lands in it
# Labels about an hour after their transaction, so the label source has records on every partition all along: with the
# longer idle timeout below, a label source without records would hold the watermark back.
LABEL_DELAY_DAYS = 0.05
BUDGET_S = 480  # the kill test starts the job twice
JOB = "streamscore-fraud"


@pytest.fixture
def model_dir(tmp_path):
    d = len(FEATURE_NAMES)
    base = tmp_path / "models"
    write_mlp_artifact(base / "fraud-test", random_mlp_weights(d, seed=3), FEATURE_NAMES, [True] * d,
                       [1.0] * d, [2.0] * d, 10.0, "fraud-test")
    (base / "LATEST").write_text("fraud-test\n")
    return base


class Replay(threading.Thread):
    """The second part of the replay (transactions FIRST..N-1 and the tail) in the background, paced."""

    def __init__(self, bootstrap: str, tx_t: str, lb_t: str):
        super().__init__(daemon=True)
        opts = ReplayOptions(rate=RATE, skip=FIRST, limit=N - FIRST, tail=TAIL, labels=True,
                             label_delay_days=LABEL_DELAY_DAYS)
        self.replay = FraudReplay(load_config(), opts, bootstrap=bootstrap, tx_topic=tx_t, label_topic=lb_t)
        self.report = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = self.replay.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.error = exc


def replay_first(bootstrap: str, tx_t: str, lb_t: str) -> None:
    rep = FraudReplay(load_config(), ReplayOptions(rate=0, limit=FIRST, labels=True,
                                                   label_delay_days=LABEL_DELAY_DAYS), bootstrap=bootstrap,
                      tx_topic=tx_t, label_topic=lb_t).run()
    assert rep.sent == FIRST and rep.errors == 0


class Setup:
    def __init__(self, kafka_bootstrap, redis_url, topic_factory, tmp_path: Path, model_dir: Path):
        self.bootstrap = kafka_bootstrap
        self.tmp_path = tmp_path
        self.tx, self.lb, self.out = topic_factory("tx"), topic_factory("labels"), topic_factory("scores")
        self.late, self.dead = topic_factory("late"), topic_factory("dead")
        # A longer source idle timeout (2 min): while the test waits between the two parts of the replay (and while the broker
        # is down) no partition may be declared idle, or the first events after the pause on a partition that was
        # idle would be behind the watermark the others moved, and routed to the late topic instead of scored.
        self.env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(model_dir),
                    "STREAMSCORE_FRAUD__IDLENESS_MS": "120000"}
        self.t0 = time.time()

    def args(self, *extra: str) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--source-topic", self.tx, "--labels-topic", self.lb,
                "--out-topic", self.out, "--late-topic", self.late, "--dead-topic", self.dead,
                "--group-id", f"g-{self.tx}", *extra]

    def job(self, *extra: str) -> RunningJob:
        return RunningJob("jobs/fraud_job.py", self.tmp_path, *self.args(*extra), env=self.env)

    def left(self) -> float:
        return BUDGET_S - (time.time() - self.t0)

    def scored(self) -> int:
        """Records in the output topic (committed or not, a cheap progress probe)."""
        try:
            return sum(kafka_util.end_offsets(self.bootstrap, self.out, timeout=5).values())
        except Exception:
            return 0

    def late_ids(self) -> set[int]:
        msgs = kafka_util.read_topic(self.bootstrap, self.late, idle=2, timeout=30)
        return {int(serde("late_event").decode(m.value())["event_id"]) for m in msgs}

    def latest_checkpoint(self) -> str | None:
        cfg = load_config(environ=job_env(self.tmp_path))
        return latest_checkpoint(cfg, JOB)

    def wait_all_scored(self, job: RunningJob, replay: Replay) -> tuple[Counter, set[int]]:
        """Until every one of the N transactions is in the output (read_committed); returns the counts by id and
        the tail's ids."""
        dec = serde("fraud_score")
        got: Counter = Counter()
        tail: set[int] = set()
        while True:
            if self.left() <= 0:
                missing = sorted(set(range(N)) - set(got))
                late = self.late_ids()
                raise AssertionError(f"only {sum(1 for k in got if k not in tail)} of {N} scored within "
                                     f"{BUDGET_S}s; missing {missing[:10]}..., of which in the late topic: "
                                     f"{sorted(set(missing) & late)[:10]} ({len(late)} late in all)\n"
                                     f"{job.output()}")
            assert job.alive(), job.output()
            if replay.error:
                raise replay.error
            if not replay.is_alive() and self.scored() >= N:
                rep = replay.report
                assert rep is not None and rep.sent == N - FIRST + TAIL and rep.errors == 0, rep and rep.summary()
                tail = set(rep.tail_ids)
                msgs = kafka_util.read_topic(self.bootstrap, self.out, idle=2, timeout=60, read_committed=True)
                got = Counter(dec.decode(m.value())["transaction_id"] for m in msgs)
                if sum(1 for k in got if k not in tail) >= N:
                    return got, tail
            time.sleep(3)


def check_exactly_once(got: Counter, tail: set[int], late: set[int]) -> None:
    assert not late, f"{len(late)} events went to the late topic, e.g. {sorted(late)[:10]}"
    main = {k: v for k, v in got.items() if k not in tail}
    dups = {k: v for k, v in main.items() if v > 1}
    assert not dups, f"{len(dups)} transactions scored more than once, e.g. {list(dups.items())[:5]}"
    missing = set(range(N)) - set(main)
    assert not missing, f"{len(missing)} transactions never scored, e.g. {sorted(missing)[:10]}"


def test_job_killed_mid_stream_resumes_from_checkpoint(kafka_bootstrap, redis_url, topic_factory, tmp_path,
                                                       model_dir):
    s = Setup(kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir)
    first = s.job()
    replay = Replay(kafka_bootstrap, s.tx, s.lb)
    second = None
    try:
        replay_first(kafka_bootstrap, s.tx, s.lb)
        # Kill once output is flowing and a checkpoint has completed, while the rest is being produced.
        while not (s.scored() >= 1000 and s.latest_checkpoint()):
            assert first.alive(), first.output()
            assert s.left() > 0, f"no output and checkpoint within {BUDGET_S}s\n{first.output()}"
            time.sleep(1)
        replay.start()
        time.sleep(3)
        before = s.scored()
        first.kill()
        killed_at = time.time() - s.t0
        assert replay.is_alive(), "the replay ended before the fault"
        assert before < N, "the job had scored everything before the fault"
        cp = s.latest_checkpoint()
        second = s.job("--restore", "latest")
        got, tail = s.wait_all_scored(second, replay)
        check_exactly_once(got, tail, s.late_ids())
        out = (tmp_path / "fraud_job.out").read_text(errors="replace")
        assert "restoring from" in out and "chk-" in out, out[-3000:]
        print(f"killed at {killed_at:.0f}s with {before} records out (checkpoint {Path(cp).name}); "
              f"all {N} scored exactly once after {time.time() - s.t0:.0f}s")
    finally:
        if second is not None:
            second.kill()
        first.kill()
        if replay.is_alive():
            replay.join(timeout=120)


def test_broker_restart_mid_stream(kafka_broker, kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir):
    if kafka_broker is None:
        pytest.skip("the broker is external or a container: this test restarts the local KRaft broker")
    s = Setup(kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir)
    job = s.job()
    replay = Replay(kafka_bootstrap, s.tx, s.lb)
    try:
        replay_first(kafka_bootstrap, s.tx, s.lb)
        while s.scored() < 1000:
            assert job.alive(), job.output()
            assert s.left() > 0, f"no output within {BUDGET_S}s\n{job.output()}"
            time.sleep(1)
        replay.start()
        time.sleep(3)
        assert replay.is_alive(), "the replay ended before the fault"
        port = kafka_broker.port
        kafka_broker.stop()
        assert not kafka_broker.running()
        time.sleep(5)
        kafka_broker.start(timeout=120)
        assert kafka_broker.port == port and kafka_broker.bootstrap == kafka_bootstrap
        got, tail = s.wait_all_scored(job, replay)
        check_exactly_once(got, tail, s.late_ids())
        print(f"broker restarted on port {port}; all {N} scored exactly once after {time.time() - s.t0:.0f}s")
    finally:
        job.kill()
        if replay.is_alive():
            replay.join(timeout=120)
        if not kafka_broker.running():
            kafka_broker.start(timeout=120)
