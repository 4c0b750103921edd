"""infra/services.py kafka_acls: the secured broker's ACL table, least privilege, shown in docs/operations.md."""

from __future__ import annotations

from pathlib import Path

from infra.services import KAFKA_ROLES, _acl_bindings, kafka_acl_markdown, kafka_acls
from pipelines.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_docs_show_the_table():
    assert kafka_acl_markdown(load_config()) in (ROOT / "docs" / "operations.md").read_text()


def test_least_privilege():
    cfg = load_config()
    t = cfg.topics
    acls = kafka_acls(cfg)

    def may(user, op, resource, name):
        return any(a.principal == user and a.resource == resource and op in a.operations and
                   (name.startswith(a.name) if a.prefixed else name == a.name) for a in acls)

    assert {a.principal for a in acls} == set(KAFKA_ROLES)
    assert may("replay", "WRITE", "topic", t.transactions) and not may("replay", "READ", "topic", t.fraud_scores)
    assert may("dashboard", "READ", "topic", t.fraud_scores)
    assert not any(a.principal == "dashboard" and "WRITE" in a.operations for a in acls)
    assert may("fraud-job", "WRITE", "transactional_id", f"{cfg.flink.group_id}-scores_sink")
    assert not any(a.resource == "cluster" or "ALL" in a.operations for a in acls)
    assert len(_acl_bindings(acls)) == sum(len(a.operations) for a in acls)


def test_every_stack_process_has_a_principal():
    """`make run SECURE=1` (infra/stack.py up --secure) runs each process as one of the broker's roles."""
    from infra import stack

    cfg = load_config()
    assert {p.name for p in stack.processes(cfg)} == set(stack.SECURE_ROLES)
    assert set(stack.SECURE_ROLES.values()) <= set(KAFKA_ROLES)
