"""The first Flink function every record meets: decode, validate, and split off late events and dead letters.

Splits, as bytewax does, the ``oks`` (typed rows for the rest of the job) from the errors: records that do not
decode or break a rule go to the dead-letter side output with the reason, the raw bytes and the source
topic/partition/offset; events behind the current watermark go to the late side output with the watermark they
missed. Nothing raises out of ``process_element``: one bad record never fails the job.

Flink SQL drops late rows silently, so this router runs before any SQL operator and compares each event's own
event time with ``current_watermark()``: an event with ``event_time <= watermark`` is late.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction

from pipelines.serde import DecodeError, check_transaction, serde

LONG_MIN = -(2**63)


def kv_type():
    """(key, value) bytes: what our raw-format Kafka sinks take. A fresh object per call (OutputTag pickling)."""
    return Types.ROW_NAMED(["key", "value"], [Types.PRIMITIVE_ARRAY(Types.BYTE()),
                                              Types.PRIMITIVE_ARRAY(Types.BYTE())])


def late_tag(name: str = "late") -> OutputTag:
    return OutputTag(name, kv_type())


def dead_letter_tag(name: str = "dead-letter") -> OutputTag:
    return OutputTag(name, kv_type())


def _check_label(rec: dict, now_ms: int, max_future_ms: int) -> tuple[str, str] | None:
    if rec["label"] not in (0, 1):
        return "bad-label", f"label {rec['label']} is not 0 or 1"
    if rec["label_time"] <= 0 or rec["label_time"] > now_ms + max_future_ms:
        return "bad-timestamp", f"label_time {rec['label_time']} is out of range"
    return None


def _check_post(rec: dict, now_ms: int, max_future_ms: int) -> tuple[str, str] | None:
    if not rec["text"].strip():
        return "empty-text", "post text is empty"
    if rec["event_time"] <= 0 or rec["event_time"] > now_ms + max_future_ms:
        return "bad-timestamp", f"event_time {rec['event_time']} is out of range"
    return None


@dataclass(frozen=True)
class RecordKind:
    schema: str
    time_field: str
    id_field: str
    check: Callable[[dict, int, int], tuple[str, str] | None]
    fields: tuple[str, ...]
    types: Callable[[], list]

    def row_type(self):
        return Types.ROW_NAMED(list(self.fields), self.types())

    def to_row(self, rec: dict, ingest_ms: int) -> Row:
        return Row(*[rec[f] if f != "ingest_ms" else ingest_ms for f in self.fields])


KINDS: dict[str, RecordKind] = {
    "transaction": RecordKind(
        "transaction", "event_time", "transaction_id", check_transaction,
        ("transaction_id", "customer_id", "terminal_id", "amount", "event_time", "produced_at", "ingest_ms"),
        lambda: [Types.LONG(), Types.LONG(), Types.LONG(), Types.DOUBLE(), Types.LONG(), Types.LONG(),
                 Types.LONG()]),
    "transaction_label": RecordKind(
        "transaction_label", "label_time", "transaction_id", _check_label,
        ("transaction_id", "customer_id", "terminal_id", "label", "tx_time", "label_time"),
        lambda: [Types.LONG(), Types.LONG(), Types.LONG(), Types.INT(), Types.LONG(), Types.LONG()]),
    "social_post": RecordKind(
        "social_post", "event_time", "post_id", _check_post,
        ("post_id", "author", "text", "topic", "language", "event_time", "produced_at", "ingest_ms"),
        lambda: [Types.STRING(), Types.STRING(), Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(),
                 Types.LONG(), Types.LONG()]),
}


class DecodeRouter(ProcessFunction):
    """Input rows: (key, value, topic, partition, offset) from a raw-format Kafka table."""

    def __init__(self, kind: str, *, max_future_ms: int, late: OutputTag | None, dead: OutputTag,
                 component: str, metrics_port: int = 0):
        self.kind_name = kind
        self.max_future_ms = max_future_ms
        self.late = late
        self.dead = dead
        self.component = component
        self.metrics_port = metrics_port

    def open(self, runtime_context) -> None:
        from pipelines import metrics

        self.kind = KINDS[self.kind_name]
        self.serde = serde(self.kind.schema)
        self.dl_serde = serde("dead_letter")
        self.late_serde = serde("late_event")
        self.m = metrics
        self.in_counter = metrics.EVENTS_IN.labels(self.component, self.kind.schema)
        metrics.serve(self.metrics_port)

    def _dead(self, key, value, topic, partition, offset, reason: str, error: str):
        self.m.DEAD_LETTERS.labels(self.component, reason).inc()
        out = self.dl_serde.encode({
            "source_topic": topic or "", "source_partition": partition if partition is not None else -1,
            "source_offset": offset if offset is not None else -1, "reason": reason, "error": error[:2000],
            "key": bytes(key) if key is not None else None, "payload": bytes(value or b""),
            "failed_at": int(time.time() * 1000)})
        return self.dead, Row(bytes(key) if key is not None else b"", out)

    def process_element(self, value, ctx: ProcessFunction.Context):
        key, raw, topic, partition, offset = value[0], value[1], value[2], value[3], value[4]
        self.in_counter.inc()
        now_ms = int(time.time() * 1000)
        try:
            rec = self.serde.decode(raw, topic=topic, partition=partition, offset=offset)
            problem = self.kind.check(rec, now_ms, self.max_future_ms)
            wm = ctx.timer_service().current_watermark()
            ts = rec[self.kind.time_field]
            if problem is not None:
                yield self._dead(key, raw, topic, partition, offset, *problem)
                return
            if self.late is not None and wm != LONG_MIN and ts <= wm:
                self.m.LATE_EVENTS.labels(self.component, "behind-watermark").inc()
                yield self.late, Row(bytes(key) if key is not None else b"", self.late_serde.encode({
                    "source_topic": topic, "source_partition": partition, "source_offset": offset,
                    "event_id": str(rec[self.kind.id_field]), "event_time": ts, "watermark": wm,
                    "reason": f"event time {ts} <= watermark {wm} "
                              f"({(wm - ts) / 1000:.3f}s behind)",
                    "payload": bytes(raw), "detected_at": now_ms}))
                return
            yield self.kind.to_row(rec, now_ms)
        except DecodeError as exc:
            yield self._dead(key, raw, topic, partition, offset, exc.reason, str(exc))
        except Exception as exc:  # never let one record fail the job
            yield self._dead(key, raw, topic, partition, offset, "internal-error",
                             f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


def route(t_env, *, source_table: str, kind: str, max_future_ms: int, component: str,
          with_late: bool = True, metrics_port: int = 0, tag_prefix: str = ""):
    """Reads `source_table` (see jobs.common.kafka_source_ddl) and returns (ok_stream, late_stream, dead_stream)."""
    table = t_env.sql_query(f"SELECT `key`, `value`, `topic`, `partition`, `offset` FROM {source_table}")
    ds = t_env.to_data_stream(table)
    late = late_tag(f"{tag_prefix}late") if with_late else None
    dead = dead_letter_tag(f"{tag_prefix}dead")
    ok = ds.process(DecodeRouter(kind, max_future_ms=max_future_ms, late=late, dead=dead, component=component,
                                 metrics_port=metrics_port),
                    output_type=KINDS[kind].row_type()).name(f"decode-route-{kind}")
    return ok, (ok.get_side_output(late) if late else None), ok.get_side_output(dead)


def to_kv_table(t_env, ds):
    """A DataStream of kv rows as a Table with BYTES columns, ready for a raw-format Kafka sink."""
    from pyflink.table import DataTypes, Schema

    return t_env.from_data_stream(ds, Schema.new_builder()
                                  .column("key", DataTypes.BYTES())
                                  .column("value", DataTypes.BYTES()).build())


def encode_kv(schema_name: str, key_field: str) -> Callable[[Any], Row]:
    s = serde(schema_name)

    def f(rec: dict) -> Row:
        return Row(str(rec[key_field]).encode(), s.encode(rec))

    return f
