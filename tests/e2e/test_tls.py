"""TLS listeners (Mosquitto's certfile, keyfile, cafile, require_certificate,
use_identity_as_username, tls_version): certificates made here with the
`openssl` CLI, real clients (mosquitto_pub / mosquitto_sub with --cafile,
--cert, --key, --tls-version; paho-mqtt with tls_set over TCP and
WebSocket), both binaries."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from support import (LOOPBACK, MosquittoSub, Paho, connect_packet, free_port, is_listening, mosquitto_pub,
                     wait_until)

KEY = "mqtt"


def openssl(*args: str, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)


def make_leaf(d: Path, name: str, ca: str, subject: str, ext: str):
    (d / f"{name}.ext").write_text(ext + "\nbasicConstraints=CA:FALSE\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost, client
    certificates `dev1` and `watcher` from that CA, and `rogue` (CN dev1)
    from another CA."""
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca", "/CN=localhost",
              "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    make_leaf(d, "dev1", "ca", "/C=DE/O=Culex Test/CN=dev1", "extendedKeyUsage=clientAuth")
    make_leaf(d, "watcher", "ca", "/CN=watcher", "extendedKeyUsage=clientAuth")
    make_leaf(d, "rogue", "other-ca", "/CN=dev1", "extendedKeyUsage=clientAuth")
    make_leaf(d, "revoked", "ca", "/CN=revoked", "extendedKeyUsage=clientAuth")
    (d / "index.txt").write_text("")
    (d / "crlnumber").write_text("01\n")
    (d / "ca.cnf").write_text("[ca]\ndefault_ca = own\n[own]\ndatabase = index.txt\ncrlnumber = crlnumber\n"
                              "default_md = sha256\ndefault_crl_days = 2\n")
    openssl("ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-revoke", "revoked.crt", cwd=d)
    openssl("ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-gencrl", "-out", "crl.pem", cwd=d)
    return d


@pytest.fixture
def tls_broker(make_broker, certs):
    """Factory: a broker with its plain listener and a TLS one (`.tls_port`)
    with the given extra listener lines."""

    def make(lines=(), extra=(), websockets=False, **kw):
        port = free_port()
        listener = [f"listener {port} {LOOPBACK}", f"certfile {certs / 'server.crt'}",
                    f"keyfile {certs / 'server.key'}"]
        if websockets:
            listener.append("protocol websockets")
        broker = make_broker(extra=list(extra) + listener + list(lines), **kw)
        wait_until(lambda: is_listening(port), what=f"TLS listener on {port}")
        broker.tls_port = port
        return broker

    return make


def tls_args(certs: Path, ca: str = "ca", client: str | None = None) -> list[str]:
    args = ["--cafile", str(certs / f"{ca}.crt")]
    if client:
        args += ["--cert", str(certs / f"{client}.crt"), "--key", str(certs / f"{client}.key")]
    return args


def pub_ok(port: int, certs: Path, topic: str = "t/tls", message: str = "hello", **kw) -> subprocess.CompletedProcess:
    extra = tls_args(certs, **kw)
    return mosquitto_pub(port, topic, message, qos=1, extra=extra)


class TlsPaho(Paho):
    """The suite's paho client over TLS (and WebSocket if asked)."""

    def __init__(self, port: int, client_id: str, certs: Path, websockets: bool = False,
                 client: str | None = None, username: str | None = None, password: str | None = None):
        super().__init__(port, client_id, username=username, password=password,
                         transport="websockets" if websockets else "tcp")
        cert = (str(certs / f"{client}.crt"), str(certs / f"{client}.key")) if client else (None, None)
        self.client.tls_set(ca_certs=str(certs / "ca.crt"), certfile=cert[0], keyfile=cert[1],
                            cert_reqs=ssl.CERT_REQUIRED)


def test_mosquitto_clients_round_trip_with_cafile(tls_broker, certs, cleanup):
    broker = tls_broker()
    broker.wait_log(rf"Opening listen socket on {LOOPBACK}:{broker.tls_port} \(tls\)\.")
    sub = MosquittoSub(broker.tls_port, ["t/#"], qos=1, extra=tls_args(certs))
    cleanup(sub.kill)
    sub.wait_subscribed()
    result = pub_ok(broker.tls_port, certs)
    assert result.returncode == 0, result.stderr
    assert sub.wait_messages(1) == [(0, 1, "t/tls", "hello")]


def test_client_trusting_another_ca_fails_and_others_carry_on(tls_broker, certs, cleanup):
    broker = tls_broker()
    sub = MosquittoSub(broker.port, ["t/#"])
    cleanup(sub.kill)
    sub.wait_subscribed()
    result = pub_ok(broker.tls_port, certs, ca="other-ca")
    assert result.returncode != 0
    broker.wait_log(rf"TLS handshake with {LOOPBACK}:\d+ failed: .*")
    assert mosquitto_pub(broker.port, "t/plain", "still here").returncode == 0
    assert sub.wait_messages(1) == [(0, 0, "t/plain", "still here")]


def test_require_certificate(tls_broker, certs, cleanup):
    broker = tls_broker([f"cafile {certs / 'ca.crt'}", "require_certificate true"])
    sub = MosquittoSub(broker.port, ["t/#"])
    cleanup(sub.kill)
    sub.wait_subscribed()
    assert pub_ok(broker.tls_port, certs, message="no cert").returncode != 0
    broker.wait_log(r"TLS handshake with .* failed: .*")
    assert pub_ok(broker.tls_port, certs, message="rogue", client="rogue").returncode != 0
    broker.wait_log(r"TLS handshake with .* failed: .*", count=2)
    result = pub_ok(broker.tls_port, certs, message="good", client="dev1")
    assert result.returncode == 0, result.stderr
    assert sub.wait_messages(1) == [(0, 0, "t/tls", "good")]


def test_crlfile_refuses_a_revoked_certificate(tls_broker, certs):
    broker = tls_broker([f"cafile {certs / 'ca.crt'}", f"crlfile {certs / 'crl.pem'}", "require_certificate true"])
    assert pub_ok(broker.tls_port, certs, message="revoked", client="revoked").returncode != 0
    broker.wait_log(r"TLS handshake with .* failed: .*[Rr]evoked.*")
    result = pub_ok(broker.tls_port, certs, message="good", client="dev1")
    assert result.returncode == 0, result.stderr


def test_use_subject_as_username(tls_broker, certs):
    broker = tls_broker([f"cafile {certs / 'ca.crt'}", "use_subject_as_username true"])
    result = pub_ok(broker.tls_port, certs, message="subject", client="dev1")
    assert result.returncode == 0, result.stderr
    broker.wait_log(r"New client connected from .* u'CN=dev1,O=Culex Test,C=DE'\)")


def test_use_identity_as_username_with_acl(tls_broker, certs, tmp_path, cleanup):
    acl = tmp_path / "acl"
    acl.write_text("topic read #\nuser dev1\ntopic write dev1/#\n")
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "someone", "secret"], check=True, timeout=30)
    broker = tls_broker([f"cafile {certs / 'ca.crt'}", "use_identity_as_username true"],
                        extra=[f"acl_file {acl}", f"password_file {passwords}"])
    sub = MosquittoSub(broker.port, ["#"])
    cleanup(sub.kill)
    sub.wait_subscribed()
    # CONNECT's user name and password are ignored: the certificate's CN is the user.
    ok = pub_ok(broker.tls_port, certs, topic="dev1/status", message="allowed", client="dev1")
    assert ok.returncode == 0, ok.stderr
    denied = mosquitto_pub(broker.tls_port, "other/status", "denied", qos=1,
                           extra=tls_args(certs, client="dev1") + ["-u", "someone", "-P", "wrong"])
    assert denied.returncode == 0, denied.stderr
    broker.wait_log(r"New client connected from .* u'dev1'\)")
    # Without a certificate: CONNACK 4 (bad user name or password), password file or not.
    refused = mosquitto_pub(broker.tls_port, "dev1/status", "nocert", qos=1,
                            extra=tls_args(certs) + ["-u", "someone", "-P", "secret"])
    assert refused.returncode != 0
    assert "bad user name or password" in (refused.stderr + refused.stdout).lower()
    assert pub_ok(broker.tls_port, certs, topic="dev1/status", message="again", client="dev1").returncode == 0
    wait_until(lambda: len(sub.messages()) >= 2, what=lambda: f"two messages; got {sub.lines}")
    assert [m[2:] for m in sub.messages()] == [("dev1/status", "allowed"), ("dev1/status", "again")]


def tls_handshake(port: int, certs: Path, version: ssl.TLSVersion) -> str:
    """The version a client speaking only `version` gets, or the error."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.minimum_version = context.maximum_version = version
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
                return tls.version() or ""
        except (ssl.SSLError, ConnectionResetError) as error:
            return f"refused: {error}"


def hurried_connect(port: int, context: ssl.SSLContext, client_id: str) -> bytes:
    """A TCP_NODELAY client writing CONNECT right behind its handshake,
    as OpenSSL clients in a hurry do: under TLS 1.3 its Finished and the
    CONNECT record often reach the broker in one read. The CONNACK."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
            tls.sendall(connect_packet(client_id))
            connack = b""
            while len(connack) < 4:
                chunk = tls.recv(4 - len(connack))
                if not chunk:
                    break
                connack += chunk
            tls.sendall(b"\xe0\x00")
            return connack


def test_two_hundred_hurried_tls_clients_all_connect(tls_broker, certs):
    broker = tls_broker()
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    failures = []
    for i in range(200):
        try:
            connack = hurried_connect(broker.tls_port, context, f"hurried-{i}")
            if connack != b"\x20\x02\x00\x00":
                failures.append((i, connack))
        except (ssl.SSLError, OSError) as error:
            failures.append((i, repr(error)))
    assert failures == [], f"{len(failures)} of 200 failed, first: {failures[:3]}"
    broker.wait_log(r"Client hurried-199 disconnected\.")
    assert "TLS error" not in broker.log()


def test_two_hundred_mosquitto_pub_nodelay_over_tls_all_arrive(tls_broker, certs, cleanup):
    broker = tls_broker()
    sub = MosquittoSub(broker.port, ["t/#"], qos=1)
    cleanup(sub.kill)
    sub.wait_subscribed()
    failed = []
    for i in range(200):
        result = mosquitto_pub(broker.tls_port, "t/nodelay", str(i), qos=1, extra=tls_args(certs) + ["--nodelay"])
        if result.returncode != 0:
            failed.append((i, result.stderr.strip()))
    assert failed == [], f"{len(failed)} of 200 failed, first: {failed[:3]}"
    wait_until(lambda: len(sub.messages()) >= 200, what=lambda: f"200 messages; got {len(sub.messages())}")
    assert [m[3] for m in sub.messages()] == [str(i) for i in range(200)]


def test_tls_failures_are_logged_as_errors_with_address_and_reason(tls_broker, certs):
    """At `log_type error` (where Mosquitto logs its OpenSSL errors): a
    handshake the client gives up, and a corrupted record after it."""
    broker = tls_broker(verbose=False, extra=["log_type error"])
    assert pub_ok(broker.tls_port, certs, ca="other-ca").returncode != 0
    broker.wait_log(rf"TLS handshake with {LOOPBACK}:\d+ failed: received fatal alert: \w+\.$")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with socket.create_connection((LOOPBACK, broker.tls_port), timeout=5) as raw:
        tls = context.wrap_bio(incoming, outgoing, server_hostname=LOOPBACK)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())
        tls.write(connect_packet("corrupt"))
        record = bytearray(outgoing.read())
        record[-1] ^= 1
        raw.sendall(bytes(record))
        port = raw.getsockname()[1]
        broker.wait_log(rf"TLS error on the connection from {LOOPBACK}:{port}: cannot decrypt peer's message\.$")


def test_tls_version_13_refuses_a_tls12_client(tls_broker, certs):
    broker = tls_broker(["tls_version tlsv1.3"])
    assert tls_handshake(broker.tls_port, certs, ssl.TLSVersion.TLSv1_2).startswith("refused")
    broker.wait_log(r"TLS handshake with .* failed: .*")
    assert tls_handshake(broker.tls_port, certs, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    new = mosquitto_pub(broker.tls_port, "t/v", "1.3", extra=tls_args(certs) + ["--tls-version", "tlsv1.3"])
    assert new.returncode == 0, new.stderr


def test_default_listener_accepts_tls12_and_tls13(tls_broker, certs):
    broker = tls_broker()
    assert tls_handshake(broker.tls_port, certs, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert tls_handshake(broker.tls_port, certs, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    result = mosquitto_pub(broker.tls_port, "t/v", "1.2", extra=tls_args(certs) + ["--tls-version", "tlsv1.2"])
    assert result.returncode == 0, result.stderr


def test_paho_over_tls_all_qos(tls_broker, certs, clients):
    broker = tls_broker()
    sub = clients(TlsPaho(broker.tls_port, "tls-sub", certs)).connect()
    sub.subscribe("t/#", qos=2)
    pub = clients(TlsPaho(broker.tls_port, "tls-pub", certs)).connect()
    # Payloads larger than a TLS record (16 KiB) and than rustls buffers
    # at once (64 KiB).
    for qos in (0, 1, 2):
        pub.publish("t/paho", f"q{qos}".encode() * 50_000, qos=qos)
    got = [sub.expect() for _ in range(3)]
    assert [m.payload for m in got] == [f"q{q}".encode() * 50_000 for q in (0, 1, 2)]


def test_websocket_over_tls_round_trip_and_presence(tls_broker, certs, clients, redis_server, redis_db):
    broker = tls_broker(websockets=True, redis=redis_server)
    broker.wait_log(rf"Opening listen socket on {LOOPBACK}:{broker.tls_port} \(websockets, tls\)\.")
    sub = clients(TlsPaho(broker.tls_port, "wss-device", certs, websockets=True)).connect()
    wait_until(lambda: redis_db.hget(KEY, "wss-device") == "1", what="wss-device online")
    sub.subscribe("t/#", qos=1)
    pub = clients(TlsPaho(broker.tls_port, "wss-pub", certs, websockets=True)).connect()
    pub.publish("t/wss", b"x" * 70_000, qos=1)
    assert sub.expect().payload == b"x" * 70_000
    sub.disconnect()
    wait_until(lambda: redis_db.hget(KEY, "wss-device") is None, what="wss-device offline")


def test_plain_client_on_tls_port_is_dropped_without_affecting_others(tls_broker, certs, clients):
    broker = tls_broker()
    tls_client = clients(TlsPaho(broker.tls_port, "steady", certs)).connect()
    tls_client.subscribe("t/#", qos=1)
    plain = socket.create_connection((LOOPBACK, broker.tls_port), timeout=5)
    try:
        plain.sendall(connect_packet("plain"))
        plain.settimeout(5)
        data = b""
        while True:
            chunk = plain.recv(4096)
            if not chunk:
                break
            data += chunk
            assert len(data) < 4096, "the broker keeps talking to a plain client"
        assert not data.startswith(b"\x20\x02"), "a plain client got a CONNACK"
    except ConnectionResetError:
        pass
    finally:
        plain.close()
    broker.wait_log(r"TLS handshake with .* failed: .*")
    assert pub_ok(broker.tls_port, certs, message="after").returncode == 0
    assert tls_client.expect().payload == b"after"


@pytest.mark.parametrize("case", ["missing", "garbage", "key-missing", "mismatch"])
def test_bad_certificate_files_stop_start_up_naming_the_file(make_broker, certs, tmp_path, case):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    cert, key = certs / "server.crt", certs / "server.key"
    if case == "missing":
        cert = tmp_path / "nowhere.crt"
    elif case == "garbage":
        cert = garbage
    elif case == "key-missing":
        key = tmp_path / "nowhere.key"
    else:
        key = certs / "dev1.key"
    port = free_port()
    broker = make_broker(start=False, extra=[f"listener {port} {LOOPBACK}", f"certfile {cert}", f"keyfile {key}"])
    proc = subprocess.run([broker.binary, "-c", str(broker.config)], capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0
    named = key if case in ("key-missing", "mismatch") else cert
    assert str(named) in proc.stderr, proc.stderr
    assert str(broker.config) in proc.stderr, proc.stderr
    assert not is_listening(port)


def test_tls_version_11_stops_start_up_naming_the_line(make_broker, certs):
    port = free_port()
    broker = make_broker(start=False, extra=[f"listener {port} {LOOPBACK}", f"certfile {certs / 'server.crt'}",
                                             f"keyfile {certs / 'server.key'}", "tls_version tlsv1.1"])
    proc = subprocess.run([broker.binary, "-c", str(broker.config)], capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0
    lines = broker.config.read_text().splitlines()
    assert f"{broker.config}:{lines.index('tls_version tlsv1.1') + 1}: tls_version tlsv1.1" in proc.stderr, proc.stderr


def test_handshake_has_a_deadline(tls_broker, certs, clients):
    """A client that starts a TLS handshake and never finishes it is
    dropped after 10 s; the broker serves others meanwhile."""
    broker = tls_broker()
    sock = socket.create_connection((LOOPBACK, broker.tls_port), timeout=15)
    clients(sock)
    # The first bytes of a ClientHello record, and nothing more.
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    start = time.monotonic()
    assert pub_ok(broker.tls_port, certs, message="meanwhile").returncode == 0
    try:
        assert sock.recv(4096) == b""
    except ConnectionResetError:
        pass
    assert 8 < time.monotonic() - start < 14
    broker.wait_log(r"TLS handshake with .* timed out")
