"""Peer (c): one confluent-kafka consumer process with pandas/numpy, what many teams start with.

    python -m infra.bench.peers.single_consumer.peer --bootstrap HOST:PORT --tx-topic tx --labels-topic labels \
        --out-topic scores --redis-url redis://... [--group-id G] [--max-events N]

One process, one consumer subscribed to the transactions and labels topics: it decodes each Avro record (fastavro,
pipelines.serde), keeps the windows in Python dicts of sorted lists (bisect + prefix sums), looks the customer
profiles up in the same Redis as streamscore (pipelines.profiles.ProfileStore), derives the 32 features
(udfs.fraud_scoring.derive_features, the job's own derivation), scores a poll's batch with the numpy reference
scorer (udfs.scoring.ReferenceScorer), encodes FraudScore records (pipelines.serde.BatchEncoder) and produces them
to the output topic. Offsets are committed after each batch's output is flushed: at-least-once.

Semantics: emit on arrival (a transaction sees the rows of its key that arrived before it with a time in
[t - W, t]); late and out-of-order events are kept (there is no watermark). State is never expired: it grows with
the keys and the backlog (the RSS figure shows it).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from infra.bench.peers.cli import peer_parser
from infra.bench.peers.windows import customer_columns, insert_cum, terminal_columns
from pipelines.features import CUSTOMER_WINDOWS, TERMINAL_WINDOWS

LATE = "kept and scored (no watermark)"
SETTINGS = {"delivery": "at-least-once", "scorer": "reference (numpy)", "processes": 1}

RAW_COLUMNS = (["transaction_id", "customer_id", "terminal_id", "amount", "event_time", "produced_at",
                "cust_same_ts", "cust_prev_ts"] + [f"cust_{k}_{w}" for w in CUSTOMER_WINDOWS for k in ("cnt", "sum")]
               + [f"term_{k}_{w}" for w in TERMINAL_WINDOWS for k in ("cnt", "nlabels", "nfraud")])


class WindowState:
    """Per-customer and per-terminal windows, fed one decoded record at a time in arrival order."""

    def __init__(self) -> None:
        self.cust: dict[int, tuple[list[int], list[float]]] = {}   # times, prefix sums of amounts
        self.term_tx: dict[int, list[int]] = {}                     # transaction times
        self.term_lab: dict[int, tuple[list[int], list[int]]] = {}  # counted label times, prefix sums of frauds
        self.seen: dict[int, int] = {}          # transaction id -> its terminal (a label counts only for those)
        self.labelled: set[int] = set()         # transactions with a counted label (repeats do not count)
        self.waiting: dict[int, tuple[int, int, int]] = {}  # label before its transaction: txid -> (term, t, fraud)

    def _add_label(self, term: int, t: int, fraud: int) -> None:
        times, cums = self.term_lab.setdefault(term, ([], []))
        insert_cum(times, cums, t, fraud)

    def label(self, rec: dict) -> None:
        txid, term, t, fraud = rec["transaction_id"], rec["terminal_id"], rec["label_time"], int(rec["label"])
        if txid in self.labelled:
            return
        if self.seen.get(txid) == term:
            self.labelled.add(txid)
            self._add_label(term, t, fraud)
        elif txid not in self.seen and txid not in self.waiting:
            self.waiting[txid] = (term, t, fraud)

    def transaction(self, rec: dict, row: list) -> None:
        """Appends the transaction's raw columns (RAW_COLUMNS order) to `row`."""
        txid, cust, term, t, amount = (rec["transaction_id"], rec["customer_id"], rec["terminal_id"],
                                       rec["event_time"], rec["amount"])
        times, cums = self.cust.setdefault(cust, ([], []))
        row += [txid, cust, term, amount, t, rec.get("produced_at", 0), *customer_columns(times, cums, t, amount)]
        self.seen[txid] = term
        if txid in self.waiting and txid not in self.labelled:
            lterm, lt, fraud = self.waiting.pop(txid)
            if lterm == term:
                self.labelled.add(txid)
                self._add_label(term, lt, fraud)
        ltimes, lcums = self.term_lab.get(term, ((), ()))
        row += terminal_columns(self.term_tx.setdefault(term, []), ltimes, lcums, t)


def features_for(rows: list[list], profile: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> dict:
    """The 32 features (pipelines.features.FEATURE_NAMES) of a batch of raw rows, plus the raw columns."""
    from udfs.fraud_scoring import derive_features

    a = np.asarray(rows, dtype=np.float64).reshape(-1, len(RAW_COLUMNS))
    c = {name: a[:, i] for i, name in enumerate(RAW_COLUMNS)}
    for k in ("transaction_id", "customer_id", "terminal_id", "event_time", "produced_at", "cust_prev_ts"):
        c[k] = np.asarray([r[RAW_COLUMNS.index(k)] for r in rows], dtype=np.int64)
    mean, std = profile(c["customer_id"])
    return c, derive_features(c, mean, std)


def run(args: argparse.Namespace) -> int:
    from pipelines import kafka_util
    from pipelines.config import load_config
    from pipelines.profiles import ProfileStore
    from pipelines.serde import BatchEncoder, DecodeError, serde
    from udfs.scoring import ReferenceScorer, resolve_model_dir

    cfg = load_config()
    scorer = ReferenceScorer(resolve_model_dir(cfg))
    names = list(scorer.features)
    store = ProfileStore(args.redis_url, max_amount=cfg.fraud.max_amount)
    tx_serde, label_serde = serde("transaction"), serde("transaction_label")
    encoder = BatchEncoder("fraud_score")
    consumer = kafka_util.consumer(args.bootstrap, args.group_id, read_committed=False,
                                   **{"fetch.wait.max.ms": 5})
    consumer.subscribe([args.tx_topic, args.labels_topic])
    producer = kafka_util.producer(args.bootstrap)
    state = WindowState()
    review, decline = cfg.fraud.review_threshold, cfg.fraud.decline_threshold

    def profile(ids):
        p = store.lookup("customer", ids)
        return p.mean, p.std

    done = dead = 0
    try:
        while args.max_events <= 0 or done < args.max_events:
            msgs = kafka_util.consume_ready(consumer, 5000, 0.2)
            rows: list = []
            for m in msgs:
                if m.error() is not None:
                    continue
                try:
                    if m.topic() == args.labels_topic:
                        state.label(label_serde.decode(m.value()))
                    else:
                        row: list = []
                        state.transaction(tx_serde.decode(m.value()), row)
                        rows.append(row)
                except DecodeError:
                    dead += 1
            if not rows:
                continue
            c, feats = features_for(rows, profile)
            n = len(rows)
            cols = [np.ascontiguousarray(feats[k], dtype=np.float32) for k in names]
            scores = np.asarray(scorer.score(cols), dtype=np.float64)
            decision = np.where(scores >= decline, 2, np.where(scores >= review, 1, 0))
            now = int(time.time() * 1000)
            out = encoder.encode({
                "transaction_id": c["transaction_id"], "customer_id": c["customer_id"],
                "terminal_id": c["terminal_id"], "amount": c["amount"], "event_time": c["event_time"],
                "features": (names, np.stack([feats[k] for k in names], axis=1)),
                "profile_flags": feats["cust_profile_missing"].astype(np.int64),  # bit 0 only: no terminal lookup
                "score": scores, "decision": decision, "model_version": scorer.version,
                "produced_at": c["produced_at"], "scored_at": np.full(n, now, np.int64)}, n)
            for v in out:
                while True:
                    try:
                        producer.produce(args.out_topic, v)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
            producer.flush(10)
            consumer.commit(asynchronous=True)
            done += n
    finally:
        producer.flush(10)
        consumer.close()
    print(f"[single-consumer] scored {done}, dead letters {dead}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = peer_parser(__doc__, "single-consumer")
    ap.add_argument("--max-events", type=int, default=0, help="stop after this many scores (0: run until killed)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
