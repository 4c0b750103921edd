"""One ordered input: both emit modes give the same features, and they are the training features.

Transactions go to a one-partition topic in event-time order (no out-of-order, late or malformed rows), so a
transaction arrives after every row of its windows and "as known at arrival" is the complete window: the job on
arrival and the job at the watermark must give exactly the features of pipelines/features.py compute_features,
which training uses. Kafka defines no order between two topics, so the labels (one partition too) are all
written before the first transaction: the terminal windows count a label from its label time, never from when it
arrived, so that is the same input as labels interleaved in time, made deterministic.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES, build_profiles, compute_features, load_transactions
from pipelines.profiles import publish
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.integration.test_fraud_job import COUNT_FEATURES, model_dir  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

N = 20_000
TAIL = 2000  # sent last, so that the watermark passes every one of the N


def run_job(emit: str, tmp_path, bootstrap: str, redis_url: str, model_dir, topics: dict, topic_factory) -> dict:
    out_t = topic_factory(f"scores-{emit}", partitions=1)
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(model_dir),
           "STREAMSCORE_FRAUD__EMIT": emit}
    work = tmp_path / emit
    work.mkdir()
    with RunningJob("jobs/fraud_job.py", work, "--bootstrap", bootstrap, "--source-topic", topics["tx"],
                    "--labels-topic", topics["labels"], "--out-topic", out_t,
                    "--decisions-topic", topic_factory(f"decisions-{emit}", partitions=1),
                    "--late-topic", topics["late"], "--dead-topic", topics["dead"],
                    "--group-id", f"g-{out_t}", env=env) as job:
        deadline = time.time() + 300
        rows: dict = {}
        while time.time() < deadline:
            assert job.alive(), job.output()
            if sum(kafka_util.end_offsets(bootstrap, out_t).values()) >= N:
                rows = {r["transaction_id"]: r for r in (serde("fraud_score").decode(m.value())
                        for m in kafka_util.read_topic(bootstrap, out_t, idle=1, timeout=60))}
                if sum(1 for i in rows if i < N) >= N:
                    break
            time.sleep(2)
    assert sum(1 for i in rows if i < N) == N, f"{emit}: scored {len(rows)} of {N}"
    return {i: r for i, r in rows.items() if i < N}


def test_ordered_input_both_modes_equal_training_features(kafka_bootstrap, redis_url, topic_factory, tmp_path,
                                                          model_dir):  # noqa: F811
    cfg = load_config()
    topics = {k: topic_factory(k, partitions=1) for k in ("tx", "labels", "late", "dead")}
    cp_t, tp_t = topic_factory("cprof", compacted=True), topic_factory("tprof", compacted=True)
    hist = load_transactions(cfg.path(cfg.replay.fraud_csv), nrows=N + TAIL)
    customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 2 * 86_400_000)
    publish(cfg, customers, terminals, bootstrap=kafka_bootstrap, redis_url=redis_url, topics=(cp_t, tp_t))

    # Labels first (their transactions go to a topic nobody reads), then the transactions alone, in order.
    common = dict(rate=0, limit=N + TAIL, label_delay_days=1.0, progress_every_s=60)
    lab = FraudReplay(cfg, ReplayOptions(**common), bootstrap=kafka_bootstrap,
                      tx_topic=topic_factory("unread", partitions=1), label_topic=topics["labels"]).run()
    rep = FraudReplay(cfg, ReplayOptions(**common, labels=False), bootstrap=kafka_bootstrap,
                      tx_topic=topics["tx"], label_topic=topics["labels"]).run()
    assert rep.sent == N + TAIL and lab.labels > 1000

    by_mode = {emit: run_job(emit, tmp_path, kafka_bootstrap, redis_url, model_dir, topics, topic_factory)
               for emit in ("arrival", "watermark")}
    assert not kafka_util.read_topic(kafka_bootstrap, topics["late"], idle=1), "an ordered input has no late rows"
    assert not kafka_util.read_topic(kafka_bootstrap, topics["dead"], idle=1)

    sent = [serde("transaction").decode(m.value()) for m in kafka_util.read_topic(kafka_bootstrap, topics["tx"],
                                                                                 idle=2)]
    tx_df = pd.DataFrame(sent)
    assert list(tx_df["event_time"]) == sorted(tx_df["event_time"]), "the input is in event-time order"
    labels = pd.DataFrame([serde("transaction_label").decode(m.value())
                           for m in kafka_util.read_topic(kafka_bootstrap, topics["labels"], idle=2)])
    ref = compute_features(tx_df, customers, labels)
    ids = list(range(N))
    ref = ref.loc[ids, FEATURE_NAMES]
    frames = {emit: pd.DataFrame([rows[i]["features"] for i in ids], index=ids)[FEATURE_NAMES]
              for emit, rows in by_mode.items()}
    # The two modes: the same features to the bit.
    assert frames["arrival"].equals(frames["watermark"]), "arrival and watermark disagree on an ordered input"
    # Both against the training features: counts exactly, amounts to float rounding.
    mismatches = {}
    for f in FEATURE_NAMES:
        a, b = frames["arrival"][f].to_numpy(), ref[f].to_numpy()
        bad = (a != b) if f in COUNT_FEATURES else ~np.isclose(a, b, rtol=1e-9, atol=1e-6)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            mismatches[f] = (int(bad.sum()), ids[i], a[i], b[i])
    assert not mismatches, f"feature mismatches (count, first id, job, reference): {mismatches}"
    scores = {emit: np.array([rows[i]["score"] for i in ids]) for emit, rows in by_mode.items()}
    assert np.array_equal(scores["arrival"], scores["watermark"])
