"""Static customer and terminal profiles: built from a history window, published, and looked up by the job.

Where profiles live, and why: the compacted topics `customer-profiles` / `terminal-profiles` (Avro, keyed by id)
are the durable system of record, and Redis hashes are the serving copy the job reads. The scoring function
looks up a whole batch with one HMGET per kind (about a millisecond for a thousand keys), a profile update is
visible to the next batch with no restart and no Flink state to migrate, and a Redis outage degrades to default
profiles plus a flag instead of stopping the job. `python -m pipelines.profiles restore` rebuilds Redis from the
compacted topics.

    python -m pipelines.profiles publish [--history-days 30] [--if-missing]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines import kafka_util
from pipelines.config import Config, load_config
from pipelines.kafka_security import redis_kwargs
from pipelines.metrics import PROFILE_LOOKUPS
from pipelines.serde import DEFAULT_MAX_AMOUNT, FLOAT32_MIN_NORMAL, serde

REDIS_KEYS = {"customer": "streamscore:profiles:customer", "terminal": "streamscore:profiles:terminal"}
FIELDS = ("mean_amount", "std_amount", "tx_per_day")
DAY_MS = 86_400_000


def _encode_redis(row) -> str:
    return f"{row.mean_amount!r},{row.std_amount!r},{row.tx_per_day!r}"


def publish(cfg: Config, customers: pd.DataFrame, terminals: pd.DataFrame, *, bootstrap: str | None = None,
            redis_url: str | None = None, topics: tuple[str, str] | None = None) -> dict[str, int]:
    """Writes profiles to the compacted topics (system of record) and to Redis (serving copy)."""
    import redis

    bootstrap = bootstrap or cfg.kafka.bootstrap_servers
    c_topic, t_topic = topics or (cfg.topics.customer_profiles, cfg.topics.terminal_profiles)
    prod = kafka_util.producer(bootstrap)
    r = redis.Redis.from_url(redis_url or cfg.redis.redis_url, **redis_kwargs(cfg.redis))
    counts = {}
    for kind, frame, topic, id_col in (("customer", customers, c_topic, "customer_id"),
                                       ("terminal", terminals, t_topic, "terminal_id")):
        s = serde(f"{kind}_profile")
        mapping = {}
        for row in frame.itertuples(index=False):
            rec = {id_col: int(getattr(row, id_col)), "mean_amount": float(row.mean_amount),
                   "std_amount": float(row.std_amount), "tx_per_day": float(row.tx_per_day),
                   "n_tx": int(row.n_tx), "first_seen": int(row.first_seen), "as_of": int(row.as_of),
                   "version": 1}
            prod.produce(topic, key=str(rec[id_col]).encode(), value=s.encode(rec), timestamp=rec["as_of"])
            prod.poll(0)
            mapping[str(rec[id_col])] = _encode_redis(row)
        pipe = r.pipeline(transaction=False)
        items = list(mapping.items())
        for i in range(0, len(items), 5000):
            pipe.hset(REDIS_KEYS[kind], mapping=dict(items[i:i + 5000]))
        pipe.execute()
        counts[kind] = len(mapping)
    if prod.flush(60):
        raise RuntimeError("profile publishing did not flush")
    return counts


def restore_redis_from_topics(cfg: Config) -> dict[str, int]:
    import redis

    r = redis.Redis.from_url(cfg.redis.redis_url, **redis_kwargs(cfg.redis))
    counts = {}
    for kind, topic, id_col in (("customer", cfg.topics.customer_profiles, "customer_id"),
                                ("terminal", cfg.topics.terminal_profiles, "terminal_id")):
        s = serde(f"{kind}_profile")
        latest = {}
        for m in kafka_util.read_topic(cfg.kafka.bootstrap_servers, topic, idle=3):
            rec = s.decode(m.value())
            latest[str(rec[id_col])] = f"{rec['mean_amount']!r},{rec['std_amount']!r},{rec['tx_per_day']!r}"
        if latest:
            r.hset(REDIS_KEYS[kind], mapping=latest)
        counts[kind] = len(latest)
    return counts


@dataclass
class ProfileBatch:
    mean: np.ndarray     # NaN where missing
    std: np.ndarray
    tx_per_day: np.ndarray
    missing: np.ndarray  # bool: no usable profile (none, Redis down, or invalid); the features use the defaults
    invalid: np.ndarray  # bool: a value was there but failed parse_profile (a subset of missing)


_NO_PROFILE = (np.nan, np.nan, np.nan)
INVALID = "invalid"  # a cached value that failed parse_profile: the defaults, flagged and counted as invalid
MAX_TX_PER_DAY = 1_000_000.0  # far above any card or terminal; more than this is a crafted value


def parse_profile(raw: bytes | str, max_amount: float = DEFAULT_MAX_AMOUNT) -> tuple[float, float, float] | None:
    """A Redis profile value "mean,std,tx_per_day" as three floats, or None when it is not a valid profile.

    Redis is writable by more than this job (see the docs on securing it), so a value is hostile until parsed:
    exactly three fields, each a finite number in [0, bound] (max_amount for the mean and std, MAX_TX_PER_DAY for
    the rate) and either zero or a normal float32 value. Past these bounds the derived features (a z-score over a
    denormal std, a ratio over an infinite mean) would be non-finite or meaningless in the scorer's float32."""
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        parts = text.split(",")
        if len(parts) != 3:
            return None
        values = tuple(float(x) for x in parts)
    except (UnicodeDecodeError, ValueError):
        return None
    for v, bound in zip(values, (max_amount, max_amount, MAX_TX_PER_DAY)):
        # not (0 <= v <= bound) is also true for NaN
        if not (0.0 <= v <= bound) or v != 0.0 and v < FLOAT32_MIN_NORMAL:
            return None
    return values  # type: ignore[return-value]


class ProfileStore:
    """Batch lookups against Redis with a short TTL cache.

    A Redis outage gives 'missing' (the defaults plus a flag); a value that is not a valid profile (see
    parse_profile) gives the same defaults, its own flag and the 'invalid' counter, never an exception."""

    def __init__(self, redis_url: str, ttl_s: float = 2.0, retry_s: float = 1.0, timeout_s: float = 1.0,
                 max_amount: float = DEFAULT_MAX_AMOUNT, credentials: dict | None = None):
        """`credentials`: redis.Redis's username/password (pipelines.kafka_security.redis_kwargs); None: the
        configured redis.username / password / password_file."""
        import redis

        # A stopped Redis refuses the connection at once; the timeout is for a slow answer. At 0.2 s a loaded
        # 2-core machine timed out mid-test, and a second of lookups (1,706 events) came out as "missing".
        if credentials is None:
            credentials = redis_kwargs(load_config().redis)
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           **credentials)
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self._cache: dict[str, dict[int, tuple[float, float, float] | str | None]] = {"customer": {}, "terminal": {}}
        self._cache_time = {"customer": 0.0, "terminal": 0.0}
        self._down_until = 0.0
        self.max_amount = max_amount

    def lookup(self, kind: str, ids: np.ndarray) -> ProfileBatch:
        import redis

        now = time.monotonic()
        cache = self._cache[kind]
        if now - self._cache_time[kind] > self.ttl_s:
            cache.clear()
            self._cache_time[kind] = now
        ids = np.asarray(ids, dtype=np.int64)
        unique, row_of = np.unique(ids, return_inverse=True)
        keys = unique.tolist()
        need = [i for i in keys if i not in cache]
        outage = False
        if need and now >= self._down_until:
            try:
                values = self._redis.hmget(REDIS_KEYS[kind], [str(i) for i in need])
                for i, v in zip(need, values):
                    cache[i] = None if v is None else parse_profile(v, self.max_amount) or INVALID
            except redis.RedisError:
                self._down_until = now + self.retry_s
                outage = True
        elif need:
            outage = True
        n = len(ids)
        # One row per distinct id, then spread to the batch's rows.
        cached = [cache.get(i) for i in keys]
        out = np.array([v if isinstance(v, tuple) else _NO_PROFILE for v in cached],
                       dtype=np.float64).reshape(-1, 3)[row_of]
        invalid = np.array([v is INVALID for v in cached], dtype=bool).reshape(-1)[row_of]
        missing = np.isnan(out[:, 0])
        n_invalid = int(invalid.sum())
        n_missing = int(missing.sum()) - n_invalid
        PROFILE_LOOKUPS.labels(kind, "redis-down" if outage else "missing").inc(n_missing)
        if n_invalid:
            PROFILE_LOOKUPS.labels(kind, "invalid").inc(n_invalid)
        PROFILE_LOOKUPS.labels(kind, "hit").inc(int(n - missing.sum()))
        return ProfileBatch(out[:, 0], out[:, 1], out[:, 2], missing, invalid)


def build_from_history(cfg: Config, history_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    from pipelines.features import build_profiles, load_transactions

    path = cfg.path(cfg.replay.fraud_csv)
    df = load_transactions(path)
    start = int(df["event_time"].min())
    return build_profiles(df, start + int(history_days * DAY_MS), history_start_ms=start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["publish", "restore"])
    ap.add_argument("--history-days", type=float, default=30.0)
    ap.add_argument("--if-missing", action="store_true", help="do nothing when Redis already has profiles")
    args = ap.parse_args(argv)
    cfg = load_config()
    if args.action == "restore":
        print(restore_redis_from_topics(cfg))
        return 0
    if args.if_missing:
        import redis

        if redis.Redis.from_url(cfg.redis.redis_url, **redis_kwargs(cfg.redis)).hlen(REDIS_KEYS["customer"]) > 0:
            print("[profiles] already published")
            return 0
    customers, terminals = build_from_history(cfg, args.history_days)
    counts = publish(cfg, customers, terminals)
    print(f"[profiles] published {counts['customer']} customer and {counts['terminal']} terminal profiles "
          f"(history: first {args.history_days:g} days) to Kafka and Redis")
    return 0


if __name__ == "__main__":
    sys.exit(main())
