"""10,000 real transactions through the real broker and the real PyFlink job, each read back exactly once."""

import subprocess
import sys
from collections import Counter

import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import run_job

pytestmark = pytest.mark.integration


def test_ten_thousand_transactions_exactly_once(kafka_bootstrap, topic_factory, tmp_path):
    cfg = load_config()
    src, out, dead = topic_factory("tx"), topic_factory("tx-out"), topic_factory("dlq")
    rep = FraudReplay(cfg, ReplayOptions(rate=0, limit=10_000, labels=False, malformed_frac=0.005),
                      bootstrap=kafka_bootstrap, tx_topic=src).run()
    assert rep.sent == 10_000

    run_job("jobs/passthrough_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", src,
            "--out-topic", out, "--dead-topic", dead, "--group-id", f"g-{src}", "--bounded", timeout=300)

    sent = {}
    for m in kafka_util.read_topic(kafka_bootstrap, src, idle=2, read_committed=True):
        try:
            rec = serde("transaction").decode(m.value())
        except Exception:
            continue
        if rec["transaction_id"] >= 0:
            sent[rec["transaction_id"]] = rec
    assert len(sent) == 10_000

    got = [serde("transaction").decode(m.value()) for m in
           kafka_util.read_topic(kafka_bootstrap, out, expected=10_000, timeout=60)]
    counts = Counter(r["transaction_id"] for r in got)
    assert len(got) == 10_000, f"{len(got)} records, duplicates: {[k for k, c in counts.items() if c > 1][:5]}"
    assert set(counts) == set(sent) and max(counts.values()) == 1
    for r in got:
        assert r == sent[r["transaction_id"]]

    dl = [serde("dead_letter").decode(m.value()) for m in kafka_util.read_topic(kafka_bootstrap, dead, idle=3)]
    assert len(dl) == rep.malformed
    assert all(d["source_topic"] == src and d["reason"] and d["source_offset"] >= 0 for d in dl)
