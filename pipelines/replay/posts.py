"""Replays the shared sentiment texts (TweetEval validation + SST-2 dev) into Kafka `posts` as SocialPost records.

Each post gets a deterministic id (``p-<n>``), author and topic (keywords first, else a hash of the text), event
times: the wall clock at sending (``--clock live``, the command line's default, what ``make run`` uses) or the
compressed historical clock, ``--event-spacing-ms`` apart (``--clock replay``: from a fixed epoch, or from now with
``--rebase``; the default of ``PostsOptions`` for tests and benchmarks), Kafka timestamp = event time,
key = topic. A target rate with optional bursts (``--burst-rate`` for ``--burst-seconds`` every ``--burst-every``
seconds), and the same injection options as the fraud replay (pipelines.replay.fraud.ReplayOptions): out-of-order
posts (held back less than the watermark bound: still on time), late posts (``late_at_end`` + a ``before_late`` hook
make lateness deterministic in tests), malformed records, and a ``tail`` of extra posts to push the watermark.

    python -m pipelines.replay.posts --rate 50 --burst-rate 500 --burst-every 30 --burst-seconds 5 --loop
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import random
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from pipelines import kafka_util
from pipelines.config import Config, load_config
from pipelines.metrics import serve
from pipelines.replay.fraud import DAY_MS, ReplayOptions, ReplayReport, finish
from pipelines.serde import serde

COMPONENT = "replay-posts"
# 2024-01-01T00:00:00Z: the event-time origin of a replay without --rebase (deterministic windows in tests).
EPOCH_MS = 1_704_067_200_000
TOPICS = ("sports", "politics", "entertainment", "tech", "business", "general")
KEYWORDS = {
    "sports": ("game", "team", "season", "nfl", "nba", "football", "soccer", "baseball", "match", "win", "coach",
               "player", "league", "cup", "yankees", "packers", "lakers", "sox", "ufc", "fight", "tennis", "golf"),
    "politics": ("trump", "obama", "clinton", "hillary", "bernie", "sanders", "election", "vote", "president",
                 "gop", "democrat", "republican", "congress", "senate", "campaign", "debate", "policy", "isis",
                 "government", "minister", "putin", "iran"),
    "entertainment": ("movie", "film", "music", "song", "album", "concert", "tv", "show", "actor", "actress",
                      "star", "netflix", "episode", "tour", "beyonce", "bieber", "swift", "kanye", "madonna",
                      "comedy", "drama", "director", "story", "characters", "cinema"),
    "tech": ("apple", "iphone", "ipad", "google", "android", "microsoft", "windows", "samsung", "amazon",
             "facebook", "twitter", "app", "tech", "software", "computer", "galaxy", "xbox", "playstation",
             "nintendo", "tesla"),
    "business": ("market", "stock", "price", "sales", "company", "ceo", "bank", "money", "jobs", "oil",
                 "business", "deal", "economy", "investors"),
}


def assign_topic(text: str) -> str:
    """Deterministic: the topic with the most keyword hits (ties: the earlier topic), else a hash of the text."""
    words = {w.strip(".,!?:;\"'()#@").lower() for w in text.split()}
    best, hits = None, 0
    for topic, kws in KEYWORDS.items():
        h = sum(1 for k in kws if k in words)
        if h > hits:
            best, hits = topic, h
    if best is not None:
        return best
    return TOPICS[zlib.crc32(text.encode("utf-8")) % len(TOPICS)]


def author_of(text: str) -> str:
    return f"user{zlib.crc32(b'author:' + text.encode('utf-8')) % 997:03d}"


def load_texts(sentiment_dir: str | Path) -> list[str]:
    """TweetEval validation texts, then SST-2 dev sentences; empty lines dropped."""
    d = Path(sentiment_dir)
    texts = [t.strip() for t in (d / "tweeteval" / "val_text.txt").read_text(encoding="utf-8").split("\n")]
    with open(d / "dev.tsv", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        ti = header.index("text_a")
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == len(header):
                texts.append(parts[ti].strip())
    return [t for t in texts if t]


@dataclass(frozen=True)
class Post:
    n: int
    text: str
    event_time: int  # before any shift

    @property
    def post_id(self) -> str:
        return f"p-{self.n}"


def iter_posts(texts: list[str], *, spacing_ms: int, id_offset: int = 0, loop: bool = False) -> Iterator[Post]:
    n = 0
    while True:
        for t in texts:
            yield Post(n + id_offset, t, EPOCH_MS + n * spacing_ms)
            n += 1
        if not loop:
            return


MALFORMED_KINDS = ("garbage", "truncated", "empty-text", "future-timestamp", "json", "empty")


def malformed_post(kind: str, post: dict, rng: random.Random, now_ms: int) -> bytes:
    s = serde("social_post")
    bad = {**post, "post_id": "bad-" + post["post_id"]}
    if kind == "garbage":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
    if kind == "truncated":
        return s.encode(bad)[:-3]
    if kind == "empty-text":
        return s.encode({**bad, "text": "   "})
    if kind == "future-timestamp":
        return s.encode({**bad, "event_time": max(post["event_time"], now_ms) + 365 * DAY_MS})
    if kind == "json":
        return json.dumps({"post_id": post["post_id"], "text": post["text"]}).encode()
    if kind == "empty":
        return b""
    raise ValueError(kind)


@dataclass
class PostsOptions:
    base: ReplayOptions = dataclasses.field(default_factory=ReplayOptions)
    spacing_ms: int = 200              # event-time gap between consecutive posts
    burst_rate: float = 0.0            # posts/s during a burst (0 = no bursts)
    burst_every_s: float = 30.0
    burst_seconds: float = 5.0
    loop: bool = False
    # Send the tail before the held-late posts (and call `before_late` between them): the watermark is then past
    # every regular post when the late ones arrive, so each of them is late, whatever its own event time.
    late_after_tail: bool = False
    # The live clock: each post is stamped with the wall clock when it is sent (event time = produced_at), so the
    # trend windows are now. Off (the default for library callers: tests, benchmarks, backfills): the compressed
    # historical clock, spacing_ms apart from 2024-01-01 (or from now with base.rebase). The command line's default
    # is live (--clock live); out-of-order and late injection need the replay clock.
    live_clock: bool = False


class PostsReplay:
    def __init__(self, cfg: Config, opts: PostsOptions, *, bootstrap: str | None = None, topic: str | None = None,
                 texts: list[str] | None = None):
        self.cfg = cfg
        self.opts = opts
        self.bootstrap = bootstrap or cfg.kafka.bootstrap_servers
        self.topic = topic or cfg.topics.posts
        self.texts = texts if texts is not None else load_texts(cfg.path(cfg.replay.sentiment_dir))
        self.serde = serde("social_post")
        self.report = ReplayReport()
        self.sent_posts: list[dict] = []   # every valid post sent (tests compare against these)
        self.keep_sent = True

    def _rate_now(self, elapsed: float) -> float:
        o = self.opts
        if o.burst_rate > 0 and o.burst_every_s > 0 and (elapsed % o.burst_every_s) < o.burst_seconds:
            return o.burst_rate
        return o.base.rate

    def run(self, stop: Callable[[], bool] | None = None,
            before_late: Callable[[], None] | None = None) -> ReplayReport:
        o, b = self.opts, self.opts.base
        rng = random.Random(b.seed)
        producer = kafka_util.TrackedProducer(self.bootstrap, COMPONENT, **{"linger.ms": self.cfg.replay.linger_ms})
        rep = self.report
        t_start = time.perf_counter()
        next_send = t_start
        next_progress = t_start + b.progress_every_s
        shift: int | None = None
        heap: list[tuple[int, int, Post]] = []
        held_late: list[Post] = []
        tail: list[Post] = []

        def pace() -> None:
            nonlocal next_send
            now = time.perf_counter()
            rate = self._rate_now(now - t_start)
            if rate <= 0:
                return
            if next_send > now:
                time.sleep(next_send - now)
            next_send = max(next_send, now - 1.0) + 1.0 / rate  # at most 1 s of catch-up after a stall

        def record(p: Post) -> dict:
            return {"post_id": p.post_id, "author": author_of(p.text), "text": p.text,
                    "topic": assign_topic(p.text), "language": "en", "event_time": p.event_time + shift,
                    "produced_at": 0}

        def emit(p: Post) -> None:
            nonlocal next_progress
            pace()
            rec = record(p)
            rec["produced_at"] = int(time.time() * 1000)
            if o.live_clock:
                rec["event_time"] = rec["produced_at"]
            producer.produce(self.topic, rec["topic"].encode(), self.serde.encode(rec), rec["event_time"])
            rep.sent += 1
            rep.first_event_time = rec["event_time"] if rep.first_event_time is None else rep.first_event_time
            rep.last_event_time = rec["event_time"]
            if self.keep_sent:
                self.sent_posts.append({k: rec[k] for k in ("post_id", "topic", "event_time")})
            if time.perf_counter() >= next_progress:
                self._progress()
                next_progress = time.perf_counter() + b.progress_every_s

        taken = 0
        for i, p in enumerate(iter_posts(self.texts, spacing_ms=o.spacing_ms, id_offset=b.id_offset, loop=o.loop)):
            if i < b.skip:
                continue
            if b.limit is not None and taken >= b.limit:
                if len(tail) < b.tail:
                    tail.append(p)
                    continue
                break
            if stop is not None and stop():
                break
            taken += 1
            if shift is None:
                shift = (int(time.time() * 1000) - p.event_time if b.rebase else 0) + b.shift_ms
            while heap and heap[0][0] <= p.event_time:
                emit(heapq.heappop(heap)[2])
            r = rng.random()
            if r < b.late_frac:
                if b.late_at_end:
                    held_late.append(p)
                else:
                    heapq.heappush(heap, (p.event_time + b.late_delay_ms, p.n, p))
                rep.late_ids.append(p.post_id)
            elif r < b.late_frac + b.out_of_order_frac:
                heapq.heappush(heap, (p.event_time + rng.randint(1, b.out_of_order_max_ms), p.n, p))
                rep.out_of_order_ids.append(p.post_id)
            else:
                emit(p)
            if b.malformed_frac and rng.random() < b.malformed_frac:
                kind = MALFORMED_KINDS[rep.malformed % len(MALFORMED_KINDS)]
                rec = record(p)
                producer.produce(self.topic, rec["topic"].encode(),
                                 malformed_post(kind, rec, rng, int(time.time() * 1000)), rec["event_time"])
                rep.malformed += 1
                rep.malformed_kinds[kind] = rep.malformed_kinds.get(kind, 0) + 1
            producer.poll()
        while heap:
            emit(heapq.heappop(heap)[2])
        if shift is None:
            shift = b.shift_ms

        def send_tail() -> None:
            for p in tail:
                emit(p)
                rep.tail_ids.append(p.post_id)

        if o.late_after_tail:
            send_tail()
        if held_late:
            producer.drain()  # the late ones must reach the job after everything before them
            if before_late is not None:
                before_late()
            for p in held_late:
                emit(p)
        if not o.late_after_tail:
            send_tail()
        return finish(producer, rep, t_start, self._progress)

    def _progress(self, final: bool = False) -> None:
        rep = self.report
        when = (datetime.fromtimestamp(rep.last_event_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                if rep.last_event_time else "-")
        print(f"[{COMPONENT}] {'done' if final else 'progress'}: {rep.sent} posts, {len(rep.late_ids)} late, "
              f"{len(rep.out_of_order_ids)} out-of-order, {rep.malformed} malformed, event time {when}"
              + (f", {rep.seconds:.1f}s, {rep.sent / rep.seconds:,.0f} posts/s" if final and rep.seconds else ""),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="posts/s (0 = unlimited)")
    ap.add_argument("--burst-rate", type=float, default=0.0, help="posts/s during bursts (0 = no bursts)")
    ap.add_argument("--burst-every", type=float, default=30.0, help="seconds between burst starts")
    ap.add_argument("--burst-seconds", type=float, default=5.0)
    ap.add_argument("--event-spacing-ms", type=int, default=200)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--loop", action="store_true", help="cycle through the texts again (ids keep counting)")
    ap.add_argument("--clock", choices=("live", "replay"), default=None,
                    help="live (the default): each post stamped with the wall clock when sent; replay: the "
                         "compressed historical clock, --event-spacing-ms apart (benchmarks, backfills)")
    ap.add_argument("--rebase", action="store_true",
                    help="replay clock starting now (implies --clock replay; default origin 2024-01-01 UTC)")
    ap.add_argument("--out-of-order-frac", type=float, default=0.0)
    ap.add_argument("--late-frac", type=float, default=0.0)
    ap.add_argument("--malformed-frac", type=float, default=0.0)
    ap.add_argument("--tail", type=int, default=0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--topic", default=None)
    ap.add_argument("--metrics-port", type=int, default=cfg.metrics.posts_producer_port,
                    help="/metrics port, 0 = off (default: metrics.posts_producer_port; the fraud producer has "
                         "metrics.producer_port)")
    a = ap.parse_args(argv)
    injected = a.rebase or a.out_of_order_frac > 0 or a.late_frac > 0
    clock = a.clock or ("replay" if injected else "live")
    if clock == "live" and injected:
        ap.error("--rebase, --out-of-order-frac and --late-frac need --clock replay")
    serve(a.metrics_port)
    base = ReplayOptions(rate=a.rate, limit=a.limit, skip=a.skip, rebase=a.rebase,
                         out_of_order_frac=a.out_of_order_frac, late_frac=a.late_frac,
                         malformed_frac=a.malformed_frac, tail=a.tail, labels=False, seed=a.seed)
    opts = PostsOptions(base=base, spacing_ms=a.event_spacing_ms, burst_rate=a.burst_rate,
                        burst_every_s=a.burst_every, burst_seconds=a.burst_seconds, loop=a.loop,
                        live_clock=clock == "live")
    replay = PostsReplay(cfg, opts, bootstrap=a.bootstrap, topic=a.topic)
    replay.keep_sent = False
    rep = replay.run()
    print(json.dumps(rep.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
