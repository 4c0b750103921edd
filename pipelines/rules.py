"""Run-time decision rules of the fraud job: the review/decline thresholds and a short list of hard rules, changed
while the job runs through the control topic (topics.fraud_control), the way Flink's fraud-detection demo updates
its rules with broadcast state.

    decider = Decider(cfg)                      # in the scoring function's open(): reads the control topic first
    d = decider.decide(scores, columns)         # per batch, after scoring
    d.decision          # int64 [n]: 0 approve, 1 review, 2 decline
    d.rule_set_version  # int: the rule set that made every decision of this batch (0: the config's thresholds)
    d.rule              # None (no hard rules), or an object array [n]: the firing rule's name per row, else None
    decider.close()

A rule set is one JSON document (people write it; `python -m pipelines.rules set FILE` publishes it):

    {"version": 3, "review_threshold": 0.4, "decline_threshold": 0.85,
     "rules": [{"name": "big-at-risky-terminal", "decision": "DECLINE",
                "when": [{"feature": "amount", "op": ">", "value": 5000},
                         {"feature": "term_risk_7d", "op": ">=", "value": 0.5}]}]}

A rule fires when all its conditions hold; ``feature`` is one of ``FEATURES`` (the model's features, ``score``: the
deciding model's score, and ``customer_id`` / ``terminal_id``). Rules only escalate: the decision is the larger of
the thresholds' decision and the most severe firing rule's; ``rule`` names that rule (the first in the list among
equally severe ones), also where the threshold alone would have decided the same. Each rule set must have a higher
version than the one in force: an older or equal one is ignored (``stale``). A record that is not a valid rule set
(not JSON, not UTF-8, NaN or infinity, unknown keys, more than MAX_RULES rules or MAX_CONDITIONS conditions, over
MAX_RECORD_BYTES, ...) is ``rejected``: it never stops or slows the job. Both kinds are counted
(streamscore_control_records_total{result}) and sent to the dead-letter topic with a reason (control-*).

Why a topic read by every subtask and not Flink's BroadcastState: the fraud job is Table API / SQL with a pandas UDF,
where the DataStream broadcast pattern (connect a broadcast stream, BroadcastProcessFunction) is not reachable.
Instead every scoring subtask (every Decider) reads the *whole* control topic itself with a consumer of its own that
assigns all partitions and joins no group: each parallel instance sees every rule set (the broadcast), and a
restarted job rebuilds the rule set from the topic, read from the beginning at open() up to its end before the first
batch is decided (the recovery; bounded by fraud.rules_startup_wait_ms, after which the job decides with what it
has and takes the rest as it comes). The rule set is not in Flink's checkpoints: after a failure, the transactions
replayed from the last checkpoint are decided by the rule set current at the replay, not by the one that decided
them the first time (their rule_set_version says which). Subtasks apply a new rule set independently, each within
about a poll interval of its write: for that moment two subtasks may decide with different versions; one batch is
always decided by exactly one rule set (the active one is a single reference, swapped whole).

The control topic is compacted and each rule set is written under its own key ``rules-v<version>`` (not one fixed
key): compaction then never removes a valid rule set because a later record under the same key was invalid, and a
restart still finds the newest valid version. Its consumers read committed records only (a transactional writer's
aborted rule set never applies). With no broker or no topic at open(), the job goes on with the config's thresholds
(rule set 0), counts it (streamscore_control_errors_total) and keeps looking for the topic in the background.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.features import FEATURE_NAMES

# What a condition may test: the model's features, the deciding model's score, and the two ids (for block lists).
FEATURES = frozenset(FEATURE_NAMES) | {"score", "customer_id", "terminal_id"}
MAX_RULES = 50
MAX_CONDITIONS = 8
MAX_RECORD_BYTES = 64 * 1024
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SEVERITY = {"REVIEW": 1, "DECLINE": 2}
MAX_VERSION = 2**63 - 1  # the FraudScore field is an Avro long
OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    ">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "==": np.equal}
# Dead-letter reasons (dead_letter.avsc `reason`).
TOO_LARGE, NOT_JSON, INVALID, STALE = "control-too-large", "control-not-json", "control-invalid", "control-stale"
CLI_GROUP = "streamscore-rules-cli"


def rules_group(cfg) -> str:
    """The group id the fraud job's Deciders name (assign only: they never join it nor commit)."""
    return f"{cfg.flink.group_id}-rules"


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Unit = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    feature: str
    op: Literal[">", ">=", "<", "<=", "=="]
    value: Number

    @field_validator("feature")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FEATURES:
            raise ValueError(f"unknown feature {v[:64]!r}")
        return v


class Rule(_Strict):
    name: Annotated[str, Field(strict=True, pattern=NAME_PATTERN)]
    when: Annotated[list[Condition], Field(min_length=1, max_length=MAX_CONDITIONS)]
    decision: Literal["REVIEW", "DECLINE"]


class RuleSet(_Strict):
    version: Annotated[int, Field(strict=True, ge=1, le=MAX_VERSION)]
    review_threshold: Unit
    decline_threshold: Unit
    rules: Annotated[list[Rule], Field(max_length=MAX_RULES)] = []

    @model_validator(mode="after")
    def _consistent(self) -> "RuleSet":
        if self.review_threshold > self.decline_threshold:
            raise ValueError("review_threshold must not exceed decline_threshold")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return self


class RuleSetError(ValueError):
    """A control record that is no rule set; ``reason`` is its dead-letter code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number here")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def parse_rule_set(raw: bytes | str | None, *, version: int | None = None) -> RuleSet:
    """The rule set in one control record, or RuleSetError: this never raises anything else. ``version``, when
    given, fills in a document without one (the command line's `set`)."""
    try:
        if raw is None:
            raise RuleSetError(NOT_JSON, "empty record (a tombstone?)")
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        if len(raw) > MAX_RECORD_BYTES:
            raise RuleSetError(TOO_LARGE, f"{len(raw)} bytes, more than {MAX_RECORD_BYTES}")
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            raise RuleSetError(NOT_JSON, f"not JSON: {str(exc)[:200]}") from None
        if not isinstance(doc, dict):
            raise RuleSetError(INVALID, f"a rule set is a JSON object, not {type(doc).__name__}")
        if version is not None and "version" not in doc:
            doc = {**doc, "version": version}
        try:
            return RuleSet.model_validate(doc)
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors()[:5])
            raise RuleSetError(INVALID, errors[:500]) from None
    except RuleSetError:
        raise
    except Exception as exc:  # hostile input must never get further than a rejection
        raise RuleSetError(INVALID, f"{type(exc).__name__}: {str(exc)[:200]}") from None


@dataclass(frozen=True)
class _Compiled:
    name: str
    severity: int
    when: tuple[tuple[str, Callable, float], ...]


@dataclass(frozen=True)
class Active:
    """The rule set in force: swapped whole (one reference), never changed in place."""

    version: int
    review: float
    decline: float
    rules: tuple[_Compiled, ...] = ()
    source: RuleSet | None = None

    @classmethod
    def of(cls, rs: RuleSet) -> "Active":
        rules = tuple(_Compiled(r.name, SEVERITY[r.decision], tuple((c.feature, OPS[c.op], float(c.value))
                                                                     for c in r.when)) for r in rs.rules)
        return cls(rs.version, rs.review_threshold, rs.decline_threshold, rules, rs)

    def document(self) -> dict[str, Any]:
        if self.source is not None:
            return self.source.model_dump()
        return {"version": self.version, "review_threshold": self.review, "decline_threshold": self.decline,
                "rules": []}


@dataclass(frozen=True)
class Decisions:
    decision: np.ndarray
    rule_set_version: int
    rule: np.ndarray | None = None


def evaluate(active: Active, scores: np.ndarray, columns: Mapping[str, np.ndarray],
             missing: Callable[[str], None] | None = None) -> Decisions:
    """One batch decided by one rule set (vectorised: one numpy pass per condition)."""
    scores = np.asarray(scores, dtype=np.float64)
    decision = np.where(scores >= active.decline, 2, np.where(scores >= active.review, 1, 0)).astype(np.int64)
    if not active.rules:
        return Decisions(decision, active.version, None)
    n = len(scores)
    fired = np.full(n, len(active.rules), dtype=np.int64)  # index of the firing rule; len(rules): none
    severity = np.zeros(n, dtype=np.int64)
    for i, rule in enumerate(active.rules):
        mask = np.ones(n, dtype=bool)
        for feature, op, value in rule.when:
            col = scores if feature == "score" else columns.get(feature)
            if col is None:  # the scoring function did not hand it over: the rule cannot fire
                if missing is not None:
                    missing(feature)
                mask[:] = False
                break
            with np.errstate(invalid="ignore"):
                mask &= op(np.asarray(col), value)  # NaN compares false
        better = mask & (rule.severity > severity)  # strictly: the first rule wins among equals
        fired[better] = i
        severity[better] = rule.severity
    names = np.array([r.name for r in active.rules] + [None], dtype=object)
    return Decisions(np.maximum(decision, severity), active.version, names[fired])


class Decider:
    """Decides each batch with the rule set in force; with ``listen`` a daemon thread follows the control topic
    (module docstring). ``dead_letters``: whether this instance writes the dead letters of control records it
    refuses (every subtask sees every record: let one subtask, e.g. index 0, write them). ``bootstrap``: the
    brokers (default: the config's)."""

    def __init__(self, cfg, *, listen: bool = True, dead_letters: bool = True, bootstrap: str | None = None,
                 component: str = "fraud-job") -> None:
        from pipelines import metrics

        self.cfg = cfg
        self.topic = cfg.topics.fraud_control
        self.bootstrap = bootstrap or cfg.kafka.bootstrap_servers
        self.component = component
        self.dead_letters = dead_letters
        self._active = Active(0, float(cfg.fraud.review_threshold), float(cfg.fraud.decline_threshold))
        self._m = metrics
        self._records = {r: metrics.CONTROL_RECORDS.labels(r) for r in ("applied", "rejected", "stale")}
        self._version_gauge = metrics.RULE_SET_VERSION
        self._version_gauge.set(0)
        self._missing_seen: set[str] = set()
        self._stop = threading.Event()
        self.caught_up = threading.Event()  # the topic was read to its end once (or found unreachable)
        self.reachable = False  # the control topic was found and assigned
        self._consumer = None
        self._producer = None
        self._dl_serde = None
        self._thread = None
        if listen:
            self._thread = threading.Thread(target=self._run, name="streamscore-rules", daemon=True)
            self._thread.start()
            if not self.caught_up.wait(cfg.fraud.rules_startup_wait_ms / 1000):
                self._error("startup", f"the control topic {self.topic} was not read to its end within "
                                       f"{cfg.fraud.rules_startup_wait_ms} ms; deciding with rule set "
                                       f"{self._active.version} until it is")

    # ------------------------------------------------------------------------------------------ deciding
    @property
    def version(self) -> int:
        return self._active.version

    @property
    def active(self) -> Active:
        return self._active

    def decide(self, scores: np.ndarray, columns: Mapping[str, np.ndarray]) -> Decisions:
        """``scores``: float [n] of the deciding model; ``columns``: the batch's inputs and derived features by
        name (amount, customer_id, terminal_id, term_risk_<w>, ...)."""
        return evaluate(self._active, scores, columns, self._missing)  # one read of the reference

    def _missing(self, feature: str) -> None:
        if feature not in self._missing_seen:
            self._missing_seen.add(feature)
            self._error("evaluate", f"rule set {self._active.version}: feature {feature} is not among the "
                                    f"scoring function's columns; its rules never fire")

    # ------------------------------------------------------------------------------------------ the control topic
    def offer(self, raw: bytes | None, *, partition: int = -1, offset: int = -1, key: bytes | None = None) -> str:
        """Takes one control record: "applied", "rejected" or "stale". Never raises."""
        try:
            rs = parse_rule_set(raw)
        except RuleSetError as exc:
            return self._refuse("rejected", exc.reason, str(exc), raw, partition, offset, key)
        current = self._active.version
        if rs.version <= current:
            return self._refuse("stale", STALE, f"version {rs.version} is not above the current {current}", raw,
                                partition, offset, key)
        self._active = Active.of(rs)  # the swap: the next batch is decided by it, the one in flight is not
        self._version_gauge.set(rs.version)
        self._records["applied"].inc()
        self._log(f"rule set {rs.version} applied (review {rs.review_threshold}, decline {rs.decline_threshold}, "
                  f"{len(rs.rules)} rules)")
        return "applied"

    def _refuse(self, result, reason, message, raw, partition, offset, key) -> str:
        self._records[result].inc()
        self._log(f"control record {partition}/{offset} {result}: {reason}: {message}")
        if self.dead_letters and self._thread is not None:
            self._dead_letter(reason, message, raw, partition, offset, key)
        return result

    def _dead_letter(self, reason, message, raw, partition, offset, key) -> None:
        try:
            from pipelines import kafka_util
            from pipelines.serde import serde

            if self._producer is None:
                self._producer = kafka_util.producer(self.bootstrap)
                self._dl_serde = serde("dead_letter")
            value = self._dl_serde.encode({
                "source_topic": self.topic, "source_partition": partition, "source_offset": offset,
                "reason": reason, "error": message[:1000], "key": bytes(key) if key is not None else None,
                "payload": bytes(raw or b"")[:MAX_RECORD_BYTES], "failed_at": int(time.time() * 1000)})
            self._producer.produce(self.cfg.topics.dead_letter, value=value, key=key)
            self._producer.poll(0)
            self._m.DEAD_LETTERS.labels(self.component, reason).inc()
        except Exception as exc:
            self._error("dead-letter", f"{type(exc).__name__}: {exc}")

    def _assign(self) -> bool:
        from confluent_kafka import TopicPartition

        from pipelines import kafka_util

        if self._consumer is None:
            self._consumer = kafka_util.consumer(
                self.bootstrap, rules_group(self.cfg) if self.component == "fraud-job" else CLI_GROUP,
                read_committed=True, **{"enable.partition.eof": True, "fetch.wait.max.ms": 100,
                                        "topic.metadata.refresh.interval.ms": 5000})
        md = self._consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if md is None or md.error is not None or not md.partitions:
            raise LookupError(f"the control topic {self.topic} does not exist "
                              f"({md.error if md is not None else 'no metadata'})")
        self._partitions = set(md.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, 0) for p in md.partitions])  # 0: the beginning
        self.reachable = True
        return True

    def _run(self) -> None:
        eof: set[int] = set()
        next_try = 0.0
        while not self._stop.is_set():
            if not self.reachable:
                if time.monotonic() < next_try:
                    self._stop.wait(0.2)
                    continue
                try:
                    self._assign()
                    self._log(f"following the control topic {self.topic} ({len(self._partitions)} partitions)")
                except Exception as exc:
                    if not self.caught_up.is_set():
                        self._error("startup", f"{exc}; deciding with the config's thresholds (rule set 0) "
                                               f"until it appears")
                        self.caught_up.set()
                    next_try = time.monotonic() + 5.0
                    continue
            try:
                msgs = self._consumer.consume(500, 0.2)
            except Exception as exc:
                self._error("consume", f"{type(exc).__name__}: {exc}")
                self._stop.wait(1.0)
                continue
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    from confluent_kafka import KafkaError

                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition())
                        if eof >= self._partitions and not self.caught_up.is_set():
                            self._log(f"control topic read to its end: rule set {self._active.version}")
                            self.caught_up.set()
                    else:
                        self._error("consume", err.str())
                    continue
                self.offer(msg.value(), partition=msg.partition(), offset=msg.offset(), key=msg.key())
            if self._producer is not None:
                self._producer.poll(0)

    def _error(self, stage: str, message: str) -> None:
        self._m.CONTROL_ERRORS.labels(stage).inc()
        self._log(message)

    def _log(self, message: str) -> None:
        from pipelines.kafka_util import stderr_line

        stderr_line(f"[rules {self.topic}] {message}")

    def close(self) -> None:
        from pipelines import kafka_util

        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._consumer is not None:
            kafka_util.close_quietly(self._consumer)
        if self._producer is not None:
            self._producer.flush(5)


# ---------------------------------------------------------------------------------------------- command line
def current(cfg, bootstrap: str | None = None) -> Active:
    """The rule set in force on the control topic (read to its end); raises if the topic cannot be read."""
    d = Decider(cfg, listen=True, dead_letters=False, bootstrap=bootstrap, component="rules-cli")
    try:
        if not d.caught_up.is_set() or not d.reachable:
            raise SystemExit(f"cannot read the control topic {cfg.topics.fraud_control} at {d.bootstrap}")
        return d.active
    finally:
        d.close()


def publish(cfg, rs: RuleSet, bootstrap: str | None = None) -> None:
    """Writes one rule set to the control topic (key rules-v<version>) and waits until the broker has it."""
    from pipelines import kafka_util

    p = kafka_util.producer(bootstrap or cfg.kafka.bootstrap_servers)
    errors: list[str] = []
    p.produce(cfg.topics.fraud_control, key=f"rules-v{rs.version}".encode(),
              value=json.dumps(rs.model_dump(), sort_keys=True).encode(),
              on_delivery=lambda err, msg: errors.append(str(err)) if err is not None else None)
    if p.flush(30) or errors:
        raise SystemExit(f"rule set {rs.version} not written: {errors or 'timed out'}")


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_config

    cfg = load_config()
    ap = argparse.ArgumentParser(prog="python -m pipelines.rules",
                                 description="The fraud job's run-time thresholds and hard rules (the control topic).")
    ap.add_argument("--bootstrap", default=cfg.kafka.bootstrap_servers)
    ap.add_argument("--topic", default=cfg.topics.fraud_control)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("show", help="print the rule set in force (JSON)")
    s = sub.add_parser("set", help="publish a rule set from a JSON file (without a version: the next one)")
    s.add_argument("file")
    t = sub.add_parser("thresholds", help="publish the rule set in force with new thresholds as the next version")
    t.add_argument("--review", type=float, required=True)
    t.add_argument("--decline", type=float, required=True)
    args = ap.parse_args(argv)
    if args.topic != cfg.topics.fraud_control:
        cfg = cfg.with_overrides({"topics": {"fraud_control": args.topic}})
    now = current(cfg, args.bootstrap)
    if args.cmd == "show":
        print(json.dumps(now.document(), indent=2, sort_keys=True))
        return 0
    if args.cmd == "set":
        with open(args.file, "rb") as fh:
            raw = fh.read()
        doc_version = now.version + 1
    else:
        doc = {**now.document(), "review_threshold": args.review, "decline_threshold": args.decline}
        doc.pop("version")
        raw, doc_version = json.dumps(doc).encode(), now.version + 1
    try:
        rs = parse_rule_set(raw, version=doc_version)
    except RuleSetError as exc:
        print(f"error: not a valid rule set ({exc.reason}): {exc}", file=sys.stderr)
        return 2
    if rs.version <= now.version:
        print(f"error: version {rs.version} is not above the one in force ({now.version})", file=sys.stderr)
        return 2
    publish(cfg, rs, args.bootstrap)
    print(f"rule set {rs.version} published to {cfg.topics.fraud_control} (review {rs.review_threshold}, decline "
          f"{rs.decline_threshold}, {len(rs.rules)} rules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
