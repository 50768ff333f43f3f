"""Apps for the gevent-mode tests: cooperative sockets, threading.local, slot limits.

`app` dispatches on the first PATH_INFO segment: /ping answers `pong`;
/upstream?port= opens a (monkey-patched) socket to a test-side TCP server and
answers its reply; /local?value=&group=&n= stores the value in a module-level
threading.local, waits (time.sleep, patched) until n requests of the group have
stored theirs, then answers what it reads back; /held?token=&go= records its
start, waits for the test's `go` record, records its end and answers the most
requests it ever saw running at once; /pool?token=&size= reads the body and
writes its response from gevent's thread pool; /gfork, /gsleep and /gspawn-fork
fork (or sleep) for the forked-child tests.  All waits are bounded.
"""

import collections
import json
import socket
import threading
import time

import records
from records import params, record, token

WAIT = 20.0
_local = threading.local()
_arrived = collections.Counter()
_running = 0
_max_running = 0


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def ping(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"pong"]


def upstream(environ, start_response):
    """One round trip to 127.0.0.1:?port with the app's own socket module."""
    import gevent.monkey

    port = int(params(environ)["port"])
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"hello upstream\n")
        reply = b""
        while True:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    return _json(
        start_response,
        {
            "reply": reply.decode("latin-1"),
            "socket_patched": gevent.monkey.is_module_patched("socket"),
            "socket_class": socket.socket.__module__,
        },
    )


def local(environ, start_response):
    """Store, wait until the whole group stored, read back: each request sees its own."""
    query = params(environ)
    value, group, n = query["value"], query["group"], int(query["n"])
    _local.value = value
    _arrived[group] += 1
    deadline = time.monotonic() + WAIT
    while _arrived[group] < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return _json(
        start_response,
        {
            "value": getattr(_local, "value", None),
            "all_arrived": _arrived[group] >= n,
            "local_class": type(_local).__module__,
        },
    )


def held(environ, start_response):
    """Hold the slot until the test creates the ?go= record; report peak concurrency."""
    global _running, _max_running
    name = token(environ)
    go = params(environ)["go"]
    _running += 1
    _max_running = max(_max_running, _running)
    record("held", f"start {name}")
    try:
        released = records.wait_for(go, WAIT)
    finally:
        _running -= 1
        record("held", f"end {name}")
    return _json(start_response, {"token": name, "released": released, "max_running": _max_running})


def pool(environ, start_response):
    """Reads the body and writes ?size= bytes of response from gevent's thread
    pool (OS threads, not the hub's): records pool-<token> once it is called, so
    the test sends the body after, and the read must wait for it."""
    import gevent

    query = params(environ)
    record(f"pool-{query['token']}", "called")
    tp = gevent.get_hub().threadpool
    body = tp.spawn(environ["wsgi.input"].read).get(timeout=WAIT)
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    size = int(query.get("size", 0))
    tp.spawn(write, b"<" + body + b">").get(timeout=WAIT)
    block = b"p" * 65536
    tp.spawn(lambda: [write(block) for _ in range(size // len(block))]).get(timeout=WAIT)
    return []


def gfork(environ, start_response):
    """Forks (gevent's fork); the child sleeps ?s= seconds with gevent, records
    its pid under ?name=, and ends with os._exit: a child doing its own work."""
    import gevent
    import os

    query = params(environ)
    gevent.sleep(float(query.get("delay", "0")))
    pid = os.fork()
    if pid == 0:
        gevent.sleep(float(query.get("s", "1")))
        record(query["name"], str(os.getpid()))
        os._exit(0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(pid).encode()]


def _sigchld_caught():
    """Whether this process has a handler for SIGCHLD (its SigCgt mask)."""
    import signal

    with open("/proc/self/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(mask & (1 << (signal.SIGCHLD - 1)))


def sigchld(environ, start_response):
    """Whether SIGCHLD was caught before the app's first fork, and in the child of
    that (gevent's) fork, which has its parent's handlers as they were at the fork:
    `before=0 at-fork=1` when the handler came just before the fork."""
    import os

    before = _sigchld_caught()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, b"1" if _sigchld_caught() else b"0")
        os._exit(0)
    os.close(write)
    at_fork = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"before=%d at-fork=%s" % (before, at_fork)]


def gsleep(environ, start_response):
    """Answers after ?s= seconds of gevent.sleep; records its pid under ?name=."""
    import gevent
    import os

    query = params(environ)
    if "name" in query:
        record(query["name"], str(os.getpid()))
    gevent.sleep(float(query.get("s", "0.5")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


def gspawn_fork(environ, start_response):
    """A greenlet the app spawns forks; its child records its pid under ?name=
    and returns, ending that greenlet (not a request's) in the child."""
    import gevent
    import os

    name = params(environ)["name"]

    def bg():
        gevent.sleep(0.2)  # after the request ended: no copy of it in the child
        if os.fork() == 0:
            record(name, str(os.getpid()))

    gevent.spawn(bg)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"spawned"]


ROUTES = {
    "ping": ping,
    "upstream": upstream,
    "local": local,
    "held": held,
    "pool": pool,
    "gfork": gfork,
    "gsleep": gsleep,
    "sigchld": sigchld,
    "gspawn-fork": gspawn_fork,
}


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    handler = ROUTES.get(path.split("/")[1] if path.count("/") else "")
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    return handler(environ, start_response)
