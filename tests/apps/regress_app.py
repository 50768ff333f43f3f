"""Apps for regression tests of review findings (see tests/test_regressions.py).

/readline0 calls readline(0) and read(0), then refuses with 413 without
reading; /local answers the threading.local value a previous request left
(None when locals are per request) and stores its own; /timeout leaves a
gevent.Timeout running after it answers; /slow?name= records its start and
end around a one-second sleep; /big streams 2000 x 64 KiB (/big-write with
the `write()` callable, letting what it raises through); /whole?mib=N
answers N MiB in one body item; /fork-big?name= forks a child that holds
the connection's socket for up to 30 s (its pid in the record `name`), then
streams like /big; /fork-return?name=&code= forks a child that records its pid
and raises SystemExit(code) back into the server, /fork-linger?name= one that
lives 30 s; /close-listening closes the worker's listening sockets; /pid and it
answer the worker's pid; /close-then-fork closes them too, then answers what a
forked child sent through a socketpair; /read-in-close?name= answers without
reading the body (&fail=1: its iteration raises), and its iterable's close()
reads it and records what it got (or the exception); /ping answers pong.
"""

import os
import threading
import time

from records import params, record

_local = threading.local()


def _text(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class _ReadsInClose:
    """A response whose close() reads the request body, as a middleware that
    drains it itself does."""

    def __init__(self, environ, name, fail):
        self.environ, self.name, self.fail = environ, name, fail

    def __iter__(self):
        if self.fail:
            raise RuntimeError("the iterable failed on purpose")
        return iter([b"answered"])

    def close(self):
        try:
            got = self.environ["wsgi.input"].read()
            record(self.name, f"read {got!r}")
        except Exception as e:  # recorded, so the test sees it
            record(self.name, f"raised {type(e).__name__}: {e}")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = params(environ)
    if path == "/readline0":
        stream = environ["wsgi.input"]
        got = stream.readline(0) + stream.read(0)
        return _text(start_response, b"got %d" % len(got), "413 Payload Too Large")
    if path == "/local":
        previous = getattr(_local, "value", None)
        _local.value = query.get("value", "")
        return _text(start_response, repr(previous).encode())
    if path == "/timeout":
        import gevent

        gevent.Timeout(0.2).start()  # never cancelled: it fires after the response
        return _text(start_response, b"ok")
    if path == "/slow":
        record("slow", f"start {query['name']}")
        time.sleep(1.0)
        record("slow", f"end {query['name']}")
        return _text(start_response, b"slow")
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 65536 for _ in range(2000))
    if path == "/big-write":
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(2000):
            write(b"x" * 65536)
        return []
    if path == "/fork-big":
        pid = os.fork()
        if pid == 0:  # the child holds every descriptor until it ends
            from gevent.monkey import get_original

            get_original("time", "sleep")(30)  # not gevent's: no hub runs in the child
            os._exit(0)
        record(query["name"], str(pid))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 65536 for _ in range(2000))
    if path in ("/close-listening", "/close-then-fork"):  # closes the listening sockets
        import socket

        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            try:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    os.close(fd)
            except OSError:
                pass
            finally:
                sock.close()
    if path == "/close-then-fork":  # the listeners' numbers reused, then a fork
        import socket

        ours, theirs = socket.socketpair()
        child = os.fork()
        if child == 0:
            theirs.sendall(b"hello from child")
            os._exit(0)
        theirs.close()
        got = ours.recv(100)
        os.waitpid(child, 0)
        return _text(start_response, got or b"(nothing)")
    if path in ("/pid", "/close-listening"):
        return _text(start_response, str(os.getpid()).encode())
    if path in ("/fork-return", "/fork-linger"):
        pid = os.fork()
        if pid == 0:
            record(query["name"], str(os.getpid()))
            if path == "/fork-linger":  # lives on, as a background child may
                from gevent.monkey import get_original

                get_original("time", "sleep")(30)
                os._exit(0)
            # Returns through the app into the server, as a child that
            # ends with sys.exit() does.
            raise SystemExit(int(query.get("code", "0")))
        return _text(start_response, str(os.getpid()).encode())
    if path == "/read-in-close":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
        return _ReadsInClose(environ, query["name"], bool(query.get("fail")))
    if path == "/whole":
        return _text(start_response, b"x" * (int(query.get("mib", "1")) << 20))
    return _text(start_response, b"pong")
