"""The sandbox's proxy (lib.egress), on a real Unix socket, with real upstream servers on loopback."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lib.egress import EgressProxy


@pytest.mark.parametrize("entry, host, port, allowed", [
    ("pypi.org", "pypi.org", 443, True),
    ("pypi.org", "pypi.org", 80, True),
    ("pypi.org", "PyPI.org.", 443, True),
    ("pypi.org", "pypi.org", 8443, False),
    ("pypi.org", "evil-pypi.org", 443, False),
    ("pypi.org", "pypi.org.evil.com", 443, False),
    ("*.pythonhosted.org", "files.pythonhosted.org", 443, True),
    ("*.pythonhosted.org", "pythonhosted.org", 443, False),
    ("*.pythonhosted.org", "xpythonhosted.org", 443, False),
    ("registry.local:8443", "registry.local", 8443, True),
    ("registry.local:8443", "registry.local", 443, False),
    ("127.0.0.1:5000", "127.0.0.1", 5000, True),
    ("[::1]:80", "::1", 80, True),
])
def test_the_allow_list(tmp_path, entry, host, port, allowed):
    proxy = EgressProxy(str(tmp_path / "s"), [entry], print)
    assert (proxy.allowed(host, port) is not None) is allowed


class _Echo(BaseHTTPRequestHandler):
    """Answers with the request line and headers it got."""

    def do_GET(self):
        body = f"{self.requestline}\n{self.headers}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def proxy_for(tmp_path):
    started = []

    def start(allowed):
        lines = []
        proxy = EgressProxy(str(tmp_path / "egress.sock"), allowed, lines.append)
        proxy.start()
        started.append(proxy)
        return proxy, lines

    yield start
    for proxy in started:
        proxy.close()


def ask(socket_path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(socket_path)
        client.sendall(request)
        data = b""
        while True:
            chunk = client.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_a_plain_request_to_an_allowed_host_goes_through_once_without_hop_headers(proxy_for, upstream):
    proxy, lines = proxy_for([f"127.0.0.1:{upstream}"])

    answer = ask(proxy.socket_path, f"GET http://127.0.0.1:{upstream}/simple/?q=1 HTTP/1.1\r\nHost: x\r\n"
                                    "Proxy-Authorization: Basic c2VjcmV0\r\nConnection: keep-alive\r\n\r\n".encode())

    assert answer.startswith(b"HTTP/1.0 200")
    assert b"GET /simple/?q=1 HTTP/1.1" in answer
    assert b"Proxy-Authorization" not in answer and b"keep-alive" not in answer
    assert b"Connection: close" in answer
    assert lines == []


def test_a_tunnel_to_an_allowed_host(proxy_for, upstream):
    proxy, _ = proxy_for([f"127.0.0.1:{upstream}"])

    answer = ask(proxy.socket_path, f"CONNECT 127.0.0.1:{upstream} HTTP/1.1\r\n\r\n"
                                    "GET /through HTTP/1.0\r\n\r\n".encode())

    assert answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200")
    assert b"GET /through HTTP/1.0" in answer


@pytest.mark.parametrize("request_line", [b"CONNECT github.com:443 HTTP/1.1", b"GET http://github.com/ HTTP/1.1",
                                          b"CONNECT 127.0.0.1:6379 HTTP/1.1"])
def test_a_host_not_allowed_gets_403_and_a_line_in_the_log(proxy_for, upstream, request_line):
    proxy, lines = proxy_for([f"127.0.0.1:{upstream}", "pypi.org"])

    answer = ask(proxy.socket_path, request_line + b"\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"is not in the sandbox's allow-list" in answer
    assert len(lines) == 1 and "refused" in lines[0]


@pytest.mark.parametrize("head", [b"hello\r\n\r\n", b"GET /relative HTTP/1.1\r\n\r\n",
                                     b"GET ftp://example.com/ HTTP/1.1\r\n\r\n", b"CONNECT nohost HTTP/1.1\r\n\r\n",
                                     b"CONNECT x:99999 HTTP/1.1\r\n\r\n"])
def test_what_is_no_proxy_request_gets_400(proxy_for, head):
    proxy, _ = proxy_for(["example.com"])
    assert ask(proxy.socket_path, head).startswith(b"HTTP/1.1 400")


def test_a_name_that_resolves_to_this_machine_is_refused_unless_its_address_is_listed(proxy_for, upstream):
    """A rebinding trick: an allowed name that resolves to 127.0.0.1 reaches nothing there."""
    name = socket.gethostname()
    try:
        resolved = socket.gethostbyname(name)
    except OSError:
        resolved = ""
    if not resolved.startswith("127."):
        pytest.skip(f"{name} does not resolve to a loopback address here")
    proxy, lines = proxy_for([f"{name}:{upstream}"])

    answer = ask(proxy.socket_path, f"CONNECT {name}:{upstream} HTTP/1.1\r\n\r\n".encode())

    assert answer.startswith(b"HTTP/1.1 502")
    assert any("an address of this machine" in line for line in lines)
