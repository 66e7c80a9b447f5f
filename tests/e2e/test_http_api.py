"""The HTTP API (`listener PORT` + `protocol http_api`, docs/config.md):
Mosquitto 2.1's endpoints, Prometheus metrics checked by Debian's
`promtool`, the list of clients and the kick (with the will published),
HTTP Basic against a real `mosquitto_passwd` file with the ACL per path,
and abuse: huge heads, slow heads, 10,000 idle HTTP connections while
MQTT clients carry on. Python's http.client, curl and raw sockets against
both binaries, loopback only."""

from __future__ import annotations

import base64
import http.client
import json
import resource
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from support import IPV4_LOOPBACK_HEX, LOOPBACK, Paho, drain, free_port, is_listening, listening_addresses, wait_until
from test_auth import passwd
from test_tls import certs  # noqa: F401 (a fixture)

PROMTOOL = shutil.which("promtool")
CURL = shutil.which("curl")


def api_broker(make_broker, *lines: str, address: str = ""):
    port = free_port()
    broker = make_broker(extra=[*lines, f"listener {port} {address}".strip(), "protocol http_api"])
    wait_until(lambda: is_listening(port), what=f"http_api listener on {port}")
    broker.api_port = port
    return broker


def request(port: int, method: str, path: str, auth: str | None = None) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of one request."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(port: int, path: str, auth: str | None = None):
    status, headers, body = request(port, "GET", path, auth)
    assert status == 200, (status, body)
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def test_endpoints_bound_to_loopback(make_broker):
    broker = api_broker(make_broker, "sys_interval 1")
    port = broker.api_port
    # No address given: the loopback addresses only.
    assert listening_addresses(port) <= {IPV4_LOOPBACK_HEX, "00000000000000000000000001000000"}, \
        listening_addresses(port)
    status, headers, body = request(port, "GET", "/api/v1/version")
    assert status == 200 and body.decode().startswith("culex version "), body
    assert headers["access-control-allow-origin"] == "*" and headers["connection"] == "close"
    listeners = get_json(port, "/api/v1/listeners")["listeners"]
    assert {"port": broker.port, "protocol": "mqtt", "tls": False, "mtls": False,
            "allow_anonymous": True} in listeners
    assert any(entry.get("port") == port and entry["protocol"] == "httpapi" for entry in listeners)
    with Paho(broker.port, "reader") as reader:
        reader.connect()
        systree = get_json(port, "/api/v1/systree")
        assert systree["$SYS/broker/clients/connected"] == 1, systree
        assert all(isinstance(value, int) for value in systree.values()), systree
    status, headers, page = request(port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<html" in page.lower()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    # Only what the API answers.
    assert request(port, "POST", "/metrics")[0] == 405
    assert request(port, "GET", "/api/v1/nothing")[0] == 404
    assert request(port, "GET", "/api/v1/clients?page=0")[0] == 400


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is installed by scripts/install-deps.sh")
@pytest.mark.parametrize("shards", [1, 2])
def test_metrics_pass_promtool_and_count(make_broker, shards):
    """With two shards, pub lives on shard 0 (which answers HTTP) and sub
    on shard 1: the figures count both as they stand, not as the last
    `$SYS` report had them."""
    broker = api_broker(make_broker, f"shards {shards}")
    with Paho(broker.port, "sub") as sub, Paho(broker.port, "pub") as pub:
        sub.connect()
        sub.subscribe("m/#", qos=1)
        pub.connect()
        for n in range(5):
            pub.publish(f"m/{n}", b"x", qos=1)
        assert len(drain(sub)) == 5
        status, headers, body = request(broker.api_port, "GET", "/metrics")
    assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    samples = dict(line.rsplit(" ", 1) for line in body.decode().splitlines() if not line.startswith("#"))
    assert float(samples["culex_connections"]) == 2
    assert float(samples["culex_subscriptions"]) == 1
    assert float(samples['culex_publish_received_total{qos="1"}']) == 5
    assert float(samples['culex_publish_sent_total{qos="1"}']) == 5
    assert float(samples['culex_publish_received_bytes_total{qos="1"}']) == 5
    assert float(samples["culex_uptime_seconds"]) >= 0
    version = request(broker.api_port, "GET", "/api/v1/version")[2].decode().removeprefix("culex version ")
    assert samples[f'culex_build_info{{version="{version}"}}'] == "1"


@pytest.mark.parametrize("shards", [1, 2])
def test_clients_listed_searched_and_kicked(make_broker, shards):
    """With two shards, dev-a lives on shard 0 (which answers HTTP) and
    the others on shard 1: the list gathers both, the kick goes there."""
    broker = api_broker(make_broker, f"shards {shards}")
    port = broker.api_port
    with Paho(broker.port, "watcher") as watcher, \
            Paho(broker.port, "dev-a", keepalive=30) as a, \
            Paho(broker.port, "dev-b", will=("gone/dev-b", b"offline", 1, False)) as b, \
            Paho(broker.port, "other") as other:
        for client in (watcher, a, b, other):
            client.connect()
        watcher.subscribe("gone/#", qos=1)
        found = get_json(port, "/api/v1/clients?prefix=dev-")
        assert [c["id"] for c in found["data"]] == ["dev-a", "dev-b"]
        assert found["meta"] == {"count": 2, "limit": 100, "page": 1, "hasnext": False}
        first = found["data"][0]
        assert first["keepalive"] == 30 and first["protocol"] == "mqttv311" and first["listener"] == broker.port
        assert first["address"].startswith("127.0.0.1:") and abs(first["connected_at"] - time.time()) < 30
        paged = get_json(port, "/api/v1/clients?limit=1&page=2")
        assert [c["id"] for c in paged["data"]] == ["dev-b"] and paged["meta"]["hasnext"] is True
        status, _, _ = request(port, "DELETE", "/api/v1/clients/dev-b")
        assert status == 204
        will = watcher.expect(timeout=5)
        assert (will.topic, will.payload) == ("gone/dev-b", b"offline")
        wait_until(lambda: b.disconnected.is_set(), what="dev-b disconnected")
        assert [c["id"] for c in get_json(port, "/api/v1/clients?prefix=dev-")["data"]] == ["dev-a"]
        assert request(port, "DELETE", "/api/v1/clients/dev-b")[0] == 404
        assert a.client.is_connected() and other.client.is_connected()
    broker.wait_log(r"Client dev-b disconnected by the HTTP API\.")


ACL = """user admin
topic readwrite /#

user viewer
topic read /metrics
"""


def test_credentials_from_the_password_file_and_paths_from_the_acl(make_broker, tmp_path):
    pw = tmp_path / "passwd"
    passwd(pw, "admin", "admin-pw", create=True)
    passwd(pw, "viewer", "viewer-pw")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    # Files read at start-up from pytest's directories: the broker stays root.
    broker = api_broker(make_broker, f"password_file {pw}", f"acl_file {acl}", "user root")
    port = broker.api_port
    status, headers, body = request(port, "GET", "/api/v1/clients")
    assert status == 401 and headers["www-authenticate"].startswith("Basic realm=")
    assert request(port, "GET", "/metrics", "admin:wrong")[0] == 401
    assert request(port, "GET", "/metrics", "nobody:admin-pw")[0] == 401
    assert get_json(port, "/api/v1/clients", "admin:admin-pw")["meta"]["count"] == 0
    assert request(port, "GET", "/metrics", "viewer:viewer-pw")[0] == 200
    assert request(port, "GET", "/api/v1/clients", "viewer:viewer-pw")[0] == 403
    assert request(port, "DELETE", "/api/v1/clients/x", "viewer:viewer-pw")[0] == 403
    assert request(port, "DELETE", "/api/v1/clients/x", "admin:admin-pw")[0] == 404
    if CURL:
        out = subprocess.run([CURL, "-s", "-u", "admin:admin-pw", f"http://{LOOPBACK}:{port}/api/v1/version"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout.startswith("culex version "), out
    broker.wait_log(r"HTTP API request from 127\.0\.0\.1:\d+ refused: bad user name or password for admin\.")


def test_over_tls_with_python_ssl_and_curl(make_broker, certs):  # noqa: F811 (the fixture)
    port = free_port()
    make_broker(extra=[f"listener {port} {LOOPBACK}", "protocol http_api",
                       f"certfile {certs / 'server.crt'}", f"keyfile {certs / 'server.key'}"])
    wait_until(lambda: is_listening(port), what=f"https listener on {port}")
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=10, context=context)
    try:
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.request("GET", "/api/v1/listeners")
        response = conn.getresponse()
        listeners = json.loads(response.read())["listeners"]
    finally:
        conn.close()
    assert {"port": port, "protocol": "httpapi", "tls": True, "mtls": False, "allow_anonymous": True} in listeners
    if CURL:
        out = subprocess.run([CURL, "-s", "--cacert", str(certs / "ca.crt"), f"https://127.0.0.1:{port}/metrics"],
                             capture_output=True, text=True, timeout=10)
        assert "culex_uptime_seconds" in out.stdout, out
    # Plain HTTP on the TLS port gets no answer but the end of the connection.
    assert not raw(port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/")


def raw(port: int, data: bytes, timeout: float = 15.0) -> bytes:
    """Sends `data`, returns everything until the broker closes."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_huge_and_slow_heads_and_ten_thousand_idle_connections(make_broker):
    broker = api_broker(make_broker)
    port = broker.api_port
    huge = raw(port, b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n")
    assert huge.startswith(b"HTTP/1.1 431 "), huge[:80]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 12_000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 12_000), hard))
    idle: list[socket.socket] = []
    deadline = time.monotonic() + 60
    try:
        with Paho(broker.port, "sub") as sub, Paho(broker.port, "pub") as pub:
            sub.connect()
            sub.subscribe("t", qos=1)
            pub.connect()
            opened_at = time.monotonic()
            for n in range(10_000):
                assert time.monotonic() < deadline, f"only {n} idle connections opened in time"
                s = socket.create_connection((LOOPBACK, port), timeout=10)
                # Half a head each, never finished.
                if n % 2:
                    s.sendall(b"GET /api/v1/sys")
                idle.append(s)
            # MQTT clients carry on meanwhile, and promptly.
            started = time.monotonic()
            for n in range(200):
                pub.publish("t", str(n).encode(), qos=1)
            assert [int(m.payload) for m in drain(sub)] == list(range(200))
            assert time.monotonic() - started < 5
            # So does the API.
            assert request(port, "GET", "/api/v1/version")[0] == 200
            # Every idle connection is answered 408 and closed once its
            # 10 s are over.
            answered = 0
            for s in idle:
                s.settimeout(max(1.0, opened_at + 30 - time.monotonic()))
                data = s.recv(4096)
                assert data.startswith(b"HTTP/1.1 408 "), data[:80]
                answered += 1
            assert answered == 10_000
            assert time.monotonic() - opened_at < 45
            pub.publish("t", b"after", qos=1)
            assert sub.expect().payload == b"after"
    finally:
        for s in idle:
            s.close()
