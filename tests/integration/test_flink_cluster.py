"""The unchanged fraud job on a standalone Flink cluster (JobManager + TaskManager as separate JVMs) at parallelism 2.

The cluster comes from infra/flink_cluster.py on free ports, the job is submitted with `flink run -d -p 2 -py
jobs/fraud_job.py` against the session's real broker and Redis, 20,000 transactions (plus a tail that moves the
watermark past them) are replayed into 4-partition topics, and every one of the 20,000 must be in the output topic,
read with read_committed, exactly once. The whole test is bounded: it fails with the cluster's logs after about six
minutes, and the cluster is stopped in a finally.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from infra.flink_cluster import FlinkCluster
from infra.services import free_port
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import free_port_pair, job_env
from tests.pipeline_util import write_test_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 20_000
TAIL = 2_000
BUDGET_S = 360


@pytest.fixture
def model_dir(tmp_path):
    return write_test_model(tmp_path / "models", seed=3)


def test_fraud_job_on_standalone_cluster_parallelism_2(kafka_bootstrap, redis_url, topic_factory, tmp_path,
                                                       model_dir):
    t0 = time.time()
    cfg = load_config()
    tx_t, lb_t, out_t = topic_factory("tx"), topic_factory("labels"), topic_factory("scores")
    late_t, dead_t = topic_factory("late"), topic_factory("dead")

    # What the TaskManager's Python workers (the scoring UDF) and the job client read from the environment.
    env = job_env(tmp_path, {"STREAMSCORE_REDIS__URL": redis_url,
                             "STREAMSCORE_FRAUD__MODEL_DIR": str(model_dir),
                             "STREAMSCORE_KAFKA__BOOTSTRAP": kafka_bootstrap})
    prom = free_port_pair()
    cluster = FlinkCluster(rest_port=free_port(), rpc_port=free_port(), slots=2, prom_ports=f"{prom}-{prom + 1}",
                           home=tmp_path / "flink-cluster", log_dir=tmp_path / "flink-cluster-logs", env=env)
    job_id = None

    def fail(msg: str) -> None:
        details = cluster.exceptions(job_id) if job_id else ""
        raise AssertionError(f"{msg}\n--- job exceptions ---\n{details}\n--- cluster logs ---\n"
                             f"{cluster.log_tail(3000)}")

    try:
        cluster.up(timeout=120)
        ov = cluster.overview()
        assert ov["taskmanagers"] == 1 and ov["slots-total"] == 2
        job_id = cluster.submit("jobs/fraud_job.py",
                                ["--bootstrap", kafka_bootstrap, "--source-topic", tx_t, "--labels-topic", lb_t,
                                 "--out-topic", out_t, "--decisions-topic", topic_factory("decisions"),
                                 "--late-topic", late_t, "--dead-topic", dead_t,
                                 "--group-id", f"g-{tx_t}"],
                                parallelism=2, env=env, timeout=180)
        vertices = cluster.rest(f"/jobs/{job_id}")["vertices"]
        assert {v["parallelism"] for v in vertices} == {2}, [(v["name"][:40], v["parallelism"]) for v in vertices]

        opts = ReplayOptions(rate=0, limit=N, tail=TAIL, labels=True)
        rep = FraudReplay(cfg, opts, bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t).run()
        assert rep.sent == N + TAIL and rep.errors == 0
        tail = set(rep.tail_ids)

        got: Counter = Counter()
        dec = serde("fraud_score")
        while True:
            if time.time() - t0 > BUDGET_S:
                fail(f"after {BUDGET_S}s only {sum(1 for k in got if k not in tail)} of {N} scored")
            state = cluster.job_state(job_id)
            if state not in ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING"):
                fail(f"job is {state}")
            if sum(kafka_util.end_offsets(kafka_bootstrap, out_t).values()) >= N:
                msgs = kafka_util.read_topic(kafka_bootstrap, out_t, idle=2, timeout=60, read_committed=True)
                got = Counter(dec.decode(m.value())["transaction_id"] for m in msgs)
                if sum(1 for k in got if k not in tail) >= N:
                    break
            time.sleep(3)
        elapsed = time.time() - t0

        main = {k: v for k, v in got.items() if k not in tail}
        dups = {k: v for k, v in main.items() if v > 1}
        assert not dups, f"{len(dups)} transactions scored more than once, e.g. {list(dups.items())[:5]}"
        assert set(main) == set(range(N)), f"missing {sorted(set(range(N)) - set(main))[:10]}"
        # Both subtasks of the scoring operator did work.
        detail = cluster.rest(f"/jobs/{job_id}")
        assert detail["state"] == "RUNNING"
        # The JobManager's reporter has the job's state and restart count, which FlinkJobDown and
        # FlinkJobRestartLoop read; the REST API has the count the dashboard shows. Which JVM took which port of the
        # range is whichever bound first.
        import re
        import urllib.request

        from pipelines.flink_rest import job_status

        text = ""
        for port in (prom, prom + 1):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text += r.read().decode()
        job_name = r'job_name="streamscore_fraud"'
        assert re.search(rf'^flink_jobmanager_job_runningState{{[^}}]*{job_name}[^}}]*}} 1\.0$', text, re.M), text[:2000]
        assert re.search(rf'^flink_jobmanager_job_numRestarts{{[^}}]*{job_name}', text, re.M)
        assert job_status(cluster.rest_url, "streamscore-fraud").restarts >= 0
        print(f"standalone cluster, parallelism 2: {N} scored exactly once in {elapsed:.0f}s from cluster start")
    finally:
        if job_id:
            try:
                cluster.cancel(job_id, timeout=30)
            except Exception:
                pass
        cluster.down()
    assert all(v is None for v in cluster.running().values())
