"""How responses are framed on the wire (response_app.framing and friends).

The app's Content-Length is honoured and never exceeded; a one-element list gets
a Content-Length; other iterables are chunked on HTTP/1.1 and close-delimited on
HTTP/1.0; HEAD, 204, 205 and 304 carry no body (checked by pipelining a request right
behind them); write(), wsgi.file_wrapper and yielded chunks stream at once.
"""

import hashlib
import uuid

import pytest
import rawhttp


def pipelined(server, first, method="GET"):
    """Send `first` and a GET /ping in one write; return both responses."""
    with server.connect() as conn:
        conn.send(rawhttp.build_request(method, first) + rawhttp.build_request("GET", "/ping"))
        resp = conn.read_response(method)
        try:
            follow = conn.read_response()
        except rawhttp.IncompleteHead:
            follow = None
    return resp, follow


@pytest.mark.parametrize("case", ["cl-exceeded-gen", "cl-exceeded-one", "cl-exceeded-list"])
def test_app_content_length_never_exceeded(server, case):
    resp, follow = pipelined(server, f"/framing/{case}")
    assert resp.status == 200
    assert resp.header("Content-Length") == "5"
    assert resp.header("Transfer-Encoding") is None
    assert resp.body == b"01234"
    # Whatever follows on the connection is the next response, not the extra bytes.
    if follow is not None:
        assert (follow.status, follow.body) == (200, b"pong")


@pytest.mark.parametrize("gen", [False, True], ids=["list", "generator"])
@pytest.mark.parametrize("query", ["cl=abc", "cl=%2B5", "cl=-5", "cl=5e0", "cl=5,5", "cl=5&cl2=6"])
def test_content_length_not_a_number_is_an_app_error(server, query, gen):
    """A Content-Length the client cannot read went out as given (`abc`) with
    the body behind it on a keep-alive connection; streamed, the client got
    an empty reply and nothing was logged. start_response now refuses it, so
    the app's error becomes a 500, and the connection serves on."""
    mark = server.log_mark()
    target = f"/framing/cl-given?{query}" + ("&gen=1" if gen else "")
    resp, follow = pipelined(server, target)
    assert resp.status == 500, resp
    assert follow is not None and (follow.status, follow.body) == (200, b"pong"), follow
    logged = server.wait_log('invalid response header "Content-Length', since=mark)
    assert logged, server.log(mark)


@pytest.mark.parametrize("query", ["cl=5", "cl=%205%09", "cl=5&cl2=5"])
def test_content_length_with_spaces_or_repeated_goes_out_once(server, query):
    resp, follow = pipelined(server, f"/framing/cl-given?{query}")
    assert resp.status == 200 and resp.body == b"01234", resp
    assert resp.headers_all("Content-Length") == ["5"], resp
    assert (follow.status, follow.body) == (200, b"pong"), follow


@pytest.mark.parametrize(
    ("case", "sent"), [("cl-short", b"01234"), ("cl-short-list", b"01234"), ("cl-short-empty", b"")]
)
def test_app_content_length_not_reached_is_not_complete(server, case, sent):
    """The app gives fewer bytes than its declared 10: the client gets them, then a close.
    The cut has its line in the error log, as a short file's has (QA, session 30: an
    app's short body was cut with nothing said, and a normal access log line)."""
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/framing/{case}"))
        resp = conn.read_response()
        assert resp.header("Content-Length") == "10"
        assert resp.body == sent
        assert not resp.complete, "a short body must end with a closed connection"
        assert conn.eof
    said = server.wait_log(
        rf"\[INFO\] Response to GET /framing/{case} for 127\.0\.0\.1:\d+ cut {10 - len(sent)} "
        r"bytes short of its Content-Length: the app's body ended there$",
        since=mark,
    )
    assert said, server.log(mark)
    server.assert_serving()


def test_head_keeps_a_declared_length_it_has_no_body_for(server):
    resp, follow = pipelined(server, "/framing/cl-short-empty", method="HEAD")
    assert (resp.status, resp.header("Content-Length"), resp.body) == (200, "10", b"")
    assert follow is not None and follow.body == b"pong"


def test_one_element_list_gets_content_length(server):
    resp, follow = pipelined(server, "/framing/one-element")
    assert resp.header("Content-Length") == "11"
    assert resp.header("Transfer-Encoding") is None
    assert resp.body == b"hello world"
    assert follow is not None and follow.body == b"pong"


def test_generator_is_chunked_on_http11(server):
    resp, follow = pipelined(server, "/framing/generator")
    assert resp.chunked and resp.complete
    assert resp.header("Content-Length") is None
    assert resp.body == b"alpha beta gamma"
    assert follow is not None and follow.body == b"pong"


@pytest.mark.parametrize("case,body", [("list-many", b"alpha beta gamma"), ("empty", b"")])
def test_other_iterables_framed_correctly(server, case, body):
    resp, follow = pipelined(server, f"/framing/{case}")
    assert resp.status == 200 and resp.complete
    assert resp.body == body
    assert resp.chunked != (resp.header("Content-Length") is not None)
    assert follow is not None and follow.body == b"pong"


def test_generator_is_close_delimited_on_http10(server):
    with server.connect() as conn:
        conn.send(b"GET /framing/generator HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert conn.eof
    assert resp.header("Transfer-Encoding") is None
    assert resp.header("Content-Length") is None
    assert resp.body == b"alpha beta gamma"


def test_one_element_list_on_http10(server):
    with server.connect() as conn:
        conn.send(b"GET /framing/one-element HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert resp.header("Content-Length") == "11"
        assert resp.body == b"hello world"
        assert conn.wait_closed()


@pytest.mark.parametrize(
    "target", ["/framing/generator", "/framing/one-element", "/file?size=5000"]
)
def test_head_has_no_body(server, target):
    resp, follow = pipelined(server, target, method="HEAD")
    assert resp.status == 200
    assert resp.body == b""
    assert follow is not None and (follow.status, follow.body) == (200, b"pong")


@pytest.mark.parametrize("code", ["204", "205", "304"])
def test_no_body_statuses(server, code):
    resp, follow = pipelined(server, f"/framing/{code}")
    assert resp.status == int(code)
    assert b"must not be sent" not in resp.raw
    assert resp.header("Transfer-Encoding") is None
    assert follow is not None and (follow.status, follow.body) == (200, b"pong")


@pytest.mark.parametrize("code", ["204", "205", "304"])
def test_no_body_statuses_with_a_length(server, code):
    """RFC 9110 §8.6: a 204 never carries Content-Length, whatever the app
    said; a 304's stays (the length a 200 would have had); a 205 says
    `Content-Length: 0` (§15.3.6). None has a body."""
    resp, follow = pipelined(server, f"/framing/{code}-cl")
    assert resp.status == int(code)
    assert resp.header("Content-Length") == {"204": None, "205": "0", "304": "26"}[code]
    assert b"must not be sent" not in resp.raw
    assert follow is not None and (follow.status, follow.body) == (200, b"pong")


@pytest.mark.parametrize("code", ["204", "304"])
def test_writes_to_a_bodiless_response_are_dropped_whatever_the_client_does(server, code):
    """QA probe (session 26): write() on a 204 or 304 raised ClientDisconnected
    once the client, having its complete response, closed (most of the time in
    gevent mode, rarely in thread mode); HEAD's writes were dropped quietly."""
    mark = server.log_mark()
    for _ in range(20):
        with server.connect() as conn:
            conn.send(rawhttp.build_request("POST", f"/framing/{code}-writes", body=b"abc"))
            resp = conn.read_response()
            assert resp.status == int(code) and b"must not be sent" not in resp.raw
    resp, follow = pipelined(server, f"/framing/{code}-writes")
    assert resp.status == int(code) and b"must not be sent" not in resp.raw
    assert follow is not None and (follow.status, follow.body) == (200, b"pong")
    server.assert_serving()
    assert "ClientDisconnected" not in server.log(mark), server.log(mark)


def test_a_streamed_205_sends_nothing_and_the_connection_serves_on(server):
    resp, follow = pipelined(server, "/framing/205-gen")
    assert resp.status == 205
    assert resp.header("Content-Length") == "0"
    assert resp.header("Transfer-Encoding") is None
    assert b"must not be sent" not in resp.raw and b"this" not in resp.raw
    assert follow is not None and (follow.status, follow.body) == (200, b"pong")


@pytest.mark.parametrize("n", [2, 2621, 2622, 30000])
def test_a_list_gets_its_content_length_long_or_short(server, n):
    """Review (session 23): a list over 256 KiB goes out item by item, and lost the
    Content-Length a list sent whole gets; it says its length on either side of the
    bound, on HTTP/1.0 and to HEAD too."""
    resp = server.get(f"/framing/list-repeated?n={n}&nolen=1")
    assert resp.header("Content-Length") == str(100 * n), resp.headers
    assert resp.body == b"q" * (100 * n)
    resp, follow = pipelined(server, f"/framing/list-repeated?n={n}&nolen=1", method="HEAD")
    assert resp.header("Content-Length") == str(100 * n) and resp.body == b""
    assert follow is not None and follow.body == b"pong"
    with server.connect() as conn:
        conn.send(f"GET /framing/list-repeated?n={n}&nolen=1 HTTP/1.0\r\n\r\n".encode())
        resp = conn.read_response()
        assert resp.header("Content-Length") == str(100 * n)
        assert len(resp.body) == 100 * n


def test_a_list_subclass_is_sent_as_it_iterates(server):
    """Review (session 23): a list subclass whose __iter__ differs from its items
    must be sent as iteration gives it, not from its stored items."""
    resp = server.get("/framing/list-subclass")
    assert resp.status == 200 and resp.complete
    assert resp.body == b"Z" * 400_000


def test_write_callable(server):
    resp, follow = pipelined(server, "/write?n=3&tail=end")
    assert resp.status == 200 and resp.complete
    assert resp.body == b"part0 part1 part2 end"
    assert follow is not None and follow.body == b"pong"


def test_write_callable_with_content_length(server):
    resp, follow = pipelined(server, "/write?n=2&length=12")
    assert resp.header("Content-Length") == "12"
    assert resp.body == b"part0 part1 "
    assert follow is not None and follow.body == b"pong"


def expected_file(size):
    return bytes((i * 31 + 7) % 251 for i in range(size))


# A pipe's body is written into the pipe's kernel buffer before the app
# returns, so pipes get only sizes that fit in it.
FILE_CASES = [
    (kind, size)
    for kind in ("file", "bytesio", "pipe")
    for size in (0, 1, 8192, 1_000_003)
    if kind != "pipe" or size <= 8192
]


@pytest.mark.parametrize("kind, size", FILE_CASES)
def test_file_wrapper(server, kind, size):
    resp, follow = pipelined(server, f"/file?size={size}&kind={kind}")
    assert resp.status == 200 and resp.complete
    assert resp.body == expected_file(size)
    assert follow is not None and follow.body == b"pong"


@pytest.mark.parametrize("kind", ["gzip", "inverted"])
def test_file_wrapper_of_an_object_whose_read_is_not_the_files_bytes(server, kind):
    """QA (session 34): a file_wrapper over gzip.open() (or a subclass of a file whose
    read() changes the bytes) sent the file's raw bytes from its descriptor, as a
    complete 200: PEP 3333 has file_wrapper give what iterating read() gives, so only
    open()'s own file objects go from their descriptor."""
    resp, follow = pipelined(server, f"/file?size=100000&kind={kind}")
    assert resp.status == 200 and resp.complete
    want = expected_file(100000)
    assert resp.body == (want if kind == "gzip" else bytes(b ^ 0xFF for b in want))
    assert follow is not None and follow.body == b"pong"


@pytest.mark.parametrize("kind", ["file", "bytesio"])
def test_file_wrapper_can_be_indexed(server, kind):
    """PEP 3333's sample file_wrapper (and gunicorn's) has `__getitem__`: each
    index gives the next block and IndexError ends it, so code written for the
    old iteration protocol works."""
    resp, follow = pipelined(server, f"/file?size=100000&kind={kind}&blksize=30000&index=1")
    assert resp.status == 200 and resp.complete, resp.body[:200]
    assert resp.body == expected_file(100000)
    assert follow is not None and follow.body == b"pong"


def test_file_wrapper_of_a_file_that_cannot_tell_its_position(server):
    """Review (session 34): a text file iterated with next() cannot tell() where it
    stands; it was sent from its descriptor's offset, past what Python had read
    ahead: an empty 200. It is iterated with read() now, whose str items are the
    app's error (a 500 that says so), not a wrong body."""
    mark = server.log_mark()
    resp, follow = pipelined(server, "/file?kind=text-next")
    assert resp.status == 500, resp
    assert server.wait_log(r"str", since=mark), server.log(mark)
    assert follow is not None and follow.body == b"pong"


@pytest.mark.parametrize("blksize", ["-1", "0"])
def test_file_wrapper_takes_any_block_size(server, blksize):
    """QA (session 34): file_wrapper(f, -1) was a 500 (OverflowError); gunicorn takes
    it (read(-1) reads it all). A size below 1 is the default's blocks."""
    for kind in ("file", "bytesio"):
        resp, follow = pipelined(server, f"/file?size=50000&kind={kind}&blksize={blksize}")
        assert resp.status == 200 and resp.body == expected_file(50000), resp
        assert follow is not None and follow.body == b"pong"


def test_file_wrapper_of_a_file_whose_size_reads_0(server):
    """QA probe (session 24): a file_wrapper over /proc/self/status (a regular
    file whose size reads 0, made as it is read) sent an empty 200; PEP 3333
    has file_wrapper give what iterating read() gives."""
    resp, follow = pipelined(server, "/file?kind=proc")
    assert resp.status == 200 and resp.complete
    assert b"\nPid:" in resp.body and resp.body.startswith(b"Name:"), resp.body[:200]
    assert follow is not None and follow.body == b"pong"


def test_file_wrapper_honours_content_length(server):
    resp, follow = pipelined(server, "/file?size=50000&length=1000")
    assert resp.header("Content-Length") == "1000"
    assert resp.body == expected_file(1000)
    if follow is not None:
        assert follow.body == b"pong"


@pytest.mark.parametrize("length", [None, "70000"])
def test_file_wrapper_from_the_files_position(server, length):
    """Issue 16: the file is sent from where the app left it, to its end or the
    declared length (the length of the rest, not the file's size, when none)."""
    query = "/file?size=200000&offset=777" + (f"&length={length}" if length else "")
    resp, follow = pipelined(server, query)
    assert resp.status == 200 and resp.complete
    want = expected_file(200000)[777:]
    if length:
        want = want[: int(length)]
    assert resp.header("Content-Length") == str(len(want))
    assert resp.body == want
    assert follow is not None and follow.body == b"pong"


def test_file_wrapper_shorter_than_declared_is_aborted(server):
    """Issue 16: a file that ends before its declared length is never a complete
    body; what the file had is sent before the connection is aborted. The cut
    has its line in the error log (QA probe, session 28: nothing said why)."""
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/file?size=100000&length=300000"))
        resp = conn.read_response()
        assert resp.header("Content-Length") == "300000"
        assert resp.body == expected_file(100000)
        assert not resp.complete
        assert conn.eof
    said = server.wait_log(
        r"\[INFO\] Response to GET /file\?size=100000&length=300000 for 127\.0\.0\.1:\d+ "
        r"cut after 100000 body bytes: file shorter than the declared Content-Length$",
        since=mark,
    )
    assert said, server.log(mark)
    server.assert_serving()


def test_body_items_arrive_as_yielded(server):
    """Issue 16: large bytes items are handed to the socket without a copy; each
    block must still arrive as yielded though the app drops it and reuses its
    buffer at once."""
    resp = server.get("/distinct?count=64&size=65536")
    assert resp.status == 200 and resp.complete
    blocks = [resp.body[i : i + 65536] for i in range(0, len(resp.body), 65536)]
    assert len(blocks) == 64
    for i, block in enumerate(blocks):
        assert block == router_app_block(i, 65536), f"block {i} differs"


def router_app_block(i, size):
    return (hashlib.sha256(b"%d" % i).digest() * (size // 32 + 1))[:size]


def test_chunks_are_sent_as_yielded(server):
    """The first chunk arrives while the app is still waiting to yield the second."""
    go = "go-" + uuid.uuid4().hex[:12]
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/gated?go={go}"))
        _, _, status, _, _ = conn.read_head()
        assert status == 200
        assert conn.read_chunk() == b"first;"
        (server.record_dir / go).write_text("go\n")
        assert conn.read_chunk() == b"second:go"
        assert conn.read_chunk() == b""


def test_an_empty_write_sends_the_head(server):
    """QA (session 34): write(b"") sent nothing; PEP 3333 has the head go out at the
    first write() (an event stream's headers before its first event). An empty item
    of the iterable still sends nothing (the headers may change until a non-empty
    one)."""
    go = "go-" + uuid.uuid4().hex[:12]
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/write?empty={go}"))
        _, _, status, _, _ = conn.read_head()
        assert status == 200
        (server.record_dir / go).write_text("go\n")
        assert conn.read_chunk() == b"after:go"
        assert conn.read_chunk() == b""


def test_large_streamed_response(server):
    resp = server.get("/stream?count=200&size=65536")
    assert resp.status == 200 and resp.complete
    assert len(resp.body) == 200 * 65536
    assert resp.body[:65536] == b"0" * 65536 and resp.body[-65536:] == b"9" * 65536
