"""Consumer-lag exporter: ``python -m infra.lag_exporter`` serves /metrics on ``metrics.lag_exporter_port``.

Every ``--interval`` seconds it asks the broker, through confluent-kafka's AdminClient, for

* the committed offsets of each configured consumer group (the fraud job's ``flink.group_id`` and the sentiment
  job's ``streamscore-sentiment``, whose Kafka sources commit on checkpoints, the dashboard's
  ``streamscore-dashboard``, and any ``--group`` given), per topic and
  partition, and the log-end (high-watermark) offset of those partitions: gauges
  ``streamscore_consumer_committed_offset``, ``streamscore_log_end_offset`` and ``streamscore_consumer_lag``;
* the event-time lag of the output topics (``fraud-scores``, ``post-sentiment``): now minus the newest ``event_time``
  found in the last committed records of each partition (``streamscore_event_time_lag_seconds``).

A missing topic or group is not an error: it simply has no series (series that disappear are removed). A broker
that is down counts ``streamscore_lag_exporter_errors_total{stage=...}`` and keeps the last values; the process never
exits on a Kafka error. :meth:`LagExporter.poll` does one round and returns a :class:`Snapshot`, so tests need no HTTP.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from pipelines import metrics
from pipelines.config import Config, load_config
from pipelines.kafka_util import QUIET, BrokerWatch, close_quietly, security_conf
from pipelines.serde import DecodeError, serde

log = logging.getLogger("streamscore.lag_exporter")

DASHBOARD_GROUP = "streamscore-dashboard"
SENTIMENT_GROUP = "streamscore-sentiment"  # jobs/sentiment_job.py --group-id default
# How many records back from the end of a partition to look for the newest event time: the tail of a topic written
# by a transactional producer (Flink's exactly-once sink) ends in commit markers, which are offsets but not records.
TAIL_RECORDS = 16
_COORDINATOR_MOVING = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                       KafkaError.COORDINATOR_LOAD_IN_PROGRESS)


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass
class Snapshot:
    """What one poll found. ``errors`` lists the stages that failed (empty when all went well)."""

    lags: list[PartitionLag] = field(default_factory=list)
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    newest_event_ms: dict[str, int] = field(default_factory=dict)
    event_time_lag_s: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def lag(self, group: str, topic: str) -> int:
        """The total lag of a group on a topic (sum over partitions)."""
        return sum(p.lag for p in self.lags if p.group == group and p.topic == topic)

    def partition_lag(self, group: str, topic: str) -> dict[int, int]:
        return {p.partition: p.lag for p in self.lags if p.group == group and p.topic == topic}


def default_output_topics(cfg: Config) -> dict[str, str]:
    """Output topic -> Avro schema name whose records carry ``event_time``."""
    return {cfg.topics.fraud_scores: "fraud_score", cfg.topics.post_sentiment: "sentiment_score"}


def default_groups(cfg: Config, extra: Iterable[str] = ()) -> list[str]:
    out: list[str] = []
    for g in (cfg.flink.group_id, SENTIMENT_GROUP, DASHBOARD_GROUP, *extra):
        if g and g not in out:
            out.append(g)
    return out


# Poll stages whose failure means Kafka did not answer (not a bad record or a bug of ours).
_KAFKA_STAGES = {"metadata", "committed-offsets", "end-offsets", "tail-read", "tail-timeout"}


class LagExporter:
    """Polls committed offsets, log-end offsets and output-topic event times; updates the gauges in metrics.py."""

    def __init__(self, bootstrap: str, groups: Iterable[str], output_topics: Mapping[str, str] | None = None, *,
                 topics: Iterable[str] | None = None, timeout: float = 5.0, clock=time.time):
        self.bootstrap = bootstrap
        self.groups = list(dict.fromkeys(groups))
        self.output_topics = dict(output_topics or {})
        # The topics whose committed offsets are looked up; None: every non-internal topic of the cluster.
        self.topics = set(topics) if topics is not None else None
        self.timeout = timeout
        self.clock = clock
        self._group_consumers: dict[str, Consumer] = {}
        self._admin: AdminClient | None = None
        self._tail: Consumer | None = None
        # (topic, partition) -> (end offset when read, newest event_time in ms or None); avoids re-reading tails.
        self._tail_cache: dict[tuple[str, int], tuple[int, int | None]] = {}
        # Label sets this instance set last round, so vanished groups/topics/partitions lose their series.
        self._series: dict[object, set[tuple[str, ...]]] = {}
        self.watch = BrokerWatch()  # its clients are replaced after 15 s of nothing but failed Kafka requests

    # ------------------------------------------------------------------------------------------------ clients

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 5000, **QUIET,
                                       **security_conf()})
        return self._admin

    @property
    def tail_consumer(self) -> Consumer:
        if self._tail is None:
            self._tail = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "streamscore-lag-exporter",
                                   "enable.auto.commit": False, "enable.partition.eof": True,
                                   "isolation.level": "read_committed", "auto.offset.reset": "latest",
                                   "socket.timeout.ms": 5000, **QUIET, **security_conf()})
        return self._tail

    def close(self) -> None:
        for c in [self._tail, *self._group_consumers.values()]:
            if c is not None:
                close_quietly(c)
        self._tail = None
        self._group_consumers.clear()
        self._admin = None

    # ----------------------------------------------------------------------------------------------- polling

    def poll(self) -> Snapshot:
        """One round: never raises for Kafka trouble; failures are counted and listed in ``Snapshot.errors``."""
        snap = Snapshot()
        started = time.perf_counter()
        if self.watch.wedged():  # perhaps librdkafka#5301 after a broker restart: they would never recover
            log.warning("lag exporter: only failed Kafka requests for %.0f s; new clients", self.watch.after_s)
            metrics.KAFKA_CLIENT_RESETS.labels("lag-exporter", "all").inc()
            self.close()
            self.watch = BrokerWatch()
        try:
            self._poll(snap)
        except Exception as exc:  # the exporter must outlive anything the broker or a record throws at it
            self._error(snap, "unexpected", exc)
        self.watch.note(ok=not _KAFKA_STAGES & set(snap.errors))
        metrics.LAG_EXPORTER_POLL_SECONDS.observe(time.perf_counter() - started)
        if "metadata" not in snap.errors:
            metrics.LAG_EXPORTER_LAST_SUCCESS.set(self.clock())
        return snap

    def _error(self, snap: Snapshot, stage: str, exc: BaseException | str) -> None:
        snap.errors.append(stage)
        metrics.LAG_EXPORTER_ERRORS.labels(stage=stage).inc()
        log.warning("lag exporter: %s failed: %s", stage, exc)

    def _poll(self, snap: Snapshot) -> None:
        try:
            md = self.admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            # Broker down: keep the last values (Prometheus sees them age via last_success), try again next time.
            self._error(snap, "metadata", exc)
            return
        partitions = {name: sorted(t.partitions) for name, t in md.topics.items() if t.error is None}

        committed: list[tuple[str, str, int, int]] = []
        for group in self.groups:
            committed.extend(self._committed(snap, group, partitions))

        wanted = {(t, p) for _, t, p, _ in committed}
        wanted |= {(t, p) for t in self.output_topics if t in partitions for p in partitions[t]}
        ends = self._end_offsets(snap, wanted)
        snap.end_offsets = ends

        for group, topic, p, off in committed:
            if (topic, p) in ends:
                snap.lags.append(PartitionLag(group, topic, p, off, ends[(topic, p)]))

        now = self.clock()
        for topic, schema in self.output_topics.items():
            if topic not in partitions:
                continue
            newest = self._newest_event_ms(snap, topic, schema, partitions[topic], ends)
            if newest is not None:
                snap.newest_event_ms[topic] = newest
                snap.event_time_lag_s[topic] = max(0.0, now - newest / 1000.0)

        if "end-offsets" not in snap.errors:
            self._publish(snap)

    def group_consumer(self, group: str) -> Consumer:
        """A consumer that never subscribes, only asks its group's coordinator for committed offsets.

        Not AdminClient.list_consumer_group_offsets: librdkafka (2.12) dereferences a null group handle when that
        admin OffsetFetch meets NOT_COORDINATOR (a fresh broker, a coordinator moving or loading), which kills the
        process with SIGSEGV (librdkafka #5040, confluent-kafka-python #1982). A consumer has a group handle.
        """
        c = self._group_consumers.get(group)
        if c is None:
            c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False,
                          "socket.timeout.ms": 5000, **QUIET, **security_conf()})
            self._group_consumers[group] = c
        return c

    def _committed(self, snap: Snapshot, group: str,
                   partitions: Mapping[str, list[int]]) -> list[tuple[str, str, int, int]]:
        tps = [TopicPartition(t, p) for t, ps in sorted(partitions.items()) if not t.startswith("__")
               and (self.topics is None or t in self.topics) for p in ps]
        if not tps:
            return []
        for attempt in range(3):
            try:
                result = self.group_consumer(group).committed(tps, timeout=self.timeout)
                break
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if attempt < 2 and isinstance(err, KafkaError) and err.code() in _COORDINATOR_MOVING:
                    time.sleep(0.5)  # the first lookup on a fresh broker creates __consumer_offsets
                    continue
                self._error(snap, "committed-offsets", exc)
                return []
        return [(group, tp.topic, tp.partition, tp.offset) for tp in result
                if tp.error is None and tp.offset >= 0]  # negative: nothing committed on that partition

    def _end_offsets(self, snap: Snapshot, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not wanted:
            return {}
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in sorted(wanted)}
        try:
            futs = self.admin.list_offsets(request, isolation_level=IsolationLevel.READ_UNCOMMITTED,
                                           request_timeout=self.timeout)
        except KafkaException as exc:
            self._error(snap, "end-offsets", exc)
            return {}
        out = {}
        failed = None
        for tp, fut in futs.items():
            try:
                out[(tp.topic, tp.partition)] = fut.result(timeout=self.timeout + 1).offset
            except Exception as exc:
                failed = exc
        if failed is not None:
            self._error(snap, "end-offsets", failed)
        return out

    def _newest_event_ms(self, snap: Snapshot, topic: str, schema: str, parts: list[int],
                         ends: Mapping[tuple[str, int], int]) -> int | None:
        """The largest event_time among the last records of every partition (reads only partitions that grew)."""
        to_read: dict[int, int] = {}
        for p in parts:
            end = ends.get((topic, p))
            if end is None or end <= 0:
                continue
            cached = self._tail_cache.get((topic, p))
            if cached is None or cached[0] != end:
                to_read[p] = end
        if to_read:
            self._read_tails(snap, topic, schema, to_read)
        values = [v for (t, p), (_, v) in self._tail_cache.items() if t == topic and p in parts and v is not None]
        return max(values) if values else None

    def _read_tails(self, snap: Snapshot, topic: str, schema: str, ends: dict[int, int]) -> None:
        c = self.tail_consumer
        try:
            starts = {}
            for p, end in ends.items():
                low, _ = c.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout)
                starts[p] = max(low, end - TAIL_RECORDS)
            c.assign([TopicPartition(topic, p, off) for p, off in starts.items()])
            newest: dict[int, int | None] = {p: None for p in ends}
            pending = set(ends)
            deadline = time.monotonic() + self.timeout
            decoder = serde(schema)
            while pending and time.monotonic() < deadline:
                for m in c.consume(num_messages=500, timeout=0.2):
                    p = m.partition()
                    if m.error() is not None:
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            pending.discard(p)
                        continue
                    if m.offset() >= ends.get(p, 0) - 1:
                        pending.discard(p)
                    try:
                        et = int(decoder.decode(m.value(), topic=topic, partition=p, offset=m.offset())["event_time"])
                    except (DecodeError, KeyError, TypeError, ValueError) as exc:
                        self._error(snap, "decode", exc)
                        continue
                    if newest.get(p) is None or et > newest[p]:
                        newest[p] = et
            for p, end in ends.items():
                old = self._tail_cache.get((topic, p))
                value = newest[p] if newest[p] is not None else (old[1] if old else None)
                if p not in pending:
                    self._tail_cache[(topic, p)] = (end, value)
                elif value is not None:
                    # Not finished (open transaction, slow broker): remember what we saw, retry next round.
                    self._tail_cache[(topic, p)] = (-1, value)
            if pending:
                self._error(snap, "tail-timeout", f"{topic} partitions {sorted(pending)} not read to the end")
        except KafkaException as exc:
            self._error(snap, "tail-read", exc)
        finally:
            try:
                c.unassign()
            except KafkaException:
                pass

    # ------------------------------------------------------------------------------------------------ gauges

    def _publish(self, snap: Snapshot) -> None:
        committed_series, lag_series, end_series, et_series = set(), set(), set(), set()
        for pl in snap.lags:
            labels = (pl.group, pl.topic, str(pl.partition))
            metrics.CONSUMER_COMMITTED.labels(*labels).set(pl.committed)
            metrics.CONSUMER_LAG.labels(*labels).set(pl.lag)
            committed_series.add(labels)
            lag_series.add(labels)
        for (topic, p), end in snap.end_offsets.items():
            labels = (topic, str(p))
            metrics.LOG_END_OFFSET.labels(*labels).set(end)
            end_series.add(labels)
        for topic, lag in snap.event_time_lag_s.items():
            metrics.EVENT_TIME_LAG_SECONDS.labels(topic).set(lag)
            et_series.add((topic,))
        for gauge, now in ((metrics.CONSUMER_COMMITTED, committed_series), (metrics.CONSUMER_LAG, lag_series),
                           (metrics.LOG_END_OFFSET, end_series), (metrics.EVENT_TIME_LAG_SECONDS, et_series)):
            for gone in self._series.get(gauge, set()) - now:
                try:
                    gauge.remove(*gone)
                except KeyError:
                    pass
            self._series[gauge] = now


def run(exporter: LagExporter, interval: float, stop: threading.Event) -> None:
    while not stop.is_set():
        snap = exporter.poll()
        log.info("lag exporter: %d partitions, event-time lag %s, errors %s", len(snap.lags),
                 {t: round(v, 1) for t, v in snap.event_time_lag_s.items()}, snap.errors or "none")
        stop.wait(interval)
    exporter.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", action="append", default=[], help="another consumer group to watch (repeatable)")
    ap.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: from the config)")
    ap.add_argument("--port", type=int, default=None, help="/metrics port (default: metrics.lag_exporter_port)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    ap.add_argument("--once", action="store_true", help="poll once, print the result and exit (no HTTP)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config()
    exporter = LagExporter(args.bootstrap or cfg.kafka.bootstrap_servers, default_groups(cfg, args.group),
                           default_output_topics(cfg))
    if args.once:
        snap = exporter.poll()
        for pl in snap.lags:
            print(f"{pl.group}\t{pl.topic}[{pl.partition}]\tcommitted={pl.committed}\tend={pl.end}\tlag={pl.lag}")
        for topic, lag in snap.event_time_lag_s.items():
            print(f"event-time lag\t{topic}\t{lag:.1f}s")
        if snap.errors:
            print("errors: " + ", ".join(snap.errors))
        exporter.close()
        return 0
    port = args.port if args.port is not None else cfg.metrics.lag_exporter_port
    metrics.serve(port)
    log.info("lag exporter: /metrics on %s:%d, groups %s, output topics %s, every %.1fs", cfg.metrics.host, port,
             exporter.groups, list(exporter.output_topics), args.interval)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(exporter, args.interval, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
