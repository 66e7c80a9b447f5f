"""The addresses a listener binds, as Mosquitto binds them: both families
without an address, every address of a host name, one family with
`socket_domain`, and the interface's addresses with `bind_interface`.
Loopback only: `lo` is the interface every machine has."""

from __future__ import annotations

import socket
import subprocess

from support import (IPV4_ANY_HEX, IPV4_LOOPBACK_HEX, IPV6_ANY_HEX, LOOPBACK, RawClient, free_port, is_listening,
                     listening_addresses, wait_until)

IPV6_LOOPBACK_HEX = "00000000000000000000000001000000"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def second_listener(make_broker, *lines: str) -> tuple:
    port = free_port()
    broker = make_broker(extra=[f"listener {port}", *lines])
    wait_until(lambda: is_listening(port), what=f"listener {port}")
    return broker, port


def connects(port: int, host: str = LOOPBACK) -> bool:
    client = RawClient(port, "addr-probe")
    client.sock = socket.create_connection((host, port), timeout=5)
    client.sock.settimeout(5)
    try:
        client.send(client.packet)
        return client._recv_exact(4) == b"\x20\x02\x00\x00"
    finally:
        client.close()


def test_a_listener_without_address_binds_both_families(make_broker):
    broker, port = second_listener(make_broker)
    expected = {IPV4_ANY_HEX, IPV6_ANY_HEX} if has_ipv6_loopback() else {IPV4_ANY_HEX}
    assert listening_addresses(port) == expected
    assert connects(port)
    if has_ipv6_loopback():
        assert connects(port, "::1")


def test_socket_domain_keeps_one_family(make_broker):
    _, port = second_listener(make_broker, "socket_domain ipv4")
    assert listening_addresses(port) == {IPV4_ANY_HEX}


def test_a_host_name_binds_every_address_it_resolves_to(make_broker):
    port = free_port()
    make_broker(extra=[f"listener {port} localhost"])
    wait_until(lambda: is_listening(port), what=f"listener {port}")
    resolved = {info[4][0] for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)}
    hexes = {"127.0.0.1": IPV4_LOOPBACK_HEX, "::1": IPV6_LOOPBACK_HEX}
    assert listening_addresses(port) == {hexes[a] for a in resolved if a in hexes}
    assert connects(port)


def test_bind_interface_binds_the_interfaces_addresses(make_broker):
    _, port = second_listener(make_broker, "bind_interface lo")
    expected = {IPV4_LOOPBACK_HEX, IPV6_LOOPBACK_HEX} if has_ipv6_loopback() else {IPV4_LOOPBACK_HEX}
    assert listening_addresses(port) == expected
    assert connects(port)


def start_fails(binary, tmp_path, lines: list[str]) -> str:
    conf = tmp_path / "culex.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = tmp_path / "start.log"
    with open(log, "wb") as out:
        proc = subprocess.run([binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, timeout=10)
    assert proc.returncode != 0, log.read_text()
    return log.read_text()


def test_an_interface_without_addresses_stops_start_up(binary, tmp_path):
    port = free_port()
    text = start_fails(binary, tmp_path, [f"listener {port}", "bind_interface culex-none0", "allow_anonymous true"])
    assert f"the listener on port {port} has no address on interface culex-none0 to bind to" in text, text
    assert "Interface culex-none0 does not support IPv4 configuration." in text, text
    assert not is_listening(port)


def test_a_listener_address_must_be_the_interfaces(make_broker, binary, tmp_path):
    port = free_port()
    make_broker(extra=[f"listener {port} 127.0.0.1", "bind_interface lo"])
    wait_until(lambda: is_listening(port), what=f"listener {port}")
    assert listening_addresses(port) == {IPV4_LOOPBACK_HEX}
    other = free_port()
    text = start_fails(binary, tmp_path, [f"listener {other} 127.0.0.2", "bind_interface lo"])
    assert "Interface address for lo does not match specified listener address (127.0.0.2)." in text, text


def test_a_host_name_that_does_not_resolve_stops_start_up(binary, tmp_path):
    port = free_port()
    text = start_fails(binary, tmp_path, [f"listener {port} no-such-host.invalid"])
    assert "Error creating listener: no-such-host.invalid:" in text, text
