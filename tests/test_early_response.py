"""The app runs before the body arrives, and may answer without reading it.

Covers: the app's side effect happens while the client has sent only the head;
lazy `Expect: 100-continue` (no `100 Continue` unless the app reads, and then
`Connection: close` on a final response sent while the expectation is pending);
and an early 413 whose unread body contains a valid-looking request that must
never be parsed as one (no request smuggling through leftover body bytes).
"""

import json
import socket
import threading
import time

import pytest
import rawhttp
from rawhttp import new_token

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def test_app_runs_before_body_arrives(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", f"/effect?token={token}", [("Content-Length", "1000")])
        )
        assert server.wait_records(f"effect-{token}") == ["started"], (
            "the app must be called once the head is complete"
        )
        conn.send(b"z" * 1000)
        resp = conn.read_response()
    assert resp.status == 200
    assert json.loads(resp.body) == {"read": 1000}
    assert server.records(f"effect-{token}") == ["started", "read 1000"]


def test_response_head_streams_before_body_arrives(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/effect?token={token}&write=1", [("Content-Length", "1000")]
            )
        )
        _, _, status, _, _ = conn.read_head()
        assert status == 200
        assert conn.read_chunk() == b"started\n"
        conn.send(b"z" * 1000)
        assert conn.read_chunk() == b"read 1000\n"
        assert conn.read_chunk() == b""


def test_expect_continue_not_sent_when_app_rejects(server):
    head = rawhttp.build_request(
        "POST", "/reject", [("Content-Length", str(10 << 20)), ("Expect", "100-continue")]
    )
    with server.connect() as conn:
        conn.send(head)
        resp = conn.read_response()
        assert resp.status == 413
        assert b"100 Continue" not in resp.raw
        assert resp.interim == []
        assert resp.has_token("Connection", "close")
        rest_closed = conn.wait_closed()
    assert rest_closed, "server must close instead of waiting for a body held back"
    server.assert_serving()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_expect_continue_sent_on_first_read(server, framing):
    length = (
        [("Content-Length", "5000")]
        if framing == "content-length"
        else [("Transfer-Encoding", "chunked")]
    )
    head = rawhttp.build_request("POST", "/sha256", length + [("Expect", "100-continue")])
    with server.connect() as conn:
        conn.send(head)
        interim = conn.read_response(stop_at_interim=True)
        assert interim.status == 100
        assert interim.raw.startswith(b"HTTP/1.1 100 Continue\r\n")
        body = b"q" * 5000
        conn.send(body if framing == "content-length" else rawhttp.chunked([body[:10], body[10:]]))
        resp = conn.read_response()
    assert resp.status == 200
    assert json.loads(resp.body)["size"] == 5000
    assert resp.interim == [], "only one 100 Continue"


def test_expect_continue_held_back_when_the_response_begins_first(server):
    """QA probe (session 28): a response that began before the app's first read,
    while the client held its body back for 100 Continue, gives the body up
    (RFC 9110 §10.1.1) and closes the connection; the app's later read raised
    `ClientDisconnected` saying a response was sent, as if the client had left.
    It now says what happened, and that the app should read first."""
    token = new_token()
    head = rawhttp.build_request(
        "POST",
        f"/effect?token={token}&write=1",
        [("Content-Length", "1000"), ("Expect", "100-continue")],
    )
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(head)
        raw, _, status, _, headers = conn.read_head()
        assert status == 200 and not raw.startswith(b"HTTP/1.1 100"), raw
        assert conn.read_chunk() == b"started\n"
        assert conn.wait_closed(), "the connection stays open for a body held back"
    assert any(k.lower() == "connection" and v.lower() == "close" for k, v in headers), headers
    said = server.wait_log(
        r"request body not sent: the response began before the app's first read", since=mark
    )
    assert said, server.log(mark)
    server.assert_serving()


def test_expect_continue_keep_alive_after_read(server):
    """Once the body was read, the connection can carry the next request."""
    head = rawhttp.build_request(
        "POST", "/echo", [("Content-Length", "3"), ("Expect", "100-continue")]
    )
    with server.connect() as conn:
        conn.send(head)
        assert conn.read_response(stop_at_interim=True).status == 100
        conn.send(b"abc")
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, b"abc")
        conn.send(rawhttp.build_request("GET", "/ping"))
        assert conn.read_response().body == b"pong"


def smuggle_attempt(server, declared, padding=b"", target="/reject"):
    """POST to an app that does not read, with a body that starts with a full request."""
    conn = server.connect()
    body = SMUGGLED + padding
    conn.send(rawhttp.build_request("POST", target, [("Content-Length", str(declared))]) + body)
    return conn, conn.read_response()


def test_early_reject_never_parses_body_as_request(server):
    conn, resp = smuggle_attempt(server, 100 << 20, b"p" * 4000)
    with conn:
        assert resp.status == 413
        closed = conn.wait_closed()
        if not closed:  # kept alive: the next request must still be answered correctly
            conn.send(rawhttp.build_request("GET", "/ping"))
            assert conn.read_response().body == b"pong"
    assert closed, "a 100 MiB body that was not read cannot leave the connection usable"
    server.assert_serving()
    assert "/smuggled" not in server.records("paths")
    assert "/reject" in server.records("paths")


def test_small_unread_body_is_discarded_not_parsed(server):
    """A body within the discard bound may keep the connection, but is never a request."""
    declared = len(SMUGGLED) + 100
    conn, resp = smuggle_attempt(server, declared, b"p" * 100, target="/ping")
    with conn:
        assert (resp.status, resp.body) == (200, b"pong")  # /ping never reads the body
        conn.send(rawhttp.build_request("GET", "/ping"))
        try:
            follow = conn.read_response()
        except rawhttp.IncompleteHead:
            follow = None  # the server closed instead: also safe
        if follow is not None:
            assert follow.body == b"pong"
    assert "/smuggled" not in server.records("paths")


@pytest.mark.parametrize("declared", [200_000, 100 << 20])
def test_unread_body_with_more_bytes_following(server, declared):
    """The client keeps sending after the 413; leftover bytes never become requests."""
    padding = b"p" * 50_000 + SMUGGLED * 100
    conn, resp = smuggle_attempt(server, declared, padding)
    with conn:
        assert resp.status == 413
        if not conn.wait_closed():
            conn.send(rawhttp.build_request("GET", "/ping"))
            assert conn.read_response().body == b"pong"
    server.assert_serving()
    assert "/smuggled" not in server.records("paths")


@pytest.mark.parametrize("sent_before", [0, 1 << 20])
def test_early_response_closes_lingering(server, sent_before):
    """After an early 413 the client may still be sending its body: the server
    shuts down its side and reads what follows for a while before it closes, so
    the client's sends are taken and it reads the response and a clean end. A
    socket closed at once answers those bytes with a reset, which can beat the
    response to a proxy in front (nginx then answers 502)."""
    head = rawhttp.build_request("POST", "/reject", [("Content-Length", str(100 << 20))])
    with server.connect() as conn:
        conn.send(head + b"b" * sent_before)
        resp = conn.read_response()
        assert resp.status == 413
        _keep_sending_then_end(conn, b"b" * 65536)
    server.assert_serving()


def _keep_sending_then_end(conn, piece):
    """The client sends on after the response (a send raises ConnectionResetError
    once the server answers with a reset), then finds the server's clean end."""
    for _ in range(16):
        conn.send(piece)
    assert conn.sock.recv(1) == b"", "the server's side ends with a FIN, not a reset"


def test_early_response_is_sent_whole_before_the_close(server):
    """A large response to a request whose body is given up (the discard of
    what the app left stops after a second) still goes out whole before the
    connection closes, however slowly the client reads it."""
    size = 20 << 20
    head = rawhttp.build_request(
        "POST", f"/framing/big-one?size={size}", [("Content-Length", str(100 << 20))]
    )
    with server.connect() as conn:
        conn.send(head)
        time.sleep(1.5)  # the client takes nothing while the discard gives up
        resp = conn.read_response()
        assert resp.status == 200
        assert len(resp.body) == size and resp.complete
    server.assert_serving()


def test_a_body_read_to_its_length_leaves_nothing_to_linger_for(server):
    """The app reads exactly CONTENT_LENGTH bytes, never past them: the body is
    known to be over, so a closing connection is closed at once, not kept to
    discard a body that is not coming. Bytes the client sends after the close
    then meet a closed socket (a reset), not a server still reading."""
    req = rawhttp.build_request(
        "POST", "/read-exact", [("Content-Length", "5"), ("Connection", "close")], b"hello"
    )
    with server.connect() as conn:
        conn.send(req)
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, b"hello")
        assert conn.wait_closed()
        assert _reset_within(conn, 1.5), "the server kept the closed connection to read on"
    server.assert_serving()


def _reset_within(conn, seconds):
    """Sends a byte every 50 ms until the closed server's reset comes back: True if
    it does within `seconds` (less than the 2 s a lingering close would last)."""
    for _ in range(int(seconds / 0.05)):
        try:
            conn.sock.send(b"x")
            time.sleep(0.05)
            conn.sock.send(b"x")
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_a_client_still_sending_gets_the_whole_early_response(server):
    """The client sends its 100 MiB body without pause and reads the 8 MiB
    response slowly: the discard of its body ends at its byte bound while the
    kernel still holds response bytes for it, and the socket is not closed (a
    reset, which would drop them) before the client has taken them all."""
    size = 8 << 20
    head = rawhttp.build_request(
        "POST", f"/framing/big-one?size={size}", [("Content-Length", str(100 << 20))]
    )
    with server.connect() as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send(head)
        stop = threading.Event()

        def keep_sending():
            piece = b"b" * 65536
            deadline = time.monotonic() + 30
            try:
                for _ in range(1600):  # at most the declared 100 MiB
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    conn.sock.sendall(piece)
            except OSError:
                return  # the server closed at last, or the test did

        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        try:
            _, _, status, _, headers = conn.read_head()
            assert status == 200
            assert {k.lower(): v for k, v in headers}["content-length"] == str(size)
            got = 0
            for _ in range(size // 4096 + 1):  # about 3 MiB/s: slower than the discard
                piece = conn.read_exact(min(65536, size - got))
                got += len(piece)
                if not piece or got == size:
                    break
                time.sleep(0.02)
            assert got == size, f"{got} of {size} response bytes before the close"
        finally:
            stop.set()
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a sendall blocked on a full socket
            except OSError:
                pass
            sender.join(10)
    server.assert_serving()


def test_a_small_body_read_by_the_server_leaves_nothing_to_linger_for(server):
    """The app never reads the 1000-byte body, but the server took it off the
    socket (the discard after the response): nothing more is coming, so a
    closing connection is closed at once."""
    req = rawhttp.build_request(
        "POST", "/ping", [("Content-Length", "1000"), ("Connection", "close")], b"a" * 1000
    )
    with server.connect() as conn:
        conn.send(req)
        assert conn.read_response().body == b"pong"
        assert conn.wait_closed()
        assert _reset_within(conn, 1.5), "the server kept the closed connection to read on"
    server.assert_serving()


def test_a_broken_chunk_line_is_answered_then_closed_lingering(server):
    """A chunked body whose chunk line breaks the grammar gets its 400, and the
    client, which may still be sending, is not answered with a reset."""
    head = rawhttp.build_request(
        "POST", "/echo", [("Transfer-Encoding", "chunked"), ("Connection", "close")]
    )
    with server.connect() as conn:
        conn.send(head + b"5 \r\nhello\r\n")
        resp = conn.read_response()
        assert resp.status == 400
        _keep_sending_then_end(conn, b"5\r\nhello\r\n" * 1000)
    server.assert_serving()
