"""Peer (a): a Quix Streams application (quixstreams.Application) with its state in Quix's RocksDB state store.

    python -m infra.bench.peers.quix.peer --bootstrap HOST:PORT --tx-topic tx --labels-topic labels \
        --out-topic scores --redis-url redis://... [--group-id G]

The dataflow, one process, record at a time as Quix runs it:

    transactions (key: customer id, as the replay writes it)
      -> apply(customer_step, stateful=True)          per-customer windows in State, keyed by the message key
      -> group_by(terminal id, name="terminal")       repartition topic keyed by str(terminal_id)
      -> concat(labels (key: str(terminal_id), as the replay writes it))
      -> apply(terminal_step, stateful=True)          per-terminal windows and label bookkeeping in State
      -> filter(a transaction)  -> apply(score)       features (udfs.fraud_scoring.derive_features), Redis
                                                      profiles (pipelines.profiles.ProfileStore), numpy scorer
      -> to_topic(out)                                FraudScore Avro (pipelines.serde)

Keys and partitions. Quix keeps state per (stream, partition) and prefixes every state key with the message key,
so a stateful step sees exactly one customer's (or terminal's) state. The transactions topic is already keyed by
customer, so the customer step needs no repartition. The terminal step needs a transaction and the labels of its
terminal on the same partition number with the same key: the transactions are repartitioned by str(terminal_id)
(the bytes the replay uses as the labels' key), and the peer's producer uses librdkafka's default partitioner
(consistent_random, a CRC32 of the key, what the replay's producer uses) instead of Quix's murmur2, so the
repartition topic and the labels topic are co-partitioned without repartitioning the labels too. The two are
merged with concat; Quix then aligns the partitions of the two topics by Kafka timestamp (event time for a
transaction, label time for a label), as a one-consumer reader of the merged stream would see them.

The window arithmetic is the single_consumer peer's (infra.bench.peers.windows: sorted lists and prefix sums),
here kept in State values (JSON-serialised by Quix) rather than Python dicts. Emit on arrival; late and
out-of-order events are kept (no watermark). State never expires. Decode errors are counted and skipped.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from infra.bench.peers.cli import peer_parser
from infra.bench.peers.single_consumer.peer import features_for
from infra.bench.peers.windows import customer_columns, insert_cum, terminal_columns

LATE = "kept and scored (no watermark: the windows are lists in Quix State, not Quix's windowed operators)"
SETTINGS = {"delivery": "at-least-once (quixstreams processing_guarantee)", "commit_interval_s": 5.0,
            "scorer": "reference (numpy), one record at a time", "state_store": "RocksDB (Quix State), changelog on",
            "repartition": "transactions by terminal (one internal topic)", "processes": 1,
            "quixstreams": "3.28.1"}

TX_FIELDS = ("transaction_id", "customer_id", "terminal_id", "amount", "event_time")


def customer_step(value: dict, state) -> dict:
    """Per customer (the message key): adds the transaction to the customer's lists in State and returns the
    transaction with its customer columns (cust_same_ts, cust_prev_ts, cnt/sum per window) under "cust"."""
    times, cums = state.get("t", []), state.get("c", [])
    cols = customer_columns(times, cums, value["event_time"], value["amount"])
    state.set("t", times)
    state.set("c", cums)
    out = {k: value[k] for k in TX_FIELDS}
    out["produced_at"] = value.get("produced_at", 0)
    out["cust"] = cols
    return out


def _add_label(state, t: int, fraud: int) -> None:
    times, cums = state.get("lt", []), state.get("lc", [])
    insert_cum(times, cums, t, fraud)
    state.set("lt", times)
    state.set("lc", cums)


def terminal_step(value: dict, state):
    """Per terminal (the message key). A label (it has a label_time) counts once, for a transaction seen at this
    terminal (one that has not arrived yet waits for it); returns None. A transaction: returns its raw row
    (single_consumer.peer.RAW_COLUMNS order)."""
    txid = value["transaction_id"]
    if "label_time" in value:
        if state.exists(f"l{txid}"):
            return None
        if state.exists(f"s{txid}"):
            state.set(f"l{txid}", 1)
            _add_label(state, value["label_time"], int(value["label"]))
        elif not state.exists(f"w{txid}"):
            state.set(f"w{txid}", [value["label_time"], int(value["label"])])
        return None
    t = value["event_time"]
    state.set(f"s{txid}", 1)
    waiting = state.get(f"w{txid}")
    if waiting is not None and not state.exists(f"l{txid}"):
        state.delete(f"w{txid}")
        state.set(f"l{txid}", 1)
        _add_label(state, waiting[0], waiting[1])
    tt = state.get("tt", [])
    term = terminal_columns(tt, state.get("lt", []), state.get("lc", []), t)
    state.set("tt", tt)
    return [txid, value["customer_id"], value["terminal_id"], value["amount"], t, value["produced_at"],
            *value["cust"], *term]


DECISIONS = ("APPROVE", "REVIEW", "DECLINE")


def score_record(row: list, profile, scorer, review: float, decline: float) -> dict:
    """One transaction's raw row to its FraudScore record (a dict for pipelines.serde): the 32 features
    (single_consumer.peer.features_for on a batch of one), the numpy reference score and the decision."""
    names = list(scorer.features)
    c, feats = features_for([row], profile)
    score = float(scorer.score([np.ascontiguousarray(feats[k], dtype=np.float32) for k in names])[0])
    return {"transaction_id": int(c["transaction_id"][0]), "customer_id": int(c["customer_id"][0]),
            "terminal_id": int(c["terminal_id"][0]), "amount": float(c["amount"][0]),
            "event_time": int(c["event_time"][0]), "features": {k: float(feats[k][0]) for k in names},
            "profile_flags": int(feats["cust_profile_missing"][0]),  # bit 0 only: no terminal lookup
            "score": score, "decision": DECISIONS[2 if score >= decline else 1 if score >= review else 0],
            "model_version": scorer.version, "produced_at": int(c["produced_at"][0]),
            "scored_at": int(time.time() * 1000)}


def run(args: argparse.Namespace) -> int:
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer, Serializer

    from pipelines.config import load_config
    from pipelines.profiles import ProfileStore
    from pipelines.serde import DecodeError, serde
    from udfs.scoring import ReferenceScorer, resolve_model_dir

    cfg = load_config()
    scorer = ReferenceScorer(resolve_model_dir(cfg))
    store = ProfileStore(args.redis_url, max_amount=cfg.fraud.max_amount)
    review, decline = cfg.fraud.review_threshold, cfg.fraud.decline_threshold

    class AvroDeserializer(Deserializer):
        """A single-object Avro record (pipelines.serde) to a dict."""

        def __init__(self, name: str):
            super().__init__()
            self.serde = serde(name)

        def __call__(self, value: bytes, ctx):
            return self.serde.decode(value, topic=ctx.topic)

    class FraudScoreSerializer(Serializer):
        """A FraudScore record (score_record's dict) to single-object Avro (pipelines.serde)."""

        def __init__(self):
            self.serde = serde("fraud_score")

        def __call__(self, value: dict, ctx) -> bytes:
            return self.serde.encode(value)

    dead = 0

    def on_consumer_error(exc, message, logger) -> bool:
        nonlocal dead
        e = exc
        while e is not None:
            if isinstance(e, DecodeError):
                dead += 1
                return True  # counted and skipped: no dead-letter topic here
            e = e.__cause__ or e.__context__
        return False

    def profile(ids):
        p = store.lookup("customer", ids)
        return p.mean, p.std

    state_dir = tempfile.mkdtemp(prefix="quix-peer-state-")
    app = Application(broker_address=args.bootstrap, consumer_group=args.group_id, auto_offset_reset="earliest",
                      processing_guarantee="at-least-once", commit_interval=SETTINGS["commit_interval_s"],
                      state_dir=state_dir, loglevel="WARNING", on_consumer_error=on_consumer_error,
                      consumer_extra_config={"fetch.wait.max.ms": 5},
                      producer_extra_config={"partitioner": "consistent_random", "linger.ms": 5})
    tx_topic = app.topic(args.tx_topic, key_deserializer="str", value_deserializer=AvroDeserializer("transaction"))
    labels_topic = app.topic(args.labels_topic, key_deserializer="str",
                             value_deserializer=AvroDeserializer("transaction_label"))
    out_topic = app.topic(args.out_topic, key_serializer="str", value_serializer=FraudScoreSerializer())

    tx = app.dataframe(tx_topic).apply(customer_step, stateful=True)
    tx = tx.group_by(lambda v: str(v["terminal_id"]), name="terminal", key_serializer="str",
                     key_deserializer="str")
    term = tx.concat(app.dataframe(labels_topic)).apply(terminal_step, stateful=True)
    term = term.filter(lambda row: row is not None)
    term = term.apply(lambda row: score_record(row, profile, scorer, review, decline))
    term.to_topic(out_topic, key=lambda v: str(v["transaction_id"]))
    try:
        app.run()
    finally:
        print(f"[quix] dead letters {dead}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(peer_parser(__doc__, "quix-peer").parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
