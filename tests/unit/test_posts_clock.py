"""The posts replay's clocks (issue 28): live (wall clock at sending, the command line's default) and the compressed
historical replay (the library default that tests and benchmarks use)."""

from __future__ import annotations

import time

import pytest

from pipelines.config import Config
from pipelines.replay import posts
from pipelines.replay.fraud import ReplayOptions
from pipelines.serde import serde


class FakeProducer:
    def __init__(self, *args, **kwargs):
        self.sent: list[tuple[dict, int]] = []
        self.errors = 0

    def produce(self, topic, key, value, ts):
        self.sent.append((serde("social_post").decode(value), ts))

    def poll(self, *a):
        return 0

    def drain(self):
        return None


@pytest.fixture
def fake(monkeypatch):
    made = []

    def factory(*a, **k):
        made.append(FakeProducer())
        return made[-1]
    monkeypatch.setattr(posts.kafka_util, "TrackedProducer", factory)
    return made


def _run(opts: posts.PostsOptions) -> list[tuple[dict, int]]:
    r = posts.PostsReplay(Config(), opts, bootstrap="unused:1", topic="t", texts=[f"text {i}" for i in range(50)])
    r.run()
    return r


def test_live_clock_stamps_the_wall_clock(fake):
    before = int(time.time() * 1000)
    _run(posts.PostsOptions(base=ReplayOptions(rate=0, limit=40, labels=False), live_clock=True))
    after = int(time.time() * 1000)
    sent = fake[0].sent
    assert len(sent) == 40
    for rec, ts in sent:
        assert before <= rec["event_time"] <= after and rec["event_time"] == rec["produced_at"] == ts


def test_replay_clock_stays_the_compressed_history(fake):
    _run(posts.PostsOptions(base=ReplayOptions(rate=0, limit=10, labels=False), spacing_ms=200))
    times = [rec["event_time"] for rec, _ in fake[0].sent]
    assert times[0] == posts.EPOCH_MS
    assert [b - a for a, b in zip(times, times[1:])] == [200] * 9


def test_command_line_defaults_to_live_and_rebase_means_replay(monkeypatch):
    seen = {}

    class Stub:
        def __init__(self, cfg, opts, **kw):
            seen["opts"] = opts
            self.keep_sent = True

        def run(self):
            return posts.ReplayReport()
    monkeypatch.setattr(posts, "PostsReplay", Stub)
    monkeypatch.setattr(posts, "serve", lambda port: None)
    assert posts.main(["--metrics-port", "0", "--limit", "1"]) == 0
    assert seen["opts"].live_clock
    assert posts.main(["--metrics-port", "0", "--rebase"]) == 0
    assert not seen["opts"].live_clock and seen["opts"].base.rebase
    with pytest.raises(SystemExit):
        posts.main(["--clock", "live", "--late-frac", "0.1"])
