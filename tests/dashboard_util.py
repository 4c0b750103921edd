"""Helpers the dashboard tests share: run the real server as a subprocess, and make realistic output records.

Not used by the server itself.
"""

from __future__ import annotations

import os
import random
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from infra.services import free_port
from pipelines import kafka_util
from pipelines.serde import serde

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("amount", "customer_mean_amount_1d", "customer_mean_amount_7d", "customer_tx_count_1d",
            "customer_tx_count_7d", "terminal_risk_1d", "terminal_risk_7d", "terminal_tx_count_7d",
            "hour_of_day", "is_weekend", "is_night")
POST_TOPICS = ("politics", "sports", "tech", "markets")


class ServerProcess:
    def __init__(self, proc: subprocess.Popen, port: int, metrics_port: int, token: str, log: Path,
                 tls: ssl.SSLContext | None = None):
        self.proc, self.port, self.metrics_port, self.token, self.log = proc, port, metrics_port, token, log
        self.tls = tls  # a client context trusting the server's certificate, when it serves TLS

    @property
    def url(self) -> str:
        """The page (no token in it: a browser logs in through /login, tests/browser_util.py login())."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def session_cookie(self, token: str | None = None) -> str:
        """Logs in as the page's script does (GET /login with the token in an Authorization header) and returns
        the ``name=value`` of the session cookie the server set."""
        req = urllib.request.Request(f"{self.url}login", headers={"Authorization": f"Bearer {token or self.token}"})
        with urllib.request.urlopen(req, timeout=5, context=self.tls) as resp:
            return resp.headers["Set-Cookie"].split(";", 1)[0]

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws"

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus samples, ``name{labels}`` -> value."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) ([-+\w.]+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def metric_sum(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == prefix or k.startswith(prefix + "{"))


@contextmanager
def run_server(bootstrap: str, log_dir: Path, *, token: str = "test-token", topics: dict[str, str] | None = None,
               extra: list[str] | None = None, group: str | None = None, env: dict[str, str] | None = None,
               timeout: float = 60.0, tls: tuple[Path, Path] | None = None) -> Iterator[ServerProcess]:
    """The dashboard on loopback; with `tls` (cert, key PEM files) it serves https/wss with them."""
    port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "dashboard.server", "--bootstrap", bootstrap, "--port", str(port),
           "--host", "127.0.0.1", "--token", token, "--metrics-port", str(metrics_port),
           "--group", group or f"streamscore-dashboard-test-{port}"]
    for key, name in (topics or {}).items():
        cmd += ["--topic", f"{key}={name}"]
    cmd += extra or []
    if "--flink-rest" not in cmd:  # not the default (make run's fraud job on loopback): no job panel unless given
        cmd += ["--flink-rest", ""]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"dashboard-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("STREAMSCORE_DASHBOARD__TOKEN", None)
    client_tls = None
    if tls:
        full_env.update(STREAMSCORE_DASHBOARD__TLS_CERT=str(tls[0]), STREAMSCORE_DASHBOARD__TLS_KEY=str(tls[1]))
        client_tls = ssl.create_default_context(cafile=str(tls[0]))
    # Test knobs such as STREAMSCORE_LOAD_SECONDS are not config keys; the config loader would reject them.
    for name in [n for n in full_env if n.startswith("STREAMSCORE_") and "__" not in n and n != "STREAMSCORE_CONFIG"]:
        del full_env[name]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(proc, port, metrics_port, token, log, client_tls)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dashboard exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{server.url}healthz", timeout=1, context=client_tls).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"dashboard did not start in {timeout}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def fraud_score(rng: random.Random, tx_id: int, now_ms: int | None = None) -> dict:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    score = min(1.0, max(0.0, rng.betavariate(0.6, 4.0) if rng.random() > 0.08 else rng.uniform(0.5, 1.0)))
    decision = "DECLINE" if score >= 0.9 else "REVIEW" if score >= 0.5 else "APPROVE"
    amount = round(rng.lognormvariate(3.5, 1.0) * (3 if score > 0.5 else 1), 2)
    features = {name: round(rng.gauss(1.0, 0.5), 4) for name in FEATURES}
    features["amount"] = amount
    if score > 0.5:
        features["terminal_risk_7d"] = round(rng.uniform(0.3, 0.9), 4)
    produced = now_ms - rng.randint(20, 400)
    return {"transaction_id": tx_id, "customer_id": rng.randint(0, 4999), "terminal_id": rng.randint(0, 9999),
            "amount": amount, "event_time": produced - 1000, "features": features, "profile_flags": 0,
            "score": score, "decision": decision, "model_version": "test-1", "produced_at": produced,
            "scored_at": now_ms}


def sentiment_trend(rng: random.Random, topic: str, window_start: int) -> dict:
    counts = [rng.randint(0, 40) for _ in range(3)]
    total = max(1, sum(counts))
    return {"topic": topic, "window_start": window_start, "window_end": window_start + 60_000,
            "count_negative": counts[0], "count_neutral": counts[1], "count_positive": counts[2],
            "mean_positivity": round((counts[2] + 0.5 * counts[1]) / total, 4)}


def dead_letter(rng: random.Random, offset: int) -> dict:
    reason = rng.choice(("not-avro", "negative-amount", "corrupt-avro"))
    return {"source_topic": "transactions", "source_partition": offset % 4, "source_offset": offset,
            "reason": reason, "error": f"test record {offset}: {reason}", "key": None, "payload": b"\x00bad",
            "failed_at": int(time.time() * 1000)}


def late_event(rng: random.Random, offset: int) -> dict:
    now = int(time.time() * 1000)
    return {"source_topic": "transactions", "source_partition": offset % 4, "source_offset": offset,
            "event_id": str(offset), "event_time": now - 60_000, "watermark": now - 5_000, "reason": "late",
            "payload": b"\x00", "detected_at": now}


def transaction(rng: random.Random, tx_id: int) -> dict:
    now = int(time.time() * 1000)
    return {"transaction_id": tx_id, "customer_id": rng.randint(0, 4999), "terminal_id": rng.randint(0, 9999),
            "amount": round(rng.lognormvariate(3.5, 1.0), 2), "event_time": now - 50, "produced_at": now,
            "currency": "EUR"}


def social_post(rng: random.Random, post_id: int) -> dict:
    now = int(time.time() * 1000)
    return {"post_id": f"p{post_id}", "author": f"user{rng.randint(0, 999)}", "text": "test post",
            "topic": rng.choice(POST_TOPICS), "language": "en", "event_time": now - 50, "produced_at": now}


def sentiment_score(rng: random.Random, post_id: int) -> dict:
    now = int(time.time() * 1000)
    probs = [rng.random() for _ in range(3)]
    total = sum(probs)
    neg, neu, pos = (x / total for x in probs)
    label = ("negative", "neutral", "positive")[max(range(3), key=lambda k: (neg, neu, pos)[k])]
    return {"post_id": f"p{post_id}", "topic": rng.choice(POST_TOPICS), "event_time": now - 500, "label": label,
            "p_negative": neg, "p_neutral": neu, "p_positive": pos, "model_version": "test-1",
            "produced_at": now - rng.randint(30, 900), "scored_at": now}


class Feeder(threading.Thread):
    """Produces scores at ~`rate`/s, a trend per topic every few seconds, and a dead letter now and then."""

    def __init__(self, bootstrap: str, topics: dict[str, str], rate: float = 40.0):
        super().__init__(daemon=True, name="dashboard-feeder")
        self.bootstrap, self.topics, self.rate = bootstrap, topics, rate
        self.stop = threading.Event()
        self.sent = {"fraud_scores": 0, "post_sentiment": 0, "sentiment_trends": 0, "dead_letter": 0, "late": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _run(self) -> None:
        rng = random.Random(7)
        p = kafka_util.producer(self.bootstrap)
        fs, ts, dl = serde("fraud_score"), serde("sentiment_trend"), serde("dead_letter")
        le, tx, post, ss = serde("late_event"), serde("transaction"), serde("social_post"), serde("sentiment_score")
        base = (int(time.time() * 1000) // 60_000 - 20) * 60_000
        window = 0
        i = 0
        # History first, so that the sentiment chart has lines from the start.
        for w in range(12):
            for topic in POST_TOPICS:
                p.produce(self.topics["sentiment_trends"], ts.encode(sentiment_trend(rng, topic,
                                                                                            base + w * 60_000)))
                self.sent["sentiment_trends"] += 1
        window = 12
        while not self.stop.is_set():
            for _ in range(max(1, int(self.rate / 10))):
                i += 1
                # The input record and its score (the pipeline's job, played by this thread for now).
                p.produce(self.topics["transactions"], tx.encode(transaction(rng, i)), key=str(i).encode())
                p.produce(self.topics["fraud_scores"], fs.encode(fraud_score(rng, i)), key=str(i).encode())
                self.sent["fraud_scores"] += 1
                if i % 2 == 0:
                    p.produce(self.topics["posts"], post.encode(social_post(rng, i)))
                    p.produce(self.topics["post_sentiment"], ss.encode(sentiment_score(rng, i)))
                    self.sent["post_sentiment"] += 1
            if i % 60 == 0:
                p.produce(self.topics["dead_letter"], dl.encode(dead_letter(rng, i)))
                self.sent["dead_letter"] += 1
            if i % 100 == 0:
                p.produce(self.topics["late"], le.encode(late_event(rng, i)))
                self.sent["late"] += 1
            if i % 80 == 0:
                for topic in POST_TOPICS:
                    p.produce(self.topics["sentiment_trends"],
                              ts.encode(sentiment_trend(rng, topic, base + window * 60_000)))
                    self.sent["sentiment_trends"] += 1
                window += 1
            p.poll(0)
            time.sleep(0.1)
        assert p.flush(30) == 0
