"""Fuzz the running jobs: Hypothesis mixes hostile records into good traffic against the real broker, Redis and job.

One fraud job (and one sentiment job) is started per module; each Hypothesis example is a batch sent to it, and
the test waits for every record of the batch to come out before it checks, per batch:

- the job never restarted (Flink's numRestarts from the REST API, `RunningJob.num_restarts()`; the job's logs are
  searched for failovers at the end as well);
- every good record is scored exactly once (by transaction id in the scores topic; a hostile record that still
  decodes to a valid one counts as good, and one whose time is behind the watermark may be late instead);
- every bad record is in the dead-letter topic once, with the reason the project's Python reference decoder
  (udfs/routing.py BatchDecoder) gives it, its raw bytes and its source topic/partition/offset (the Java decoder in
  the job may refuse what fastavro reads in the ways tests/unit/test_java_decoder.py documents: overlong varints,
  ints beyond 32 bits, negative union indexes, skipped enums);
- the job's counters (its /metrics port) equal what was sent: dead letters per reason, invalid profile lookups
  (one per scored transaction whose customer or terminal has a bad profile in Redis, which is also its
  profile_flags bit 2 / 3), and at the end unknown and duplicate labels.

Hostile classes: random bytes, truncations, bit flips and byte changes of valid records, wrong or unknown
fingerprints and markers, overlong varints, huge and negative string lengths, trailing bytes, empty and null
values; valid records with hostile values (amounts non-finite, negative, above fraud.max_amount, float32-infinite,
subnormal; timestamps negative, zero, far in the future; negative ids); labels with bad values, for unknown
transactions, and repeated; bad profile values in Redis for customers and terminals the good transactions use.
Posts: huge, empty, whitespace- and control-character-only and invalid UTF-8 texts, bad timestamps, and the byte
mutations above; texts that are odd but valid must be scored.

`make test` runs a few examples per job (about a minute each); `make fuzz` runs rounds for FUZZ_SECONDS (see
tests/fuzz_util.py for the seeds and the replay database).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.profiles import REDIS_KEYS, parse_profile
from pipelines.serde import FLOAT32_MAX, FLOAT32_MIN_NORMAL, serde
from tests import fuzz_util as fz
from tests.flink_util import RunningJob
from tests.integration.test_poison_record import FAILOVER, RUNNING
from tests.integration.test_sentiment_job import sentiment_model_dir  # noqa: F401 (a fixture)
from tests.pipeline_util import scrape, select, total, write_test_model
from tests.unit.test_java_decoder import NEGATIVE_UNION, OVERLONG, OVERLONG_INT, SKIPPED_ENUM
from udfs.routing import BatchDecoder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(fz.fuzz_seconds() * 1.2) + 900)]

CFG = load_config()
MAX_AMOUNT = CFG.fraud.max_amount
MAX_FUTURE = CFG.fraud.max_future_ms
OUT_OF_ORDER = CFG.fraud.out_of_orderness_ms
JOB = "fraud-job"
ID_BASE = 7_000_000_000_000 + (int(time.time()) % 100_000) * 10_000_000  # ids no other test uses
BATCH_TIMEOUT = 180


def java_stricter(reason: str | None, error: str) -> bool:
    """The documented cases where the JVM decoder refuses (corrupt-avro) what fastavro reads."""
    return reason == "corrupt-avro" and (error.endswith((OVERLONG, OVERLONG_INT)) or bool(NEGATIVE_UNION.search(error))
                                         or bool(SKIPPED_ENUM.search(error)))


def job_restarts(job) -> int:
    """Flink's numRestarts of the job (RunningJob.num_restarts, the REST API); 0 where this RunningJob has no
    such reader (the logs are checked for failovers at the end either way)."""
    reader = getattr(job, "num_restarts", None)
    return reader() if reader is not None else 0


def job_logs_have_no_failover(job, tmp_path, script_out: str) -> None:
    logs = [p for p in (tmp_path / "flink-logs").glob("*") if p.is_file()] + [tmp_path / script_out]
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
    assert RUNNING.search(text), "no state transitions in the job's logs"
    failovers = [line[:300] for line in text.splitlines() if FAILOVER.search(line)]
    assert not failovers, "the job failed over:\n" + "\n".join(failovers[:20])


def scrape_totals(port: int, component: str) -> tuple[Counter, list]:
    s = scrape(port)
    dead = Counter({x.labels["reason"]: x.value for x in select(s, "streamscore_dead_letters_total",
                                                                component=component) if x.value})
    return dead, s


def wait_for(check, timeout: float, what: str, job=None):
    deadline = time.time() + timeout
    last = None
    while True:
        if job is not None:
            assert job.alive(), job.output()
        try:
            last = check()
            if last is True or (last and not isinstance(last, str)):
                return last
        except (OSError, AssertionError) as exc:
            last = exc
        if time.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s (last: {last})")
        time.sleep(0.5)


# ----------------------------------------------------------------------------------------------- strategies
AMOUNTS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, -1.0, -1e-300, 1e-40, 1e-310, 5e-324,
                     FLOAT32_MIN_NORMAL, FLOAT32_MIN_NORMAL / 2, FLOAT32_MAX, 3.5e38, 1e308, MAX_AMOUNT,
                     MAX_AMOUNT * (1 + 1e-15), MAX_AMOUNT * 2, 1e7]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=MAX_AMOUNT))
# A time relative to "now" at send time: (class, offset ms)
TIMES = st.one_of(
    st.tuples(st.just("now"), st.integers(0, 1000)),
    st.tuples(st.just("near-future"), st.integers(1000, MAX_FUTURE - 3_600_000)),
    st.tuples(st.just("far-future"), st.integers(MAX_FUTURE + 3_600_000, 10 * 365 * 86_400_000)),
    st.tuples(st.just("absolute"), st.sampled_from([0, -1, -(2**63), 2**63 - 1, -86_400_000])),
    st.tuples(st.just("absolute"), st.integers(-(2**63), 0)))
IDS = st.one_of(st.just(None), st.sampled_from([-1, -(2**63), 2**63 - 1, 0]), st.integers(-(2**63), -1))
PROFILE_VALUES = st.one_of(
    st.sampled_from(["a,b,c", "1,2", "1,2,3,4", "", ",,", "inf,1,1", "1,nan,1", "1,1,-inf", "-1,1,1", "1e-310,1,1",
                     "1e-40,1,1", "1e30,1,1", "1,1,1e300", "\xff,1,1", "1;2;3", " 1, 2, 3", "0x10,1,1", "1,1,1\n",
                     "nan,nan,nan", "5,1,2"]),
    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6)),
             min_size=0, max_size=5).map(",".join),
    st.binary(max_size=24))


@st.composite
def fraud_batches(draw):
    n_good = draw(st.integers(1, 30))
    return {
        # (customer profile, terminal profile) of each good transaction: None = a shared id with no profile of ours
        "good": [(draw(st.one_of(st.none(), PROFILE_VALUES)), draw(st.one_of(st.none(), PROFILE_VALUES)),
                  draw(st.floats(0.01, 5_000.0))) for _ in range(n_good)],
        "values": draw(st.lists(st.fixed_dictionaries({"amount": AMOUNTS, "event_time": TIMES,
                                                       "customer_id": IDS, "terminal_id": IDS,
                                                       "currency": st.text(max_size=8)}), max_size=12)),
        "mutated": draw(st.lists(fz.MUTATIONS, max_size=20)),
        "labels": {
            "values": draw(st.lists(st.fixed_dictionaries({"label": st.one_of(st.sampled_from([0, 1, 2, -1]),
                                                                              st.integers(-(2**31), 2**31 - 1)),
                                                           "label_time": TIMES}), max_size=6)),
            "mutated": draw(st.lists(fz.MUTATIONS, max_size=6)),
            "unknown": draw(st.integers(0, 4)),
            # repeated labels of the previous batch's transactions: how many of them, and copies of each
            "repeat": draw(st.lists(st.integers(1, 3), max_size=4)),
        },
        "crafted_50": draw(st.booleans()),
    }


# One batch with every class, run first in each round (Hypothesis's explicit phase), so that even the short run
# of `make test` meets them all.
EVERY_MUTATION = [("random-bytes", b"\x00\xff" * 20), ("random-body", b"\x02\x04"), ("truncated", 15),
                  ("bit-flip", [(12, 7), (20, 3)]), ("body-bit-flip", [(0, 0)]), ("byte-set", (30, 255)),
                  ("unknown-fingerprint", b"\x00" * 8), ("bad-marker", b"\xc3\x00"), ("overlong-varint", (0, 6)),
                  ("huge-length", (2**63 - 8, 3, b"EUR")), ("huge-length", (-5, 3, b"EUR")),
                  ("trailing-bytes", b"\x00"), ("empty", None), ("null", None)]
EVERY_FRAUD_CLASS = {
    "good": [("a,b,c", None, 10.0), ("inf,1,1", "1,2", 20.0), (None, "1e-310,1,1", 30.0), ("5,1,2", "5,1,2", 40.0),
             (None, None, 50.0)],
    "values": [{"amount": a, "event_time": ("now", 0), "customer_id": None, "terminal_id": None, "currency": "EUR"}
               for a in (math.nan, math.inf, -1.0, 1e-40, 3.5e38, MAX_AMOUNT * 2, 0.0, MAX_AMOUNT,
                         FLOAT32_MIN_NORMAL)]
    + [{"amount": 1.0, "event_time": t, "customer_id": c, "terminal_id": None, "currency": "€"}
       for t, c in ((("far-future", MAX_FUTURE + 86_400_000), None), (("absolute", -1), None), (("absolute", 0), None),
                    (("near-future", 3_600_000), None), (("now", 0), -1))],
    "mutated": EVERY_MUTATION,
    "labels": {"values": [{"label": 2, "label_time": ("now", 0)}, {"label": 1, "label_time": ("absolute", -1)},
                          {"label": 0, "label_time": ("far-future", MAX_FUTURE + 86_400_000)}],
               "mutated": EVERY_MUTATION[:4], "unknown": 2, "repeat": [2, 1]},
    "crafted_50": True,
}


# ----------------------------------------------------------------------------------------------- the fraud job
class FraudFuzz:
    def __init__(self, bootstrap: str, redis_url: str, tmp_path, port: int):
        import redis

        self.bootstrap = bootstrap
        self.redis = redis.Redis.from_url(redis_url)
        self.tx_t, self.lb_t, self.out_t, self.late_t, self.dead_t = (
            f"fuzz-{n}-{int(time.time() * 1000) % 10**9}" for n in ("tx", "labels", "scores", "late", "dead"))
        self.topics = [self.tx_t, self.lb_t, self.out_t, self.late_t, self.dead_t]
        kafka_util.ensure_topics(bootstrap, self.topics, partitions=2)
        env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_METRICS__JOB_PORT": str(port),
               "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models")),
               # idle label partitions stop holding the watermark back after 2 s (labels are rare here)
               "STREAMSCORE_FRAUD__IDLENESS_MS": "2000"}
        self.port = port
        self.tmp_path = tmp_path
        self.job = RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", bootstrap, "--source-topic", self.tx_t,
                              "--labels-topic", self.lb_t, "--out-topic", self.out_t, "--decisions-topic", "",
                              "--late-topic", self.late_t, "--dead-topic", self.dead_t, "--group-id",
                              f"g-{self.tx_t}", env=env)
        self.producer = kafka_util.producer(bootstrap, **{"linger.ms": 5})
        self.tx, self.label = serde("transaction"), serde("transaction_label")
        self.dec_tx = BatchDecoder("transaction", MAX_FUTURE, MAX_AMOUNT)
        self.dec_label = BatchDecoder("transaction_label", MAX_FUTURE, MAX_AMOUNT)
        self.scores = fz.Tail(bootstrap, self.out_t, serde("fraud_score").decode)
        self.dead = fz.Tail(bootstrap, self.dead_t, serde("dead_letter").decode)
        self.late = fz.Tail(bootstrap, self.late_t, serde("late_event").decode)
        self.next_id = ID_BASE + 1000  # below: the shared customer and terminal ids
        self.n_batch = 0
        self.expected_dead: Counter = Counter()  # reason -> dead letters so far
        self.expected_scores: Counter = Counter()  # transaction id -> scores expected so far (for the final check)
        self.late_ok: set[int] = set()  # ids that may be late instead of scored
        self.bad_profiles: dict[str, set[int]] = {"customer": set(), "terminal": set()}
        self.invalid_lookups: Counter = Counter()  # kind -> expected invalid lookups
        self.prev_scored: list[dict] = []  # the previous batch's scores (labels of them are sent in the next)
        self.labels_unknown = [0, 0]  # (at least, at most) unknown labels expected
        self.labels_duplicate = 0
        self.totals = fz.Totals("fraud")

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def close(self) -> None:
        for t in (self.scores, self.dead, self.late):
            t.close()
        self.job.kill()
        kafka_util.delete_topics(self.bootstrap, self.topics)

    def restarts(self) -> int:
        return job_restarts(self.job)

    # -- one batch
    def run_batch(self, plan: dict) -> None:
        self.n_batch += 1
        b = self.n_batch
        now = int(time.time() * 1000)
        sent: list[dict] = []  # {key, topic, raw, cls, kind}

        def at(spec) -> int:
            cls, off = spec
            return off if cls == "absolute" else now + off

        def valid_tx(**change) -> bytes:
            tid = self.new_id()
            rec = {"transaction_id": tid, "customer_id": tid, "terminal_id": tid, "amount": 12.5,
                   "event_time": now, "produced_at": now, "currency": "EUR", **change}
            return self.tx.encode(rec)

        # bad profiles in Redis first, for fresh customers/terminals the good transactions then use
        goods = []
        for cust_p, term_p, amount in plan["good"]:
            tid = self.new_id()
            cust, term = tid % 97 + ID_BASE, tid % 89 + ID_BASE  # shared ids with no profile of ours
            for kind, value in (("customer", cust_p), ("terminal", term_p)):
                if value is None:
                    continue
                pid = self.new_id()
                self.redis.hset(REDIS_KEYS[kind], str(pid), value)
                if parse_profile(value, MAX_AMOUNT) is None:
                    self.bad_profiles[kind].add(pid)
                    self.totals.profiles[kind] += 1
                if kind == "customer":
                    cust = pid
                else:
                    term = pid
            goods.append(self.tx.encode({"transaction_id": tid, "customer_id": cust, "terminal_id": term,
                                         "amount": amount, "event_time": now, "produced_at": now}))
        for raw in goods:
            sent.append({"topic": self.tx_t, "raw": raw, "cls": "good"})
        for v in plan["values"]:
            tid = self.new_id()
            rec = {"transaction_id": tid, "customer_id": tid if v["customer_id"] is None else v["customer_id"],
                   "terminal_id": tid if v["terminal_id"] is None else v["terminal_id"], "amount": v["amount"],
                   "event_time": at(v["event_time"]), "produced_at": now, "currency": v["currency"]}
            sent.append({"topic": self.tx_t, "raw": self.tx.encode(rec), "cls": f"value:{v['event_time'][0]}"})
        for m in plan["mutated"]:
            sent.append({"topic": self.tx_t, "raw": fz.apply_mutation(m, valid_tx(), self.tx.fingerprint),
                         "cls": m[0]})
        if plan["crafted_50"]:
            from tests.integration.test_poison_record import crafted_50_bytes

            sent.append({"topic": self.tx_t, "raw": crafted_50_bytes(), "cls": "crafted-50-bytes"})

        def label_rec(tid, cust, term, tx_time, **change) -> bytes:
            return self.label.encode({"transaction_id": tid, "customer_id": cust, "terminal_id": term, "label": 1,
                                      "tx_time": tx_time, "label_time": now, "produced_at": now, **change})

        lp = plan["labels"]
        for v in lp["values"]:
            tid = self.new_id()
            sent.append({"topic": self.lb_t, "raw": label_rec(tid, tid, tid, now, label=v["label"],
                                                              label_time=at(v["label_time"])),
                         "cls": f"label-value:{v['label_time'][0]}"})
        for m in lp["mutated"]:
            tid = self.new_id()
            sent.append({"topic": self.lb_t, "raw": fz.apply_mutation(m, label_rec(tid, tid, tid, now),
                                                                      self.label.fingerprint),
                         "cls": f"label-{m[0]}"})
        for _ in range(lp["unknown"]):
            tid = self.new_id()
            sent.append({"topic": self.lb_t, "raw": label_rec(tid, tid, tid + 1, now), "cls": "label-unknown"})
        for i, copies in enumerate(lp["repeat"]):
            if i >= len(self.prev_scored):
                break
            s = self.prev_scored[i]
            for c in range(copies + 1):  # the first counts toward risk, the rest are duplicates
                sent.append({"topic": self.lb_t, "cls": "label-duplicate" if c else "label-first",
                             "raw": label_rec(s["transaction_id"], s["customer_id"], s["terminal_id"],
                                              s["event_time"])})

        # the verdicts the Python reference gives, at this batch's "now"
        for kind, dec in (("tx", self.dec_tx), ("label", self.dec_label)):
            topic = self.tx_t if kind == "tx" else self.lb_t
            rows = [r for r in sent if r["topic"] == topic]
            if rows:
                ref = dec(pd.Series([r["raw"] for r in rows], dtype=object), now_ms=now)
                for r, (_, want) in zip(rows, ref.iterrows()):
                    r["reason"], r["error"] = want["reason"], want["error"]
                    r["fields"] = None if want["reason"] else want
        for i, r in enumerate(sent):
            r["key"] = f"fz{b}-{i}".encode()
            if r["cls"] not in ("good", "label-first"):
                self.totals.hostile[r["cls"].split(":")[0]] += 1
        self.totals.good += len(goods) + sum(1 for r in sent if r["cls"] == "label-first")

        delivered: dict[bytes, tuple[int, int]] = {}

        def on_delivery(err, msg):
            assert err is None, err
            delivered[msg.key()] = (msg.partition(), msg.offset())

        for r in sent:
            self.producer.produce(r["topic"], r["raw"], key=r["key"], on_delivery=on_delivery)
            self.producer.poll(0)
        assert self.producer.flush(30) == 0

        # -- wait for every record's outcome
        want_tx = [r for r in sent if r["topic"] == self.tx_t]
        good_tx = [r for r in want_tx if r["reason"] is None]
        want_ids = Counter(int(r["fields"]["transaction_id"]) for r in good_tx)
        by_key = {r["key"]: r for r in sent}

        copies = defaultdict(list)
        for r in good_tx:
            copies[int(r["fields"]["transaction_id"])].append(r["key"])

        def outcomes():
            self.scores.poll(0.3), self.dead.poll(0.1), self.late.poll(0.1)
            scored = Counter(s["transaction_id"] for _, s in self.scores.records)
            dead_keys = {k for k, _ in self.dead.records}
            late_keys = {k for k, _ in self.late.records}
            missing = [r for r in sent if r["reason"] is not None and r["key"] not in dead_keys]
            for tid, keys in copies.items():
                routed = sum(1 for k in keys if k in late_keys or k in dead_keys)
                if scored[tid] - self.expected_scores[tid] + routed < len(keys):
                    missing.append(by_key[keys[0]])
            if missing:
                return (f"batch {b}: {len(missing)} of {len(sent)} records have no outcome yet, e.g. "
                        f"{[(m['cls'], m['reason'], m['raw'] and m['raw'].hex()[:80]) for m in missing[:3]]}")
            return True

        wait_for(outcomes, BATCH_TIMEOUT, f"batch {b}: every record scored, late or dead", self.job)
        time.sleep(0.3)
        self.scores.poll(0.5), self.dead.poll(0.2), self.late.poll(0.2)

        # -- dead letters: the reference's verdict, raw bytes and where it came from
        dead = defaultdict(list)
        for k, d in self.dead.records:
            dead[k].append(d)
        late = defaultdict(list)
        for k, e in self.late.records:
            late[k].append(e)
        scored = Counter(s["transaction_id"] for _, s in self.scores.records)
        for r in sent:
            ds, ls = dead.get(r["key"], []), late.get(r["key"], [])
            where = (r["cls"], r["raw"].hex() if r["raw"] else r["raw"], r["reason"], r["error"])
            if len(ds) == 1 and r["reason"] != ds[0]["reason"] and java_stricter(ds[0]["reason"], ds[0]["error"]):
                # fastavro read it (valid, or a number the rules then refused), the JVM decoder refuses it as
                # corrupt in a documented way (tests/unit/test_java_decoder.py assert_agree allows the same)
                if r["reason"] is None and r["topic"] == self.tx_t:
                    want_ids[int(r["fields"]["transaction_id"])] -= 1
                r["reason"], r["error"] = ds[0]["reason"], ds[0]["error"]
                r["fields"] = None
                self.totals.verdicts["java-stricter"] += 1
            assert r["reason"] is not None or not ds, (where, ds)
            if r["reason"] is not None:
                assert len(ds) == 1 and not ls, (where, ds, ls)
                d = ds[0]
                assert d["reason"] == r["reason"], (where, d["reason"], d["error"])
                assert d["error"] and d["reason"] != "internal-error", (where, d)
                assert d["payload"] == (r["raw"] or b""), where
                assert d["source_topic"] == r["topic"], where
                assert (d["source_partition"], d["source_offset"]) == delivered[r["key"]], (where, d)
                self.expected_dead[r["reason"]] += 1
                self.totals.verdicts[f"dead:{r['reason']}"] += 1
            elif ls:
                assert len(ls) == 1 and r["fields"]["event_time" if r["topic"] == self.tx_t else "label_time"] < now, \
                    (where, ls)
                self.totals.verdicts["late"] += 1
                if r["topic"] == self.tx_t:
                    want_ids[int(r["fields"]["transaction_id"])] -= 1
            else:
                self.totals.verdicts["scored" if r["topic"] == self.tx_t else "label-on-time"] += 1
        # -- good transactions: scored exactly once each (as often as copies with that id were sent)
        for tid, n in want_ids.items():
            assert scored[tid] - self.expected_scores[tid] == n, \
                f"batch {b}: transaction {tid} scored {scored[tid] - self.expected_scores[tid]} times, expected {n}"
            self.expected_scores[tid] += n
        mine = [s for _, s in self.scores.records if s["transaction_id"] in want_ids]
        for s in mine:
            assert math.isfinite(s["score"]) and all(math.isfinite(v) for v in s["features"].values()), s
            cust_bad = s["customer_id"] in self.bad_profiles["customer"]
            term_bad = s["terminal_id"] in self.bad_profiles["terminal"]
            assert bool(s["profile_flags"] & 4) == cust_bad and bool(s["profile_flags"] & 8) == term_bad, s
            self.invalid_lookups["customer"] += cust_bad
            self.invalid_lookups["terminal"] += term_bad
        good_ids = {int(r["fields"]["transaction_id"]) for r in good_tx if r["cls"] == "good"}
        self.prev_scored = [s for s in mine if s["transaction_id"] in good_ids][:8]

        # -- labels that pass: unknown ones counted once the watermark passes them (checked at the end)
        for r in sent:
            if r["topic"] != self.lb_t or r["reason"] is not None or late.get(r["key"]):
                continue
            if r["cls"] == "label-duplicate":
                self.labels_duplicate += 1
            elif r["cls"] == "label-first":
                pass
            elif r["cls"] == "label-unknown" or now - 1000 <= int(r["fields"]["label_time"]) <= now + 1000:
                self.labels_unknown[0] += 1
                self.labels_unknown[1] += 1
            else:  # a mutated label stamped elsewhere: counted if the watermark reaches its time
                self.labels_unknown[1] += 1

        # -- the job's counters and its restarts
        def counters():
            got, s = scrape_totals(self.port, JOB)
            inv = {k: total(s, "streamscore_profile_lookups_total", kind=k, result="invalid") or 0
                   for k in ("customer", "terminal")}
            if got != self.expected_dead or inv != dict(self.invalid_lookups):
                return f"dead letters {dict(got)} != {dict(self.expected_dead)} or invalid {inv} != " \
                       f"{dict(self.invalid_lookups)}"
            return True

        wait_for(counters, 30, f"batch {b}: the job's counters", self.job)
        assert self.restarts() == 0, f"batch {b}: the job restarted\n{self.job.output()}"
        self.totals.batches += 1

    def finish(self) -> None:
        """Moves the watermark past every label (good transactions on every partition, out_of_orderness later),
        then checks the label counters, that nothing was scored twice or unexpectedly, and the logs."""
        time.sleep(OUT_OF_ORDER / 1000 + 3)
        now = int(time.time() * 1000)
        ticks = []
        for p in range(2):
            tid = self.new_id()
            self.producer.produce(self.tx_t, self.tx.encode({"transaction_id": tid, "customer_id": tid,
                                                             "terminal_id": tid, "amount": 1.0,
                                                             "event_time": now, "produced_at": now}),
                                  key=b"tick", partition=p)
            ticks.append(tid)
        assert self.producer.flush(30) == 0
        lo, hi = self.labels_unknown

        def labels_counted():
            self.scores.poll(0.3)
            s = scrape(self.port)
            unknown = total(s, "streamscore_unknown_labels_total") or 0
            dup = total(s, "streamscore_duplicate_labels_total") or 0
            done = {x["transaction_id"] for _, x in self.scores.records} >= set(ticks)
            if not (done and lo <= unknown <= hi and dup == self.labels_duplicate):
                return f"unknown labels {unknown} (expected {lo}..{hi}), duplicates {dup} " \
                       f"(expected {self.labels_duplicate}), ticks scored {done}"
            return True

        wait_for(labels_counted, 90, "the label counters", self.job)
        time.sleep(2)
        self.scores.poll(1)
        for t in ticks:
            self.expected_scores[t] += 1
        scored = Counter(s["transaction_id"] for _, s in self.scores.records)
        assert scored == self.expected_scores, (
            f"scores differ from expected: extra {dict((scored - self.expected_scores).most_common(5))}, "
            f"missing {dict((self.expected_scores - scored).most_common(5))}")
        assert self.restarts() == 0, self.job.output()
        job_logs_have_no_failover(self.job, self.tmp_path, "fraud_job.out")
        self.totals.verdicts["labels-unknown"] = hi
        self.totals.verdicts["labels-duplicate"] = self.labels_duplicate


@pytest.fixture(scope="module")
def fraud_fuzz(kafka_bootstrap, redis_url, tmp_path_factory):
    from infra.services import free_port

    f = FraudFuzz(kafka_bootstrap, redis_url, tmp_path_factory.mktemp("fuzz-fraud"), free_port())
    try:
        # warm-up: the job is up and scoring (and has a watermark) before the first example
        f.run_batch({"good": [(None, None, 10.0)] * 5, "values": [], "mutated": [],
                     "labels": {"values": [], "mutated": [], "unknown": 0, "repeat": []}, "crafted_50": False})
        f.totals = fz.Totals("fraud")
        yield f
    finally:
        f.close()


def test_fuzz_fraud_job(fraud_fuzz):
    f = fraud_fuzz

    def make():
        @given(plan=fraud_batches())
        @example(plan=EVERY_FRAUD_CLASS)
        def fuzz_fraud_batch(plan):
            f.run_batch(plan)
        return fuzz_fraud_batch

    share = fz.fuzz_seconds() * 2 / 3
    fz.rounds(make, f.totals, seconds=share, short_examples=6)
    f.finish()
    f.totals.report()
    assert f.totals.batches > 0 and sum(f.totals.hostile.values()) > 0


# ----------------------------------------------------------------------------------------------- the sentiment job
INVALID_UTF8 = st.one_of(st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
                                          b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"ok \xe2\x82"]),
                         st.binary(min_size=1, max_size=24).filter(lambda b: not _utf8(b)))


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


CONTROL = st.text(alphabet=st.sampled_from("\x00\x01\x07\x08\t\n\r\x0b\x0c\x1b\x7f\u200b\u2028\u00a0 \u3000\ufeff"),
                  max_size=40)
TEXTS = st.one_of(  # (class, text): the reference decides which are dead letters
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("control-only"), CONTROL),
    st.tuples(st.just("empty-text"), st.just("")),
    st.tuples(st.just("control-mixed"), st.tuples(CONTROL, st.text(min_size=1, max_size=20), CONTROL).map("".join)),
    st.tuples(st.just("long-text"), st.tuples(st.sampled_from(["a", "é", "😀", "ab ", "\u0627"]),
                                              st.integers(2_000, 10_000)).map(lambda t: (t[0] * t[1])[:10_000])),
    st.tuples(st.just("huge-text"), st.tuples(st.sampled_from(["a", "é", "😀", " x"]),
                                              st.integers(10_001, 200_000)).map(lambda t: t[0] * (t[1] // len(t[0]) + 1))),
)


EVERY_POST_CLASS = {
    "good": ["a good day", "terrible service!!", "😀 ok", "مرحبا", "x" * 80],
    "texts": [(("empty-text", ""), ("now", 0)), (("control-only", "\x00\x1b\u200b \t"), ("now", 0)),
              (("control-mixed", "\x00ok\x07"), ("now", 0)), (("long-text", "é" * 10_000), ("now", 0)),
              (("huge-text", "a" * 10_001), ("now", 0)), (("huge-text", "😀" * 200_000), ("now", 0)),
              (("text", "fine"), ("far-future", MAX_FUTURE + 86_400_000)), (("text", "fine"), ("absolute", -1)),
              (("text", "fine"), ("near-future", 3_600_000))],
    "invalid_utf8": [("ok ", b"\xff", "text"), ("", b"\xed\xa0\x80", "author"), ("p", b"\xc0\xaf", "post_id")],
    "mutated": EVERY_MUTATION,
}


@st.composite
def post_batches(draw):
    return {
        "good": draw(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                                      min_size=1, max_size=80).filter(lambda t: any(c.isalnum() for c in t)),
                              min_size=1, max_size=20)),
        "texts": draw(st.lists(st.tuples(TEXTS, TIMES), max_size=12)),
        "invalid_utf8": draw(st.lists(st.tuples(st.text(max_size=10), INVALID_UTF8, st.sampled_from(["text", "author",
                                                                                                    "post_id"])),
                                      max_size=4)),
        "mutated": draw(st.lists(fz.MUTATIONS, max_size=12)),
    }


class SentimentFuzz:
    def __init__(self, bootstrap: str, tmp_path, port: int, model_dir):
        self.bootstrap = bootstrap
        self.posts_t, self.out_t, self.trends_t, self.late_t, self.dead_t = (
            f"fuzz-{n}-{int(time.time() * 1000) % 10**9}" for n in ("posts", "sentiment", "trends", "plate", "pdead"))
        self.topics = [self.posts_t, self.out_t, self.trends_t, self.late_t, self.dead_t]
        kafka_util.ensure_topics(bootstrap, self.topics, partitions=2)
        env = {"STREAMSCORE_SENTIMENT__MODEL_DIR": str(model_dir), "STREAMSCORE_SENTIMENT__DEVICE": "cpu",
               "STREAMSCORE_METRICS__JOB_PORT": str(port)}
        self.port, self.tmp_path = port, tmp_path
        self.job = RunningJob("jobs/sentiment_job.py", tmp_path, "--bootstrap", bootstrap, "--source-topic",
                              self.posts_t, "--out-topic", self.out_t, "--trends-topic", self.trends_t,
                              "--late-topic", self.late_t, "--dead-topic", self.dead_t, "--group-id",
                              f"g-{self.posts_t}", env=env)
        self.producer = kafka_util.producer(bootstrap, **{"linger.ms": 5})
        self.post = serde("social_post")
        self.dec = BatchDecoder("social_post", MAX_FUTURE, MAX_AMOUNT)
        self.scores = fz.Tail(bootstrap, self.out_t, serde("sentiment_score").decode)
        self.dead = fz.Tail(bootstrap, self.dead_t, serde("dead_letter").decode)
        self.late = fz.Tail(bootstrap, self.late_t, serde("late_event").decode)
        self.n_batch = 0
        self.n_post = 0
        self.expected_dead: Counter = Counter()
        self.expected_scores: Counter = Counter()
        self.totals = fz.Totals("sentiment")

    def close(self) -> None:
        for t in (self.scores, self.dead, self.late):
            t.close()
        self.job.kill()
        kafka_util.delete_topics(self.bootstrap, self.topics)

    def run_batch(self, plan: dict) -> None:
        self.n_batch += 1
        b = self.n_batch
        now = int(time.time() * 1000)

        def post(text: str, event_time: int = now, **change) -> tuple[str, bytes]:
            self.n_post += 1
            pid = f"fz{b}-{self.n_post}"
            return pid, self.post.encode({"post_id": pid, "author": "fuzz", "text": text, "topic": "fuzz",
                                          "language": "en", "event_time": event_time, "produced_at": now, **change})

        sent = []
        for text in plan["good"]:
            sent.append({"cls": "good", "raw": post(text)[1]})
        for (cls, text), when in plan["texts"]:
            off = when[1] if when[0] == "absolute" else now + when[1]
            sent.append({"cls": f"{cls}:{when[0]}", "raw": post(text, off)[1]})
        for prefix, bad, field in plan["invalid_utf8"]:
            # a placeholder of the same byte length, then swapped for the invalid bytes
            ph = "Q" * (len(prefix.encode()) + len(bad))
            _, raw = post(ph) if field == "text" else post("hello", **{field: ph})
            i = raw.index(ph.encode())
            sent.append({"cls": f"invalid-utf8-{field}", "raw": raw[:i] + prefix.encode() + bad + raw[i + len(ph):]})
        for m in plan["mutated"]:
            sent.append({"cls": m[0], "raw": fz.apply_mutation(m, post("a valid post")[1], self.post.fingerprint)})
        ref = self.dec(pd.Series([r["raw"] for r in sent], dtype=object), now_ms=now)
        for i, (r, (_, want)) in enumerate(zip(sent, ref.iterrows())):
            r["reason"], r["error"] = want["reason"], want["error"]
            r["post_id"] = None if want["reason"] else want["post_id"]
            r["event_time"] = None if want["reason"] else int(want["event_time"])
            r["key"] = f"fzp{b}-{i}".encode()
            if r["cls"] != "good":
                self.totals.hostile[r["cls"].split(":")[0]] += 1
        self.totals.good += len(plan["good"])

        delivered: dict[bytes, tuple[int, int]] = {}

        def on_delivery(err, msg):
            assert err is None, err
            delivered[msg.key()] = (msg.partition(), msg.offset())

        for r in sent:
            self.producer.produce(self.posts_t, r["raw"], key=r["key"], on_delivery=on_delivery)
            self.producer.poll(0)
        assert self.producer.flush(30) == 0
        want = Counter(r["post_id"] for r in sent if r["reason"] is None)

        def outcomes():
            self.scores.poll(0.3), self.dead.poll(0.1), self.late.poll(0.1)
            scored = Counter(s["post_id"] for _, s in self.scores.records)
            dead_keys = {k for k, _ in self.dead.records}
            late_keys = {k for k, _ in self.late.records}
            missing = [r for r in sent if r["key"] not in dead_keys and r["key"] not in late_keys and (
                r["reason"] is not None or scored[r["post_id"]] - self.expected_scores[r["post_id"]] < 1)]
            if missing:
                return (f"batch {b}: {len(missing)} of {len(sent)} posts have no outcome yet, e.g. "
                        f"{[(m['cls'], m['reason'], m['raw'] and m['raw'][:60]) for m in missing[:3]]}")
            return True

        wait_for(outcomes, BATCH_TIMEOUT, f"posts batch {b}: every post scored, late or dead", self.job)
        time.sleep(0.3)
        self.scores.poll(0.5), self.dead.poll(0.2), self.late.poll(0.2)
        dead, late = defaultdict(list), defaultdict(list)
        for k, d in self.dead.records:
            dead[k].append(d)
        for k, e in self.late.records:
            late[k].append(e)
        for r in sent:
            ds, ls = dead.get(r["key"], []), late.get(r["key"], [])
            where = (r["cls"], r["raw"][:200] if r["raw"] else r["raw"], r["reason"], r["error"])
            if r["reason"] is not None:
                assert len(ds) == 1 and not ls, (where, ds, ls)
                d = ds[0]
                assert d["reason"] == r["reason"] and d["error"], (where, d["reason"], d["error"])
                assert d["payload"] == (r["raw"] or b"") and d["source_topic"] == self.posts_t, where
                assert (d["source_partition"], d["source_offset"]) == delivered[r["key"]], (where, d)
                self.expected_dead[r["reason"]] += 1
                self.totals.verdicts[f"dead:{r['reason']}"] += 1
            else:
                assert not ds, (where, ds)
                if ls:
                    assert len(ls) == 1 and r["event_time"] < now, (where, ls)
                    want[r["post_id"]] -= 1
                    self.totals.verdicts["late"] += 1
                else:
                    self.totals.verdicts["scored"] += 1
        scored = Counter(s["post_id"] for _, s in self.scores.records)
        for pid, n in want.items():
            assert scored[pid] - self.expected_scores[pid] == n, f"posts batch {b}: {pid} scored " \
                f"{scored[pid] - self.expected_scores[pid]} times, expected {n}"
            self.expected_scores[pid] += n
        for _, s in self.scores.records:
            if s["post_id"] in want:
                assert s["label"] in ("negative", "neutral", "positive") and all(
                    math.isfinite(s[k]) for k in ("p_negative", "p_neutral", "p_positive")), s

        def counters():
            got, _ = scrape_totals(self.port, "sentiment-job")
            return True if got == self.expected_dead else f"dead letters {dict(got)} != {dict(self.expected_dead)}"

        wait_for(counters, 30, f"posts batch {b}: the job's counters", self.job)
        assert job_restarts(self.job) == 0, f"posts batch {b}: the job restarted\n{self.job.output()}"
        self.totals.batches += 1

    def finish(self) -> None:
        time.sleep(2)
        self.scores.poll(1)
        scored = Counter(s["post_id"] for _, s in self.scores.records)
        assert scored == self.expected_scores, (
            f"scores differ: extra {dict((scored - self.expected_scores).most_common(5))}, "
            f"missing {dict((self.expected_scores - scored).most_common(5))}")
        assert job_restarts(self.job) == 0, self.job.output()
        job_logs_have_no_failover(self.job, self.tmp_path, "sentiment_job.out")


@pytest.fixture(scope="module")
def sentiment_fuzz(kafka_bootstrap, tmp_path_factory, sentiment_model_dir):
    from infra.services import free_port

    f = SentimentFuzz(kafka_bootstrap, tmp_path_factory.mktemp("fuzz-sentiment"), free_port(), sentiment_model_dir)
    try:
        f.run_batch({"good": ["warm up, a good day"] * 3, "texts": [], "invalid_utf8": [], "mutated": []})
        f.totals = fz.Totals("sentiment")
        yield f
    finally:
        f.close()


def test_fuzz_sentiment_job(sentiment_fuzz):
    f = sentiment_fuzz

    def make():
        @given(plan=post_batches())
        @example(plan=EVERY_POST_CLASS)
        def fuzz_posts_batch(plan):
            f.run_batch(plan)
        return fuzz_posts_batch

    fz.rounds(make, f.totals, seconds=fz.fuzz_seconds() / 3, short_examples=5)
    f.finish()
    f.totals.report()
    assert f.totals.batches > 0 and sum(f.totals.hostile.values()) > 0
