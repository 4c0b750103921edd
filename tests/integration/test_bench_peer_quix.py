"""The Quix Streams benchmark peer (infra/bench/peers/quix) computes what streamscore computes: the real peer
process (a quixstreams Application, its state in Quix's RocksDB store, one repartition topic) through the real
broker and Redis, its features and scores against the pandas reference (pipelines.features) and the numpy
reference scorer, so a fast but wrong peer cannot win `make bench-peers`.

A few thousand transactions in event-time order with their labels (a label delay of an hour and a bit, so labels
reach the terminal windows of so short a sample). Every transaction must be scored exactly once.

With one partition per topic the peer reads each stream in event-time order, as the broker-free unit test
(tests/unit/test_bench_peer_quix.py) feeds it, and the same exception rule holds: rows that share a millisecond
with another row of their customer or terminal are exempt (on arrival counts only those that came first, the
reference's RANGE windows all of them). With four partitions the terminal windows see the transactions in the
order the peer read them from the partitions, not in event time, so there only the counting once, the customer
windows (one customer is one partition) and the labels reaching the terminal windows (the repartition topic and
the labels topic co-partitioned) are checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES, build_profiles, compute_features, load_transactions
from pipelines.profiles import publish
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from udfs.scoring import ReferenceScorer
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration
pytest.importorskip("quixstreams")

ROOT = Path(__file__).resolve().parents[2]
N = 3000
LABEL_DELAY_DAYS = 0.05  # 72 minutes of event time
CUSTOMER_FEATURES = [f for f in FEATURE_NAMES if f.startswith("cust_")]


@pytest.fixture
def model_dir(tmp_path):
    return write_test_model(tmp_path / "models", seed=5)


@pytest.mark.parametrize("partitions", [1, 4])
def test_quix_peer_matches_the_pandas_reference(kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir,
                                                partitions):
    cfg = load_config()
    path = cfg.path(cfg.replay.fraud_csv)
    if not path.exists():
        pytest.skip(f"no data set at {path}")
    tx_t, lb_t = topic_factory("tx", partitions=partitions), topic_factory("labels", partitions=partitions)
    out_t = topic_factory("scores", partitions=partitions)
    cp_t, tp_t = topic_factory("cprof", compacted=True), topic_factory("tprof", compacted=True)
    hist = load_transactions(path, nrows=N)
    # Profiles of the first hours only, so later customers have none (the default features and the flag).
    customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 4 * 3_600_000)
    publish(cfg, customers, terminals, bootstrap=kafka_bootstrap, redis_url=redis_url, topics=(cp_t, tp_t))
    rep = FraudReplay(cfg, ReplayOptions(rate=0, limit=N, label_delay_days=LABEL_DELAY_DAYS, progress_every_s=60),
                      bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t).run()
    assert rep.sent == N and rep.labels > N / 2

    log = open(tmp_path / "peer.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "infra.bench.peers.quix.peer", "--bootstrap", kafka_bootstrap,
                             "--tx-topic", tx_t, "--labels-topic", lb_t, "--out-topic", out_t, "--redis-url",
                             redis_url, "--group-id", f"g-{tx_t}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "STREAMSCORE_FRAUD__MODEL_DIR": str(model_dir)},
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "peer.log").read_text()[-3000:]
            msgs = kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30)
            if len(msgs) >= N or time.time() > deadline:
                break
            time.sleep(2)
        time.sleep(3)  # anything scored twice would show now
        msgs = kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)
        log.close()

    records = [serde("fraud_score").decode(m.value()) for m in msgs]
    got = Counter(r["transaction_id"] for r in records)
    sent_tx = [serde("transaction").decode(m.value()) for m in kafka_util.read_topic(kafka_bootstrap, tx_t, idle=2)]
    assert set(got) == {r["transaction_id"] for r in sent_tx}, f"scored {len(got)} of {N}"
    assert max(got.values()) == 1, "duplicate scores"

    by_id = {r["transaction_id"]: r for r in records}
    labels = pd.DataFrame([serde("transaction_label").decode(m.value())
                           for m in kafka_util.read_topic(kafka_bootstrap, lb_t, idle=2)])
    tx = pd.DataFrame(sent_tx).sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)
    ref = compute_features(tx, customers, labels)  # indexed by transaction_id
    ties = (tx.duplicated(["customer_id", "event_time"], keep=False)
            | tx.duplicated(["terminal_id", "event_time"], keep=False)).to_numpy()
    ids = tx["transaction_id"].to_numpy()[~ties]
    assert len(ids) > 0.98 * N
    peer = pd.DataFrame([by_id[i]["features"] for i in ids], index=ids)[FEATURE_NAMES]
    ref = ref.loc[ids, FEATURE_NAMES]
    assert (ref["term_nlabels_1d"] > 0).mean() > 0.1, "labels must reach the terminal windows"
    checked = FEATURE_NAMES if partitions == 1 else CUSTOMER_FEATURES
    for f in checked:
        np.testing.assert_allclose(peer[f].to_numpy(), ref[f].to_numpy(), rtol=1e-9, atol=1e-6, err_msg=f)
    if partitions == 1:
        scorer = ReferenceScorer(model_dir / "fraud-test")
        expected = scorer.score([ref[f].to_numpy(np.float32) for f in scorer.features])
        np.testing.assert_allclose([by_id[i]["score"] for i in ids], expected, rtol=1e-6, atol=1e-6)
    else:  # co-partitioned: a label reaches its terminal's state (never, were the two apart)
        assert (peer["term_nlabels_1d"] > 0).mean() > 0.5 * (ref["term_nlabels_1d"] > 0).mean()
    flags = Counter(by_id[i]["profile_flags"] & 1 for i in ids)
    assert flags[0] > 0 and flags[1] > 0, "some customers have profiles and some do not"
