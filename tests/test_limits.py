"""--limit-request-line, --limit-request-fields and --limit-request-field-size.

Each limit is set small and tested just under, at and just over its value, in
both modes: under and at get the app's answer, over gets 414 or 431 and a
closed connection, and the app never sees it.  0 means "no limit beyond the
head buffer" for the sizes, as in gunicorn, and gunicorn's spelling
--limit-request-field_size is accepted too.  A request line longer than the
64 KiB head buffer is a 414 too, whatever the limit, sent or not in one piece,
and behind a response in turn; its log line shows the target shortened.
"""

import re

import observe
import pytest
import rawhttp

LIMITS = ("--limit-request-line", "64", "--limit-request-fields", "8")
FIELD_SIZE = 40


def exchange(server, raw):
    with server.connect() as conn:
        conn.send(raw)
        resp = conn.read_response()
        closed = conn.wait_closed(timeout=5) if resp.status >= 400 else None
    return resp, closed


def line_of(length, token):
    """A request line of exactly `length` bytes aimed at /env/limit-<token>."""
    fixed = len(f"GET /env/limit-{token}? HTTP/1.1")
    return f"GET /env/limit-{token}?{'a' * (length - fixed)} HTTP/1.1".encode()


@pytest.fixture
def limited(start_server, mode):
    return start_server(
        "router_app:app",
        *LIMITS,
        "--limit-request-field-size",
        str(FIELD_SIZE),
        mode=mode,
    )


@pytest.mark.parametrize("length,status", [(63, 200), (64, 200), (65, 414)])
def test_request_line(limited, length, status):
    token = rawhttp.new_token()
    resp, closed = exchange(limited, line_of(length, token) + b"\r\nHost: x\r\n\r\n")
    assert resp.status == status, resp
    seen = f"/env/limit-{token}" in limited.records("paths")
    assert seen == (status == 200)
    if status != 200:
        assert closed


def head_of(count):
    """A GET /ping head with `count` field lines."""
    fields = b"Host: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(count - 1))
    return b"GET /ping HTTP/1.1\r\n" + fields + b"\r\n"


@pytest.mark.parametrize("count,status", [(7, 200), (8, 200), (9, 431)])
def test_field_count(limited, count, status):
    mark = limited.log_mark()
    resp, closed = exchange(limited, head_of(count))
    assert resp.status == status, resp
    if status != 200:
        assert closed
        # Logged and counted by the limit it broke, not as a head too large.
        assert limited.wait_log(r"431 request from .*\[limit_request_fields\]", since=mark)
        assert "head_too_large" not in limited.log(since=mark)


@pytest.mark.parametrize("after", [False, True])
def test_field_count_behind_a_response(limited, after):
    """Pipelined behind a request that passes (and before another, sent in
    the same write), the crowded head is the second of its connection:
    answered 431 in turn, logged by its limit; the one after is not served."""
    mark = limited.log_mark()
    token = rawhttp.new_token()
    then = line_of(40, token) + b"\r\nHost: x\r\n\r\n" if after else b""
    with limited.connect() as conn:
        conn.send(head_of(8) + head_of(9) + then)
        statuses = [conn.read_response().status for _ in range(2)]
        closed = conn.wait_closed(timeout=5)
    assert (statuses, closed) == ([200, 431], True)
    assert limited.wait_log(r"431 request from .*\[limit_request_fields\]", since=mark)
    assert "head_too_large" not in limited.log(since=mark)
    assert f"/env/limit-{token}" not in limited.records("paths")


def test_field_count_refusals_are_counted_by_their_limit(start_server, mode):
    """The metrics name the refusal by the limit it broke too."""
    srv = start_server("router_app:app", *LIMITS, "--metrics-bind", "127.0.0.1:0", mode=mode)
    url = observe.metrics_url(srv)
    resp, closed = exchange(srv, head_of(9))
    assert (resp.status, closed) == (431, True)

    def counted():
        samples = observe.scrape(url)
        refused = observe.value(
            samples, "siesta_refusals_total", reason="limit_request_fields", status="431"
        )
        return refused == 1 and samples

    samples = observe.wait_until(counted)
    assert samples, observe.scrape(url)
    too_large = observe.value(
        samples, "siesta_refusals_total", reason="head_too_large", status="431"
    )
    assert not too_large


def test_fields_over_the_head_buffer_but_under_the_limit_are_a_head_too_large(start_server, mode):
    """hyper counts at most as many fields as CRLF lines fill its 64 KiB
    buffer (16384); bare LF lines fit more. A head past that count but
    under --limit-request-fields is too large, not over the limit."""
    srv = start_server("router_app:app", "--limit-request-fields", "20000", mode=mode)
    mark = srv.log_mark()
    raw = b"GET /ping HTTP/1.1\nHost: x\n" + b"a:\n" * 16400 + b"\n"
    resp, closed = exchange(srv, raw)
    assert (resp.status, closed) == (431, True)
    assert srv.wait_log(r"431 request from .*\[head_too_large\]", since=mark)
    assert "limit_request_fields" not in srv.log(since=mark)


@pytest.mark.parametrize(
    "size,status", [(FIELD_SIZE - 1, 200), (FIELD_SIZE, 200), (FIELD_SIZE + 1, 431)]
)
def test_field_size(limited, size, status):
    value = "v" * (size - len("X-Big: "))
    raw = f"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {value}\r\n\r\n".encode()
    resp, closed = exchange(limited, raw)
    assert resp.status == status, resp
    if status != 200:
        assert closed


def test_gunicorn_spelling_of_field_size(start_server, mode):
    srv = start_server("router_app:app", "--limit-request-field_size", "20", mode=mode)
    ok, _ = exchange(srv, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 15 + b"\r\n\r\n")
    over, closed = exchange(
        srv, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 16 + b"\r\n\r\n"
    )
    assert (ok.status, over.status, closed) == (200, 431, True)


def test_zero_means_no_limit_but_the_head_buffer(start_server, mode):
    srv = start_server(
        "router_app:app",
        "--limit-request-line",
        "0",
        "--limit-request-fields",
        "0",
        "--limit-request-field-size",
        "0",
        mode=mode,
    )
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(300))
    raw = b"GET /ping?" + b"q" * 20000 + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20000
    resp, _ = exchange(srv, raw + b"\r\n" + many + b"\r\n")
    assert resp.status == 200, resp
    mark = srv.log_mark()
    resp, closed = exchange(
        srv, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n"
    )
    assert (resp.status, closed) == (431, True)
    assert srv.wait_log(r"431 request from .*\[head_too_large\]", since=mark)


def test_defaults_are_gunicorns(server):
    """4094-byte line and 8190-byte field pass, one more byte does not (gunicorn's defaults)."""
    at, _ = exchange(server, line_of(4094, "d") + b"\r\nHost: x\r\n\r\n")
    over, _ = exchange(server, line_of(4095, "d") + b"\r\nHost: x\r\n\r\n")
    field = b"X-Big: " + b"v" * (8190 - 7)
    ok, _ = exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n")
    big, _ = exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + field + b"v\r\n\r\n")
    assert (at.status, over.status, ok.status, big.status) == (200, 414, 200, 431)


BEYOND_BUFFER = (65531, 70000, 300000)


def sent_in_pieces(srv, raw):
    """(the response, whether the connection then closed) for `raw` sent in 16 KiB
    pieces: the server sees a long line long before its end, and may answer and
    close while the rest is on its way."""
    with srv.connect() as conn:
        for at in range(0, len(raw), 16384):
            try:
                conn.send(raw[at : at + 16384])
            except OSError:
                break
        return conn.read_response(), conn.wait_closed(timeout=5)


@pytest.mark.parametrize("length", BEYOND_BUFFER)
@pytest.mark.parametrize("limit", ["4094", "0"])
def test_request_line_beyond_the_head_buffer(start_server, mode, limit, length):
    srv = start_server("router_app:app", "--limit-request-line", limit, mode=mode)
    mark = srv.log_mark()
    token = rawhttp.new_token()
    resp, closed = sent_in_pieces(srv, line_of(length, token) + b"\r\nHost: x\r\n\r\n")
    assert (resp.status, closed) == (414, True), resp
    assert f"/env/limit-{token}" not in srv.records("paths")
    assert srv.wait_log(r"414 request from .*\[limit_request_line\]", since=mark)
    assert "head_too_large" not in srv.log(since=mark)
    srv.assert_serving()


@pytest.mark.parametrize("limit", ["4094", "0"])
def test_thousands_of_empty_lines_are_a_400_not_a_414(start_server, mode, limit):
    """QA probe (session 28): 40,000 empty lines before a request line were
    answered 414 URI Too Long, counted as a long target. A few empty lines are
    skipped (RFC 9112 §2.2); so many are a malformed head."""
    srv = start_server("router_app:app", "--limit-request-line", limit, mode=mode)
    mark = srv.log_mark()
    with srv.connect() as conn:
        conn.send(b"\r\n" * 3 + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"pong"
    resp, closed = sent_in_pieces(srv, b"\r\n" * 40000 + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (resp.status, closed) == (400, True), resp
    assert srv.wait_log(r"400 request from .*\[malformed_head\]", since=mark), srv.log(mark)
    srv.assert_serving()


def test_request_line_beyond_the_head_buffer_behind_responses(server):
    """Pipelined after two requests it is answered in turn, after their responses."""
    ping = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    with server.connect() as conn:
        conn.send(ping + ping + line_of(70000, "p") + b"\r\nHost: x\r\n\r\n")
        statuses = [conn.read_response().status for _ in range(3)]
        closed = conn.wait_closed(timeout=5)
    assert (statuses, closed) == ([200, 200, 414], True)


def test_a_refused_target_is_logged_shortened(server):
    mark = server.log_mark()
    resp, _ = exchange(server, line_of(20000, "s") + b"\r\nHost: x\r\n\r\n")
    assert resp.status == 414
    found = server.wait_log(r"414 GET /env/limit-s\?a+\.\.\.\[\d+B\] from ", since=mark)
    assert found, server.log(since=mark)[-2000:]
    assert len(found.string) < 600, found.string


@pytest.mark.parametrize("limit", ["4094", "0"])
def test_a_raw_target_that_outgrows_the_head_buffer_escaped_gets_414(start_server, mode, limit):
    """Raw bytes that are not UTF-8 take three bytes each once escaped for
    hyper: 22,000 of them no longer fit its 64 KiB buffer, and the line is
    answered 414 as one that long as sent would be (hyper's answer was 431);
    behind a response, in turn."""
    srv = start_server("router_app:app", "--limit-request-line", limit, mode=mode)
    raw = b"GET /env/" + b"\xe9" * 22000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    with srv.connect() as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" + raw)
        statuses = [conn.read_response().status for _ in range(2)]
        closed = conn.wait_closed(timeout=5)
    assert (statuses, closed) == ([200, 414], True)
    assert "head_too_large" not in srv.log()


def test_a_refused_request_is_a_warning_with_its_target_cut_in_both_logs(
    start_server, mode, tmp_path
):
    """A request that breaks a head limit or the protocol is logged at
    WARNING, as gunicorn's `Invalid request from ip=...` lines, so
    `--log-level warning` still shows it (it was INFO); a client that went
    away stays at INFO. Its access-log line
    carried the whole over-limit target (60 KB a line, from any client);
    each atom of a refused request is now cut, as in the error log."""
    log = tmp_path / "access.log"
    srv = start_server(
        "router_app:app",
        *("--access-logfile", str(log)),
        mode=mode,
    )
    with srv.connect() as conn:
        conn.send(line_of(60000, rawhttp.new_token()) + b"\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 414
    with srv.connect() as conn:
        conn.send(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 400
    assert srv.wait_log(r"\[WARNING\] 414 .* from .*\[limit_request_line\]"), srv.log()
    assert srv.wait_log(r"\[WARNING\] 400 request from .*\[malformed_head\]")
    # A client that went away is no warning.
    with srv.connect() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")

    def lines():
        return log.read_text("utf-8", "replace").splitlines() if log.exists() else []

    def logged(needle):
        return observe.wait_until(lambda: any(needle in line for line in lines()), timeout=10)

    assert logged('"POST /echo HTTP/1.1" 400 ')
    assert srv.wait_log(r"\[INFO\] 400 POST /echo from .*\[client_disconnected\]"), srv.log()
    assert logged('" 414 ')
    long_line = next(line for line in lines() if '" 414 ' in line)
    assert len(long_line) < 1000, len(long_line)
    # Method, target and protocol stay three fields, for log parsers.
    assert re.search(r'"GET /env/limit-\S+\.\.\.\[\d{5}B\] HTTP/1\.1" 414 ', long_line), long_line
    # A request the app failed passed every head limit: logged whole.
    query = "q" * 3000
    assert srv.get(f"/raise/before?token=t&{query}").status == 500
    assert logged(f'&{query} HTTP/1.1" 500 ')
