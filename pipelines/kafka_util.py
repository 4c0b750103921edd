"""Small confluent-kafka helpers shared by producers, tests, the dashboard and the lag exporter."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time
from typing import Any, Iterable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# librdkafka logs "connection refused" at error level while a broker boots; our own code reports real failures.
QUIET = {"log_level": 0}


def stderr_line(message: str) -> None:
    """One line to stderr, flushed. Not print(flush=True): in a Python worker in process mode (any cluster) PyFlink
    swaps builtins.print for its CustomPrint, which takes no flush argument and raises TypeError."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def security_conf() -> dict[str, str]:
    """The configured kafka.security_protocol / sasl_* / ssl_* settings as librdkafka properties (empty for
    PLAINTEXT): every client below starts from them; a caller's own properties win."""
    from pipelines.config import load_config
    from pipelines.kafka_security import librdkafka_conf

    return librdkafka_conf(load_config().kafka)


def admin(bootstrap: str, **extra) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **QUIET, **security_conf(), **extra})


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 4, compacted: Iterable[str] = (),
                  timeout: float = 30.0, extra_config: Mapping[str, Mapping[str, str]] | None = None,
                  replication_factor: int | None = None, min_insync_replicas: int | None = None) -> list[str]:
    """Creates the topics that do not exist yet (idempotent). `compacted` ones get cleanup.policy=compact;
    `extra_config` adds topic settings by topic name. The replication factor and min.insync.replicas are the
    arguments, else kafka.replication_factor / min_insync_replicas, else min(3, brokers) and RF - 1 (at least 1).
    Existing topics are never changed: the ones whose replication factor differs are reported on stderr and
    returned."""
    from pipelines.config import load_config
    from pipelines.kafka_security import topic_layout

    client = admin(bootstrap)
    compacted = set(compacted)
    topics = list(topics)
    md = client.list_topics(timeout=timeout)
    existing = set(md.topics)
    kcfg = load_config().kafka
    rf, isr = topic_layout(kcfg, len(md.brokers))
    rf = replication_factor or rf
    if replication_factor:
        isr = kcfg.min_insync_replicas or max(1, rf - 1)
    isr = min(min_insync_replicas or isr, rf)
    differ = [t for t in topics if t in existing and md.topics[t].partitions and
              any(len(p.replicas) != rf for p in md.topics[t].partitions.values())]
    for t in differ:
        print(f"kafka: topic {t} exists with a replication factor other than {rf}; left unchanged", file=sys.stderr)
    # Record timestamps are event times, which for replays lie years back: retain by size, never by time.
    base = {"retention.ms": "-1", "retention.bytes": str(1 << 30), "min.insync.replicas": str(isr)}
    extra_config = extra_config or {}
    new = [NewTopic(t, num_partitions=partitions, replication_factor=rf,
                    config={**base, **({"cleanup.policy": "compact"} if t in compacted else {}),
                            **extra_config.get(t, {})})
           for t in topics if t not in existing]
    if not new:
        return differ
    for topic, fut in client.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_leaders(client, [t.topic for t in new], timeout)
    return differ


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
    # acks=all: a record counts as written once every in-sync replica has it (idempotence needs it too).
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000, "acks": "all",
            "enable.idempotence": True, "compression.type": "lz4", **QUIET, **security_conf()}
    conf.update(extra)
    return Producer(conf)


def close_quietly(client) -> None:
    """Closes a consumer or producer whose broker may be gone (close may raise then; nothing to do about it)."""
    try:
        client.close()
    except Exception:
        pass


class BrokerWatch:
    """Tells when a librdkafka client is stuck for good, so that its owner can replace it.

    librdkafka#5301 (open in 2.12/2.13): a metadata response listing no brokers, which a restarting KRaft broker
    sends while it is still fenced, makes librdkafka drop every broker it knows and stop re-bootstrapping: the
    client never talks to Kafka again (a CI run's producer: `brokers: none`, every leader -1, for 5 minutes). Its
    statistics show it: no configured or learned broker left (a plain outage keeps the bootstrap broker listed, in
    state DOWN). Pass `conf()` to the client and it is `wedged()` after `after_s` without a broker. Clients that
    make requests instead of polling (offset probes, admin clients) report each outcome to `note()`: requests that
    have only failed for `after_s` also count as wedged, which covers the same trap without statistics (a new
    client during a plain outage costs nothing)."""

    STATS_INTERVAL_MS = 5000
    AFTER_S = 15.0

    def __init__(self, after_s: float = AFTER_S, clock=time.monotonic):
        self.after_s = after_s
        self.clock = clock
        self.stats: dict[str, Any] | None = None  # the last statistics, for diagnostics
        self._no_brokers_since: float | None = None
        self._failing_since: float | None = None

    def conf(self) -> dict[str, Any]:
        return {"stats_cb": self.on_stats, "statistics.interval.ms": self.STATS_INTERVAL_MS}

    def on_stats(self, stats: str) -> None:
        self.stats = json.loads(stats)
        brokers = [b for b in self.stats.get("brokers", {}).values()
                   if b.get("source") in ("configured", "learned")]  # not the internal or logical ones
        if brokers:
            self._no_brokers_since = None
        elif self._no_brokers_since is None:
            self._no_brokers_since = self.clock()

    def note(self, ok: bool) -> None:
        if ok:
            self._failing_since = None
        elif self._failing_since is None:
            self._failing_since = self.clock()

    def wedged(self) -> bool:
        now = self.clock()
        return any(since is not None and now - since >= self.after_s
                   for since in (self._no_brokers_since, self._failing_since))


class ProduceError(RuntimeError):
    """Messages that failed, or that were still undelivered when the producer stopped waiting."""


class TrackedProducer:
    """The replays' producer: counts what it sends and what fails (with the component's metrics), and `drain`
    waits until every message is delivered or has failed. librdkafka keeps retrying through a broker outage until
    `message.timeout.ms`, so a fixed flush timeout shorter than that gave up on messages still on their way (a
    broker restart under a loaded CI machine). When it does give up, the error says what librdkafka saw.

    It also works around librdkafka#5301 (see BrokerWatch): when its producer is wedged with messages queued,
    the queued messages (never sent, so no duplicates) are purged and produced again by a new producer."""

    def __init__(self, bootstrap: str, component: str, **extra):
        from pipelines.metrics import EVENTS_OUT, KAFKA_CLIENT_RESETS, PRODUCE_ERRORS

        self.component = component
        self.errors = 0
        self.resets = 0
        self.error_samples: list[str] = []
        self.client_errors: list[str] = []  # error_cb: transport trouble, fatal idempotence errors
        self._resend: list[tuple[str, bytes, bytes, int]] | None = None  # set while purging a wedged producer
        self._retired: list[Producer] = []
        self._events_out = EVENTS_OUT
        self._produce_errors = PRODUCE_ERRORS
        self._resets = KAFKA_CLIENT_RESETS.labels(component, "producer")
        self._sent_counters: dict[str, Any] = {}  # per topic; labels() is a lock and a dict lookup per call
        self._conf = {"error_cb": self._on_error, **extra}
        self._bootstrap = bootstrap
        self._reset_at = time.monotonic()
        self.message_timeout_s = int(self._conf.get("message.timeout.ms", 300_000)) / 1000
        self.producer = self._new_producer()

    def _new_producer(self) -> Producer:
        # A watch per producer: a retired producer's statistics would read as wedged again.
        self.watch = BrokerWatch()
        return producer(self._bootstrap, **{**self.watch.conf(), **self._conf})

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            if self._resend is not None and err.code() == KafkaError._PURGE_QUEUE:
                self._resend.append((msg.topic(), msg.key(), msg.value(), msg.timestamp()[1]))
                return
            self.errors += 1
            self._produce_errors.labels(self.component, msg.topic()).inc()
            if len(self.error_samples) < 10:
                self.error_samples.append(str(err))

    def _on_error(self, err: KafkaError) -> None:
        text = f"{'FATAL ' if err.fatal() else ''}{err.str()}"
        if text not in self.client_errors:
            self.client_errors = (self.client_errors + [text])[-5:]

    def _wedged(self) -> bool:
        return self.watch.wedged() and len(self.producer) > 0

    def reset(self) -> int:
        """Moves the queued messages to a new producer; returns how many. In-flight ones stay with the old one
        (drain waits for them), so nothing is sent twice."""
        old = self.producer
        self._resend = []
        try:
            old.purge(in_queue=True, in_flight=False)
            while old.poll(0):  # serves the purged messages' delivery reports into _resend
                pass
        finally:
            resend, self._resend = self._resend, None
        self._retired.append(old)
        self.resets += 1
        self._resets.inc()
        self._reset_at = time.monotonic()
        self.producer = self._new_producer()
        for topic, key, value, ts in resend:
            self._produce(topic, key, value, ts)
        stderr_line(f"[{self.component}] librdkafka had no broker left (librdkafka#5301); {len(resend)} queued "
                    "messages moved to a new producer")
        return len(resend)

    def _produce(self, topic: str, key: bytes, value: bytes, ts: int) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, timestamp=ts, on_delivery=self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)
                if self._wedged():
                    self.reset()

    def produce(self, topic: str, key: bytes, value: bytes, ts: int) -> None:
        self._produce(topic, key, value, ts)
        counter = self._sent_counters.get(topic)
        if counter is None:
            counter = self._sent_counters[topic] = self._events_out.labels(self.component, topic)
        counter.inc()

    def poll(self, timeout: float = 0.0) -> None:
        self.producer.poll(timeout)
        if self._wedged():
            self.reset()

    def _flush(self, timeout: float) -> int:
        remaining = self.producer.flush(timeout)
        if remaining and self._wedged():
            self.reset()
            remaining = self.producer.flush(timeout)
        return remaining + sum(old.flush(0) for old in self._retired)

    def describe(self) -> str:
        """librdkafka's view at the last statistics tick: idempotence state, brokers, partitions holding messages."""
        s = self.watch.stats
        if s is None:
            return f"no statistics yet; client errors {self.client_errors}"
        eos = s.get("eos", {})
        brokers = ", ".join(f"{n} {b.get('state')}" for n, b in s.get("brokers", {}).items()) or "none"
        queued = [f"{t}[{p}]={q['msgq_cnt'] + q['xmit_msgq_cnt']} (leader {q.get('leader')})"
                  for t, ts in s.get("topics", {}).items() for p, q in ts.get("partitions", {}).items()
                  if p != "-1" and q.get("msgq_cnt", 0) + q.get("xmit_msgq_cnt", 0)]
        return (f"{s.get('msg_cnt', '?')} in queue; idempotence {eos.get('idemp_state', '-')} "
                f"(producer id {eos.get('producer_id', '-')}); brokers: {brokers}; queued by partition: "
                f"{', '.join(queued[:8]) or 'none'}; client errors {self.client_errors}")

    def drain(self, progress_every_s: float = 10.0) -> None:
        """Waits until every message is delivered or failed (librdkafka fails them after message.timeout.ms);
        raises ProduceError if any failed or, past that timeout and a margin, some are still queued."""
        start = time.monotonic()
        remaining = self._flush(progress_every_s)
        # A reset gives the moved messages a fresh message timeout.
        while remaining and time.monotonic() < max(start, self._reset_at) + self.message_timeout_s + 30:
            stderr_line(f"[{self.component}] waiting for {remaining} undelivered messages: {self.describe()}")
            remaining = self._flush(progress_every_s)
        if remaining or self.errors:
            raise ProduceError(f"{self.errors} delivery errors {self.error_samples}, {remaining} undelivered; "
                               f"{self.describe()}")


def consumer(bootstrap: str, group: str, *, read_committed: bool = True, **extra) -> Consumer:
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "isolation.level": "read_committed" if read_committed
            else "read_uncommitted", **QUIET, **security_conf()}
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


def consume_ready(c: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to `max_messages`: waits at most `timeout` for the first, then takes only what is already fetched.
    `consume(n, timeout)` itself waits until it has n messages or the whole timeout has passed
    (confluent-kafka-python#407), which delays every message by up to that timeout."""
    first = c.poll(timeout)
    if first is None:
        return []
    return [first, *c.consume(max_messages - 1, 0)] if max_messages > 1 else [first]
