"""Persistent connections and pipelining on HTTP/1.1 and HTTP/1.0.

Pipelined requests sent in one write are answered in order; HTTP/1.1 keeps the
connection unless asked to close; HTTP/1.0 closes unless `Connection:
keep-alive` was sent (and then says so in the response).
"""

import json
import socket
import struct
import threading
import time

import pytest

import rawhttp


def path_of(resp):
    return json.loads(resp.body)["environ"]["PATH_INFO"]


def test_pipelined_requests_answered_in_order(server):
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request("GET", "/env/first")
            + rawhttp.build_request("POST", "/echo", body=b"middle body")
            + rawhttp.build_request("GET", "/env/third")
        )
        first, second, third = (conn.read_response() for _ in range(3))
    assert path_of(first) == "/env/first"
    assert second.body == b"middle body"
    assert path_of(third) == "/env/third"


def test_pipelined_chunked_bodies(server):
    body = rawhttp.chunked([b"one", b"two"])
    head = rawhttp.build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
    with server.connect() as conn:
        conn.send(head + body + head + rawhttp.chunked([b"three"]))
        assert conn.read_response().body == b"onetwo"
        assert conn.read_response().body == b"three"


def test_http11_keeps_connection_by_default(server):
    with server.connect() as conn:
        for i in range(5):
            conn.send(rawhttp.build_request("GET", f"/env/{i}"))
            resp = conn.read_response()
            assert resp.status == 200 and path_of(resp) == f"/env/{i}"
            assert not resp.has_token("Connection", "close")


def test_http11_connection_close(server):
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/ping", [("Connection", "close")]))
        resp = conn.read_response()
        assert resp.body == b"pong"
        assert resp.has_token("Connection", "close")
        assert conn.wait_closed()


def test_http10_closes_by_default(server):
    with server.connect() as conn:
        conn.send(b"GET /ping HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert resp.body == b"pong"
        assert not resp.has_token("Connection", "keep-alive")
        assert conn.wait_closed()


def test_http10_keep_alive(server):
    request = b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with server.connect() as conn:
        conn.send(request)
        first = conn.read_response()
        assert first.body == b"pong"
        assert first.has_token("Connection", "keep-alive")
        conn.send(request)
        second = conn.read_response()
        assert second.body == b"pong"
        conn.send(b"GET /ping HTTP/1.0\r\n\r\n")
        assert conn.read_response().body == b"pong"
        assert conn.wait_closed()


def test_http10_keep_alive_with_streamed_body_closes(server):
    """Without a length the body must be close-delimited, even if keep-alive was asked."""
    with server.connect() as conn:
        conn.send(b"GET /framing/generator HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = conn.read_response()
        assert resp.body == b"alpha beta gamma"
        assert resp.header("Transfer-Encoding") is None
        assert conn.eof
        # The head says so: a client that asked to keep the connection is not
        # told it may (hyper's answer was `keep-alive`, then a close).
        assert resp.has_token("Connection", "close"), resp.headers
        assert not resp.has_token("Connection", "keep-alive"), resp.headers


def test_unread_small_body_then_next_request(server):
    """An ignored body within the discard bound (64 KiB) keeps the connection usable."""
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", "/ping", body=b"x" * 1000)
            + rawhttp.build_request("GET", "/env/after")
        )
        assert conn.read_response().body == b"pong"
        assert path_of(conn.read_response()) == "/env/after"


def test_unread_large_body_closes_connection(server):
    """1 MiB the app never read is past the discard bound: the server closes."""
    body = b"u" * (1 << 20)
    with server.connect() as conn:
        conn.send(rawhttp.build_request("POST", "/ping", [("Content-Length", str(len(body)))]))

        def push():
            try:
                conn.sock.sendall(body)
            except OSError:
                pass  # the server closed while we were still sending: expected

        sender = threading.Thread(target=push, daemon=True)
        sender.start()
        resp = conn.read_response()
        assert resp.body == b"pong"
        # Told in the head, not found out by the client's next request.
        assert resp.has_token("Connection", "close"), resp.headers
        assert conn.wait_closed(), "the server must not drain an unbounded leftover body"
        sender.join(10)
    assert not sender.is_alive()
    server.assert_serving()


@pytest.mark.parametrize("route", ["/ping", "/raise", "/framing/generator"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_left_past_the_discard_says_close(server, route, framing):
    """The app answers (or fails, or streams) without reading a body larger
    than what is discarded after the response, or a chunked one of unknown
    size: the head says `Connection: close`, so that a client (a requests
    Session) does not send its next request on a connection about to close."""
    body = b"u" * 200_000
    if framing == "length":
        head = rawhttp.build_request("POST", route, [("Content-Length", str(len(body)))])
        data = head + body
    else:
        head = rawhttp.build_request("POST", route, [("Transfer-Encoding", "chunked")])
        data = head + rawhttp.chunk(body) + b"0\r\n\r\n"
    with server.connect() as conn:
        conn.send(data)
        resp = conn.read_response()
        assert resp.has_token("Connection", "close"), (resp.status, resp.headers)
        assert conn.wait_closed()
    server.assert_serving()


CHUNKED_LEFT = {
    "unread": ("/ping", rawhttp.chunk(b"abc") + b"0\r\n\r\n"),
    "empty": ("/ping", b"0\r\n\r\n"),
    # The app reads its 3 data bytes, never the last chunk line.
    "data-read": ("/read-some?n=3", rawhttp.chunk(b"abc") + b"0\r\n\r\n"),
    "trailers": ("/ping", rawhttp.chunk(b"abc") + b"0\r\nX-Sum: 1\r\n\r\n"),
}


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "after"])
@pytest.mark.parametrize("case", sorted(CHUNKED_LEFT))
def test_a_chunked_body_sent_whole_keeps_the_connection(server, case, pipelined):
    """A chunked body the app left (unread, or but for its last chunk line)
    whose end came with it: the discard takes it and the connection carries
    the next request, told nothing of a close."""
    route, chunks = CHUNKED_LEFT[case]
    first = rawhttp.build_request("POST", route, [("Transfer-Encoding", "chunked")]) + chunks
    after = rawhttp.build_request("GET", f"/env/after-{case}")
    with server.connect() as conn:
        conn.send(first + after if pipelined else first)
        resp = conn.read_response()
        assert resp.status == 200, resp
        assert not resp.has_token("Connection", "close"), resp.headers
        if not pipelined:
            conn.send(after)
        assert path_of(conn.read_response()) == f"/env/after-{case}"
    server.assert_serving()


def test_a_chunked_body_still_coming_says_close(server):
    """The app answers while the client has sent only the head and a first
    chunk: how much more comes is unknown, so the head says `Connection:
    close`, and the bytes the client sends after it are never a request."""
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", "/ping", [("Transfer-Encoding", "chunked")])
            + rawhttp.chunk(b"abc")
        )
        resp = conn.read_response()
        assert resp.body == b"pong"
        assert resp.has_token("Connection", "close"), resp.headers
        try:
            conn.send(b"0\r\n\r\n" + rawhttp.build_request("GET", "/env/chunked-smuggled"))
        except OSError:
            pass  # closed already
        assert conn.wait_closed()
    assert "/env/chunked-smuggled" not in server.records("paths")
    server.assert_serving()


def test_a_body_within_the_discard_keeps_the_connection(server):
    with server.connect() as conn:
        conn.send(rawhttp.build_request("POST", "/ping", body=b"x" * 60_000))
        resp = conn.read_response()
        assert not resp.has_token("Connection", "close"), resp.headers
        conn.send(rawhttp.build_request("GET", "/ping"))
        assert conn.read_response().body == b"pong"


def test_requests_of_clients_that_left_while_queued_are_not_run(start_server, mode):
    """QA probe (session 23): a client that sent its request and reset its
    connection while every app slot was busy still had the app run for it, and
    such requests held the queue in front of live clients (hyper reads nothing
    while a request is under way, so it never saw them go). A job that waited now
    gets a look at its socket first: the app never runs for those, and the live
    request after them is served as soon as the slot frees. A client that only
    shut its writing side (a FIN, as a plain close also sends) is still answered
    (DESIGN.md), so a queued one gets its response."""
    slots = ("--threads", "1", "--max-threads", "1") if mode == "thread" else ()
    if mode == "gevent":
        slots = ("--worker-connections", "1")
    srv = start_server("router_app:app", *slots, mode=mode)
    go = "go-" + rawhttp.new_token()
    with srv.connect() as hold:
        hold.send(rawhttp.build_request("GET", f"/gated?go={go}"))
        assert hold.read_head()[2] == 200  # the one slot is taken
        left = [rawhttp.new_token() for _ in range(5)]
        for token in left:
            conn = srv.connect()
            conn.send(rawhttp.build_request("POST", f"/effect?token={token}", body=b"x"))
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # a reset
        with srv.connect() as half, srv.connect() as live:
            half.send(rawhttp.build_request("GET", "/env/half-closed"))
            half.sock.shutdown(socket.SHUT_WR)
            live.send(rawhttp.build_request("GET", "/ping"))
            time.sleep(0.05)  # queued a while: a look at the socket is due
            (srv.record_dir / go).write_text("go\n")
            assert hold.read_chunk() == b"first;"
            assert path_of(half.read_response()) == "/env/half-closed"
            assert live.read_response().body == b"pong"
    assert all(srv.records(f"effect-{t}") == [] for t in left), [
        srv.records(f"effect-{t}") for t in left
    ]
    srv.assert_serving()


def test_keep_alive_zero_says_close(start_server, mode):
    """QA probe (session 24): with --keep-alive 0 every response closed its
    connection without saying so, and a client reusing it (http.client, a
    proxy's pool) failed every other request with a dropped connection;
    gunicorn says Connection: close."""
    srv = start_server("router_app:app", "--keep-alive", "0", mode=mode)
    for _ in range(2):
        with srv.connect() as conn:
            conn.send(rawhttp.build_request("GET", "/ping"))
            resp = conn.read_response()
            assert (resp.status, resp.body) == (200, b"pong"), resp
            assert resp.has_token("Connection", "close"), resp.headers
            assert conn.read_to_eof() == b""
