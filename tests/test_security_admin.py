"""Admin and control security: the token, loopback-only binding, untrusted forwarding
headers, secrets kept out of every output, and TLS 1.2 as the floor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.admin import AdminApi, AdminSecurityError
from engine.balancer import LoadBalancer
from engine.config import Config, ConfigError
from engine.gateway import Gateway
from engine.proxy import HttpProxy, ProxySettings
from engine.proxy.tls import self_signed_pair, server_context
from engine.server import Server
from fault_support import (
    CLIENT_TIMEOUT,
    REPO,
    Recorder,
    raw_request,
    record_figures,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

TOKEN = "tok-" + uuid.uuid4().hex  # 36 characters
MONGO_PASSWORD = "mpw" + uuid.uuid4().hex[:20]
AWS_KEY_ID = "AKIA" + uuid.uuid4().hex[:16].upper()
AWS_SECRET = "aws" + uuid.uuid4().hex + "Zz"
SECRETS = (TOKEN, MONGO_PASSWORD, AWS_KEY_ID, AWS_SECRET)


def leaked(text: str) -> list[str]:
    return [name for name, s in zip(("admin token", "mongodb password", "aws key id", "aws secret"), SECRETS) if s in text]


def secret_config(recorder_port: int, access_log: Path, *, admin_host: str = "127.0.0.1") -> str:
    return f"""
[[listeners]]
name = "web"
port = 0

[admin]
host = "{admin_host}"
port = 0
token = "{TOKEN}"

[store]
mongodb_uri = "mongodb://lbtui:{MONGO_PASSWORD}@127.0.0.1:1/lbtui?serverSelectionTimeoutMS=200"

[aws]
access_key_id = "{AWS_KEY_ID}"
secret_access_key = "{AWS_SECRET}"
endpoint_url = "http://127.0.0.1:1"

[health]
interval = 0.2
timeout = 0.3

[access_log]
path = "{access_log}"

[[servers]]
name = "rec"
host = "127.0.0.1"
port = {recorder_port}
"""


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    r = await Recorder().start()
    yield r
    await r.stop()


@pytest.fixture
async def secret_gateway(tmp_path: Path, recorder: Recorder) -> AsyncIterator[Gateway]:
    path = tmp_path / "lbtui.toml"
    path.write_text(secret_config(recorder.port, tmp_path / "access.log"))
    gw = Gateway(Config.load(path), stop_grace=2)
    await gw.start()
    yield gw
    await gw.stop()


# -- the admin token ---------------------------------------------------------------------------
PROTECTED = [
    ("GET", "/api/status", None),
    ("GET", "/api/servers", None),
    ("GET", "/api/servers/rec", None),
    ("GET", "/api/stats", None),
    ("GET", "/api/ring", None),
    ("GET", "/api/route?key=a", None),
    ("GET", "/api/events", None),
    ("GET", "/metrics", None),
    ("POST", "/api/servers", {"name": "evil", "host": "127.0.0.1", "port": 9}),
    ("DELETE", "/api/servers/rec", None),
    ("POST", "/api/servers/rec/maint", None),
    ("PUT", "/api/servers/rec/weight", {"weight": 0}),
    ("PUT", "/api/algorithm", {"algorithm": "random"}),
    ("POST", "/api/reload", None),
    ("POST", "/api/shutdown", None),
]
WRONG = [
    {},
    {"Authorization": "Bearer wrong-token-wrong-token"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"X-Api-Key": TOKEN},
]


async def test_admin_api_refuses_every_call_without_the_token(secret_gateway: Gateway) -> None:
    gw = secret_gateway
    assert gw.admin is not None
    base = gw.admin.url
    refused = 0
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        for method, path, body in PROTECTED:
            for headers in WRONG:
                async with session.request(method, base + path, json=body, headers=headers) as response:
                    assert response.status == 401, (method, path, headers)
                    data = await response.json()
                    assert data == {"error": "missing or wrong bearer token"}
                    refused += 1
            async with session.request(method, base + path + f"?token={TOKEN}", json=body) as response:
                assert response.status == 401  # a token in the query string is not accepted
        # Nothing changed, nothing stopped.
        assert gw.lb.require("rec").admin_state.value == "ready" and gw.lb.get_server("evil") is None
        assert gw.lb.algorithm == "round_robin" and not gw.stop_requested
        async with session.get(f"{base}/api/status", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
    record_figures("admin token", calls_refused=refused, endpoints=len(PROTECTED))


async def test_admin_api_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    lb = LoadBalancer([])
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        with pytest.raises(AdminSecurityError):
            await AdminApi(lb, host=host, port=0).start()
        with pytest.raises(ConfigError) as error:
            Config.from_dict({"admin": {"host": host}})
        assert error.value.path == "admin.token"
    with pytest.raises(ConfigError):
        Config.from_dict({"admin": {"host": "0.0.0.0", "token": "short"}})  # under 16 characters
    # The command line says so in one line, without a traceback, and exits non-zero.
    path = tmp_path / "exposed.toml"
    path.write_text('[admin]\nhost = "0.0.0.0"\nport = 0\n[[listeners]]\nport = 0\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbtui", "run", "-c", str(path), "--headless",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode not in (0, None)
    text = (out + err).decode()
    assert "admin.token" in text and "Traceback" not in text
    # Loopback needs no token.
    admin = AdminApi(lb, host="127.0.0.1", port=0)
    await admin.start()
    await admin.stop()


# -- forwarding headers from clients ---------------------------------------------------------------
SPOOF = (
    b"GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https\r\n"
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n"
)


def _header(forwarded_headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in forwarded_headers if n.lower() == name]


async def test_forwarding_headers_from_clients_are_not_trusted_unless_configured(recorder: Recorder) -> None:
    for trust in (False, True):
        proxy = HttpProxy(
            LoadBalancer([Server("127.0.0.1", recorder.port, name="rec")]), ProxySettings(trust_forwarded=trust)
        )
        await proxy.start()
        try:
            reply = await raw_request(proxy.port, SPOOF)
        finally:
            await proxy.stop(1)
        assert reply.responses[0][0] == 200
        seen = recorder.seen[-1].headers
        if not trust:
            assert _header(seen, b"x-forwarded-for") == [b"127.0.0.1"]
            assert _header(seen, b"forwarded") == [b'for=127.0.0.1;proto=http;host="x"']
            assert _header(seen, b"x-forwarded-proto") == [b"http"]
            assert _header(seen, b"x-forwarded-host") == [b"x"]
        else:
            assert _header(seen, b"x-forwarded-for") == [b"6.6.6.6, 127.0.0.1"]
            assert _header(seen, b"forwarded")[0].startswith(b"for=6.6.6.6;proto=https, for=127.0.0.1")


async def test_spoofed_forwarded_for_does_not_dodge_the_client_rate_limit_or_hash(recorder: Recorder) -> None:
    other = await Recorder("other").start()
    lb = LoadBalancer(
        [Server("127.0.0.1", recorder.port, name="rec"), Server("127.0.0.1", other.port, name="other")],
        "consistent_hash",
        hash_key="client_ip",
        client_rate_limit=5,
    )
    proxy = HttpProxy(lb, ProxySettings())
    await proxy.start()
    statuses, servers = [], set()
    try:
        for i in range(8):
            request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.%d\r\nX-Real-IP: 10.0.0.%d\r\nConnection: close\r\n\r\n" % (i, i)
            reply = await raw_request(proxy.port, request)
            status, headers, _ = reply.responses[0]
            statuses.append(status)
            if status == 200:
                servers.add(headers[b"x-served-by"])
    finally:
        await proxy.stop(1)
        await other.stop()
    assert statuses == [200] * 5 + [429] * 3  # the limit follows the socket's address
    assert len(servers) == 1  # and so does the hash


# -- secrets never shown -----------------------------------------------------------------------------
async def test_secrets_never_in_logs_admin_answers_errors_or_access_log(
    tmp_path: Path, secret_gateway: Gateway, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = secret_gateway
    assert gw.admin is not None
    base, auth = gw.admin.url, {"Authorization": f"Bearer {TOKEN}"}
    seen_text: list[str] = []
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        for i in range(5):
            async with session.get(f"http://127.0.0.1:{gw.listeners[0].port}/p{i}") as response:
                assert response.status == 200
        for path in ("/api/status", "/api/servers", "/api/stats", "/api/ring", "/api/route?key=k", "/metrics"):
            async with session.get(base + path, headers=auth) as response:
                assert response.status == 200
                seen_text.append(await response.text())
        for method, path in (("GET", "/api/servers/nope"), ("PUT", "/api/algorithm"), ("POST", "/api/servers")):
            async with session.request(method, base + path, headers=auth, data=b"{bad json") as response:
                assert 400 <= response.status < 500
                seen_text.append(await response.text())
        async with session.get(base + "/api/events", headers=auth) as response:
            gw.lb.set_weight("rec", 3, source="test")
            seen_text.append((await asyncio.wait_for(response.content.readuntil(b"weight"), 5)).decode())
        # A reload that fails on a secret-bearing field must not echo the secret.
        config_path = gw.config.source
        assert config_path is not None
        good = config_path.read_text()
        for bad in (
            good.replace(f'token = "{TOKEN}"', f"token = [\"{TOKEN}\"]"),
            good.replace("mongodb://lbtui:", f"mongo://lbtui:"),
            good.replace(f'secret_access_key = "{AWS_SECRET}"', f"secret_access_key = {{ x = \"{AWS_SECRET}\" }}"),
        ):
            config_path.write_text(bad)
            async with session.post(base + "/api/reload", headers=auth) as response:
                assert response.status == 422
                seen_text.append(await response.text())
        config_path.write_text(good)
    for bad_uri in (f"mongo://u:{MONGO_PASSWORD}@h/db", f"{MONGO_PASSWORD}"):
        with pytest.raises(ConfigError) as error:
            gw.config.with_overrides(mongodb_uri=bad_uri)
        seen_text.append(str(error.value))
    seen_text += [repr(gw.config), str(gw.config), json.dumps(gw.config.redacted()), json.dumps(gw.status(), default=str)]
    await gw.stop()
    access_log = (tmp_path / "access.log").read_text()
    assert access_log.count("\n") >= 5
    everything = "\n".join(seen_text) + caplog.text + access_log
    assert leaked(everything) == []
    record_figures("secrets", outputs_checked=len(seen_text) + 2, log_records=len(caplog.records))


async def test_secrets_never_on_the_dashboard(secret_gateway: Gateway) -> None:
    from lbtui.app import LbtuiApp
    from lbtui.control.inprocess import InProcessControl

    control = InProcessControl.for_gateway(secret_gateway)
    servers, totals = await control.snapshot()
    app = LbtuiApp(control)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        screen = app.export_screenshot()
        log = "\n".join(strip.text for strip in app.log_pane.lines)
    assert leaked(screen + log + repr(servers) + repr(totals)) == []
    assert "rec" in screen  # the screen did render the server


async def test_secrets_never_in_lbtui_run_output(tmp_path: Path, recorder: Recorder) -> None:
    """The whole command, headless: whatever it prints or logs while it runs and stops."""
    path = tmp_path / "lbtui.toml"
    path.write_text(secret_config(recorder.port, tmp_path / "access.log"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbtui", "run", "-c", str(path), "--headless",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not any("admin API on" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                if not line:
                    break
                lines.append(line)
        admin = next(line for line in lines if "admin API on" in line).split()[4]
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            async with session.get(f"{admin}/api/status", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                status_text = await r.text()
        os.kill(proc.pid, signal.SIGHUP)  # a reload logs what it did
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    text = "".join(lines) + out.decode() + err.decode() + status_text
    assert "Traceback" not in text
    assert leaked(text) == []


# -- TLS floor ---------------------------------------------------------------------------------------
def _legacy_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = version
    context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _legacy_server_accepts(version: ssl.TLSVersion, cert: str, key: str) -> bool:
    """Control: can this machine's OpenSSL speak ``version`` at all (server allowing it)?"""
    import socket

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: list[bool] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                result.append(True)
        except (ssl.SSLError, OSError):
            result.append(False)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with _legacy_client(version).wrap_socket(raw) as tls:
                ok = tls.version() is not None
    except (ssl.SSLError, OSError):
        ok = False
    thread.join(3)
    listener.close()
    return ok


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_listener_offers_only_tls12_and_newer(tmp_path: Path, recorder: Recorder) -> None:
    cert, key = self_signed_pair(str(tmp_path))
    proxy = HttpProxy(LoadBalancer([Server("127.0.0.1", recorder.port, name="rec")]), ProxySettings())
    await proxy.start(ssl_context=server_context(cert, key))
    outcomes: dict[str, str] = {}
    try:
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            legacy = version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
            if legacy and not await asyncio.to_thread(_legacy_server_accepts, version, cert, key):
                outcomes[version.name] = "not testable: the local OpenSSL refuses it on both sides"
                continue
            if legacy:
                context = _legacy_client(version)
            else:
                context = ssl.create_default_context(cafile=cert)
                context.minimum_version = context.maximum_version = version
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", proxy.port, ssl=context, server_hostname="localhost"), 5
                )
            except (ssl.SSLError, ConnectionResetError) as exc:
                outcomes[version.name] = f"refused ({type(exc).__name__})"
                continue
            negotiated = writer.get_extra_info("ssl_object").version()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            outcomes[version.name] = f"accepted as {negotiated}: {answer[:12].decode()}"
    finally:
        await proxy.stop(1)
    record_figures("TLS versions", openssl=ssl.OPENSSL_VERSION, **outcomes)
    for name in ("TLSv1", "TLSv1_1"):
        assert outcomes[name].startswith(("refused", "not testable")), outcomes
    assert outcomes["TLSv1_2"].startswith("accepted as TLSv1.2: HTTP/1.1 200")
    assert outcomes["TLSv1_3"].startswith("accepted as TLSv1.3: HTTP/1.1 200")
    if all(outcomes[n].startswith("not testable") for n in ("TLSv1", "TLSv1_1")):
        pytest.skip("TLS 1.0/1.1 refusal not testable: " + ssl.OPENSSL_VERSION)
