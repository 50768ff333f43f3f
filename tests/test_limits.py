"""--limit-request-line, --limit-request-fields and --limit-request-field-size.

Each limit is set small and tested just under, at and just over its value, in
both modes: under and at get the app's answer, over gets 414 or 431 and a
closed connection, and the app never sees it.  0 means "no limit beyond the
head buffer" for the sizes, as in gunicorn, and gunicorn's spelling
--limit-request-field_size is accepted too.
"""

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


@pytest.mark.parametrize("count,status", [(7, 200), (8, 200), (9, 431)])
def test_field_count(limited, count, status):
    fields = b"Host: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(count - 1))
    resp, closed = exchange(limited, b"GET /ping HTTP/1.1\r\n" + fields + b"\r\n")
    assert resp.status == status, resp
    if status != 200:
        assert closed


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
    resp, closed = exchange(
        srv, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n"
    )
    assert (resp.status, closed) == (431, True)


def test_defaults_are_gunicorns(server):
    """4094-byte line and 8190-byte field pass, one more byte does not (gunicorn's defaults)."""
    at, _ = exchange(server, line_of(4094, "d") + b"\r\nHost: x\r\n\r\n")
    over, _ = exchange(server, line_of(4095, "d") + b"\r\nHost: x\r\n\r\n")
    field = b"X-Big: " + b"v" * (8190 - 7)
    ok, _ = exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n")
    big, _ = exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + field + b"v\r\n\r\n")
    assert (at.status, over.status, ok.status, big.status) == (200, 414, 200, 431)
