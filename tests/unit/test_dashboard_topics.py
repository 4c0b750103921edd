"""The per-topic view of the dashboard state: example posts, volume and the shift marker (issue 28)."""

from __future__ import annotations

from dashboard.state import DashboardState
from pipelines.metrics import SENTIMENT_SHIFT


def _score(post_id: str, topic: str, pos: float, neg: float) -> dict:
    return {"post_id": post_id, "topic": topic, "label": "positive" if pos > neg else "negative",
            "p_positive": pos, "p_negative": neg, "p_neutral": max(0.0, 1 - pos - neg), "event_time": 1,
            "produced_at": 0, "scored_at": 1}


def _trend(topic: str, start: int, mean: float, n: int = 10) -> dict:
    return {"topic": topic, "window_start": start, "window_end": start + 60_000, "count_negative": n,
            "count_neutral": 0, "count_positive": 0, "mean_positivity": mean}


def test_examples_are_the_most_negative_and_positive_with_their_texts():
    st = DashboardState(recent_posts=20)
    for i in range(10):
        st.add_post({"post_id": f"p{i}", "text": f"<b>text {i}</b>", "topic": "sports"})
        st.add_sentiment_score(_score(f"p{i}", "sports", pos=i / 10, neg=1 - i / 10))
    topic = st.snapshot(panels=["sentiment"])["sentiment"]["topics"]["sports"]
    assert [r["post_id"] for r in topic["negative"]] == ["p0", "p1", "p2"]
    assert [r["post_id"] for r in topic["positive"]] == ["p9", "p8", "p7"]
    assert topic["negative"][0]["text"] == "<b>text 0</b>"  # the browser sets it as text, unparsed
    assert not st.texts  # a text leaves the join map once its score came


def test_a_score_read_before_its_post_gets_the_text_when_the_post_comes():
    # One consumer reads posts and scores in no fixed order across topics (a flaky browser test under load).
    st = DashboardState(recent_posts=20)
    st.add_sentiment_score(_score("p0", "politics", pos=0.1, neg=0.8))
    assert st.snapshot(panels=["sentiment"])["sentiment"]["topics"]["politics"]["negative"][0]["text"] is None
    st.add_post({"post_id": "p0", "text": "late text", "topic": "politics"})
    topic = st.snapshot(panels=["sentiment"])["sentiment"]["topics"]["politics"]
    assert topic["negative"][0]["text"] == "late text"
    assert not st.texts and not st.untexted


def test_bounded_texts_and_recent_posts():
    st = DashboardState(recent_posts=5, max_texts=7, max_topics=3)
    for i in range(100):
        st.add_post({"post_id": f"p{i}", "text": "x" * 1000})
        st.add_sentiment_score(_score(f"q{i}", f"t{i % 5}", 0.5, 0.2))
    assert len(st.texts) == 7 and all(len(t) <= st.text_chars for t in st.texts.values())
    assert len(st.untexted) <= 7
    assert len(st.recent) == 3 and all(len(d) <= 5 for d in st.recent.values())
    for i in range(20):
        st.add_sentiment_score(_score(f"r{i}", "one", 0.5, 0.2))
    assert len(st.recent["one"]) == 5
    # A score whose post was never read still shows, without a text.
    assert next(iter(st.recent.values()))[0]["text"] is None


def test_shift_marker_against_the_last_hour():
    st = DashboardState(shift_threshold=0.2)
    base = 1_700_000_000_000
    for w in range(30):
        st.add_trend(_trend("politics", base + w * 60_000, 0.5))
        st.add_trend(_trend("sports", base + w * 60_000, 0.5))
    topics = st.snapshot(panels=["sentiment"])["sentiment"]["topics"]
    assert topics["politics"]["shift"] == 0 and not topics["politics"]["shifted"]
    st.add_trend(_trend("politics", base + 30 * 60_000, 0.1))  # a drop of 0.4
    st.add_trend(_trend("sports", base + 30 * 60_000, 0.6))  # 0.1: under the threshold
    topics = st.snapshot(panels=["sentiment"])["sentiment"]["topics"]
    assert topics["politics"]["shifted"] and abs(topics["politics"]["shift"] + 0.4) < 1e-9
    assert not topics["sports"]["shifted"]
    assert abs(SENTIMENT_SHIFT.labels(topic="politics")._value.get() + 0.4) < 1e-9


def test_shift_only_counts_the_hour_before():
    st = DashboardState(shift_threshold=0.2, sentiment_windows=200)
    base = 1_700_000_000_000
    st.add_trend(_trend("a", base, 0.9, n=1000))  # 2 h before the newest: not part of the baseline
    st.add_trend(_trend("a", base + 60 * 60_000, 0.3))
    st.add_trend(_trend("a", base + 120 * 60_000, 0.35))
    assert abs(st.shift("a") - 0.05) < 1e-9
    st2 = DashboardState()
    st2.add_trend(_trend("b", base, 0.5))
    assert st2.shift("b") is None  # no earlier window: no marker
