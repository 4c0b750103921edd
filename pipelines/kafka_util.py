"""Small confluent-kafka helpers shared by producers, tests, the dashboard and the lag exporter."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Iterable, Iterator, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# librdkafka logs "connection refused" at error level while a broker boots; our own code reports real failures.
QUIET = {"log_level": 0}


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **QUIET})


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 4, compacted: Iterable[str] = (),
                  timeout: float = 30.0, extra_config: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Creates the topics that do not exist yet (idempotent). `compacted` ones get cleanup.policy=compact;
    `extra_config` adds topic settings by topic name."""
    client = admin(bootstrap)
    compacted = set(compacted)
    existing = set(client.list_topics(timeout=timeout).topics)
    # Record timestamps are event times, which for replays lie years back: retain by size, never by time.
    base = {"retention.ms": "-1", "retention.bytes": str(1 << 30)}
    extra_config = extra_config or {}
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1,
                    config={**base, **({"cleanup.policy": "compact"} if t in compacted else {}),
                            **extra_config.get(t, {})})
           for t in topics if t not in existing]
    if not new:
        return
    for topic, fut in client.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_leaders(client, [t.topic for t in new], timeout)


def _wait_for_leaders(client: AdminClient, topics: list[str], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        md = client.list_topics(timeout=timeout).topics
        if all(t in md and md[t].partitions and all(p.leader >= 0 for p in md[t].partitions.values())
               for t in topics):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {topics} have no leaders after {timeout}s")


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    topics = list(topics)
    if topics:
        # Best effort, and bounded: a test's teardown once waited on a deletion future until its timeout struck.
        for fut in admin(bootstrap).delete_topics(topics, operation_timeout=30, request_timeout=30).values():
            try:
                fut.result(timeout=60)
            except (KafkaException, concurrent.futures.TimeoutError):
                pass


def producer(bootstrap: str, **extra) -> Producer:
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000,
            "enable.idempotence": True, "compression.type": "lz4", **QUIET}
    conf.update(extra)
    return Producer(conf)


def consumer(bootstrap: str, group: str, *, read_committed: bool = True, **extra) -> Consumer:
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "isolation.level": "read_committed" if read_committed
            else "read_uncommitted", **QUIET}
    conf.update(extra)
    return Consumer(conf)


def end_offsets(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    c = consumer(bootstrap, "streamscore-offsets-probe")
    try:
        md = c.list_topics(topic, timeout=timeout).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in md.partitions}
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, *, expected: int | None = None, timeout: float = 60.0,
               idle: float = 5.0, read_committed: bool = True) -> list[Message]:
    """Reads a topic from the beginning until `expected` messages arrived, or nothing new came for `idle`
    seconds after the end offsets were reached, or `timeout` passed."""
    import uuid

    c = consumer(bootstrap, f"streamscore-reader-{uuid.uuid4().hex[:8]}", read_committed=read_committed)
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out: list[Message] = []
    deadline = time.time() + timeout
    last_new = time.time()
    try:
        while time.time() < deadline:
            batch = c.consume(num_messages=5000, timeout=0.5)
            fresh = [m for m in batch if m.error() is None]
            out.extend(fresh)
            if fresh:
                last_new = time.time()
            if expected is not None and len(out) >= expected:
                # Keep reading briefly so that a duplicate would show up too.
                if time.time() - last_new > min(idle, 2.0):
                    break
            elif expected is None and time.time() - last_new > idle:
                break
        return out
    finally:
        c.close()


def iter_messages(c: Consumer, timeout: float = 1.0) -> Iterator[Message]:
    while True:
        m = c.poll(timeout)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(m.error())
        yield m
