"""The real dashboard server (a subprocess on a free port): login, session cookie, and what it refuses (issue 24).

No broker is needed to check the handshake: the server points at a closed port and simply has no data.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import dashboard_util as testkit
from infra.services import free_port
from pipelines.config import ROOT

TOKEN = "s3cret-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with testkit.run_server(f"127.0.0.1:{free_port()}", tmp_path_factory.mktemp("dash-auth"), token=TOKEN) as s:
        yield s


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


def _get(server, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """One GET, redirects not followed: (status, headers, body)."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers or {})
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _status(server, url: str, **kw) -> int:
    async def go():
        try:
            async with connect(url, open_timeout=10, **kw):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(go())


def _own(server) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_no_session_and_no_token_is_refused_with_401(server):
    assert _status(server, server.ws_url) == 401
    assert _status(server, server.ws_url, origin=_own(server)) == 401
    # The old ?token= URL is gone: a token in the query string logs nobody in.
    assert _status(server, f"{server.ws_url}?token={TOKEN}", origin=_own(server)) == 401
    assert _status(server, server.ws_url, additional_headers={"Cookie": "streamscore_session=forged"}) == 401


def test_wrong_token_is_refused_with_401(server):
    assert _status(server, server.ws_url, additional_headers={"Authorization": "Bearer nope"}) == 401
    status, headers, _ = _get(server, "/login", {"Authorization": "Bearer nope"})
    assert status == 401 and "Set-Cookie" not in headers


def test_login_sets_a_strict_http_only_session_cookie(server):
    status, headers, _ = _get(server, "/")
    assert status == 303 and headers["Location"] == "/login"  # no session: to the login page
    status, headers, body = _get(server, "/login")
    assert status == 200 and b'type="password"' in body and b'method="post"' in body
    status, headers, _ = _get(server, "/login", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and headers["Cache-Control"] == "no-store"
    cookie = headers["Set-Cookie"]
    attrs = {a.strip().split("=")[0] for a in cookie.split(";")[1:]}
    assert {"HttpOnly", "SameSite", "Path", "Max-Age"} <= attrs and "Secure" not in attrs  # no TLS here
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    pair = cookie.split(";", 1)[0]
    assert pair.startswith("streamscore_session=") and TOKEN not in pair and len(pair.split("=", 1)[1]) >= 40
    assert _get(server, "/", {"Cookie": pair})[0] == 200
    assert _get(server, "/session", {"Cookie": pair})[0] == 200
    assert _get(server, "/session")[0] == 401
    # A second login is a different session.
    assert server.session_cookie() != pair


def test_cross_site_login_is_refused(server):
    status, headers, _ = _get(server, "/login", {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"})
    assert status == 403 and "Set-Cookie" not in headers
    status, _, _ = _get(server, "/login", {"Authorization": f"Bearer {TOKEN}", "Sec-Fetch-Site": "cross-site"})
    assert status == 403


def test_websocket_needs_the_cookie_and_a_same_origin(server):
    cookie = {"Cookie": server.session_cookie()}
    assert _status(server, server.ws_url, additional_headers=cookie, origin=_own(server)) == 101
    assert _status(server, server.ws_url, additional_headers=cookie, origin=f"http://localhost:{server.port}") == 101
    assert _status(server, server.ws_url, additional_headers=cookie, origin="http://evil.example") == 403
    # Same site, other port: another origin, refused although the browser would send the cookie.
    assert _status(server, server.ws_url, additional_headers=cookie, origin=f"http://127.0.0.1:{free_port()}") == 403
    assert _status(server, server.ws_url, additional_headers=cookie) == 403  # a browser always sends an Origin
    # Scripts: the token as an Authorization header, with no Origin or a same one.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert _status(server, server.ws_url, additional_headers=bearer) == 101
    assert _status(server, server.ws_url, additional_headers=bearer, origin="http://evil.example") == 403


def test_logout_ends_the_session_and_closes_its_websocket(server):
    pair = server.session_cookie()

    async def go():
        async with connect(server.ws_url, open_timeout=10, origin=_own(server),
                           additional_headers={"Cookie": pair}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "snapshot"
            status, headers, _ = await asyncio.to_thread(_get, server, "/logout", {"Cookie": pair})
            assert status == 303 and headers["Location"] == "/login" and "Max-Age=0" in headers["Set-Cookie"]
            with pytest.raises(ConnectionClosed) as exc:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert exc.value.rcvd is not None and exc.value.rcvd.code == 1008

    asyncio.run(go())
    assert _get(server, "/session", {"Cookie": pair})[0] == 401
    assert _status(server, server.ws_url, additional_headers={"Cookie": pair}, origin=_own(server)) == 401


def test_refusals_are_counted(server):
    _status(server, server.ws_url)
    m = server.metrics()
    assert m['streamscore_dashboard_rejected_total{reason="no-session"}'] >= 1
    assert m['streamscore_dashboard_rejected_total{reason="bad-session"}'] >= 1
    assert m['streamscore_dashboard_rejected_total{reason="bad-token"}'] >= 1
    assert m['streamscore_dashboard_rejected_total{reason="origin"}'] >= 1
    assert m['streamscore_dashboard_disconnects_total{reason="logged-out"}'] >= 1


def test_cookie_and_origin_accepted_and_snapshots_received(server):
    async def go():
        for kw in ({"origin": _own(server), "additional_headers": {"Cookie": server.session_cookie()}},
                   {"additional_headers": {"Authorization": f"Bearer {TOKEN}"}}):
            async with connect(server.ws_url, open_timeout=10, **kw) as ws:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert msg["type"] == "snapshot"
                assert {"throughput", "histogram", "decisions", "sentiment", "counts", "latency",
                        "lag"} <= set(msg["panels"])
                nxt = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert nxt["type"] == "snapshot" and nxt["seq"] > msg["seq"]

    asyncio.run(go())


def test_bad_client_messages_get_error_frames_not_a_disconnect(server):
    async def go():
        async with connect(server.ws_url, open_timeout=10,
                           additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
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
    status, _, body = _get(server, "/", {"Cookie": server.session_cookie()})
    assert status == 200 and b'id="connection-status"' in body
    for script in ("/app.js", "/login.js"):
        assert "javascript" in urllib.request.urlopen(f"http://127.0.0.1:{server.port}{script}", timeout=5) \
            .headers["Content-Type"]
    assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).read() == b"ok\n"
    for path in ("/nope.js", "/../pipelines/config.py", "/%2e%2e/pipelines/config.py"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5)
        assert exc.value.code == 404


def test_html_has_a_strict_csp_limited_to_its_own_origin(server):
    cookie = {"Cookie": server.session_cookie()}
    for path in ("/", "/login"):
        status, headers, _ = _get(server, path, cookie if path == "/" else None)
        assert status == 200
        csp = headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
        assert directives["default-src"] == "'self'" and directives["form-action"] == "'self'"
        assert directives["connect-src"] == f"'self' ws://127.0.0.1:{server.port} wss://127.0.0.1:{server.port}"
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    # A Host header naming another server does not widen the policy: it falls back to the bind address.
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/", headers={"Host": "evil.example:80", **cookie})
    csp = urllib.request.urlopen(req, timeout=5).headers["Content-Security-Policy"]
    assert "evil.example" not in csp and f"ws://127.0.0.1:{server.port}" in csp


def test_the_token_is_never_logged(server):
    server.session_cookie()
    _get(server, "/login", {"Authorization": "Bearer wrong-token-value"})
    text = server.log.read_text()
    assert TOKEN not in text and "wrong-token-value" not in text
    assert "/login" in text  # it says where to log in


def test_repeated_wrong_tokens_lock_the_address_out(tmp_path):
    with testkit.run_server(f"127.0.0.1:{free_port()}", tmp_path, token=TOKEN) as s:
        for _ in range(5):  # dashboard/auth.py FREE_FAILURES
            assert _get(s, "/login", {"Authorization": "Bearer guess"})[0] == 401
        status, headers, _ = _get(s, "/login", {"Authorization": "Bearer guess"})
        assert status == 429 and int(headers["Retry-After"]) >= 1
        # Locked out means the right token too, and on the WebSocket's Authorization header as well.
        assert _get(s, "/login", {"Authorization": f"Bearer {TOKEN}"})[0] == 429
        assert _status(s, s.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) == 429
        assert s.metrics()['streamscore_dashboard_rejected_total{reason="locked-out"}'] >= 3


def _start_exposed(*args: str, token: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_DASHBOARD__")}
    if token is not None:
        env["STREAMSCORE_DASHBOARD__TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "dashboard.server", "--host", "0.0.0.0", "--port", str(free_port()),
                           "--bootstrap", f"127.0.0.1:{free_port()}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_refuses_to_start_on_0000_with_the_default_token():
    proc = _start_exposed(token=None)  # the config's default, change-me
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to serve on 0.0.0.0 with the default token" in proc.stderr
    assert "STREAMSCORE_DASHBOARD__TOKEN" in proc.stderr


@pytest.mark.parametrize("token", ["password", "changeme", "short-token-1"])
def test_refuses_to_start_on_0000_with_a_weak_token(token):
    proc = _start_exposed(token=token)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to serve on 0.0.0.0" in proc.stderr and token not in proc.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_serves_https_and_wss_with_a_secure_cookie(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    with testkit.run_server(f"127.0.0.1:{free_port()}", tmp_path / "logs", token=TOKEN, tls=(cert, key)) as s:
        assert s.url.startswith("https://") and s.ws_url.startswith("wss://")
        req = urllib.request.Request(f"{s.url}login", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5, context=s.tls) as resp:
            cookie = resp.headers["Set-Cookie"]
            csp = resp.headers.get("Content-Security-Policy")
        assert "; Secure" in cookie and "HttpOnly" in cookie and csp is None  # an answer, not a page
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # no plain http on that port
            urllib.request.urlopen(f"http://127.0.0.1:{s.port}/healthz", timeout=5).read()

        async def go():
            async with connect(s.ws_url, ssl=s.tls, open_timeout=10, origin=f"https://127.0.0.1:{s.port}",
                               additional_headers={"Cookie": cookie.split(";", 1)[0]}) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 10))["type"]

        assert asyncio.run(go()) == "snapshot"
        with pytest.raises(urllib.error.URLError) as exc:  # a client that does not trust the certificate
            urllib.request.urlopen(f"{s.url}healthz", timeout=5, context=ssl.create_default_context())
        assert isinstance(exc.value.reason, ssl.SSLError)
