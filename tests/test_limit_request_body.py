"""--limit-request-body: 413 before the app for a declared length, RequestTooLarge mid-stream.

A server of tests/apps/limit_app.py runs per mode with a limit of LIMIT bytes.
A Content-Length at or under the limit reaches the app; one byte over is
answered 413 with `Connection: close` before the app runs: no `100 Continue`
for `Expect: 100-continue` (the client never sends the body), and body bytes
that look like a request are never parsed as one.  A chunked body is counted
as it arrives: at the limit it passes, one byte over makes `wsgi.input` raise
`siesta.RequestTooLarge`, which the app may catch, or let propagate for a 413.
Limit 0 (the default) is unlimited.  The server keeps serving after each case.
"""

import json
import time

import pytest
import rawhttp
from rawhttp import new_token
from siesta_process import MODES, SiestaServer

LIMIT = 1000
APP = "limit_app:app"


@pytest.fixture(scope="module", params=MODES)
def limited(request, tmp_path_factory):
    """limit_app with --limit-request-body LIMIT and the access log on stdout."""
    srv = SiestaServer(
        APP,
        ["--limit-request-body", str(LIMIT), "--access-logfile", "-"],
        request.param,
        tmp_path_factory.mktemp(f"limit-{request.param}"),
    )
    yield srv
    srv.stop()


def out_mark(srv):
    with srv.stdout.cond:
        return len(srv.stdout.lines)


def access_line(srv, mark, needle, status):
    match = srv.stdout.wait_for(rf"{needle}.* {status} ", 10.0, since=mark)
    assert match is not None, f"no access line with {needle} {status}:\n{srv.stdout.text(mark)}"
    return match.string


def chunked_request(target, size, pieces=4):
    """A chunked POST of `size` bytes split into about `pieces` chunks."""
    body = b"c" * size
    step = -(-size // pieces)
    parts = [body[i : i + step] for i in range(0, size, step)]
    return rawhttp.build_request(
        "POST", target, [("Transfer-Encoding", "chunked")], rawhttp.chunked(parts)
    )


def exchange(srv, raw):
    """Sends `raw`, returns (final response, whether the server then closed)."""
    with srv.connect() as conn:
        conn.send(raw)
        resp = conn.read_response()
        closed = conn.wait_closed()
    return resp, closed


def answer(srv, raw):
    """Sends `raw` and returns the final response (the connection may stay open:
    a body hyper could read to its end leaves the framing intact)."""
    with srv.connect() as conn:
        conn.send(raw)
        return conn.read_response()


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
def test_declared_length_within_the_limit_reaches_the_app(limited, size):
    path = f"/read/{new_token()}"
    with limited.connect() as conn:
        conn.send(rawhttp.build_request("POST", path, body=b"b" * size))
        resp = conn.read_response()
        assert resp.status == 200, resp
        assert json.loads(resp.body) == {"size": size}
        conn.send(rawhttp.build_request("GET", "/ping"))
        assert conn.read_response().body == b"pong", "the connection stays usable"
    assert path in limited.records("paths")


def test_declared_length_over_the_limit_is_refused_before_the_app(limited):
    path = f"/read/{new_token()}"
    mark = out_mark(limited)
    err = limited.log_mark()
    resp, closed = exchange(limited, rawhttp.build_request("POST", path, body=b"b" * (LIMIT + 1)))
    assert resp.status == 413, resp
    assert resp.has_token("Connection", "close")
    assert closed
    access_line(limited, mark, path, 413)
    assert limited.wait_log(rf"413 POST {path} from .*\[limit_request_body\]", since=err)
    limited.assert_serving()
    assert path not in limited.records("paths"), "the app was called"


def test_expect_continue_over_the_limit_gets_no_100(limited):
    """The client waits for 100 Continue and never has to send its body."""
    path = f"/read/{new_token()}"
    head = rawhttp.build_request(
        "POST", path, [("Content-Length", str(LIMIT + 1)), ("Expect", "100-continue")]
    )
    resp, closed = exchange(limited, head)
    assert resp.status == 413, resp
    assert resp.interim == []
    assert b"100 Continue" not in resp.raw
    assert resp.has_token("Connection", "close")
    assert closed, "the server must close instead of waiting for the body held back"
    limited.assert_serving()
    assert path not in limited.records("paths"), "the app was called"


def test_refused_body_is_never_parsed_as_a_request(limited):
    """The unread body starts with a complete request: it must never run."""
    smuggled = f"/ping/smuggled-{new_token()}"
    body = f"GET {smuggled} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    body += b"p" * (LIMIT + 1 - len(body))
    with limited.connect() as conn:
        conn.send(rawhttp.build_request("POST", f"/read/{new_token()}", body=body))
        resp = conn.read_response()
        assert resp.status == 413, resp
        assert conn.read_to_eof() == b"", "nothing may follow the 413"
    limited.assert_serving()
    assert smuggled not in limited.records("paths"), "the smuggled request ran"


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
def test_chunked_body_within_the_limit_passes(limited, size):
    resp = answer(limited, chunked_request(f"/read/{new_token()}", size))
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {"size": size}


def test_chunked_body_over_the_limit_raises_in_the_app(limited):
    tok = new_token()
    resp = answer(limited, chunked_request(f"/catch/x?token={tok}", LIMIT + 1))
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {"caught": True}
    assert limited.wait_records(f"too-large-{tok}") == ["RequestTooLarge oserror=True"]
    limited.assert_serving()


def test_chunked_body_over_the_limit_uncaught_is_413(limited):
    path = f"/read/{new_token()}"
    mark = out_mark(limited)
    err = limited.log_mark()
    resp, closed = exchange(limited, chunked_request(path, LIMIT + 1))
    assert resp.status == 413, resp
    assert resp.has_token("Connection", "close")
    assert closed
    access_line(limited, mark, path, 413)
    assert limited.wait_log(rf"413 POST {path} from .*\[limit_request_body\]", since=err)
    assert "Traceback" not in limited.log(err), "the client's fault is not an app error"
    limited.assert_serving()


def test_chunked_body_over_the_limit_in_one_chunk(limited):
    """One chunk larger than the limit: the read that receives it raises."""
    tok = new_token()
    raw = rawhttp.build_request(
        "POST",
        f"/catch/x?token={tok}&chunk=100000",
        [("Transfer-Encoding", "chunked")],
        rawhttp.chunked([b"z" * (4 * LIMIT)]),
    )
    resp = answer(limited, raw)
    assert resp.status == 200, resp
    assert limited.wait_records(f"too-large-{tok}") == ["RequestTooLarge oserror=True"]


def test_limit_zero_is_unlimited(start_server, mode):
    srv = start_server(APP, "--limit-request-body", "0", mode=mode)
    size = 256 * 1024
    resp = srv.request("POST", f"/read/{new_token()}?chunk=65536", body=b"u" * size)
    assert (resp.status, json.loads(resp.body)) == (200, {"size": size})
    resp = answer(srv, chunked_request(f"/read/{new_token()}?chunk=65536", size, 16))
    assert (resp.status, json.loads(resp.body)) == (200, {"size": size})


@pytest.mark.parametrize("length,status", [(2**64 - 3, 200), (2**64 - 2, 413), (2**64 - 1, 413)])
def test_a_length_no_body_can_have_is_413_with_no_limit(start_server, mode, length, status):
    """No limit set, a Content-Length of 2^64 - 2 or more (more than any body can
    be framed by) still gets 413 and a close before the app, not the 431 of a
    head too large; the largest one under it reaches the app, which answers
    without reading."""
    srv = start_server(APP, "--limit-request-body", "0", mode=mode)
    err = srv.log_mark()
    path = "/ping" if status == 200 else f"/read/{new_token()}"
    head = rawhttp.build_request("POST", path, [("Content-Length", str(length))])
    resp, closed = exchange(srv, head)
    assert (resp.status, closed) == (status, True), resp
    if status == 413:
        assert resp.has_token("Connection", "close")
        assert srv.wait_log(r"413 request from .*\[content_length_too_large\]", since=err)
        assert path not in srv.records("paths"), "the app was called"
    else:
        assert resp.body == b"pong"
    assert "head_too_large" not in srv.log(since=err)
    srv.assert_serving()


def test_a_length_no_body_can_have_in_pieces_or_behind_a_response(server):
    """Split over reads it is still 413; pipelined behind a request whose response
    is under way, hyper refuses it in turn (431); either way nothing after it runs."""
    huge = rawhttp.build_request("POST", "/ping", [("Content-Length", str(2**64 - 1))])
    after = f"/ping/after-{new_token()}"
    with server.connect() as conn:
        conn.send(huge[:40])
        time.sleep(0.2)
        conn.send(huge[40:] + rawhttp.build_request("GET", after))
        resp = conn.read_response()
        assert (resp.status, conn.wait_closed()) == (413, True), resp
    ping = rawhttp.build_request("GET", "/ping")
    with server.connect() as conn:
        conn.send(ping + huge + rawhttp.build_request("GET", after))
        statuses = [conn.read_response().status for _ in range(2)]
        assert (statuses, conn.wait_closed()) == ([200, 431], True)
    assert after not in server.records("paths")
    server.assert_serving()
