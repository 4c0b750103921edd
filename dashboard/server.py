"""The live dashboard: one asyncio process serving the static page over HTTP and pushing snapshots over WebSockets.

    python -m dashboard.server [--bootstrap HOST:PORT] [--port N] [--token T] [--topic fraud_scores=NAME ...]

* ``GET /login`` serves the login page; the same ``GET /login`` with ``Authorization: Bearer <token>`` (sent by
  the page's script, never in a URL) answers a session cookie (dashboard/auth.py), 401 for a wrong token, 429
  after repeated failures. ``/logout`` ends the session; ``/session`` answers 200 or 401. ``GET /`` without a
  valid session redirects to ``/login``; ``/<file>`` serves ``dashboard/static/`` (the files hold no data);
  ``/healthz`` answers ``ok``; ``/ws`` is the WebSocket endpoint. All of it goes through websockets'
  ``process_request`` hook (websockets answers GETs only, which is all the login needs).
* ``/ws`` needs the session cookie and a same-origin ``Origin`` (the page's own ``scheme://Host``, one of
  ``dashboard.allowed_origins`` or the bind address's): HTTP 401 / 403 otherwise. Scripts may send the token as an
  ``Authorization: Bearer`` header instead (an ``Origin``, if they send one, is checked the same way). A session
  that expires or logs out has its WebSockets closed (1008) at the next broadcast.
* With ``dashboard.tls_cert`` and ``tls_key`` the same port serves https and wss only, and the cookie is Secure.
* Every ``--interval`` seconds (0.5) each client is offered a JSON ``snapshot`` of the panels it subscribed to (all
  by default). The message is serialised once per tick and per distinct panel set and shared by every client, so a
  client costs references, not copies.
* Each client has a send queue bounded by ``dashboard.send_queue``. When it is full the newest queued snapshot is
  replaced by the new one (snapshots are complete states, so nothing is lost but staleness) and
  ``streamscore_dashboard_coalesced_total`` counts it. A client whose pending send has not completed for
  ``--slow-timeout`` seconds ("stalled"), or whose queue stayed full for that long ("lagging"), is closed with code
  1008 and a reason, counted in ``streamscore_dashboard_disconnects_total{reason}``. The transport buffer above the
  kernel is capped by ``write_limit`` and the kernel send buffer by ``--sndbuf``, so memory per client is bounded.
* The fraud job's state and restart count (the ``job`` panel) come from Flink's REST API at ``--flink-rest``
  (default: the fraud job's MiniCluster on loopback, ``flink.local_rest_port``, or ``flink.jobmanager``), polled
  every ``--job-interval`` seconds by the server, never by the browser: the page still reads nothing but the
  authenticated WebSocket.
* Client messages are JSON objects with a ``type``: ``{"type": "ping", "id": 1}`` -> ``pong``;
  ``{"type": "subscribe", "panels": ["histogram", ...]}`` -> ``subscribed``. Anything else gets an
  ``{"type": "error", ...}`` frame and the connection stays open.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import mimetypes
import signal
import socket
import ssl
import sys
import time
import weakref
from collections import deque
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import auth  # noqa: E402
from dashboard.source import KINDS, Event, KafkaSource, SourceTopics  # noqa: E402
from dashboard.state import PANELS, DashboardState  # noqa: E402
from pipelines import metrics  # noqa: E402
from pipelines.config import Config, ConfigError, load_config  # noqa: E402
from pipelines.metrics import (DASHBOARD_BAD_MESSAGES, DASHBOARD_CLIENTS, DASHBOARD_COALESCED,  # noqa: E402
                               DASHBOARD_DISCONNECTS, DASHBOARD_MESSAGES, DASHBOARD_REJECTED)

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("dashboard")
CLIENT_TYPES = ("ping", "subscribe")
CONTROL_SLOTS = 16  # replies (pong, error) a client may have pending beyond its update queue


@dataclasses.dataclass
class Settings:
    host: str
    port: int
    token: str
    allowed_origins: tuple[str, ...]
    send_queue: int
    bootstrap: str
    topics: SourceTopics
    group: str = "streamscore-dashboard"
    interval: float = 0.5
    slow_timeout: float = 10.0
    sndbuf: int = 128 * 1024
    write_limit: int = 32 * 1024
    max_clients: int = 2000
    metrics_port: int = 0
    # Flink's REST API to read the fraud job's state from ("": the job panel says NOT WATCHED), and the job's name.
    flink_rest: str = ""
    job_name: str = "streamscore-fraud"
    job_interval: float = 2.0
    lag_interval: float = 2.0
    # dashboard.shift_threshold: the |change| of a topic's mean positivity against its last hour that is marked.
    shift_threshold: float = 0.15
    # fraud.review_threshold / decline_threshold: the models panel decides shadow scores with them.
    review_threshold: float = 0.5
    decline_threshold: float = 0.9
    # dashboard.session_ttl_s, tls_cert, tls_key.
    session_ttl_s: float = 43200.0
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


class Client:
    """One WebSocket client and its bounded outgoing queue of (is_update, bytes)."""

    def __init__(self, ws: ServerConnection, limit: int):
        self.ws = ws
        self.limit = max(1, limit)
        self.panels: frozenset[str] = frozenset(PANELS)
        self.queue: deque[tuple[bool, bytes]] = deque()
        self.wake = asyncio.Event()
        self.full_since: float | None = None   # monotonic time the queue first overflowed, reset when drained
        self.busy_since: float | None = None   # monotonic time the current send started
        self.closing = False
        self.sender: asyncio.Task | None = None
        self.coalesced = 0
        self.sent = 0
        self.session: str | None = None  # the login session it came with (None: an Authorization header)

    def offer(self, data: bytes, now: float) -> bool:
        """Queues an update; returns True when it had to be coalesced into the newest queued one."""
        if len(self.queue) < self.limit:
            self.queue.append((True, data))
            self.wake.set()
            return False
        for i in range(len(self.queue) - 1, -1, -1):
            if self.queue[i][0]:
                self.queue[i] = (True, data)
                break
        self.coalesced += 1
        if self.full_since is None:
            self.full_since = now
        self.wake.set()
        return True

    def offer_control(self, data: bytes) -> bool:
        if len(self.queue) >= self.limit + CONTROL_SLOTS:
            return False
        self.queue.append((False, data))
        self.wake.set()
        return True

    def too_slow(self, now: float, timeout: float) -> tuple[str, str] | None:
        if self.busy_since is not None and now - self.busy_since > timeout:
            return "stalled", f"too slow: nothing drained for {timeout:g}s"
        if self.full_since is not None and now - self.full_since > timeout:
            return "lagging", f"too slow: send queue full for {timeout:g}s"
        return None


class Dashboard:
    def __init__(self, settings: Settings, state: DashboardState | None = None):
        self.s = settings
        self.state = state or DashboardState(shift_threshold=settings.shift_threshold,
                                             review_threshold=settings.review_threshold,
                                             decline_threshold=settings.decline_threshold)
        self.clients: set[Client] = set()
        self.seq = 0
        self.started = time.time()
        self.source: KafkaSource | None = None
        self.queue: asyncio.Queue[list[Event]] | None = None
        self._last: dict[frozenset[str], bytes] = {}
        self._tasks: list[asyncio.Task] = []
        self.origins = set(settings.allowed_origins) | self._own_origins()
        self.sessions = auth.Sessions(settings.session_ttl_s)
        self.throttle = auth.Throttle()
        # The session each accepted handshake came with, read by the handler that follows it.
        self._handshakes: weakref.WeakKeyDictionary[ServerConnection, str | None] = weakref.WeakKeyDictionary()

    def _own_origins(self) -> set[str]:
        hosts = {self.s.host}
        if self.s.host in ("127.0.0.1", "localhost", "::1"):
            hosts |= {"127.0.0.1", "localhost"}
        return {f"{self.s.scheme}://{h}:{self.s.port}" for h in hosts}

    def _same_origin(self, origin: str, request: Request) -> bool:
        """The Origin a browser sent is the page's own (scheme://Host of this very request; a browser sets both),
        the bind address's, or one of dashboard.allowed_origins."""
        host = request.headers.get("Host", "")
        return origin in self.origins or (bool(host) and origin == f"{self.s.scheme}://{host}")

    # -------------------------------------------------------------------------------------------------- HTTP

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        host = request.headers.get("Host", "")
        if url.path == "/ws":
            return self._check_ws(connection, request)
        if url.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if url.path == "/login":
            return self._login(connection, request, host)
        if url.path == "/logout":
            self.sessions.drop(auth.session_id(request.headers))
            return self._redirect(connection, "/login", auth.clear_cookie(self.s.tls_cert != ""))
        if url.path == "/session":
            if self.sessions.valid(auth.session_id(request.headers)):
                return self._no_store(connection.respond(HTTPStatus.OK, "ok\n"))
            return self._no_store(connection.respond(HTTPStatus.UNAUTHORIZED, "not logged in\n"))
        if url.path in ("", "/", "/index.html") and not self.sessions.valid(auth.session_id(request.headers)):
            return self._redirect(connection, "/login")
        if url.path == "/login.html":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return self._static(connection, url.path, host)

    @staticmethod
    def _no_store(resp: Response) -> Response:
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def _redirect(self, connection: ServerConnection, where: str, cookie: str | None = None) -> Response:
        resp = self._no_store(connection.respond(HTTPStatus.SEE_OTHER, f"see {where}\n"))
        resp.headers["Location"] = where
        if cookie:
            resp.headers["Set-Cookie"] = cookie
        return resp

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str, text: str,
                retry_after: float = 0.0) -> Response:
        DASHBOARD_REJECTED.labels(reason).inc()
        resp = self._no_store(connection.respond(status, text))
        if status == HTTPStatus.UNAUTHORIZED:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="streamscore-dashboard"'
        if retry_after:
            resp.headers["Retry-After"] = str(int(retry_after) + 1)
        return resp

    def _token_refusal(self, connection: ServerConnection, addr: str, token: str) -> Response | None:
        """None when `token` is the dashboard's token; else the 401 (counted towards a lock-out) or the 429."""
        locked = self.throttle.locked_for(addr)
        if locked:
            return self._refuse(connection, HTTPStatus.TOO_MANY_REQUESTS, "locked-out",
                                f"too many failed logins; retry in {int(locked) + 1}s\n", retry_after=locked)
        if not auth.token_matches(token, self.s.token):
            self.throttle.failed(addr)
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "bad-token", "wrong token\n")
        self.throttle.succeeded(addr)
        return None

    def _login(self, connection: ServerConnection, request: Request, host: str) -> Response:
        token = auth.bearer(request.headers)
        if token is None:
            if self.sessions.valid(auth.session_id(request.headers)):
                return self._redirect(connection, "/")
            return self._static(connection, "/login.html", host)
        origin, site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
        if (origin is not None and not self._same_origin(origin, request)) or site not in (None, "same-origin"):
            return self._refuse(connection, HTTPStatus.FORBIDDEN, "origin", "cross-origin login refused\n")
        refusal = self._token_refusal(connection, _addr(connection), token)
        if refusal is not None:
            return refusal
        resp = self._no_store(connection.respond(HTTPStatus.OK, "logged in\n"))
        resp.headers["Set-Cookie"] = auth.set_cookie(self.sessions.new(), self.s.session_ttl_s, self.s.tls_cert != "")
        return resp

    def _check_ws(self, connection: ServerConnection, request: Request) -> Response | None:
        sid, token = auth.session_id(request.headers), auth.bearer(request.headers)
        origin = request.headers.get("Origin")
        session: str | None = None
        if self.sessions.valid(sid):
            session = sid
            if origin is None or not self._same_origin(origin, request):  # a browser always sends one
                return self._refuse(connection, HTTPStatus.FORBIDDEN, "origin", f"origin {origin} is not allowed\n")
        elif token is not None:
            refusal = self._token_refusal(connection, _addr(connection), token)
            if refusal is not None:
                return refusal
            if origin is not None and not self._same_origin(origin, request):
                return self._refuse(connection, HTTPStatus.FORBIDDEN, "origin", f"origin {origin} is not allowed\n")
        else:
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "no-session" if sid is None else "bad-session",
                                "log in first (/login), or send Authorization: Bearer <token>\n")
        if len(self.clients) >= self.s.max_clients:
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, "capacity", "too many dashboard clients\n")
        self._handshakes[connection] = session
        return None

    def _csp(self, host_header: str) -> str:
        """The page's policy: it may talk to its own origin only (the Host header if it names this server, else the
        bind address), may not be framed, and loads no plugins and no foreign base URL (issue 24)."""
        hosts = {o.split("://", 1)[1] for o in self._own_origins()}
        bind = f"[{self.s.host}]" if ":" in self.s.host else self.s.host  # an IPv6 address needs brackets
        host = host_header if host_header in hosts else f"{bind}:{self.s.port}"
        return (f"default-src 'self'; connect-src 'self' ws://{host} wss://{host}; img-src 'self' data:; "
                "style-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'; form-action 'self'")

    def _static(self, connection: ServerConnection, path: str, host_header: str = "") -> Response:
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        try:
            file = (STATIC / rel).resolve()
            ok = file.is_file() and STATIC.resolve() in file.parents
        except (OSError, ValueError):
            ok = False
        if not ok:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        body = file.read_bytes()
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
            ctype += "; charset=utf-8"
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
                           ("Content-Security-Policy", self._csp(host_header)),
                           ("Referrer-Policy", "no-referrer")])
        return Response(200, "OK", headers, body)

    # --------------------------------------------------------------------------------------------- WebSocket

    async def handler(self, ws: ServerConnection) -> None:
        client = Client(ws, self.s.send_queue)
        client.session = self._handshakes.pop(ws, None)
        sock = ws.transport.get_extra_info("socket")
        if sock is not None and self.s.sndbuf > 0:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.s.sndbuf)
            except OSError:
                pass
        self.clients.add(client)
        DASHBOARD_CLIENTS.set(len(self.clients))
        client.offer(self._message(client.panels), time.monotonic())
        client.sender = asyncio.create_task(self._send_loop(client))
        try:
            async for raw in ws:
                reply = self.handle_message(client, raw)
                if reply is not None and not client.offer_control(reply):
                    await self.drop(client, "control-overflow", "too many unread replies")
                    break
        except ConnectionClosed:
            pass
        finally:
            self._forget(client)

    def _forget(self, client: Client) -> None:
        self.clients.discard(client)
        DASHBOARD_CLIENTS.set(len(self.clients))
        if client.sender is not None and not client.sender.done():
            client.sender.cancel()
        client.queue.clear()

    async def _send_loop(self, client: Client) -> None:
        try:
            while True:
                if not client.queue:
                    client.wake.clear()
                    await client.wake.wait()
                    continue
                is_update, data = client.queue.popleft()
                if len(client.queue) <= client.limit // 2:
                    client.full_since = None
                client.busy_since = time.monotonic()
                await client.ws.send(data, text=True)
                client.busy_since = None
                client.sent += 1
                if is_update:
                    DASHBOARD_MESSAGES.inc()
        except ConnectionClosed:
            pass

    async def drop(self, client: Client, reason: str, text: str) -> None:
        if client.closing:
            return
        client.closing = True
        DASHBOARD_DISCONNECTS.labels(reason).inc()
        log.info("disconnecting %s: %s", client.ws.remote_address, text)
        self._forget(client)
        try:
            await asyncio.wait_for(client.ws.close(1008, text), timeout=2.0)
        except (asyncio.TimeoutError, ConnectionClosed, OSError):
            pass
        finally:
            if client.ws.transport is not None and not client.ws.transport.is_closing():
                client.ws.transport.abort()

    def handle_message(self, client: Client, raw: str | bytes) -> bytes | None:
        """Validates one client message and returns the reply frame (pong, subscribed or error)."""
        if isinstance(raw, (bytes, bytearray)):
            return self._error("binary", "binary frames are not accepted; send JSON text")
        try:
            msg = json.loads(raw)
        except ValueError:
            return self._error("not-json", "not valid JSON")
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return self._error("no-type", "a message is a JSON object with a string 'type'")
        kind = msg["type"]
        if kind == "ping":
            ident = msg.get("id")
            if ident is not None and not (isinstance(ident, (int, str)) and len(str(ident)) <= 64):
                return self._error("bad-field", "'id' must be a short string or integer")
            return _dumps({"type": "pong", "id": ident, "ts": time.time()})
        if kind == "subscribe":
            panels = msg.get("panels")
            if (not isinstance(panels, list) or not panels or len(panels) > len(PANELS)
                    or not all(isinstance(p, str) for p in panels)):
                return self._error("bad-field", f"'panels' must be a non-empty list of: {', '.join(PANELS)}")
            unknown = sorted(set(panels) - set(PANELS))
            if unknown:
                return self._error("bad-field", f"unknown panels {unknown}; known: {', '.join(PANELS)}")
            client.panels = frozenset(panels)
            client.offer(self._message(client.panels), time.monotonic())
            return _dumps({"type": "subscribed", "panels": sorted(client.panels)})
        return self._error("unknown-type", f"unknown message type {kind[:40]!r}; known: {', '.join(CLIENT_TYPES)}")

    @staticmethod
    def _error(reason: str, text: str) -> bytes:
        DASHBOARD_BAD_MESSAGES.labels(reason).inc()
        return _dumps({"type": "error", "reason": reason, "error": text})

    # ------------------------------------------------------------------------------------------- broadcasting

    def _meta(self, now: float) -> dict[str, Any]:
        return {"clients": len(self.clients), "uptime_s": round(now - self.started, 1),
                "kafka": bool(self.source and self.source.connected), "interval_s": self.s.interval,
                "topics": self.s.topics.outputs, "last_event": self.state.last_event}

    def _message(self, panels: frozenset[str], snap: dict[str, Any] | None = None, now: float | None = None) -> bytes:
        if snap is None and panels in self._last:
            return self._last[panels]
        now = time.time() if now is None else now
        snap = snap if snap is not None else self.state.snapshot(now, panels)
        return _dumps({"type": "snapshot", "seq": self.seq, "ts": now, "meta": self._meta(now),
                       "panels": {p: snap[p] for p in PANELS if p in panels}})

    def tick(self) -> None:
        """One broadcast: a snapshot to every client, then the slow ones are dropped."""
        self.seq += 1
        now, mono = time.time(), time.monotonic()
        needed = set().union(*(c.panels for c in self.clients)) if self.clients else set(PANELS)
        snap = self.state.snapshot(now, [p for p in PANELS if p in needed])
        self._last = {}
        for client in list(self.clients):
            msg = self._last.get(client.panels)
            if msg is None:
                msg = self._last[client.panels] = self._message(client.panels, snap, now)
            if client.offer(msg, mono):
                DASHBOARD_COALESCED.inc()
        for client in list(self.clients):
            if client.session is not None and not self.sessions.valid(client.session):
                asyncio.create_task(self.drop(client, "logged-out", "the session ended; log in again"))
                continue
            slow = client.too_slow(mono, self.s.slow_timeout)
            if slow:
                asyncio.create_task(self.drop(client, *slow))

    async def _broadcast_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.s.interval
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (a busy machine): skip ticks instead of bursting
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            try:
                self.tick()
            except Exception:
                log.exception("broadcast failed")

    async def _apply_loop(self) -> None:
        assert self.queue is not None
        st = self.state
        while True:
            events = await self.queue.get()
            now = time.time()
            for kind, rec in events:
                try:
                    if kind == "fraud_score":
                        st.add_fraud_score(rec, now)
                    elif kind == "sentiment_score":
                        st.add_sentiment_score(rec, now)
                    elif kind == "trend":
                        st.add_trend(rec, now)
                    elif kind == "late_transaction":
                        st.add_late("transactions", now)
                    elif kind == "late_post":
                        st.add_late("posts", now)
                    elif kind == "dead_letter":
                        st.add_dead_letter(rec, now)
                    elif kind == "post":
                        st.add_post(rec, now)
                    elif kind == "model_quality":
                        st.add_model_quality(rec, now)
                    else:
                        st.add_decode_error()
                except Exception:  # a record with odd values must not stop the dashboard
                    log.exception("could not apply a %s record", kind)
                    st.add_decode_error()

    async def _job_loop(self) -> None:
        """Reads the fraud job's state and restart count from Flink's REST API into the state (in a thread: the
        HTTP call blocks)."""
        from pipelines.flink_rest import FlinkRestError, job_status

        while True:
            try:
                st = await asyncio.to_thread(job_status, self.s.flink_rest, self.s.job_name, 2.0)
                self.state.set_job(st.as_dict() if st else None, name=self.s.job_name)
            except FlinkRestError as exc:
                self.state.set_job(None, error=str(exc), name=self.s.job_name)
            except Exception:  # an odd answer must not stop the dashboard
                log.exception("could not read the job's state from %s", self.s.flink_rest)
            await asyncio.sleep(self.s.job_interval)

    def _on_offsets(self, rows: list[dict], inputs: dict[str, int]) -> None:
        now = time.time()
        self.state.set_lag(rows, now)
        for name, total in inputs.items():
            self.state.observe_input_offsets(name, total, now)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue(maxsize=64)
        metrics.serve(self.s.metrics_port)
        self.source = KafkaSource(self.s.bootstrap, self.s.topics, self.s.group, loop, self.queue,
                                  self._on_offsets, lag_interval=self.s.lag_interval)
        self.source.start()
        self._tasks = [asyncio.create_task(self._apply_loop()), asyncio.create_task(self._broadcast_loop())]
        if self.s.flink_rest:
            self._tasks.append(asyncio.create_task(self._job_loop()))
        tls = None
        if self.s.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.s.tls_cert, self.s.tls_key)
        try:
            async with serve(self.handler, self.s.host, self.s.port, process_request=self.process_request,
                             ssl=tls, compression=None, max_size=16 * 1024, max_queue=16, write_limit=self.s.write_limit,
                             close_timeout=2, ping_interval=20, ping_timeout=20,
                             server_header="streamscore-dashboard") as server:
                self.server: Server = server
                log.info("dashboard on %s://%s:%d/ (log in at /login with dashboard.token; metrics on :%d, "
                         "Kafka %s)", self.s.scheme, self.s.host, self.s.port, self.s.metrics_port,
                         self.s.bootstrap)
                if ready is not None:
                    ready.set()
                await stop.wait()
                server.close(close_connections=False)
                for client in list(self.clients):
                    self._forget(client)
                    client.ws.transport.abort()
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.to_thread(self.source.stop)


def _addr(connection: ServerConnection) -> str:
    peer = connection.remote_address
    return str(peer[0]) if peer else "?"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dashboard.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config file (default: $STREAMSCORE_CONFIG or config/streamscore.yaml)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: kafka.bootstrap_servers)")
    p.add_argument("--host", help="listen address (default: dashboard.host)")
    p.add_argument("--port", type=int, help="HTTP/WebSocket port (default: dashboard.port)")
    p.add_argument("--token", help="the login token (default: dashboard.token / STREAMSCORE_DASHBOARD__TOKEN); "
                                   "the environment keeps it out of the process list")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 = off (default: metrics.dashboard_port)")
    p.add_argument("--group", default="streamscore-dashboard", help="Kafka consumer group")
    p.add_argument("--topic", action="append", default=[], metavar="KEY=NAME",
                   help="override a topic name, KEY a field of the topics config (fraud_scores, dead_letter...)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between broadcasts")
    p.add_argument("--send-queue", type=int, help="per-client queued updates (default: dashboard.send_queue)")
    p.add_argument("--slow-timeout", type=float, default=10.0,
                   help="seconds a client may stay stalled or coalescing before it is disconnected")
    p.add_argument("--sndbuf", type=int, default=128 * 1024, help="kernel send buffer per client socket, 0 = OS")
    p.add_argument("--max-clients", type=int, default=2000)
    p.add_argument("--flink-rest", help="Flink REST URL to read the fraud job's state from, '' = none (default: "
                                        "http://<flink.jobmanager>, else http://127.0.0.1:<flink.local_rest_port>)")
    p.add_argument("--job-name", default="streamscore-fraud", help="the Flink job whose state the dashboard shows")
    p.add_argument("--job-interval", type=float, default=2.0, help="seconds between reads of the job's state")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace, cfg: Config) -> Settings:
    overrides = {}
    for item in args.topic:
        key, sep, name = item.partition("=")
        if not sep or not name or key not in {f.name for f in dataclasses.fields(cfg.topics)}:
            raise ConfigError(f"--topic {item!r}: expected KEY=NAME with KEY a field of the topics config")
        overrides[key] = name
    topics = dataclasses.replace(cfg.topics, **overrides)
    d = cfg.dashboard
    token = args.token if args.token is not None else d.token
    if not token:
        raise ConfigError("dashboard.token is empty; set STREAMSCORE_DASHBOARD__TOKEN or --token")
    host = args.host or d.host
    weak = auth.weakness(token)
    if weak and not _loopback(host):
        # Issue 24: a guessable token on a reachable address lets anyone read every score.
        raise ConfigError(f"refusing to serve on {host} with {weak}; set STREAMSCORE_DASHBOARD__TOKEN to a long "
                          f"random value (python -c 'import secrets; print(secrets.token_urlsafe(32))'), or serve "
                          f"on 127.0.0.1")
    if bool(d.tls_cert) != bool(d.tls_key):
        raise ConfigError("dashboard.tls_cert and dashboard.tls_key go together (both set: https/wss; both empty: "
                          "http/ws)")
    if args.interval <= 0 or args.slow_timeout <= 0 or args.job_interval <= 0:
        raise ConfigError("--interval, --slow-timeout and --job-interval must be positive")
    if args.flink_rest is not None:
        flink_rest = args.flink_rest.rstrip("/")
    elif cfg.flink.jobmanager:
        flink_rest = cfg.flink.jobmanager if "://" in cfg.flink.jobmanager else f"http://{cfg.flink.jobmanager}"
    else:
        flink_rest = f"http://127.0.0.1:{cfg.flink.local_rest_port}" if cfg.flink.local_rest_port else ""
    return Settings(host=args.host or d.host, port=args.port if args.port is not None else d.port, token=token,
                    allowed_origins=d.allowed_origins,
                    send_queue=args.send_queue if args.send_queue is not None else d.send_queue,
                    bootstrap=args.bootstrap or cfg.kafka.bootstrap_servers,
                    topics=SourceTopics.from_config(topics), group=args.group, interval=args.interval,
                    slow_timeout=args.slow_timeout, sndbuf=args.sndbuf, max_clients=args.max_clients,
                    metrics_port=(args.metrics_port if args.metrics_port is not None
                                  else cfg.metrics.dashboard_port),
                    flink_rest=flink_rest, job_name=args.job_name, job_interval=args.job_interval,
                    shift_threshold=d.shift_threshold, session_ttl_s=d.session_ttl_s,
                    review_threshold=cfg.fraud.review_threshold, decline_threshold=cfg.fraud.decline_threshold,
                    tls_cert=str(cfg.path(d.tls_cert)) if d.tls_cert else "",
                    tls_key=str(cfg.path(d.tls_key)) if d.tls_key else "")


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        settings = settings_from(args, load_config(args.config))
    except ConfigError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 2
    if settings.token == "change-me":
        log.warning("the dashboard token is the default 'change-me'; set STREAMSCORE_DASHBOARD__TOKEN")

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Dashboard(settings).run(stop)

    asyncio.run(_run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
