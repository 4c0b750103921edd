"""500 concurrent WebSocket clients on loopback against the real server (a subprocess), 50 of them slow.

* 450 fast clients read everything; each must receive >= 80% of the snapshots the server broadcast meanwhile.
* 25 clients never read and 25 read one message every 5 s, through tiny receive buffers; the server must coalesce
  their queues and/or drop them (counted in its /metrics), never grow without bound.
* The server's RSS is sampled with psutil the whole time; its peak must stay bounded.

Real records flow through a fresh set of topics during the run, so that the snapshots have their realistic size.
Runs `STREAMSCORE_LOAD_SECONDS` (60 by default) and writes bench-results/dashboard_load.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import threading
import time
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests import dashboard_util as testkit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "load-token"
N_FAST, N_NEVER, N_RARE = 450, 25, 25
INTERVAL = 0.5
SEND_QUEUE = 16
SLOW_TIMEOUT = 10.0
SEQ = re.compile(rb'"seq":(\d+)')


class Stats:
    def __init__(self, kind: str):
        self.kind = kind
        self.received = 0
        self.window = 0            # messages received inside the measurement window
        self.seqs: list[int] = []  # first and last seq inside the window
        self.closed: tuple[int | None, str | None] | None = None


async def _client(url: str, st: Stats, stop: asyncio.Event, measuring: asyncio.Event, rcvbuf: int | None = None):
    sock = None
    if rcvbuf:
        # A slow reader with a small receive window, so the server feels its backpressure quickly.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        host, port = url.split("//")[1].split("/")[0].split(":")
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    try:
        async with connect(url, sock=sock, open_timeout=60, max_queue=1 if rcvbuf else 16,
                           additional_headers={"Authorization": f"Bearer {TOKEN}"},
                           ping_interval=None, compression=None, max_size=2**22) as ws:
            while not stop.is_set():
                if st.kind == "never":
                    await asyncio.wait_for(stop.wait(), None)
                    break
                if st.kind == "rare":
                    try:
                        await asyncio.wait_for(stop.wait(), 5.0)
                        break
                    except asyncio.TimeoutError:
                        pass
                try:
                    data = await asyncio.wait_for(ws.recv(decode=False), 1.0)
                except asyncio.TimeoutError:
                    continue
                st.received += 1
                if measuring.is_set():
                    m = SEQ.search(data[:80])
                    if m:
                        st.window += 1
                        seq = int(m.group(1))
                        st.seqs = [st.seqs[0], seq] if st.seqs else [seq, seq]
            if ws.close_code is not None:
                st.closed = (ws.close_code, ws.close_reason)
    except ConnectionClosed as exc:
        st.closed = (exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None)
    except (OSError, asyncio.TimeoutError) as exc:
        st.closed = (None, repr(exc))


def _sample_rss(pid: int, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append((time.time(), proc.memory_info().rss))
        except psutil.Error:
            return
        stop.wait(0.5)


def test_500_clients_with_50_slow(kafka_bootstrap, topic_factory, tmp_path):
    seconds = float(os.environ.get("STREAMSCORE_LOAD_SECONDS", "60"))
    topics = {key: topic_factory(f"load-{key.replace('_', '-')}", partitions=2)
              for key in ("fraud_scores", "sentiment_trends", "dead_letter", "late", "posts_late",
                          "post_sentiment", "transactions", "posts")}
    feeder = testkit.Feeder(kafka_bootstrap, topics, rate=40.0)
    extra = ["--send-queue", str(SEND_QUEUE), "--slow-timeout", str(SLOW_TIMEOUT), "--interval", str(INTERVAL),
             "--max-clients", "1000", "--log-level", "WARNING"]
    with testkit.run_server(kafka_bootstrap, tmp_path / "logs", token=TOKEN, topics=topics, extra=extra) as server:
        feeder.start()
        time.sleep(3)  # some data in the state before the clients come
        rss: list[tuple[float, int]] = []
        sampler_stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(server.proc.pid, sampler_stop, rss), daemon=True)
        sampler.start()
        time.sleep(1.0)
        baseline = max(r for _, r in rss)

        fast = [Stats("fast") for _ in range(N_FAST)]
        never = [Stats("never") for _ in range(N_NEVER)]
        rare = [Stats("rare") for _ in range(N_RARE)]

        async def run() -> dict:
            stop, measuring = asyncio.Event(), asyncio.Event()
            url = server.ws_url
            tasks = []
            t0 = time.time()
            everyone = [(s, None) for s in fast] + [(s, 4096) for s in never + rare]
            for i in range(0, len(everyone), 50):  # connect in waves of 50
                tasks += [asyncio.create_task(_client(url, s, stop, measuring, buf)) for s, buf in everyone[i:i + 50]]
                await asyncio.sleep(0.2)
            deadline = time.time() + 60
            while sum(s.received > 0 for s in fast) < N_FAST and time.time() < deadline:
                await asyncio.sleep(0.2)
            connected_s = time.time() - t0
            await asyncio.sleep(2.0)
            measuring.set()
            m0 = time.time()
            await asyncio.sleep(max(5.0, seconds - (time.time() - t0)))
            measuring.clear()
            window_s = time.time() - m0
            # The server's own count of open connections, while every client task is still running.
            open_clients = (await asyncio.to_thread(server.metrics)).get("streamscore_dashboard_clients")
            stop.set()
            await asyncio.wait(tasks, timeout=30)
            return {"connect_s": round(connected_s, 2), "window_s": round(window_s, 2),
                    "server_open_connections_at_end": open_clients}

        timing = asyncio.run(run())
        time.sleep(1.0)
        sampler_stop.set()
        sampler.join(5)
        feeder.stop.set()
        feeder.join(30)
        metrics = server.metrics()

    # What the server broadcast during the window, from the seq numbers the fast clients saw.
    spans = [s.seqs for s in fast if s.seqs]
    ticks = max(b for _, b in spans) - min(a for a, _ in spans) + 1
    broadcast_rate = ticks / timing["window_s"]
    ratios = sorted(s.window / ticks for s in fast)
    rates = sorted(s.window / timing["window_s"] for s in fast)
    peak = max(r for _, r in rss)
    disconnects = {re.search(r'reason="([^"]*)"', k).group(1): v for k, v in metrics.items()
                   if k.startswith("streamscore_dashboard_disconnects_total{")}
    result = {
        "clients": {"fast": N_FAST, "never_read": N_NEVER, "rarely_read": N_RARE},
        "duration_s": seconds, **timing,
        "server": {"interval_s": INTERVAL, "send_queue": SEND_QUEUE, "slow_timeout_s": SLOW_TIMEOUT,
                   "broadcast_rate_per_s": round(broadcast_rate, 3), "ticks_in_window": ticks},
        "fast_clients": {"min_rate_per_s": round(rates[0], 3), "median_rate_per_s": round(statistics.median(rates), 3),
                         "min_fraction_of_broadcasts": round(ratios[0], 3),
                         "p5_fraction_of_broadcasts": round(ratios[len(ratios) // 20], 3),
                         "median_fraction_of_broadcasts": round(statistics.median(ratios), 3),
                         "closed_by_server": sum(s.closed is not None for s in fast)},
        "slow_clients": {"never_read_closed": sum(s.closed is not None for s in never),
                         "rarely_read_closed": sum(s.closed is not None for s in rare),
                         "close_reasons": sorted({str(s.closed) for s in never + rare if s.closed}),
                         "rarely_read_messages_received": sorted(s.received for s in rare)},
        "server_metrics": {"coalesced_total": metrics.get("streamscore_dashboard_coalesced_total", 0.0),
                           "disconnects_total": disconnects,
                           "messages_sent_total": metrics.get("streamscore_dashboard_messages_sent_total", 0.0)},
        "rss_mb": {"baseline": round(baseline / 2**20, 1), "peak": round(peak / 2**20, 1),
                   "growth": round((peak - baseline) / 2**20, 1), "samples": len(rss)},
        "records_produced": feeder.sent,
    }
    out = ROOT / "bench-results" / "dashboard_load.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + json.dumps(result, indent=2))

    assert feeder.error is None, feeder.error
    assert broadcast_rate >= 0.5 / INTERVAL, f"the server itself fell behind: {broadcast_rate:.2f}/s"
    assert result["fast_clients"]["closed_by_server"] == 0
    assert timing["server_open_connections_at_end"] >= N_FAST
    if seconds >= 40:  # by then every slow client has been dropped; only the fast ones remain open
        assert timing["server_open_connections_at_end"] == N_FAST
    assert ratios[0] >= 0.8, f"slowest fast client got {ratios[0]:.0%} of the broadcasts"
    # Slow clients are coalesced or dropped, as the server counts it.
    assert result["server_metrics"]["coalesced_total"] > 0 or sum(disconnects.values()) > 0
    if seconds >= 60:
        assert sum(disconnects.values()) >= N_NEVER, disconnects  # never-readers stall and are dropped
    assert peak - baseline < 150 * 2**20, f"RSS grew by {(peak - baseline) / 2**20:.0f} MiB"
