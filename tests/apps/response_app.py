"""Apps that exercise start_response, response framing and app failures.

Routes (the second path segment picks the case): framing cases (`/framing/...`),
status and header validation (`/status`, `/header/...`, `/hop`), exc_info rules
(`/exc/...`), exceptions before and after the headers (`/raise/...`), the
write() callable, wsgi.file_wrapper, streaming (`/stream`, `/gated`, `/distinct`), and
iterables whose close() calls are recorded (`/close/...`).
"""

import gzip
import hashlib
import io
import os
import sys
import tempfile
import time

import records
from records import params, record, token

TEXT = [("Content-Type", "text/plain")]


def _case(environ):
    parts = environ.get("PATH_INFO", "").split("/")
    return parts[2] if len(parts) > 2 else ""


def _gen(*chunks):
    yield from chunks


class _IteratesOtherwise(list):
    """A list whose iteration is not its items (a body is what iteration gives)."""

    def __iter__(self):
        yield b"Z" * 400_000


def framing(environ, start_response):
    case = _case(environ)
    if case == "cl-exceeded-gen":
        start_response("200 OK", TEXT + [("Content-Length", "5")])
        return _gen(b"01234", b"56789")
    if case == "cl-exceeded-one":
        start_response("200 OK", TEXT + [("Content-Length", "5")])
        return _gen(b"0123456789")
    if case == "cl-exceeded-list":
        start_response("200 OK", TEXT + [("Content-Length", "5")])
        return [b"0123456789"]
    if case == "cl-short":
        start_response("200 OK", TEXT + [("Content-Length", "10")])
        return _gen(b"01234")
    if case == "cl-short-list":
        start_response("200 OK", TEXT + [("Content-Length", "10")])
        return [b"01234"]
    if case == "cl-short-empty":
        start_response("200 OK", TEXT + [("Content-Length", "10")])
        return []
    if case == "big-one":  # ?size= bytes in one buffer; a request body is never read
        size = int(params(environ).get("size", 1 << 20))
        start_response("200 OK", TEXT + [("Content-Length", str(size))])
        return [b"x" * size]
    if case == "one-element":
        start_response("200 OK", TEXT)
        return [b"hello world"]
    if case == "generator":
        start_response("200 OK", TEXT)
        return _gen(b"alpha ", b"beta ", b"gamma")
    if case == "list-repeated":  # ?n= items of one 100-byte object: tiny in the app
        n = int(params(environ).get("n", 1000))
        length = [] if "nolen" in params(environ) else [("Content-Length", str(100 * n))]
        start_response("200 OK", TEXT + length)
        return [b"q" * 100] * n
    if case == "list-subclass":  # its items say 300000 bytes, its iteration 400000
        start_response("200 OK", TEXT)
        return _IteratesOtherwise([b"a" * 1000] * 300)
    if case == "list-many":
        start_response("200 OK", TEXT)
        return [b"alpha ", b"beta ", b"gamma"]
    if case == "empty":
        start_response("200 OK", TEXT)
        return []
    if case == "cl-given":  # ?cl= one Content-Length value, &cl2= a second; ?gen streams
        query = params(environ)
        given = [("Content-Length", query[k]) for k in ("cl", "cl2") if k in query]
        start_response("200 OK", TEXT + given)
        return _gen(b"012", b"34") if "gen" in query else [b"01234"]
    if case in ("204", "205", "304", "204-cl", "205-cl", "304-cl"):
        status = {"204": "204 No Content", "205": "205 Reset Content", "304": "304 Not Modified"}[
            case[:3]
        ]
        length = [("Content-Length", "26")] if case.endswith("-cl") else []
        start_response(status, TEXT + length)
        return [b"this body must not be sent"]
    if case in ("204-writes", "304-writes"):
        environ["wsgi.input"].read()
        write = start_response("204 No Content" if case[0] == "2" else "304 Not Modified", [])
        for _ in range(1000):
            write(b"this body must not be sent")
        return []
    if case == "205-gen":
        write = start_response("205 Reset Content", TEXT)
        write(b"this body must not be sent")
        return _gen(b"nor ", b"this")
    raise ValueError(f"unknown framing case {case!r}")


def status(environ, start_response):
    """start_response with ?value= as the status line (e.g. '999 Weird')."""
    value = params(environ)["value"]
    if params(environ).get("alone"):  # the headers forgotten, the code as an int
        start_response(int(value))
    start_response(value.encode("latin-1") if params(environ).get("bytes") else value, TEXT)
    return [b"status body"]


BAD_HEADERS = {
    "int-value": ("X-Number", 5),
    "bytes-name": (b"X-Bytes", "v"),
    "bytes-value": ("X-Bytes", b"v"),
    "newline": ("X-Split", "a\r\nX-Injected: 1"),
    "non-latin1": ("X-Unicode", "snow \u2603"),
}


def header(environ, start_response):
    shapes = ("tuple", "dict", "lists", "triple", "items", "generator", "string")
    if _case(environ) in shapes:  # PEP 3333: a list of tuples
        given = {
            "tuple": tuple(TEXT),
            "dict": dict(TEXT),
            "items": dict(TEXT).items(),
            "generator": (pair for pair in TEXT),
            "string": "Content-Type: text/plain",
            "lists": [list(pair) for pair in TEXT],
            "triple": [(*TEXT[0], "x")],
        }[_case(environ)]
        start_response("200 OK", given)
    elif _case(environ) == "many":  # ?n=N[&same=1][&lazy=1]: N more headers
        query = params(environ)
        names = ("X-Same" if query.get("same") else f"X-{i}" for i in range(int(query["n"])))
        more = ((name, "v") for name in names)
        start_response("200 OK", TEXT + list(more) if not query.get("lazy") else more)
    else:
        start_response("200 OK", TEXT + [BAD_HEADERS[_case(environ)]])
    return [b"bad header body"]


def hop(environ, start_response):
    start_response("200 OK", TEXT + [(params(environ)["name"], "x")])
    return [b"hop body"]


def late_start(environ, start_response):
    """Yields b"" before calling start_response, then the body (PEP 3333: an empty
    item sends nothing, so the headers may still come)."""
    yield b""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b""
    yield b"late start"


def exc(environ, start_response):
    case = _case(environ)
    name = "exc-" + token(environ)
    if case == "second-call":
        start_response("200 OK", TEXT)
        try:
            start_response("201 Created", TEXT)
        except Exception as err:
            record(name, f"second call raised {type(err).__name__}")
            raise
        record(name, "second call accepted")
        return [b"second call accepted"]
    if case == "before-headers":
        start_response("200 OK", TEXT + [("X-First", "1")])
        try:
            raise KeyError("replaced")
        except KeyError:
            start_response(
                "500 Internal Server Error", TEXT + [("X-Handled", "yes")], sys.exc_info()
            )
        return [b"handled"]
    if case == "after-headers":
        write = start_response("200 OK", TEXT)
        write(b"first")
        try:
            raise KeyError("too late")
        except KeyError:
            try:
                start_response("500 Internal Server Error", TEXT, sys.exc_info())
            except KeyError:
                record(name, "reraised KeyError")
                raise
            record(name, "not reraised")
        return [b"not reraised"]
    raise ValueError(f"unknown exc case {case!r}")


class Boom(Exception):
    """The app failure the tests look for in the server log."""


def fail(environ, start_response):
    case = _case(environ)
    marker = "boom-" + token(environ)
    if case == "before":
        raise Boom(marker)
    if case == "first-next":
        start_response("200 OK", TEXT)
        return _raising(None, marker)
    if case == "after-chunk":
        start_response("200 OK", TEXT)
        return _raising(b"partial", marker)
    if case == "after-write":
        write = start_response("200 OK", TEXT)
        write(b"partial")
        raise Boom(marker)
    if case == "gated-chunk":  # yield, wait for the test to have read it, then raise
        start_response("200 OK", TEXT)
        return _raising(b"partial", marker, params(environ)["go"])
    if case == "gated-write":
        write = start_response("200 OK", TEXT)
        write(b"partial")
        records.wait_for(params(environ)["go"])
        raise Boom(marker)
    if case == "cl-after-chunk":
        start_response("200 OK", TEXT + [("Content-Length", "100")])
        return _raising(b"0123456789", marker)
    if case == "big-after-chunks":  # 1 MiB, then the failure
        start_response("200 OK", TEXT)
        return _raising_after(16, marker)
    if case == "fork-after-chunk":  # a child process keeps a copy of the socket
        start_response("200 OK", TEXT)
        return _forking([b"partial"], marker, params(environ)["name"])
    if case == "fork-after-big":  # the same after 1 MiB
        start_response("200 OK", TEXT)
        return _forking([b"x" * 65536] * 16, marker, params(environ)["name"])
    raise ValueError(f"unknown raise case {case!r}")


def _raising_after(chunks, marker):
    for _ in range(chunks):
        yield b"x" * 65536
    raise Boom(marker)


def _forking(chunks, marker, name):
    yield from chunks
    pid = os.fork()
    if pid == 0:  # the child holds every descriptor until it ends (at most 30 s)
        from gevent.monkey import get_original

        get_original("time", "sleep")(30)  # not gevent's: no hub runs in the child
        os._exit(0)
    record(name, str(pid))
    raise Boom(marker)


def _raising(first, marker, go=None):
    if first is not None:
        yield first
    if go is not None:
        records.wait_for(go)
    raise Boom(marker)


def write_callable(environ, start_response):
    query = params(environ)
    headers = list(TEXT)
    if "length" in query:
        headers.append(("Content-Length", query["length"]))
    write = start_response("200 OK", headers)
    if "empty" in query:  # write(b"") sends the head; the body waits for ?empty= (go)
        write(b"")
        return [b"after:" + (b"go" if records.wait_for(query["empty"]) else b"timeout")]
    if "bad" in query:  # write() given what is not bytes: the app's error, a 500
        write({"bytearray": bytearray(b"x"), "none": None}[query["bad"]])
    block = b"w" * int(query.get("block", 0))
    delay = float(query.get("delay", 0))
    for i in range(int(query.get("n", 3))):
        write(block or b"part%d " % i)
        if delay:
            time.sleep(delay)
    return [query.get("tail", "").encode()]


def _file_bytes(size):
    return bytes((i * 31 + 7) % 251 for i in range(size))


class _Inverted(io.BufferedReader):
    """A file whose read() is not its file's bytes (each byte inverted)."""

    def read(self, size=-1):
        return bytes(b ^ 0xFF for b in super().read(size))


def _temp_file(data):
    fd, path = tempfile.mkstemp(dir=records.RECORD_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def file_wrapper(environ, start_response):
    """Serve ?size= bytes through wsgi.file_wrapper, from a real file (from ?offset=),
    a BytesIO, a pipe, /proc/self/status, a gzip file or a file whose read() inverts
    its bytes (?kind=), with the Content-Length ?length= and the block size ?blksize=
    if given; with ?index=, the app reads the wrapper by index and returns the blocks."""
    query = params(environ)
    size = int(query.get("size", 100000))
    data = _file_bytes(size)
    headers = list(TEXT)
    if "length" in query:
        headers.append(("Content-Length", query["length"]))
    if query.get("kind") == "bytesio":
        filelike = io.BytesIO(data)
    elif query.get("kind") == "proc":  # a regular file whose size reads 0
        filelike = open("/proc/self/status", "rb")  # noqa: SIM115 - the server closes it
    elif query.get("kind") == "pipe":  # not a regular file: read through the iterable
        read_end, write_end = os.pipe()
        # Small enough for the pipe's buffer. Closed through the file object:
        # gevent's os.close of a pipe takes effect only after a hub turn.
        with os.fdopen(write_end, "wb") as w:
            w.write(data)
        filelike = os.fdopen(read_end, "rb")
    elif query.get("kind") == "gzip":  # its fileno() is the compressed file's
        path = _temp_file(gzip.compress(data))
        filelike = gzip.open(path, "rb")  # noqa: SIM115 - the server closes it
        os.unlink(path)
    elif query.get("kind") == "text-next":  # a text file past next(): tell() refuses
        path = _temp_file(b"line1\nline2\n")
        filelike = open(path, encoding="utf-8")  # noqa: SIM115 - the server closes it
        os.unlink(path)
        next(filelike)
    elif query.get("kind") == "inverted":
        path = _temp_file(data)
        filelike = _Inverted(io.FileIO(path, "rb"))
        os.unlink(path)
    else:
        fd, path = tempfile.mkstemp(dir=records.RECORD_DIR)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        filelike = open(path, "rb")  # noqa: SIM115 - the server closes it
        os.unlink(path)
    if "offset" in query:
        filelike.seek(int(query["offset"]))
    start_response("200 OK", headers)
    wrapper = environ["wsgi.file_wrapper"](filelike, int(query.get("blksize", 8192)))
    if "index" in query:  # read by index, as the old iteration protocol did
        blocks = []
        try:
            while True:
                blocks.append(wrapper[len(blocks)])
        except IndexError:
            wrapper.close()
        return blocks
    return wrapper


def stream(environ, start_response):
    """?count= chunks of ?size= bytes, ?delay= seconds apart (a slow stream)."""
    query = params(environ)
    count, size = int(query.get("count", 5)), int(query.get("size", 10))
    delay = float(query.get("delay", 0))
    start_response("200 OK", TEXT)

    def body():
        for i in range(count):
            yield (b"%d" % (i % 10)) * size
            if delay:
                time.sleep(delay)

    return body()


def distinct_block(i, size):
    """Block `i` of /distinct: `size` bytes that differ from every other block."""
    return (hashlib.sha256(b"%d" % i).digest() * (size // 32 + 1))[:size]


def distinct(environ, start_response):
    """?count= blocks of ?size= bytes, each a fresh bytes object made from one
    bytearray that is overwritten right after the block is yielded (issue 16: a
    body item handed on without a copy must still arrive as it was yielded)."""
    query = params(environ)
    count, size = int(query.get("count", 64)), int(query.get("size", 65536))
    pause = float(query.get("pause", 0))  # seconds between blocks: slower than the client
    start_response("200 OK", TEXT + [("Content-Length", str(count * size))])

    def body():
        buf = bytearray(size)
        for i in range(count):
            buf[:] = distinct_block(i, size)
            yield bytes(buf)
            buf[:] = bytes(size)
            if pause:
                time.sleep(pause)

    return body()


def gated(environ, start_response):
    """Yield one chunk, wait (bounded) for the test's ?go= record, yield another;
    with ?late=1, wait for it before the response starts (and then raise, with
    ?fail=1)."""
    query = params(environ)
    go = query["go"]
    if query.get("late"):
        records.wait_for(go)
        if query.get("fail"):
            raise RuntimeError("gated app failed on purpose")
    start_response("200 OK", TEXT)

    def body():
        yield b"first;"
        yield b"second:" + (b"go" if records.wait_for(go) else b"timeout")

    return body()


class ClosingIterable:
    """An iterable that records every close() call under close-<token>."""

    def __init__(self, name, chunks, fail_at=None, delay=0.0, close_delay=0.0):
        self.name, self.chunks, self.fail_at, self.delay = name, chunks, fail_at, delay
        self.close_delay = close_delay

    def __iter__(self):
        for i, data in enumerate(self.chunks):
            if i == self.fail_at:
                raise Boom(self.name)
            if i and self.delay:
                time.sleep(self.delay)
            yield data

    def close(self):
        if self.close_delay:
            record(self.name, "closing")
            time.sleep(self.close_delay)
        record(self.name, "close")


def close(environ, start_response):
    case = _case(environ)
    name = "close-" + token(environ)
    start_response("204 No Content" if case == "204-stream" else "200 OK", TEXT)
    if case == "normal":
        return ClosingIterable(name, [b"a", b"b", b"c"])
    if case == "error":
        return ClosingIterable(name, [b"a", b"b", b"c"], fail_at=1)
    if case == "error-first":
        return ClosingIterable(name, [b"a"], fail_at=0)
    if case == "stream":  # at most ~20 s of 16 KiB chunks, for client-disconnect tests
        return ClosingIterable(name, [b"x" * 16384] * 4000, delay=0.005)
    if case == "slow-close":  # a close() that takes 2 s, after the response went out
        return ClosingIterable(name, [b"a"], close_delay=2.0)
    if case == "slower-close":  # 6 s: past the master's 2 s for a fast stop
        return ClosingIterable(name, [b"a"], close_delay=6.0)
    if case == "204-stream":  # ~20 s of chunks the server drops (a 204 has no body)
        return ClosingIterable(name, [b"x" * 100] * 4000, delay=0.005)
    raise ValueError(f"unknown close case {case!r}")
