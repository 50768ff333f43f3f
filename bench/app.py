"""The one WSGI application every benchmarked server runs.

Four routes, each as cheap as the scenario allows so that what is measured is
the server, not the app: `/` says hello (13 bytes), `/upload` streams the body
through sha256 in 64 KiB reads and answers "<size> <sha256>", `/reject` answers
413 to any declared body over 64 KiB without reading it, and `/stream?mib=N`
sends N MiB in 64 KiB blocks with a Content-Length (`/file?mib=N` sends the same
through `wsgi.file_wrapper` from a temporary file). The app sets no hop-by-hop
header (PEP 3333): closing or keeping the connection is the server's choice.
"""

import hashlib
import tempfile

CHUNK = 64 * 1024
HELLO = b"Hello, world!"
REJECT_LIMIT = 64 * 1024
_BLOCK = b"x" * CHUNK
_PLAIN = "text/plain"


def _hello(environ, start_response):
    start_response("200 OK", [("Content-Type", _PLAIN), ("Content-Length", "13")])
    return [HELLO]


def _upload(environ, start_response):
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    remaining = int(declared) if declared else None
    digest = hashlib.sha256()
    size = 0
    while remaining is None or remaining > 0:
        want = CHUNK if remaining is None else min(CHUNK, remaining)
        block = stream.read(want)
        if not block:
            break
        digest.update(block)
        size += len(block)
        if remaining is not None:
            remaining -= len(block)
    body = f"{size} {digest.hexdigest()}\n".encode()
    start_response("200 OK", [("Content-Type", _PLAIN), ("Content-Length", str(len(body)))])
    return [body]


def _reject(environ, start_response):
    declared = int(environ.get("CONTENT_LENGTH") or 0)
    if declared > REJECT_LIMIT:
        body = b"too large\n"
        status = "413 Payload Too Large"
    else:
        size = len(environ["wsgi.input"].read(declared)) if declared else 0
        body = f"{size}\n".encode()
        status = "200 OK"
    start_response(status, [("Content-Type", _PLAIN), ("Content-Length", str(len(body)))])
    return [body]


def _blocks(count):
    for _ in range(count):
        yield _BLOCK


def _stream(environ, start_response):
    mib = 1
    for pair in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = pair.partition("=")
        if key == "mib" and value.isdigit():
            mib = int(value)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(mib * 1024 * 1024))],
    )
    return _blocks(mib * 1024 * 1024 // CHUNK)


_FILES = {}


def _file_of(mib):
    """A file of `mib` MiB, written once per worker (its writing is not what is measured).
    It has no name, so nothing is left behind however the worker ends; each request
    opens it anew through /proc (Linux) for a position of its own."""
    if mib not in _FILES:
        handle = tempfile.TemporaryFile()
        for _ in range(mib * 1024 * 1024 // CHUNK):
            handle.write(_BLOCK)
        handle.flush()
        _FILES[mib] = handle
    return open(f"/proc/self/fd/{_FILES[mib].fileno()}", "rb")


def _file(environ, start_response):
    mib = 1
    for pair in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = pair.partition("=")
        if key == "mib" and value.isdigit():
            mib = int(value)
    handle = _file_of(mib)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(mib * 1024 * 1024))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:
        return iter(lambda: handle.read(CHUNK), b"")
    return wrapper(handle, CHUNK)


def _not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Type", _PLAIN), ("Content-Length", "10")])
    return [b"not found\n"]


ROUTES = {"/": _hello, "/upload": _upload, "/reject": _reject, "/stream": _stream, "/file": _file}


def app(environ, start_response):
    """Dispatch on PATH_INFO; unknown paths get 404."""
    return ROUTES.get(environ.get("PATH_INFO", "/"), _not_found)(environ, start_response)


application = app
