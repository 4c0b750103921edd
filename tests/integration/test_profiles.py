"""Profiles in real Redis and compacted Kafka topics: publish, batch lookup, live update, outage, restore."""

import time

import numpy as np
import pandas as pd
import pytest

from infra import services
from pipelines.config import load_config
from pipelines.profiles import ProfileStore, publish

pytestmark = pytest.mark.integration

# The session's Redis is shared with other tests that publish the real profiles: use ids no real customer has.
C1, C2, C3, T1 = 9_000_001, 9_000_002, 9_000_003, 9_000_007


def frames(mean_c1: float):
    customers = pd.DataFrame({"customer_id": [C1, C2], "mean_amount": [mean_c1, 20.0], "std_amount": [1.5, 2.5],
                              "tx_per_day": [3.0, 4.0], "n_tx": [10, 20], "first_seen": [1, 2], "as_of": [5, 5]})
    terminals = pd.DataFrame({"terminal_id": [T1], "mean_amount": [30.0], "std_amount": [3.0], "tx_per_day": [9.0],
                              "n_tx": [90], "first_seen": [1], "as_of": [5]})
    return customers, terminals


def test_publish_lookup_update_without_restart(kafka_bootstrap, redis_url, topic_factory):
    cfg = load_config()
    topics = (topic_factory("cp", compacted=True), topic_factory("tp", compacted=True))
    publish(cfg, *frames(10.0), bootstrap=kafka_bootstrap, redis_url=redis_url, topics=topics)
    store = ProfileStore(redis_url, ttl_s=0.5)
    got = store.lookup("customer", np.array([C1, C2, C3, C1]))
    assert got.mean[0] == 10.0 and got.mean[1] == 20.0 and got.mean[3] == 10.0
    assert list(got.missing) == [False, False, True, False]
    assert store.lookup("terminal", np.array([T1])).tx_per_day[0] == 9.0

    publish(cfg, *frames(99.0), bootstrap=kafka_bootstrap, redis_url=redis_url, topics=topics)
    time.sleep(0.6)
    assert store.lookup("customer", np.array([C1])).mean[0] == 99.0  # a new profile, no restart


def test_redis_outage_gives_defaults_and_recovers(tmp_path):
    server = services.RedisServer(services.free_port(), tmp_path / "redis")
    server.start()
    try:
        import redis

        redis.Redis.from_url(server.url).hset("streamscore:profiles:customer", "1", "10.0,1.0,2.0")
        store = ProfileStore(server.url, ttl_s=0.0, retry_s=0.2)
        assert not store.lookup("customer", np.array([1])).missing[0]
        server.stop()
        t0 = time.monotonic()
        down = store.lookup("customer", np.array([1, 2]))
        assert down.missing.all() and time.monotonic() - t0 < 2.0  # defaults + flag, fast
        server.start()
        time.sleep(0.3)
        redis.Redis.from_url(server.url).hset("streamscore:profiles:customer", "1", "10.0,1.0,2.0")
        deadline = time.time() + 10
        while store.lookup("customer", np.array([1])).missing[0]:
            assert time.time() < deadline, "lookups did not recover after Redis came back"
            time.sleep(0.3)
    finally:
        server.stop()


def test_invalid_profile_values_give_defaults_and_a_flag(redis_url):
    """Crafted values in Redis (not numbers, wrong field count, inf, NaN, denormal, out of range) never raise
    and never reach the features: the defaults, the invalid flag and the counter."""
    import redis

    from pipelines.metrics import PROFILE_LOOKUPS

    bad = {9_100_001: "a,b,c", 9_100_002: "1,2", 9_100_003: "inf,1,1", 9_100_004: "1,nan,1",
           9_100_005: "1e-310,1,1", 9_100_006: "1e30,1,1", 9_100_007: "\xff,1,1", 9_100_008: "1,2,3,4"}
    good = 9_100_009
    r = redis.Redis.from_url(redis_url)
    r.hset("streamscore:profiles:customer", mapping={**{str(k): v for k, v in bad.items()}, str(good): "5,1,2"})
    before = PROFILE_LOOKUPS.labels("customer", "invalid")._value.get()
    store = ProfileStore(redis_url, ttl_s=0.0)
    ids = np.array([*bad, good, 9_100_999])
    got = store.lookup("customer", ids)
    assert list(got.invalid) == [True] * len(bad) + [False, False]
    assert list(got.missing) == [True] * len(bad) + [False, True]
    assert np.isnan(got.mean[:len(bad)]).all() and got.mean[len(bad)] == 5.0
    assert PROFILE_LOOKUPS.labels("customer", "invalid")._value.get() - before == len(bad)
