"""The real dashboard server (a subprocess on a free port) refuses what it must at the WebSocket handshake.

No broker is needed to check the handshake: the server points at a closed port and simply has no data.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests import dashboard_util as testkit
from infra.services import free_port

TOKEN = "s3cret-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with testkit.run_server(f"127.0.0.1:{free_port()}", tmp_path_factory.mktemp("dash-auth"), token=TOKEN) as s:
        yield s


def _status(server, url: str, **kw) -> int:
    async def go():
        try:
            async with connect(url, open_timeout=10, **kw):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(go())


def test_missing_token_is_refused_with_401(server):
    assert _status(server, server.ws_url) == 401


def test_wrong_token_is_refused_with_401(server):
    assert _status(server, server.ws_url + "?token=nope") == 401
    assert _status(server, server.ws_url, additional_headers={"Authorization": "Bearer nope"}) == 401


def test_wrong_origin_is_refused_with_403(server):
    assert _status(server, f"{server.ws_url}?token={TOKEN}", origin="http://evil.example") == 403


def test_refusals_are_counted(server):
    _status(server, server.ws_url)
    m = server.metrics()
    assert m['streamscore_dashboard_rejected_total{reason="missing-token"}'] >= 1
    assert m['streamscore_dashboard_rejected_total{reason="bad-token"}'] >= 1
    assert m['streamscore_dashboard_rejected_total{reason="origin"}'] >= 1


def test_token_and_origin_accepted_and_snapshot_received(server):
    async def go():
        for kw in ({"uri": f"{server.ws_url}?token={TOKEN}", "origin": f"http://127.0.0.1:{server.port}"},
                   {"uri": server.ws_url, "additional_headers": {"Authorization": f"Bearer {TOKEN}"}}):
            async with connect(open_timeout=10, **kw) as ws:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert msg["type"] == "snapshot"
                assert {"throughput", "histogram", "decisions", "sentiment", "counts", "latency",
                        "lag"} <= set(msg["panels"])
                nxt = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert nxt["type"] == "snapshot" and nxt["seq"] > msg["seq"]

    asyncio.run(go())


def test_bad_client_messages_get_error_frames_not_a_disconnect(server):
    async def go():
        async with connect(f"{server.ws_url}?token={TOKEN}", open_timeout=10) as ws:
            async def reply(payload):
                await ws.send(payload)
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if msg["type"] != "snapshot":
                        return msg

            for bad in ("{not json", json.dumps({"type": "launch"}), json.dumps([1]), b"\x01\x02",
                        json.dumps({"type": "subscribe", "panels": ["nope"]})):
                err = await reply(bad)
                assert err["type"] == "error" and err["error"], err
            assert (await reply(json.dumps({"type": "ping", "id": "abc"}))) ["type"] == "pong"
            sub = await reply(json.dumps({"type": "subscribe", "panels": ["counts"]}))
            assert sub == {"type": "subscribed", "panels": ["counts"]}
            while True:  # updates now carry only the subscribed panel
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg["type"] == "snapshot" and set(msg["panels"]) == {"counts"}:
                    break

    asyncio.run(go())
    assert server.metric_sum("streamscore_dashboard_bad_messages_total") >= 5


def test_static_page_and_health(server):
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert page.status == 200 and b'id="connection-status"' in page.read()
    assert "javascript" in urllib.request.urlopen(f"http://127.0.0.1:{server.port}/app.js", timeout=5) \
        .headers["Content-Type"]
    assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).read() == b"ok\n"
    for path in ("/nope.js", "/../pipelines/config.py", "/%2e%2e/pipelines/config.py"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5)
        assert exc.value.code == 404


def test_html_has_a_strict_csp_limited_to_its_own_origin(server):
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
    csp = page.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["default-src"] == "'self'"
    assert directives["connect-src"] == f"'self' ws://127.0.0.1:{server.port} wss://127.0.0.1:{server.port}"
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["Referrer-Policy"] == "no-referrer"
    # A Host header naming another server does not widen the policy: it falls back to the bind address.
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/", headers={"Host": "evil.example:80"})
    csp = urllib.request.urlopen(req, timeout=5).headers["Content-Security-Policy"]
    assert "evil.example" not in csp and f"ws://127.0.0.1:{server.port}" in csp
