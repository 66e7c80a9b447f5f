"""The WebSocket listener keys (docs/config.md, listeners): `http_dir`
answers plain HTTP requests with its files (index.html for a directory,
404, no way out of the directory: `..`, percent-encoding, symbolic links;
HEAD; Content-Type) while WebSocket MQTT clients keep working on the same
port; `websockets_origin` refuses an upgrade from another origin (403);
`websockets_headers_size` bounds the handshake's head (431); and
`websockets_log_level` is accepted without a warning. Python's
http.client and urllib against both binaries."""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support import LOOPBACK, free_port, is_listening, wait_until
from test_websockets import RawWs, WsPaho

INDEX = b"<!doctype html><title>culex</title><h1>MQTT over WebSocket</h1>\n"


@pytest.fixture
def site(tmp_path) -> Path:
    """`www/` (index.html, app.js, style.css, sub/a.txt, a link out of it
    and a link inside it) beside `secret.txt`."""
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "index.html").write_bytes(INDEX)
    (www / "app.js").write_text("console.log('mqtt');\n")
    (www / "style.css").write_text("h1 { color: teal; }\n")
    (www / "sub" / "a.txt").write_text("in sub\n")
    (www / "big.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "secret.txt").write_text("not for the web\n")
    (www / "out.txt").symlink_to(tmp_path / "secret.txt")
    (www / "in.txt").symlink_to(www / "sub" / "a.txt")
    return www


def web_broker(make_broker, *lines: str):
    port = free_port()
    # Files are served after start-up from pytest's directories, which
    # only root may enter: the broker keeps root (tests/e2e/test_process.py
    # checks the drop to `user mosquitto`).
    broker = make_broker(extra=["user root", f"listener {port} {LOOPBACK}", "protocol websockets", *lines])
    wait_until(lambda: is_listening(port), what=f"WebSocket listener on {port}")
    broker.ws_port = port
    return broker


def request(port: int, method: str, path: str) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of one request, path sent as is."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def test_http_dir_serves_files_beside_websocket_mqtt(make_broker, site, clients):
    broker = web_broker(make_broker, f"http_dir {site}")
    port = broker.ws_port
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/", timeout=5) as page:
        assert page.status == 200
        assert page.read() == INDEX
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    status, headers, body = request(port, "GET", "/app.js?v=3")
    assert (status, headers["content-type"], body) == (200, "text/javascript; charset=utf-8",
                                                       b"console.log('mqtt');\n")
    status, headers, body = request(port, "GET", "/style.css")
    assert (status, headers["content-type"]) == (200, "text/css; charset=utf-8")
    assert request(port, "GET", "/sub/a.txt")[2] == b"in sub\n"
    assert request(port, "GET", "/in.txt")[2] == b"in sub\n"
    assert request(port, "GET", "/%69ndex.html")[2] == INDEX
    big = (site / "big.bin").read_bytes()
    status, headers, body = request(port, "GET", "/big.bin")
    assert (status, headers["content-length"], body) == (200, str(len(big)), big)
    # A WebSocket MQTT client on the same port still works.
    sub = clients(WsPaho(port, "web-sub")).connect()
    pub = clients(WsPaho(port, "web-pub")).connect()
    assert sub.subscribe("web/#", qos=1) == [1]
    pub.publish("web/page", b"served", qos=1)
    msg = sub.expect()
    assert (msg.topic, msg.payload) == ("web/page", b"served")


def test_http_dir_keeps_requests_inside_the_directory(make_broker, site):
    port = web_broker(make_broker, f"http_dir {site}").ws_port
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/sub/..%2f..%2fsecret.txt", "/missing.html"):
        status, _, body = request(port, "GET", path)
        assert status == 404, path
        assert b"not for the web" not in body
    status, _, body = request(port, "GET", "/out.txt")
    assert status == 403 and b"not for the web" not in body
    assert request(port, "GET", "/sub/../index.html")[2] == INDEX
    status, headers, _ = request(port, "GET", "/sub")
    assert (status, headers["location"]) == (302, "/sub/")
    assert request(port, "GET", "/sub/")[0] == 404  # no index.html there


def test_http_dir_head_and_other_methods(make_broker, site):
    port = web_broker(make_broker, f"http_dir {site}").ws_port
    status, headers, body = request(port, "HEAD", "/index.html")
    assert (status, headers["content-length"], body) == (200, str(len(INDEX)), b"")
    status, headers, _ = request(port, "POST", "/index.html")
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    assert request(port, "DELETE", "/index.html")[0] == 405
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{LOOPBACK}:{port}/nothing", timeout=5)
    assert refused.value.code == 404


def test_without_http_dir_plain_requests_are_refused(make_broker):
    port = web_broker(make_broker).ws_port
    status, _, _ = request(port, "GET", "/index.html")
    assert status == 400


def test_http_dir_that_cannot_be_opened_stops_start_up(make_broker, tmp_path):
    port = free_port()
    missing = tmp_path / "no-such-dir"
    broker = make_broker(start=False, extra=[f"listener {port} {LOOPBACK}", "protocol websockets",
                                             f"http_dir {missing}"])
    with pytest.raises(AssertionError, match="exited with 1"):
        broker.start()
    assert f'Unable to open http dir "{missing}"' in broker.log()
    assert f":{len(broker.config.read_text().splitlines())}:" in broker.log()


def test_websockets_origin_refuses_other_origins(make_broker, clients):
    port = web_broker(make_broker, "websockets_origin https://app.example", "websockets_origin http://localhost:8080"
                      ).ws_port
    allowed = clients(RawWs(port, headers="Origin: https://app.example\r\n"))
    assert allowed.accepted
    for headers in ("Origin: https://evil.example\r\n", "Origin: https://app.example.evil\r\n", ""):
        refused = clients(RawWs(port, headers=headers))
        assert refused.status.startswith("HTTP/1.1 403"), (headers, refused.status)
        assert refused.closed()
    # A browser-like client from an allowed origin talks MQTT.
    paho = WsPaho(port, "from-app")
    paho.client.ws_set_options(headers={"Origin": "http://localhost:8080"})
    clients(paho).connect()
    assert paho.subscribe("o/t", qos=0) == [0]


def test_websockets_origin_is_per_listener(make_broker, clients):
    other = free_port()
    broker = web_broker(make_broker, "websockets_origin https://app.example",
                        f"listener {other} {LOOPBACK}", "protocol websockets")
    wait_until(lambda: is_listening(other))
    assert not clients(RawWs(broker.ws_port, headers="Origin: https://x.example\r\n")).accepted
    assert clients(RawWs(other, headers="Origin: https://x.example\r\n")).accepted


def test_websockets_headers_size_bounds_the_handshake(make_broker, clients):
    port = web_broker(make_broker, "websockets_headers_size 1024", "websockets_log_level 255").ws_port
    assert clients(RawWs(port, headers="X-Pad: " + "a" * 600 + "\r\n")).accepted
    big = clients(RawWs(port, headers="Cookie: " + "a" * 1000 + "\r\n"))
    assert big.status.startswith("HTTP/1.1 431"), big.status
    assert big.closed()


def test_default_headers_size_takes_large_cookies(make_broker, clients):
    broker = web_broker(make_broker, "websockets_log_level 0")
    assert clients(RawWs(broker.ws_port, headers="Cookie: " + "a" * 6000 + "\r\n")).accepted
    try:
        too_big = clients(RawWs(broker.ws_port, headers="Cookie: " + "a" * 9000 + "\r\n"))
        # The answer may be lost to a reset: the broker closes with part
        # of the request unread.
        assert not too_big.accepted and too_big.status in ("", "HTTP/1.1 431 Request Header Fields Too Large")
    except ConnectionResetError:
        pass
    assert "websockets_log_level" not in broker.log()
