"""The sandbox's only way out: an HTTP proxy on a Unix socket that lets through the hosts of an allow-list.

An agent's sandbox has a network namespace of its own, with loopback and nothing else. Inside it socat
listens on 127.0.0.1 and hands each connection to this proxy's socket, which is bound into the sandbox;
HTTPS_PROXY and HTTP_PROXY point there. The proxy runs outside, in the sandbox launcher, and answers

* `CONNECT host:port` (HTTPS, or anything tunnelled): a tunnel to an allowed host, else 403;
* an absolute-form request (`GET http://host/path`, plain HTTP): that one request forwarded to an
  allowed host with `Connection: close`, else 403.

A tool that ignores the proxy variables reaches nothing: there is no route out. A name that resolves to
a loopback or link-local address (a rebinding trick aimed at 127.0.0.1's Redis, a cloud metadata
endpoint) is refused unless the allow-list names that address itself. Standard library only: the
launcher imports nothing else.

Allow-list entries: `example.com` (ports 80 and 443), `*.example.com` (its subdomains), `host:port`
(that port only), IP literals (`127.0.0.1:8080`, `[::1]:80`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import urlsplit

#: Longest request head read before deciding (a request line and its headers).
MAX_HEAD_BYTES = 64 * 1024
#: Time a client has to send its request head, and an upstream to accept the connection.
HEAD_TIMEOUT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 15
#: Connections served at once; past it a client gets 503 instead of another thread.
MAX_CONNECTIONS = 256
DEFAULT_PORTS = (80, 443)
#: Request headers that belong to this hop only (RFC 9110 7.6.1), never sent upstream.
HOP_HEADERS = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
               b"te", b"trailer", b"upgrade"}


class Rule(NamedTuple):
    """One allow-list entry. (A tuple, not a dataclass: the launcher starts faster without one.)"""

    host: str  # lowercase; for a wildcard the suffix with its leading dot (".example.com")
    port: Optional[int]  # None: 80 and 443
    wildcard: bool = False

    @classmethod
    def parse(cls, entry: str) -> "Rule":
        text = entry.strip().lower()
        port: Optional[int] = None
        if text.startswith("["):  # [v6]:port
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif text.count(":") == 1:
            host, _, number = text.partition(":")
            port = int(number)
        else:
            host = text
        if host.startswith("*."):
            return cls(host=host[1:], port=port, wildcard=True)
        return cls(host=host, port=port)

    def matches(self, host: str, port: int) -> bool:
        if (self.port is None and port not in DEFAULT_PORTS) or (self.port is not None and port != self.port):
            return False
        return host.endswith(self.host) if self.wildcard else host == self.host

    @property
    def names_an_address(self) -> bool:
        """The entry is an IP literal (or localhost): the user asked for that address itself."""
        return self.host == "localhost" or _ip(self.host) is not None


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _inner_address(address) -> bool:
    """Loopback and link-local: this machine's own services, and cloud metadata endpoints."""
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_unspecified


class EgressProxy:
    """The proxy, listening on `socket_path` until closed; `log(line)` hears of each refusal."""

    def __init__(self, socket_path: str, allowed: Sequence[str], log: Callable[[str], None]):
        self.socket_path = socket_path
        self.rules: List[Rule] = [Rule.parse(entry) for entry in allowed]
        self.log = log
        self._listener: Optional[socket.socket] = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, name="egress-accept", daemon=True).start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread in accept(), which close() alone does not
            except OSError:
                pass
            listener.close()

    def allowed(self, host: str, port: int) -> Optional[Rule]:
        host = host.lower().rstrip(".")
        return next((rule for rule in self.rules if rule.matches(host, port)), None)

    # --- serving -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            if not self._slots.acquire(blocking=False):
                _answer(client, 503, "too many connections through the sandbox's proxy")
                continue
            threading.Thread(target=self._serve, args=(client,), name="egress", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            client.settimeout(HEAD_TIMEOUT_SECONDS)
            head, rest = _read_head(client)
            if head is None:
                return _answer(client, 400, "a request head was expected")
            request = _parse(head)
            if request is None:
                return _answer(client, 400, "not a proxy request (CONNECT host:port, or GET http://host/...)")
            method, host, port, forward = request
            rule = self.allowed(host, port)
            if rule is None:
                self.log(f"sandbox: refused {method.decode(errors='replace')} {host}:{port}"
                         " (not in the sandbox's allow-list)")
                return _answer(client, 403, f"{host}:{port} is not in the sandbox's allow-list")
            upstream = self._connect(host, port, rule)
            if upstream is None:
                return _answer(client, 502, f"{host}:{port} could not be reached")
            if forward is None:  # CONNECT: the tunnel is open
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(forward)
            if rest:
                upstream.sendall(rest)
            client.settimeout(None)
            upstream.settimeout(None)
            _relay(client, upstream)
        except OSError:
            pass
        finally:
            for end in (client, upstream):
                if end is not None:
                    end.close()
            self._slots.release()

    def _connect(self, host: str, port: int, rule: Rule) -> Optional[socket.socket]:
        """A connection to the first address of `host` that the rule allows."""
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            self.log(f"sandbox: {host} does not resolve")
            return None
        for family, kind, proto, _, address in addresses:
            if _inner_address(ipaddress.ip_address(address[0])) and not rule.names_an_address:
                self.log(f"sandbox: refused {host}:{port}: it resolves to {address[0]}, an address of this"
                         " machine (list that address itself to allow it)")
                continue
            connection = socket.socket(family, kind, proto)
            connection.settimeout(CONNECT_TIMEOUT_SECONDS)
            try:
                connection.connect(address)
                return connection
            except OSError:
                connection.close()
        return None


def _read_head(client: socket.socket) -> Tuple[Optional[bytes], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            return None, b""
        chunk = client.recv(8192)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse(head: bytes) -> Optional[Tuple[bytes, str, int, Optional[bytes]]]:
    """(method, host, port, what to send upstream: None for a tunnel) of a proxy request."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    method, target, version = parts
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        return None
    if method == b"CONNECT":
        host, _, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        return (method, host, int(port), None) if host and port.isdigit() and 0 < int(port) < 65536 else None
    try:
        url = urlsplit(text)
        port = url.port or 80
    except ValueError:
        return None
    if url.scheme != "http" or not url.hostname:
        return None
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in HOP_HEADERS]
    forward = b"\r\n".join([b" ".join([method, path.encode("ascii"), version]), *headers, b"Connection: close"])
    return method, url.hostname, port, forward + b"\r\n\r\n"


def _answer(client: socket.socket, status: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    body = f"{text}\n".encode()
    try:
        client.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                       f"Connection: close\r\n\r\n".encode() + body)
    except OSError:
        pass
    finally:
        client.close()


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides are done."""
    other = threading.Thread(target=_pump, args=(b, a), daemon=True)
    other.start()
    _pump(a, b)
    other.join()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    try:
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass
