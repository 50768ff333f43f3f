"""Replays the raw request corpus in tests/requests/ byte for byte, in both modes.

Each `valid/NAME.http` or `invalid/NAME.http` is one request exactly as sent on
the wire (`.gitattributes` keeps git from touching its CR LF bytes); its
`NAME.expect` JSON gives the expected status, for valid requests a subset of
the environ the app saw (`environ_app.dump`; `null` means absent, `$PORT` the
listening port) and the body it read, and names the RFC section or CVE the
vector comes from.  Invalid requests that are about framing carry a pipelined
`GET /smuggled` after them, which the app must never see; the connection must
be closed after every invalid request, and the app must not see the request at
all unless the expectation says `app_called` (a broken chunked body is found
only while the app reads it).  Each file is sent whole, then split in two at
every byte of its head (a sample of split points for heads over 512 bytes),
several connections at a time, with a short pause between the two writes so
the server reads them apart.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import rawhttp

CORPUS = Path(__file__).resolve().parent / "requests"
FILES = sorted(CORPUS.glob("*/*.http"))
SMUGGLED = "/smuggled"


def load(path):
    raw = path.read_bytes()
    expect = json.loads(path.with_suffix(".expect").read_text("utf-8"))
    return raw, expect


def head_length(raw):
    """Bytes up to the end of the first head (CRLF CRLF, or LF LF for bare-LF vectors)."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    return min(ends) if ends else len(raw)


def split_points(raw):
    n = head_length(raw)
    points = range(1, n)
    if n > 512:
        points = sorted({*range(1, 65), *range(n - 64, n), *range(65, n - 64, 97)})
    return list(points)


def send(server, parts, invalid):
    """Sends the parts as separate writes; returns (response or None, closed or None)."""
    with server.connect() as conn:
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.002)  # let the server read the first part alone
            conn.send(part)
        try:
            resp = conn.read_response()
        except rawhttp.IncompleteHead:
            return None, True
        return resp, (conn.wait_closed(timeout=5) if invalid else None)


def check(server, path, expect, resp, closed):
    name = path.stem
    assert resp is not None, f"{name}: closed without a response"
    assert resp.status == expect["status"], (name, resp.status, resp.body[:200])
    if path.parent.name == "invalid":
        assert closed, f"{name}: connection left open after an invalid request"
    if "environ" in expect or "body" in expect:
        dump = json.loads(resp.body)
        env = dump["environ"]
        for key, want in expect.get("environ", {}).items():
            if want == "$PORT":
                want = str(server.port)
            assert env.get(key) == want, (name, key, env.get(key), want)
        if "body" in expect:
            assert dump["body"] == expect["body"], name


def app_saw(server, raw):
    """The request's own PATH_INFO, as the app would record it."""
    line = raw.lstrip(b"\r\n").split(b"\n", 1)[0].split(b" ")
    target = line[1].decode("latin-1") if len(line) > 1 else ""
    path = target.split("?", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].split("/", 1)[1]
    return path in server.records("paths")


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_whole(server, path):
    raw, expect = load(path)
    resp, closed = send(server, [raw], path.parent.name == "invalid")
    check(server, path, expect, resp, closed)
    assert SMUGGLED not in server.records("paths"), "a smuggled request reached the app"
    if path.parent.name == "invalid" and not expect.get("app_called"):
        assert not app_saw(server, raw), "the app saw an invalid request"


@pytest.mark.timeout(120)
def test_split_at_every_byte_of_the_head(server):
    """Every file, split in two at each byte of its head: the answer never changes."""
    jobs = []
    for path in FILES:
        raw, expect = load(path)
        jobs += [(path, expect, raw[:k], raw[k:]) for k in split_points(raw)]

    def run(job):
        path, expect, first, rest = job
        resp, closed = send(server, [first, rest], path.parent.name == "invalid")
        check(server, path, expect, resp, closed)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(run, jobs))
    assert SMUGGLED not in server.records("paths"), "a smuggled request reached the app"
    server.assert_serving()


@pytest.mark.parametrize(
    "name", ["310-trailer-content-length", "311-trailer-transfer-encoding", "312-trailer-host"]
)
def test_a_forbidden_trailer_fails_a_body_the_app_did_not_read(server, name):
    """QA (session 30): a trailer field that frames or routes failed the body only
    when the app read it to its end; an app that answered without reading it left the
    connection open, and the request after the trailers was served. The server's
    discard of the body now fails it the same way: the connection closes after the
    app's answer, and the request after it is never read."""
    raw, _ = load(CORPUS / "invalid" / f"{name}.http")
    raw = raw.replace(b"POST /echo/", b"POST /ping/", 1)
    assert raw.startswith(b"POST /ping/")
    resp, closed = send(server, [raw], True)
    assert resp is not None and resp.status == 200 and resp.body == b"pong", resp
    assert closed, "the connection stayed open after a forbidden trailer"
    assert SMUGGLED not in server.records("paths"), "the request after the trailers was served"
    server.assert_serving()
