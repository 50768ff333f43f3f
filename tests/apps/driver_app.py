"""Every way a WSGI app can end, one route each, for the driver conformance test.

`/CASE?token=T`: the app answers, fails or misbehaves as CASE says, and the
iterable's close() (where there is one) records `close-T`. The same app runs
in thread mode (Rust's driver) and gevent mode (the hub's Python loop), and
tests/test_driver_modes.py asserts both give the same bytes and log lines.
"""

import time

from records import record, token

TEXT = [("Content-Type", "text/plain")]


class Closing:
    """An iterable over `items` whose close() is recorded (and may raise)."""

    def __init__(self, tok, items, close_raises=False):
        self.tok, self.items, self.close_raises = tok, items, close_raises

    def __iter__(self):
        for item in self.items:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        record(f"close-{self.tok}", "closed")
        if self.close_raises:
            raise RuntimeError(f"close-boom-{self.tok}")


def endless(tok):
    """Yields until the client goes away."""
    try:
        for _ in range(2000):
            yield b"x" * 1024
            time.sleep(0.005)
    finally:
        record(f"close-{tok}", "closed")


def app(environ, start_response):
    tok = token(environ)
    case = environ["PATH_INFO"].strip("/")
    boom = ValueError(f"boom-{tok}")
    if case == "ok-list":
        start_response("200 OK", TEXT)
        return [b"alpha ", b"beta"]
    if case == "ok-iter":
        start_response("200 OK", TEXT)
        return Closing(tok, [b"alpha ", b"", b"beta"])
    if case == "raise-before":
        raise boom
    if case == "raise-after-start":
        start_response("200 OK", TEXT)
        raise boom
    if case == "iter-raises-first":
        start_response("200 OK", TEXT)
        return Closing(tok, [boom])
    if case == "iter-raises-later":
        start_response("200 OK", TEXT)
        return Closing(tok, [b"partial", boom])
    if case == "close-raises":
        start_response("200 OK", TEXT)
        return Closing(tok, [b"done"], close_raises=True)
    if case == "bad-status":
        start_response("999 Nope", TEXT)
        return [b"never"]
    if case == "non-bytes":
        start_response("200 OK", TEXT)
        return Closing(tok, ["text is not bytes"])
    if case == "no-start":
        return Closing(tok, [])
    if case == "write-then-return":
        write = start_response("200 OK", TEXT)
        write(b"written ")
        return Closing(tok, [b"returned"])
    if case == "declared-short":
        start_response("200 OK", TEXT + [("Content-Length", "4")])
        return Closing(tok, [b"0123456789"])
    if case == "client-gone":
        start_response("200 OK", TEXT)
        return endless(tok)
    start_response("404 Not Found", TEXT)
    return [b"no such case"]
