"""A server certificate issued by an intermediate CA, with `certfile`
holding the server's certificate alone and `cafile` the intermediate and
the root (a common layout): Culex completes the chain it sends from
`cafile`, as OpenSSL does for Mosquitto, so a client that trusts only
the root connects. MQTT and WebSocket over TLS, with and without client
certificates; clients: mosquitto_pub/mosquitto_sub, Python `ssl` with
TCP_NODELAY, paho."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from support import LOOPBACK, MosquittoSub, Paho, connect_packet, free_port, is_listening, mosquitto_pub, wait_until
from test_tls import make_ca, make_leaf, openssl


def make_intermediate(d: Path, name: str, ca: str):
    (d / f"{name}.ext").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """root → intermediate → server and device certificates; `bundle.crt`
    is the intermediate then the root."""
    d = tmp_path_factory.mktemp("chain")
    make_ca(d, "root")
    make_intermediate(d, "intermediate", "root")
    make_leaf(d, "server", "intermediate", "/CN=localhost",
              "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    make_leaf(d, "device", "intermediate", "/CN=device", "extendedKeyUsage=clientAuth")
    (d / "bundle.crt").write_text((d / "intermediate.crt").read_text() + (d / "root.crt").read_text())
    return d


@pytest.fixture
def chain_broker(make_broker, chain):
    """Factory: a broker with a TLS listener (`.tls_port`) whose certfile
    holds the server certificate alone and whose cafile is the bundle."""

    def make(lines=(), websockets=False):
        port = free_port()
        listener = [f"listener {port} {LOOPBACK}", f"certfile {chain / 'server.crt'}",
                    f"keyfile {chain / 'server.key'}", f"cafile {chain / 'bundle.crt'}"]
        if websockets:
            listener.append("protocol websockets")
        broker = make_broker(extra=listener + list(lines))
        wait_until(lambda: is_listening(port), what=f"TLS listener on {port}")
        broker.tls_port = port
        return broker

    return make


def trusting_root(chain: Path, device: bool = False) -> list[str]:
    args = ["--cafile", str(chain / "root.crt")]
    if device:
        args += ["--cert", str(chain / "device.crt"), "--key", str(chain / "device.key")]
    return args


def sent_chain(port: int) -> int:
    """How many certificates the server sends, as `openssl s_client` sees them."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-showcerts"],
                         input="", capture_output=True, text=True, timeout=20).stdout
    return out.count("-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize("require_certificate", [False, True])
def test_client_trusting_only_the_root_round_trips(chain_broker, chain, cleanup, require_certificate):
    broker = chain_broker(lines=["require_certificate true"] if require_certificate else [])
    # The leaf and the intermediate; the root is the client's own.
    assert sent_chain(broker.tls_port) == 2
    sub = MosquittoSub(broker.tls_port, ["t/chain"], qos=1, extra=trusting_root(chain, require_certificate))
    cleanup(sub.stop)
    sub.wait_subscribed()
    done = mosquitto_pub(broker.tls_port, "t/chain", "through the chain", qos=1,
                         extra=trusting_root(chain, require_certificate))
    assert done.returncode == 0, done.stderr
    assert sub.wait_messages(1) == [(0, 1, "t/chain", "through the chain")]
    if require_certificate:
        refused = mosquitto_pub(broker.tls_port, "t/chain", "no certificate", extra=trusting_root(chain))
        assert refused.returncode != 0


def test_python_ssl_with_nodelay_verifies_the_completed_chain(chain_broker, chain):
    broker = chain_broker()
    context = ssl.create_default_context(cafile=str(chain / "root.crt"))
    for n in range(20):
        with socket.create_connection((LOOPBACK, broker.tls_port), timeout=10) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(connect_packet(f"py-chain-{n}"))
                assert tls.recv(4) == b"\x20\x02\x00\x00"


def test_websocket_over_tls_with_the_completed_chain(chain_broker, chain, cleanup):
    broker = chain_broker(websockets=True)
    clients = []
    for name in ("wss-sub", "wss-pub"):
        client = Paho(broker.tls_port, name, transport="websockets")
        client.client.tls_set(ca_certs=str(chain / "root.crt"), cert_reqs=ssl.CERT_REQUIRED)
        cleanup(client.close)
        clients.append(client.connect())
    sub, pub = clients
    sub.subscribe("t/wss", qos=1)
    pub.publish("t/wss", b"over wss", qos=1)
    assert sub.expect().payload == b"over wss"


def test_a_certfile_with_its_own_chain_is_sent_as_it_is(make_broker, chain):
    full = chain / "server-full.crt"
    full.write_text((chain / "server.crt").read_text() + (chain / "intermediate.crt").read_text())
    port = free_port()
    make_broker(extra=[f"listener {port} {LOOPBACK}", f"certfile {full}", f"keyfile {chain / 'server.key'}"])
    wait_until(lambda: is_listening(port), what=f"TLS listener on {port}")
    assert sent_chain(port) == 2
    assert mosquitto_pub(port, "t", "x", extra=trusting_root(chain)).returncode == 0
