"""The fraud replay's clocks (issue 28): the command line (what `make run` and docker-compose start) stamps
transactions with the wall clock when they are sent, unless --clock replay (or a replay-only option) asks for the
compressed historical clock; library callers (tests, infra/bench) keep choosing with ReplayOptions.live."""

from __future__ import annotations

import time

import pytest

from pipelines.config import ConfigError, load_config
from pipelines.replay import fraud
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.replay_util import RecordingProducer


@pytest.fixture
def seen(monkeypatch):
    got: list[ReplayOptions] = []

    class Stub:
        def __init__(self, cfg, opts, **kw):
            got.append(opts)

        def run(self):
            return fraud.ReplayReport()
    monkeypatch.setattr(fraud, "FraudReplay", Stub)
    monkeypatch.setattr(fraud, "serve", lambda port: None)
    return got


def test_command_line_defaults_to_the_live_clock(seen):
    assert fraud.main(["--metrics-port", "0", "--limit", "1"]) == 0
    assert seen[-1].live


@pytest.mark.parametrize("argv", [["--clock", "replay"], ["--rebase"], ["--late-frac", "0.01"],
                                  ["--out-of-order-frac", "0.01"], ["--speedup", "100"]])
def test_replay_clock_on_request(seen, argv):
    assert fraud.main(["--metrics-port", "0", "--limit", "1", *argv]) == 0
    assert not seen[-1].live


@pytest.mark.parametrize("argv", [["--clock", "live", "--rebase"], ["--live", "--late-frac", "0.1"],
                                  ["--live", "--clock", "replay"]])
def test_live_clock_refuses_replay_only_options(seen, argv):
    with pytest.raises(SystemExit):
        fraud.main(["--metrics-port", "0", *argv])


def test_config_key_chooses_the_default(seen, monkeypatch):
    monkeypatch.setenv("STREAMSCORE_REPLAY__FRAUD_CLOCK", "replay")
    assert fraud.main(["--metrics-port", "0", "--limit", "1"]) == 0
    assert not seen[-1].live
    monkeypatch.setenv("STREAMSCORE_REPLAY__FRAUD_CLOCK", "sundial")
    with pytest.raises(ConfigError):
        load_config()


def test_make_run_starts_the_fraud_replay_on_the_live_clock(seen):
    """`make run` (infra/stack.py) starts the fraud producer through this command line without a replay option."""
    from infra import stack

    proc = next(p for p in stack.processes(load_config()) if p.name == "fraud-producer")
    argv = list(proc.argv)
    i = argv.index("pipelines.replay.fraud")
    assert fraud.main([*argv[i + 1:], "--metrics-port", "0", "--limit", "1"]) == 0
    assert seen[-1].live


def test_live_replay_stamps_the_wall_clock(tmp_path, monkeypatch):
    import gzip
    rows = [f"{i},2018-04-01 {i // 60:02d}:{i % 60:02d}:00,{i % 7},{i % 5},{10 + i}.00,{i * 60},{i % 2},{i % 2},0"
            for i in range(50)]
    csv = tmp_path / "tx.csv.gz"
    with gzip.open(csv, "wt") as f:
        f.write("\n".join([",".join(fraud.CSV_COLUMNS), *rows]) + "\n")
    prod = RecordingProducer()
    monkeypatch.setattr(fraud.kafka_util, "producer", lambda *a, **k: prod)
    before = int(time.time() * 1000)
    FraudReplay(load_config(), ReplayOptions(rate=0, live=True, labels=False), bootstrap="unused:1",
                tx_topic="tx", label_topic="lb", csv_path=str(csv)).run()
    after = int(time.time() * 1000)
    sent = [(serde("transaction").decode(v), ts) for t, v, ts in prod.sent if t == "tx"]
    assert len(sent) == 50
    for rec, ts in sent:
        assert before <= rec["event_time"] <= after and rec["event_time"] == rec["produced_at"] == ts
