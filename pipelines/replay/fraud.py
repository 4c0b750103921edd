"""Replays the fraud CSV into Kafka: `transactions` (keyed by customer) and, after a delay, `transaction-labels`.

Each record's Kafka timestamp is its event time, so the Flink source derives per-partition watermarks from it.

Options: a target rate (events/s), an event-time speed-up factor, re-basing event time to "now", and injection of
out-of-order events (delayed less than the watermark bound: still on time), late events (delayed far beyond it) and
malformed records (for tests and demos). A progress line is printed every few seconds. A malformed CSV row is
reported with its line number and counted; it is never skipped silently.

Clocks (issue 28): the command line stamps each transaction and label with the wall clock when it is sent
(`--clock live`, the default from replay.fraud_clock, what `make run` and docker-compose start); `--clock replay`
keeps the CSV's compressed historical clock (benchmarks, backfills), and --rebase, --speedup and the late/out-of-order
injection imply it. Library callers (tests, infra/bench) choose with ReplayOptions.live (default False).

    python -m pipelines.replay.fraud --rate 2000 --limit 100000 --late-frac 0.001
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import gzip
import heapq
import io
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from pipelines import kafka_util
from pipelines.config import Config, load_config
from pipelines.metrics import CSV_ROWS_REJECTED, serve
from pipelines.serde import serde

COMPONENT = "replay-fraud"
CSV_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_TIME_SECONDS",
               "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO")
DAY_MS = 86_400_000
# One pass over the file spans 91 days; each --loop pass moves event time forward past the previous one.
LOOP_SHIFT_MS = 92 * DAY_MS
LOOP_ID_OFFSET = 10_000_000


class CsvRowError(ValueError):
    def __init__(self, line: int, reason: str, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class CsvTransaction:
    line: int
    transaction_id: int
    customer_id: int
    terminal_id: int
    amount: float
    event_time: int
    fraud: int
    scenario: int


def _parse_time(text: str) -> int:
    """``YYYY-MM-DD HH:MM:SS`` in UTC. fromisoformat is C code: strptime was 40% of the replay's CPU."""
    if len(text) != 19 or text[10] != " ":
        raise ValueError(f"time {text!r} is not YYYY-MM-DD HH:MM:SS")
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


def parse_row(line: int, row: list[str]) -> CsvTransaction:
    if len(row) != len(CSV_COLUMNS):
        raise CsvRowError(line, "column-count", f"expected {len(CSV_COLUMNS)} columns, got {len(row)}")
    try:
        amount = float(row[4])
        tx = CsvTransaction(line, int(row[0]), int(row[2]), int(row[3]), amount, _parse_time(row[1]),
                            int(row[7]), int(row[8]))
    except ValueError as exc:
        raise CsvRowError(line, "bad-value", str(exc)) from exc
    if not math.isfinite(amount) or amount < 0:
        raise CsvRowError(line, "bad-amount", f"amount {row[4]!r} is not a finite non-negative number")
    return tx


def iter_csv(path: str | Path, on_error: Callable[[CsvRowError], None] | None = None) -> Iterator[CsvTransaction]:
    """Yields parsed rows; malformed ones go to `on_error` (default: printed to stderr) and are counted."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:len(CSV_COLUMNS)]) != CSV_COLUMNS:
            raise CsvRowError(1, "header", f"unexpected header {header!r} in {path}")
        for row in reader:
            try:
                yield parse_row(reader.line_num, row)
            except CsvRowError as exc:
                CSV_ROWS_REJECTED.labels(path.name, exc.reason).inc()
                if on_error:
                    on_error(exc)
                else:
                    print(f"[{COMPONENT}] rejected {path.name}: {exc}", file=sys.stderr, flush=True)


@dataclass
class ReplayOptions:
    rate: float = 2000.0                 # events/s; 0 = as fast as possible
    pace_labels: bool = True             # labels count towards `rate`; False: transactions only, labels on top
    speedup: float = 0.0                 # event time runs this many times faster than wall time; 0 = ignore gaps
    limit: int | None = None             # transactions to send
    skip: int = 0                        # rows to skip first
    rebase: bool = False                 # shift event time so the first event happens now
    out_of_order_frac: float = 0.0
    out_of_order_max_ms: int = 2000      # must stay below the job's out-of-orderness bound
    late_frac: float = 0.0
    late_delay_ms: int = DAY_MS          # far beyond any watermark bound
    # Late events held to the end of the replay (sent after `before_late` returns) instead of `late_delay_ms`
    # later in event time. A backlog replay races the periodic watermark, so this is how tests make lateness
    # deterministic: the job has passed those timestamps before the late events arrive.
    late_at_end: bool = False
    tail: int = 0                        # extra rows after `limit`, sent last, to move the watermark past the end
    malformed_frac: float = 0.0
    labels: bool = True
    label_delay_days: float = 7.0
    seed: int = 7
    progress_every_s: float = 5.0
    shift_ms: int = 0                    # added to every event time (used by --loop so time keeps moving forward)
    id_offset: int = 0                   # added to transaction ids (used by --loop so ids stay unique)
    # With `skip`: also send the labels of skipped transactions that fall due after the first row sent, i.e. the
    # ones a replay of the skipped rows left unsent. Replays of consecutive ranges then carry one unbroken label
    # stream; without it the label topic falls silent for `label_delay_days` of event time after each restart and
    # holds the job's watermark back until the idle timeout.
    resume_labels: bool = False
    # The live clock: each transaction's event time is the wall clock when it is sent (and so its produced_at and
    # Kafka timestamp), as a card network's would be; rows still come in data order, paced by `rate`, and a label
    # still falls due `label_delay_days` of data time after its transaction, stamped with the wall clock when sent.
    # What latency is measured on (infra/bench/run.py); without it, event time is the data's own (compressed
    # replays: drains and backfills).
    live: bool = False
    # Keep the id of every transaction sent, in order (ReplayReport.sent_ids): a benchmark counts the ones that
    # never came out.
    record_ids: bool = False


@dataclass
class ReplayReport:
    sent: int = 0
    labels: int = 0
    malformed: int = 0
    rejected_rows: int = 0
    out_of_order_ids: list[int] = field(default_factory=list)
    late_ids: list[int] = field(default_factory=list)
    tail_ids: list[int] = field(default_factory=list)
    sent_ids: list[int] = field(default_factory=list)  # with ReplayOptions.record_ids
    malformed_kinds: dict[str, int] = field(default_factory=dict)
    first_event_time: int | None = None
    last_event_time: int | None = None
    seconds: float = 0.0
    errors: int = 0

    def summary(self) -> dict:
        d = asdict(self)
        d["out_of_order"] = len(d.pop("out_of_order_ids"))
        d["late"] = len(d.pop("late_ids"))
        d["tail"] = len(d.pop("tail_ids"))
        d.pop("sent_ids")
        d["events_per_s"] = round(self.sent / self.seconds, 1) if self.seconds else None
        return d


MALFORMED_KINDS = ("garbage", "truncated", "negative-amount", "nan-amount", "future-timestamp", "json", "empty")


def malformed_value(kind: str, tx: CsvTransaction, rng: random.Random, now_ms: int) -> bytes:
    s = serde("transaction")
    good = {"transaction_id": -tx.transaction_id - 1, "customer_id": tx.customer_id,
            "terminal_id": tx.terminal_id, "amount": tx.amount, "event_time": tx.event_time,
            "produced_at": now_ms, "currency": "EUR"}
    if kind == "garbage":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
    if kind == "truncated":
        return s.encode(good)[:-3]
    if kind == "negative-amount":
        return s.encode({**good, "amount": -abs(tx.amount) - 1.0})
    if kind == "nan-amount":
        return s.encode({**good, "amount": float("nan")})
    if kind == "future-timestamp":
        return s.encode({**good, "event_time": max(tx.event_time, now_ms) + 365 * DAY_MS})
    if kind == "json":
        return json.dumps({"transaction_id": tx.transaction_id, "amount": tx.amount}).encode()
    if kind == "empty":
        return b""
    raise ValueError(kind)


def finish(producer: kafka_util.TrackedProducer, rep: ReplayReport, t_start: float,
           progress: Callable[..., None]) -> ReplayReport:
    """The end of a replay: waits for every message's delivery (raising kafka_util.ProduceError on failures), and
    reports the errors, the time taken and a last progress line either way."""
    try:
        producer.drain()
    finally:
        rep.errors = producer.errors
        rep.seconds = time.perf_counter() - t_start
        progress(final=True)
    return rep


class FraudReplay:
    def __init__(self, cfg: Config, opts: ReplayOptions, *, bootstrap: str | None = None,
                 tx_topic: str | None = None, label_topic: str | None = None, csv_path: str | None = None,
                 live_times: dict[int, int] | None = None):
        if opts.live and (opts.out_of_order_frac or opts.late_frac or opts.speedup or opts.rebase):
            raise ValueError("a live-clock replay stamps events as it sends them: no out-of-order, late, speed-up "
                             "or rebased events")
        self.cfg = cfg
        self.opts = opts
        # Live clock: the wall-clock event time each transaction was sent with, until its label goes (share one
        # dict between consecutive replays of one stream).
        self.live_times = {} if live_times is None else live_times
        self.bootstrap = bootstrap or cfg.kafka.bootstrap_servers
        self.tx_topic = tx_topic or cfg.topics.transactions
        self.label_topic = label_topic or cfg.topics.labels
        self.csv_path = csv_path or str(cfg.path(cfg.replay.fraud_csv))
        self.tx_serde = serde("transaction")
        self.label_serde = serde("transaction_label")
        self.report = ReplayReport()

    def run(self, stop: Callable[[], bool] | None = None,
            before_late: Callable[[], None] | None = None) -> ReplayReport:
        o = self.opts
        rng = random.Random(o.seed)
        producer = kafka_util.TrackedProducer(self.bootstrap, COMPONENT, **{"linger.ms": self.cfg.replay.linger_ms})
        heap: list[tuple[int, int, str, CsvTransaction]] = []
        seq = 0
        shift = 0
        t_start = time.perf_counter()  # restarted at the first row sent (see below)
        ev0: int | None = None
        next_progress = t_start + o.progress_every_s
        rep = self.report

        def on_row_error(exc: CsvRowError) -> None:
            rep.rejected_rows += 1
            print(f"[{COMPONENT}] rejected row: {exc}", file=sys.stderr, flush=True)

        slack_s = self.cfg.replay.pace_slack_ms / 1000

        def pace(event_time: int) -> None:
            targets = []
            if o.rate > 0:
                paced = rep.sent + rep.malformed + (rep.labels if o.pace_labels else 0)
                targets.append(t_start + paced / o.rate)
            if o.speedup > 0 and ev0 is not None:
                targets.append(t_start + (event_time - ev0) / 1000.0 / o.speedup)
            if targets:
                delay = max(targets) - time.perf_counter()
                if delay > slack_s:
                    time.sleep(delay)

        def emit(kind: str, tx: CsvTransaction) -> None:
            nonlocal next_progress
            now_ms = int(time.time() * 1000)
            et = tx.event_time + shift
            if kind == "label":
                label_time = et + int(o.label_delay_days * DAY_MS)
                tx_time = et
                if o.live:
                    label_time = now_ms
                    tx_time = min(self.live_times.pop(tx.transaction_id, now_ms), now_ms)
                value = self.label_serde.encode({
                    "transaction_id": tx.transaction_id, "customer_id": tx.customer_id,
                    "terminal_id": tx.terminal_id, "label": tx.fraud, "tx_time": tx_time,
                    "label_time": label_time, "produced_at": now_ms})
                producer.produce(self.label_topic, str(tx.terminal_id).encode(), value, label_time)
                rep.labels += 1
            else:
                pace(et)
                now_ms = int(time.time() * 1000)
                if o.live:
                    et = now_ms
                    if o.labels:
                        self.live_times[tx.transaction_id] = et
                if o.record_ids:
                    rep.sent_ids.append(tx.transaction_id)
                value = self.tx_serde.encode({
                    "transaction_id": tx.transaction_id, "customer_id": tx.customer_id,
                    "terminal_id": tx.terminal_id, "amount": tx.amount, "event_time": et,
                    "produced_at": now_ms, "currency": "EUR"})
                producer.produce(self.tx_topic, str(tx.customer_id).encode(), value, et)
                rep.sent += 1
                rep.first_event_time = et if rep.first_event_time is None else rep.first_event_time
                rep.last_event_time = et
            if time.perf_counter() >= next_progress:
                self._progress()
                next_progress = time.perf_counter() + o.progress_every_s

        label_delay_ms = int(o.label_delay_days * DAY_MS)
        taken = 0
        held_late: list[CsvTransaction] = []
        tail: list[CsvTransaction] = []
        for i, tx in enumerate(iter_csv(self.csv_path, on_row_error)):
            skipped = i < o.skip
            if skipped and not (o.resume_labels and o.labels):
                continue
            if o.id_offset:
                tx = dataclasses.replace(tx, transaction_id=tx.transaction_id + o.id_offset)
            if skipped:
                # Labels of skipped rows that fell due before this row were the earlier replay's to send.
                while heap and heap[0][0] <= tx.event_time:
                    heapq.heappop(heap)
                heapq.heappush(heap, (tx.event_time + label_delay_ms, seq, "label", tx))
                seq += 1
                continue
            if o.limit is not None and taken >= o.limit:
                if len(tail) < o.tail:
                    tail.append(tx)
                    continue
                break
            if stop is not None and stop():
                break
            taken += 1
            if ev0 is None:
                # The schedule starts with the first row sent: timed from before the skipped rows (two seconds
                # for 120k), a paced replay would burst that long's worth of messages to catch up.
                t_start = time.perf_counter()
                wall0_ms = int(time.time() * 1000)
                ev0 = tx.event_time
                shift = (wall0_ms - tx.event_time if o.rebase else 0) + o.shift_ms
                ev0 += shift
            # Release everything due before this row's event time, in event-time order.
            while heap and heap[0][0] <= tx.event_time:
                _, _, kind, held = heapq.heappop(heap)
                emit(kind, held)
            r = rng.random()
            if r < o.late_frac:
                if o.late_at_end:
                    held_late.append(tx)
                else:
                    heapq.heappush(heap, (tx.event_time + o.late_delay_ms, seq, "tx", tx))
                rep.late_ids.append(tx.transaction_id)
            elif r < o.late_frac + o.out_of_order_frac:
                heapq.heappush(heap, (tx.event_time + rng.randint(1, o.out_of_order_max_ms), seq, "tx", tx))
                rep.out_of_order_ids.append(tx.transaction_id)
            else:
                emit("tx", tx)
            seq += 1
            if o.labels:
                heapq.heappush(heap, (tx.event_time + label_delay_ms, seq, "label", tx))
                seq += 1
            if o.malformed_frac and rng.random() < o.malformed_frac:
                kind = MALFORMED_KINDS[rep.malformed % len(MALFORMED_KINDS)]
                value = malformed_value(kind, tx, rng, int(time.time() * 1000))
                producer.produce(self.tx_topic, str(tx.customer_id).encode(), value,
                              tx.event_time + shift)
                rep.malformed += 1
                rep.malformed_kinds[kind] = rep.malformed_kinds.get(kind, 0) + 1
            producer.poll()
        # Held transactions (late / out of order) are always sent; labels beyond the replayed range are not,
        # since in the real world they would not have arrived yet.
        while heap:
            _, _, kind, held = heapq.heappop(heap)
            if kind == "tx":
                emit(kind, held)
        if held_late:
            producer.drain()  # the late ones must reach the job after everything before them
            if before_late is not None:
                before_late()
            for held in held_late:
                emit("tx", held)
        for tx in tail:
            emit("tx", tx)
            rep.tail_ids.append(tx.transaction_id)
        return finish(producer, rep, t_start, self._progress)

    def _progress(self, final: bool = False) -> None:
        rep = self.report
        when = (datetime.fromtimestamp(rep.last_event_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                if rep.last_event_time else "-")
        print(f"[{COMPONENT}] {'done' if final else 'progress'}: {rep.sent} transactions, {rep.labels} labels, "
              f"{len(rep.late_ids)} late, {len(rep.out_of_order_ids)} out-of-order, {rep.malformed} malformed, "
              f"{rep.rejected_rows} rejected rows, event time {when}"
              + (f", {rep.seconds:.1f}s, {rep.sent / rep.seconds:,.0f} tx/s" if final and rep.seconds else ""),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=cfg.replay.rate, help="events/s (0 = unlimited)")
    ap.add_argument("--speedup", type=float, default=cfg.replay.speedup, help="event-time speed-up factor")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--rebase", action="store_true", help="shift event time so the first event happens now")
    ap.add_argument("--clock", choices=("live", "replay"), default=None,
                    help="live: every event stamped with the wall clock when it is sent; replay: the compressed "
                         "historical clock of the CSV (benchmarks, backfills). Default: replay.fraud_clock (live), "
                         "or replay when --rebase, --speedup or late/out-of-order injection is given")
    ap.add_argument("--live", action="store_true", help="the same as --clock live")
    ap.add_argument("--out-of-order-frac", type=float, default=0.0)
    ap.add_argument("--late-frac", type=float, default=0.0)
    ap.add_argument("--malformed-frac", type=float, default=0.0)
    ap.add_argument("--no-labels", action="store_true")
    ap.add_argument("--label-delay-days", type=float, default=cfg.fraud.label_delay_days)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--topic", default=None)
    ap.add_argument("--loop", action="store_true", help="start again from the first row when the file ends")
    ap.add_argument("--metrics-port", type=int, default=cfg.metrics.producer_port)
    args = ap.parse_args(argv)
    injected = args.rebase or args.speedup > 0 or args.out_of_order_frac > 0 or args.late_frac > 0
    clock = args.clock or ("live" if args.live else ("replay" if injected else cfg.replay.fraud_clock))
    if args.live and clock != "live":
        ap.error("--live contradicts --clock replay")
    if clock == "live" and injected:
        ap.error("--rebase, --speedup, --out-of-order-frac and --late-frac need --clock replay")
    serve(args.metrics_port)
    opts = ReplayOptions(rate=args.rate, speedup=args.speedup, limit=args.limit, skip=args.skip,
                         rebase=args.rebase, out_of_order_frac=args.out_of_order_frac,
                         late_frac=args.late_frac, malformed_frac=args.malformed_frac, labels=not args.no_labels,
                         label_delay_days=args.label_delay_days, live=clock == "live")
    live_times: dict[int, int] = {}
    for loop in range(10**6 if args.loop else 1):
        run_opts = dataclasses.replace(opts, shift_ms=opts.shift_ms + loop * LOOP_SHIFT_MS,
                                       id_offset=loop * LOOP_ID_OFFSET)
        rep = FraudReplay(cfg, run_opts, bootstrap=args.bootstrap, tx_topic=args.topic, live_times=live_times).run()
        print(json.dumps(rep.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
