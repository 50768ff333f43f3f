"""Apps that read the request body (wsgi.input) in every way PEP 3333 allows.

`read_method` reads with the method named by ?method= and answers the pieces it
got as JSON; `sha256` hashes the body in ?chunk= sized reads; `echo` and
`stream_echo` send it back (whole, or line by line while it still arrives);
`reject` refuses bodies over 64 KiB without reading them; `side_effect` and
`catch_disconnect` leave records the test can see before any response;
`read_then_hold` reads ?n= bytes, then holds its read until the test says go;
`fail_then_hold` holds after a read that failed; `two_readers` reads from two
threads at once.
"""

import hashlib
import json
import threading

from records import params, record, token, wait_for

LIMIT = 64 * 1024


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _pieces(stream, method, query):
    n = int(query.get("n", 10))
    limit = int(query.get("limit", 5))
    hint = int(query.get("hint", 20))
    if method == "read":
        return [stream.read()]
    if method == "read-1":
        return [stream.read(-1)]
    if method == "read-none":
        return [stream.read(None)]
    if method == "read-n":
        return list(iter(lambda: stream.read(n), b""))
    if method == "readline":
        return list(iter(stream.readline, b""))
    if method == "readline-limit":
        return list(iter(lambda: stream.readline(limit), b""))
    if method == "readlines":
        return stream.readlines()
    if method == "readlines-hint":
        batches = list(iter(lambda: stream.readlines(hint), []))
        return [b"".join(batch) for batch in batches]
    if method == "iter":
        return list(stream)
    if method == "mixed":  # readline, then read(n), then the rest
        return [stream.readline(), stream.read(n), stream.read()]
    raise ValueError(f"unknown read method {method!r}")


def read_method(environ, start_response):
    query = params(environ)
    stream = environ["wsgi.input"]
    got = _pieces(stream, query["method"], query)
    after = [stream.read(), stream.read(1), stream.readline(), stream.read(-1)]
    return _json(
        start_response,
        {
            "pieces": [p.decode("latin-1") for p in got],
            "after": [p.decode("latin-1") for p in after],
        },
    )


def sha256(environ, start_response):
    query = params(environ)
    size = int(query.get("chunk", 65536))
    hashing = query.get("hash", "1") == "1"
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    while True:
        data = stream.read(size)
        if not data:
            break
        total += len(data)
        if hashing:
            digest.update(data)
    return _json(start_response, {"size": total, "sha256": digest.hexdigest() if hashing else None})


def echo(environ, start_response):
    data = environ["wsgi.input"].read()
    start_response(
        "200 OK",
        [
            ("Content-Type", environ.get("CONTENT_TYPE", "text/plain")),
            ("Content-Length", str(len(data))),
        ],
    )
    return [data]


def read_some(environ, start_response):
    """Reads `n` bytes (query `n`, default 3) and answers without reading on."""
    data = environ["wsgi.input"].read(int(params(environ).get("n", 3)))
    return _json(start_response, {"read": len(data)})


def read_exact(environ, start_response):
    """Reads exactly CONTENT_LENGTH bytes and echoes them, as Werkzeug's and
    Django's limited streams do: the body's end is never asked for."""
    data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def stream_echo(environ, start_response):
    """Yield every line as soon as it is read: proves full-duplex streaming."""
    stream = environ["wsgi.input"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter(stream.readline, b"")


def reject(environ, start_response):
    """413 for declared bodies over 64 KiB without touching wsgi.input."""
    declared = environ.get("CONTENT_LENGTH")
    if declared and int(declared) > LIMIT:
        return _json(start_response, {"error": "too large"}, "413 Content Too Large")
    data = environ["wsgi.input"].read(LIMIT + 1)
    if len(data) > LIMIT:
        return _json(start_response, {"error": "too large"}, "413 Content Too Large")
    return _json(start_response, {"size": len(data)})


def side_effect(environ, start_response):
    """Record 'started' before reading anything, then read the body."""
    name = "effect-" + token(environ)
    record(name, "started")
    if params(environ).get("write") == "1":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started\n")
        data = environ["wsgi.input"].read()
        record(name, f"read {len(data)}")
        return [b"read %d\n" % len(data)]
    data = environ["wsgi.input"].read()
    record(name, f"read {len(data)}")
    return _json(start_response, {"read": len(data)})


def catch_disconnect(environ, start_response):
    """Read in 1000-byte pieces and record how the body ended (EOF, disconnect, timeout)."""
    import siesta  # the server under test provides it

    name = "disconnect-" + token(environ)
    stream = environ["wsgi.input"]
    total = 0
    try:
        while True:
            data = stream.read(1000)
            if not data:
                record(name, f"eof read={total}")
                break
            total += len(data)
    except siesta.ClientDisconnected as exc:
        reset = isinstance(exc, ConnectionResetError)  # as a socket's, so an OSError
        record(name, f"ClientDisconnected reset={reset} read={total}")
    except siesta.ClientTimeout as exc:
        record(
            name,
            f"ClientTimeout oserror={isinstance(exc, OSError)} "
            f"timeouterror={isinstance(exc, TimeoutError)} read={total}",
        )
    except Exception as exc:
        record(name, f"other {type(exc).__name__} read={total}")
        raise
    return _json(start_response, {"read": total})


def read_then_hold(environ, start_response):
    """Read ?n= bytes once, record it, then wait (bounded) for the record ?go= without
    reading more: what the server takes from the socket meanwhile is its read-ahead."""
    query = params(environ)
    data = environ["wsgi.input"].read(int(query.get("n", 10)))
    record("held-" + token(environ), f"read {len(data)}")
    released = wait_for(query["go"], timeout=30.0)
    return _json(start_response, {"read": len(data), "released": released})


def fail_then_hold(environ, start_response):
    """`read()` the whole body, which fails (the test lets --body-timeout pass),
    record the failure, then hold without reading until the record ?go=."""
    query = params(environ)
    try:
        environ["wsgi.input"].read()
        failed = None
    except OSError as e:
        failed = type(e).__name__
    record("held-" + token(environ), f"failed {failed}")
    released = wait_for(query["go"], timeout=30.0)
    return _json(start_response, {"failed": failed, "released": released})


def thrown_then_hold(environ, start_response):
    """gevent mode: a `read()` of the whole body ended by a `gevent.Timeout`
    thrown into the parked greenlet, then hold like `fail_then_hold`."""
    import gevent

    query = params(environ)
    try:
        with gevent.Timeout(0.3):
            environ["wsgi.input"].read()
        failed = None
    except gevent.Timeout:
        failed = "Timeout"
    record("held-" + token(environ), f"failed {failed}")
    released = wait_for(query["go"], timeout=30.0)
    return _json(start_response, {"failed": failed, "released": released})


def reader_left_behind(environ, start_response):
    """Starts a thread (a greenlet under gevent) that reads the whole body,
    and returns once it has read the first byte, leaving it waiting for the
    rest; the thread records how its read ended."""
    stream = environ["wsgi.input"]
    tok = token(environ)
    started = threading.Event()

    def read():
        try:
            stream.read(1)
            started.set()
            outcome = f"read {len(stream.read())}"
        except Exception as e:  # noqa: BLE001 - the outcome is the record
            outcome = f"failed {type(e).__name__}"
        record("reader-" + tok, outcome)

    threading.Thread(target=read, daemon=True).start()
    started.wait(10)
    return _json(start_response, {"started": started.is_set()})


def two_readers(environ, start_response):
    """Two threads (greenlets under gevent) each read ?n= bytes of the body at
    once, in one `read(n)` or, with ?lines=K, in K `readline()`s; with ?own=1
    the app's own thread is one of them, and with ?own=first it reads its share
    before it starts the other thread (so the app's thread then waits in
    `join()` while a thread outside the pool reads). Answers what each got,
    and whether either is still stuck."""
    query = params(environ)
    stream = environ["wsgi.input"]
    n = int(query.get("n", 1000))
    lines = int(query.get("lines", 0))
    got = [None, None]

    def read(i):
        got[i] = b"".join(stream.readline() for _ in range(lines)) if lines else stream.read(n)

    own = query.get("own")
    if own == "first":
        read(1)
    threads = [threading.Thread(target=read, args=(i,)) for i in range(1 if own else 2)]
    for t in threads:
        t.start()
    if own == "1":
        read(1)
    for t in threads:
        t.join(20)
    return _json(
        start_response,
        {
            "sizes": sorted(len(g) for g in got if g is not None),
            "stuck": sum(t.is_alive() for t in threads),
        },
    )
