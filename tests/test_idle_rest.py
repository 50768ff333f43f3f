"""Keep-alive connections at rest between requests, in both modes.

A connection comes to rest once it has idled between two requests (at once
after its first response, else after half a second): Siesta lets go of
hyper's connection and its buffers and keeps only the socket, then builds a
new one when the client's next bytes come. Nothing of that may show: the
next requests are served on the same connection, whatever the last one left
(a body read, a body the app ignored, part of a pipelined head), and
`--keep-alive` still closes a connection that stays silent. No test asserts
a duration; the pauses only make sure the rest happened.
"""

import json
import signal
import time

import pytest
import rawhttp
from siesta_process import wait_until

# Longer than the half second after which a connection rests.
PAUSE = 0.8

# What the worker logs (at debug) when it took hyper to be idle and was
# wrong: the connection then closes after its next request.
MISTAKEN = "taken to be at rest was not"

# What it logs (at debug) each time a connection comes to rest.
RESTED = "A keep-alive connection came to rest"


def path_of(resp):
    return json.loads(resp.body)["environ"]["PATH_INFO"]


@pytest.fixture
def server(start_server, mode):
    """The router app, with the debug line that says a rest was mistaken."""
    srv = start_server("router_app:app", "--log-level", "debug", mode=mode)
    yield srv
    assert MISTAKEN not in srv.log(), "hyper was taken to be idle when it was not"


def test_a_resting_connection_serves_its_next_requests(server):
    with server.connect() as conn:
        for round in range(2):
            conn.send(rawhttp.build_request("GET", f"/env/{round}"))
            assert path_of(conn.read_response()) == f"/env/{round}"
            time.sleep(PAUSE)
            conn.send(rawhttp.build_request("POST", "/echo", body=b"read to its end"))
            assert conn.read_response().body == b"read to its end"
            time.sleep(PAUSE)
            # A body the app ignores is drained after the response.
            conn.send(rawhttp.build_request("POST", "/ping", body=b"x" * 1000))
            assert conn.read_response().body == b"pong"
            time.sleep(PAUSE)
            conn.send(rawhttp.build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]))
            conn.send(rawhttp.chunked([b"chunked ", b"after a rest"]))
            assert conn.read_response().body == b"chunked after a rest"
            time.sleep(PAUSE)
        conn.send(rawhttp.build_request("GET", "/env/last"))
        assert path_of(conn.read_response()) == "/env/last"


def test_a_connection_rests_once_its_body_ends_after_the_response(server):
    """The app reads exactly CONTENT_LENGTH, so the body's end is seen only
    by the drain after the response: that end, not a timer, lets the
    connection rest (at once, after its first response)."""
    rests = server.log().count(RESTED)
    with server.connect() as conn:
        conn.send(rawhttp.build_request("POST", "/read-exact", body=b"exactly this"))
        assert conn.read_response().body == b"exactly this"
        assert wait_until(lambda: server.log().count(RESTED) > rests), "never came to rest"
        conn.send(rawhttp.build_request("GET", "/env/next"))
        assert path_of(conn.read_response()) == "/env/next"


def test_a_connection_rests_after_a_streamed_response_larger_than_hyper_buffers(server):
    """A streamed response with a Content-Length larger than hyper buffers
    at once (64 KiB) ends after hyper's last read, which found the request
    still busy: the connection must still come to rest, and idle under
    --keep-alive (it waited for --header-timeout instead, holding hyper's
    buffers)."""
    rests = server.log().count(RESTED)
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/distinct?count=4&size=32768"))
        assert len(conn.read_response().body) == 4 * 32768
        assert wait_until(lambda: server.log().count(RESTED) > rests), "never came to rest"
        conn.send(rawhttp.build_request("GET", "/env/next"))
        assert path_of(conn.read_response()) == "/env/next"


def test_a_pipelined_head_cut_in_two_survives_the_rest(server):
    """The first half of the next head came with the first request: hyper
    had read it when the connection went to rest, and gets it back."""
    second = rawhttp.build_request("POST", "/echo", [("X-Pad", "p" * 300)], body=b"second body")
    cut = len(second) // 2
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/env/first") + second[:cut])
        assert path_of(conn.read_response()) == "/env/first"
        time.sleep(PAUSE)
        conn.send(second[cut:])
        assert conn.read_response().body == b"second body"
        time.sleep(PAUSE)
        conn.send(rawhttp.build_request("GET", "/env/third"))
        assert path_of(conn.read_response()) == "/env/third"


def test_a_resting_connection_still_closes_at_keep_alive(start_server, mode):
    srv = start_server("router_app:app", "--keep-alive", "3", mode=mode)
    with srv.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/ping"))
        assert conn.read_response().body == b"pong"
        # At rest, well before --keep-alive: still open.
        conn.sock.settimeout(PAUSE * 2)
        try:
            early = conn.sock.recv(1)
        except TimeoutError:
            early = None
        assert early is None, "closed long before --keep-alive"
        conn.send(rawhttp.build_request("GET", "/ping"))
        assert conn.read_response().body == b"pong"
        assert conn.wait_closed(30), "a silent connection outlived --keep-alive"
    srv.assert_serving()


def test_body_bytes_after_the_response_leave_the_keep_alive_bound(start_server, mode):
    """A body the app ignored, sent after the response: hyper drains it, and
    the connection idles under --keep-alive, not under --header-timeout
    (off here, so it would never close)."""
    srv = start_server("router_app:app", "--keep-alive", "2", "--header-timeout", "0", mode=mode)
    with srv.connect() as conn:
        conn.send(rawhttp.build_request("POST", "/ping", [("Content-Length", "1000")]))
        assert conn.read_response().body == b"pong"
        conn.send(b"x" * 1000)
        assert conn.wait_closed(30), "body bytes made an idle connection immortal"
    srv.assert_serving()


def test_many_resting_connections_then_a_graceful_stop(start_server, mode):
    srv = start_server("router_app:app", "--log-level", "debug", mode=mode)
    conns = [srv.connect() for _ in range(50)]
    try:
        for i, conn in enumerate(conns):
            conn.send(rawhttp.build_request("GET", f"/env/{i}"))
        for i, conn in enumerate(conns):
            assert path_of(conn.read_response()) == f"/env/{i}"
        time.sleep(PAUSE)
        for i, conn in enumerate(conns[:10]):
            conn.send(rawhttp.build_request("GET", f"/env/again{i}"))
            assert path_of(conn.read_response()) == f"/env/again{i}"
        srv.proc.send_signal(signal.SIGTERM)
        for conn in conns:
            assert conn.wait_closed(30), "a resting connection kept a stopping worker open"
        assert srv.proc.wait(30) == 0
        log = srv.log()
        assert MISTAKEN not in log
        assert log.count(RESTED) >= 50, "the connections did not come to rest"
    finally:
        for conn in conns:
            conn.close()
