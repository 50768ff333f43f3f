"""start_response rules from PEP 3333, and bad app input that must not hurt the server.

exc_info may replace headers not yet sent, and is re-raised once they are sent;
a second call without exc_info is an error (500); hop-by-hop headers, a status
of 999, non-str status or headers and header injection attempts all give 500,
and the server keeps serving afterwards.
"""

import pytest
import rawhttp
from rawhttp import new_token


def test_exc_info_replaces_headers_not_yet_sent(server):
    resp = server.get(f"/exc/before-headers?token={new_token()}")
    assert resp.status == 500
    assert resp.header("X-Handled") == "yes"
    assert resp.header("X-First") is None
    assert resp.body == b"handled"


def test_exc_info_reraised_after_headers_sent(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/exc/after-headers?token={token}"))
        try:
            resp = conn.read_response()
        except rawhttp.IncompleteHead:
            resp = None  # aborted before the head was flushed (see test_app_errors)
        assert conn.eof, "the connection must be aborted"
    if resp is not None:
        assert resp.status == 200
        assert resp.body in (b"", b"first")
        assert not resp.complete, "the connection must be aborted, not end cleanly"
    assert server.wait_records(f"exc-{token}") == ["reraised KeyError"]
    server.assert_serving()


def test_second_start_response_without_exc_info_is_an_error(server):
    token = new_token()
    resp = server.get(f"/exc/second-call?token={token}")
    assert resp.status == 500
    records = server.wait_records(f"exc-{token}")
    assert len(records) == 1 and records[0].startswith("second call raised"), records
    server.assert_serving()


@pytest.mark.parametrize(("bad", "name"), [("bytearray", "bytearray"), ("none", "NoneType")])
def test_write_of_what_is_not_bytes_says_what_it_got(server, bad, name):
    """QA (session 30): in thread mode, `write(bytearray(...))` or `write(None)` was
    logged as "start_response() needs status and headers": the write callable is the
    start_response object, so one argument was taken for a status without headers.
    Both modes now name what the write got."""
    mark = server.log_mark()
    resp = server.get(f"/write?bad={bad}")
    assert resp.status == 500, resp
    said = server.wait_log(rf"TypeError: response body items must be bytes, not {name}", since=mark)
    assert said, server.log(mark)
    server.assert_serving()


def test_start_response_without_headers_says_so(server):
    """Review (session 30): with one argument that is not bytes taken for a write,
    `start_response(200)` (headers forgotten) was logged as a body item of the wrong
    type in thread mode. Before the response starts, one argument is a start_response
    without its headers."""
    mark = server.log_mark()
    resp = server.get("/status?value=200&alone=1")
    assert resp.status == 500, resp
    said = server.wait_log(r"TypeError: .*start_response\(\) .*headers", since=mark)
    assert said, server.log(mark)
    assert "must be bytes" not in server.log(mark)
    server.assert_serving()


def test_an_empty_item_before_start_response_sends_nothing(server):
    """QA (session 30): a generator that yields b"" and only then calls
    start_response was answered in thread mode and failed (500) in gevent mode: the
    two modes must not differ. An empty item sends nothing, not even the head."""
    resp = server.get("/late-start")
    assert (resp.status, resp.body) == (200, b"late start"), resp
    server.assert_serving()


@pytest.mark.parametrize(
    "name",
    [
        "Keep-Alive",
        "Proxy-Authenticate",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Connection",
    ],
)
def test_hop_by_hop_header_from_app_is_an_error(server, name):
    resp = server.get(f"/hop?name={name}")
    assert resp.status == 500
    assert resp.header(name) != "x"
    server.assert_serving()


@pytest.mark.parametrize(
    "value", ["999%20Weird", "abc%20Letters", "20%20Short", "200%20OK%0D%0AX-Injected:%201"]
)
def test_invalid_status_gives_500(server, value):
    mark = server.log_mark()
    resp = server.get(f"/status?value={value}")
    assert resp.status == 500, resp
    assert resp.header("X-Injected") is None
    server.assert_serving()
    assert server.alive(), server.log(mark)


def test_bytes_status_gives_500(server):
    resp = server.get("/status?value=200%20OK&bytes=1")
    assert resp.status == 500
    server.assert_serving()


def test_valid_unusual_status_passes_through(server):
    resp = server.get("/status?value=299%20Custom%20Reason")
    assert resp.status == 299
    assert resp.reason == "Custom Reason"
    assert resp.body == b"status body"


def test_a_reason_phrase_is_sent_as_latin_1(server):
    """QA probe (session 24): a reason phrase with a latin-1 character
    ('299 Café') went out UTF-8 encoded, while the same response's headers were
    latin-1 (PEP 3333's native strings; gunicorn sends latin-1 too)."""
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/status?value=299%20Caf%C3%A9"))
        raw, _, status, reason, _ = conn.read_head()
    assert status == 299 and reason == "Café", raw
    assert raw.startswith(b"HTTP/1.1 299 Caf\xe9\r\n"), raw


@pytest.mark.parametrize("value, line", [("420", b"420 "), ("499%20", b"499 "), ("418", None)])
def test_a_status_with_no_reason_phrase(server, value, line):
    """QA (session 34): a code with no phrase of its own, given none ('420'), went
    out as hyper's placeholder `420 <none>`; it goes with an empty phrase now. A
    code that has one is given it ('418' is "418 I'm a teapot")."""
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/status?value={value}"))
        raw, _, status, reason, _ = conn.read_head()
    first = raw.split(b"\r\n", 1)[0]
    assert first == b"HTTP/1.1 " + (line or b"418 I'm a teapot"), raw
    assert b"<none>" not in raw


@pytest.mark.parametrize(
    "case", ["int-value", "bytes-name", "bytes-value", "newline", "non-latin1"]
)
def test_invalid_header_gives_500(server, case):
    resp = server.get(f"/header/{case}")
    assert resp.status == 500, resp
    assert resp.header("X-Injected") is None
    assert resp.header("X-Number") is None
    server.assert_serving()


def test_headers_not_in_a_list_say_so(server):
    """QA probe (session 28): headers given as a tuple of pairs were refused (500)
    as `invalid response header "(('Content-Type', ...),)"`, which named no
    fault; gunicorn takes them, and so does Siesta now. A dict (whose items are keys)
    is a 500 whose error says what was given."""
    resp = server.get("/header/tuple")
    assert (resp.status, resp.body) == (200, b"bad header body"), resp
    assert resp.header("Content-Type") == "text/plain"
    mark = server.log_mark()
    assert server.get("/header/dict").status == 500
    said = server.wait_log(
        r"TypeError: response headers must be a list of \(name, value\) tuples, not dict",
        since=mark,
    )
    assert said, server.log(mark)
    server.assert_serving()


@pytest.mark.parametrize("shape", ["items", "generator"])
def test_headers_as_any_iterable_of_pairs_are_taken(server, shape):
    """QA (session 34): headers given as `dict(...).items()` or a generator of
    pairs were a 500; gunicorn iterates whatever it is given, and so does Siesta
    now. A string (whose items are characters) is still a 500 that says so."""
    resp = server.get(f"/header/{shape}")
    assert (resp.status, resp.body) == (200, b"bad header body"), resp
    assert resp.header("Content-Type") == "text/plain"
    mark = server.log_mark()
    assert server.get("/header/string").status == 500
    said = server.wait_log(r"must be a list of \(name, value\) tuples, not str", since=mark)
    assert said, server.log(mark)
    server.assert_serving()


def test_headers_as_two_item_lists_are_taken(server):
    """QA (session 30): headers as a list of [name, value] lists were a 500;
    gunicorn takes any pair, and so does Siesta now. A three-item tuple is
    still a 500 that shows it."""
    resp = server.get("/header/lists")
    assert (resp.status, resp.body) == (200, b"bad header body"), resp
    assert resp.header("Content-Type") == "text/plain"
    mark = server.log_mark()
    assert server.get("/header/triple").status == 500
    said = server.wait_log(r"invalid response header \"\('Content-Type', 'text/plain', 'x'\)", mark)
    assert said, server.log(mark)
    server.assert_serving()


@pytest.mark.parametrize("shape", ["", "&same=1", "&lazy=1"])
def test_too_many_response_headers_are_the_apps_error(server, shape):
    """QA (session 35): 24,575 or more response headers (in a list, one name
    repeated, or from a generator) panicked in `http`'s HeaderMap inside
    start_response; the panic was caught, but logged as Siesta's own failure.
    More than 10,000 is now the app's error, as any bad header: a 500 whose
    traceback says why. 9,990 go out."""
    resp = server.get(f"/header/many?n=9990{shape}")
    assert resp.status == 200, resp
    if shape == "&same=1":
        assert len(resp.headers_all("X-Same")) == 9990
    else:
        assert resp.headers_all("X-9989") == ["v"]
    mark = server.log_mark()
    assert server.get(f"/header/many?n=40000{shape}").status == 500
    said = server.wait_log(r"ValueError: more than 10000 response headers", since=mark)
    assert said, server.log(mark)
    assert "panic" not in server.log(mark)
    server.assert_serving()


def test_many_bad_responses_do_not_crash_worker(server):
    pids = server.worker_pids()
    for i in range(20):
        case = ["int-value", "newline", "bytes-name", "non-latin1"][i % 4]
        assert server.get(f"/header/{case}").status == 500
        assert server.get("/status?value=999%20Weird").status == 500
    server.assert_serving()
    assert server.worker_pids() == pids and server.alive()
