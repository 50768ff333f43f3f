"""App exceptions, aborted responses and the iterable's close() call.

An exception before the headers are sent gives a 500 and a logged traceback;
after they are sent the connection is aborted (an incomplete chunked body, never
a clean terminator).  close() on the iterable is called exactly once: on normal
completion, when the app raised, and when the client went away mid-stream.
The server keeps serving after each.
"""

import math
import os
import signal

import pytest
import rawhttp
from rawhttp import new_token
from siesta_process import running


@pytest.mark.parametrize("case", ["before", "first-next"])
def test_exception_before_headers_gives_500_and_traceback(server, case):
    token = new_token()
    mark = server.log_mark()
    resp = server.get(f"/raise/{case}?token={token}")
    assert resp.status == 500
    assert f"boom-{token}".encode() not in resp.body, "no traceback details to the client"
    assert server.wait_log(f"boom-{token}", since=mark) is not None, server.log(mark)
    assert "Traceback" in server.log(mark)
    server.assert_serving()


def read_aborted(conn):
    """Read a response that the server must abort: None if nothing at all arrived."""
    try:
        resp = conn.read_response()
    except rawhttp.IncompleteHead:
        resp = None
    assert conn.eof, "the connection must be closed"
    if resp is not None:
        assert not resp.complete, "an aborted response must not look complete"
        assert b"0\r\n\r\n" not in resp.raw.split(b"\r\n\r\n", 1)[1]
    return resp


@pytest.mark.parametrize("case", ["gated-chunk", "gated-write"])
def test_exception_after_headers_aborts_chunked_response(server, case):
    """The client has read the head and a chunk when the app raises: then an abort."""
    token, go = new_token(), "go-" + new_token()
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/raise/{case}?token={token}&go={go}"))
        _, _, status, _, headers = conn.read_head()
        assert status == 200
        assert ("transfer-encoding", "chunked") in [(k.lower(), v.lower()) for k, v in headers]
        assert conn.read_chunk() == b"partial"
        (server.record_dir / go).write_text("go\n")
        assert conn.read_chunk() is None, "no clean terminator after an app error"
        assert conn.eof
    assert server.wait_log(f"boom-{token}", since=mark) is not None
    server.assert_serving()


@pytest.mark.parametrize("case", ["after-chunk", "after-write", "cl-after-chunk"])
def test_exception_after_headers_never_looks_complete(server, case):
    token = new_token()
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/raise/{case}?token={token}"))
        resp = read_aborted(conn)
    if resp is not None:
        assert resp.status == 200
        assert resp.body in (b"", b"partial", b"0123456789")
    assert server.wait_log(f"boom-{token}", since=mark) is not None
    server.assert_serving()


def test_exception_after_headers_resets_a_close_delimited_response(server):
    """An HTTP/1.0 body of unknown length ends at the close: a FIN after an
    app error passed the cut response for a complete one (to nginx too,
    whose upstream default is HTTP/1.0). What was sent arrives, then a reset."""
    token = new_token()
    with server.connect() as conn:
        conn.send(f"GET /raise/after-chunk?token={token} HTTP/1.0\r\n\r\n".encode())
        got, reset = rawhttp.read_to_end(conn.sock)
    assert got.startswith(b"HTTP/1.0 200") and got.endswith(b"\r\n\r\npartial"), got
    assert reset, "the cut response ended like a complete one"
    server.assert_serving()


def test_a_failed_response_ends_while_a_forked_child_holds_the_socket(server):
    """A child process the app forked keeps a copy of the connection's
    socket, so closing it sent nothing: the client waited for the child to
    end. Now the reset goes out at once, while the child still runs."""
    token, name = new_token(), "fork-" + new_token()
    with server.connect() as conn:
        conn.send(
            f"GET /raise/fork-after-chunk?token={token}&name={name} HTTP/1.0\r\n\r\n".encode()
        )
        got, reset = rawhttp.read_to_end(conn.sock)
    pid = int(server.wait_records(name)[0])
    try:
        child_ran = running(pid)  # the end did not wait for the child
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert got.endswith(b"partial") and reset, (got, reset)
    assert child_ran, "the connection ended only when the child did"
    server.assert_serving()


def test_a_failed_response_cut_off_by_a_stop_still_ends_in_a_reset(start_server, mode):
    """A failed response waits, before its reset, for a slow client to take
    what the kernel holds; a stop past --graceful-timeout ended that wait
    with a plain close, and the client took the cut response for complete.
    Reading slowly, an HTTP/1.0 client still sees the reset."""
    srv = start_server("router_app:app", "--graceful-timeout", "1", mode=mode)
    token = new_token()
    stopping = []

    def stop_once_failed():
        if not stopping and f"boom-{token}" in srv.log():
            srv.proc.send_signal(signal.SIGTERM)
            stopping.append(True)

    sock = rawhttp.small_window(srv.host, srv.port, 16384)
    try:
        sock.sendall(f"GET /raise/big-after-chunks?token={token} HTTP/1.0\r\n\r\n".encode())
        # About 200 KB/s: slow, but taking.
        got, reset = rawhttp.read_to_end(sock, slow_for=math.inf, each=stop_once_failed)
    finally:
        sock.close()
    assert stopping, "the app never failed"
    assert reset, f"a plain end after {len(got)} bytes: the cut passed for complete"


def test_a_stop_resets_a_failed_response_whose_socket_a_forked_child_holds(start_server, mode):
    """A failed response waiting for a slow client before its reset was
    dropped when a stop's time was up, and with a process the app forked
    holding a copy of the socket, that close sent nothing: the client
    waited for the child. The wait now ends with the stop's time, in a
    reset, while the child still runs."""
    srv = start_server("router_app:app", "--graceful-timeout", "1", mode=mode)
    token, name = new_token(), "fork-" + new_token()
    pids = []

    def stop_once_failed():
        if not pids and f"boom-{token}" in srv.log():
            pids.extend(srv.records(name))
            srv.proc.send_signal(signal.SIGTERM)

    sock = rawhttp.small_window(srv.host, srv.port, 16384)
    try:
        sock.sendall(
            f"GET /raise/fork-after-big?token={token}&name={name} HTTP/1.0\r\n\r\n".encode()
        )
        got, reset = rawhttp.read_to_end(sock, slow_for=math.inf, each=stop_once_failed)
        child_ran = bool(pids) and running(int(pids[0]))
    finally:
        sock.close()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert pids, "the app never failed"
    assert reset, f"a plain end after {len(got)} bytes"
    assert child_ran, "the connection ended only when the child did"


@pytest.mark.parametrize("case", ["after-write", "after-chunk", "cl-after-chunk"])
def test_output_before_exception_reaches_client(server, case):
    """What write() took or the app yielded is sent before the abort (PEP 3333 write()).

    Repeated 20 times so that a race that loses the data fails (almost) every run.
    """
    expected = b"0123456789" if case == "cl-after-chunk" else b"partial"
    outcomes = []
    for _ in range(20):
        with server.connect() as conn:
            conn.send(rawhttp.build_request("GET", f"/raise/{case}?token={new_token()}"))
            resp = read_aborted(conn)
        outcomes.append(None if resp is None else resp.body)
    assert outcomes == [expected] * 20


def test_exception_on_http10_after_headers(server):
    """A close-delimited body cannot show the abort; the server must still close."""
    token = new_token()
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(f"GET /raise/after-chunk?token={token} HTTP/1.0\r\n\r\n".encode())
        try:
            resp = conn.read_response()
        except rawhttp.IncompleteHead:
            resp = None
        assert conn.eof
    if resp is not None:
        assert resp.status == 200 and resp.body in (b"", b"partial")
    assert server.wait_log(f"boom-{token}", since=mark) is not None
    server.assert_serving()


def assert_closed_once(server, token):
    assert server.wait_records(f"close-{token}") == ["close"]
    server.assert_serving()  # a later request completes: any second close() was already due
    assert server.records(f"close-{token}") == ["close"]


def test_close_called_once_on_normal_completion(server):
    token = new_token()
    resp = server.get(f"/close/normal?token={token}")
    assert resp.status == 200 and resp.complete
    assert resp.body == b"abc"
    assert_closed_once(server, token)


def test_close_called_once_when_iteration_raises(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/close/error?token={token}"))
        resp = read_aborted(conn)
    assert resp is None or resp.body in (b"", b"a")
    assert_closed_once(server, token)


def test_close_called_once_when_first_iteration_raises(server):
    token = new_token()
    resp = server.get(f"/close/error-first?token={token}")
    assert resp.status == 500
    assert_closed_once(server, token)


def test_close_called_once_on_http10_response(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(f"GET /close/normal?token={token} HTTP/1.0\r\n\r\n".encode())
        resp = conn.read_response()
    assert resp.body == b"abc"
    assert_closed_once(server, token)


def test_close_called_once_on_head_request(server):
    token = new_token()
    resp = server.request("HEAD", f"/close/normal?token={token}")
    assert resp.status == 200 and resp.body == b""
    assert_closed_once(server, token)


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_a_bodiless_stream_stops_once_its_client_has_gone(server, method):
    """Review (session 26): the iterable of a response with no body (HEAD, a 204)
    ran to its end after the client left, as its chunks are dropped unsent: a
    HEAD of an endless stream would run on for good. It is stopped once the
    connection is closed, and close() called."""
    token = new_token()
    case = "stream" if method == "HEAD" else "204-stream"
    with server.connect() as conn:
        conn.send(rawhttp.build_request(method, f"/close/{case}?token={token}"))
        _, _, status, _, _ = conn.read_head()
        assert status in (200, 204)
    # Either stream takes about 20 s to run out.
    closed = server.wait_records(f"close-{token}", timeout=10)
    assert closed == ["close"], server.log()
    server.assert_serving()


def test_close_called_once_when_client_disconnects_mid_stream(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/close/stream?token={token}"))
        _, _, status, _, _ = conn.read_head()
        assert status == 200
        assert conn.read_chunk() == b"x" * 16384
    # The client is gone; the server notices on a later write and stops iterating.
    assert server.wait_records(f"close-{token}", timeout=30) == ["close"], (
        "close() must be called when the client disconnects mid-stream"
    )
    server.assert_serving()
    assert server.records(f"close-{token}") == ["close"]
