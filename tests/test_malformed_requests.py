"""Malformed or ambiguous requests get 400 and a closed connection, never the app.

Each case is a raw request whose framing or header syntax is ambiguous (both
Content-Length and Transfer-Encoding, differing lengths, obs-fold, control
characters...).  The server must answer 400, close the connection, and the
app's `paths` record must never show the request's unique path.  A bad chunk
size, found only while the app reads, must still end in 400 and a close.
"""

import uuid

import pytest
import rawhttp

# hyper drops Content-Length when Transfer-Encoding is present and frames the
# body by Transfer-Encoding alone, closing the connection after the response
# (RFC 9112 section 6.1 allows exactly that), so the service never sees both
# headers and cannot answer 400 as DESIGN.md asks. Strict: fixing it turns these red.
CL_AND_TE = pytest.param(
    "cl-and-te",
    marks=pytest.mark.xfail(
        strict=True,
        reason="hyper hides Content-Length next to "
        "Transfer-Encoding; processed as chunked and closed instead",
    ),
)

CASES = {
    "cl-and-te": b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-different-cl": b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello!",
    "cl-list": b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
    "cl-not-a-number": b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "cl-negative": b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "cl-plus-sign": b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "te-not-chunked-last": b"POST {path} HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te-unknown": b"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
    "obs-fold": b"GET {path} HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  continued\r\n\r\n",
    "space-before-colon": b"GET {path} HTTP/1.1\r\nHost: x\r\nX-Name : v\r\n\r\n",
    "control-char-in-value": b"GET {path} HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
    "nul-in-value": b"GET {path} HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    "space-in-target": b"GET {path} extra HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET {path} HTTP/1.x\r\nHost: x\r\n\r\n",
    # QA (session 41): hyper's URI parser drops a fragment silently: the app saw
    # PATH_INFO /a for `/a#/../b?x=1`, and --limit-request-line did not count it.
    "fragment-in-target": b"GET {path}#/../admin?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "long-fragment": b"GET {path}#" + b"x" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    # QA (session 41): a Host whose escape or bracketed address is malformed.
    "host-bad-escape": b"GET {path} HTTP/1.1\r\nHost: a%zz\r\n\r\n",
    "host-not-an-ip-literal": b"GET {path} HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n",
}


def send_raw(server, template):
    marker = f"/env/malformed-{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.send(template.replace(b"{path}", marker.encode()))
        try:
            resp = conn.read_response()
        except rawhttp.IncompleteHead:
            resp = None
        closed = conn.wait_closed()
    return marker, resp, closed


PARAMS = [CL_AND_TE if c == "cl-and-te" else c for c in sorted(CASES)]


@pytest.mark.parametrize("case", PARAMS)
def test_malformed_request_never_reaches_app(server, case):
    marker, resp, closed = send_raw(server, CASES[case])
    assert marker not in server.records("paths"), "the app was called"
    assert resp is None or resp.status >= 400, resp
    assert closed
    server.assert_serving()


@pytest.mark.parametrize("case", PARAMS)
def test_malformed_request_gets_400(server, case):
    _, resp, closed = send_raw(server, CASES[case])
    assert resp is not None, "expected a 400 response, got a bare close"
    assert resp.status == 400, resp
    assert closed


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ],
)
def test_bad_chunk_framing_is_never_accepted(server, chunks):
    """The app is already reading when the bad chunk arrives: its read fails, the answer is 400."""
    with server.connect() as conn:
        conn.send(
            b"POST /sha256/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        )
        try:
            resp = conn.read_response()
        except rawhttp.IncompleteHead:
            resp = None
        closed = conn.wait_closed()
    if resp is not None:
        assert resp.status == 400, resp
    assert closed
    server.assert_serving()


def test_a_fragment_pipelined_behind_a_good_request_is_refused_in_its_turn(server):
    """QA (session 41): the request line with a `#` is found as the bytes arrive,
    which may hold several requests: the one with it gets the 400, not its
    neighbours."""
    good, bad = (f"/env/frag-{uuid.uuid4().hex[:12]}" for _ in range(2))
    with server.connect() as conn:
        conn.send(
            f"GET {good} HTTP/1.1\r\nHost: x\r\n\r\n"
            f"GET {bad}#x HTTP/1.1\r\nHost: x\r\n\r\n"
            f"GET {good}?again HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        first = conn.read_response()
        second = conn.read_response()
        assert conn.wait_closed()
    assert first.status == 200, first
    assert second.status == 400, second
    paths = server.records("paths")
    assert good in paths and bad not in paths, paths
    # Logged as what it is (the line's target no longer shows the '#').
    assert server.wait_log(r"a '#' in the request target .*\[fragment\]"), server.log()


def test_request_smuggling_via_cl_te_does_not_reach_app(server):
    """A CL/TE desync attempt: the smuggled request must not run either."""
    smuggled = b"GET /env/smuggled-clte HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (
        b"POST /env/front HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % len(body)
    ) + body
    with server.connect() as conn:
        conn.send(raw)
        try:
            resp = conn.read_response()
        except rawhttp.IncompleteHead:
            resp = None
        closed = conn.wait_closed()
    # 400 is what DESIGN.md asks; hyper processes the body as chunked and
    # closes instead (see CL_AND_TE). Either way the smuggled request never runs.
    assert resp is None or resp.status in (200, 400)
    assert closed
    assert "/env/smuggled-clte" not in server.records("paths")


def test_app_answering_a_malformed_body_itself_says_connection_close(server):
    """The app catches the failed read and answers on its own: the server adds
    `Connection: close` (the connection cannot carry another request) and closes."""
    token = rawhttp.new_token()
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/disconnect?token={token}", [("Transfer-Encoding", "chunked")]
            )
            + b"5\r\nhello\r\nzz\r\n"
            + b"GET /env/after-bad-chunk HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        resp = conn.read_response()
        closed = conn.wait_closed()
    records = server.wait_records(f"disconnect-{token}")
    assert records[0].startswith("ClientDisconnected reset=True"), records
    assert resp.status == 200, resp
    assert resp.has_token("Connection", "close"), resp.headers
    assert closed
    assert "/env/after-bad-chunk" not in server.records("paths")


def test_a_malformed_body_the_app_lets_through_is_one_line_not_a_traceback(server):
    """The app reads a chunked body whose chunk line breaks the grammar and
    lets the failed read's siesta.ClientDisconnected through: the client's
    doing, not the app's, so 400 and the refusal's one log line, as for a
    body too large or too slow (it logged an ERROR traceback)."""
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", "/sha256/quiet", [("Transfer-Encoding", "chunked")])
            + b"3 \r\nabc\r\n0\r\n\r\n"
        )
        resp = conn.read_response()
        assert resp.status == 400, resp
        assert resp.has_token("Connection", "close"), resp.headers
        assert conn.wait_closed()
    assert server.wait_log(r"400 POST /sha256/quiet from .*\[malformed_body\]", since=mark), (
        server.log(mark)
    )
    assert "Traceback" not in server.log(mark), server.log(mark)
    server.assert_serving()


def test_an_http2_preface_gets_400_and_is_logged(server):
    """A client speaking HTTP/2 with prior knowledge (curl --http2-prior-knowledge):
    hyper recognises the preface and closed without a word or a log line."""
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        resp = conn.read_response()
        assert resp.status == 400, resp
        assert conn.wait_closed()
    assert server.wait_log(r"400 request from .*\[malformed_head\]", since=mark)
    server.assert_serving()


def test_a_tls_hello_on_the_plain_port_gets_400_at_once(start_server):
    """Soak probe (session 17): a request line is held until its LF (raw targets are
    escaped whole), so bytes with no LF that no method can start, like a TLS
    ClientHello sent to a plain HTTP port, waited for --header-timeout and got 408.
    They go to hyper at once now, which answers 400 (here long before the timeout's
    408 could come)."""
    srv = start_server("router_app:app", "--header-timeout", "120")
    mark = srv.log_mark()
    hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(11, 43))  # no LF
    with srv.connect(timeout=60) as conn:
        conn.send(hello)
        resp = conn.read_response()
        assert resp.status == 400, resp
        assert conn.wait_closed()
    assert srv.wait_log(r"400 request from .*\[malformed_head\]", since=mark)
    srv.assert_serving()


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_asterisk_target_is_for_options_alone(server, method):
    """RFC 9112 §3.2.4: `*` is OPTIONS' target only; with any other method it
    is a malformed head (400, closed), and the app is not called."""
    before = server.records("paths").count("*")
    with server.connect() as conn:
        conn.send(f"{method} * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        resp = conn.read_response()
        closed = conn.wait_closed()
    assert resp.status == 400, resp
    assert closed
    with server.connect() as conn:
        conn.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = conn.read_response()
    assert resp.status < 500, resp
    assert server.records("paths").count("*") == before + 1, "OPTIONS * reaches the app once"
