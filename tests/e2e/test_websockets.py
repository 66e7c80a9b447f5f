"""MQTT over WebSocket (`protocol websockets`, MQTT 3.1.1 section 6):
paho-mqtt with `transport="websockets"` against a WebSocket listener, TCP
and WebSocket clients on one broker, presence for WebSocket clients, and
raw sockets with hand-made masked frames for the framing rules (text
frames close the connection [MQTT-6.0.0-1], packets may span frames or
share one [MQTT-6.0.0-2])."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time

import pytest

from support import (LOOPBACK, Paho, connect_packet, free_port, is_listening, publish_packet, subscribe_packet,
                     wait_until)

KEY = "mqtt"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONNACK_OK = b"\x20\x02\x00\x00"


class WsPaho(Paho):
    """The suite's paho client, over WebSocket (paho offers subprotocol `mqtt`)."""

    def __init__(self, port: int, client_id: str, clean_session: bool = True):
        super().__init__(port, client_id, clean_session=clean_session, transport="websockets")


def frame(payload: bytes, opcode: int = 0x2, fin: bool = True) -> bytes:
    """A client frame: masked, as RFC 6455 requires."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWs:
    """A WebSocket client on a plain socket that frames what the test says."""

    def __init__(self, port: int, protocols: str = "mqtt", timeout: float = 5.0, headers: str = ""):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.data = b""
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /mqtt HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Protocol: {protocols}\r\n{headers}\r\n")
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = head.split(b"\r\n")[0].decode()
        self.headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode().partition(":")
            self.headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.accepted = self.status.startswith("HTTP/1.1 101") and self.headers.get("sec-websocket-accept") == expected

    def _fill(self, n: int):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame, which must be unmasked and final."""
        self._fill(2)
        first, second = self.buf[0], self.buf[1]
        assert first & 0x80, "server frames are final"
        assert not second & 0x80, "server frames are not masked"
        n, at = second & 0x7F, 2
        if n == 126:
            self._fill(4)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(at + n)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return first & 0x0F, payload

    def read_mqtt(self, n: int) -> bytes:
        """The next `n` bytes of MQTT data carried by binary frames (a
        frame may hold several packets: the broker writes what it has)."""
        while len(self.data) < n:
            opcode, payload = self.read_frame()
            assert opcode == 0x2, f"expected a binary frame, got opcode {opcode}"
            self.data += payload
        out, self.data = self.data[:n], self.data[n:]
        return out

    def send(self, data: bytes):
        self.sock.sendall(data)

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the broker ends the connection (after any close frame)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self.read_frame()
        except (EOFError, ConnectionResetError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


@pytest.fixture
def ws_broker(make_broker):
    """Factory: a broker with its usual TCP listener and a WebSocket one (`.ws_port`)."""

    def make(**kw):
        ws_port = free_port()
        extra = [f"listener {ws_port} {LOOPBACK}", "protocol websockets"] + list(kw.pop("extra", []))
        broker = make_broker(extra=extra, **kw)
        wait_until(lambda: is_listening(ws_port), what=f"WebSocket listener on {ws_port}")
        broker.ws_port = ws_port
        return broker

    return make


def test_publish_subscribe_all_qos_over_websocket(ws_broker, clients):
    broker = ws_broker()
    sub = clients(WsPaho(broker.ws_port, "ws-sub")).connect()
    pub = clients(WsPaho(broker.ws_port, "ws-pub")).connect()
    assert sub.subscribe("ws/#", qos=2) == [2]
    for qos in (0, 1, 2):
        pub.publish(f"ws/q{qos}", f"payload {qos}".encode(), qos=qos)
        msg = sub.expect()
        assert (msg.topic, msg.payload, msg.qos) == (f"ws/q{qos}", f"payload {qos}".encode(), qos)
    big = os.urandom(200_000)  # 64-bit frame lengths both ways
    pub.publish("ws/big", big, qos=1)
    assert sub.expect().payload == big
    pub.disconnect()
    sub.disconnect()


def test_tcp_and_websocket_clients_exchange_messages(ws_broker, clients):
    broker = ws_broker()
    tcp = clients(Paho(broker.port, "tcp-client")).connect()
    ws = clients(WsPaho(broker.ws_port, "ws-client")).connect()
    tcp.subscribe("to-tcp", qos=1)
    ws.subscribe("to-ws", qos=1)
    ws.publish("to-tcp", b"from websocket", qos=1)
    tcp.publish("to-ws", b"from tcp", qos=1)
    assert tcp.expect().payload == b"from websocket"
    assert ws.expect().payload == b"from tcp"


def test_websocket_client_presence_in_redis(ws_broker, redis_server, redis_db, clients):
    broker = ws_broker(redis=redis_server)
    ws = clients(WsPaho(broker.ws_port, "ws-device")).connect()
    wait_until(lambda: redis_db.hget(KEY, "ws-device") == "1", what="ws-device online")
    ws.disconnect()
    wait_until(lambda: redis_db.hget(KEY, "ws-device") is None, what="ws-device offline")
    # A connection that vanishes without DISCONNECT goes offline too.
    raw = clients(RawWs(broker.ws_port))
    assert raw.accepted
    raw.send(frame(connect_packet("ws-raw")))
    assert raw.read_mqtt(4) == CONNACK_OK
    wait_until(lambda: redis_db.hget(KEY, "ws-raw") == "1", what="ws-raw online")
    raw.close()
    wait_until(lambda: redis_db.hget(KEY, "ws-raw") is None, what="ws-raw offline")


def test_handshake_answers_mqtt_subprotocol(ws_broker, clients):
    broker = ws_broker()
    ws = clients(RawWs(broker.ws_port, protocols="mqtt"))
    assert ws.accepted, ws.status
    assert ws.headers.get("sec-websocket-protocol") == "mqtt"
    legacy = clients(RawWs(broker.ws_port, protocols="mqttv3.1"))
    assert legacy.accepted, legacy.status
    assert legacy.headers.get("sec-websocket-protocol") == "mqttv3.1"
    other = clients(RawWs(broker.ws_port, protocols="chat"))
    assert other.status.startswith("HTTP/1.1 400")
    assert other.closed()


def test_text_frame_closes_the_connection(ws_broker, clients):
    broker = ws_broker()
    ws = clients(RawWs(broker.ws_port))
    assert ws.accepted
    ws.send(frame(connect_packet("texter")))
    assert ws.read_mqtt(4) == CONNACK_OK
    ws.send(frame(b"\xc0\x00", opcode=0x1))  # a PINGREQ, but in a text frame
    opcode, payload = ws.read_frame()
    assert opcode == 0x8 and payload[:2] == struct.pack("!H", 1003)
    assert ws.closed()
    broker.wait_log(r"texter")


def test_ping_and_close_frames(ws_broker, clients):
    broker = ws_broker()
    ws = clients(RawWs(broker.ws_port))
    ws.send(frame(connect_packet("pinger")))
    assert ws.read_mqtt(4) == CONNACK_OK
    ws.send(frame(b"are you there", opcode=0x9))
    assert ws.read_frame() == (0xA, b"are you there")
    ws.send(frame(struct.pack("!H", 1000), opcode=0x8))
    assert ws.read_frame() == (0x8, struct.pack("!H", 1000))
    assert ws.closed()


def test_packets_share_a_frame_and_span_frames(ws_broker, clients):
    broker = ws_broker()
    ws = clients(RawWs(broker.ws_port))
    assert ws.accepted
    # CONNECT, SUBSCRIBE and a PUBLISH to itself in one frame.
    first = publish_packet("loop/a", b"one frame")
    ws.send(frame(connect_packet("framer") + subscribe_packet("loop/#") + first))
    assert ws.read_mqtt(4) == CONNACK_OK
    assert ws.read_mqtt(5) == b"\x90\x03\x00\x01\x00"
    assert ws.read_mqtt(len(first)) == first
    # A PUBLISH split over three complete binary frames, a byte at the start.
    second = publish_packet("loop/b", b"split over frames " * 20)
    for part in (second[:1], second[1:30], second[30:]):
        ws.send(frame(part))
    assert ws.read_mqtt(len(second)) == second
    # A PUBLISH in one fragmented message (binary + continuations).
    third = publish_packet("loop/c", b"fragmented message")
    ws.send(frame(third[:3], fin=False) + frame(third[3:10], opcode=0x0, fin=False)
            + frame(third[10:], opcode=0x0))
    assert ws.read_mqtt(len(third)) == third
    # And the frames themselves split at every byte boundary of the socket.
    fourth = publish_packet("loop/d", b"byte by byte")
    for byte in frame(fourth):
        ws.send(bytes([byte]))
    assert ws.read_mqtt(len(fourth)) == fourth


def test_handshake_has_a_deadline(ws_broker, clients):
    """A client that never finishes its upgrade request is dropped (10 s)."""
    broker = ws_broker()
    sock = socket.create_connection((LOOPBACK, broker.ws_port), timeout=15)
    clients(sock)
    sock.sendall(b"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\n")
    start = time.monotonic()
    assert sock.recv(4096) == b""
    assert 8 < time.monotonic() - start < 14
