"""The Quix Streams peer computes what streamscore computes: its per-record steps (customer_step, terminal_step
on Quix's own RocksDB state store, score_record) fed the replay sample without a broker, against the pandas
reference (pipelines.features) and the numpy reference scorer, on the sample and the rules of
tests/unit/test_bench_peers.py. Each record is routed as the peer's dataflow routes it: a transaction to its
customer's state (the topic's key), then with a label to its terminal's state (the repartition key)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import features as F
from tests.unit.test_bench_peers import _events, _profile_lookup, check_against_reference, sample  # noqa: F401 (fixture)

pytest.importorskip("quixstreams")

N_SCORED = 3000  # transactions also scored one at a time through score_record (the peer's own per-record path)


def _rows(df, labels, tmp_path):
    from quixstreams.state.rocksdb import RocksDBStorePartition

    from infra.bench.peers.quix.peer import customer_step, terminal_step

    part = RocksDBStorePartition(str(tmp_path / "state"))
    rows = []
    try:
        tx = part.begin()
        for i, (kind, rec) in enumerate(_events(df, labels)):
            if kind == "label":
                assert terminal_step(rec, tx.as_state(prefix=str(rec["terminal_id"]))) is None
            else:
                v = customer_step(rec, tx.as_state(prefix=str(rec["customer_id"])))
                rows.append(terminal_step(v, tx.as_state(prefix=str(v["terminal_id"]))))
            if i % 20_000 == 19_999:  # commit as the peer's checkpoints do: later reads come from RocksDB
                tx.prepare()
                tx.flush()
                tx = part.begin()
        tx.prepare()
        tx.flush()
    finally:
        part.close()
    return rows


def test_quix_peer_matches_the_pandas_reference(sample, tmp_path):  # noqa: F811
    from infra.bench.peers.quix.peer import score_record

    df, customers, labels = sample
    rows = _rows(df, labels, tmp_path)
    lookup = _profile_lookup(customers)
    feats, ok, scorer, want = check_against_reference(df, customers, labels, rows)
    # the peer scores one record at a time: the same scores and the FraudScore columns it encodes
    idx = np.flatnonzero(ok)[-N_SCORED:]
    one = [score_record(rows[i], lookup, scorer, 0.5, 0.9) for i in idx]
    np.testing.assert_allclose([r["score"] for r in one], np.asarray(want)[-N_SCORED:], rtol=1e-6, atol=1e-6)
    assert [r["transaction_id"] for r in one] == df["transaction_id"].to_numpy()[idx].tolist()
    for r, i in zip(one, idx):
        assert list(r["features"]) == list(scorer.features)
        assert r["features"] == pytest.approx({k: feats[k][i] for k in scorer.features}, rel=1e-12)
    from pipelines.serde import serde

    s = serde("fraud_score")  # what the peer's Quix serializer writes
    optional = {"shadow_version": None, "shadow_score": None, "ab_arm": None, "rule_set_version": 0, "rule": None}
    assert [s.decode(s.encode(r)) for r in one[:100]] == [{**r, **optional} for r in one[:100]]
