"""Fault tests for the fraud job: every input must still be scored exactly once (output read with read_committed)
after (a) the job process is killed mid-stream and restarted with `--restore latest`, (b) the Kafka broker is
restarted mid-stream on the same port while the producer and the job keep going, (c) the job's Redis is stopped and
started again mid-stream (scores made during the outage carry the profile-missing flags and default profile
features, and lookups recover once Redis is back), and (d) on the standalone cluster, the TaskManager is killed
with SIGKILL mid-stream and a new one started: the job recovers by its restart strategy from its last checkpoint.

Each test is bounded in time and stops what it started; N = 20,000 transactions plus a tail that moves the watermark
past them. The first 5,000 go out at once; once the job has scored some of them (and, for the kills, completed a
checkpoint), the other 15,000 and the tail are replayed at a steady rate in the background and the fault is injected
while they are flowing. (A job's start-up takes one to two minutes on a loaded 2-core machine, so a single paced
replay would have ended before the job even ran.)
"""

from __future__ import annotations

import inspect
import threading
import time
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from infra import services
from infra.flink_cluster import FlinkCluster
from jobs.common import latest_checkpoint
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES, build_profiles, load_transactions
from pipelines.profiles import REDIS_KEYS, ProfileStore, publish
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob, free_port_pair, job_env
from tests.pipeline_util import write_test_model

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
    return write_test_model(tmp_path / "models", seed=3)


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
    def __init__(self, kafka_bootstrap, redis_url, topic_factory, tmp_path: Path, model_dir: Path,
                 budget_s: float = BUDGET_S):
        self.bootstrap = kafka_bootstrap
        self.tmp_path = tmp_path
        self.budget_s = budget_s
        self.records: list[dict] = []  # the decoded output, read_committed, once wait_all_scored returns
        self.tx, self.lb, self.out = topic_factory("tx"), topic_factory("labels"), topic_factory("scores")
        self.late, self.dead = topic_factory("late"), topic_factory("dead")
        self.decisions = topic_factory("decisions")
        # A longer source idle timeout (2 min): while the test waits between the two parts of the replay (and while the broker
        # is down) no partition may be declared idle, or the first events after the pause on a partition that was
        # idle would be behind the watermark the others moved, and routed to the late topic instead of scored.
        self.env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(model_dir),
                    "STREAMSCORE_FRAUD__IDLENESS_MS": "120000"}
        self.t0 = time.time()

    def args(self, *extra: str) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--source-topic", self.tx, "--labels-topic", self.lb,
                "--out-topic", self.out, "--decisions-topic", self.decisions, "--late-topic", self.late,
                "--dead-topic", self.dead,
                "--group-id", f"g-{self.tx}", *extra]

    def job(self, *extra: str) -> RunningJob:
        return RunningJob("jobs/fraud_job.py", self.tmp_path, *self.args(*extra), env=self.env)

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)

    def scored(self) -> int:
        """Records in the output topic (committed or not, a cheap progress probe)."""
        try:
            return sum(kafka_util.end_offsets(self.bootstrap, self.out, timeout=5).values())
        except Exception:
            return 0

    def topic_ids(self, topic: str, schema: str, field: str) -> Counter:
        """How often each id occurs in a topic (read_committed: the job's topics are transactional)."""
        msgs = kafka_util.read_topic(self.bootstrap, topic, idle=2, timeout=60)
        return Counter(int(serde(schema).decode(m.value())[field]) for m in msgs)

    def late_ids_by_source(self) -> dict[str, Counter]:
        """How often each event id is in the late topic, by the topic it came from: late transactions and late
        labels share it, and a label's event id is its transaction's id."""
        out: dict[str, Counter] = {self.tx: Counter(), self.lb: Counter()}
        for m in kafka_util.read_topic(self.bootstrap, self.late, idle=2, timeout=60):
            r = serde("late_event").decode(m.value())
            out.setdefault(r["source_topic"], Counter())[int(r["event_id"])] += 1
        return out

    def explain(self, ids) -> str:
        """For a failure: the output records of these transaction ids, and what the job's log says about
        failovers and restores."""
        ids = set(ids)
        lines = [f"scored: {dict(r, features=None)}" for r in self.records if r["transaction_id"] in ids]
        for m in kafka_util.read_topic(self.bootstrap, self.late, idle=2, timeout=60):
            r = serde("late_event").decode(m.value())
            if int(r["event_id"]) in ids:
                lines.append(f"late: {dict(r, payload=len(r['payload']))}")
        logs = self.tmp_path / "flink-logs"
        for log in sorted(logs.glob("*.log")) if logs.exists() else []:
            for line in log.read_text(errors="replace").splitlines():
                if any(w in line for w in ("switched from RUNNING to FAILED", "Restoring job", "Failed to trigger",
                                           "Recovering", "Abort", "fenced")):
                    lines.append(f"{log.name}: {line[:300]}")
        return "\n".join(lines[-200:])

    def late_ids(self) -> set[int]:
        return set(self.topic_ids(self.late, "late_event", "event_id"))

    def latest_checkpoint(self) -> str | None:
        cfg = load_config(environ=job_env(self.tmp_path))
        return latest_checkpoint(cfg, JOB)

    def wait_all_scored(self, job: RunningJob | ClusterJob, replay: Replay) -> tuple[Counter, set[int]]:
        """Until every one of the N transactions is in the output (read_committed); returns the counts by id and
        the tail's ids, and keeps the decoded records in `self.records`."""
        dec = serde("fraud_score")
        got: Counter = Counter()
        tail: set[int] = set()
        while True:
            if self.left() <= 0:
                missing = sorted(set(range(N)) - set(got))
                late = self.late_ids()
                raise AssertionError(f"only {sum(1 for k in got if k not in tail)} of {N} scored within "
                                     f"{self.budget_s:.0f}s; missing {missing[:10]}..., of which in the late topic: "
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
                self.records = [dec.decode(m.value()) for m in msgs]
                got = Counter(r["transaction_id"] for r in self.records)
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


@pytest.mark.parametrize("changelog", [False, True], ids=["heap", "heap-changelog"])
def test_job_killed_mid_stream_resumes_from_checkpoint(kafka_bootstrap, redis_url, topic_factory, tmp_path,
                                                       model_dir, changelog):
    s = Setup(kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir)
    if changelog:  # the restore reads the materialized state plus the changelog written since
        s.env["STREAMSCORE_FLINK__STATE_CHANGELOG"] = "true"
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
        t = time.monotonic()
        kafka_broker.stop()
        assert not kafka_broker.running()
        stopped_s = time.monotonic() - t
        time.sleep(5)
        t = time.monotonic()
        kafka_broker.start(timeout=120)
        assert kafka_broker.port == port and kafka_broker.bootstrap == kafka_bootstrap
        # Printed, so a failure below shows how long the broker was away (a CI run once lost the replay's
        # producer across this restart, with no trace of why).
        print(f"broker stopped in {stopped_s:.1f}s, back after 5 s + {time.monotonic() - t:.1f}s")
        try:
            got, tail = s.wait_all_scored(job, replay)
        except BaseException:
            log = kafka_broker.server_log
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            print("last broker log lines:\n" + "\n".join(lines[-80:]))
            raise
        # librdkafka's idempotent producer may write a batch twice across a broker restart (an epoch bump after
        # a lost acknowledgement, librdkafka#4953; only transactions rule that out). A second copy behind the
        # watermark rightly goes to the late topic. So here exactly once means: every record in the transactions
        # topic comes out once, scored or late. The late topic also holds late labels (a label's event id is its
        # transaction's id), counted apart: a duplicated label once passed here for a transaction scored and late.
        sent = s.topic_ids(s.tx, "transaction", "transaction_id")
        by_source = s.late_ids_by_source()
        late, late_labels = by_source[s.tx], by_source[s.lb]
        labels = s.topic_ids(s.lb, "transaction_label", "transaction_id")
        print(f"{sum(late_labels.values())} labels late, of which written twice by the replay's producer: "
              f"{sum(1 for k in late_labels if labels[k] > 1)}")
        off = {k: (sent[k], got[k], late[k]) for k in range(N) if not sent[k] or got[k] + late[k] != sent[k]}
        assert not off, (f"{len(off)} transactions not out exactly once (sent, scored, late): {list(off.items())[:10]}"
                         f"\n{s.explain(off)}")
        print(f"{sum(1 for k in range(N) if sent[k] > 1)} transactions written twice by the replay's producer, "
              f"{sum(late.values())} records late")
        print(f"broker restarted on port {port}; all {N} out exactly once after {time.time() - s.t0:.0f}s")
    finally:
        job.kill()
        if replay.is_alive():
            replay.join(timeout=120)
        if not kafka_broker.running():
            kafka_broker.start(timeout=120)


# ------------------------------------------------------------------------------------------------ Redis restart

# What ProfileStore (pipelines/profiles.py) does in the scoring UDF, with the job's defaults: lookups are cached for
# PROFILE_TTL_S (the whole cache is dropped when older), and after a failed lookup Redis is not asked again for
# PROFILE_RETRY_S. So once Redis is down, an id still in the cache keeps its cached profile for at most PROFILE_TTL_S;
# every other lookup is "missing": default profile features and the profile_flags bits (bit 0 customer, bit 1
# terminal). A failed lookup caches nothing, so once Redis answers again every lookup is right.
_STORE_DEFAULTS = inspect.signature(ProfileStore).parameters  # the UDF builds ProfileStore(url) with its defaults
PROFILE_TTL_S = float(_STORE_DEFAULTS["ttl_s"].default)
PROFILE_RETRY_S = float(_STORE_DEFAULTS["retry_s"].default)
REDIS_DOWN_S = 15.0
# The lookups of a batch happen before its scored_at stamp: room for a slow batch on a loaded machine.
SLACK_S = 2.0


def test_redis_restart_mid_stream(kafka_bootstrap, topic_factory, tmp_path, model_dir):
    import redis

    cfg = load_config()
    # A private Redis, so that stopping it cannot hurt other tests. It is restarted on the same port with the same
    # data dir; RedisServer runs it with appendonly, so the profiles survive the restart (checked below).
    server = services.RedisServer(services.free_port(), tmp_path / "redis")
    server.start()
    s = Setup(kafka_bootstrap, server.url, topic_factory, tmp_path, model_dir)
    job = None
    replay = Replay(kafka_bootstrap, s.tx, s.lb)
    try:
        # Profiles from the first day only, so some customers and terminals of the replay have one and some not.
        hist = load_transactions(cfg.path(cfg.replay.fraud_csv), nrows=N + TAIL)
        customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 86_400_000)
        publish(cfg, customers, terminals, bootstrap=kafka_bootstrap, redis_url=server.url,
                topics=(topic_factory("cprof", compacted=True), topic_factory("tprof", compacted=True)))
        r = redis.Redis.from_url(server.url)
        has_cust = {int(k) for k in r.hkeys(REDIS_KEYS["customer"])}
        has_term = {int(k) for k in r.hkeys(REDIS_KEYS["terminal"])}
        assert len(has_cust) == len(customers) and len(has_term) == len(terminals)

        job = s.job()
        replay_first(kafka_bootstrap, s.tx, s.lb)
        while s.scored() < 1000:
            assert job.alive(), job.output()
            assert s.left() > 0, f"no output within {s.budget_s:.0f}s\n{job.output()}"
            time.sleep(1)
        replay.start()
        time.sleep(3)
        assert replay.is_alive(), "the replay ended before the fault"
        before = s.scored()
        assert before < N, "the job had scored everything before the fault"
        stop_at = time.time()
        server.stop()
        stopped_at = time.time()
        assert not server.running()
        time.sleep(REDIS_DOWN_S)
        assert job.alive(), f"the job died while Redis was down\n{job.output()}"
        restart_at = time.time()
        server.start()
        back_at = time.time()
        assert server.url == s.env["STREAMSCORE_REDIS__URL"]
        assert r.hlen(REDIS_KEYS["customer"]) == len(has_cust), "the profiles did not survive the restart"
        assert r.hlen(REDIS_KEYS["terminal"]) == len(has_term)

        got, tail = s.wait_all_scored(job, replay)
        check_exactly_once(got, tail, s.late_ids())
    finally:
        if job is not None:
            job.kill()
        if replay.is_alive():
            replay.join(timeout=120)
        server.stop()

    recs = [x for x in s.records if x["transaction_id"] not in tail]
    expected = {x["transaction_id"]: int(x["customer_id"] not in has_cust) | int(x["terminal_id"] not in has_term) << 1
                for x in recs}
    # Never a profile that Redis does not have: a flag may be set because of the outage, never cleared.
    wrong = [(x["transaction_id"], x["profile_flags"]) for x in recs
             if x["profile_flags"] & expected[x["transaction_id"]] != expected[x["transaction_id"]]]
    assert not wrong, f"{len(wrong)} scores claim a profile Redis does not hold, e.g. {wrong[:5]}"
    for x in recs:
        assert x["features"]["cust_profile_missing"] == x["profile_flags"] & 1, x

    def phase(lo: float, hi: float) -> list[dict]:
        return [x for x in recs if lo * 1000 <= x["scored_at"] < hi * 1000]

    up_before = phase(0, stop_at)
    down = phase(stopped_at + PROFILE_TTL_S + SLACK_S, restart_at)
    up_after = phase(back_at + PROFILE_RETRY_S + PROFILE_TTL_S + SLACK_S, float("inf"))
    print(f"scored before the outage {len(up_before)}, during it {len(down)}, after it {len(up_after)} "
          f"(of {len(recs)}); Redis down {restart_at - stop_at:.1f}s")
    assert up_before and down and up_after, "each phase must have scores to check"

    # Before and after the outage: exactly the profiles Redis holds.
    for name, rows in (("before the outage", up_before), ("after Redis came back", up_after)):
        bad = [(x["transaction_id"], x["profile_flags"], expected[x["transaction_id"]]) for x in rows
               if x["profile_flags"] != expected[x["transaction_id"]]]
        assert not bad, f"{name}: {len(bad)} wrong profile_flags (id, got, expected), e.g. {bad[:5]}"
    assert any(expected[x["transaction_id"]] == 0 for x in up_after), "no event with both profiles after the outage"
    # During the outage: both bits, and the default profile features (pipelines/features.py _profile_features).
    bad = [(x["transaction_id"], x["profile_flags"]) for x in down if x["profile_flags"] != 3]
    assert not bad, f"{len(bad)} scores during the outage without both profile-missing bits, e.g. {bad[:5]}"
    for x in down:
        f = x["features"]
        assert (f["cust_profile_missing"], f["amount_zscore"], f["amount_over_cust_mean"]) == (1.0, 0.0, 1.0), x


# ------------------------------------------------------------------------------------------ TaskManager killed

LIVE = ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING")


class ClusterJob:
    """A job on the standalone cluster, with the two methods wait_all_scored uses on a RunningJob."""

    def __init__(self, cluster: FlinkCluster, job_id: str):
        self.cluster = cluster
        self.job_id = job_id

    def state(self) -> str:
        for attempt in range(3):  # a loaded machine can miss one REST call
            try:
                return self.cluster.job_state(self.job_id)
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(1)
        return "UNREACHABLE"

    def alive(self) -> bool:
        return self.state() in LIVE

    def checkpoints(self) -> dict:
        try:
            return self.cluster.rest(f"/jobs/{self.job_id}/checkpoints")
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    def output(self) -> str:
        return (f"job {self.job_id} {self.state()}\n--- job exceptions ---\n{self.cluster.exceptions(self.job_id)}"
                f"\n--- cluster logs ---\n{self.cluster.log_tail(3000)}")


def test_taskmanager_killed_mid_stream_on_cluster(kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir):
    s = Setup(kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir, budget_s=540)
    # What the TaskManager's Python workers (the scoring UDF) and the job client read from the environment.
    env = job_env(tmp_path, {**s.env, "STREAMSCORE_KAFKA__BOOTSTRAP": kafka_bootstrap})
    prom = free_port_pair()
    # Heartbeats every 2 s instead of 10 s: the JobManager then sees a dead TaskManager after two failed heartbeat
    # RPCs (heartbeat.rpc-failure-threshold) in about 4 s instead of about 20 s. Everything else is the cluster's
    # own configuration, restart strategy included (fixed delay, 2 s).
    cluster = FlinkCluster(rest_port=services.free_port(), rpc_port=services.free_port(), slots=2,
                           prom_ports=f"{prom}-{prom + 1}", home=tmp_path / "flink-cluster",
                           log_dir=tmp_path / "flink-cluster-logs", env=env, conf={"heartbeat.interval": "2 s"})
    replay = Replay(kafka_bootstrap, s.tx, s.lb)
    job = None
    try:
        cluster.up(timeout=120)
        job = ClusterJob(cluster, cluster.submit("jobs/fraud_job.py", s.args(), parallelism=2, env=env,
                                                 timeout=240))
        vertices = cluster.rest(f"/jobs/{job.job_id}")["vertices"]
        assert {v["parallelism"] for v in vertices} == {2}
        replay_first(kafka_bootstrap, s.tx, s.lb)
        while not (s.scored() >= 1000 and job.checkpoints().get("counts", {}).get("completed", 0) >= 1):
            assert job.alive(), job.output()
            assert s.left() > 0, f"no output and checkpoint within {s.budget_s:.0f}s\n{job.output()}"
            time.sleep(1)
        replay.start()
        time.sleep(3)
        assert replay.is_alive(), "the replay ended before the fault"
        old_tms = {tm["id"] for tm in cluster.rest("/taskmanagers")["taskmanagers"]}
        before = s.scored()
        assert before < N, "the job had scored everything before the fault"
        killed_at = time.time() - s.t0
        pid = cluster.kill("taskmanager")
        assert pid is not None and not cluster.proc("taskmanager").running()
        # A supervisor (systemd, Kubernetes) would start a replacement: a new TaskManager process, new resource id.
        cluster.start_role("taskmanager")

        got, tail = s.wait_all_scored(job, replay)
        check_exactly_once(got, tail, s.late_ids())

        # The same job (not a resubmission) went through a restart and restored state from a checkpoint, on the
        # new TaskManager.
        assert job.state() == "RUNNING", job.output()
        restored = (job.checkpoints().get("latest") or {}).get("restored")
        assert restored and restored.get("id", 0) >= 1, f"no restored checkpoint: {job.checkpoints()}"
        tms = {tm["id"] for tm in cluster.rest("/taskmanagers")["taskmanagers"]}
        assert tms and not tms & old_tms, (old_tms, tms)
        print(f"TaskManager pid {pid} killed at {killed_at:.0f}s with {before} records out; job restored "
              f"checkpoint {restored['id']} on a new TaskManager; all {N} scored exactly once after "
              f"{time.time() - s.t0:.0f}s")
    finally:
        if replay.is_alive():
            replay.join(timeout=120)
        if job is not None:
            try:
                cluster.cancel(job.job_id, timeout=30)
            except Exception:
                pass
        cluster.down()
    assert all(v is None for v in cluster.running().values())
