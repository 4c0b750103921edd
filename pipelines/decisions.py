"""The decision path: read each transaction's fraud decision as soon as the job has scored it, once.

The fraud job writes every score twice (jobs/fraud_job.py):

* ``topics.fraud_scores`` with ``flink.delivery_guarantee`` (exactly-once by default): the record of truth. A
  transactional sink publishes at the checkpoint's commit, so a ``read_committed`` reader sees a score up to one
  checkpoint interval (2 s by default) after it was made.
* ``topics.fraud_decisions`` at-least-once: visible the moment the broker has it. After a failure the job replays
  from its last checkpoint and writes the scores since then again, so a transaction can appear twice (and, on
  arrival, with features from a different arrival order).

A card terminal cannot wait for a checkpoint, and cannot take two answers: :class:`DecisionReader` reads the decision
topic uncommitted and hands out the first record per transaction id, remembering the last ``remember`` ids (a
replay reaches back one checkpoint interval, a few thousand transactions at most). The first record is the one the
caller acted on; a later copy is counted and dropped.

    reader = DecisionReader(bootstrap, cfg.topics.fraud_decisions, group="terminal-gateway")
    for score in reader.poll(timeout=0.1):
        act(score["transaction_id"], score["decision"])
"""

from __future__ import annotations

from collections import OrderedDict

from pipelines import kafka_util
from pipelines.serde import DecodeError, serde


class DecisionReader:
    def __init__(self, bootstrap: str, topic: str, group: str, *, remember: int = 1_000_000, **consumer_conf):
        self.consumer = kafka_util.consumer(bootstrap, group, read_committed=False,
                                            **{"fetch.wait.max.ms": 5, **consumer_conf})
        self.consumer.subscribe([topic])
        self.serde = serde("fraud_score")
        self.remember = remember
        self.seen: OrderedDict[int, None] = OrderedDict()
        self.duplicates = 0
        # Records that are not FraudScores (anyone with write access to the topic can put bytes there): skipped,
        # kept here with their position for the caller to log or dead-letter.
        self.undecodable: list[DecodeError] = []

    def first_time(self, transaction_id: int) -> bool:
        """True the first time an id comes (within the last `remember` ids)."""
        if transaction_id in self.seen:
            self.seen.move_to_end(transaction_id)
            self.duplicates += 1
            return False
        self.seen[transaction_id] = None
        if len(self.seen) > self.remember:
            self.seen.popitem(last=False)
        return True

    def poll(self, timeout: float = 0.1, max_messages: int = 1000) -> list[dict]:
        """The new decisions fetched within `timeout` (decoded FraudScore records), each transaction once."""
        out = []
        for m in kafka_util.consume_ready(self.consumer, max_messages, timeout):
            if m.error() is not None:
                continue
            try:
                rec = self.serde.decode(m.value(), topic=m.topic(), partition=m.partition(), offset=m.offset())
            except DecodeError as exc:
                self.undecodable = [*self.undecodable[-99:], exc]
                continue
            if self.first_time(rec["transaction_id"]):
                out.append(rec)
        return out

    def close(self) -> None:
        kafka_util.close_quietly(self.consumer)
