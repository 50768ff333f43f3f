"""An app for the master/worker tests: which worker answered, and workers that misbehave.

`/pid` answers the worker's pid; `/upload` appends a line to the `uploads`
record, then hashes the body (body_app.sha256, for slow uploads);
`/grow?mib=N` keeps N more MiB alive in a module-level list (the worker's RSS
grows, for --max-worker-rss); `/spin?seconds=N` holds its thread (or the
gevent hub) in a pure-Python busy loop for up to N seconds (for --timeout:
the worker stops beating); `/spin-until?path=P` spins the same way until the
file P exists (at most a minute), then answers the pid; `/spin-later?path=P`
answers the pid at once and has a greenlet of its own spin so (gevent mode);
`/remote` answers REMOTE_ADDR; `/hold-gil?seconds=N`
sleeps N seconds in C with the GIL kept; `/print?text=T` prints `T out` with
print() and
writes `T err` to sys.stderr (for --capture-output); `/abort` aborts the worker
(as a failed allocation in native code does); anything else answers `pong`.
"""

import ctypes
import os
import sys
import time

import body_app
from records import params, record

# What /grow keeps alive for the life of the worker.
_kept = []


def _text(start_response, body):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def spin_until_killed(seconds):
    """Never yields: no I/O, no sleep, only bytecode (bounded by `seconds`)."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


def spin_until_exists(path, seconds=60.0):
    """Never yields until `path` exists (checked with a plain stat, bounded); writes
    the worker's pid to `path`.started first."""
    with open(f"{path}.started", "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        pass


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/pid":
        return _text(start_response, str(os.getpid()).encode())
    if path == "/remote":
        return _text(start_response, environ["REMOTE_ADDR"].encode())
    if path == "/upload":
        record("uploads", "started")
        return body_app.sha256(environ, start_response)
    if path == "/grow":
        mib = int(params(environ).get("mib", "60"))
        _kept.append(b"\x01" * (mib * 1024 * 1024))  # written, so resident
        return _text(start_response, b"grew %d" % mib)
    if path == "/print":
        text = params(environ).get("text", "")
        print(f"{text} out", flush=True)
        sys.stderr.write(f"{text} err\n")
        sys.stderr.flush()
        return _text(start_response, b"printed")
    if path == "/getenv":  # ?name= an environment variable of the worker
        return _text(start_response, os.environ.get(params(environ)["name"], "-").encode())
    if path == "/spin":
        spin_until_killed(float(params(environ).get("seconds", "30")))
        return _text(start_response, b"spun")
    if path == "/spin-until":
        spin_until_exists(params(environ)["path"])
        return _text(start_response, str(os.getpid()).encode())
    if path == "/spin-later":  # gevent mode: a greenlet of its own spins, as /spin-until
        import gevent

        gevent.spawn_later(0.05, spin_until_exists, params(environ)["path"])
        return _text(start_response, str(os.getpid()).encode())
    if path == "/hold-gil":  # ?seconds=N in C code that keeps the GIL (PyDLL does)
        ctypes.PyDLL(None).sleep(int(params(environ).get("seconds", "30")))
        return _text(start_response, b"held")
    if path == "/abort":
        os.abort()
    return _text(start_response, b"pong")
