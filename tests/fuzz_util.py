"""Shared parts of the fuzz tests of the running jobs (tests/integration/test_fuzz.py, `make fuzz`).

- Hostile bytes as Hypothesis strategies: random bytes, truncations and bit flips of a valid record, a wrong or
  unknown fingerprint, overlong varints, huge and negative lengths.
- `Tail`: one read_committed consumer per output topic that keeps everything it has read, so a batch's check reads
  only what is new.
- `rounds`: runs a Hypothesis test in rounds of a few examples, each with a printed seed, until a duration is spent
  (Hypothesis has no time budget of its own); failures go to a Hypothesis example database under `.fuzz/` (git
  ignored) and are replayed first next time.

Settings (environment): FUZZ_SECONDS (0, the default: the short run of `make test`, a fixed number of
examples), FUZZ_SEED (the first round's seed; random otherwise), FUZZ_EXAMPLES (examples
per round), FUZZ_REPORT (a JSON file the totals are written to).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from pipelines import kafka_util
from pipelines.serde import MARKER, _varint_bytes

ROOT = Path(__file__).resolve().parent.parent
DB_DIR = ROOT / ".fuzz" / "hypothesis"


def fuzz_seconds() -> float:
    return float(os.environ.get("FUZZ_SECONDS", "0") or 0)


def log(msg: str) -> None:
    print(f"[fuzz {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- hostile bytes
def _flip(raw: bytes, flips, lo: int = 0) -> bytes:
    b = bytearray(raw)
    span = max(len(b) - lo, 1)
    for pos, bit in flips:
        b[lo + pos % span] ^= 1 << bit
    return bytes(b)


def _overlong(raw: bytes, at: int, extra: int) -> bytes:
    """The varint holding body byte `at` (mod the body's length) written with `extra` redundant bytes."""
    head, body = raw[:10], raw[10:]
    if not body:
        return raw + b"\x80" * extra
    j = at % len(body)
    while j < len(body) and body[j] & 0x80:
        j += 1
    if j >= len(body):
        return raw + b"\x80" * extra
    return head + body[:j] + bytes([body[j] | 0x80]) + b"\x80" * (extra - 1) + b"\x00" + body[j + 1:]


HUGE_LENGTHS = [2**63 - 1, 2**63 - 8, 2**62, 2**32 + 3, 2**31, 2**31 - 1, 1 << 40, -1, -2, -(2**31), -(2**63)]

# A mutation is (class, params), applied to a valid record built at send time (its timestamps are "now"), so a
# saved example replays the same mutation on a fresh record.
MUTATIONS = st.one_of(
    st.tuples(st.just("random-bytes"), st.binary(max_size=200)),
    st.tuples(st.just("random-body"), st.binary(max_size=120)),
    st.tuples(st.just("truncated"), st.integers(0, 10_000)),
    st.tuples(st.just("bit-flip"), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)),
                                            min_size=1, max_size=4)),
    st.tuples(st.just("body-bit-flip"), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)),
                                                 min_size=1, max_size=3)),
    st.tuples(st.just("byte-set"), st.tuples(st.integers(0, 10_000), st.integers(0, 255))),
    st.tuples(st.just("unknown-fingerprint"), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just("bad-marker"), st.binary(min_size=2, max_size=2)),
    st.tuples(st.just("overlong-varint"), st.tuples(st.integers(0, 200), st.integers(1, 12))),
    st.tuples(st.just("huge-length"), st.tuples(st.one_of(st.sampled_from(HUGE_LENGTHS),
                                                          st.integers(-(2**63), 2**63 - 1)),
                                                st.integers(0, 8), st.binary(max_size=16))),
    st.tuples(st.just("trailing-bytes"), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("empty"), st.none()),
    st.tuples(st.just("null"), st.none()),
)


def apply_mutation(mut, valid: bytes, fingerprint: bytes) -> bytes | None:
    """The hostile bytes of `mut` (a draw of MUTATIONS) made from `valid`, a good record of the same kind."""
    cls, p = mut
    if cls == "random-bytes":
        return p
    if cls == "random-body":
        return MARKER + fingerprint + p
    if cls == "truncated":
        return valid[:p % len(valid)]
    if cls == "bit-flip":
        return _flip(valid, p)
    if cls == "body-bit-flip":
        return _flip(valid, p, lo=10)
    if cls == "byte-set":
        b = bytearray(valid)
        b[p[0] % len(b)] = p[1]
        return bytes(b)
    if cls == "unknown-fingerprint":
        return MARKER + p + valid[10:]
    if cls == "bad-marker":
        return p + valid[2:]
    if cls == "overlong-varint":
        return _overlong(valid, *p)
    if cls == "huge-length":
        # a string length (the last field, or one cut `cut` bytes before the end) claiming `length` bytes
        length, cut, tail = p
        return valid[:len(valid) - min(cut, len(valid) - 10)] + _varint_bytes(length) + tail
    if cls == "trailing-bytes":
        return valid + p
    if cls == "empty":
        return b""
    if cls == "null":
        return None
    raise ValueError(cls)


# ------------------------------------------------------------------------------------------- output topics
class Tail:
    """Everything one topic has had since this object was made, read incrementally (read_committed)."""

    def __init__(self, bootstrap: str, topic: str, decode: Callable, read_committed: bool = True):
        self.topic = topic
        self.decode = decode
        self.c = kafka_util.consumer(bootstrap, f"streamscore-fuzz-{uuid.uuid4().hex[:8]}",
                                     read_committed=read_committed)
        from confluent_kafka import TopicPartition

        md = self.c.list_topics(topic, timeout=10).topics[topic]
        self.c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        self.records: list = []

    def poll(self, seconds: float = 0.5) -> int:
        deadline = time.time() + seconds
        n = 0
        while True:
            batch = self.c.consume(num_messages=5000, timeout=0.2)
            for m in batch:
                if m.error() is None:
                    self.records.append((m.key(), self.decode(m.value())))
                    n += 1
            if not batch and time.time() >= deadline:
                return n

    def close(self) -> None:
        kafka_util.close_quietly(self.c)


# ------------------------------------------------------------------------------------------- rounds of examples
class Totals:
    """What a fuzz run tried: records per class and verdict, batches, seeds; printed and written at the end."""

    def __init__(self, name: str):
        self.name = name
        self.started = time.time()
        self.batches = 0
        self.good = 0
        self.hostile: Counter = Counter()  # class -> records
        self.verdicts: Counter = Counter()  # outcome -> records
        self.profiles: Counter = Counter()
        self.seeds: list[int] = []

    def as_dict(self) -> dict:
        return {"job": self.name, "seconds": round(time.time() - self.started, 1), "batches": self.batches,
                "good_records": self.good, "hostile_records": sum(self.hostile.values()),
                "hostile_by_class": dict(self.hostile.most_common()), "outcomes": dict(self.verdicts),
                "bad_profiles": dict(self.profiles), "seeds": self.seeds}

    def report(self) -> None:
        d = self.as_dict()
        log(f"{self.name}: {d['batches']} batches in {d['seconds']} s: {d['good_records']} good and "
            f"{d['hostile_records']} hostile records, {sum(self.profiles.values())} bad profiles; seeds {self.seeds}")
        log(f"{self.name}: hostile records by class {d['hostile_by_class']}; outcomes {d['outcomes']}")
        out = os.environ.get("FUZZ_REPORT")
        if out:
            p = Path(out)
            data = json.loads(p.read_text()) if p.exists() else {}
            data[self.name] = d
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(data, indent=2) + "\n")


def rounds(make_test: Callable[[], Callable[[], None]], totals: Totals, *, seconds: float, short_examples: int) -> None:
    """Runs the test `make_test` returns (a fresh function decorated with @given, and @example, but no settings,
    each round) in rounds until `seconds` have passed (or
    one round of `short_examples` examples when seconds is 0; the caller reports the totals). Each round has its own seed, printed; a failure
    says it, and Hypothesis keeps the failing example in DB_DIR for the next run (replayed before new ones)."""
    first = os.environ.get("FUZZ_SEED")
    rng = random.Random(int(first) if first else None)
    per_round = int(os.environ.get("FUZZ_EXAMPLES", "0") or 0) or (short_examples if not seconds
                                                                             else 10)
    deadline = time.time() + seconds
    n = 0
    while True:
        s = int(first) if first and n == 0 else rng.randrange(2**32)
        totals.seeds.append(s)
        log(f"{totals.name}: round {n} seed {s} ({per_round} examples); replay with FUZZ_SEED={s} "
            f"FUZZ_EXAMPLES={per_round}")
        # No shrinking: each example costs seconds against the live job; the first failing example is saved.
        run = settings(max_examples=per_round, deadline=None, database=DirectoryBasedExampleDatabase(str(DB_DIR)),
                       phases=(Phase.explicit, Phase.reuse, Phase.generate), derandomize=False,
                       suppress_health_check=list(HealthCheck), print_blob=True)(seed(s)(make_test()))
        try:
            run()
        except BaseException as exc:
            exc.add_note(f"fuzz {totals.name}: failed in round {n}, seed {s}; replay with FUZZ_SEED={s} "
                         f"FUZZ_EXAMPLES={per_round} (the failing example is also saved in {DB_DIR})")
            totals.report()
            raise
        n += 1
        if not seconds or time.time() >= deadline:
            break


def summary(path: str) -> str:
    """One paragraph of what a `make fuzz` run tried, from its report file."""
    p = Path(path)
    if not p.exists():
        return f"fuzz: no report at {path}"
    data = json.loads(p.read_text())
    lines = []
    for name, d in data.items():
        dead = sum(v for k, v in d["outcomes"].items() if k.startswith("dead:"))
        lines.append(f"fuzz {name}: {d['seconds']:.0f} s, {d['batches']} batches, {d['hostile_records']} hostile "
                     f"records ({dead} of them dead letters, the rest valid to the reference decoder) and "
                     f"{d['good_records']} good ones, {sum(d['bad_profiles'].values())} bad profiles in Redis; "
                     f"seeds {d['seeds']}")
    hostile = sum(d["hostile_records"] for d in data.values())
    good = sum(d["good_records"] for d in data.values())
    lines.append(f"fuzz total: {hostile} hostile and {good} good records")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / ".fuzz" / "report.json")))
