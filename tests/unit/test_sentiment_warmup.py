"""The sentiment scorer is warmed up in the UDF's open(), before the first post (issue 28)."""

from __future__ import annotations

import inspect

from udfs import sentiment


class Counting:
    def __init__(self):
        self.calls: list[list[str]] = []

    def predict(self, texts):
        self.calls.append(list(texts))
        return None


def test_warm_up_runs_short_and_long_texts():
    s = Counting()
    assert sentiment.warm_up(s, runs=2) >= 0
    assert len(s.calls) == 2 and all(c == list(sentiment.WARM_UP_TEXTS) for c in s.calls)
    assert len({len(t) for t in sentiment.WARM_UP_TEXTS}) > 1


def test_open_loads_and_warms_before_scoring():
    src = inspect.getsource(sentiment.make_score_udf)
    assert src.index("load_sentiment_scorer(self.cfg)") < src.index("warm_up(self.scorer)") < src.index("def eval")
