"""Run-time decision rules of the fraud job: the review/decline thresholds and a short list of hard rules.

(Interface stub: the control topic and hard rules come next. Until then the rule set is version 0, the
thresholds of fraud.review_threshold / fraud.decline_threshold, and no hard rules.)

    decider = Decider(cfg)                      # in the scoring function's open()
    d = decider.decide(scores, columns)         # per batch, after scoring
    d.decision          # int64 [n]: 0 approve, 1 review, 2 decline
    d.rule_set_version  # int: the rule set that made every decision of this batch
    d.rule              # None, or an object array [n] of the hard rule's name per row (None where none fired)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class Decisions:
    decision: np.ndarray
    rule_set_version: int
    rule: np.ndarray | None = None


class Decider:
    def __init__(self, cfg, *, listen: bool = True) -> None:
        self.review = float(cfg.fraud.review_threshold)
        self.decline = float(cfg.fraud.decline_threshold)
        self.version = 0

    def decide(self, scores: np.ndarray, columns: Mapping[str, np.ndarray]) -> Decisions:
        """``scores``: float [n] of the deciding model; ``columns``: the batch's inputs and derived features by
        name (amount, customer_id, terminal_id, term_risk_<w>, ...)."""
        decision = np.where(scores >= self.decline, 2, np.where(scores >= self.review, 1, 0)).astype(np.int64)
        return Decisions(decision, self.version, None)

    def close(self) -> None:
        pass
