"""The dashboard's Kafka side: a consumer thread that decodes the output topics and hands batches to asyncio, and a
lag poller thread that reads end offsets and the dashboard group's committed offsets.

Both threads only talk to the event loop through ``loop.call_soon_threadsafe`` / ``run_coroutine_threadsafe``;
the consumer blocks on a bounded ``asyncio.Queue`` (backpressure: a busy event loop slows consumption down instead
of growing memory).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from confluent_kafka import KafkaError, TopicPartition

from pipelines import kafka_util
from pipelines.config import TopicsConfig
from pipelines.metrics import CONSUMER_COMMITTED, CONSUMER_LAG, EVENTS_IN, KAFKA_CLIENT_RESETS, LOG_END_OFFSET
from pipelines.serde import DecodeError, serde

log = logging.getLogger("dashboard.source")

# kind -> (TopicsConfig attribute, Avro schema name or None to only count)
KINDS: dict[str, tuple[str, str | None]] = {
    "fraud_score": ("fraud_scores", "fraud_score"),
    "sentiment_score": ("post_sentiment", "sentiment_score"),
    "trend": ("sentiment_trends", "sentiment_trend"),
    "late_transaction": ("late", None),
    "late_post": ("posts_late", None),
    "dead_letter": ("dead_letter", "dead_letter"),
    # The posts themselves, for the example texts beside their scores.
    "post": ("posts", "social_post"),
    # The live quality per fraud model version (pipelines/quality.py), for the models panel.
    "model_quality": ("model_quality", "model_quality"),
}
INPUT_KINDS = {"transactions": "transactions", "posts": "posts"}

Event = tuple[str, Any]  # (kind, decoded record | None) ; kind "decode_error" for undecodable records


@dataclass
class SourceTopics:
    """kind -> topic name for what the dashboard reads, and input name -> topic for events/s in."""
    outputs: dict[str, str]
    inputs: dict[str, str]

    @classmethod
    def from_config(cls, topics: TopicsConfig) -> "SourceTopics":
        return cls({k: getattr(topics, attr) for k, (attr, _) in KINDS.items()},
                   {k: getattr(topics, attr) for k, attr in INPUT_KINDS.items()})


def decode_message(kind: str, value: bytes | None, topic: str, partition: int, offset: int) -> Event:
    schema = KINDS[kind][1]
    if schema is None:
        return kind, None
    try:
        return kind, serde(schema).decode(value, topic=topic, partition=partition, offset=offset)
    except DecodeError:
        return "decode_error", None


class KafkaSource:
    def __init__(self, bootstrap: str, topics: SourceTopics, group: str, loop: asyncio.AbstractEventLoop,
                 queue: "asyncio.Queue[list[Event]]", on_offsets: Callable[[list[dict], dict[str, int]], None],
                 lag_interval: float = 2.0, batch: int = 500):
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.loop = loop
        self.queue = queue
        self.on_offsets = on_offsets
        self.lag_interval = lag_interval
        self.batch = batch
        self.stop_event = threading.Event()
        self.kind_of = {t: k for k, t in topics.outputs.items()}
        self.threads = [threading.Thread(target=self._consume, name="dashboard-consumer", daemon=True),
                        threading.Thread(target=self._poll_offsets, name="dashboard-lag", daemon=True)]
        self.connected = False

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout)

    # ---------------------------------------------------------------------------------------------- consumer

    def _new_consumer(self, watch: kafka_util.BrokerWatch):
        c = kafka_util.consumer(self.bootstrap, self.group, read_committed=True, **{
            "enable.auto.commit": True, "auto.commit.interval.ms": 1000, "topic.metadata.refresh.interval.ms": 5000,
            **watch.conf()})
        c.subscribe(sorted(set(self.topics.outputs.values())))
        return c

    def _consume(self) -> None:
        watch = kafka_util.BrokerWatch()
        c = self._new_consumer(watch)
        try:
            while not self.stop_event.is_set():
                if watch.wedged():
                    # librdkafka#5301 after a broker restart: this consumer would never read again. The group's
                    # committed offsets carry the new one on (the page may see a second of records twice).
                    log.warning("dashboard consumer has had no broker for %.0f s; replacing it", watch.after_s)
                    KAFKA_CLIENT_RESETS.labels("dashboard", "consumer").inc()
                    kafka_util.close_quietly(c)
                    watch = kafka_util.BrokerWatch()
                    c = self._new_consumer(watch)
                msgs = c.consume(num_messages=self.batch, timeout=0.2)
                events: list[Event] = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.fatal():
                            log.error("fatal consumer error: %s", err)
                            return
                        if err.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                            log.debug("consumer error: %s", err)
                        continue
                    kind = self.kind_of.get(m.topic())
                    if kind is None:
                        continue
                    EVENTS_IN.labels("dashboard", m.topic()).inc()
                    events.append(decode_message(kind, m.value(), m.topic(), m.partition(), m.offset()))
                if events:
                    self._hand_over(events)
        except Exception:  # keep the server up; the page shows the stale data and the lag grows
            log.exception("dashboard consumer stopped")
        finally:
            kafka_util.close_quietly(c)

    def _hand_over(self, events: list[Event]) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(events), self.loop)
        while not self.stop_event.is_set():
            try:
                fut.result(timeout=0.5)
                return
            except TimeoutError:
                continue
            except Exception:  # the loop is gone
                self.stop_event.set()
                return
        fut.cancel()

    # ------------------------------------------------------------------------------------------------ offsets

    def _poll_offsets(self) -> None:
        probe = kafka_util.consumer(self.bootstrap, self.group, read_committed=True)
        watch = kafka_util.BrokerWatch()
        partitions: dict[str, list[int]] = {}
        md_at = 0.0
        wanted = sorted(set(self.topics.outputs.values()) | set(self.topics.inputs.values()))
        try:
            while not self.stop_event.is_set():
                started = time.time()
                if watch.wedged():  # only failures for a while: perhaps librdkafka#5301, a new probe is cheap
                    KAFKA_CLIENT_RESETS.labels("dashboard", "offset-probe").inc()
                    kafka_util.close_quietly(probe)
                    probe = kafka_util.consumer(self.bootstrap, self.group, read_committed=True)
                    watch = kafka_util.BrokerWatch()
                    partitions = {}
                try:
                    if time.time() - md_at > 15 or not partitions:
                        md = probe.list_topics(timeout=5).topics
                        partitions = {t: sorted(md[t].partitions) for t in wanted
                                      if t in md and md[t].error is None}
                        md_at = time.time()
                    rows, inputs = self._offsets(probe, partitions)
                    watch.note(ok=True)
                    self.connected = True
                    self.loop.call_soon_threadsafe(self.on_offsets, rows, inputs)
                except RuntimeError:  # the loop is closed
                    return
                except Exception as exc:
                    watch.note(ok=False)
                    self.connected = False
                    log.debug("offset poll failed: %s", exc)
                self.stop_event.wait(max(0.1, self.lag_interval - (time.time() - started)))
        finally:
            kafka_util.close_quietly(probe)

    def _offsets(self, probe, partitions: dict[str, list[int]]) -> tuple[list[dict], dict[str, int]]:
        outputs = sorted(set(self.topics.outputs.values()))
        tps = [TopicPartition(t, p) for t in outputs for p in partitions.get(t, [])]
        committed = {(tp.topic, tp.partition): tp.offset for tp in probe.committed(tps, timeout=5)} if tps else {}
        rows = []
        for tp in tps:
            low, high = probe.get_watermark_offsets(tp, timeout=5)
            done = committed.get((tp.topic, tp.partition), -1001)
            # No committed offset yet: everything retained is still to be read.
            lag = high - (done if done >= 0 else low)
            rows.append({"topic": tp.topic, "partition": tp.partition, "high": high,
                         "committed": done if done >= 0 else None, "lag": max(0, lag)})
            LOG_END_OFFSET.labels(tp.topic, str(tp.partition)).set(high)
            CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(max(0, lag))
            if done >= 0:
                CONSUMER_COMMITTED.labels(self.group, tp.topic, str(tp.partition)).set(done)
        inputs = {}
        for name, topic in self.topics.inputs.items():
            if topic in partitions:
                inputs[name] = sum(probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                                   for p in partitions[topic])
        return rows, inputs
