"""--header-timeout, --keep-alive and half-closed clients, in both modes.

A connection whose first head is not complete within --header-timeout (from
the accept) gets 408 and is closed when it began one, even a byte at a time
(slowloris), and is closed quietly when it sent nothing; a keep-alive
connection idle past --keep-alive is closed quietly; other clients are served
meanwhile.  A client that sends its request
and then shuts down its writing side still gets the whole response.  No test
asserts a duration: only that the close happens within a generous bound.
"""

import socket
import time

import pytest


def closed_with(conn, timeout=10):
    """What came before the close: b"" (quiet close) or the bytes of a 408."""
    conn.sock.settimeout(timeout)
    data = b""
    while True:
        try:
            piece = conn.sock.recv(4096)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece


def assert_408_or_quiet(data):
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


@pytest.fixture
def short(start_server, mode):
    return start_server("router_app:app", "--header-timeout", "1", "--keep-alive", "30", mode=mode)


def test_silent_connection_is_closed_quietly(short):
    """Nothing sent: no 408 (a client that opened the connection ahead of
    need and sends its request just then would take it for the answer), and
    nothing logged, as nginx and Apache do."""
    mark = short.log_mark()
    with short.connect() as idle:
        short.assert_serving()  # a bystander is served while it waits
        data = closed_with(idle)
    assert data == b"", data
    short.assert_serving()
    assert "408" not in short.log(since=mark)


def test_head_begun_gets_408_and_close(short):
    with short.connect() as slow:
        slow.send(b"GET /ping HTTP/1.1\r\n")
        data = closed_with(slow)
    assert data.startswith(b"HTTP/1.1 408 "), data
    short.assert_serving()


def test_slowloris_is_closed(short):
    with short.connect() as slow:
        head = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
        data = None
        deadline = time.monotonic() + 15
        for byte in head:
            try:
                slow.sock.send(bytes([byte]))
            except OSError:
                break
            slow.sock.settimeout(0.2)
            try:
                data = slow.sock.recv(4096)
                break
            except TimeoutError:
                pass
            assert time.monotonic() < deadline, "slowloris never closed"
        assert data is not None, "the head timeout never fired"
        assert_408_or_quiet(data)
    short.assert_serving()


def test_keep_alive_idle_connection_is_closed_quietly(start_server, mode):
    srv = start_server("router_app:app", "--keep-alive", "1", "--header-timeout", "30", mode=mode)
    with srv.connect() as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        assert closed_with(conn) == b""


def test_a_head_begun_with_the_last_request_is_still_timed(start_server, mode):
    """The next head's first byte came pipelined with the last request, while
    it was busy; the rest, trickled, is cut at --header-timeout (2 s), long
    before --keep-alive (60 s) would end the connection."""
    srv = start_server("router_app:app", "--header-timeout", "2", "--keep-alive", "60", mode=mode)
    with srv.connect() as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nG")
        assert conn.read_response().body == b"pong"
        rest = b"ET /ping HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
        deadline = time.monotonic() + 30
        closed = False
        for byte in rest:
            try:
                conn.sock.send(bytes([byte]))
                conn.sock.settimeout(0.5)
                closed = conn.sock.recv(4096) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
            if closed or time.monotonic() > deadline:
                break
        assert closed, "a trickled head outlived --header-timeout"
    srv.assert_serving()


def test_a_head_begun_with_the_last_request_gets_the_header_timeout(start_server, mode):
    """QA (session 30): a next head that came in part with the last request (pipelined,
    while it was busy) was timed as silence, by --keep-alive (1 s here), not as a head
    by --header-timeout (30 s here): a slow client was cut mid-head."""
    srv = start_server("router_app:app", "--keep-alive", "1", "--header-timeout", "30", mode=mode)
    with srv.connect() as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n")
        assert conn.read_response().body == b"pong"
        time.sleep(2.5)  # past --keep-alive, well within --header-timeout
        conn.send(b"\r\n")
        assert conn.read_response().body == b"pong", "the begun head was cut at --keep-alive"
    srv.assert_serving()


def test_two_hundred_slowloris_closed_while_a_bystander_is_served(short):
    conns = []
    try:
        for _ in range(200):
            conn = short.connect()
            conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            conns.append(conn)
        short.assert_serving()
        for conn in conns:
            assert_408_or_quiet(closed_with(conn, timeout=20))
    finally:
        for conn in conns:
            conn.close()
    short.assert_serving()


@pytest.mark.parametrize(
    "raw,body",
    [
        (b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", b"pong"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"GET /ping HTTP/1.0\r\n\r\n", b"pong"),
    ],
)
def test_half_closed_client_gets_its_response(start_server, mode, raw, body):
    srv = start_server("router_app:app", mode=mode)
    with srv.connect() as conn:
        conn.send(raw)
        conn.sock.shutdown(socket.SHUT_WR)
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, body)
        assert conn.wait_closed()
