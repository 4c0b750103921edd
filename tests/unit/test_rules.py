"""pipelines/rules.py: the control topic's rule sets (parsing, validation, evaluation, version order), without a
broker (tests/integration/test_control_topic.py runs them through the real job)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import load_config
from pipelines.rules import (FEATURES, INVALID, MAX_CONDITIONS, MAX_RECORD_BYTES, MAX_RULES, NOT_JSON, STALE,
                             TOO_LARGE, Decider, RuleSetError, parse_rule_set)


def doc(version=1, review=0.4, decline=0.8, rules=()):
    return {"version": version, "review_threshold": review, "decline_threshold": decline, "rules": list(rules)}


def rule(name, decision, *when):
    return {"name": name, "decision": decision, "when": [{"feature": f, "op": op, "value": v} for f, op, v in when]}


def raw(d) -> bytes:
    return json.dumps(d).encode()


def decider() -> Decider:
    return Decider(load_config(), listen=False)


# ------------------------------------------------------------------------------------------------------ parsing
def test_a_valid_rule_set_parses():
    rs = parse_rule_set(raw(doc(3, 0.3, 0.7, [rule("big-risky", "DECLINE", ("amount", ">", 5000),
                                                   ("term_risk_7d", ">=", 0.5))])))
    assert rs.version == 3 and rs.review_threshold == 0.3 and rs.rules[0].when[1].feature == "term_risk_7d"


@pytest.mark.parametrize("record, reason", [
    (b"", NOT_JSON), (b"not json", NOT_JSON), (b"\xff\xfe", NOT_JSON), (None, NOT_JSON),
    (b"[1, 2]", INVALID), (b'"x"', INVALID), (b"null", INVALID),
    (b'{"version": 1, "review_threshold": NaN, "decline_threshold": 1}', NOT_JSON),
    (b'{"version": 1, "review_threshold": 0.1, "decline_threshold": Infinity}', NOT_JSON),
    (b'{"version": 1, "version": 2, "review_threshold": 0.1, "decline_threshold": 1}', NOT_JSON),
    (b"[" * 100_000, TOO_LARGE), (b"[" * 60_000, NOT_JSON),
    (raw(doc(version=0)), INVALID), (raw(doc(version=-1)), INVALID), (raw(doc(version=2**63)), INVALID),
    (raw(doc(version=1.5)), INVALID), (raw(doc(version="2")), INVALID), (raw(doc(version=True)), INVALID),
    (raw(doc(review=0.9, decline=0.5)), INVALID), (raw(doc(review=-0.1)), INVALID), (raw(doc(decline=1.01)), INVALID),
    (raw(doc(review="0.5")), INVALID), (raw({**doc(), "extra": 1}), INVALID),
    (raw({"review_threshold": 0.1, "decline_threshold": 0.2}), INVALID),
    (raw(doc(rules=[rule("x", "DECLINE", ("is_full_moon", ">", 1))])), INVALID),
    (raw(doc(rules=[rule("x", "APPROVE", ("amount", ">", 1))])), INVALID),
    (raw(doc(rules=[rule("x", "DECLINE", ("amount", "!=", 1))])), INVALID),
    (raw(doc(rules=[rule("x", "DECLINE", ("amount", ">", "1"))])), INVALID),
    (raw(doc(rules=[rule("x", "DECLINE")])), INVALID),
    (raw(doc(rules=[rule("bad name;", "DECLINE", ("amount", ">", 1))])), INVALID),
    (raw(doc(rules=[rule("a" * 65, "DECLINE", ("amount", ">", 1))])), INVALID),
    (raw(doc(rules=[rule("x", "DECLINE", ("amount", ">", 1)), rule("x", "REVIEW", ("amount", ">", 2))])), INVALID),
    (raw(doc(rules=[rule("x", "DECLINE", *[("amount", ">", i) for i in range(MAX_CONDITIONS + 1)])])), INVALID),
    (raw(doc(rules=[rule(f"r{i}", "DECLINE", ("amount", ">", i)) for i in range(MAX_RULES + 1)])), INVALID),
    (raw(doc(rules=[{**rule("x", "DECLINE", ("amount", ">", 1)), "priority": 1}])), INVALID),
])
def test_what_is_not_a_rule_set_is_rejected_with_a_reason(record, reason):
    with pytest.raises(RuleSetError) as exc:
        parse_rule_set(record)
    assert exc.value.reason == reason


def test_limits_are_inclusive():
    rs = parse_rule_set(raw(doc(rules=[rule(f"r{i}", "REVIEW", *[("amount", ">", j) for j in range(MAX_CONDITIONS)])
                                       for i in range(MAX_RULES)])))
    assert len(rs.rules) == MAX_RULES and len(raw(rs.model_dump())) < MAX_RECORD_BYTES
    assert parse_rule_set(raw(doc(review=0.5, decline=0.5))).decline_threshold == 0.5


def test_a_missing_version_is_filled_in_only_when_asked():
    d = doc()
    del d["version"]
    with pytest.raises(RuleSetError):
        parse_rule_set(raw(d))
    assert parse_rule_set(raw(d), version=7).version == 7
    assert parse_rule_set(raw(doc(version=9)), version=7).version == 9


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=30)
keys = st.sampled_from(["version", "review_threshold", "decline_threshold", "rules", "name", "when", "feature", "op",
                        "value", "decision", "x"])
near_valid = st.fixed_dictionaries({}, optional={
    "version": json_values | st.integers(), "review_threshold": json_values | st.floats(),
    "decline_threshold": json_values | st.floats(),
    "rules": st.lists(st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=70) | json_values, "decision": st.sampled_from(["REVIEW", "DECLINE", "review", ""]),
        "when": st.lists(st.fixed_dictionaries({}, optional={
            "feature": st.sampled_from(sorted(FEATURES)) | st.text(max_size=10),
            "op": st.sampled_from([">", ">=", "<", "<=", "==", "=", ""]),
            "value": st.floats() | st.integers() | json_values}), max_size=10)}), max_size=5),
    "x": json_values})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | json_values.map(lambda v: json.dumps(v).encode())
       | near_valid.map(lambda v: json.dumps(v).encode())
       | st.dictionaries(keys, json_values, max_size=6).map(lambda v: json.dumps(v).encode()))
def test_no_input_raises_anything_but_a_rejection(record):
    try:
        rs = parse_rule_set(record)
    except RuleSetError as exc:
        assert exc.reason in (TOO_LARGE, NOT_JSON, INVALID)
        return
    assert 1 <= rs.version and 0 <= rs.review_threshold <= rs.decline_threshold <= 1
    assert len(rs.rules) <= MAX_RULES and all(1 <= len(r.when) <= MAX_CONDITIONS for r in rs.rules)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_a_hostile_record_leaves_the_rule_set_in_force(record):
    d = decider()
    assert d.offer(raw(doc(5, 0.2, 0.6))) == "applied"
    result = d.offer(record)
    assert result in ("rejected", "stale") or parse_rule_set(record).version > 5
    if result != "applied":
        assert d.version == 5 and d.active.review == 0.2


# --------------------------------------------------------------------------------------------------- evaluation
def test_version_zero_is_the_config_thresholds():
    cfg = load_config()
    d = decider()
    s = np.array([0.0, cfg.fraud.review_threshold, cfg.fraud.decline_threshold, 1.0])
    out = d.decide(s, {})
    assert out.rule_set_version == 0 and out.rule is None and out.decision.tolist() == [0, 1, 2, 2]
    assert out.decision.dtype == np.int64


def test_thresholds_of_the_rule_set_decide():
    d = decider()
    d.offer(raw(doc(1, 0.2, 0.3)))
    out = d.decide(np.array([0.1, 0.2, 0.25, 0.3]), {})
    assert out.decision.tolist() == [0, 1, 1, 2] and out.rule_set_version == 1 and out.rule is None


def test_rules_only_escalate_and_the_most_severe_first_rule_names_the_decision():
    d = decider()
    d.offer(raw(doc(1, 0.5, 0.9, [
        rule("review-mid", "REVIEW", ("amount", ">", 100)),
        rule("decline-big-risky", "DECLINE", ("amount", ">", 1000), ("term_risk_7d", ">=", 0.5)),
        rule("decline-big", "DECLINE", ("amount", ">", 1000)),
        rule("review-night", "REVIEW", ("is_night", "==", 1)),
        rule("low-score", "REVIEW", ("score", "<", 0.01)),
    ])))
    cols = {"amount": np.array([50.0, 200, 2000, 2000, 2000, 50, 50]),
            "term_risk_7d": np.array([0.9, 0.9, 0.9, 0.1, np.nan, 0.0, 0.0]),
            "is_night": np.array([0.0, 0, 0, 0, 0, 1, 0])}
    scores = np.array([0.95, 0.1, 0.1, 0.1, 0.1, 0.6, 0.005])
    out = d.decide(scores, cols)
    assert out.decision.tolist() == [2, 1, 2, 2, 2, 1, 1]
    # A rule that fires beside a threshold decision as severe is still named; first in the list among equals.
    assert out.rule.tolist() == [None, "review-mid", "decline-big-risky", "decline-big", "decline-big",
                                 "review-night", "low-score"]
    assert out.rule.dtype == object


def test_ids_compare_as_integers_and_a_missing_column_never_fires():
    d = decider()
    d.offer(raw(doc(1, 0.5, 0.9, [rule("blocked-terminal", "DECLINE", ("terminal_id", "==", 4242)),
                                  rule("needs-missing", "DECLINE", ("cust_mean_30d", ">", -1))])))
    out = d.decide(np.array([0.1, 0.1]), {"terminal_id": np.array([4242, 4243], dtype=np.int64)})
    assert out.decision.tolist() == [2, 0] and out.rule.tolist() == ["blocked-terminal", None]


def test_an_empty_batch():
    d = decider()
    d.offer(raw(doc(1, rules=[rule("x", "DECLINE", ("amount", ">", 1))])))
    out = d.decide(np.array([], dtype=np.float64), {"amount": np.array([])})
    assert out.decision.shape == (0,) and out.rule.shape == (0,)


# ---------------------------------------------------------------------------------------------- version order
def test_versions_must_increase():
    d = decider()
    assert d.offer(raw(doc(2, 0.1, 0.2))) == "applied"
    assert d.offer(raw(doc(2, 0.3, 0.4))) == "stale"
    assert d.offer(raw(doc(1, 0.3, 0.4))) == "stale"
    assert d.version == 2 and d.active.review == 0.1
    assert d.offer(raw(doc(10, 0.3, 0.4))) == "applied"  # gaps are fine
    assert d.version == 10 and d.active.decline == 0.4


def test_a_batch_is_decided_by_the_rule_set_it_started_with():
    """The active rule set is one reference: a swap in the middle of decide() does not mix two rule sets."""
    d = decider()
    d.offer(raw(doc(1, 0.5, 0.9, [rule("big", "DECLINE", ("amount", ">", 10))])))
    before = d.active
    out = d.decide(np.array([0.6]), {"amount": np.array([100.0])})
    d.offer(raw(doc(2, 0.1, 0.2)))
    assert before.version == 1 and d.active.version == 2 and out.rule_set_version == 1
    assert d.decide(np.array([0.15]), {"amount": np.array([100.0])}).rule is None


def test_counts_by_result():
    from pipelines import metrics

    def count(result):
        return metrics.CONTROL_RECORDS.labels(result)._value.get()

    before = {r: count(r) for r in ("applied", "rejected", "stale")}
    d = decider()
    d.offer(raw(doc(1)))
    d.offer(b"{")
    d.offer(raw(doc(1)))
    assert {r: count(r) - before[r] for r in before} == {"applied": 1, "rejected": 1, "stale": 1}
    assert metrics.RULE_SET_VERSION._value.get() == 1
    assert STALE == "control-stale"


def test_its_log_lines_survive_the_print_of_a_process_mode_python_worker(monkeypatch, capsys):
    """On a cluster PyFlink swaps builtins.print for CustomPrint.print(*args, sep, end, file): no flush argument. A
    print(..., flush=True) there raised TypeError and killed the control-topic follower (CI of 76d54d2)."""
    import builtins

    real = builtins.print

    def custom_print(*args, sep=" ", end="\n", file=None):
        real(*args, sep=sep, end=end, file=file)

    monkeypatch.setattr(builtins, "print", custom_print)
    d = decider()
    d.offer(raw(doc(1)))
    d.offer(b"{")
    err = capsys.readouterr().err
    assert "rule set 1 applied" in err and "rejected" in err


def test_a_decider_without_a_broker_decides_with_the_config():
    """No broker at open(): rule set 0 without waiting out fraud.rules_startup_wait_ms, counted."""
    from infra.services import free_port
    from pipelines import metrics

    cfg = load_config().with_overrides({"kafka": {"bootstrap": f"127.0.0.1:{free_port()}"},
                                        "fraud": {"rules_startup_wait_ms": 20000}})
    before = metrics.CONTROL_ERRORS.labels("startup")._value.get()
    d = Decider(cfg)
    try:
        assert d.caught_up.is_set(), "it gave up on the missing broker, not on the startup wait"
        assert d.version == 0 and not d.reachable
        assert metrics.CONTROL_ERRORS.labels("startup")._value.get() > before
        assert d.decide(np.array([0.95]), {}).decision.tolist() == [2]
    finally:
        d.close()


def test_only_the_operator_may_write_the_control_topic():
    """infra/services.py kafka_acls: the fraud job reads the control topic, the operator principal writes it."""
    from infra.services import KAFKA_ROLES, kafka_acls
    from pipelines.rules import CLI_GROUP, rules_group

    cfg = load_config()
    acls = kafka_acls(cfg)

    def ops(user, resource, name):
        return {op for a in acls if a.principal == user and a.resource == resource and a.name == name
                for op in a.operations}

    control = cfg.topics.fraud_control
    assert ops("fraud-job", "topic", control) == {"READ"}
    assert ops("fraud-job", "group", rules_group(cfg)) == {"READ"}
    assert ops("operator", "topic", control) == {"READ", "WRITE"} and ops("operator", "group", CLI_GROUP) == {"READ"}
    assert "operator" in KAFKA_ROLES
    assert not any("WRITE" in a.operations and a.name == control for a in acls if a.principal != "operator")
