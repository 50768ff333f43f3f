"""Raw-socket HTTP/1.x client for byte-exact end-to-end tests.

Builds requests as bytes, sends them on a plain TCP socket and parses what comes
back (interim 1xx heads, Content-Length, chunked and close-delimited bodies),
reporting an incomplete body instead of hiding it.  Every socket has a timeout,
so no read can hang a test.  Server process management lives in conftest.py.
"""

import socket
import time
from dataclasses import dataclass, field
import uuid

TIMEOUT = 10.0


def new_token():
    """A short unique token tests put in URLs to find their own records."""
    return uuid.uuid4().hex[:12]


def build_request(
    method, target, headers=(), body=b"", version="HTTP/1.1", host="test", content_length=True
):
    """Return the bytes of one request; adds Host and (when body) Content-Length."""
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} {version}"]
    if "host" not in names and host is not None:
        lines.append(f"Host: {host}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if (
        body
        and content_length
        and "content-length" not in names
        and "transfer-encoding" not in names
    ):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body


def chunk(data):
    """One chunk of a chunked body (never the terminator: data must be non-empty)."""
    assert data, "an empty chunk would terminate the body"
    return b"%x\r\n" % len(data) + data + b"\r\n"


def chunked(pieces):
    """A whole chunked body made of the given non-empty pieces plus the terminator."""
    return b"".join(chunk(p) for p in pieces) + b"0\r\n\r\n"


@dataclass
class Response:
    """One parsed response; `complete` is False when the body framing was cut short."""

    version: str
    status: int
    reason: str
    headers: list
    body: bytes = b""
    raw: bytes = b""
    complete: bool = True
    chunked: bool = False
    interim: list = field(default_factory=list)

    def header(self, name):
        """The value of the first header called `name` (case-insensitive), or None."""
        values = self.headers_all(name)
        return values[0] if values else None

    def headers_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has_token(self, name, token):
        """True when a comma-separated header such as Connection lists `token`."""
        tokens = [t.strip().lower() for v in self.headers_all(name) for t in v.split(",")]
        return token.lower() in tokens


class IncompleteHead(Exception):
    """The connection ended before a complete response head arrived."""


class Connection:
    """A client connection with a read buffer so pipelined responses parse in order."""

    def __init__(self, host, port, timeout=TIMEOUT, source=None):
        """`source`: the local address to connect from (127.0.0.x), default any."""
        bind = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=bind)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, limit=65536):
        if self.eof:
            return False
        try:
            data = self.sock.recv(limit)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n):
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_until(self, delim, max_bytes=1 << 20):
        """Bytes up to and including `delim`, or None if the peer closed first."""
        while True:
            idx = self.buf.find(delim)
            if idx >= 0:
                return self._take(idx + len(delim))
            assert len(self.buf) <= max_bytes, f"no {delim!r} within {max_bytes} bytes"
            if not self._fill():
                return None

    def read_exact(self, n):
        """Exactly n bytes, or fewer if the peer closed first."""
        while len(self.buf) < n and self._fill(min(max(65536, n - len(self.buf)), 1 << 20)):
            pass
        return self._take(min(n, len(self.buf)))

    def read_some(self):
        """Whatever is buffered or the next recv(); b"" at end of stream."""
        if not self.buf:
            self._fill()
        return self._take(len(self.buf))

    def read_to_eof(self, max_bytes=1 << 30):
        """Everything until the peer closes (a socket timeout fails the test)."""
        while self._fill():
            assert len(self.buf) <= max_bytes, "peer sent more than expected"
        return self._take(len(self.buf))

    def wait_closed(self, timeout=TIMEOUT):
        """True if the peer closes (FIN or RST) within timeout, discarding any data."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                self.buf.clear()
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)

    def read_chunk(self):
        """One chunk of a chunked body being read by hand: data, b"" at the end, None at EOF."""
        line = self.read_until(b"\r\n")
        if line is None:
            return None
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            return b"" if self.read_until(b"\r\n") == b"\r\n" else None
        data = self.read_exact(size + 2)
        if len(data) < size + 2:
            return None
        assert data.endswith(b"\r\n"), f"chunk not followed by CRLF: {data[-10:]!r}"
        return data[:-2]

    def read_head(self):
        """(raw, version, status, reason, headers) of the next head, interim or final."""
        raw = self.read_until(b"\r\n\r\n")
        if raw is None:
            leftover = bytes(self.buf)
            raise IncompleteHead(f"connection closed before a response head; got {leftover!r}")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep, f"malformed header line {line!r}"
            headers.append((name.strip(), value.strip()))
        return raw, version, int(code), reason, headers

    def read_response(self, method="GET", stop_at_interim=False):
        """The next final response; 1xx heads before it are kept in `.interim`."""
        interim = []
        raw_all = b""
        while True:
            raw, version, status, reason, headers = self.read_head()
            raw_all += raw
            resp = Response(version, status, reason, headers, raw=raw_all, interim=interim)
            if 100 <= status < 200 and status != 101:
                interim.append(raw)
                if stop_at_interim:
                    return resp
                continue
            break
        self._read_body(resp, method)
        return resp

    def _read_body(self, resp, method):
        if method == "HEAD" or resp.status in (204, 304) or resp.status < 200:
            return
        if resp.has_token("Transfer-Encoding", "chunked"):
            resp.chunked = True
            self._read_chunked(resp)
        elif resp.header("Content-Length") is not None:
            length = int(resp.header("Content-Length"))
            resp.body = self.read_exact(length)
            resp.raw += resp.body
            resp.complete = len(resp.body) == length
        else:
            resp.body = self.read_to_eof()
            resp.raw += resp.body

    def _read_chunked(self, resp):
        body = bytearray()
        while True:
            line = self.read_until(b"\r\n")
            if line is None:
                break
            resp.raw += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = self.read_until(b"\r\n")
                    if trailer is None:
                        resp.body = bytes(body)
                        resp.complete = False
                        return
                    resp.raw += trailer
                    if trailer == b"\r\n":
                        resp.body = bytes(body)
                        return
            data = self.read_exact(size + 2)
            resp.raw += data
            if len(data) < size + 2:
                body += data[:size]
                break
            assert data.endswith(b"\r\n"), f"chunk not followed by CRLF: {data[-10:]!r}"
            body += data[:-2]
        resp.body = bytes(body)
        resp.complete = False


def request(host, port, method, target, headers=(), body=b"", version="HTTP/1.1"):
    """One request on a fresh connection; returns the parsed final response."""
    with Connection(host, port) as conn:
        conn.send(build_request(method, target, headers, body, version))
        return conn.read_response(method)


def small_window(host, port, rcvbuf):
    """A plain socket to host:port whose receive buffer holds about `rcvbuf`
    bytes, so the server's writes soon wait for the reader."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect((host, port))
    return sock


def read_to_end(sock, slow_for=0.0, pace=0.02, each=None, bound=60.0):
    """Reads `sock` to its end, for `bound` seconds at most: 4 KiB every
    `pace` seconds (about 200 KB/s) for the first `slow_for` seconds (all
    the way with `math.inf`), then as fast as it comes; `each()` runs after
    every slow read. Returns the bytes and whether the end was a reset."""
    got = bytearray()
    start = time.monotonic()
    while time.monotonic() - start < bound:
        slow = time.monotonic() - start < slow_for
        try:
            chunk = sock.recv(4096 if slow else 1 << 20)
        except ConnectionResetError:
            return bytes(got), True
        if not chunk:
            return bytes(got), False
        got += chunk
        if slow:
            if each is not None:
                each()
            time.sleep(pace)
    raise TimeoutError(f"no end within {bound} s ({len(got)} bytes)")
