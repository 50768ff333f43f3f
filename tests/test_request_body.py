"""wsgi.input: every read method over Content-Length and chunked request bodies.

The body is sent in awkward pieces (one byte, a lone newline, a 70 000-byte line
cut in the middle) as separate chunks or separate sends, and the app
(body_app.read_method) answers what each call returned; results are compared
with io.BytesIO doing the same calls.  Reads past the end must give b"" at once.
Also: a 100 MiB body's sha256 arrives intact, and a full-duplex line echo.
"""

import io
import json
import time

import payloads
import pytest
import rawhttp

BODY = (
    b"first line\nsecond\n\nfourth line is longer than the others\n"
    + b"y" * 70000
    + b"\n"
    + b"short\n" * 5
    + b"last line without newline"
)
SIZES = [1, 2, 5, 1, 11, 3, 40000, 7, 1, 64, 30000]


def awkward_pieces(body):
    pieces, offset, i = [], 0, 0
    while offset < len(body):
        size = SIZES[i % len(SIZES)]
        pieces.append(body[offset : offset + size])
        offset += size
        i += 1
    return pieces


def reference(method, body, n=10, limit=5):
    stream = io.BytesIO(body)
    if method in ("read", "read-1", "read-none"):
        return [stream.read()]
    if method == "read-n":
        return list(iter(lambda: stream.read(n), b""))
    if method in ("readline", "iter", "readlines"):
        return list(iter(stream.readline, b""))
    if method == "readline-limit":
        return list(iter(lambda: stream.readline(limit), b""))
    if method == "mixed":
        return [stream.readline(), stream.read(n), stream.read()]
    raise AssertionError(method)


def send_body(server, target, body, framing):
    """POST body in awkward pieces, each chunk or send separate; returns the response."""
    pieces = awkward_pieces(body) if body else []
    with server.connect() as conn:
        if framing == "chunked":
            conn.send(rawhttp.build_request("POST", target, [("Transfer-Encoding", "chunked")]))
            for piece in pieces:
                conn.send(rawhttp.chunk(piece))
            conn.send(b"0\r\n\r\n")
        else:
            conn.send(rawhttp.build_request("POST", target, [("Content-Length", str(len(body)))]))
            for piece in pieces:
                conn.send(piece)
        return conn.read_response()


def read_via(server, method, body, framing, extra=""):
    resp = send_body(server, f"/read?method={method}{extra}", body, framing)
    assert resp.status == 200, (resp, server.log())
    result = json.loads(resp.body)
    pieces = [p.encode("latin-1") for p in result["pieces"]]
    assert result["after"] == ["", "", "", ""], "reads past the end must return b''"
    return pieces


FRAMINGS = ["content-length", "chunked"]
EXACT_METHODS = [
    "read",
    "read-1",
    "read-none",
    "read-n",
    "readline",
    "readline-limit",
    "readlines",
    "iter",
    "mixed",
]


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("method", EXACT_METHODS)
def test_read_method(server, method, framing):
    pieces = read_via(server, method, BODY, framing)
    assert pieces == reference(method, BODY)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_read_n_blocks_until_n_bytes(server, framing):
    pieces = read_via(server, "read-n", BODY, framing, "&n=4096")
    assert b"".join(pieces) == BODY
    assert all(len(p) == 4096 for p in pieces[:-1])
    assert 0 < len(pieces[-1]) <= 4096


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("n", [65536, 70001, 200000])
def test_large_reads_span_many_chunks(server, framing, n):
    """Issue #16: a read filled from many buffered chunks at once (one copy
    into the bytes object) gets every byte, in order, and exactly n of them."""
    body = BODY * 5
    pieces = read_via(server, "read-n", body, framing, f"&n={n}")
    assert b"".join(pieces) == body
    assert [len(p) for p in pieces[:-1]] == [n] * (len(pieces) - 1)
    assert 0 < len(pieces[-1]) <= n


@pytest.mark.parametrize("framing", FRAMINGS)
def test_sizes_past_a_machine_word_read_it_all(server, framing):
    """QA probe (session 23): read(2**70) raised OverflowError; a file object
    takes any int, and one that large (or that negative) asks for all there is."""
    huge = 2**70
    assert read_via(server, "read-n", BODY, framing, f"&n={huge}") == [BODY]
    assert read_via(server, "read-n", BODY, framing, f"&n={-huge}") == [BODY]
    lines = read_via(server, "readline-limit", BODY, framing, f"&limit={huge}")
    assert lines == reference("readline", BODY)
    assert read_via(server, "readlines-hint", BODY, framing, f"&hint={huge}") == [BODY]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_readlines_hint_returns_whole_lines(server, framing):
    batches = read_via(server, "readlines-hint", BODY, framing, "&hint=20")
    assert b"".join(batches) == BODY
    assert all(batch.endswith(b"\n") for batch in batches[:-1])


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("method", ["read", "read-n", "readline", "readlines", "iter"])
def test_empty_body(server, method, framing):
    if framing == "chunked":
        pieces = read_via(server, method, b"", framing)
    else:
        resp = server.request("POST", f"/read?method={method}", [("Content-Length", "0")])
        assert resp.status == 200
        result = json.loads(resp.body)
        assert result["after"] == ["", "", "", ""]
        pieces = [p.encode("latin-1") for p in result["pieces"]]
    assert b"".join(pieces) == b""


def test_get_without_body_reads_empty(server):
    resp = server.get("/read?method=read")
    assert resp.status == 200
    assert json.loads(resp.body) == {"pieces": [""], "after": ["", "", "", ""]}


def test_chunk_extensions_and_trailers(server):
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", "/read?method=read", [("Transfer-Encoding", "chunked")])
            + body
        )
        resp = conn.read_response()
    assert resp.status == 200
    assert json.loads(resp.body)["pieces"] == ["hello world"]


def stream_upload(server, target, total, framing, piece=payloads.MIB):
    with server.connect(timeout=60) as conn:
        headers = (
            [("Transfer-Encoding", "chunked")]
            if framing == "chunked"
            else [("Content-Length", str(total))]
        )
        conn.send(rawhttp.build_request("POST", target, headers))
        for data in payloads.pieces(total, piece):
            conn.send(rawhttp.chunk(data) if framing == "chunked" else data)
        if framing == "chunked":
            conn.send(b"0\r\n\r\n")
        return conn.read_response()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_100mib_body_sha256_intact(server, framing):
    total = 100 * payloads.MIB
    resp = stream_upload(server, "/sha256?chunk=65536", total, framing)
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {"size": total, "sha256": payloads.digest(total)}


def test_odd_sized_reads_of_large_chunked_body(server):
    total = 3 * payloads.MIB + 12345
    resp = stream_upload(server, "/sha256?chunk=99991", total, "chunked", piece=77777)
    assert resp.status == 200
    assert json.loads(resp.body) == {"size": total, "sha256": payloads.digest(total, 77777)}


def test_full_duplex_line_echo(server):
    """Each line comes back before the next one is sent: the response streams."""
    with server.connect() as conn:
        conn.send(rawhttp.build_request("POST", "/stream-echo", [("Transfer-Encoding", "chunked")]))
        conn.send(rawhttp.chunk(b"line one\n"))
        status = conn.read_head()[2]
        assert status == 200
        assert conn.read_chunk() == b"line one\n"
        conn.send(rawhttp.chunk(b"line "))
        conn.send(rawhttp.chunk(b"two\n"))
        assert conn.read_chunk() == b"line two\n"
        conn.send(b"0\r\n\r\n")
        assert conn.read_chunk() == b""


def two_readers(server, target):
    """POSTs 2000 bytes in paced 100-byte lines (so that two reads overlap) to `target`."""
    with server.connect(timeout=30) as conn:
        conn.send(rawhttp.build_request("POST", target, [("Content-Length", "2000")]))
        for _ in range(20):
            conn.send(b"x" * 99 + b"\n")
            time.sleep(0.05)
        return conn.read_response()


def test_two_threads_reading_at_once_both_get_their_bytes(server):
    """Issue 16 review: a second read polling the body took the place of a
    waiting one with hyper, so one of two threads reading at once slept until
    --body-timeout."""
    resp = two_readers(server, "/two-readers?n=1000")
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {"sizes": [1000, 1000], "stuck": 0}


def test_a_pool_thread_waiting_its_turn_drives_the_io(start_server, mode):
    """Issue 16 review: with one app thread, the app's own thread waiting for
    its turn to read did not drive the I/O, so the other thread's read got no
    bytes until --body-timeout."""
    srv = start_server("router_app:app", "--threads", "1", "--body-timeout", "10", mode=mode)
    resp = two_readers(srv, "/two-readers?lines=10&own=1")
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {"sizes": [1000, 1000], "stuck": 0}


def test_a_reader_left_waiting_when_the_app_returns_is_woken(start_server, mode):
    """Issue 16 review: a thread (greenlet) of the app still waiting in
    `wsgi.input` when the app returned was never woken: the rest of the body
    went to the discard, and the reader slept on until --body-timeout."""
    srv = start_server("router_app:app", "--body-timeout", "120", mode=mode)
    tok = rawhttp.new_token()
    with srv.connect(timeout=30) as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/reader-left?token={tok}", [("Content-Length", "100000")]
            )
            + b"x"
        )
        resp = conn.read_response()
        assert resp.status == 200, resp
        assert json.loads(resp.body) == {"started": True}
        got = srv.wait_records(f"reader-{tok}", timeout=20)
    assert got == ["failed ClientDisconnected"], srv.log()


def test_a_thread_outside_the_pool_reading_gets_its_bytes(start_server, mode):
    """Issue 16 review: with one app thread, once the app's thread had read
    and then waited in Python (here `join()`) for a thread of its own that
    reads, nothing drove the I/O: the pool's monitor had gone to sleep while
    the app's thread waited on the network, and its return did not wake it.
    (Gevent mode has no pool: its case checks the same reads, which never
    stalled there.)"""
    srv = start_server("router_app:app", "--threads", "1", "--body-timeout", "10", mode=mode)
    resp = two_readers(srv, "/two-readers?n=1000&own=first")
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {"sizes": [1000, 1000], "stuck": 0}
