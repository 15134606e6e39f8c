"""benchmarks/_lib/proxy.py: the delay proxy adds its latency each way without limiting throughput, and stalls
without closing connections. Checked against a plain echo server on 127.0.0.1, timed with the monotonic clock."""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _lib.proxy import DelayProxy  # noqa: E402

pytestmark = pytest.mark.timeout(60)


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(1 << 16):
            self.request.sendall(data)


@pytest.fixture
def echo():
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()


def receive(sock: socket.socket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        part = sock.recv(min(1 << 16, size - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def round_trip(port: int, payload: bytes = b"ping") -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        assert receive(sock, len(payload)) == payload
        return time.monotonic() - start


def test_a_round_trip_costs_twice_the_latency(echo):
    direct = round_trip(echo)
    with DelayProxy(echo, latency=0.1) as proxy:
        delayed = round_trip(proxy.port)
        assert proxy.connections == 1 and proxy.bytes_up == proxy.bytes_down == 4
    assert direct < 0.05
    assert 0.2 <= delayed < 0.2 + 0.15


def test_the_delay_does_not_limit_throughput(echo):
    """20 MB sent in pieces while the echo streams back: about one round trip more than without the proxy, not one
    per piece (320 pieces of 64 kB at 50 ms each way would take 32 s if each waited for the previous one)."""
    payload = bytes(range(256)) * (20 * 4096)

    def transfer(port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            start = time.monotonic()
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            echoed = receive(sock, len(payload))
            sender.join()
            assert echoed == payload
            return time.monotonic() - start

    direct = transfer(echo)
    with DelayProxy(echo, latency=0.05) as proxy:
        delayed = transfer(proxy.port)
        assert proxy.bytes_up == proxy.bytes_down == len(payload)
    assert 0.1 <= delayed < direct + 0.1 + 2.0


def test_a_stall_holds_the_bytes_and_keeps_the_connection_until_resumed(echo):
    with DelayProxy(echo) as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"one")
        assert receive(sock, 3) == b"one"
        proxy.stall()
        assert proxy.stalled
        sock.sendall(b"two")
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        assert proxy.bytes_down == 3
        proxy.resume()
        sock.settimeout(5.0)
        assert receive(sock, 3) == b"two" and not proxy.stalled
        assert proxy.connections == 1


def test_negative_latency_is_refused():
    with pytest.raises(ValueError, match="latency must not be negative"):
        DelayProxy(1, latency=-0.01)
