"""Test helpers for the replays (pipelines/replay/): a producer that records what FraudReplay.run sends."""

from __future__ import annotations


class RecordingProducer:
    """Stands in for confluent-kafka's Producer: keeps what FraudReplay.run produces, in order."""

    def __init__(self):
        self.sent: list[tuple[str, bytes, int]] = []

    def produce(self, topic, value=None, key=None, timestamp=None, on_delivery=None):
        self.sent.append((topic, value, timestamp))

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=None):
        return 0
