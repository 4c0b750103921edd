"""The first Flink functions every record meets: decode, validate, and split off late events and dead letters.

Splits, as bytewax does, the ``oks`` (typed rows for the rest of the job) from the errors: records that do not
decode or break a rule go to the dead-letter topic with the reason, the raw bytes and the source
topic/partition/offset; events behind the current watermark go to the late topic with the watermark they missed.
Nothing raises out of the decoder: one bad record never fails the job.

Flink SQL drops late rows silently, so the split happens before any SQL window: each event's own event time is
compared with ``CURRENT_WATERMARK`` of its rowtime, and an event with ``event_time <= watermark`` is late.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

from pyflink.common import Types

from pipelines.serde import DEFAULT_MAX_AMOUNT, DEFAULT_MIN_TIME_MS, DecodeError, check_transaction, serde

if TYPE_CHECKING:
    from pipelines.config import FraudConfig

def kv_type():
    """(key, value) bytes: what our raw-format Kafka sinks take."""
    return Types.ROW_NAMED(["key", "value"], [Types.PRIMITIVE_ARRAY(Types.BYTE()),
                                              Types.PRIMITIVE_ARRAY(Types.BYTE())])


# Every kind's check takes (record, now_ms, max_future_ms, max_amount, min_time_ms): max_amount (fraud.max_amount)
# only matters to transactions; no record time may be before min_time_ms (fraud.min_event_time_ms).
def _check_label(rec: dict, now_ms: int, max_future_ms: int, max_amount: float = DEFAULT_MAX_AMOUNT,
                 min_time_ms: int = DEFAULT_MIN_TIME_MS) -> tuple[str, str] | None:
    if rec["label"] not in (0, 1):
        return "bad-label", f"label {rec['label']} is not 0 or 1"
    if rec["label_time"] <= 0 or rec["label_time"] < min_time_ms or rec["label_time"] > now_ms + max_future_ms:
        return "bad-timestamp", f"label_time {rec['label_time']} is out of range"
    return None


# Longer texts are dead letters: the model reads only the first sentiment.max_length (<= 512) tokens, so the rest
# would never be scored, and tokenising a megabyte-long post (a broker takes 1 MB messages) stalls its whole batch.
MAX_POST_TEXT_CHARS = 10_000


def _check_post(rec: dict, now_ms: int, max_future_ms: int, max_amount: float = DEFAULT_MAX_AMOUNT,
                min_time_ms: int = DEFAULT_MIN_TIME_MS) -> tuple[str, str] | None:
    text = rec["text"]
    if len(text) > MAX_POST_TEXT_CHARS:
        return "text-too-long", f"post text has {len(text)} characters (at most {MAX_POST_TEXT_CHARS})"
    # Whitespace and control characters only (NULs, escapes) is nothing to score; stops at the first visible one.
    if not any(c.isprintable() and not c.isspace() for c in text):
        return "empty-text", "post text is empty (whitespace or control characters only)"
    if rec["event_time"] <= 0 or rec["event_time"] < min_time_ms or rec["event_time"] > now_ms + max_future_ms:
        return "bad-timestamp", f"event_time {rec['event_time']} is out of range"
    return None


@dataclass(frozen=True)
class RecordKind:
    schema: str
    time_field: str
    id_field: str
    check: Callable[..., tuple[str, str] | None]  # (record, now_ms, max_future_ms, max_amount, min_time_ms)
    fields: tuple[str, ...]
    types: Callable[[], list]


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


def to_kv_table(t_env, ds):
    """A DataStream of kv rows as a Table with BYTES columns, ready for a raw-format Kafka sink."""
    from pyflink.table import DataTypes, Schema

    return t_env.from_data_stream(ds, Schema.new_builder()
                                  .column("key", DataTypes.BYTES())
                                  .column("value", DataTypes.BYTES()).build())


# ------------------------------------------------------------------------------------------- vectorised routing
# A per-record Python router (a DataStream ProcessFunction, our first version) crossed into Python once per event:
# Beam coders and a Row each. route_table() decodes whole Arrow batches in one pandas UDF and lets Flink SQL split the result: dead letters on the decode verdict,
# late events with CURRENT_WATERMARK on the event's own rowtime. Only dead and late rows, which are rare, meet a
# per-row Python function (to encode their Avro records).

def _kind_sql_types(kind: RecordKind) -> list[str]:
    names = {"Long": "BIGINT", "Integer": "INT", "Double": "DOUBLE", "String": "STRING"}
    return [names[str(t)] for t in kind.types()]


class BatchDecoder:
    """Decodes and validates a batch of raw values for one record kind: the pandas UDF's body, testable alone.

    Returns a DataFrame with `reason` and `error` (None for a good record) and one column per field of the kind
    (zeros and empty strings stand in for the fields of a record that failed). Nothing raises out of a call: a
    failure of ours (any exception) is the verdict "internal-error"."""

    def __init__(self, kind: str, max_future_ms: int, max_amount: float = DEFAULT_MAX_AMOUNT,
                 min_time_ms: int = DEFAULT_MIN_TIME_MS):
        self.kind = KINDS[kind]
        self.serde = serde(self.kind.schema)
        self.max_future_ms = max_future_ms
        self.max_amount = max_amount
        self.min_time_ms = min_time_ms
        self.sql_types = _kind_sql_types(self.kind)

    def __call__(self, values, now_ms: int | None = None) -> "pd.DataFrame":
        import pandas as pd

        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        fields = self.kind.fields
        cols: dict[str, list] = {f: [] for f in fields}
        reasons: list = []
        errors: list = []
        blank = {f: ("" if t == "STRING" else 0.0 if t == "DOUBLE" else 0) for f, t in zip(fields, self.sql_types)}
        decode, check = self.serde.decode, self.kind.check
        max_future_ms, max_amount, min_time_ms = self.max_future_ms, self.max_amount, self.min_time_ms
        for raw in values:
            reason = error = None
            try:
                rec = decode(raw)
                problem = check(rec, now_ms, max_future_ms, max_amount, min_time_ms)
                if problem is not None:
                    reason, error = problem
                else:
                    row = [now_ms if f == "ingest_ms" else rec[f] for f in fields]
            except DecodeError as exc:
                reason, error = exc.reason, str(exc)
            except Exception as exc:  # never let one record fail the job
                reason, error = "internal-error", f"internal error decoding the record: {type(exc).__name__}: {exc}"
            if reason is None:
                for f, v in zip(fields, row):
                    cols[f].append(v)
            else:
                for f in fields:
                    cols[f].append(blank[f])
            reasons.append(reason)
            errors.append(error[:2000] if error else None)
        return pd.DataFrame({"reason": reasons, "error": errors, **cols})


def _decode_udf(kind: str, max_future_ms: int, component: str, max_amount: float = DEFAULT_MAX_AMOUNT,
                min_time_ms: int = DEFAULT_MIN_TIME_MS):
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    k = KINDS[kind]
    types = {"BIGINT": DataTypes.BIGINT(), "INT": DataTypes.INT(), "DOUBLE": DataTypes.DOUBLE(),
             "STRING": DataTypes.STRING()}
    result = DataTypes.ROW([DataTypes.FIELD("reason", DataTypes.STRING()), DataTypes.FIELD("error", DataTypes.STRING())]
                           + [DataTypes.FIELD(f, types[t]) for f, t in zip(k.fields, _kind_sql_types(k))])

    class Decode(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics

            self.decoder = BatchDecoder(kind, max_future_ms, max_amount, min_time_ms)
            self.in_counter = metrics.EVENTS_IN.labels(component, k.schema)

        def eval(self, values):
            self.in_counter.inc(len(values))
            return self.decoder(values)

    return udf(Decode(), input_types=[DataTypes.BYTES()], result_type=result, func_type="pandas")


def _dead_letter(codec, *, topic, partition, offset, reason, error, key, payload) -> bytes:
    return codec.encode({
        "source_topic": topic or "", "source_partition": partition if partition is not None else -1,
        "source_offset": offset if offset is not None else -1, "reason": reason, "error": error or "",
        "key": bytes(key) if key is not None else None, "payload": bytes(payload or b""),
        "failed_at": int(time.time() * 1000)})


def _dead_letter_udf(component: str):
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class DeadLetter(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics

            self.m = metrics
            self.serde = serde("dead_letter")

        def eval(self, key, value, topic, partition, offset, reason, error):
            self.m.DEAD_LETTERS.labels(component, reason).inc()
            return _dead_letter(self.serde, topic=topic, partition=partition, offset=offset, reason=reason,
                                error=error, key=key, payload=value)

    return udf(DeadLetter(), input_types=[DataTypes.BYTES(), DataTypes.BYTES(), DataTypes.STRING(), DataTypes.INT(),
                                          DataTypes.BIGINT(), DataTypes.STRING(), DataTypes.STRING()],
               result_type=DataTypes.BYTES())


TOO_MANY_AHEAD = "too-many-ahead"


def dropped_row_udf(component: str, topics: Mapping[str, str], max_rows_ahead: int):
    """The dead letter of a row a feature function did not add because its key already held `max_rows_ahead` rows
    ahead of the watermark (udfs/java RollingFeatures; features_sql.DROPPED_VIEW). The record was decoded long
    before: the dead letter names it (kind, transaction id, event time, the key) in `error`, with its source topic
    from `topics` (kind -> topic), and has no raw bytes, partition or offset (-1)."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class DroppedRow(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics

            self.m = metrics
            self.serde = serde("dead_letter")

        def eval(self, kind, key_kind, key_id, transaction_id, event_time):
            self.m.DEAD_LETTERS.labels(component, TOO_MANY_AHEAD).inc()
            error = (f"{key_kind} {key_id} already holds {max_rows_ahead} rows ahead of the watermark: the {kind} of "
                     f"transaction {transaction_id} at {event_time} was not added")
            return _dead_letter(self.serde, topic=topics.get(kind, kind), partition=-1, offset=-1,
                                reason=TOO_MANY_AHEAD, error=error, key=str(transaction_id).encode(), payload=b"")

    return udf(DroppedRow(), input_types=[DataTypes.STRING(), DataTypes.STRING(), DataTypes.BIGINT(),
                                          DataTypes.BIGINT(), DataTypes.BIGINT()],
               result_type=DataTypes.BYTES())


def _late_udf(component: str):
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class LateEvent(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics

            self.m = metrics
            self.serde = serde("late_event")

        def eval(self, value, topic, partition, offset, event_id, ts, wm):
            self.m.LATE_EVENTS.labels(component, "behind-watermark").inc()
            return self.serde.encode({
                "source_topic": topic, "source_partition": partition, "source_offset": offset,
                "event_id": event_id, "event_time": ts, "watermark": wm,
                "reason": f"event time {ts} <= watermark {wm} ({(wm - ts) / 1000:.3f}s behind)",
                "payload": bytes(value), "detected_at": int(time.time() * 1000)})

    return udf(LateEvent(), input_types=[DataTypes.BYTES(), DataTypes.STRING(), DataTypes.INT(), DataTypes.BIGINT(),
                                         DataTypes.STRING(), DataTypes.BIGINT(), DataTypes.BIGINT()],
               result_type=DataTypes.BYTES())


def typed_view(t_env, stream, name: str, time_field: str, proctime: bool = False) -> None:
    """Registers a stream as a table whose rowtime is the event's own time (epoch ms in `time_field`) and whose
    watermark is the stream's own (the Kafka source's, per partition); with `proctime`, also a `proctime` column."""
    from pyflink.table import Schema

    builder = Schema.new_builder().column_by_expression("rowtime", f"TO_TIMESTAMP_LTZ({time_field}, 3)")
    if proctime:
        builder = builder.column_by_expression("proctime", "PROCTIME()")
    schema = builder.watermark("rowtime", "SOURCE_WATERMARK()").build()
    t_env.create_temporary_view(name, t_env.from_data_stream(stream, schema))


# Kinds decoded in the JVM (udfs/java AvroDecoder; BatchDecoder above is their reference, and the tests compare the
# two): the records then reach the SQL windows without a Python hop. Other kinds use the pandas UDF.
JAVA_DECODERS = {"transaction": "io.streamscore.udfs.DecodeTransaction",
                 "transaction_label": "io.streamscore.udfs.DecodeLabel"}


class Routes(NamedTuple):
    """What route_table returns beside the view: tables for the job's sinks."""
    late: object | None  # (key, value) rows for the late topic; None without `with_late`
    dead: object  # (key, value) rows for the dead-letter topic
    counted: object | None  # (n) rows for a blackhole sink (see add_counters); None when the decoder counts itself


def _input_counter_udf(component: str, schema: str):
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class CountInput(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics
            from pipelines.config import load_config

            self.counter = metrics.EVENTS_IN.labels(component, schema)
            metrics.serve(load_config().metrics.job_port)

        def eval(self, n):
            self.counter.inc(n)
            return n

    return udf(CountInput(), input_types=[DataTypes.BIGINT()], result_type=DataTypes.BIGINT())


def add_counters(t_env, statements, *tables) -> None:
    """Sends rows that exist only to drive a Python counter (Routes.counted, ...) to a blackhole sink."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return
    t_env.execute_sql("CREATE TEMPORARY TABLE IF NOT EXISTS counters_sink (n BIGINT) WITH ('connector' = 'blackhole')")
    union = tables[0]
    for t in tables[1:]:
        union = union.union_all(t)
    statements.add_insert("counters_sink", union)


def route_table(t_env, *, source_table: str, kind: str, view: str, limits: "FraudConfig", component: str,
                with_late: bool = True) -> Routes:
    """Reads `source_table` (jobs.common.kafka_source_ddl) and registers `view`: the kind's fields plus `rowtime`
    (event time, with the source's watermark), on-time records only. Returns the late and dead tables of (key,
    value) bytes for the raw-format Kafka sinks (late rows stay in `view` when `with_late` is False), and, for a
    kind decoded in the JVM, the input counts for add_counters. `limits` is the job's config section whose
    max_future_ms, max_amount and min_event_time_ms the decoders apply."""
    max_future_ms, max_amount, min_time_ms = limits.max_future_ms, limits.max_amount, limits.min_event_time_ms
    k = KINDS[kind]
    suffix = view  # function names per view: a job routes several sources
    java = JAVA_DECODERS.get(kind)
    if java:
        t_env.execute_sql(f"CREATE TEMPORARY FUNCTION IF NOT EXISTS decode_{suffix} AS '{java}' LANGUAGE JAVA")
        sql_args = f"CAST({int(max_future_ms)} AS BIGINT)"
        if kind == "transaction":
            sql_args += f", CAST({float(max_amount)!r} AS DOUBLE)"
        sql_args += f", CAST({int(min_time_ms)} AS BIGINT)"
        call = f"decode_{suffix}(`value`, {sql_args})"
    else:
        t_env.create_temporary_function(f"decode_{suffix}", _decode_udf(kind, max_future_ms, component, max_amount,
                                                                         min_time_ms))
        call = f"decode_{suffix}(`value`)"
    t_env.create_temporary_function(f"dead_letter_{suffix}", _dead_letter_udf(component))
    fields = ", ".join(f"d.`{f}` AS `{f}`" for f in k.fields)
    decoded = t_env.sql_query(
        f"SELECT `key`, `value`, kafka_topic, kafka_partition, kafka_offset, d.reason AS reason, d.error AS error, {fields} "
        f"FROM (SELECT `key`, `value`, kafka_topic, kafka_partition, kafka_offset, {call} AS d FROM {source_table})")
    # One DataStream for every branch below: the decoder runs once per record whatever the planner does with the
    # three queries, and watermarks pass through to_data_stream.
    typed_view(t_env, t_env.to_data_stream(decoded), f"{view}_all", k.time_field, proctime=bool(java))
    counted = None
    if java:
        # The pandas decoder counts the records it reads; the JVM one cannot reach our Prometheus registry, so a
        # count per 5 s of processing time (Prometheus scrapes every 5 s) goes to a Python counter instead. Each
        # window fire clears the aggregate's whole hash table: with 1 s windows that was 14% of the JVM's time.
        # Per Kafka partition: a global count would run at parallelism 1 whatever the job's parallelism.
        t_env.create_temporary_function(f"count_in_{suffix}", _input_counter_udf(component, k.schema))
        counted = t_env.sql_query(f"SELECT count_in_{suffix}(n) AS n FROM (SELECT COUNT(*) AS n FROM TABLE(TUMBLE("
                                  f"TABLE {view}_all, DESCRIPTOR(proctime), INTERVAL '5' SECOND)) "
                                  f"GROUP BY window_start, window_end, kafka_partition)")
    cols = ", ".join(f"`{f}`" for f in k.fields)
    on_time = "(CURRENT_WATERMARK(rowtime) IS NULL OR rowtime > CURRENT_WATERMARK(rowtime))" if with_late else "TRUE"
    t_env.create_temporary_view(view, t_env.sql_query(
        f"SELECT {cols}, rowtime FROM {view}_all WHERE reason IS NULL AND {on_time}"))
    dead = t_env.sql_query(
        f"SELECT COALESCE(`key`, CAST(X'' AS BYTES)) AS `key`, dead_letter_{suffix}(`key`, `value`, kafka_topic, "
        f"kafka_partition, kafka_offset, reason, error) AS `value` FROM {view}_all WHERE reason IS NOT NULL")
    late = None
    if with_late:
        t_env.create_temporary_function(f"late_event_{suffix}", _late_udf(component))
        wm_ms = ("(CAST(TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), CURRENT_WATERMARK(rowtime)) AS BIGINT) * 1000 "
                 "+ EXTRACT(MILLISECOND FROM CURRENT_WATERMARK(rowtime)))")
        late = t_env.sql_query(
            f"SELECT COALESCE(`key`, CAST(X'' AS BYTES)) AS `key`, late_event_{suffix}(`value`, kafka_topic, "
            f"kafka_partition, kafka_offset, CAST(`{k.id_field}` AS STRING), `{k.time_field}`, {wm_ms}) AS `value` "
            f"FROM {view}_all WHERE reason IS NULL AND CURRENT_WATERMARK(rowtime) IS NOT NULL "
            f"AND rowtime <= CURRENT_WATERMARK(rowtime)")
    return Routes(late, dead, counted)
